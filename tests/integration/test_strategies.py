"""Black-box tests of the built-in strategies run by the embedded engine:
noop, sleep, exec (output, exit status, stdin/env/cwd, caps, allow-list,
process groups) and http (against a local HTTP server: extraction, methods,
headers, status handling and retries)."""

import http.server
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

ts = harness.parse_ts

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Example Domain</title></head>
<body><div><h1>Example Domain</h1><p class="lead">An illustrative page.</p>
<a href="/more">More</a></div></body></html>
"""
DOC = {"name": "jobplane", "items": [{"id": 1}, {"id": 2, "tags": ["x", "y"]}],
       "nested": {"a/b": "slash", "m~n": "tilde"}}


class Origin(http.server.ThreadingHTTPServer):
    """The test's own HTTP server on 127.0.0.1; counts requests per path."""
    daemon_threads = True
    block_on_close = False  # a /hang request must not hold up the test's end

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits = {}
        self.lock = threading.Lock()

    def hit(self, path):
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1

    def handle_error(self, request, client_address):
        # A client that hangs up early (a capped body) is expected here.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def count(self, path):
        with self.lock:
            return self.hits.get(path, 0)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Origin", "test")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def route(self):
        path = self.path.split("?")[0]
        self.server.hit(path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if path == "/page":
            self.send(200, PAGE, "text/html; charset=utf-8")
        elif path == "/doc.json":
            self.send(200, json.dumps(DOC).encode(), "application/json")
        elif path == "/echo":
            out = {"method": self.command, "path": self.path,
                   "body": body.decode("utf-8", "replace"),
                   "x_test": self.headers.get("X-Test"),
                   "content_type": self.headers.get("Content-Type")}
            self.send(200, json.dumps(out).encode(), "application/json")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self.send(code, b'{"status":%d}' % code, "application/json")
        elif path == "/big":
            self.send(200, b"z" * 200000, "text/plain")
        elif path == "/binary":
            self.send(200, bytes(range(256)) * 4, "application/octet-stream")
        elif path == "/hang":
            time.sleep(10)
            try:
                self.send(200, b"late", "text/plain")
            except OSError:
                pass
        else:
            self.send(404, b"not here", "text/plain")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = route


def stop_ok(srv):
    rc = srv.stop()
    if rc != 0:
        raise AssertionError("server exited with %s\n%s" % (rc, srv.log()))


class StrategyTest(harness.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.origin = Origin()
        cls.origin_thread = threading.Thread(target=cls.origin.serve_forever, daemon=True)
        cls.origin_thread.start()
        cls.base = "http://127.0.0.1:%d" % cls.origin.server_address[1]
        cls.srv = harness.Server(["--strategies", "noop,sleep,exec,http",
                                  "--retry-backoff-ms", "100"], workers=4)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        try:
            stop_ok(cls.srv)
        finally:
            cls.origin.shutdown()
            cls.origin.server_close()

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="jp-st-")
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def run_job(self, strategy, payload, want="completed", **fields):
        job = self.srv.submit(strategy, payload=payload, **fields)
        done = self.srv.wait_status(job["id"], ["completed", "failed", "cancelled"], timeout=20)
        self.assertEqual(done["status"], want, done)
        return done

    def exec_job(self, command, want="completed", **payload):
        payload["command"] = command
        return self.run_job("exec", payload, want=want, max_attempts=1)

    # --- noop and sleep ---

    def test_noop(self):
        done = self.run_job("noop", {"anything": [1, 2, 3]})
        self.assertEqual(done["result"], {})

    def test_sleep(self):
        done = self.run_job("sleep", {"ms": 50})
        self.assertEqual(done["result"], {"slept_ms": 50})
        self.assertGreaterEqual(ts(done["completed_at"]) - ts(done["started_at"]), 45)

    def test_sleep_bad_payload_is_not_retried(self):
        done = self.run_job("sleep", {"ms": "soon"}, want="failed", max_attempts=3)
        self.assertEqual(done["error"]["code"], "invalid_payload")
        self.assertEqual(done["attempts"], 1)

    # --- exec ---

    def test_exec_echo(self):
        done = self.exec_job(["/bin/echo", "hello", "world"])
        r = done["result"]
        self.assertEqual(r["exit_code"], 0)
        self.assertEqual(r["stdout"], "hello world\n")
        self.assertEqual(r["stderr"], "")
        self.assertIs(r["truncated"], False)
        self.assertIsInstance(r["duration_ms"], int)
        self.assertGreaterEqual(r["duration_ms"], 0)

    def test_exec_uses_no_shell(self):
        done = self.exec_job(["/bin/echo", "$HOME", "*", "a;b", "`id`"])
        self.assertEqual(done["result"]["stdout"], "$HOME * a;b `id`\n")

    def test_exec_nonzero_exit_fails(self):
        done = self.exec_job(["/bin/sh", "-c", "echo out; echo oops >&2; exit 3"], want="failed")
        self.assertEqual(done["error"]["code"], "exit_status")
        self.assertTrue(done["error"]["message"])
        self.assertEqual(done["result"]["exit_code"], 3)
        self.assertEqual(done["result"]["stderr"], "oops\n")
        self.assertEqual(done["result"]["stdout"], "out\n")

    def test_exec_killed_by_signal_fails(self):
        done = self.exec_job(["/bin/sh", "-c", "kill -KILL $$"], want="failed")
        self.assertIsInstance(done["error"]["code"], str)
        self.assertTrue(done["error"]["message"])

    def test_exec_missing_program_fails(self):
        done = self.exec_job(["/nonexistent/program"], want="failed")
        self.assertTrue(done["error"]["message"])

    def test_exec_stdin(self):
        done = self.exec_job(["/bin/cat"], stdin="line one\nline two\n")
        self.assertEqual(done["result"]["stdout"], "line one\nline two\n")

    def test_exec_large_stdin(self):
        data = "0123456789abcdef" * 8192  # 128 KiB: more than a pipe holds
        done = self.exec_job(["/usr/bin/wc", "-c"], stdin=data)
        self.assertEqual(done["result"]["stdout"].strip(), str(len(data)))

    def test_exec_stdin_not_read(self):
        # The program exits without reading: the writer gets EPIPE, not the
        # server a fatal SIGPIPE.
        done = self.exec_job(["/bin/true"], stdin="x" * 300000)
        self.assertEqual(done["result"]["exit_code"], 0)
        self.assertTrue(self.srv.alive())

    def test_exec_stdin_and_stdout_large(self):
        data = "y" * 300000  # both directions at once, more than pipes hold
        done = self.exec_job(["/bin/cat"], stdin=data)
        self.assertEqual(len(done["result"]["stdout"]), len(data))
        self.assertIs(done["result"]["truncated"], False)

    def test_exec_both_streams_large(self):
        done = self.exec_job(["/bin/sh", "-c", "(yes o | head -c 200000) & "
                                               "(yes e | head -c 200000 >&2); wait"])
        self.assertEqual(len(done["result"]["stdout"]), 200000)
        self.assertEqual(len(done["result"]["stderr"]), 200000)

    def test_exec_non_utf8_output(self):
        done = self.exec_job(["/bin/sh", "-c", r"printf '\377\376ok\n'"])
        self.assertIsInstance(done["result"], dict, done)
        self.assertIsInstance(done["result"]["stdout"], str)
        self.assertTrue(done["result"]["stdout"].endswith("ok\n"), done["result"])

    def test_exec_output_with_nul(self):
        done = self.exec_job(["/bin/sh", "-c", r"printf 'a\000b'"])
        r = done["result"]
        self.assertIsInstance(r, dict, "result lost: %r" % (done,))
        self.assertEqual(r["exit_code"], 0)
        self.assertIsInstance(r["stdout"], str)
        self.assertTrue(r["stdout"].startswith("a") and r["stdout"].endswith("b"), r)
        done = self.exec_job(["/bin/sh", "-c", r"printf 'x\000y' >&2; exit 2"], want="failed")
        r = done["result"]
        self.assertIsInstance(r, dict, "result lost: %r" % (done,))
        self.assertEqual(r["exit_code"], 2)

    def test_exec_env(self):
        done = self.exec_job(["/bin/sh", "-c", 'printf "%s|%s" "$JP_A" "$JP_B"'],
                             env={"JP_A": "alpha", "JP_B": "b e t a"})
        self.assertEqual(done["result"]["stdout"], "alpha|b e t a")

    def test_exec_cwd(self):
        done = self.exec_job(["/bin/pwd"], cwd=self.tmp)
        self.assertEqual(os.path.realpath(done["result"]["stdout"].strip()),
                         os.path.realpath(self.tmp))

    def test_exec_output_cap(self):
        done = self.exec_job(["/bin/sh", "-c", "yes | head -c 100000"], max_output_bytes=100)
        r = done["result"]
        self.assertIs(r["truncated"], True)
        self.assertEqual(len(r["stdout"]), 100)
        self.assertEqual(r["stdout"], "y\n" * 50)
        self.assertEqual(r["exit_code"], 0)

    def test_exec_stderr_cap(self):
        done = self.exec_job(["/bin/sh", "-c", "yes e | head -c 50000 >&2"], max_output_bytes=10)
        r = done["result"]
        self.assertIs(r["truncated"], True)
        self.assertEqual(len(r["stderr"]), 10)

    def test_exec_timeout_kills_process_group(self):
        pidf = os.path.join(self.tmp, "pid")
        script = 'sleep 300 & echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; sleep 300'
        job = self.srv.submit("exec", payload={"command": ["/bin/sh", "-c", script, "sh", pidf]},
                              timeout_seconds=1, max_attempts=1)
        harness.wait_until(lambda: os.path.exists(pidf), timeout=10, what="the command to start")
        with open(pidf) as f:
            pgid = os.getpgid(int(f.read()))
        self.assertTrue(harness.group_alive(pgid))
        done = self.srv.wait_status(job["id"], "failed", timeout=10)
        self.assertEqual(done["error"]["code"], "timeout")
        harness.wait_until(lambda: not harness.group_alive(pgid), timeout=5,
                           what="process group %d to be gone" % pgid)

    def test_exec_bad_payload(self):
        for payload in ({}, {"command": []}, {"command": "/bin/echo hi"}, {"command": [1, 2]}):
            job = self.srv.submit("exec", payload=payload)
            done = self.srv.wait_status(job["id"], "failed", timeout=10)
            self.assertEqual(done["error"]["code"], "invalid_payload", payload)
            self.assertEqual(done["attempts"], 1, payload)

    # --- http ---

    def test_http_get_extract_xpath(self):
        done = self.run_job("http", {"url": self.base + "/page", "extract": {"title": "//title"}})
        r = done["result"]
        self.assertEqual(r["status"], 200)
        self.assertEqual(r["extracted"]["title"], "Example Domain")
        self.assertIn("<title>Example Domain</title>", r["body"])
        self.assertIsInstance(r["headers"], (dict, list))
        self.assertIn("test", json.dumps(r["headers"]))
        self.assertIsInstance(r["duration_ms"], int)

    def test_http_extract_json_pointer(self):
        done = self.run_job("http", {"url": self.base + "/doc.json",
                                     "extract": {"name": "/name", "tag": "/items/1/tags/0",
                                                 "slash": "/nested/a~1b",
                                                 "tilde": "/nested/m~0n"}})
        ex = done["result"]["extracted"]
        self.assertEqual(ex["name"], "jobplane")
        self.assertEqual(ex["tag"], "x")
        self.assertEqual(ex["slash"], "slash")
        self.assertEqual(ex["tilde"], "tilde")

    def test_http_post_body_and_header(self):
        hits = self.origin.count("/echo")
        done = self.run_job("http", {"method": "POST", "url": self.base + "/echo",
                                     "headers": {"X-Test": "hello",
                                                 "Content-Type": "text/plain"},
                                     "body": "ping pong"})
        r = done["result"]
        self.assertEqual(r["status"], 200)
        echoed = json.loads(r["body"])
        self.assertEqual(echoed["method"], "POST")
        self.assertEqual(echoed["body"], "ping pong")
        self.assertEqual(echoed["x_test"], "hello")
        self.assertEqual(self.origin.count("/echo"), hits + 1)

    def test_http_expect_status_mismatch(self):
        done = self.run_job("http", {"url": self.base + "/page", "expect_status": 201},
                            want="failed", max_attempts=1)
        self.assertEqual(done["error"]["code"], "http_status")

    def test_http_expect_status_match(self):
        done = self.run_job("http", {"url": self.base + "/status/404", "expect_status": 404})
        self.assertEqual(done["result"]["status"], 404)

    def test_http_500_is_retried(self):
        path = "/status/500"
        hits = self.origin.count(path)
        done = self.run_job("http", {"url": self.base + path}, want="failed", max_attempts=2)
        self.assertEqual(done["error"]["code"], "http_status")
        self.assertEqual(done["attempts"], 2)
        self.assertEqual(self.origin.count(path), hits + 2)
        self.assertEqual(done["result"]["status"], 500)

    def test_http_404_is_not_retried(self):
        path = "/status/404"
        hits = self.origin.count(path)
        done = self.run_job("http", {"url": self.base + path}, want="failed", max_attempts=3)
        self.assertEqual(done["error"]["code"], "http_status")
        self.assertEqual(done["attempts"], 1)
        self.assertEqual(self.origin.count(path), hits + 1)

    def test_http_binary_body(self):
        done = self.run_job("http", {"url": self.base + "/binary"})
        self.assertIsInstance(done["result"], dict, "result lost: %r" % (done,))
        self.assertEqual(done["result"]["status"], 200)
        self.assertIsInstance(done["result"]["body"], (str, type(None)))

    def test_http_timeout(self):
        done = self.run_job("http", {"url": self.base + "/hang"}, want="failed", timeout_seconds=1,
                            max_attempts=1)
        self.assertEqual(done["error"]["code"], "timeout")
        self.assertLess(ts(done["completed_at"]) - ts(done["started_at"]), 4000)

    def test_http_cancel_aborts_request(self):
        job = self.srv.submit("http", payload={"url": self.base + "/hang"})
        self.srv.wait_status(job["id"], "running")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)

        def closed():
            rows = self.srv.attempts(job["id"])
            return rows if rows and rows[-1]["finished_at"] is not None else None
        rows = harness.wait_until(closed, timeout=4, what="the request to be aborted")
        self.assertEqual(rows[-1]["outcome"], "cancelled")
        self.assertEqual(self.srv.job(job["id"])["status"], "cancelled")

    def test_http_body_cap(self):
        done = self.run_job("http", {"url": self.base + "/big", "max_body_bytes": 1000})
        self.assertLessEqual(len(done["result"]["body"]), 1000)

    def test_http_connection_refused_fails(self):
        port = harness.free_port()
        done = self.run_job("http", {"url": "http://127.0.0.1:%d/" % port}, want="failed",
                            max_attempts=1)
        self.assertTrue(done["error"]["message"])

    def test_http_bad_payload(self):
        for payload in ({}, {"url": 5}, {"url": "ftp://127.0.0.1/x"}, {"url": "not a url"}):
            job = self.srv.submit("http", payload=payload)
            done = self.srv.wait_status(job["id"], "failed", timeout=10)
            self.assertEqual(done["attempts"], 1, payload)


class ExecAllowTest(harness.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server(["--strategies", "noop,exec", "--exec-allow", "/bin/echo",
                                  "--max-output-bytes", "50", "--retry-backoff-ms", "100"],
                                 workers=2)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        stop_ok(cls.srv)

    def test_allowed_program_runs(self):
        job = self.srv.submit("exec", payload={"command": ["/bin/echo", "ok"]})
        done = self.srv.wait_status(job["id"], "completed")
        self.assertEqual(done["result"]["stdout"], "ok\n")

    def test_other_program_refused(self):
        for cmd in (["/bin/cat", "/etc/hostname"], ["/bin/../bin/cat", "/etc/hostname"],
                    ["/bin/sh", "-c", "/bin/echo sneaky"]):
            job = self.srv.submit("exec", payload={"command": cmd})
            done = self.srv.wait_status(job["id"], ["failed", "completed"])
            self.assertEqual(done["status"], "failed", cmd)
            self.assertEqual(done["error"]["code"], "not_allowed", cmd)
            self.assertEqual(done["attempts"], 1, cmd)

    def test_server_output_cap(self):
        job = self.srv.submit("exec", payload={"command": ["/bin/echo", "x" * 1000]})
        done = self.srv.wait_status(job["id"], "completed")
        self.assertIs(done["result"]["truncated"], True)
        self.assertEqual(len(done["result"]["stdout"]), 50)
        # A payload cannot raise the server's cap.
        job = self.srv.submit("exec", payload={"command": ["/bin/echo", "x" * 1000],
                                               "max_output_bytes": 500})
        done = self.srv.wait_status(job["id"], "completed")
        self.assertEqual(len(done["result"]["stdout"]), 50)


class DefaultStrategiesTest(harness.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server(workers=1)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        stop_ok(cls.srv)

    def test_exec_is_off_by_default(self):
        st, body, _ = self.srv.post("/api/v1/jobs", {"strategy": "exec",
                                                     "payload": {"command": ["/bin/echo"]}})
        harness.assert_error(st, body, 400, "invalid_argument")
        self.assertIn("exec", body["error"]["message"])
        st, body, _ = self.srv.post("/api/v1/jobs/batch",
                                    {"jobs": [{"strategy": "noop"},
                                              {"strategy": "exec",
                                               "payload": {"command": ["/bin/echo"]}}]})
        harness.assert_error(st, body, 400, "invalid_argument")

    def test_defaults_are_enabled(self):
        for strategy, payload in (("noop", None), ("sleep", {"ms": 1}),
                                  ("http", {"url": "http://127.0.0.1:%d/" % harness.free_port()})):
            job = self.srv.submit(strategy, payload=payload, max_attempts=1)
            self.srv.wait_status(job["id"], ["completed", "failed"])


if __name__ == "__main__":
    harness.main()
