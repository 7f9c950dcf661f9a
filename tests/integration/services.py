"""Real Redis and PostgreSQL servers for tests: each on a free loopback port,
in a temporary directory, torn down afterwards. PostgreSQL refuses to run as
root, so as root it runs as the `postgres` user (runuser).

As a program, it starts the servers asked for, exports their URLs and runs a
command: `services.py --redis --pg -- CMD ARGS…` sets JOBPLANE_TEST_REDIS_URL
and JOBPLANE_TEST_PG_URL for CMD and returns its exit status. When a server
binary is missing the command is skipped (exit 77), except under CI=true,
where a missing server is a failure."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Unavailable(Exception):
    """The server binary is not installed here."""


def _missing(what):
    if os.environ.get("CI") == "true":
        raise RuntimeError("%s is not installed, and CI requires it" % what)
    raise Unavailable(what)


def _wait_port(port, proc, timeout, what, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited at start (status %s)%s" % (
                what, proc.returncode, ("\n" + open(log).read()) if log and os.path.exists(log) else ""))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("%s did not listen on port %d within %ss" % (what, port, timeout))


class Redis:
    """redis-server on a free port. appendonly=True gives it AOF persistence
    (appendfsync everysec), so a restart keeps the data; otherwise a restart
    comes back empty, as an unpersisted Redis does."""

    def __init__(self, appendonly=False, extra=()):
        self.bin = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.bin):
            _missing("redis-server")
        self.dir = tempfile.mkdtemp(prefix="jp-redis-")
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = list(extra)
        self.proc = None
        self.url = "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        args = [self.bin, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--daemonize", "no",
                "--maxmemory-policy", "noeviction", "--loglevel", "warning",
                "--logfile", os.path.join(self.dir, "redis.log")]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, 10, "redis-server", os.path.join(self.dir, "redis.log"))
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def cli(self, *args):
        """Runs redis-cli against this server; returns its stdout as text."""
        out = subprocess.run(["redis-cli", "-p", str(self.port)] + [str(a) for a in args],
                             check=True, capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


def _pg_bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "postgres")):
            return d
    return None


class Postgres:
    """A PostgreSQL cluster made by initdb in a temporary directory, with
    synchronous_commit=on and fsync on, listening on a free loopback port,
    with a database "jobplane" owned by the user "jobplane" (password
    "jobplane"). url is the libpq URL to it."""

    def __init__(self):
        self.bindir = _pg_bindir()
        if not self.bindir:
            _missing("PostgreSQL server (postgres, initdb)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jp-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.proc = None
        self.url = "postgres://jobplane:jobplane@127.0.0.1:%d/jobplane" % self.port
        self._initdb()

    def _run(self, args, **kw):
        if self.as_root:
            args = ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(args, check=True, capture_output=True, text=True, cwd=self.dir, **kw)

    def _initdb(self):
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write("postgres\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                   "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])

    def start(self):
        args = [os.path.join(self.bindir, "postgres"), "-D", self.data,
                "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                "-c", "unix_socket_directories=" + self.dir,
                "-c", "synchronous_commit=on", "-c", "fsync=on",
                "-c", "max_connections=200", "-c", "logging_collector=off"]
        if self.as_root:
            args = ["runuser", "-u", "postgres", "--"] + args
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir,
                                     start_new_session=True)
        logf.close()
        _wait_port(self.port, self.proc, 30, "postgres", self.log)
        # Accepting connections can lag the listening socket during recovery.
        deadline = time.monotonic() + 30
        while True:
            try:
                self.psql("SELECT 1", db="postgres")
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if not getattr(self, "_created", False):
            self.psql("CREATE ROLE jobplane LOGIN PASSWORD 'jobplane'", db="postgres")
            self.psql("CREATE DATABASE jobplane OWNER jobplane", db="postgres")
            self._created = True
        return self

    def psql(self, sql, db="jobplane"):
        out = self._run([os.path.join(self.bindir, "psql"), "-h", "127.0.0.1", "-p",
                         str(self.port), "-U", "postgres", "-d", db, "-At", "-v",
                         "ON_ERROR_STOP=1", "-c", sql], timeout=30)
        return out.stdout.strip()

    def stop(self, mode="fast"):
        """mode: "fast" (clean), "immediate" (like a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT, "smart": signal.SIGTERM}[mode]
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self, mode="fast"):
        self.stop(mode)
        return self.start()

    def close(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


# --- views of a test Redis, shared by the distributed tests ---

PRIORITIES = ["emergency", "high", "normal", "low"]


def stream(queue="default", priority="normal"):
    """The stream key of a queue and priority (DESIGN.md §4)."""
    return "jobplane:{%s}:%s" % (queue, priority)


def rjson(redis, *args):
    """A Redis command's reply, decoded from redis-cli's JSON output (RESP2)."""
    import json
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "-2", "--json"] + [str(a) for a in args],
                         check=True, capture_output=True, text=True, timeout=10).stdout
    return json.loads(out)


def xrange_entries(redis, key):
    """XRANGE key - + as [(id, {field: value})]."""
    return [(eid, dict(zip(f[0::2], f[1::2]))) for eid, f in rjson(redis, "XRANGE", key, "-", "+")]


def read_file(path):
    """The file's text, or "" while it does not exist."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def main(argv):
    want_redis = "--redis" in argv
    want_pg = "--pg" in argv
    if "--" not in argv:
        print("usage: services.py [--redis] [--pg] -- CMD [ARGS…]", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1:]
    started = []
    env = dict(os.environ)
    try:
        if want_redis:
            r = Redis().start()
            started.append(r)
            env["JOBPLANE_TEST_REDIS_URL"] = r.url
        if want_pg:
            p = Postgres().start()
            started.append(p)
            env["JOBPLANE_TEST_PG_URL"] = p.url
        return subprocess.call(cmd, env=env)
    except Unavailable as e:
        print("skipped: %s is not installed" % e, file=sys.stderr)
        return SKIP
    finally:
        for s in reversed(started):
            s.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
