"""Black-box tests of distributed mode: a jobplane-server with a real Redis
(and SQLite or PostgreSQL) and jobplane-worker processes: the stream layout,
priorities, queues, bad messages, cancellation, presence, shutdown, direct
database reporting and the evicting-Redis check."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import services  # noqa: E402
from services import PRIORITIES, read_file, rjson, stream, xrange_entries  # noqa: E402

ts = harness.parse_ts
STRATS = ["--strategies", "noop,sleep,http,exec"]
WAIT = 30  # seconds: a generous bound for anything that should be quick






def xlen(redis, key):
    return int(redis.cli("XLEN", key) or 0)


def all_streams_empty(redis, queues=("default",)):
    return all(xlen(redis, stream(q, p)) == 0 for q in queues for p in PRIORITIES)


class Cluster:
    """Per-test Redis, database, server and workers; each torn down afterwards
    (workers first, so none keeps reporting to a stopped server)."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="jp-dist-")
        self.addCleanup(self._tmp.cleanup)
        self.dir = self._tmp.name
        self.redis = services.Redis().start()
        self.addCleanup(self.redis.close)
        self.db_url = self.database()
        self.srv = None
        self.workers = []

    def database(self):
        return None  # SQLite in the server's directory

    def server(self, *args, env=None, redis=None, database=None):
        srv = harness.Server(STRATS + ["--reconcile-interval", "1", "--lease-seconds", "2",
                                              "--retry-backoff-ms", "100"] + list(args),
                             env=env, tmpdir=self.dir, database=database or self.db_url,
                             redis=redis or self.redis.url)
        srv.start()
        self.addCleanup(self._stop_server, srv)
        if self.srv is None:
            self.srv = srv
        return srv

    def _stop_server(self, srv):
        if srv.alive():
            rc = srv.stop()
            self.assertEqual(rc, 0, srv.log()[-3000:])

    def worker(self, *args, strategies=STRATS, control_plane=True, wid=None, env=None):
        w = harness.Worker(self.redis.url, self.srv.url if control_plane else None,
                           args=list(strategies) + ["--lease-seconds", "2"] + list(args),
                           env=env, tmpdir=self.dir, wid=wid)
        w.start()
        self.addCleanup(self._stop_worker, w)
        self.workers.append(w)
        return w

    def _stop_worker(self, w):
        if w.alive():
            rc = w.stop()
            self.assertEqual(rc, 0, w.log()[-3000:])
        else:
            w.stop()  # collects a crash's sanitizer report, if any

    def wait_done(self, job_id, status="completed", timeout=WAIT, srv=None):
        try:
            return (srv or self.srv).wait_status(job_id, status, timeout=timeout)
        except AssertionError as e:
            logs = "".join("\nworker %s log:\n%s" % (w.id, w.log()[-3000:]) for w in self.workers)
            raise AssertionError(str(e) + logs) from None

    def batch(self, jobs, srv=None):
        st, body, _ = (srv or self.srv).post("/api/v1/jobs/batch", {"jobs": jobs})
        self.assertEqual(st, 201, body)
        return body["jobs"]

    def wait_running(self, job_id, timeout=WAIT):
        return self.wait_done(job_id, "running", timeout=timeout)


class CoreTests(Cluster):
    """Run against both databases."""

    def test_every_strategy_completes_through_a_worker(self):
        srv = self.server()
        w = self.worker()
        jobs = {
            "noop": srv.submit("noop", payload={"x": 1}),
            "sleep": srv.submit("sleep", payload={"ms": 20}),
            "exec": srv.submit("exec", payload={"command": ["/bin/echo", "hello"]}),
            # An HTTP job against the server's own liveness endpoint.
            "http": srv.submit("http", payload={"url": srv.url + "/health",
                                                "extract": {"s": "/status"}}),
        }
        for name, job in jobs.items():
            done = self.wait_done(job["id"])
            self.assertEqual(done["worker_id"], w.id, name)
            self.assertEqual(done["attempts"], 1, name)
            atts = srv.attempts(job["id"])
            self.assertEqual(len(atts), 1, (name, atts))
            self.assertEqual(atts[0]["attempt"], 1)
            self.assertEqual(atts[0]["worker_id"], w.id)
            self.assertEqual(atts[0]["outcome"], "completed")
            self.assertIsNotNone(atts[0]["finished_at"])
        self.assertEqual(self.srv.job(jobs["sleep"]["id"])["result"], {"slept_ms": 20})
        self.assertEqual(self.srv.job(jobs["exec"]["id"])["result"]["stdout"], "hello\n")
        self.assertEqual(self.srv.job(jobs["http"]["id"])["result"]["status"], 200)
        self.assertEqual(self.srv.job(jobs["http"]["id"])["result"]["extracted"], {"s": "ok"})
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="streams to be empty")

    def test_redis_layout_of_a_waiting_job(self):
        srv = self.server()
        job = srv.submit("noop", payload={"ms": 5, "tag": ["a", 1]}, priority="high",
                         key="tenant-7", timeout_seconds=42, max_attempts=4)
        self.assertEqual(job["status"], "queued")
        entries = xrange_entries(self.redis, stream("default", "high"))
        self.assertEqual(len(entries), 1, entries)
        fields = entries[0][1]
        self.assertEqual(fields["job_id"], job["id"])
        self.assertEqual(fields["attempt"], "1")
        data = json.loads(fields["job_data"])
        want = {"id": job["id"], "queue": "default", "strategy": "noop",
                "payload": {"ms": 5, "tag": ["a", 1]}, "key": "tenant-7",
                "timeout_seconds": 42, "max_attempts": 4, "attempt": 1}
        for k, v in want.items():
            self.assertEqual(data.get(k), v, (k, data))
        self.assertIn(data.get("priority"), ("high", 1), data)
        for p in ("emergency", "normal", "low"):
            self.assertEqual(xlen(self.redis, stream("default", p)), 0, p)
        groups = rjson(self.redis, "XINFO", "GROUPS", stream("default", "high"))
        names = [dict(zip(g[0::2], g[1::2]))["name"] for g in groups]
        self.assertEqual(names, ["jobplane"], groups)
        st, stats, _ = srv.get("/api/v1/queue/stats")
        self.assertEqual(st, 200, stats)
        self.assertEqual(stats["counts"]["queued"], 1)
        self.assertEqual(stats["queues"]["default"]["high"]["length"], 1, stats)
        self.assertEqual(stats["queues"]["default"]["high"]["pending"], 0, stats)
        w = self.worker()
        done = self.wait_done(job["id"])
        self.assertEqual(done["worker_id"], w.id)
        # Acknowledged and deleted.
        harness.wait_until(lambda: xlen(self.redis, stream("default", "high")) == 0,
                           timeout=WAIT, what="the stream to be empty")
        pending = rjson(self.redis, "XPENDING", stream("default", "high"), "jobplane")
        self.assertEqual(pending[0], 0, pending)

    def test_strict_priority_order(self):
        srv = self.server()
        ids = {}
        for p in ["low", "normal", "high", "emergency"]:
            ids[p] = srv.submit("sleep", payload={"ms": 50}, priority=p)["id"]
        self.worker("--concurrency", "1")
        done = {p: self.wait_done(i) for p, i in ids.items()}
        order = sorted(PRIORITIES, key=lambda p: ts(done[p]["started_at"]))
        self.assertEqual(order, PRIORITIES, {p: done[p]["started_at"] for p in PRIORITIES})
        order = sorted(PRIORITIES, key=lambda p: ts(done[p]["completed_at"]))
        self.assertEqual(order, PRIORITIES)

    def test_queues_are_served_only_by_their_workers(self):
        srv = self.server()
        ja = srv.submit("noop", queue="a")
        jb = srv.submit("noop", queue="b")
        wa = self.worker("--queues", "a")
        self.assertEqual(self.wait_done(ja["id"])["worker_id"], wa.id)
        time.sleep(2.0)
        self.assertEqual(srv.job(jb["id"])["status"], "queued")
        self.assertEqual(xlen(self.redis, stream("b", "normal")), 1)
        wb = self.worker("--queues", "b,c")
        self.assertEqual(self.wait_done(jb["id"])["worker_id"], wb.id)
        jc = srv.submit("noop", queue="c")
        self.assertEqual(self.wait_done(jc["id"])["worker_id"], wb.id)

    def test_cancel_running_job_kills_its_process_group(self):
        srv = self.server()
        w = self.worker()
        pidfile = os.path.join(self.dir, "pid")
        job = srv.submit("exec", payload={"command": [
            "/bin/sh", "-c", "echo $$ > %s; sleep 300 & sleep 300" % pidfile]})
        self.wait_running(job["id"])
        pid = int(harness.wait_until(lambda: read_file(pidfile).strip(), timeout=WAIT,
                                     what="the job to write its pid"))
        pgid = os.getpgid(pid)
        self.assertTrue(harness.group_alive(pgid))
        t0 = time.monotonic()
        st, body, _ = srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "cancelled")
        harness.wait_until(lambda: not harness.group_alive(pgid), timeout=10,
                           what="the job's process group to be gone")
        self.assertLess(time.monotonic() - t0, 10)
        # The attempt is closed as cancelled, and nothing overwrote the state.
        harness.wait_until(lambda: srv.attempts(job["id"])[0]["outcome"] == "cancelled",
                           timeout=WAIT, what="attempt 1 to be cancelled")
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="the cancelled job's message to be acknowledged")
        self.assertEqual(srv.job(job["id"])["status"], "cancelled")
        self.assertTrue(w.alive())
        nxt = srv.submit("noop")
        self.assertEqual(self.wait_done(nxt["id"])["worker_id"], w.id)

    def test_workers_endpoint_lists_live_workers(self):
        srv = self.server()
        w1 = self.worker("--queues", "default,q2", "--concurrency", "3",
                         strategies=["--strategies", "noop,sleep"])
        w2 = self.worker("--concurrency", "2")

        def listed():
            st, body, _ = srv.get("/api/v1/workers")
            self.assertEqual(st, 200, body)
            return {w["id"]: w for w in body["workers"]}
        ws = harness.wait_until(lambda: (lambda d: d if {w1.id, w2.id} <= set(d) else None)(listed()),
                                timeout=WAIT, what="both workers to be listed")
        a = ws[w1.id]
        self.assertEqual(sorted(a["queues"]), ["default", "q2"])
        self.assertEqual(sorted(a["strategies"]), ["noop", "sleep"])
        self.assertEqual(a["concurrency"], 3)
        self.assertEqual(a["in_flight"], 0)
        harness.parse_ts(a["last_heartbeat"])
        self.assertLess(abs(harness.now_ms() - ts(a["last_heartbeat"])), 15000)
        self.assertEqual(ws[w2.id]["concurrency"], 2)
        self.assertIn("exec", ws[w2.id]["strategies"])
        self.assertTrue(self.redis.cli("EXISTS", "jobplane:worker:" + w1.id) == "1")
        ttl = int(self.redis.cli("TTL", "jobplane:worker:" + w1.id))
        self.assertGreater(ttl, 0)  # presence expires if the worker dies

        # in_flight counts a running job.
        job = srv.submit("sleep", payload={"ms": 4000}, queue="q2")
        self.wait_running(job["id"])
        harness.wait_until(lambda: listed()[w1.id]["in_flight"] == 1, timeout=WAIT,
                           what="in_flight 1")

        out = subprocess.run([harness.CLI_BIN, "--server", srv.url, "workers"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(w1.id, out.stdout)
        self.assertIn(w2.id, out.stdout)

        self.assertEqual(w2.stop(), 0, w2.log())
        harness.wait_until(lambda: w2.id not in listed(), timeout=10,
                           what="the stopped worker to leave the list")
        self.assertEqual(self.redis.cli("EXISTS", "jobplane:worker:" + w2.id), "0")
        self.assertIn(w1.id, listed())
        out = subprocess.run([harness.CLI_BIN, "--server", srv.url, "workers"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(w1.id, out.stdout)
        self.assertNotIn(w2.id, out.stdout)
        self.wait_done(job["id"])

    def test_sigterm_lets_a_running_job_finish(self):
        srv = self.server()
        w = self.worker()
        job = srv.submit("sleep", payload={"ms": 1000})
        self.wait_running(job["id"])
        self.assertEqual(w.stop(), 0, w.log())
        done = srv.job(job["id"])
        self.assertEqual(done["status"], "completed", done)
        self.assertEqual(done["attempts"], 1)
        self.assertEqual(done["worker_id"], w.id)
        self.assertTrue(all_streams_empty(self.redis))

    def test_sigterm_past_drain_timeout_requeues_at_once(self):
        srv = self.server()
        a = self.worker("--drain-timeout", "1", "--lease-seconds", "30")
        marker = os.path.join(self.dir, "ran-once")
        # The first attempt sleeps 30 s; any later one finishes at once.
        job = srv.submit("exec", payload={"command": [
            "/bin/sh", "-c", "if [ -e %s ]; then echo again; exit 0; fi; touch %s; sleep 30"
            % (marker, marker)]})
        self.wait_running(job["id"])
        harness.wait_until(lambda: os.path.exists(marker), timeout=WAIT, what="the job to start")
        b = self.worker("--lease-seconds", "30")
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        rc = a.proc.wait(15)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, a.log())
        self.assertLess(took, 8, "worker took %.1fs to stop" % took)
        done = self.wait_done(job["id"], timeout=30)
        self.assertLess(time.monotonic() - t0, 10, "requeued job waited for the lease")
        self.assertEqual(done["attempts"], 2)
        self.assertEqual(done["worker_id"], b.id)
        self.assertEqual(done["result"]["stdout"], "again\n")
        atts = srv.attempts(job["id"])
        self.assertEqual([x["outcome"] for x in atts], ["failed", "completed"], atts)
        self.assertEqual(atts[0]["worker_id"], a.id)
        self.assertEqual(atts[0]["error"]["code"], "worker_shutdown", atts)
        self.assertEqual(atts[1]["worker_id"], b.id)
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="streams to be empty")

    def test_concurrency_runs_jobs_at_once(self):
        srv = self.server()
        jobs = self.batch([{"strategy": "sleep", "payload": {"ms": 500}} for _ in range(8)])
        self.worker("--concurrency", "8")
        done = [self.wait_done(j["id"]) for j in jobs]
        starts = [ts(d["started_at"]) for d in done]
        ends = [ts(d["completed_at"]) for d in done]
        self.assertLess(max(starts) - min(starts), 300, starts)
        # All eight were running at the same moment.
        self.assertLess(max(starts), min(ends))
        for s, e in zip(starts, ends):
            self.assertGreaterEqual(e - s, 450)
            self.assertLess(e - s, 1500)

    def test_cancelled_queued_job_never_runs(self):
        srv = self.server()
        marker = os.path.join(self.dir, "ran")
        job = srv.submit("exec", payload={"command": ["/bin/touch", marker]})
        st, body, _ = srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        w = self.worker()
        after = srv.submit("noop")
        self.wait_done(after["id"])
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="the cancelled job's message to be dropped")
        self.assertFalse(os.path.exists(marker))
        got = srv.job(job["id"])
        self.assertEqual(got["status"], "cancelled")
        self.assertEqual(got["attempts"], 0)
        self.assertEqual(srv.attempts(job["id"]), [])
        self.assertTrue(w.alive())

    def test_failed_job_retried_runs_again(self):
        srv = self.server()
        w = self.worker()
        marker = os.path.join(self.dir, "second")
        job = srv.submit("exec", max_attempts=1, payload={"command": [
            "/bin/sh", "-c", "if [ -e %s ]; then echo fixed; exit 0; fi; exit 7" % marker]})
        failed = self.wait_done(job["id"], "failed")
        self.assertEqual(failed["error"]["code"], "exit_status")
        open(marker, "w").close()
        st, body, _ = srv.post("/api/v1/jobs/%s/retry" % job["id"])
        self.assertEqual(st, 200, body)
        # On its stream, so queued, or already further on (the worker was quick).
        self.assertIn(body["status"], ("queued", "running", "completed"), body)
        done = self.wait_done(job["id"])
        self.assertEqual(done["attempts"], 2)
        self.assertEqual(done["result"]["stdout"], "fixed\n")
        self.assertEqual([a["outcome"] for a in srv.attempts(job["id"])], ["failed", "completed"])
        self.assertEqual(done["worker_id"], w.id)

    def test_delayed_job_runs_when_due(self):
        srv = self.server()
        self.worker()
        t0 = harness.now_ms()
        job = srv.submit("noop", delay_seconds=2)
        self.assertEqual(job["status"], "scheduled")
        self.assertTrue(all_streams_empty(self.redis))
        done = self.wait_done(job["id"])
        self.assertGreaterEqual(ts(done["started_at"]), t0 + 1900)

    def test_timeout_is_enforced_by_the_worker(self):
        srv = self.server()
        w = self.worker()
        job = srv.submit("sleep", payload={"ms": 30000}, timeout_seconds=1, max_attempts=1)
        done = self.wait_done(job["id"], "failed")
        self.assertEqual(done["error"]["code"], "timeout", done)
        self.assertLess(ts(done["completed_at"]) - ts(done["started_at"]), 5000)
        self.assertEqual(done["worker_id"], w.id)
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="streams to be empty")

    def test_idempotent_create_enqueues_once(self):
        srv = self.server()
        a = srv.submit("noop", payload={"n": 1}, idempotency_key="once-1")
        b = srv.submit("noop", payload={"n": 1}, idempotency_key="once-1", expect=200)
        self.assertEqual(a["id"], b["id"])
        self.assertEqual(xlen(self.redis, stream()), 1)
        self.worker()
        self.wait_done(a["id"])
        self.assertEqual(len(srv.attempts(a["id"])), 1)

    def test_stats_length_counts_entries_in_the_stream(self):
        srv = self.server()
        w = self.worker()
        first = srv.submit("noop")
        self.wait_done(first["id"])  # the group has delivered something
        self.assertEqual(w.stop(), 0, w.log())
        job = srv.submit("noop")
        st, stats, _ = srv.get("/api/v1/queue/stats")
        self.assertEqual(stats["queues"]["default"]["normal"]["length"], 1, stats)
        (eid, _), = xrange_entries(self.redis, stream())
        self.assertEqual(self.redis.cli("XDEL", stream(), eid), "1")
        st, stats, _ = srv.get("/api/v1/queue/stats")
        self.assertEqual(st, 200, stats)
        length = stats["queues"].get("default", {}).get("normal", {}).get("length", 0)
        self.assertEqual(length, 0, "the stream is empty, yet stats say %r" % stats)
        self.assertEqual(srv.job(job["id"])["status"], "queued")

    def test_competing_workers_run_each_job_once(self):
        srv = self.server()
        ws = [self.worker("--concurrency", "4") for _ in range(3)]
        marker = os.path.join(self.dir, "runs")
        jobs = self.batch([{"strategy": "exec", "payload": {"command": [
            "/bin/sh", "-c", "echo %d >> %s" % (i, marker)]}} for i in range(60)])
        jobs += self.batch([{"strategy": "noop", "payload": {"i": i}} for i in range(60)])
        done = [self.wait_done(j["id"], timeout=60) for j in jobs]
        self.assertTrue(all(d["attempts"] == 1 for d in done), [d for d in done if d["attempts"] != 1])
        self.assertEqual(sorted(int(x) for x in read_file(marker).split()), list(range(60)))
        self.assertTrue({d["worker_id"] for d in done} <= {w.id for w in ws})
        for j in jobs[::10]:
            self.assertEqual(len(srv.attempts(j["id"])), 1)
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="streams to be empty")

    def test_create_answers_the_state_after_enqueue(self):
        # With Redis up, a created job is on its stream when the answer
        # comes: never "pending", even when a worker has already taken it.
        srv = self.server()
        self.worker("--concurrency", "4")
        seen = {}
        for i in range(40):
            job = srv.submit("noop", payload={"i": i})
            seen[job["status"]] = seen.get(job["status"], 0) + 1
            st, body, _ = srv.post("/api/v1/jobs/batch", {"jobs": [{"strategy": "noop"}] * 3})
            self.assertEqual(st, 201, body)
            for j in body["jobs"]:
                seen[j["status"]] = seen.get(j["status"], 0) + 1
        self.assertNotIn("pending", seen, seen)

    def test_watch_against_distributed_server(self):
        srv = self.server()
        w = self.worker()
        job = srv.submit("noop")
        self.wait_done(job["id"])
        out = subprocess.run([harness.CLI_BIN, "--server", srv.url, "watch", "--count", "2",
                              "--interval", "0.2"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("completed", out.stdout)
        self.assertRegex(out.stdout, r"workers\s+1\b")
        out = subprocess.run([harness.CLI_BIN, "--server", srv.url, "--json", "watch", "--count",
                              "2", "--interval", "0.2"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
        self.assertEqual(len(lines), 2, out.stdout)


class SqliteTest(CoreTests, unittest.TestCase):
    """The server on SQLite; tests of the worker itself live here only."""

    def test_weighted_mode_does_not_starve_low(self):
        srv = self.server()
        low = self.batch([{"strategy": "noop", "priority": "low"} for _ in range(200)])
        emer = self.batch([{"strategy": "noop", "priority": "emergency"} for _ in range(200)])
        self.worker("--concurrency", "1", "--weighted")
        done_low = [self.wait_done(j["id"], timeout=120) for j in low]
        done_emer = [self.wait_done(j["id"], timeout=120) for j in emer]
        last_emer = max(ts(d["completed_at"]) for d in done_emer)
        first_low = min(ts(d["completed_at"]) for d in done_low)
        early_low = sum(1 for d in done_low if ts(d["completed_at"]) < last_emer)
        self.assertLess(first_low, last_emer)
        # 8:4:2:1 gives low about one turn in nine; ask for a loose share.
        self.assertGreaterEqual(early_low, 5, "only %d low jobs ran before emergency drained"
                                % early_low)
        self.assertLess(early_low, 150)

    def test_strict_mode_drains_emergency_before_low(self):
        srv = self.server()
        low = self.batch([{"strategy": "noop", "priority": "low"} for _ in range(30)])
        emer = self.batch([{"strategy": "noop", "priority": "emergency"} for _ in range(30)])
        self.worker("--concurrency", "1")
        done_low = [self.wait_done(j["id"]) for j in low]
        done_emer = [self.wait_done(j["id"]) for j in emer]
        self.assertLess(max(ts(d["started_at"]) for d in done_emer),
                        min(ts(d["started_at"]) for d in done_low) + 1)

    def test_worker_without_the_strategy_records_unknown_strategy(self):
        srv = self.server()
        a = self.worker(strategies=["--strategies", "noop,sleep"])
        job = srv.submit("exec", payload={"command": ["/bin/echo", "ok"]}, max_attempts=5)

        def refused():
            atts = srv.attempts(job["id"])
            return atts if atts and atts[0]["outcome"] == "failed" else None
        atts = harness.wait_until(refused, timeout=WAIT, what="a failed first attempt")
        self.assertEqual(atts[0]["error"]["code"], "unknown_strategy", atts)
        self.assertEqual(atts[0]["worker_id"], a.id)
        self.assertEqual(a.stop(), 0, a.log())
        self.assertNotEqual(srv.job(job["id"])["status"], "failed")
        b = self.worker()
        done = self.wait_done(job["id"])
        self.assertEqual(done["worker_id"], b.id)
        self.assertEqual(done["result"]["stdout"], "ok\n")
        self.assertGreaterEqual(done["attempts"], 2)
        outcomes = [x["outcome"] for x in srv.attempts(job["id"])]
        self.assertEqual(outcomes[-1], "completed")

    def test_garbage_messages_are_acknowledged_and_recorded(self):
        srv = self.server()
        victim = srv.submit("noop", payload={"v": 1})
        key = stream("default", "normal")
        # Take the victim's own message away, so the garbage one is its only delivery.
        (eid, _), = xrange_entries(self.redis, key)
        self.assertEqual(self.redis.cli("XDEL", key, eid), "1")
        self.redis.cli("XADD", key, "*", "job_id", "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f",
                       "attempt", "1")
        self.redis.cli("XADD", key, "*", "job_id", "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5e",
                       "attempt", "1", "job_data", "not json")
        self.redis.cli("XADD", key, "*", "hello", "world")
        self.redis.cli("XADD", key, "*", "job_id", victim["id"], "attempt", "1",
                       "job_data", '{"id": "%s", "strategy": 7}' % victim["id"])
        self.redis.cli("XADD", stream("default", "high"), "*", "job_id", "zzz", "attempt", "x",
                       "job_data", "[]")
        w = self.worker()
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="the garbage to be acknowledged")
        self.assertEqual(rjson(self.redis, "XPENDING", key, "jobplane")[0], 0)

        def failed_attempt():
            atts = srv.attempts(victim["id"])
            return atts if atts and atts[0]["outcome"] == "failed" else None
        atts = harness.wait_until(failed_attempt, timeout=WAIT, what="the victim's failed attempt")
        self.assertEqual(atts[0]["error"]["code"], "bad_message", atts)
        self.assertTrue(w.alive())
        nxt = srv.submit("noop")
        self.assertEqual(self.wait_done(nxt["id"])["worker_id"], w.id)
        self.assertTrue(w.alive())

    def test_large_payload_travels_through_redis(self):
        srv = self.server()
        self.worker()
        big = "\u00e9\u4e2d\U0001f600" + "x" * (600 * 1024)
        job = srv.submit("exec", payload={"command": ["/usr/bin/wc", "-c"], "stdin": big})
        harness.wait_until(lambda: srv.job(job["id"])["status"] in ("completed", "failed"),
                           timeout=WAIT, what="the big job to finish")
        done = srv.job(job["id"])
        self.assertEqual(done["status"], "completed", (done["error"], done["result"]))
        self.assertEqual(done["result"]["stdout"].strip(), str(len(big.encode())))
        self.assertEqual(done["payload"]["stdin"], big)

    def test_stalled_worker_is_fenced(self):
        # A worker frozen past its lease loses the job to another; when it
        # wakes up, its report for the old attempt changes nothing.
        srv = self.server()
        a = self.worker()
        job = srv.submit("sleep", payload={"ms": 3000})
        self.wait_done(job["id"], "running")
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            b = self.worker()

            def taken_over():
                got = srv.job(job["id"])
                return got if got["attempts"] == 2 else None
            got = harness.wait_until(taken_over, timeout=WAIT, what="the takeover")
            self.assertEqual(got["worker_id"], b.id)
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        done = self.wait_done(job["id"])
        self.assertEqual(done["attempts"], 2)
        self.assertEqual(done["worker_id"], b.id)
        atts = srv.attempts(job["id"])
        self.assertEqual([(x["attempt"], x["outcome"], x["worker_id"]) for x in atts],
                         [(1, "lost", a.id), (2, "completed", b.id)], atts)
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="streams to be empty")
        time.sleep(1.0)
        self.assertEqual(srv.job(job["id"]), done)
        self.assertTrue(a.alive() and b.alive())
        nxt = srv.submit("noop")
        self.wait_done(nxt["id"])

    def test_evicting_redis_is_refused(self):
        lru = services.Redis(extra=["--maxmemory-policy", "allkeys-lru"]).start()
        self.addCleanup(lru.close)
        port = harness.free_port()
        cmd = [harness.SERVER_BIN, "--listen", "127.0.0.1:%d" % port, "--database",
               "sqlite://" + os.path.join(self.dir, "lru.db"), "--redis", lru.url]
        env = harness._clean_env({})
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("maxmemory-policy", out.stdout + out.stderr)
        wcmd = [harness.WORKER_BIN, "--redis", lru.url, "--id", "lru-w",
                "--control-plane", "http://127.0.0.1:%d" % port]
        out = subprocess.run(wcmd, capture_output=True, text=True, timeout=30, env=env)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("maxmemory-policy", out.stdout + out.stderr)

        srv = self.server("--allow-evicting-redis", redis=lru.url)
        w = harness.Worker(lru.url, srv.url, args=["--allow-evicting-redis"], tmpdir=self.dir)
        w.start()
        self.addCleanup(self._stop_worker, w)
        job = srv.submit("noop")
        self.assertEqual(self.wait_done(job["id"])["worker_id"], w.id)


class PostgresTest(CoreTests, unittest.TestCase):
    """The server on PostgreSQL, plus workers that write the database directly."""

    pg = None

    @classmethod
    def setUpClass(cls):
        cls.pg = services.Postgres().start()
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        if cls.pg is not None:
            cls.pg.close()

    def database(self):
        type(self).n += 1
        name = "t%d" % self.n
        self.pg.psql("CREATE DATABASE %s OWNER jobplane" % name, db="postgres")
        return self.pg.url.rsplit("/", 1)[0] + "/" + name

    def db_worker(self, *args, **kw):
        return self.worker("--report", "db", "--database", self.db_url, *args,
                           control_plane=False, **kw)

    def test_report_db_worker_completes_jobs(self):
        srv = self.server()
        w = self.db_worker()
        jobs = [srv.submit("noop", payload={"i": i}) for i in range(5)]
        jobs.append(srv.submit("exec", payload={"command": ["/bin/echo", "db"]}))
        for j in jobs:
            done = self.wait_done(j["id"])
            self.assertEqual(done["worker_id"], w.id)
            self.assertEqual(done["attempts"], 1)
            atts = srv.attempts(j["id"])
            self.assertEqual([(a["attempt"], a["outcome"], a["worker_id"]) for a in atts],
                             [(1, "completed", w.id)])
        self.assertEqual(srv.job(jobs[-1]["id"])["result"]["stdout"], "db\n")
        # The rows themselves, as the shared database holds them.
        count = self.pg.psql("SELECT count(*) FROM jobs WHERE status = 'completed'",
                             db=self.db_url.rsplit("/", 1)[1])
        self.assertEqual(count, "6")
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="streams to be empty")
        st, body, _ = srv.get("/api/v1/workers")
        self.assertIn(w.id, [x["id"] for x in body["workers"]])

    def test_report_db_failure_is_retried_by_the_server(self):
        srv = self.server()
        w = self.db_worker("--retry-backoff-ms", "200")
        marker = os.path.join(self.dir, "failed-once")
        job = srv.submit("exec", max_attempts=3, payload={"command": [
            "/bin/sh", "-c", "if [ -e %s ]; then exit 0; fi; touch %s; exit 3" % (marker, marker)]})
        done = self.wait_done(job["id"])
        self.assertEqual(done["attempts"], 2)
        atts = srv.attempts(job["id"])
        self.assertEqual([a["outcome"] for a in atts], ["failed", "completed"], atts)
        self.assertEqual(atts[0]["error"]["code"], "exit_status")
        self.assertTrue(all(a["worker_id"] == w.id for a in atts))
        # Not retried before the worker's backoff.
        self.assertGreaterEqual(ts(atts[1]["started_at"]) - ts(atts[0]["finished_at"]), 90)

    def test_report_db_cancel_of_running_job(self):
        srv = self.server()
        w = self.db_worker()
        job = srv.submit("sleep", payload={"ms": 60000})
        self.wait_running(job["id"])
        st, body, _ = srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        harness.wait_until(lambda: srv.attempts(job["id"])[0]["outcome"] == "cancelled",
                           timeout=WAIT, what="attempt 1 to be cancelled")
        harness.wait_until(lambda: all_streams_empty(self.redis), timeout=WAIT,
                           what="the message to be acknowledged")
        self.assertEqual(srv.job(job["id"])["status"], "cancelled")
        nxt = srv.submit("noop")
        self.assertEqual(self.wait_done(nxt["id"])["worker_id"], w.id)


if __name__ == "__main__":
    harness.main()
