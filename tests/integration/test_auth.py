"""Black-box tests of bearer-token authentication: which role may do what,
the 401 and 403 answers, open health checks, loopback-only serving without
tokens, tokens-file errors, workers and the CLI with tokens."""

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import services  # noqa: E402

CLIENT = "client-token-0123456789abcdef"
WORKER = "worker-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
CLIENT2 = "c" * 16      # the shortest allowed
ADMIN2 = "A" * 256      # the longest allowed
TOKENS = """# jobplane tokens
client %s
worker %s

admin  %s   # trailing comment
client %s
admin %s
""" % (CLIENT, WORKER, ADMIN, CLIENT2, ADMIN2)
WAIT = 30


def bearer(token):
    return {"Authorization": "Bearer " + token}


def other_address():
    """A non-loopback IPv4 address of this machine, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def can_connect(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def write_tokens(directory, text, name="tokens"):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def cli(args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("JOBPLANE_")}
    e.update(env or {})
    return subprocess.run([harness.CLI_BIN] + args, capture_output=True, text=True, timeout=60,
                          env=e)


class RolesTest(unittest.TestCase):
    """An embedded server that runs no jobs itself, so states stay put."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory(prefix="jp-auth-")
        cls.tokens = write_tokens(cls._tmp.name, TOKENS)
        cls.srv = harness.Server(["--tokens", cls.tokens], workers=0, tmpdir=cls._tmp.name)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.srv.stop()
            assert rc == 0, "server exited with %s\n%s" % (rc, cls.srv.log())
        finally:
            cls._tmp.cleanup()

    def req(self, method, path, token=None, body=None, headers=None):
        h = dict(bearer(token)) if token else {}
        h.update(headers or {})
        st, b, hdrs = self.srv.request(method, path, body=body, headers=h)
        return st, b, hdrs

    def create(self, token=ADMIN, **fields):
        req = {"strategy": "noop"}
        req.update(fields)
        st, body, _ = self.req("POST", "/api/v1/jobs", ADMIN if token is None else token, req)
        self.assertEqual(st, 201, body)
        return body

    def failed_job(self):
        """A job made failed by reports, as a worker would."""
        job = self.create(max_attempts=1)
        for status in ("running", "failed"):
            st, body, _ = self.req("POST", "/api/v1/jobs/%s/status" % job["id"], WORKER,
                                   {"status": status, "attempt": 1, "worker_id": "w",
                                    "error": {"code": "x", "message": "y"}} if status == "failed"
                                   else {"status": status, "attempt": 1, "worker_id": "w"})
            self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "failed")
        return job

    def assert_unauthenticated(self, st, body, hdrs, what):
        harness.assert_error(st, body, 401, "unauthenticated", what)
        self.assertIn("www-authenticate", hdrs, what)
        self.assertTrue(hdrs["www-authenticate"].lower().startswith("bearer"), hdrs)

    def test_health_and_ready_are_open(self):
        for path in ("/health", "/ready"):
            st, body, _ = self.req("GET", path)
            self.assertEqual(st, 200, (path, body))
            st, body, _ = self.req("GET", path, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"})
            self.assertEqual(st, 200, (path, body))

    def test_no_token_is_401_everywhere(self):
        job = self.create()
        endpoints = [("GET", "/api/v1/jobs", None), ("GET", "/api/v1/jobs/" + job["id"], None),
                     ("GET", "/api/v1/jobs/%s/attempts" % job["id"], None),
                     ("GET", "/api/v1/queue/stats", None), ("GET", "/api/v1/workers", None),
                     ("POST", "/api/v1/jobs", {"strategy": "noop"}),
                     ("POST", "/api/v1/jobs/batch", {"jobs": [{"strategy": "noop"}]}),
                     ("POST", "/api/v1/jobs/%s/cancel" % job["id"], None),
                     ("POST", "/api/v1/jobs/%s/retry" % job["id"], None),
                     ("POST", "/api/v1/jobs/%s/status" % job["id"],
                      {"status": "running", "attempt": 1}),
                     ("POST", "/api/v1/jobs/status",
                      {"reports": [{"id": job["id"], "status": "running", "attempt": 1}]})]
        bad_headers = [{}, bearer("not-a-configured-token-at-all"), bearer(CLIENT + "x"),
                       bearer(CLIENT[:-1]), {"Authorization": "Basic " + CLIENT},
                       {"Authorization": CLIENT}, {"Authorization": "Bearer"},
                       {"Authorization": "Bearer "}, bearer("x" * 300)]
        for method, path, body in endpoints:
            for h in bad_headers:
                st, b, hdrs = self.req(method, path, body=body, headers=h)
                self.assert_unauthenticated(st, b, hdrs, "%s %s with %r" % (method, path, h))
        # Nothing changed, nothing was created.
        self.assertEqual(self.req("GET", "/api/v1/jobs/" + job["id"], ADMIN)[1], job)
        st, body, _ = self.req("GET", "/api/v1/jobs?limit=1", ADMIN)
        self.assertEqual(body["jobs"][0]["id"], job["id"])

    def test_client_role(self):
        st, job, _ = self.req("POST", "/api/v1/jobs", CLIENT, {"strategy": "noop"})
        self.assertEqual(st, 201, job)
        st, body, _ = self.req("POST", "/api/v1/jobs/batch", CLIENT2,
                               {"jobs": [{"strategy": "noop"}, {"strategy": "noop"}]})
        self.assertEqual(st, 201, body)
        for path in ("/api/v1/jobs/" + job["id"], "/api/v1/jobs", "/api/v1/jobs?status=queued",
                     "/api/v1/jobs/%s/attempts" % job["id"], "/api/v1/queue/stats",
                     "/api/v1/workers"):
            st, body, _ = self.req("GET", path, CLIENT)
            self.assertEqual(st, 200, (path, body))
        # Case-insensitive scheme, as RFC 7235 has it.
        st, body, _ = self.req("GET", "/api/v1/jobs/" + job["id"],
                               headers={"Authorization": "bearer " + CLIENT})
        self.assertEqual(st, 200, body)

        # Denied: status reports and retries.
        st, body, _ = self.req("POST", "/api/v1/jobs/%s/status" % job["id"], CLIENT,
                               {"status": "running", "attempt": 1, "worker_id": "c"})
        harness.assert_error(st, body, 403, "permission_denied", "client reporting status")
        st, body, _ = self.req("POST", "/api/v1/jobs/status", CLIENT,
                               {"reports": [{"id": job["id"], "status": "running", "attempt": 1}]})
        harness.assert_error(st, body, 403, "permission_denied", "client batch report")
        self.assertEqual(self.req("GET", "/api/v1/jobs/" + job["id"], CLIENT)[1]["status"], "queued")
        failed = self.failed_job()
        st, body, _ = self.req("POST", "/api/v1/jobs/%s/retry" % failed["id"], CLIENT)
        harness.assert_error(st, body, 403, "permission_denied", "client retrying")
        # Spellings of the same path must not slip past the role check.
        for path in ("/api/v1/jobs/%s/retry/" % failed["id"], "/api/v1/jobs/%s//retry" % failed["id"],
                     "/api/v1/jobs/%s/%%72etry" % failed["id"], "/api/v1/jobs/%s/retry?x=1" % failed["id"],
                     "//api/v1/jobs/%s/retry" % failed["id"], "/api/v1/jobs/%s/./retry" % failed["id"],
                     "/API/v1/jobs/%s/RETRY" % failed["id"]):
            st, body, _ = self.req("POST", path, CLIENT)
            self.assertIn(st, (403, 404, 400, 405), (path, body))
        self.assertEqual(self.req("GET", "/api/v1/jobs/" + failed["id"], CLIENT)[1]["status"], "failed")

        # Allowed: cancel.
        st, body, _ = self.req("POST", "/api/v1/jobs/%s/cancel" % job["id"], CLIENT)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")

    def test_worker_role(self):
        job = self.create()
        for path in ("/api/v1/jobs/" + job["id"], "/api/v1/jobs", "/api/v1/queue/stats",
                     "/api/v1/jobs/%s/attempts" % job["id"], "/api/v1/workers"):
            st, body, _ = self.req("GET", path, WORKER)
            self.assertEqual(st, 200, (path, body))
        st, body, _ = self.req("POST", "/api/v1/jobs", WORKER, {"strategy": "noop"})
        harness.assert_error(st, body, 403, "permission_denied", "worker creating a job")
        st, body, _ = self.req("POST", "/api/v1/jobs/batch", WORKER, {"jobs": [{"strategy": "noop"}]})
        harness.assert_error(st, body, 403, "permission_denied", "worker creating a batch")
        st, body, _ = self.req("POST", "/api/v1/jobs/%s/cancel" % job["id"], WORKER)
        harness.assert_error(st, body, 403, "permission_denied", "worker cancelling")
        self.assertEqual(self.req("GET", "/api/v1/jobs/" + job["id"], WORKER)[1]["status"], "queued")
        st, body, _ = self.req("POST", "/api/v1/jobs/%s/status" % job["id"], WORKER,
                               {"status": "running", "attempt": 1, "worker_id": "w1"})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "running")
        st, body, _ = self.req("POST", "/api/v1/jobs/status", WORKER, {"reports": [
            {"id": job["id"], "status": "completed", "attempt": 1, "worker_id": "w1",
             "result": {"ok": True}}]})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["results"][0]["code"], "ok", body)
        self.assertEqual(self.req("GET", "/api/v1/jobs/" + job["id"], WORKER)[1]["status"],
                         "completed")
        failed = self.failed_job()
        st, body, _ = self.req("POST", "/api/v1/jobs/%s/retry" % failed["id"], WORKER)
        harness.assert_error(st, body, 403, "permission_denied", "worker retrying")

    def test_admin_role_may_do_everything(self):
        for token in (ADMIN, ADMIN2):
            st, job, _ = self.req("POST", "/api/v1/jobs", token, {"strategy": "noop"})
            self.assertEqual(st, 201, job)
            st, body, _ = self.req("POST", "/api/v1/jobs/batch", token, {"jobs": [{"strategy": "noop"}]})
            self.assertEqual(st, 201, body)
            for path in ("/api/v1/jobs/" + job["id"], "/api/v1/jobs", "/api/v1/queue/stats",
                         "/api/v1/jobs/%s/attempts" % job["id"], "/api/v1/workers"):
                st, body, _ = self.req("GET", path, token)
                self.assertEqual(st, 200, (path, body))
            st, body, _ = self.req("POST", "/api/v1/jobs/%s/status" % job["id"], token,
                                   {"status": "running", "attempt": 1, "worker_id": "adm"})
            self.assertEqual(st, 200, body)
            st, body, _ = self.req("POST", "/api/v1/jobs/%s/cancel" % job["id"], token)
            self.assertEqual(st, 200, body)
            st, body, _ = self.req("POST", "/api/v1/jobs/%s/retry" % job["id"], token)
            self.assertEqual(st, 200, body)
            self.assertEqual(body["status"], "queued")

    def test_denied_requests_change_nothing(self):
        job = self.create()
        before = self.req("GET", "/api/v1/jobs/" + job["id"], ADMIN)[1]
        attempts = [("POST", "/api/v1/jobs/%s/status" % job["id"], CLIENT,
                     {"status": "running", "attempt": 1}),
                    ("POST", "/api/v1/jobs/%s/cancel" % job["id"], WORKER, None),
                    ("POST", "/api/v1/jobs/%s/cancel" % job["id"], None, None),
                    ("POST", "/api/v1/jobs/%s/retry" % job["id"], CLIENT, None)]
        for method, path, token, body in attempts:
            st, b, _ = self.req(method, path, token, body)
            self.assertIn(st, (401, 403), (path, token, b))
        self.assertEqual(self.req("GET", "/api/v1/jobs/" + job["id"], ADMIN)[1], before)
        st, body, _ = self.req("GET", "/api/v1/jobs/%s/attempts" % job["id"], ADMIN)
        self.assertEqual(body["attempts"], [])

    def test_cli_with_token(self):
        out = cli(["--server", self.srv.url, "--token", CLIENT, "submit", "--strategy", "noop"])
        self.assertEqual(out.returncode, 0, out.stderr)
        job_id = out.stdout.strip().split()[-1]
        out = cli(["--server", self.srv.url, "--token", CLIENT, "get", job_id])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(job_id, out.stdout)
        out = cli(["--server", self.srv.url, "get", job_id], env={"JOBPLANE_TOKEN": WORKER})
        self.assertEqual(out.returncode, 0, out.stderr)
        out = cli(["--server", self.srv.url, "get", job_id, "--token", ADMIN])
        self.assertEqual(out.returncode, 0, out.stderr)
        # Without a token, or with a role that may not: one line on stderr, exit 1.
        out = cli(["--server", self.srv.url, "get", job_id])
        self.assertEqual(out.returncode, 1, out)
        self.assertEqual(len(out.stderr.strip().splitlines()), 1, out.stderr)
        out = cli(["--server", self.srv.url, "--token", WORKER, "submit", "--strategy", "noop"])
        self.assertEqual(out.returncode, 1, out)
        self.assertEqual(len(out.stderr.strip().splitlines()), 1, out.stderr)
        out = cli(["--server", self.srv.url, "--token", CLIENT, "stats"])
        self.assertEqual(out.returncode, 0, out.stderr)
        out = cli(["--server", self.srv.url, "--token", CLIENT, "cancel", job_id])
        self.assertEqual(out.returncode, 0, out.stderr)
        out = cli(["--server", self.srv.url, "--token", CLIENT, "retry", job_id])
        self.assertEqual(out.returncode, 1, out)
        out = cli(["--server", self.srv.url, "--token", ADMIN, "retry", job_id])
        self.assertEqual(out.returncode, 0, out.stderr)


class StartupTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="jp-auth-start-")
        self.addCleanup(self._tmp.cleanup)
        self.dir = self._tmp.name

    def run_server(self, *args):
        """Runs a server expected to refuse to start; returns (status, output)."""
        port = harness.free_port()
        cmd = [harness.SERVER_BIN, "--listen", "127.0.0.1:%d" % port, "--database",
               "sqlite://" + os.path.join(self.dir, "x.db"), "--workers", "0"] + list(args)
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                                 env=harness._clean_env({}))
        except subprocess.TimeoutExpired:
            self.fail("the server started with %r" % (args,))
        return out.returncode, out.stdout + out.stderr

    def test_bad_tokens_files_are_refused(self):
        cases = {
            "short": ("client %s\nworker short-token\n" % CLIENT, 2),
            "role": ("# x\nclient %s\n\nsuperuser %s\n" % (CLIENT, ADMIN), 4),
            "long": ("admin %s\n" % ("a" * 257), 1),
            "missing": ("client\n", 1),
            "extra": ("client %s extra\n" % CLIENT, 1),
            "emptyrole": ("admin %s\n %s\n" % (ADMIN, "z" * 20), 2),
        }
        for name, (text, line) in cases.items():
            path = write_tokens(self.dir, text, name)
            rc, out = self.run_server("--tokens", path)
            self.assertEqual(rc, 2, (name, out))
            self.assertRegex(out, r"(:%d\b|line %d\b)" % (line, line), (name, out))
            self.assertLess(len(out.strip().splitlines()), 4, out)
        # Tokens never appear in the messages.
        rc, out = self.run_server("--tokens", write_tokens(self.dir, "client %s\nworker x\n"
                                                             % CLIENT, "leak"))
        self.assertEqual(rc, 2)
        self.assertNotIn(CLIENT, out)
        # A file with no tokens at all, and one that is missing.
        rc, out = self.run_server("--tokens", write_tokens(self.dir, "# nothing\n\n", "empty"))
        self.assertNotEqual(rc, 0, out)
        rc, out = self.run_server("--tokens", os.path.join(self.dir, "no-such-file"))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("no-such-file", out)

    def test_token_with_a_hash_is_not_cut_short(self):
        # "#" may start a comment, but a token that holds one must not turn
        # into its (shorter, weaker) prefix.
        full = "abcdefghijklmnop#qrstuvwxyz0123"
        path = write_tokens(self.dir, "client %s\nadmin %s\n" % (full, ADMIN), "hash")
        srv = harness.Server(["--tokens", path, "--workers", "0"], tmpdir=self.dir)
        try:
            srv.start()
        except AssertionError:
            return  # refusing such a file is fine
        try:
            st, body, _ = srv.get("/api/v1/jobs", headers=bearer(full[:16]))
            self.assertEqual(st, 401, "the token's prefix before '#' is accepted")
            st, body, _ = srv.get("/api/v1/jobs", headers=bearer(full))
            self.assertEqual(st, 200, body)
        finally:
            self.assertEqual(srv.stop(), 0, srv.log())

    def test_without_tokens_serves_loopback_only(self):
        srv = harness.Server(["--workers", "0"], tmpdir=self.dir)
        srv.args += ["--listen", "0.0.0.0:%d" % srv.port]  # after the harness's own --listen
        srv.start()
        try:
            log = srv.log()
            self.assertIn("loopback", log.lower())
            st, body, _ = srv.get("/api/v1/jobs")
            self.assertEqual(st, 200, body)  # no tokens: no authentication
            addr = other_address()
            if addr:
                self.assertFalse(can_connect(addr, srv.port),
                                 "reachable on %s:%d without tokens" % (addr, srv.port))
        finally:
            self.assertEqual(srv.stop(), 0, srv.log())

    def test_with_tokens_serves_the_address_asked_for(self):
        addr = other_address()
        if not addr:
            self.skipTest("no non-loopback address here")
        tokens = write_tokens(self.dir, TOKENS)
        srv = harness.Server(["--tokens", tokens, "--workers", "0"], tmpdir=self.dir, token=CLIENT)
        srv.args += ["--listen", "0.0.0.0:%d" % srv.port]
        srv.start()
        try:
            self.assertTrue(can_connect(addr, srv.port))
            conn = http.client.HTTPConnection(addr, srv.port, timeout=10)
            conn.request("GET", "/api/v1/jobs")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            self.assertEqual(resp.status, 401)
            self.assertNotIn("loopback only", srv.log())
        finally:
            self.assertEqual(srv.stop(), 0, srv.log())


class DistributedAuthTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="jp-auth-dist-")
        self.addCleanup(self._tmp.cleanup)
        self.dir = self._tmp.name
        self.redis = services.Redis().start()
        self.addCleanup(self.redis.close)
        tokens = write_tokens(self.dir, TOKENS)
        self.srv = harness.Server(["--tokens", tokens, "--reconcile-interval", "1",
                                   "--lease-seconds", "2"], redis=self.redis.url,
                                  tmpdir=self.dir, token=CLIENT)
        self.srv.start()
        self.addCleanup(self._stop, self.srv)

    def _stop(self, proc):
        if proc.alive():
            self.assertEqual(proc.stop(), 0, proc.log()[-3000:])

    def worker(self, token, *args):
        w = harness.Worker(self.redis.url, self.srv.url, tmpdir=self.dir,
                           args=["--lease-seconds", "2"] + (["--token", token] if token else [])
                           + list(args))
        w.start()
        self.addCleanup(self._stop, w)
        return w

    def test_worker_with_worker_token_completes_jobs(self):
        w = self.worker(WORKER)
        jobs = [self.srv.submit("noop", payload={"i": i}) for i in range(5)]
        for j in jobs:
            done = self.srv.wait_status(j["id"], "completed", timeout=WAIT)
            self.assertEqual(done["worker_id"], w.id)
        # The token is read from the environment, too.
        w.stop()
        w2 = harness.Worker(self.redis.url, self.srv.url, tmpdir=self.dir,
                            args=["--lease-seconds", "2"], env={"JOBPLANE_TOKEN": ADMIN})
        w2.start()
        self.addCleanup(self._stop, w2)
        job = self.srv.submit("noop")
        self.assertEqual(self.srv.wait_status(job["id"], "completed", timeout=WAIT)["worker_id"],
                         w2.id)
        self.assertNotIn(ADMIN, w2.log())

    def test_worker_with_client_token_cannot_report(self):
        for token in (CLIENT, None, "not-a-configured-token-at-all"):
            w = self.worker(token, "--drain-timeout", "1")
            job = self.srv.submit("noop")
            time.sleep(3)
            got = self.srv.job(job["id"])
            self.assertIn(got["status"], ("queued", "running"), got)
            self.assertTrue(w.alive(), w.log())
            # The worker logs the control plane's own answer, whole.
            hdrs = {"Authorization": "Bearer " + token} if token else {"Authorization": ""}
            st, body, _ = self.srv.request("POST", "/api/v1/jobs/status", headers=hdrs, body={
                "reports": [{"id": job["id"], "status": "running", "attempt": 1,
                             "worker_id": w.id}]})
            err = harness.assert_error(st, body, (401, 403))
            log = w.log()
            if token:
                self.assertNotIn(token, log)
            with self.subTest("the refusal is logged whole", token=token):
                self.assertIn(err["code"], log)
                self.assertIn(err["message"], log)
            # Not acknowledged: a worker with the right token runs it.
            self.assertEqual(w.stop(), 0, w.log())
            good = self.worker(WORKER)
            done = self.srv.wait_status(job["id"], "completed", timeout=WAIT)
            self.assertEqual(done["worker_id"], good.id)
            self.assertEqual(good.stop(), 0, good.log())

    def test_presence_listing_needs_a_token(self):
        w = self.worker(WORKER)
        st, body, _ = self.srv.request("GET", "/api/v1/workers", headers={"Authorization": ""})
        self.assertEqual(st, 401, body)

        def listed():
            st, body, _ = self.srv.get("/api/v1/workers")
            return st == 200 and w.id in [x["id"] for x in body["workers"]]
        harness.wait_until(listed, timeout=WAIT, what="the worker to be listed")


if __name__ == "__main__":
    harness.main()
