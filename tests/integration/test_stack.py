"""`make stack-demo` and `make stack` for real: Redis, PostgreSQL, the control
plane and two workers as local processes. The demo must print every job of its
mixed batch with the expected outcome and leave nothing running; Ctrl-C must stop
the whole stack."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

ROOT = harness.ROOT
BUILD = os.path.dirname(os.path.abspath(harness.SERVER_BIN))
TIMEOUT = 300

# name → (strategy, status, attempts) the demo must report.
EXPECTED = {
    "noop": ("noop", "completed", "1"),
    "exec-echo": ("exec", "completed", "1"),
    "http-health": ("http", "completed", "1"),
    "exec-false": ("exec", "failed", "2"),
    "delayed": ("noop", "completed", "1"),
    "cancelled": ("sleep", "cancelled", "1"),
}
ROW_RE = re.compile(r"^([0-9a-f-]{36})\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(.*)$")


def stack_env(state):
    """A private state directory and free ports, so the test neither clashes with
    a stack someone runs by hand nor wipes its state."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL") and not k.startswith("STACK_")}
    ports = set()
    while len(ports) < 3:
        ports.add(harness.free_port())
    redis, pg, server = sorted(ports)
    env.update(STACK_STATE=state, STACK_REDIS_PORT=str(redis), STACK_PG_PORT=str(pg),
               STACK_SERVER_PORT=str(server))
    return env, (redis, pg, server)


def listening(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def state_dir():
    d = tempfile.mkdtemp(prefix="jp-stack-")
    # As root, PostgreSQL runs as postgres, which must pass through to its cluster.
    os.chmod(d, 0o711)
    return d


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class TestStack(unittest.TestCase):
    def setUp(self):
        self.state = state_dir()

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.state])

    def test_stack_demo(self):
        env, ports = stack_env(self.state)
        start = time.monotonic()
        out = subprocess.run(["make", "-s", "-C", ROOT, "stack-demo", "BUILD=" + BUILD],
                             capture_output=True, text=True, timeout=TIMEOUT, env=env)
        took = time.monotonic() - start
        text = out.stdout + out.stderr
        self.assertEqual(out.returncode, 0, "make stack-demo failed:\n" + text + self.logs())
        rows = {}
        for line in out.stdout.splitlines():
            m = ROW_RE.match(line)
            if m:
                rows[m.group(2)] = m.groups()
        self.assertEqual(set(rows), set(EXPECTED), "outcome table:\n" + out.stdout)
        workers = set()
        for name, (strategy, status, attempts) in EXPECTED.items():
            jid, _, strat, st, att, err, worker, outcome = rows[name]
            self.assertEqual((strat, st, att, outcome), (strategy, status, attempts, "ok"),
                             "row %s:\n%s" % (name, out.stdout))
            workers.add(worker)
        self.assertEqual(rows["exec-false"][5], "exit_status")
        self.assertEqual(rows["noop"][5], "-")
        self.assertTrue(workers <= {"stack-w1", "stack-w2"}, workers)
        self.assertEqual(len({r[0] for r in rows.values()}), len(EXPECTED), "job ids repeat")
        self.assertIn("stack-demo: all 6 jobs ended as expected", out.stdout)
        # Where everything listened was printed, and nothing listens any more.
        for port in ports:
            self.assertIn("127.0.0.1:%d" % port, out.stdout)
            self.assertFalse(listening(port), "port %d still open after the demo" % port)
        self.assertEqual([f for f in os.listdir(self.state) if f.endswith(".pid")
                          and f != "stack.pid"], [], "processes left behind")
        self.assertLess(took, 120, "the demo took %.0fs" % took)

    def test_ctrl_c_stops_everything(self):
        env, ports = stack_env(self.state)
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(
            ["make", "-s", "-C", ROOT, "stack", "BUILD=" + BUILD], stdout=log,
            stderr=subprocess.STDOUT, env=env, start_new_session=True,
            # As a terminal's foreground job: SIGINT not ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            harness.wait_until(lambda: "Ctrl-C stops everything" in self.read(log)
                               or proc.poll() is not None, timeout=120, what="the stack")
            self.assertIsNone(proc.poll(), "make stack exited:\n" + self.read(log) + self.logs())
            pids = {}
            for f in os.listdir(self.state):
                if f.endswith(".pid"):
                    with open(os.path.join(self.state, f)) as fh:
                        pids[f[:-4]] = int(fh.read())
            self.assertEqual({"redis", "server", "worker-1", "worker-2", "stack"}, set(pids))
            # The printed client environment works: a job through both workers' stack.
            cl = subprocess.run(
                ["bash", "-c", '. "$1" && "$2" submit --strategy exec --wait --payload '
                 '\'{"command": ["/bin/echo", "via stack"]}\'', "-",
                 os.path.join(self.state, "client.env"), harness.CLI_BIN],
                capture_output=True, text=True, timeout=60,
                env={k: v for k, v in os.environ.items() if not k.startswith("JOBPLANE_")})
            self.assertEqual(cl.returncode, 0, cl.stdout + cl.stderr + self.logs())
            self.assertIn("via stack", cl.stdout)
            with open(os.path.join(self.state, "pgdata")) as f:
                pgdata = f.read().strip()
            with open(os.path.join(pgdata, "postmaster.pid")) as f:
                pids["postgres"] = int(f.readline())
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
        text = self.read(log)
        log.close()
        self.assertIn("stack: stopping", text)
        for name, pid in pids.items():
            self.assertFalse(alive(pid), "%s (pid %d) survived Ctrl-C" % (name, pid))
        for port in ports:
            self.assertFalse(listening(port), "port %d still open after Ctrl-C" % port)
        self.assertNotIn("exited with status", text, text + self.logs())

    @staticmethod
    def read(f):
        f.flush()
        f.seek(0)
        return f.read()

    def logs(self):
        out = ""
        if os.path.isdir(self.state):
            for f in sorted(os.listdir(self.state)):
                if f.endswith(".log"):
                    with open(os.path.join(self.state, f), errors="replace") as fh:
                        out += "\n--- %s\n%s" % (f, fh.read()[-3000:])
        return out


if __name__ == "__main__":
    harness.main()
