"""Black-box tests of durability: records survive a clean restart and a
SIGKILL; a job running at a crash runs again as a new attempt; queued jobs
are not lost; SIGTERM drains running jobs and exits 0."""

import os
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

ts = harness.parse_ts
STRATS = ["--strategies", "noop,sleep"]


class RestartTest(harness.unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="jp-rs-")
        self.dir = self._tmp.name
        self.servers = []

    def tearDown(self):
        try:
            for s in self.servers:
                if s.alive():
                    s.stop()
        finally:
            self._tmp.cleanup()

    def server(self, workers, *args):
        """A server on this test's database (a new port each time)."""
        srv = harness.Server(STRATS + list(args), workers=workers, tmpdir=self.dir)
        self.servers.append(srv)
        return srv.start()

    def stop_ok(self, srv):
        rc = srv.stop()
        self.assertEqual(rc, 0, srv.log()[-4000:])

    def test_records_survive_restart(self):
        srv = self.server(2)
        completed = srv.submit("noop", payload={"k": [1, 2]}, key="tenant-a",
                               idempotency_key="restart-1", priority="high")
        failed = srv.submit("sleep", payload={"ms": "bad"}, queue="other")
        cancelled = srv.submit("noop", delay_seconds=3600)
        scheduled = srv.submit("sleep", payload={"ms": 1}, delay_seconds=3600,
                               priority="low", timeout_seconds=9, max_attempts=7)
        st, body, _ = srv.post("/api/v1/jobs/%s/cancel" % cancelled["id"])
        self.assertEqual(st, 200, body)
        srv.wait_status(completed["id"], "completed")
        srv.wait_status(failed["id"], "failed")
        ids = [completed["id"], failed["id"], cancelled["id"], scheduled["id"]]
        before = {i: srv.job(i) for i in ids}
        before_attempts = {i: srv.attempts(i) for i in ids}
        st, listed_before, _ = srv.get("/api/v1/jobs?limit=100")
        self.assertEqual(st, 200)
        self.assertEqual(before[scheduled["id"]]["status"], "scheduled")
        self.assertEqual(before[cancelled["id"]]["status"], "cancelled")
        self.stop_ok(srv)

        srv = self.server(2)
        for i in ids:
            self.assertEqual(srv.job(i), before[i])
            self.assertEqual(srv.attempts(i), before_attempts[i])
        st, listed_after, _ = srv.get("/api/v1/jobs?limit=100")
        self.assertEqual(listed_after, listed_before)
        # The idempotency key still maps to the same job.
        st, again, _ = srv.post("/api/v1/jobs", {"strategy": "noop", "payload": {"k": [1, 2]},
                                                 "key": "tenant-a",
                                                 "idempotency_key": "restart-1",
                                                 "priority": "high"})
        self.assertEqual(st, 200, again)
        self.assertEqual(again["id"], completed["id"])
        # Still scheduled, and still cancellable after the restart.
        self.assertEqual(srv.job(scheduled["id"])["status"], "scheduled")
        st, body, _ = srv.post("/api/v1/jobs/%s/cancel" % scheduled["id"])
        self.assertEqual(st, 200, body)
        # New jobs get ids after the old ones.
        new = srv.submit("noop")
        self.assertGreater(new["id"], max(ids))
        srv.wait_status(new["id"], "completed")
        st, stats, _ = srv.get("/api/v1/queue/stats")
        self.assertEqual(st, 200)
        self.assertEqual(stats["counts"]["completed"], 2)
        self.assertEqual(stats["counts"]["failed"], 1)
        self.assertEqual(stats["counts"]["cancelled"], 2)
        self.stop_ok(srv)

    def test_running_job_survives_kill9(self):
        srv = self.server(2)
        job = srv.submit("sleep", payload={"ms": 3000})
        srv.wait_status(job["id"], "running")
        srv.kill9()

        srv = self.server(2)
        got = srv.job(job["id"])
        self.assertIn(got["status"], ("queued", "running", "scheduled"))
        done = srv.wait_status(job["id"], "completed", timeout=20)
        self.assertEqual(done["attempts"], 2)
        self.assertEqual(done["result"], {"slept_ms": 3000})
        rows = srv.attempts(job["id"])
        self.assertEqual([r["attempt"] for r in rows], [1, 2])
        self.assertEqual(rows[0]["outcome"], "lost")
        self.assertIsNotNone(rows[0]["finished_at"])
        self.assertEqual(rows[1]["outcome"], "completed")
        self.stop_ok(srv)

    def test_queued_jobs_survive_kill9(self):
        srv = self.server(0)
        # Sleeps, so that some are still running while the restarted server
        # looks for jobs its predecessor left running: its own must not count.
        ids = [srv.submit("sleep", payload={"ms": 200})["id"] for i in range(10)]
        st, body, _ = srv.post("/api/v1/jobs/batch",
                               {"jobs": [{"strategy": "sleep", "payload": {"ms": 200},
                                          "priority": ["low", "high"][i % 2]}
                                         for i in range(10, 20)]})
        self.assertEqual(st, 201, body)
        ids += [j["id"] for j in body["jobs"]]
        srv.kill9()

        srv = self.server(4)
        problems = []
        for i in ids:
            done = srv.wait_status(i, "completed", timeout=20)
            rows = srv.attempts(i)
            if done["attempts"] != 1 or [r["outcome"] for r in rows] != ["completed"]:
                problems.append("%s: attempts %s, %s" % (i, done["attempts"],
                                                         [r["outcome"] for r in rows]))
        if problems:
            self.fail("queued jobs ran more than once after the restart:\n" +
                      "\n".join(problems) + "\n" + srv.log()[-1500:])
        self.stop_ok(srv)

    def test_backlog_after_clean_restart_runs_once(self):
        srv = self.server(0)
        # A few slow jobs first (they start at once after the restart), then a
        # backlog long enough that recovery is still at work while they run.
        jobs = [{"strategy": "sleep", "payload": {"ms": 500}, "priority": "high",
                 "max_attempts": 1} for _ in range(4)]
        st, body, _ = srv.post("/api/v1/jobs/batch", {"jobs": jobs})
        self.assertEqual(st, 201, body)
        slow = [j["id"] for j in body["jobs"]]
        for _ in range(2):
            more = [{"strategy": "noop", "priority": "low"} for _ in range(800)]
            st, body, _ = srv.post("/api/v1/jobs/batch", {"jobs": more})
            self.assertEqual(st, 201, body)
            jobs += more
        self.stop_ok(srv)

        srv = self.server(4)

        def settled():
            st, stats, _ = srv.get("/api/v1/queue/stats")
            c = stats["counts"]
            return c if c["completed"] + c["failed"] + c["cancelled"] == len(jobs) else None
        counts = harness.wait_until(settled, timeout=40, what="the backlog to finish")
        problems = []
        if counts["completed"] != len(jobs):
            problems.append("counts: %r" % (counts,))
        for i in slow:
            done = srv.job(i)
            rows = [r["outcome"] for r in srv.attempts(i)]
            if done["status"] != "completed" or done["attempts"] != 1 or rows != ["completed"]:
                problems.append("%s: %s attempts %s error %s rows %s"
                                % (i, done["status"], done["attempts"], done["error"], rows))
        twice = []
        for status in ("completed", "failed"):
            st, listed, _ = srv.get("/api/v1/jobs?limit=1000&status=" + status)
            twice += [j["id"] for j in listed["jobs"] if j["attempts"] != 1]
        if twice:
            problems.append("%d job(s) with attempts != 1, e.g. %s" % (len(twice), twice[:3]))
        if problems:
            self.fail("waiting jobs did not run exactly once after a restart:\n" +
                      "\n".join(problems) + "\n" + srv.log()[-600:])
        self.stop_ok(srv)

    def test_kill9_after_acknowledged_writes(self):
        srv = self.server(0)
        job = srv.submit("noop")
        st, body = srv.report(job["id"], "running", 1, worker_id="w-x:1")
        self.assertEqual(st, 200, body)
        st, body = srv.report(job["id"], "completed", 1, worker_id="w-x:1", result={"v": 1})
        self.assertEqual(st, 200, body)
        other = srv.submit("noop", delay_seconds=3600)
        st, body, _ = srv.post("/api/v1/jobs/%s/cancel" % other["id"])
        self.assertEqual(st, 200, body)
        srv.kill9()

        srv = self.server(0)
        got = srv.job(job["id"])
        self.assertEqual(got["status"], "completed")
        self.assertEqual(got["result"], {"v": 1})
        self.assertEqual(srv.job(other["id"])["status"], "cancelled")
        self.stop_ok(srv)

    def test_due_while_down_runs_after_restart(self):
        srv = self.server(1)
        job = srv.submit("noop", delay_seconds=1)
        self.stop_ok(srv)
        harness.wait_until(lambda: harness.now_ms() > ts(job["run_at"]) + 200, timeout=5)
        srv = self.server(1)
        done = srv.wait_status(job["id"], "completed", timeout=10)
        self.assertEqual(done["attempts"], 1)
        self.stop_ok(srv)

    def test_sigterm_drains_running_job(self):
        srv = self.server(2)
        job = srv.submit("sleep", payload={"ms": 1000})
        running = srv.wait_status(job["id"], "running")
        rc = srv.stop(signal.SIGTERM)
        self.assertEqual(rc, 0, srv.log()[-4000:])
        # It waited for the sleep to end rather than abandoning it.
        self.assertGreaterEqual(harness.now_ms() - ts(running["started_at"]), 950)

        srv = self.server(0)
        done = srv.job(job["id"])
        self.assertEqual(done["status"], "completed", done)
        self.assertEqual(done["attempts"], 1)
        self.assertEqual(done["result"], {"slept_ms": 1000})
        self.assertGreaterEqual(ts(done["completed_at"]) - ts(done["started_at"]), 1000)
        rows = srv.attempts(job["id"])
        self.assertEqual([r["outcome"] for r in rows], ["completed"])
        self.stop_ok(srv)

    def test_sigterm_past_drain_timeout_requeues(self):
        srv = self.server(2, "--drain-timeout", "1")
        job = srv.submit("sleep", payload={"ms": 60000})
        srv.wait_status(job["id"], "running")
        t0 = time.monotonic()
        self.stop_ok(srv)
        self.assertLess(time.monotonic() - t0, 8)

        srv = self.server(0)
        got = srv.job(job["id"])
        self.assertEqual(got["status"], "queued", got)
        rows = srv.attempts(job["id"])
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["outcome"], "lost")
        self.assertIsNotNone(rows[0]["finished_at"])
        self.stop_ok(srv)

    def test_sigterm_with_idle_clients_is_prompt(self):
        srv = self.server(1)
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(5)]
        try:
            socks[0].sendall(b"GET /hea")
            socks[1].sendall(b"POST /api/v1/jobs HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
            t0 = time.monotonic()
            self.stop_ok(srv)
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            for s in socks:
                s.close()

    def test_sigint_also_exits_cleanly(self):
        srv = self.server(1)
        srv.submit("noop")
        self.assertEqual(srv.stop(signal.SIGINT), 0, srv.log()[-4000:])


if __name__ == "__main__":
    harness.main()
