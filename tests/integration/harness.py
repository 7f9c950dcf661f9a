"""Black-box test harness: starts a real jobplane-server on a free loopback
port with its own temporary SQLite database, waits until it answers, and
speaks HTTP to it. Standard library only."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_BIN = os.environ.get("JOBPLANE_SERVER_BIN", os.path.join(ROOT, "build", "jobplane-server"))
CLI_BIN = os.environ.get("JOBPLANE_CLI_BIN", os.path.join(ROOT, "build", "jobplane"))
WORKER_BIN = os.environ.get("JOBPLANE_WORKER_BIN", os.path.join(ROOT, "build", "jobplane-worker"))


def _clean_env(extra):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("JOBPLANE_") and not k.endswith("_BIN") and not k.startswith("JOBPLANE_TEST_"):
            del env[k]
    env.update(extra or {})
    return env


def _sanitizer_report(text):
    return ("ERROR: AddressSanitizer" in text or "runtime error:" in text or
            "ERROR: LeakSanitizer" in text)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Server:
    """A jobplane-server process. Use as a context manager or call start/stop.

    args: extra command-line flags; env: extra environment variables.
    The database lives in a temporary directory that survives restart()."""

    def __init__(self, args=(), env=None, workers=None, tmpdir=None, database=None, redis=None,
                 token=None):
        self.args = list(args)
        self.database = database
        self.token = token  # sent as a bearer token by request() unless headers say otherwise
        if redis is not None:
            self.args += ["--redis", redis]
        self.extra_env = dict(env or {})
        if workers is not None:
            self.args += ["--workers", str(workers)]
        self._tmp = None
        if tmpdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="jp-it-")
            tmpdir = self._tmp.name
        self.dir = tmpdir
        self.db = os.path.join(tmpdir, "jobplane.db")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None
        self.log_path = os.path.join(tmpdir, "server.log")

    def start(self):
        env = _clean_env(self.extra_env)
        database = self.database or ("sqlite://" + self.db)
        cmd = [SERVER_BIN, "--listen", "127.0.0.1:%d" % self.port,
               "--database", database] + self.args
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.dir, start_new_session=True)
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("server exited with %s at start:\n%s"
                                     % (self.proc.returncode, self.log()))
            try:
                st, _, _ = self.request("GET", "/health", timeout=1)
                return st == 200
            except OSError:
                return False
        wait_until(up, timeout=15, what="server to answer /health")
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops the server; returns its exit status. Fails the test on a sanitizer report."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not stop within %ds after %s\n%s"
                                     % (timeout, sig, self.log()))
        rc = self.proc.returncode
        self.proc = None
        self._log.close()
        text = self.log()
        if _sanitizer_report(text):
            raise AssertionError("sanitizer report in server log:\n" + text)
        return rc

    def kill9(self):
        """SIGKILL, as a crash would: no cleanup at all."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None
            self._log.close()

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        rc = self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
        if exc[0] is None and rc not in (0, None):
            raise AssertionError("server exited with status %s\n%s" % (rc, self.log()))
        return False

    # --- HTTP ---

    def request(self, method, path, body=None, headers=None, raw=None, timeout=30):
        """Returns (status, decoded JSON body or text, headers dict).
        body: a Python value sent as JSON; raw: bytes sent as is."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = {"Content-Type": "application/json"}
            if self.token:
                hdrs["Authorization"] = "Bearer " + self.token
            hdrs.update(headers or {})
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            text = resp.read()
            h = {k.lower(): v for k, v in resp.getheaders()}
            try:
                val = json.loads(text) if text else None
            except ValueError:
                val = text.decode("utf-8", "replace")
            return resp.status, val, h
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def submit(self, strategy="noop", payload=None, expect=201, **fields):
        """Creates a job and returns it; asserts the status code."""
        req = {"strategy": strategy}
        if payload is not None:
            req["payload"] = payload
        req.update(fields)
        st, job, _ = self.post("/api/v1/jobs", req)
        if st != expect:
            raise AssertionError("create returned %s, wanted %s: %r" % (st, expect, job))
        return job

    def job(self, job_id):
        st, job, _ = self.get("/api/v1/jobs/" + job_id)
        if st != 200:
            raise AssertionError("get %s returned %s: %r" % (job_id, st, job))
        return job

    def wait_status(self, job_id, statuses, timeout=15):
        """Waits until the job is in one of `statuses` (a name or a list) and returns it."""
        if isinstance(statuses, str):
            statuses = [statuses]
        last = {}
        def check():
            last["job"] = self.job(job_id)
            return last["job"] if last["job"]["status"] in statuses else None
        try:
            return wait_until(check, timeout=timeout, what="job %s to be %s" % (job_id, statuses))
        except AssertionError as e:
            raise AssertionError("%s; last seen: %r\nserver log:\n%s"
                                 % (e, last.get("job"), self.log()[-4000:]))


class ServerCase(unittest.TestCase):
    """A test class sharing one server, started before its first test with
    Server(**server) and stopped after its last; a server that exits badly
    (a crash, a sanitizer report) fails the class."""

    server = {}

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(**cls.server)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            raise AssertionError("server exited with %s\n%s" % (rc, cls.srv.log()))


class Worker:
    """A jobplane-worker process. args: extra flags; its log is in log()."""

    def __init__(self, redis, control_plane=None, args=(), env=None, tmpdir=None, wid=None):
        self._tmp = None
        if tmpdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="jp-worker-")
            tmpdir = self._tmp.name
        self.dir = tmpdir
        self.id = wid or "w-%d-%d" % (os.getpid(), free_port())
        self.args = ["--redis", redis, "--id", self.id] + list(args)
        if control_plane:
            self.args += ["--control-plane", control_plane]
        self.extra_env = dict(env or {})
        self.proc = None
        self.log_path = os.path.join(tmpdir, "worker-%s.log" % self.id)

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([WORKER_BIN] + self.args, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=_clean_env(self.extra_env),
                                     cwd=self.dir, start_new_session=True)
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops the worker; returns its exit status. Fails on a sanitizer report."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError("worker did not stop within %ds\n%s" % (timeout, self.log()))
        rc = self.proc.returncode
        self.proc = None
        self._log.close()
        if _sanitizer_report(self.log()):
            raise AssertionError("sanitizer report in worker log:\n" + self.log())
        return rc

    def kill9(self):
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        rc = self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
        if exc[0] is None and rc not in (0, None):
            raise AssertionError("worker exited with status %s\n%s" % (rc, self.log()))
        return False


def main():
    """Runs the calling module's tests; exit status for meson."""
    unittest.main(module="__main__", verbosity=2)


# --- helpers shared by the black-box API tests ---

import calendar
import re

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def parse_ts(s):
    """An RFC 3339 UTC timestamp with milliseconds ("…T10:00:00.004Z") as epoch ms."""
    if not isinstance(s, str) or not TS_RE.match(s):
        raise AssertionError("not an RFC 3339 ms UTC timestamp: %r" % (s,))
    secs = calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S"))
    return secs * 1000 + int(s[20:23])


def format_ts(ms):
    """Epoch ms as an RFC 3339 UTC timestamp with milliseconds."""
    ms = int(ms)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def now_ms():
    return int(time.time() * 1000)


def assert_error(status, body, want_status, want_code=None, what=""):
    """Checks an error answer: the status and the {"error":{"code","message"}} body."""
    ctx = (" (%s)" % what) if what else ""
    if isinstance(want_status, int):
        want_status = (want_status,)
    if status not in want_status:
        raise AssertionError("status %s, wanted %s%s: %s"
                             % (status, want_status, ctx, repr(body)[:300]))
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        raise AssertionError("no {\"error\":{…}} body%s: %r" % (ctx, body))
    err = body["error"]
    if not isinstance(err.get("code"), str) or not err["code"]:
        raise AssertionError("error.code missing%s: %r" % (ctx, body))
    if not isinstance(err.get("message"), str) or not err["message"]:
        raise AssertionError("error.message missing or empty%s: %r" % (ctx, body))
    if want_code is not None and err["code"] != want_code:
        raise AssertionError("error.code %r, wanted %r%s: %r" % (err["code"], want_code, ctx, body))
    return err


def _server_alive(self):
    return self.proc is not None and self.proc.poll() is None


def _server_attempts(self, job_id):
    st, body, _ = self.get("/api/v1/jobs/" + job_id + "/attempts")
    if st != 200:
        raise AssertionError("attempts of %s returned %s: %r" % (job_id, st, body))
    return body["attempts"]


def _server_report(self, job_id, status, attempt, **fields):
    """POSTs a worker status report; returns (http status, body)."""
    req = {"status": status, "attempt": attempt}
    req.update(fields)
    st, body, _ = self.post("/api/v1/jobs/" + job_id + "/status", req)
    return st, body


def _server_raw(self, data, timeout=10.0, until_close=False):
    """Sends raw bytes on a fresh connection and returns what came back: the
    first complete response (or everything until the server closes, with
    until_close) as (status or None, raw bytes)."""
    return raw_exchange(self.port, data, timeout=timeout, until_close=until_close)


Server.alive = _server_alive
Server.attempts = _server_attempts
Server.report = _server_report
Server.raw = _server_raw


def _response_complete(buf):
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m:
        return len(rest) >= int(m.group(1))
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        return rest.endswith(b"0\r\n\r\n")
    return False


def raw_exchange(port, data, timeout=10.0, until_close=False):
    deadline = time.monotonic() + timeout
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer and close before taking it all
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            if not until_close and _response_complete(buf):
                break
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return (int(m.group(1)) if m else None), buf


def group_alive(pgid):
    """True while any process of group pgid exists and is not a zombie (an
    orphan's zombie may linger when nothing reaps it)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp …; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def urllib_quote(s):
    """Percent-encodes s for use as one query-string value."""
    import urllib.parse
    return urllib.parse.quote(s, safe="")
