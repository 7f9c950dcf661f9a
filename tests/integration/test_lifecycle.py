"""Black-box tests of a job's life: running, priorities, delays, timeouts,
retries with backoff, cancellation (process groups included), manual retry,
and workers' status reports with their attempt fencing."""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

ts = harness.parse_ts


def stop_ok(srv):
    rc = srv.stop()
    if rc != 0:
        raise AssertionError("server exited with %s\n%s" % (rc, srv.log()))


class RunTest(harness.unittest.TestCase):
    """Jobs run by the embedded engine."""

    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server(["--strategies", "noop,sleep,exec", "--retry-backoff-ms", "200"],
                                 workers=4)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        stop_ok(cls.srv)

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="jp-lc-")
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def test_noop_completes(self):
        job = self.srv.submit("noop", payload={"x": 1})
        done = self.srv.wait_status(job["id"], "completed")
        self.assertEqual(done["attempts"], 1)
        self.assertEqual(done["result"], {})
        self.assertIsNone(done["error"])
        self.assertIsInstance(done["worker_id"], str)
        self.assertTrue(done["worker_id"])
        created, started, completed = ts(done["created_at"]), ts(done["started_at"]), \
            ts(done["completed_at"])
        self.assertLessEqual(created, started)
        self.assertLessEqual(started, completed)
        self.assertGreaterEqual(ts(done["updated_at"]), completed)
        rows = self.srv.attempts(job["id"])
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["attempt"], 1)
        self.assertEqual(rows[0]["outcome"], "completed")
        self.assertEqual(rows[0]["worker_id"], done["worker_id"])
        self.assertIsNotNone(rows[0]["finished_at"])

    def test_delay_seconds(self):
        job = self.srv.submit("noop", delay_seconds=1.5)
        self.assertEqual(job["status"], "scheduled")
        run_at = ts(job["run_at"])
        self.assertGreaterEqual(run_at, ts(job["created_at"]) + 1400)
        self.assertLessEqual(run_at, ts(job["created_at"]) + 1600)
        done = self.srv.wait_status(job["id"], "completed", timeout=10)
        self.assertGreaterEqual(ts(done["started_at"]), run_at)
        self.assertEqual(done["attempts"], 1)

    def test_run_at_in_the_future(self):
        at = harness.format_ts(harness.now_ms() + 1200)
        job = self.srv.submit("noop", run_at=at)
        self.assertEqual(job["status"], "scheduled")
        self.assertEqual(job["run_at"], at)
        st = self.srv.job(job["id"])["status"]
        self.assertIn(st, ("scheduled", "queued", "running", "completed"))
        done = self.srv.wait_status(job["id"], "completed", timeout=10)
        self.assertGreaterEqual(ts(done["started_at"]), ts(at))

    def test_run_at_in_the_past_runs_now(self):
        job = self.srv.submit("noop", run_at=harness.format_ts(harness.now_ms() - 60000))
        self.assertIn(job["status"], ("queued", "running", "completed"))
        self.srv.wait_status(job["id"], "completed")

    def test_timeout(self):
        job = self.srv.submit("sleep", payload={"ms": 5000}, timeout_seconds=1, max_attempts=1)
        done = self.srv.wait_status(job["id"], "failed", timeout=8)
        self.assertEqual(done["error"]["code"], "timeout")
        self.assertEqual(done["attempts"], 1)
        took = ts(done["completed_at"]) - ts(done["started_at"])
        self.assertGreaterEqual(took, 900)
        self.assertLess(took, 4000)
        rows = self.srv.attempts(job["id"])
        self.assertEqual([r["outcome"] for r in rows], ["failed"])
        self.assertEqual(rows[0]["error"]["code"], "timeout")

    def test_retries_with_growing_backoff(self):
        job = self.srv.submit("exec", payload={"command": ["/bin/false"]}, max_attempts=3)
        done = self.srv.wait_status(job["id"], "failed", timeout=15)
        self.assertEqual(done["attempts"], 3)
        self.assertEqual(done["error"]["code"], "exit_status")
        rows = self.srv.attempts(job["id"])
        self.assertEqual([r["attempt"] for r in rows], [1, 2, 3])
        self.assertEqual([r["outcome"] for r in rows], ["failed"] * 3)
        for r in rows:
            self.assertEqual(r["error"]["code"], "exit_status")
        gap1 = ts(rows[1]["started_at"]) - ts(rows[0]["finished_at"])
        gap2 = ts(rows[2]["started_at"]) - ts(rows[1]["finished_at"])
        # 200 ms base doubling, each jittered to 50-100 %: [100, 200] then [200, 400].
        self.assertGreaterEqual(gap1, 95, (gap1, gap2))
        self.assertGreaterEqual(gap2, 195, (gap1, gap2))
        self.assertLess(gap1, 200 + 1500, (gap1, gap2))
        self.assertLess(gap2, 400 + 1500, (gap1, gap2))
        self.assertGreater(gap2, gap1 - 50, (gap1, gap2))

    def test_fails_once_then_succeeds(self):
        marker = os.path.join(self.tmp, "marker")
        script = 'if [ -e "$1" ]; then echo second; else : > "$1"; echo first >&2; exit 1; fi'
        job = self.srv.submit("exec", payload={"command": ["/bin/sh", "-c", script, "sh", marker]},
                              max_attempts=3)
        done = self.srv.wait_status(job["id"], ["completed", "failed"], timeout=15)
        self.assertEqual(done["status"], "completed", done)
        self.assertEqual(done["attempts"], 2)
        self.assertEqual(done["result"]["stdout"], "second\n")
        self.assertIsNone(done["error"])
        rows = self.srv.attempts(job["id"])
        self.assertEqual([r["outcome"] for r in rows], ["failed", "completed"])
        self.assertEqual(rows[0]["error"]["code"], "exit_status")
        self.assertIsNone(rows[1]["error"])

    def test_cancel_scheduled_never_runs(self):
        victim = self.srv.submit("noop", delay_seconds=1)
        control = self.srv.submit("noop", delay_seconds=1)
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % victim["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")
        self.srv.wait_status(control["id"], "completed", timeout=10)
        after = self.srv.job(victim["id"])
        self.assertEqual(after["status"], "cancelled")
        self.assertEqual(after["attempts"], 0)
        self.assertIsNone(after["started_at"])
        self.assertEqual(self.srv.attempts(victim["id"]), [])
        # A cancelled job may be retried; it then runs at once.
        st, body, _ = self.srv.post("/api/v1/jobs/%s/retry" % victim["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "queued")
        done = self.srv.wait_status(victim["id"], "completed")
        self.assertEqual(done["attempts"], 1)

    def test_cancel_far_scheduled(self):
        job = self.srv.submit("noop", delay_seconds=30)
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")
        got = self.srv.job(job["id"])
        self.assertEqual(got["status"], "cancelled")
        self.assertEqual(got["attempts"], 0)

    def test_cancel_running_sleep(self):
        job = self.srv.submit("sleep", payload={"ms": 60000})
        self.srv.wait_status(job["id"], "running")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")

        def closed():
            rows = self.srv.attempts(job["id"])
            return rows if rows and rows[-1]["finished_at"] is not None else None
        rows = harness.wait_until(closed, timeout=5, what="the attempt to end")
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["outcome"], "cancelled")
        self.assertLess(ts(rows[0]["finished_at"]) - ts(body["updated_at"]), 3000)
        after = self.srv.job(job["id"])
        self.assertEqual(after["status"], "cancelled")
        self.assertEqual(after["attempts"], 1)

    def test_retry_right_after_cancel_runs_a_new_attempt(self):
        job = self.srv.submit("sleep", payload={"ms": 60000})
        self.srv.wait_status(job["id"], "running")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        st, body, _ = self.srv.post("/api/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "queued")
        again = self.srv.wait_status(job["id"], "running")
        self.assertEqual(again["attempts"], 2)

        def settled():
            rows = self.srv.attempts(job["id"])
            return rows if len(rows) == 2 and rows[0]["finished_at"] is not None else None
        rows = harness.wait_until(settled, timeout=5, what="attempt 1 to end")
        self.assertEqual([r["outcome"] for r in rows], ["cancelled", "running"])
        # The first run's end must not touch the second.
        self.assertEqual(self.srv.job(job["id"])["status"], "running")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)

    def test_cancel_running_exec_kills_process_group(self):
        pidf = os.path.join(self.tmp, "pid")
        bgf = os.path.join(self.tmp, "bg")
        script = 'echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; sleep 300 & echo $! > "$2.tmp"; ' \
                 'mv "$2.tmp" "$2"; sleep 300'
        job = self.srv.submit("exec", payload={"command": ["/bin/sh", "-c", script, "sh",
                                                            pidf, bgf]})
        harness.wait_until(lambda: os.path.exists(bgf), timeout=10, what="the command to start")
        with open(pidf) as f:
            shell = int(f.read())
        with open(bgf) as f:
            bg = int(f.read())
        # The command runs in a group of its own (led by its exec guardian),
        # and the background sleep is in it too.
        pgid = os.getpgid(shell)
        self.assertNotEqual(pgid, os.getpgid(0))
        self.assertNotEqual(pgid, os.getpgid(self.srv.proc.pid))
        self.assertEqual(os.getpgid(bg), pgid)
        self.assertTrue(harness.group_alive(pgid))
        self.assertEqual(self.srv.job(job["id"])["status"], "running")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        harness.wait_until(lambda: not harness.group_alive(pgid), timeout=5,
                           what="process group %d to be gone" % pgid)

        def closed():
            rows = self.srv.attempts(job["id"])
            return rows if rows and rows[-1]["finished_at"] is not None else None
        rows = harness.wait_until(closed, timeout=5, what="the attempt to end")
        self.assertEqual([r["outcome"] for r in rows], ["cancelled"])
        self.assertEqual(self.srv.job(job["id"])["status"], "cancelled")

    def test_cancel_running_exec_that_ignores_sigterm(self):
        pidf = os.path.join(self.tmp, "pid")
        script = 'trap "" TERM; echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; while :; do sleep 1; done'
        job = self.srv.submit("exec", payload={"command": ["/bin/sh", "-c", script, "sh", pidf]})
        harness.wait_until(lambda: os.path.exists(pidf), timeout=10, what="the command to start")
        with open(pidf) as f:
            pgid = os.getpgid(int(f.read()))
        self.assertTrue(harness.group_alive(pgid))
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        harness.wait_until(lambda: not harness.group_alive(pgid), timeout=10,
                           what="process group %d to be gone" % pgid)

    def test_running_job_in_queue_stats(self):
        q = "stats-running"
        job = self.srv.submit("sleep", payload={"ms": 60000}, queue=q)
        self.srv.wait_status(job["id"], "running")
        st, stats, _ = self.srv.get("/api/v1/queue/stats")
        self.assertEqual(st, 200, stats)
        self.assertGreaterEqual(stats["counts"]["running"], 1)
        self.assertEqual(stats["queues"][q]["normal"]["pending"], 1)
        self.assertEqual(stats["queues"][q]["normal"]["length"], 0)
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)

    def test_cancel_completed_is_409(self):
        job = self.srv.submit("noop")
        done = self.srv.wait_status(job["id"], "completed")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        harness.assert_error(st, body, 409, "conflict")
        self.assertEqual(self.srv.job(job["id"]), done)

    def test_retry_failed_runs_again(self):
        job = self.srv.submit("exec", payload={"command": ["/bin/false"]}, max_attempts=1)
        failed = self.srv.wait_status(job["id"], "failed")
        self.assertEqual(failed["attempts"], 1)
        st, body, _ = self.srv.post("/api/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "queued")
        again = self.srv.wait_status(job["id"], "failed")
        self.assertEqual(again["attempts"], 2)
        rows = self.srv.attempts(job["id"])
        self.assertEqual([r["attempt"] for r in rows], [1, 2])
        self.assertEqual([r["outcome"] for r in rows], ["failed", "failed"])
        self.assertGreaterEqual(ts(rows[1]["started_at"]), ts(rows[0]["finished_at"]))

    def test_retry_gives_a_fresh_attempt_budget(self):
        job = self.srv.submit("exec", payload={"command": ["/bin/false"]}, max_attempts=2)
        self.assertEqual(self.srv.wait_status(job["id"], "failed", timeout=10)["attempts"], 2)
        st, body, _ = self.srv.post("/api/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200, body)

        def spent():
            j = self.srv.job(job["id"])
            return j if j["status"] == "failed" and j["attempts"] >= 4 else None
        done = harness.wait_until(spent, timeout=10, what="two more attempts")
        self.assertEqual(done["attempts"], 4)
        rows = self.srv.attempts(job["id"])
        self.assertEqual([r["attempt"] for r in rows], [1, 2, 3, 4])

    def test_retry_completed_is_409(self):
        job = self.srv.submit("noop")
        done = self.srv.wait_status(job["id"], "completed")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/retry" % job["id"])
        harness.assert_error(st, body, 409, "conflict")
        self.assertEqual(self.srv.job(job["id"]), done)

    def test_retry_running_is_409(self):
        job = self.srv.submit("sleep", payload={"ms": 60000})
        self.srv.wait_status(job["id"], "running")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/retry" % job["id"])
        harness.assert_error(st, body, 409, "conflict")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)


class SingleWorkerTest(harness.unittest.TestCase):
    """One engine thread: dispatch order is observable."""

    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server(["--strategies", "noop,sleep"], workers=1)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        stop_ok(cls.srv)

    def hold(self):
        """Occupies the only worker; returns the job to cancel to let it go."""
        job = self.srv.submit("sleep", payload={"ms": 60000}, priority="emergency")
        self.srv.wait_status(job["id"], "running")
        return job

    def release(self, holder):
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % holder["id"])
        self.assertEqual(st, 200, body)

    def test_strict_priority(self):
        holder = self.hold()
        order = ["low", "normal", "high", "normal", "emergency"]
        jobs = [self.srv.submit("sleep", payload={"ms": 30}, priority=p) for p in order]
        for j in jobs:
            self.assertEqual(self.srv.job(j["id"])["status"], "queued")
        self.release(holder)
        done = [self.srv.wait_status(j["id"], "completed", timeout=15) for j in jobs]
        ran = sorted(done, key=lambda j: ts(j["started_at"]))
        want = [jobs[4]["id"], jobs[2]["id"], jobs[1]["id"], jobs[3]["id"], jobs[0]["id"]]
        self.assertEqual([j["id"] for j in ran], want,
                         [(j["priority"], j["started_at"]) for j in ran])
        for a, b in zip(ran, ran[1:]):
            self.assertGreaterEqual(ts(b["started_at"]), ts(a["completed_at"]))

    def test_cancel_queued_never_runs(self):
        holder = self.hold()
        victim = self.srv.submit("noop")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % victim["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")
        self.release(holder)
        control = self.srv.submit("noop", priority="low")
        self.srv.wait_status(control["id"], "completed")
        after = self.srv.job(victim["id"])
        self.assertEqual(after["status"], "cancelled")
        self.assertEqual(after["attempts"], 0)
        self.assertIsNone(after["started_at"])
        self.assertIsNone(after["worker_id"])
        self.assertEqual(self.srv.attempts(victim["id"]), [])


class ReportTest(harness.unittest.TestCase):
    """No engine threads: the test plays the worker through the status API."""

    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Server(workers=0)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        stop_ok(cls.srv)

    def refused(self, job_id, status, attempt, **fields):
        """A report that must get 409 and change nothing."""
        before = self.srv.job(job_id)
        before_rows = self.srv.attempts(job_id)
        st, body = self.srv.report(job_id, status, attempt, **fields)
        harness.assert_error(st, body, 409, "conflict", "%s attempt %s" % (status, attempt))
        self.assertEqual(self.srv.job(job_id), before)
        self.assertEqual(self.srv.attempts(job_id), before_rows)

    def ok(self, job_id, status, attempt, **fields):
        st, body = self.srv.report(job_id, status, attempt, **fields)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["id"], job_id)
        return body

    def test_running_then_completed(self):
        job = self.srv.submit()
        self.assertEqual(job["status"], "queued")
        body = self.ok(job["id"], "running", 1, worker_id="w-a:1")
        self.assertEqual(body["status"], "running")
        self.assertEqual(body["attempts"], 1)
        self.assertEqual(body["worker_id"], "w-a:1")
        ts(body["started_at"])
        self.assertEqual(self.srv.job(job["id"]), body)
        body = self.ok(job["id"], "completed", 1, worker_id="w-a:1", result={"answer": 42})
        self.assertEqual(body["status"], "completed")
        self.assertEqual(body["result"], {"answer": 42})
        self.assertEqual(body["attempts"], 1)
        ts(body["completed_at"])
        self.assertEqual(self.srv.job(job["id"]), body)
        # A terminal state is never overwritten.
        self.refused(job["id"], "completed", 1, worker_id="w-a:1", result={"answer": 43})
        self.refused(job["id"], "failed", 1, worker_id="w-a:1", error="late")
        self.refused(job["id"], "running", 2, worker_id="w-b:1")
        rows = self.srv.attempts(job["id"])
        self.assertEqual([(r["attempt"], r["outcome"]) for r in rows], [(1, "completed")])

    def test_stale_attempt_is_refused(self):
        job = self.srv.submit()
        self.ok(job["id"], "running", 1, worker_id="w-a:1")
        body = self.ok(job["id"], "running", 2, worker_id="w-b:1")
        self.assertEqual(body["attempts"], 2)
        self.assertEqual(body["worker_id"], "w-b:1")
        self.refused(job["id"], "completed", 1, worker_id="w-a:1", result={"stale": True})
        self.refused(job["id"], "failed", 1, worker_id="w-a:1", error="stale")
        self.refused(job["id"], "running", 1, worker_id="w-a:1")
        self.refused(job["id"], "completed", 3, worker_id="w-c:1")
        body = self.ok(job["id"], "completed", 2, worker_id="w-b:1", result={"fresh": True})
        self.assertEqual(body["status"], "completed")
        self.assertEqual(body["result"], {"fresh": True})
        rows = self.srv.attempts(job["id"])
        self.assertEqual([r["attempt"] for r in rows], [1, 2])
        self.assertNotEqual(rows[0]["outcome"], "running")
        self.assertIsNotNone(rows[0]["finished_at"])
        self.assertEqual(rows[1]["outcome"], "completed")

    def test_report_for_cancelled_job_is_refused(self):
        job = self.srv.submit()
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        self.refused(job["id"], "running", 1, worker_id="w-a:1")
        self.refused(job["id"], "completed", 1, worker_id="w-a:1")

    def test_report_after_running_job_cancelled_is_refused(self):
        job = self.srv.submit()
        self.ok(job["id"], "running", 1, worker_id="w-a:1")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")
        self.refused(job["id"], "completed", 1, worker_id="w-a:1", result={})
        self.refused(job["id"], "failed", 1, worker_id="w-a:1", error="x")

    def test_failed_with_attempts_left_is_scheduled(self):
        job = self.srv.submit(max_attempts=3)
        self.ok(job["id"], "running", 1, worker_id="w-a:1")
        before = harness.now_ms()
        err = {"code": "boom", "message": "it broke"}
        body = self.ok(job["id"], "failed", 1, worker_id="w-a:1", error=err, retryable=True)
        self.assertEqual(body["status"], "scheduled")
        self.assertEqual(body["error"], err)
        self.assertEqual(body["attempts"], 1)
        self.assertIsNone(body["completed_at"])
        self.assertGreaterEqual(ts(body["run_at"]), before)
        rows = self.srv.attempts(job["id"])
        self.assertEqual(rows[0]["outcome"], "failed")
        self.assertEqual(rows[0]["error"], err)
        # The backoff passes and it waits for a worker again.
        self.srv.wait_status(job["id"], "queued", timeout=10)
        body = self.ok(job["id"], "running", 2, worker_id="w-a:1")
        self.assertEqual(body["attempts"], 2)
        self.refused(job["id"], "failed", 1, worker_id="w-a:1", error="old")

    def test_failed_default_is_retryable(self):
        job = self.srv.submit(max_attempts=2)
        self.ok(job["id"], "running", 1)
        body = self.ok(job["id"], "failed", 1, error="plain text")
        self.assertEqual(body["status"], "scheduled")
        self.assertEqual(body["error"]["message"], "plain text")
        self.assertIsInstance(body["error"]["code"], str)

    def test_failed_not_retryable_is_failed(self):
        job = self.srv.submit(max_attempts=3)
        self.ok(job["id"], "running", 1, worker_id="w-a:1")
        err = {"code": "invalid_payload", "message": "no"}
        body = self.ok(job["id"], "failed", 1, worker_id="w-a:1", error=err, retryable=False,
                       result={"partial": 1})
        self.assertEqual(body["status"], "failed")
        self.assertEqual(body["error"], err)
        self.assertEqual(body["attempts"], 1)
        ts(body["completed_at"])
        self.refused(job["id"], "running", 2, worker_id="w-a:1")

    def test_failed_last_attempt_is_failed(self):
        job = self.srv.submit(max_attempts=1)
        self.ok(job["id"], "running", 1)
        body = self.ok(job["id"], "failed", 1, error={"code": "x", "message": "y"}, retryable=True)
        self.assertEqual(body["status"], "failed")

    def test_poison_job_stops(self):
        job = self.srv.submit(max_attempts=3)
        for n in (1, 2, 3):
            body = self.ok(job["id"], "running", n, worker_id="w-%d:1" % n)
            self.assertEqual(body["status"], "running")
            self.assertEqual(body["attempts"], n)
        st, body = self.srv.report(job["id"], "running", 4, worker_id="w-4:1")
        harness.assert_error(st, body, 409, "conflict")
        got = self.srv.job(job["id"])
        self.assertEqual(got["status"], "failed")
        self.assertEqual(got["error"]["code"], "crashed_worker")
        ts(got["completed_at"])
        self.refused(job["id"], "running", 5)
        self.refused(job["id"], "completed", 3)
        rows = self.srv.attempts(job["id"])
        self.assertGreaterEqual(len(rows), 3)
        for r in rows:
            self.assertNotEqual(r["outcome"], "running", rows)
            self.assertIsNotNone(r["finished_at"], rows)

    def test_retry_after_manual_failure(self):
        job = self.srv.submit(max_attempts=1)
        self.ok(job["id"], "running", 1)
        self.ok(job["id"], "failed", 1, error="x")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "queued")
        self.assertIsNone(body["completed_at"])
        self.refused(job["id"], "running", 1)
        body = self.ok(job["id"], "running", 2)
        self.assertEqual(body["attempts"], 2)
        body = self.ok(job["id"], "completed", 2, result={"second": True})
        self.assertEqual(body["status"], "completed")
        self.assertIsNone(body["error"])
        rows = self.srv.attempts(job["id"])
        self.assertEqual([(r["attempt"], r["outcome"]) for r in rows],
                         [(1, "failed"), (2, "completed")])


if __name__ == "__main__":
    harness.main()
