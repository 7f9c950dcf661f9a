"""Black-box tests of the HTTP API: the job shape, create/get/batch, list and
pagination, idempotency, queue stats, attempts, routing and content types,
and waiting for a job to end (GET ?wait_ms=)."""

import concurrent.futures
import os
import signal
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

JOB_FIELDS = {
    "id", "queue", "strategy", "payload", "priority", "key", "status", "attempts",
    "max_attempts", "timeout_seconds", "run_at", "idempotency_key", "result", "error",
    "worker_id", "created_at", "started_at", "completed_at", "updated_at",
}


def uniq(prefix):
    """A queue or key name no other test uses."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class ApiTest(harness.ServerCase):
    """One server without workers: every job stays where the API put it."""

    server = dict(workers=0)

    def list_jobs(self, query):
        st, body, _ = self.srv.get("/api/v1/jobs?" + query)
        self.assertEqual(st, 200, body)
        return body

    def list_all(self, query, limit):
        """Follows next_cursor to the end; returns the pages' job lists."""
        pages = []
        cursor = None
        for _ in range(100):
            q = "%s&limit=%d" % (query, limit)
            if cursor is not None:
                q += "&cursor=" + harness.urllib_quote(cursor)
            body = self.list_jobs(q)
            pages.append(body["jobs"])
            self.assertLessEqual(len(body["jobs"]), limit)
            cursor = body["next_cursor"]
            if cursor is None:
                return pages
            self.assertIsInstance(cursor, str)
        self.fail("pagination never ended")

    # --- health ---

    def test_health(self):
        st, body, h = self.srv.get("/health")
        self.assertEqual(st, 200)
        self.assertEqual(body, {"status": "ok"})
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)

    def test_ready(self):
        st, body, h = self.srv.get("/ready")
        self.assertEqual(st, 200)
        self.assertEqual(body["status"], "ready")
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)

    # --- create and get ---

    def test_create_returns_every_field_with_defaults(self):
        before = harness.now_ms()
        st, job, h = self.srv.post("/api/v1/jobs", {"strategy": "noop", "payload": {"a": [1, "x"]}})
        after = harness.now_ms()
        self.assertEqual(st, 201, job)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        self.assertEqual(set(job), JOB_FIELDS)
        self.assertRegex(job["id"], harness.UUID7_RE)
        self.assertEqual(uuid.UUID(job["id"]).version, 7)
        self.assertEqual(job["queue"], "default")
        self.assertEqual(job["strategy"], "noop")
        self.assertEqual(job["payload"], {"a": [1, "x"]})
        self.assertEqual(job["priority"], "normal")
        self.assertIsNone(job["key"])
        self.assertEqual(job["status"], "queued")
        self.assertEqual(job["attempts"], 0)
        self.assertEqual(job["max_attempts"], 3)
        self.assertEqual(job["timeout_seconds"], 300)
        self.assertIsNone(job["run_at"])
        self.assertIsNone(job["idempotency_key"])
        self.assertIsNone(job["result"])
        self.assertIsNone(job["error"])
        self.assertIsNone(job["worker_id"])
        self.assertIsNone(job["started_at"])
        self.assertIsNone(job["completed_at"])
        created = harness.parse_ts(job["created_at"])
        harness.parse_ts(job["updated_at"])
        self.assertGreaterEqual(created, before - 1000)
        self.assertLessEqual(created, after + 1000)
        # The id's 48-bit timestamp is the creation time.
        id_ms = int(job["id"].replace("-", "")[:12], 16)
        self.assertLessEqual(abs(id_ms - created), 1000)

    def test_create_with_every_field(self):
        q = uniq("full")
        req = {"strategy": "sleep", "payload": {"ms": 5}, "queue": q, "priority": "high",
               "key": "example.com", "idempotency_key": uniq("idem"), "timeout_seconds": 17,
               "max_attempts": 5}
        job = self.srv.submit(**req)
        for k in ("strategy", "payload", "queue", "priority", "key", "idempotency_key",
                  "timeout_seconds", "max_attempts"):
            self.assertEqual(job[k], req[k], k)
        self.assertEqual(job["status"], "queued")

    def test_priority_number_is_shown_as_name(self):
        names = ["emergency", "high", "normal", "low"]
        for n, name in enumerate(names):
            self.assertEqual(self.srv.submit(priority=n)["priority"], name)
            self.assertEqual(self.srv.submit(priority=name)["priority"], name)

    def test_payload_absent_is_null(self):
        job = self.srv.submit()
        self.assertIsNone(job["payload"])

    def test_large_payload_round_trip(self):
        payload = {"blob": "x" * 900000, "list": list(range(1000)), "u": "\u00e9\u4e2d\U0001f600"}
        job = self.srv.submit(payload=payload)
        self.assertEqual(job["payload"], payload)
        self.assertEqual(self.srv.job(job["id"])["payload"], payload)

    def test_get_returns_the_created_job(self):
        job = self.srv.submit(payload={"k": "v"}, key="k1")
        st, got, h = self.srv.get("/api/v1/jobs/" + job["id"])
        self.assertEqual(st, 200)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        self.assertEqual(got, job)

    def test_ids_are_distinct_and_increasing(self):
        ids = [self.srv.submit()["id"] for _ in range(20)]
        self.assertEqual(len(set(ids)), 20)
        self.assertEqual(ids, sorted(ids))

    def test_delayed_create_is_scheduled(self):
        before = harness.now_ms()
        job = self.srv.submit(delay_seconds=600)
        self.assertEqual(job["status"], "scheduled")
        run_at = harness.parse_ts(job["run_at"])
        self.assertGreaterEqual(run_at, before + 600000 - 1000)
        self.assertLessEqual(run_at, harness.now_ms() + 600000 + 1000)
        at = harness.format_ts(harness.now_ms() + 3600000)
        job = self.srv.submit(run_at=at)
        self.assertEqual(job["status"], "scheduled")
        self.assertEqual(job["run_at"], at)

    # --- batch ---

    def test_batch_creates_all(self):
        q = uniq("batch")
        reqs = [{"strategy": "noop", "queue": q, "payload": {"i": i}} for i in range(10)]
        st, body, h = self.srv.post("/api/v1/jobs/batch", {"jobs": reqs})
        self.assertEqual(st, 201, body)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        jobs = body["jobs"]
        self.assertEqual(len(jobs), 10)
        self.assertEqual(len({j["id"] for j in jobs}), 10)
        self.assertEqual([j["payload"] for j in jobs], [{"i": i} for i in range(10)])
        for j in jobs:
            self.assertEqual(set(j), JOB_FIELDS)
            self.assertEqual(j["status"], "queued")
            self.assertEqual(self.srv.job(j["id"]), j)
        listed = self.list_jobs("queue=" + q + "&limit=100")["jobs"]
        self.assertEqual({j["id"] for j in listed}, {j["id"] for j in jobs})

    def test_batch_is_atomic(self):
        q = uniq("atomic")
        reqs = [{"strategy": "noop", "queue": q} for _ in range(3)]
        reqs.append({"strategy": "noop", "queue": q, "priority": "urgent"})
        reqs.append({"strategy": "noop", "queue": q})
        st, body, _ = self.srv.post("/api/v1/jobs/batch", {"jobs": reqs})
        err = harness.assert_error(st, body, 400, "invalid_argument")
        self.assertIn("jobs[3]", err["message"])
        self.assertEqual(self.list_jobs("queue=" + q)["jobs"], [])
        # An unknown strategy deep in the batch also creates nothing.
        reqs = [{"strategy": "noop", "queue": q}, {"strategy": "no-such-strategy", "queue": q}]
        st, body, _ = self.srv.post("/api/v1/jobs/batch", {"jobs": reqs})
        err = harness.assert_error(st, body, 400)
        self.assertIn("jobs[1]", err["message"])
        self.assertEqual(self.list_jobs("queue=" + q)["jobs"], [])

    def test_batch_mixed_fields(self):
        q = uniq("bmix")
        reqs = [{"strategy": "noop", "queue": q, "priority": "low"},
                {"strategy": "sleep", "queue": q, "payload": {"ms": 1}, "delay_seconds": 600},
                {"strategy": "noop", "queue": q, "key": "tenant-1", "max_attempts": 1}]
        st, body, _ = self.srv.post("/api/v1/jobs/batch", {"jobs": reqs})
        self.assertEqual(st, 201, body)
        a, b, c = body["jobs"]
        self.assertEqual((a["priority"], a["status"]), ("low", "queued"))
        self.assertEqual(b["status"], "scheduled")
        self.assertIsNotNone(b["run_at"])
        self.assertEqual((c["key"], c["max_attempts"]), ("tenant-1", 1))

    # --- list ---

    def test_list_newest_first(self):
        q = uniq("order")
        ids = [self.srv.submit(queue=q)["id"] for _ in range(6)]
        body = self.list_jobs("queue=" + q)
        self.assertEqual([j["id"] for j in body["jobs"]], ids[::-1])
        self.assertIsNone(body["next_cursor"])
        for j in body["jobs"]:
            self.assertEqual(set(j), JOB_FIELDS)

    def test_list_filters(self):
        q = uniq("filt")
        k = uniq("key")
        plain = [self.srv.submit(queue=q)["id"] for _ in range(3)]
        keyed = [self.srv.submit(queue=q, key=k)["id"] for _ in range(2)]
        cancelled = []
        for _ in range(2):
            jid = self.srv.submit(queue=q)["id"]
            st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % jid)
            self.assertEqual(st, 200, body)
            cancelled.append(jid)
        other = self.srv.submit(queue=uniq("other"), key=k)["id"]

        def ids(query):
            return [j["id"] for j in self.list_jobs(query)["jobs"]]

        self.assertEqual(ids("queue=" + q), (plain + keyed + cancelled)[::-1])
        self.assertEqual(ids("queue=%s&status=cancelled" % q), cancelled[::-1])
        self.assertEqual(ids("queue=%s&status=queued" % q), (plain + keyed)[::-1])
        self.assertEqual(ids("queue=%s&status=completed" % q), [])
        self.assertEqual(ids("key=" + k), [other] + keyed[::-1])
        self.assertEqual(ids("queue=%s&key=%s" % (q, k)), keyed[::-1])
        for j in self.list_jobs("status=cancelled&limit=1000")["jobs"]:
            self.assertEqual(j["status"], "cancelled")

    def test_list_pagination_has_no_gaps_or_duplicates(self):
        q = uniq("page")
        ids = [self.srv.submit(queue=q)["id"] for _ in range(7)]
        pages = self.list_all("queue=" + q, 3)
        self.assertEqual([len(p) for p in pages], [3, 3, 1])
        self.assertEqual([j["id"] for p in pages for j in p], ids[::-1])
        # An exact multiple of the page size.
        pages = self.list_all("queue=" + q, 7)
        got = [j["id"] for p in pages for j in p]
        self.assertEqual(got, ids[::-1])
        # limit=1 walks one at a time.
        pages = self.list_all("queue=" + q, 1)
        self.assertEqual([j["id"] for p in pages for j in p], ids[::-1])

    def test_pagination_is_stable_under_inserts(self):
        q = uniq("stable")
        ids = [self.srv.submit(queue=q)["id"] for _ in range(6)]
        first = self.list_jobs("queue=%s&limit=2" % q)
        self.assertEqual([j["id"] for j in first["jobs"]], ids[:3:-1])
        # Newer jobs arriving meanwhile must not shift the older pages.
        for _ in range(3):
            self.srv.submit(queue=q)
        seen = [j["id"] for j in first["jobs"]]
        cursor = first["next_cursor"]
        while cursor is not None:
            body = self.list_jobs("queue=%s&limit=2&cursor=%s" % (q, harness.urllib_quote(cursor)))
            seen += [j["id"] for j in body["jobs"]]
            cursor = body["next_cursor"]
        self.assertEqual(seen, ids[::-1])

    def test_list_limit_bounds(self):
        q = uniq("lim")
        for _ in range(3):
            self.srv.submit(queue=q)
        self.assertEqual(len(self.list_jobs("queue=%s&limit=1" % q)["jobs"]), 1)
        self.assertEqual(len(self.list_jobs("queue=%s&limit=1000" % q)["jobs"]), 3)
        for bad in ("0", "1001", "-1", "abc"):
            st, body, _ = self.srv.get("/api/v1/jobs?limit=" + bad)
            harness.assert_error(st, body, 400, "invalid_argument", "limit=" + bad)

    def test_list_default_limit_is_50(self):
        q = uniq("deflim")
        st, body, _ = self.srv.post("/api/v1/jobs/batch",
                                    {"jobs": [{"strategy": "noop", "queue": q}] * 55})
        self.assertEqual(st, 201, body)
        page = self.list_jobs("queue=" + q)
        self.assertEqual(len(page["jobs"]), 50)
        self.assertIsNotNone(page["next_cursor"])

    # --- idempotency ---

    def test_idempotent_create(self):
        ik = uniq("idem")
        req = {"strategy": "noop", "payload": {"order": 42}, "idempotency_key": ik}
        st, first, _ = self.srv.post("/api/v1/jobs", req)
        self.assertEqual(st, 201, first)
        self.assertEqual(first["idempotency_key"], ik)
        st, again, _ = self.srv.post("/api/v1/jobs", req)
        self.assertEqual(st, 200, again)
        self.assertEqual(again["id"], first["id"])
        st, body, _ = self.srv.post("/api/v1/jobs", dict(req, payload={"order": 43}))
        harness.assert_error(st, body, 409, "conflict")
        st, body, _ = self.srv.post("/api/v1/jobs", dict(req, priority="high"))
        harness.assert_error(st, body, 409, "conflict")
        listed = self.list_jobs("limit=1000")["jobs"]
        self.assertEqual(len([j for j in listed if j["idempotency_key"] == ik]), 1)

    def test_idempotent_batch(self):
        q = uniq("ibatch")
        ik = uniq("idem")
        req = {"strategy": "noop", "queue": q, "idempotency_key": ik}
        existing = self.srv.submit(**req)
        st, body, _ = self.srv.post("/api/v1/jobs/batch",
                                    {"jobs": [{"strategy": "noop", "queue": q}, req]})
        self.assertIn(st, (200, 201), body)
        self.assertEqual(body["jobs"][1]["id"], existing["id"])
        self.assertNotEqual(body["jobs"][0]["id"], existing["id"])
        self.assertEqual(len(self.list_jobs("queue=" + q)["jobs"]), 2)
        # The same key with a different body: the whole batch is refused.
        st, body, _ = self.srv.post(
            "/api/v1/jobs/batch",
            {"jobs": [{"strategy": "noop", "queue": q}, dict(req, payload={"x": 1})]})
        harness.assert_error(st, body, 409, "conflict")
        self.assertEqual(len(self.list_jobs("queue=" + q)["jobs"]), 2)

    def test_idempotent_create_race(self):
        import threading
        req = {"strategy": "noop", "idempotency_key": uniq("race"), "payload": {"n": 1}}
        answers = []

        def post():
            answers.append(self.srv.post("/api/v1/jobs", req)[:2])
        threads = [threading.Thread(target=post) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        codes = sorted(st for st, _ in answers)
        self.assertEqual(codes, [200] * 11 + [201], answers)
        self.assertEqual(len({body["id"] for _, body in answers}), 1)

    def test_idempotency_key_twice_in_one_batch(self):
        q = uniq("idup")
        req = {"strategy": "noop", "queue": q, "idempotency_key": uniq("idem")}
        st, body, _ = self.srv.post("/api/v1/jobs/batch", {"jobs": [req, req]})
        if st in (200, 201):
            self.assertEqual(body["jobs"][0]["id"], body["jobs"][1]["id"])
        else:
            harness.assert_error(st, body, (400, 409))
        self.assertLessEqual(len(self.list_jobs("queue=" + q)["jobs"]), 1)
        # Two different bodies under one key in a batch can never both be created.
        req2 = dict(req, idempotency_key=uniq("idem"))
        st, body, _ = self.srv.post("/api/v1/jobs/batch",
                                    {"jobs": [req2, dict(req2, payload={"other": True})]})
        harness.assert_error(st, body, (400, 409))

    # --- queue stats ---

    def stats(self):
        st, body, h = self.srv.get("/api/v1/queue/stats")
        self.assertEqual(st, 200, body)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        return body

    def test_queue_stats(self):
        q = uniq("stats")
        before = self.stats()
        self.assertEqual(set(before["counts"]), {"pending", "scheduled", "queued", "running",
                                                 "completed", "failed", "cancelled"})
        for _ in range(3):
            self.srv.submit(queue=q, priority="high")
        self.srv.submit(queue=q, priority="low")
        self.srv.submit(queue=q, delay_seconds=600)
        c = self.srv.submit(queue=q)
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % c["id"])
        self.assertEqual(st, 200, body)
        after = self.stats()
        diff = {k: after["counts"][k] - before["counts"][k] for k in after["counts"]}
        self.assertEqual(diff, {"pending": 0, "scheduled": 1, "queued": 4, "running": 0,
                                "completed": 0, "failed": 0, "cancelled": 1})
        qs = after["queues"][q]
        self.assertEqual(qs["high"]["length"], 3)
        self.assertEqual(qs["low"]["length"], 1)
        for prio in ("high", "low"):
            self.assertEqual(qs[prio]["pending"], 0)
            self.assertIsInstance(qs[prio]["oldest_age_ms"], int)
            self.assertGreaterEqual(qs[prio]["oldest_age_ms"], 0)

    # --- attempts ---

    def test_attempts_endpoint(self):
        job = self.srv.submit()
        st, body, h = self.srv.get("/api/v1/jobs/%s/attempts" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        self.assertEqual(body["attempts"], [])
        st, body = self.srv.report(job["id"], "running", 1, worker_id="w-test:1")
        self.assertEqual(st, 200, body)
        rows = self.srv.attempts(job["id"])
        self.assertEqual(len(rows), 1)
        r = rows[0]
        self.assertEqual(r["attempt"], 1)
        self.assertEqual(r["worker_id"], "w-test:1")
        self.assertEqual(r["outcome"], "running")
        harness.parse_ts(r["started_at"])
        self.assertIsNone(r["finished_at"])
        self.assertIsNone(r["duration_ms"])
        self.assertIsNone(r["error"])
        st, body = self.srv.report(job["id"], "completed", 1, worker_id="w-test:1",
                                   result={"ok": True})
        self.assertEqual(st, 200, body)
        r = self.srv.attempts(job["id"])[0]
        self.assertEqual(r["outcome"], "completed")
        started = harness.parse_ts(r["started_at"])
        finished = harness.parse_ts(r["finished_at"])
        self.assertGreaterEqual(finished, started)
        self.assertIsInstance(r["duration_ms"], int)
        self.assertGreaterEqual(r["duration_ms"], 0)
        self.assertIsNone(r["error"])

    def test_unknown_job_is_404(self):
        missing = "0193a5e7-7d1c-7f3a-9c2e-5b1d2a3c4e5f"
        for method, path, body in (("GET", "", None), ("GET", "/attempts", None),
                                   ("POST", "/cancel", None), ("POST", "/retry", None),
                                   ("POST", "/status", {"status": "running", "attempt": 1})):
            st, body, h = self.srv.request(method, "/api/v1/jobs/" + missing + path, body=body)
            harness.assert_error(st, body, 404, "not_found", path)
            self.assertTrue(h.get("content-type", "").startswith("application/json"), h)

    # --- routing ---

    def test_unknown_paths_are_404(self):
        job = self.srv.submit()
        for path in ("/nope", "/api/v1/nope", "/api/v2/jobs", "/api/v1/jobs/%s/nope" % job["id"],
                     "/api/v1/queue", "/healthz"):
            st, body, h = self.srv.get(path)
            harness.assert_error(st, body, 404, "not_found", path)
            self.assertTrue(h.get("content-type", "").startswith("application/json"), (path, h))

    def test_wrong_methods_are_405_with_allow(self):
        job = self.srv.submit()
        jid = job["id"]
        cases = [("PUT", "/health", {"GET"}),
                 ("POST", "/ready", {"GET"}),
                 ("DELETE", "/api/v1/jobs", {"GET", "POST"}),
                 ("PUT", "/api/v1/jobs", {"GET", "POST"}),
                 ("DELETE", "/api/v1/jobs/" + jid, {"GET"}),
                 ("POST", "/api/v1/jobs/" + jid, {"GET"}),
                 ("GET", "/api/v1/jobs/%s/cancel" % jid, {"POST"}),
                 ("GET", "/api/v1/jobs/%s/retry" % jid, {"POST"}),
                 ("GET", "/api/v1/jobs/%s/status" % jid, {"POST"}),
                 ("POST", "/api/v1/jobs/%s/attempts" % jid, {"GET"}),
                 ("POST", "/api/v1/queue/stats", {"GET"})]
        for method, path, allow in cases:
            st, body, h = self.srv.request(method, path, body={} if method != "GET" else None)
            harness.assert_error(st, body, 405, "method_not_allowed", method + " " + path)
            self.assertIn("allow", h, (method, path))
            got = {m.strip() for m in h["allow"].split(",")}
            self.assertTrue(allow <= got, (method, path, h["allow"]))
            self.assertNotIn(method, got, (method, path, h["allow"]))
            self.assertTrue(h.get("content-type", "").startswith("application/json"), (path, h))
        # Nothing above changed the job.
        self.assertEqual(self.srv.job(jid)["status"], "queued")

    def test_error_content_type(self):
        st, body, h = self.srv.post("/api/v1/jobs", raw=b"{")
        harness.assert_error(st, body, 400, "invalid_argument")
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)

    def test_cancel_and_retry_answers(self):
        job = self.srv.submit()
        st, body, h = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        self.assertEqual(body["id"], job["id"])
        self.assertEqual(body["status"], "cancelled")
        harness.parse_ts(body["completed_at"])
        self.assertEqual(self.srv.job(job["id"]), body)
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        harness.assert_error(st, body, 409, "conflict")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "queued")
        self.assertIsNone(body["completed_at"])
        st, body, _ = self.srv.post("/api/v1/jobs/%s/retry" % job["id"])
        harness.assert_error(st, body, 409, "conflict")


def timed_get(srv, path, timeout=30):
    """GET path; returns (status, body, seconds it took)."""
    t0 = time.monotonic()
    st, body, _ = srv.get(path, timeout=timeout)
    return st, body, time.monotonic() - t0


class WaitNoWorkersTest(harness.ServerCase):
    """GET ?wait_ms= on a server without workers: jobs stay queued unless the
    API changes them."""

    # Room for two waiting requests (half the connections).
    server = dict(workers=0, args=["--max-connections", "4"])

    def test_wait_ms_bad_values_are_400(self):
        job = self.srv.submit()
        for bad in ["-1", "60001", "99999999999", "abc", "", "1.5", "1e3", "+5", "%205", "5x",
                    "0x10"]:
            st, body, _ = self.srv.get("/api/v1/jobs/%s?wait_ms=%s" % (job["id"], bad))
            harness.assert_error(st, body, 400, "invalid_argument", "wait_ms=" + bad)
            self.assertIn("wait_ms", body["error"]["message"], bad)
            self.assertIn("60000", body["error"]["message"], bad)

    def test_wait_ms_bounds_are_accepted(self):
        job = self.srv.submit()
        st, body, took = timed_get(self.srv, "/api/v1/jobs/%s?wait_ms=0" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body, self.srv.job(job["id"]))
        self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        st, body, took = timed_get(self.srv, "/api/v1/jobs/%s?wait_ms=60000" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")
        self.assertLess(took, 5)

    def test_wait_for_unknown_job_is_404_at_once(self):
        missing = "01900000-0000-7000-8000-000000000000"
        st, body, took = timed_get(self.srv, "/api/v1/jobs/%s?wait_ms=20000" % missing)
        harness.assert_error(st, body, 404, "not_found")
        self.assertLess(took, 5)

    def test_wait_expires_with_the_job_as_it_stands(self):
        job = self.srv.submit()
        st, body, took = timed_get(self.srv, "/api/v1/jobs/%s?wait_ms=400" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "queued")
        self.assertEqual(body, self.srv.job(job["id"]))
        self.assertGreaterEqual(took, 0.4)
        self.assertLess(took, 10)

    def test_wait_on_terminal_job_answers_at_once(self):
        job = self.srv.submit()
        st, cancelled, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, cancelled)
        st, body, took = timed_get(self.srv, "/api/v1/jobs/%s?wait_ms=20000" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body, cancelled)
        self.assertLess(took, 5)

    def test_wait_ends_when_the_job_is_cancelled(self):
        job = self.srv.submit()
        path = "/api/v1/jobs/%s?wait_ms=20000" % job["id"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(timed_get, self.srv, path)
            time.sleep(0.3)
            st, cancelled, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
            self.assertEqual(st, 200, cancelled)
            st, body, took = waiting.result(timeout=30)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")
        self.assertEqual(body, self.srv.job(job["id"]))
        self.assertGreaterEqual(took, 0.25)  # held until the cancel
        self.assertLess(took, 10)

    def test_waits_beyond_the_cap_answer_at_once(self):
        # Three waits where two may wait: whatever the order, exactly one
        # is answered at once with the job still queued.
        job = self.srv.submit()
        path = "/api/v1/jobs/%s?wait_ms=2000" % job["id"]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = [f.result(timeout=30)
                       for f in [pool.submit(timed_get, self.srv, path) for _ in range(3)]]
        for st, body, _ in results:
            self.assertEqual(st, 200, body)
            self.assertEqual(body["status"], "queued")
        took = sorted(r[2] for r in results)
        self.assertLess(took[0], 1.5, took)
        self.assertGreaterEqual(took[1], 2.0, took)


class WaitTest(harness.ServerCase):
    """GET ?wait_ms= on a server that runs jobs."""

    server = dict(workers=2)

    def test_wait_answers_as_soon_as_the_job_completes(self):
        t0 = time.monotonic()
        job = self.srv.submit("sleep", {"ms": 300})
        st, body, _ = self.srv.get("/api/v1/jobs/%s?wait_ms=20000" % job["id"])
        took = time.monotonic() - t0
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "completed", body)
        self.assertEqual(body["result"], {"slept_ms": 300})
        self.assertEqual(body, self.srv.job(job["id"]))
        self.assertGreaterEqual(took, 0.3)
        self.assertLess(took, 10)

    def test_wait_answers_a_failed_job(self):
        job = self.srv.submit("http", {"url": "http://127.0.0.1:1/"}, max_attempts=1)
        st, body, took = timed_get(self.srv, "/api/v1/jobs/%s?wait_ms=20000" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "failed", body)
        self.assertLess(took, 15)

    def test_wait_ends_when_a_running_job_is_cancelled(self):
        job = self.srv.submit("sleep", {"ms": 20000})
        self.srv.wait_status(job["id"], "running")
        path = "/api/v1/jobs/%s?wait_ms=20000" % job["id"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(timed_get, self.srv, path)
            time.sleep(0.3)
            st, _, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
            self.assertEqual(st, 200)
            st, body, took = waiting.result(timeout=30)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")
        self.assertLess(took, 10)

    def test_many_waits_on_many_jobs(self):
        jobs = [self.srv.submit("sleep", {"ms": 50 * (i % 4)}) for i in range(12)]
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            futs = [pool.submit(timed_get, self.srv, "/api/v1/jobs/%s?wait_ms=20000" % j["id"])
                    for j in jobs]
            results = [f.result(timeout=60) for f in futs]
        for j, (st, body, took) in zip(jobs, results):
            self.assertEqual(st, 200, body)
            self.assertEqual(body["id"], j["id"])
            self.assertEqual(body["status"], "completed", body)
            self.assertLess(took, 15)


class WaitShutdownTest(harness.unittest.TestCase):
    def test_stopping_the_server_answers_waiting_requests(self):
        with harness.Server(workers=0) as srv:
            job = srv.submit()
            path = "/api/v1/jobs/%s?wait_ms=30000" % job["id"]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                waits = [pool.submit(timed_get, srv, path) for _ in range(2)]
                time.sleep(0.3)
                t0 = time.monotonic()
                srv.proc.send_signal(signal.SIGTERM)
                results = [w.result(timeout=30) for w in waits]
                srv.proc.wait(15)
                stopped = time.monotonic() - t0
        for st, body, took in results:
            self.assertEqual(st, 200, body)
            self.assertEqual(body["id"], job["id"])
            self.assertEqual(body["status"], "queued")
            self.assertGreaterEqual(took, 0.25)  # held until the stop
            self.assertLess(took, 10)
        self.assertLess(stopped, 10)


if __name__ == "__main__":
    harness.main()
