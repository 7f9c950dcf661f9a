"""Black-box tests of hostile and malformed input: every bad request gets a
clear 4xx with the error body, oversized and slow requests are cut off, and
through all of it the server keeps serving."""

import os
import socket
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

MISSING_ID = "0193a5e7-7d1c-7f3a-9c2e-5b1d2a3c4e5f"


def stop_ok(srv):
    rc = srv.stop()
    if rc != 0:
        raise AssertionError("server exited with %s\n%s" % (rc, srv.log()))


class BadInputTest(harness.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server(["--idle-timeout", "2"], workers=2)
        cls.srv.start()
        cls.real = cls.srv.submit("noop")
        # A job that exists and stays put, for the per-job routes.
        cls.held = cls.srv.submit("noop", delay_seconds=3600)

    @classmethod
    def tearDownClass(cls):
        stop_ok(cls.srv)

    def create_raw(self, data, what=None, want=400, code="invalid_argument", path="/api/v1/jobs"):
        st, body, h = self.srv.post(path, raw=data)
        harness.assert_error(st, body, want, code, what or repr(data[:80]))
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        return body

    def create_bad(self, req, what=None, want=400, code="invalid_argument"):
        st, body, _ = self.srv.post("/api/v1/jobs", req)
        return harness.assert_error(st, body, want, code, what or repr(req)[:120])

    # --- malformed bodies ---

    def test_malformed_json(self):
        for data in (b"{", b'{"strategy":', b'{"strategy":"noop",}', b"{'strategy':'noop'}",
                     b'{"strategy":"noop"} trailing', b"nul", b'{"strategy":"noop"}{}',
                     b"\xef\xbb\xbf" + b"}"):
            self.create_raw(data)

    def test_body_not_an_object(self):
        for data in (b"[]", b'[{"strategy":"noop"}]', b'"noop"', b"42", b"null", b"true",
                     b"-1.5e3"):
            self.create_raw(data)

    def test_empty_body(self):
        self.create_raw(b"")
        st, body, _ = self.srv.request("POST", "/api/v1/jobs", headers={"Content-Length": "0"})
        harness.assert_error(st, body, 400, "invalid_argument")

    def test_strategy(self):
        self.create_bad({}, "missing strategy")
        self.create_bad({"payload": {}}, "missing strategy")
        for bad in (5, None, ["noop"], {"name": "noop"}, True, "", "NOOP", "no such",
                    "nope", "x" * 65, "../noop"):
            self.create_bad({"strategy": bad})

    def test_unknown_field(self):
        err = self.create_bad({"strategy": "noop", "prority": "high"})
        self.assertIn("prority", err["message"])
        self.create_bad({"strategy": "noop", "status": "completed"})
        self.create_bad({"strategy": "noop", "id": MISSING_ID})
        self.create_bad({"strategy": "noop", "attempts": 5})

    def test_priority(self):
        # (null stands for "absent" and takes the default, so it is not here)
        for bad in ("urgent", 7, 4, -1, "2", 1.5, True, [], {}, "HIGH", ""):
            self.create_bad({"strategy": "noop", "priority": bad})

    def test_queue(self):
        for bad in ("Bad Queue", "a/b", "UPPER", "", "x" * 65, "dot.ted", "sp ace", "é", 123,
                    ["default"], "a\nb", True):
            self.create_bad({"strategy": "noop", "queue": bad})
        ok = self.srv.submit(queue="q" * 64)
        self.assertEqual(ok["queue"], "q" * 64)
        ok = self.srv.submit(queue="a-b_c-9")
        self.assertEqual(ok["queue"], "a-b_c-9")

    def test_key(self):
        self.create_bad({"strategy": "noop", "key": "k" * 257})
        for bad in (5, ["k"], {"k": 1}, True):
            self.create_bad({"strategy": "noop", "key": bad})
        ok = self.srv.submit(key="k" * 256)
        self.assertEqual(ok["key"], "k" * 256)

    def test_max_attempts(self):
        for bad in (0, 101, -1, "3", 3.5, True, 2 ** 31, 2 ** 64, 1e300, [3]):
            self.create_bad({"strategy": "noop", "max_attempts": bad})
        self.assertEqual(self.srv.submit(max_attempts=100)["max_attempts"], 100)
        self.assertEqual(self.srv.submit(max_attempts=1)["max_attempts"], 1)

    def test_timeout_seconds(self):
        for bad in (0, -1, -300, 10 ** 12, 7 * 86400 + 1, "10", 2.5, 2 ** 63, 2 ** 64, True):
            self.create_bad({"strategy": "noop", "timeout_seconds": bad})
        self.assertEqual(self.srv.submit(timeout_seconds=1)["timeout_seconds"], 1)
        self.assertEqual(self.srv.submit(timeout_seconds=7 * 86400)["timeout_seconds"],
                         7 * 86400)

    def test_delay_seconds(self):
        for bad in (-1, -0.5, 10 ** 12, 366 * 86400 + 1, "5", [], 1e300, 2 ** 64, True):
            self.create_bad({"strategy": "noop", "delay_seconds": bad})

    def test_run_at(self):
        for bad in ("garbage", "2026-13-45T00:00:00.000Z", "2026-02-30T00:00:00Z",
                    "2026-11-26 10:00:00", "", "2026-11-26T25:00:00Z", 12345, {}, True,
                    "99999-01-01T00:00:00Z", "2026-11-26T10:00:00.000Z junk",
                    harness.format_ts(harness.now_ms() + 400 * 86400 * 1000)):
            self.create_bad({"strategy": "noop", "run_at": bad})

    def test_run_at_and_delay_together(self):
        self.create_bad({"strategy": "noop", "delay_seconds": 5,
                         "run_at": harness.format_ts(harness.now_ms() + 5000)})

    def test_idempotency_key(self):
        for bad in (5, True, ["a"], {"a": 1}, "i" * 257):
            self.create_bad({"strategy": "noop", "idempotency_key": bad})

    def test_nul_escapes(self):
        # Either refused, or kept exactly: never silently cut at the NUL.
        for req in ({"strategy": "noop", "payload": {"s": "a\u0000b"}},
                    {"strategy": "noop", "payload": {"a\u0000b": 1}},
                    {"strategy": "noop", "key": "a\u0000b"},
                    {"strategy": "noop", "idempotency_key": "i\u0000" + uuid.uuid4().hex}):
            st, body, _ = self.srv.post("/api/v1/jobs", req)
            if st == 201:
                got = self.srv.job(body["id"])
                for k, v in req.items():
                    self.assertEqual(got[k], v, (k, got))
            else:
                harness.assert_error(st, body, 400, "invalid_argument", repr(req))
        for req in ({"strategy": "no\u0000op"}, {"strategy": "noop", "queue": "q\u0000"}):
            self.create_bad(req)

    def test_invalid_utf8(self):
        for data in (b'{"strategy":"noop","payload":{"s":"\xff\xfe"}}',
                     b'{"strategy":"noop","key":"\xc3"}',
                     b'{"strategy":"noop","payload":"\xed\xa0\x80"}',
                     b'{"strategy":"no\x80op"}'):
            self.create_raw(data)

    def test_lone_surrogate_escape(self):
        st, body, _ = self.srv.post("/api/v1/jobs",
                                    raw=b'{"strategy":"noop","payload":{"s":"\\ud800"}}')
        self.assertIn(st, (201, 400), body)
        if st == 400:
            harness.assert_error(st, body, 400)

    def test_deep_nesting(self):
        depth = 100000
        for inner in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
            data = b'{"strategy":"noop","payload":' + inner + b"}"
            st, body, _ = self.srv.post("/api/v1/jobs", raw=data)
            if st == 201:
                self.srv.wait_status(body["id"], "completed")
            else:
                harness.assert_error(st, body, (400, 413))
            self.assertTrue(self.srv.alive())
        # Unbalanced deep input too.
        st, body, _ = self.srv.post("/api/v1/jobs", raw=b'{"strategy":"noop","payload":' +
                                    b"[" * depth)
        harness.assert_error(st, body, (400, 413))

    def test_huge_numbers(self):
        for data in (b'{"strategy":"noop","max_attempts":1' + b"0" * 400 + b"}",
                     b'{"strategy":"noop","priority":1e999}',
                     b'{"strategy":"noop","timeout_seconds":-0}',
                     b'{"strategy":"noop","delay_seconds":NaN}',
                     b'{"strategy":"noop","delay_seconds":Infinity}'):
            self.create_raw(data)

    def test_duplicate_keys(self):
        st, body, _ = self.srv.post("/api/v1/jobs",
                                    raw=b'{"strategy":"noop","strategy":"bogus-strategy"}')
        # Refused, or the one value kept is a strategy this server has.
        if st == 201:
            self.assertEqual(body["strategy"], "noop")
        else:
            harness.assert_error(st, body, 400)

    # --- ids in the path ---

    def test_unknown_id_is_404(self):
        for method, suffix, body in (("GET", "", None), ("POST", "/cancel", None),
                                     ("POST", "/retry", None), ("GET", "/attempts", None),
                                     ("POST", "/status", {"status": "running", "attempt": 1})):
            st, resp, _ = self.srv.request(method, "/api/v1/jobs/" + MISSING_ID + suffix,
                                           body=body)
            harness.assert_error(st, resp, 404, "not_found", suffix)

    def test_garbage_ids(self):
        ids = ["nope", "z" * 8 + "-" + "z" * 4 + "-" + "z" * 4 + "-" + "z" * 4 + "-" + "z" * 12,
               MISSING_ID.upper().replace("-", "_"), MISSING_ID[:-1], MISSING_ID + "0",
               "%00%ff%fe%2e%2e%2f", "%2e%2e", "..", "%25", "'%20OR%201=1--",
               "%C3%A9", "x" * 10240,
               MISSING_ID + "%00", "{" + MISSING_ID + "}"]
        problems = []
        for jid in ids:
            for method, suffix in (("GET", ""), ("POST", "/cancel"), ("POST", "/retry"),
                                   ("GET", "/attempts"), ("POST", "/status")):
                body = {"status": "running", "attempt": 1} if suffix == "/status" else None
                st, resp, _ = self.srv.request(method, "/api/v1/jobs/" + jid + suffix, body=body)
                what = "%s /api/v1/jobs/%s%s" % (method, jid[:48], suffix)
                # A long id may be refused by the HTTP layer (414 and the like).
                want = (400, 404) if len(jid) < 1000 else tuple(range(400, 500))
                if st not in want:
                    problems.append("%s -> %s %s" % (what, st, repr(resp)[:120]))
                elif len(jid) < 1000:
                    try:
                        harness.assert_error(st, resp, want, None, what)
                    except AssertionError as e:
                        problems.append(str(e)[:200])
        if problems:
            self.fail("ids answered wrongly:\n" + "\n".join(problems))
        self.assertTrue(self.srv.alive())

    # --- status reports ---

    def test_bad_status_reports(self):
        jid = self.held["id"]
        path = "/api/v1/jobs/%s/status" % jid
        before = self.srv.job(jid)
        bads = [{"status": "running", "attempt": 0},
                {"status": "running", "attempt": -1},
                {"status": "running", "attempt": "1"},
                {"status": "running", "attempt": 1.5},
                {"status": "running", "attempt": None},
                {"status": "running"},
                {"status": "done", "attempt": 1},
                {"status": "queued", "attempt": 1},
                {"status": "cancelled", "attempt": 1},
                {"status": 1, "attempt": 1},
                {"attempt": 1},
                {"status": "running", "attempt": 1, "worker_id": 5},
                {"status": "running", "attempt": 1, "worker_id": "w" * 129},
                {"status": "failed", "attempt": 1, "retryable": "yes"},
                {"status": "running", "attempt": 1, "bogus": True},
                {"status": "running", "attempt": 2 ** 63}]
        for req in bads:
            st, body, _ = self.srv.post(path, req)
            harness.assert_error(st, body, 400, "invalid_argument", repr(req))
        for data in (b"", b"{", b"[]", b'"running"'):
            self.create_raw(data, path=path)
        after = self.srv.job(jid)
        self.assertEqual(after, before)

    # --- list ---

    def test_bad_list_queries(self):
        for q in ("status=bogus", "status=done", "limit=0", "limit=-1", "limit=100000",
                  "limit=abc", "limit=1001", "limit=1.5", "limit=10abc",
                  "limit=99999999999999999999999", "cursor=garbage", "cursor=%ff%fe",
                  "queue=default&status=nope"):
            st, body, _ = self.srv.get("/api/v1/jobs?" + q)
            harness.assert_error(st, body, 400, "invalid_argument", q)

    # --- batch ---

    def test_bad_batches(self):
        path = "/api/v1/jobs/batch"
        for req in ({"jobs": "x"}, {"jobs": {}}, {"jobs": None}, {"jobs": 5}, {}, {"job": []},
                    {"jobs": []}, {"jobs": [5]}, {"jobs": [None]}, {"jobs": [[]]},
                    {"jobs": [{"strategy": "noop"}], "extra": 1}, [{"strategy": "noop"}]):
            st, body, _ = self.srv.post(path, req)
            harness.assert_error(st, body, 400, "invalid_argument", repr(req))
        st, body, _ = self.srv.post(path, {"jobs": [{"strategy": "noop"}] * 1001})
        harness.assert_error(st, body, (400, 413))
        st, body, _ = self.srv.post(path, {"jobs": [{"strategy": "noop"}] * 1000})
        self.assertEqual(st, 201, body)
        self.assertEqual(len(body["jobs"]), 1000)

    # --- odd requests ---

    def test_odd_methods_and_paths(self):
        for method, path in (("BREW", "/health"), ("PATCH", "/api/v1/jobs"),
                             ("GET", "/api/v1/jobs/"), ("GET", "//api/v1/jobs"),
                             ("GET", "/api/v1/jobs/%s/../../../health" % MISSING_ID),
                             ("GET", "/api/v1/jobs?%zz"), ("GET", "/" + "a" * 8000),
                             ("OPTIONS", "/api/v1/jobs")):
            st, body, _ = self.srv.request(method, path)
            self.assertLess(st, 500, (method, path[:60]))
        for data in (b"GARBAGE\r\n\r\n", b"GET\r\n\r\n",
                     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
                     b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 70000 +
                     b"\r\n\r\n",
                     b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                     b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                     b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\nzz\r\n{}\r\n0\r\n\r\n"):
            st, raw = self.srv.raw(data, timeout=5, until_close=False)
            self.assertTrue(st is None or st < 500, (data[:40], raw[:200]))
        self.assertTrue(self.srv.alive())

    def test_wrong_content_type_still_json(self):
        st, body, _ = self.srv.request("POST", "/api/v1/jobs", raw=b'{"strategy":"noop"}',
                                       headers={"Content-Type": "text/plain"})
        self.assertIn(st, (201, 400, 415), body)
        if st != 201:
            harness.assert_error(st, body, (400, 415))

    # --- slow and many clients ---

    def test_slow_client_does_not_block_others(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        try:
            s.sendall(b"GET /hea")
            t0 = time.monotonic()
            st, body, _ = self.srv.get("/health", timeout=5)
            self.assertEqual(st, 200)
            self.assertLess(time.monotonic() - t0, 2.0)
            # A half-sent body blocks no one either.
            s2 = socket.create_connection(("127.0.0.1", self.srv.port))
            s2.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            job = self.srv.submit("noop")
            self.srv.wait_status(job["id"], "completed")
            s2.close()
        finally:
            s.close()

    def test_idle_connections_are_closed(self):
        firsts = [b"", b"GET /hea",
                  b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"stra",
                  b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"]  # a kept-alive one
        socks = []
        try:
            for first in firsts:
                s = socket.create_connection(("127.0.0.1", self.srv.port))
                socks.append(s)
                if first:
                    s.sendall(first)
            t0 = time.monotonic()
            for first, s in zip(firsts, socks):
                got = b""
                try:
                    while True:
                        s.settimeout(max(0.1, t0 + 8 - time.monotonic()))
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                except ConnectionResetError:
                    pass
                except socket.timeout:
                    self.fail("idle connection still open after 8 s (sent %r)" % first)
                self.assertLess(time.monotonic() - t0, 6.0, first)
                self.assertFalse(got.startswith(b"HTTP/1.1 5"), got[:100])
                if first.startswith(b"GET /health HTTP"):
                    self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:100])
            self.assertGreater(time.monotonic() - t0, 0.5)
        finally:
            for s in socks:
                s.close()

    def test_many_idle_connections(self):
        socks = []
        try:
            for i in range(50):
                s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
                if i % 2:
                    s.sendall(b"GET /health HTTP/1.1\r\n")
                socks.append(s)
            t0 = time.monotonic()
            st, body, _ = self.srv.get("/health", timeout=5)
            self.assertEqual(st, 200)
            job = self.srv.submit("noop")
            self.srv.wait_status(job["id"], "completed")
            self.assertLess(time.monotonic() - t0, 5.0)
        finally:
            for s in socks:
                s.close()

    def test_concurrent_clients(self):
        errors = []

        def client(n):
            try:
                for _ in range(10):
                    st, body, _ = self.srv.post("/api/v1/jobs", {"strategy": "noop",
                                                                 "payload": {"n": n}})
                    if st != 201:
                        errors.append((st, body))
                    st, body, _ = self.srv.post("/api/v1/jobs", raw=b"{bad")
                    if st != 400:
                        errors.append((st, body))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])

    def test_zz_still_serving(self):
        """Runs last (by name): after everything above the server is fine."""
        self.assertTrue(self.srv.alive())
        st, body, _ = self.srv.get("/health")
        self.assertEqual((st, body), (200, {"status": "ok"}))
        job = self.srv.submit("sleep", payload={"ms": 10})
        done = self.srv.wait_status(job["id"], "completed")
        self.assertEqual(done["result"], {"slept_ms": 10})
        self.assertEqual(self.srv.job(self.real["id"])["status"], "completed")


class BodyLimitTest(harness.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server(["--max-body-bytes", "4096", "--idle-timeout", "3"], workers=1)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        stop_ok(cls.srv)

    @staticmethod
    def body_of(n):
        head = b'{"strategy":"noop","payload":{"pad":"'
        tail = b'"}}'
        return head + b"x" * (n - len(head) - len(tail)) + tail

    def test_body_under_limit(self):
        st, body, _ = self.srv.post("/api/v1/jobs", raw=self.body_of(4000))
        self.assertEqual(st, 201, body)

    def test_body_over_limit(self):
        st, body, _ = self.srv.post("/api/v1/jobs", raw=self.body_of(5000))
        harness.assert_error(st, body, 413, "too_large")
        st, body, _ = self.srv.post("/api/v1/jobs/batch",
                                    raw=b'{"jobs":[' + b",".join([b'{"strategy":"noop"}'] * 300)
                                    + b"]}")
        harness.assert_error(st, body, 413, "too_large")

    def test_huge_content_length_is_refused_at_once(self):
        req = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 1000000000\r\n\r\n{\"strategy\":")
        t0 = time.monotonic()
        st, raw = self.srv.raw(req, timeout=5)
        self.assertEqual(st, 413, raw[:300])
        self.assertLess(time.monotonic() - t0, 2.5)
        self.assertIn(b"too_large", raw)

    def test_lying_content_length(self):
        # Claims less than it sends: the server reads what was declared (bad
        # JSON), and what follows is junk on the connection, never a 5xx.
        data = self.body_of(5000)
        req = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 4000\r\n\r\n" + data)
        st, raw = self.srv.raw(req, timeout=5, until_close=True)
        self.assertIsNotNone(st, raw[:300])
        self.assertIn(st, (400, 413), raw[:300])
        self.assertNotIn(b"HTTP/1.1 5", raw)
        # Claims more than it sends: it waits, then the idle timeout ends it.
        req = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 4000\r\n\r\n" + b'{"strategy":"noop"}')
        t0 = time.monotonic()
        st, raw = self.srv.raw(req, timeout=10, until_close=True)
        self.assertLess(time.monotonic() - t0, 8)
        self.assertTrue(st is None or 400 <= st < 500, raw[:300])
        self.assertTrue(self.srv.alive())

    def chunked(self, data, size=1000):
        out = b""
        for i in range(0, len(data), size):
            part = data[i:i + size]
            out += b"%x\r\n" % len(part) + part + b"\r\n"
        return out + b"0\r\n\r\n"

    def test_chunked_over_limit(self):
        req = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + self.chunked(self.body_of(5000)))
        st, raw = self.srv.raw(req, timeout=5)
        self.assertEqual(st, 413, raw[:300])
        self.assertIn(b"too_large", raw)
        # Much more than the limit, in small chunks.
        req = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + self.chunked(self.body_of(200000), 100))
        st, raw = self.srv.raw(req, timeout=5)
        self.assertEqual(st, 413, raw[:300])

    def test_chunked_under_limit(self):
        req = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
               self.chunked(self.body_of(3000), 700))
        st, raw = self.srv.raw(req, timeout=5)
        self.assertEqual(st, 201, raw[:300])

    def test_zz_still_serving(self):
        self.assertTrue(self.srv.alive())
        st, _, _ = self.srv.get("/health")
        self.assertEqual(st, 200)
        job = self.srv.submit("noop")
        self.srv.wait_status(job["id"], "completed")


if __name__ == "__main__":
    harness.main()
