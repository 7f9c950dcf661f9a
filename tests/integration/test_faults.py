"""Fault injection in distributed mode, one test per DESIGN §2 guarantee:
workers killed mid-job, stale and duplicate reports and messages, Redis
flushed, restarted or down, PostgreSQL restarted, the control plane killed
between commit and enqueue or down while a worker reports, a poison job."""

import http.client
import json
import os
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import services  # noqa: E402
from services import PRIORITIES, read_file, rjson, stream, xrange_entries  # noqa: E402

ts = harness.parse_ts
STRATS = ["--strategies", "noop,sleep,exec"]
WAIT = 30  # seconds: a generous bound for anything that should be quick





def waiting(redis, queue="default"):
    """Entries in all of a queue's streams."""
    return sum(int(redis.cli("XLEN", stream(queue, p)) or 0) for p in PRIORITIES)



class Cluster(unittest.TestCase):
    """Per-test Redis, database, servers and workers, torn down afterwards
    (workers first, so none keeps reporting to a stopped server)."""

    redis_appendonly = False

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="jp-faults-")
        self.addCleanup(self._tmp.cleanup)
        self.dir = self._tmp.name
        self.redis = services.Redis(appendonly=self.redis_appendonly).start()
        self.addCleanup(self.redis.close)
        self.db_url = None
        self.srv = None
        self.workers = []

    def server(self, *args, env=None, port=None):
        """A server on this test's database; port: reuse that port (a restart)."""
        srv = harness.Server(STRATS + ["--reconcile-interval", "1", "--lease-seconds", "2",
                                       "--retry-backoff-ms", "100"] + list(args),
                             env=env, tmpdir=self.dir, database=self.db_url, redis=self.redis.url)
        if port is not None:
            srv.port = port
            srv.url = "http://127.0.0.1:%d" % port
        srv.start()
        self.addCleanup(self._stop_server, srv)
        self.srv = srv
        return srv

    def _stop_server(self, srv):
        if srv.alive():
            rc = srv.stop()
            self.assertEqual(rc, 0, srv.log()[-3000:])

    def worker(self, *args, lease=2, wid=None):
        w = harness.Worker(self.redis.url, self.srv.url,
                           args=STRATS + ["--lease-seconds", str(lease)] + list(args),
                           tmpdir=self.dir, wid=wid)
        w.start()
        self.addCleanup(self._stop_worker, w)
        self.workers.append(w)
        return w

    def _stop_worker(self, w):
        if w.alive():
            rc = w.stop()
            self.assertEqual(rc, 0, w.log()[-3000:])
        else:
            w.stop()  # still fails on a sanitizer report

    def wait_done(self, job_id, status="completed", timeout=WAIT):
        try:
            return self.srv.wait_status(job_id, status, timeout=timeout)
        except AssertionError as e:
            logs = "".join("\nworker %s log:\n%s" % (w.id, w.log()[-3000:]) for w in self.workers)
            raise AssertionError(str(e) + logs) from None

    def wait_empty(self, queue="default", timeout=WAIT):
        harness.wait_until(lambda: waiting(self.redis, queue) == 0, timeout=timeout,
                           what="the streams of %s to be empty" % queue)

    def assert_ran_once(self, job_id, worker_id=None):
        job = self.srv.job(job_id)
        self.assertEqual(job["status"], "completed", job)
        self.assertEqual(job["attempts"], 1, job)
        atts = self.srv.attempts(job_id)
        self.assertEqual([(a["attempt"], a["outcome"]) for a in atts], [(1, "completed")], atts)
        if worker_id:
            self.assertEqual(job["worker_id"], worker_id)
        return job


class Guarantee2Test(Cluster):
    def test_guarantee2_worker_killed_mid_job_runs_again(self):
        srv = self.server()
        a = self.worker()
        job = srv.submit("sleep", payload={"ms": 3000})
        running = self.wait_done(job["id"], "running")
        self.assertEqual(running["worker_id"], a.id)
        a.kill9()
        t0 = time.monotonic()
        b = self.worker()
        done = self.wait_done(job["id"], timeout=60)
        self.assertGreater(time.monotonic() - t0, 1.0, "taken over before the lease lapsed")
        self.assertEqual(done["attempts"], 2)
        self.assertEqual(done["worker_id"], b.id)
        atts = srv.attempts(job["id"])
        self.assertEqual([(x["attempt"], x["outcome"], x["worker_id"]) for x in atts],
                         [(1, "lost", a.id), (2, "completed", b.id)], atts)
        self.assertIsNotNone(atts[0]["finished_at"])
        self.wait_empty()

    def test_guarantee2_killed_worker_leaves_no_job_processes(self):
        # The job runs again elsewhere once the lease lapses; the first run's
        # processes must not go on beside it.
        srv = self.server()
        a = self.worker()
        pidfile = os.path.join(self.dir, "pid")
        job = srv.submit("exec", payload={"command": [
            "/bin/sh", "-c", "echo $$ >> %s; sleep 120" % pidfile]})
        self.wait_done(job["id"], "running")
        pid = int(harness.wait_until(lambda: read_file(pidfile).split(), timeout=WAIT,
                                     what="the job to start")[0])
        pgid = os.getpgid(pid)
        self.addCleanup(lambda: harness.group_alive(pgid) and os.killpg(pgid, signal.SIGKILL))
        a.kill9()
        # Presence expires with the worker.
        harness.wait_until(lambda: a.id not in [x["id"] for x in srv.get("/api/v1/workers")[1]
                                                ["workers"]],
                           timeout=WAIT, what="the killed worker to leave /api/v1/workers")
        harness.wait_until(lambda: not harness.group_alive(pgid), timeout=10,
                           what="the killed worker's job processes (group %d) to end" % pgid)

    def test_guarantee2_long_job_keeps_its_lease(self):
        # A job running for several leases is not taken over while its
        # worker lives: heartbeats keep the lease.
        srv = self.server()
        a = self.worker("--lease-seconds", "1")
        job = srv.submit("sleep", payload={"ms": 4000})
        self.wait_done(job["id"], "running")
        self.worker("--lease-seconds", "1")
        done = self.wait_done(job["id"])
        self.assertEqual(done["attempts"], 1)
        self.assertEqual(done["worker_id"], a.id)
        self.assertEqual(len(srv.attempts(job["id"])), 1)


class Guarantee3Test(Cluster):
    def test_guarantee3_stale_and_terminal_reports_are_refused(self):
        srv = self.server()  # no worker: this test is the worker
        job = srv.submit("noop", max_attempts=3)
        st, body = srv.report(job["id"], "running", 1, worker_id="wa")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "running")
        st, body = srv.report(job["id"], "failed", 1, worker_id="wa",
                              error={"code": "boom", "message": "x"}, retryable=True)
        self.assertEqual(st, 200, body)
        # The retry is queued as attempt 2 (after a 100 ms backoff).
        harness.wait_until(lambda: srv.job(job["id"])["status"] == "queued", timeout=WAIT,
                           what="the retry to be queued")
        st, body = srv.report(job["id"], "running", 2, worker_id="wb")
        self.assertEqual(st, 200, body)

        before = srv.get("/api/v1/jobs/" + job["id"])[1]
        before_atts = srv.attempts(job["id"])
        # (A "running" report for a later attempt is a takeover after a lapsed
        # lease, so it is no stale report.)
        for status, attempt in [("completed", 1), ("failed", 1), ("running", 1),
                                ("completed", 3), ("failed", 3)]:
            st, body = srv.report(job["id"], status, attempt, worker_id="wa")
            harness.assert_error(st, body, 409, "conflict", "%s for attempt %d" % (status, attempt))
            self.assertEqual(srv.get("/api/v1/jobs/" + job["id"])[1], before)
        st, body, _ = srv.post("/api/v1/jobs/status", {"reports": [
            {"id": job["id"], "status": "completed", "attempt": 1, "worker_id": "wa"}]})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["results"][0]["code"], "conflict", body)
        self.assertEqual(srv.get("/api/v1/jobs/" + job["id"])[1], before)
        self.assertEqual(srv.attempts(job["id"]), before_atts)

        st, body = srv.report(job["id"], "completed", 2, worker_id="wb", result={"n": 1})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "completed")
        done = srv.get("/api/v1/jobs/" + job["id"])[1]
        done_atts = srv.attempts(job["id"])
        # Terminal: a duplicate completion, a late failure, a stale report,
        # each refused and changing nothing.
        for status, attempt, extra in [("completed", 2, {"result": {"n": 2}}),
                                       ("failed", 2, {"error": {"code": "late", "message": "x"}}),
                                       ("running", 2, {}), ("completed", 1, {}), ("running", 3, {})]:
            st, body = srv.report(job["id"], status, attempt, worker_id="wc", **extra)
            harness.assert_error(st, body, 409, "conflict", "%s for attempt %d" % (status, attempt))
        st, body, _ = srv.post("/api/v1/jobs/status", {"reports": [
            {"id": job["id"], "status": "completed", "attempt": 2, "worker_id": "wb"},
            {"id": job["id"], "status": "failed", "attempt": 2, "worker_id": "wb",
             "error": {"code": "late", "message": "x"}}]})
        self.assertEqual(st, 200, body)
        self.assertEqual([r["code"] for r in body["results"]], ["conflict", "conflict"], body)
        self.assertEqual(srv.get("/api/v1/jobs/" + job["id"])[1], done)
        self.assertEqual(srv.attempts(job["id"]), done_atts)
        self.assertEqual(done["result"], {"n": 1})

    def test_guarantee3_cancelled_job_refuses_reports(self):
        srv = self.server()
        job = srv.submit("noop")
        st, body = srv.report(job["id"], "running", 1, worker_id="wa")
        self.assertEqual(st, 200, body)
        st, body, _ = srv.post("/api/v1/jobs/%s/cancel" % job["id"])
        self.assertEqual(st, 200, body)
        before = srv.get("/api/v1/jobs/" + job["id"])[1]
        st, body = srv.report(job["id"], "completed", 1, worker_id="wa", result={})
        harness.assert_error(st, body, 409, "conflict")
        self.assertEqual(srv.get("/api/v1/jobs/" + job["id"])[1], before)
        self.assertEqual(before["status"], "cancelled")

    def test_guarantee3_duplicate_message_of_a_done_job_is_dropped(self):
        srv = self.server()
        job = srv.submit("noop", payload={"d": 1})
        (_, fields), = xrange_entries(self.redis, stream())
        w = self.worker()
        self.wait_done(job["id"])
        self.wait_empty()
        before = srv.get("/api/v1/jobs/" + job["id"])[1]
        self.redis.cli("XADD", stream(), "*", "job_id", fields["job_id"], "attempt",
                       fields["attempt"], "job_data", fields["job_data"])
        self.wait_empty()
        harness.wait_until(lambda: rjson(self.redis, "XPENDING", stream(), "jobplane")[0] == 0,
                           timeout=WAIT, what="nothing pending")
        time.sleep(0.5)
        self.assertEqual(srv.get("/api/v1/jobs/" + job["id"])[1], before)
        self.assert_ran_once(job["id"], w.id)
        self.assertTrue(w.alive())

    def test_guarantee3_duplicate_message_of_a_running_job_is_dropped(self):
        srv = self.server()
        out = os.path.join(self.dir, "runs")
        job = srv.submit("exec", payload={"command": [
            "/bin/sh", "-c", "echo run >> %s; sleep 2" % out]})
        (_, fields), = xrange_entries(self.redis, stream())
        w = self.worker()
        self.wait_done(job["id"], "running")
        harness.wait_until(lambda: read_file(out), timeout=WAIT, what="the job to start")
        self.redis.cli("XADD", stream(), "*", "job_id", fields["job_id"], "attempt",
                       fields["attempt"], "job_data", fields["job_data"])
        # A second worker, too: whichever reads the copy must drop it.
        w2 = self.worker()
        self.redis.cli("XADD", stream(), "*", "job_id", fields["job_id"], "attempt",
                       fields["attempt"], "job_data", fields["job_data"])
        self.wait_done(job["id"])
        self.wait_empty()
        time.sleep(1.0)
        self.assert_ran_once(job["id"], w.id)
        self.assertEqual(read_file(out), "run\n")
        self.assertTrue(w.alive() and w2.alive())


class Guarantee1RedisTest(Cluster):
    N = 20

    def submit_waiting(self):
        jobs = [self.srv.submit("noop", payload={"i": i}, priority=PRIORITIES[i % 4])
                for i in range(self.N)]
        harness.wait_until(lambda: waiting(self.redis) == self.N, timeout=WAIT,
                           what="%d entries on the streams" % self.N)
        return jobs

    def finish(self, jobs):
        w = self.worker()
        for j in jobs:
            self.wait_done(j["id"], timeout=60)
        for j in jobs:
            self.assert_ran_once(j["id"], w.id)
        self.wait_empty()
        return w

    def test_guarantee1_redis_flushed_jobs_are_put_back(self):
        srv = self.server()
        jobs = self.submit_waiting()
        self.redis.cli("FLUSHALL")
        self.assertEqual(waiting(self.redis), 0)
        # The reconciler notices the missing epoch and enqueues them again, once.
        harness.wait_until(lambda: waiting(self.redis) == self.N, timeout=WAIT,
                           what="the jobs to be back on the streams")
        time.sleep(2.5)
        self.assertEqual(waiting(self.redis), self.N)
        for j in jobs:
            self.assertEqual(srv.job(j["id"])["status"], "queued")
        self.finish(jobs)

    def test_guarantee1_redis_flushed_while_worker_waits(self):
        srv = self.server()
        w = self.worker()
        first = srv.submit("noop")
        self.wait_done(first["id"])
        self.redis.cli("FLUSHALL")  # the consumer group goes too
        jobs = [srv.submit("noop", payload={"i": i}) for i in range(5)]
        for j in jobs:
            self.wait_done(j["id"])
            self.assert_ran_once(j["id"], w.id)

    def test_guarantee1_redis_restarted_empty_jobs_are_put_back(self):
        srv = self.server()
        jobs = self.submit_waiting()
        self.redis.restart()
        self.assertEqual(waiting(self.redis), 0)
        harness.wait_until(lambda: waiting(self.redis) == self.N, timeout=WAIT,
                           what="the jobs to be back on the streams")
        w = self.finish(jobs)
        # A worker connected across a restart reconnects and serves on.
        self.redis.restart()
        more = [srv.submit("noop", payload={"again": i}) for i in range(5)]
        for j in more:
            self.wait_done(j["id"], timeout=60)
            self.assert_ran_once(j["id"], w.id)
        self.assertTrue(w.alive())
        st, body, _ = srv.get("/ready")
        self.assertEqual(st, 200, body)


class Guarantee1LostMessageTest(Cluster):
    def test_guarantee1_deleted_stream_entry_is_sent_again(self):
        # The reconciler sends a queued job again when its entry is gone,
        # also on a stream whose group has delivered entries before.
        srv = self.server()
        w = self.worker()
        first = srv.submit("noop")
        self.wait_done(first["id"])
        self.assertEqual(w.stop(), 0, w.log())
        job = srv.submit("noop", payload={"lost": True})
        (eid, fields), = xrange_entries(self.redis, stream())
        self.assertEqual(fields["job_id"], job["id"])
        self.assertEqual(self.redis.cli("XDEL", stream(), eid), "1")
        w2 = self.worker()
        # Queued jobs are checked once they have waited 30 s.
        self.wait_done(job["id"], timeout=60)
        self.assert_ran_once(job["id"], w2.id)
        self.wait_empty()

    def test_guarantee1_running_job_lost_with_redis_runs_again(self):
        # The worker dies and Redis loses the message with it: only the
        # database knows the job, and the reconciler runs it again after its
        # timeout plus two leases (plus a margin of 10 s).
        srv = self.server()
        a = self.worker()
        job = srv.submit("sleep", payload={"ms": 1500}, timeout_seconds=2)
        self.wait_done(job["id"], "running")
        a.kill9()
        self.redis.cli("FLUSHALL")
        b = self.worker()
        done = self.wait_done(job["id"], timeout=60)
        self.assertEqual(done["attempts"], 2)
        self.assertEqual(done["worker_id"], b.id)
        atts = srv.attempts(job["id"])
        self.assertEqual([(x["attempt"], x["outcome"]) for x in atts],
                         [(1, "lost"), (2, "completed")], atts)
        self.assertGreaterEqual(ts(atts[1]["started_at"]) - ts(atts[0]["started_at"]), 2000 + 4000)
        self.wait_empty()


class Guarantee1AofTest(Cluster):
    redis_appendonly = True

    def test_guarantee1_redis_with_aof_restarted_keeps_jobs(self):
        srv = self.server()
        jobs = [srv.submit("noop", payload={"i": i}) for i in range(20)]
        harness.wait_until(lambda: waiting(self.redis) == 20, timeout=WAIT, what="20 entries")
        time.sleep(1.5)  # appendfsync everysec
        self.redis.restart()
        self.assertEqual(waiting(self.redis), 20)
        time.sleep(2.5)  # reconciler rounds: nothing to put back, nothing doubled
        self.assertEqual(waiting(self.redis), 20)
        w = self.worker()
        for j in jobs:
            self.wait_done(j["id"])
        for j in jobs:
            self.assert_ran_once(j["id"], w.id)
        self.wait_empty()


class ControlPlaneTest(Cluster):
    def test_guarantee1_control_plane_killed_between_commit_and_enqueue(self):
        srv = self.server(env={"JOBPLANE_FAULT": "crash-before-enqueue"})
        broke = False
        try:
            st, body, _ = srv.post("/api/v1/jobs", {"strategy": "noop", "payload": {"f": 1}},
                                   timeout=10)
            broke = st >= 500
        except (OSError, http.client.HTTPException):
            broke = True
        self.assertTrue(broke, "the create got an answer from a crashing server")
        srv.proc.wait(10)
        self.assertEqual(srv.stop(), 137)
        self.assertEqual(waiting(self.redis), 0)

        srv = self.server()
        st, body, _ = srv.get("/api/v1/jobs")
        self.assertEqual(st, 200, body)
        self.assertEqual(len(body["jobs"]), 1, body)
        job = body["jobs"][0]
        self.assertEqual(job["payload"], {"f": 1})
        self.assertIn(job["status"], ("pending", "queued"))
        harness.wait_until(lambda: waiting(self.redis) == 1, timeout=WAIT,
                           what="the reconciler to enqueue the pending job")
        self.assertEqual(srv.job(job["id"])["status"], "queued")
        w = self.worker()
        self.wait_done(job["id"])
        self.assert_ran_once(job["id"], w.id)
        self.wait_empty()

    def test_guarantee4_control_plane_down_while_worker_reports(self):
        srv = self.server()
        w = self.worker()
        job = srv.submit("sleep", payload={"ms": 1000})
        self.wait_done(job["id"], "running")
        port = srv.port
        self.assertEqual(srv.stop(), 0, srv.log())
        time.sleep(2.5)  # the job ends while nobody takes its report
        self.assertTrue(w.alive())
        self.assertEqual(waiting(self.redis), 1)  # not acknowledged before the report
        srv = self.server(port=port)
        self.wait_done(job["id"])
        self.assert_ran_once(job["id"], w.id)
        self.wait_empty()
        nxt = srv.submit("noop")
        self.wait_done(nxt["id"])


class Guarantee4Test(Cluster):
    def test_guarantee4_worker_stopped_before_its_report_is_durable(self):
        # The worker cannot report (the control plane is down) and is told to
        # stop: it leaves the message unacknowledged, so the job runs again.
        srv = self.server()
        a = self.worker("--drain-timeout", "1")
        job = srv.submit("sleep", payload={"ms": 300})
        self.wait_done(job["id"], "running")
        port = srv.port
        self.assertEqual(srv.stop(), 0, srv.log())
        time.sleep(1.0)  # the job is over; its report cannot get through
        a.proc.send_signal(signal.SIGTERM)
        self.assertEqual(a.proc.wait(20), 0, a.log())
        self.assertEqual(rjson(self.redis, "XPENDING", stream(), "jobplane")[0], 1)
        srv = self.server(port=port)
        b = self.worker()
        done = self.wait_done(job["id"])
        self.assertEqual(done["worker_id"], b.id)
        atts = srv.attempts(job["id"])
        self.assertEqual([(x["attempt"], x["outcome"]) for x in atts],
                         [(1, "lost"), (2, "completed")], atts)
        self.wait_empty()


class Guarantee1RedisDownTest(Cluster):
    def test_guarantee1_redis_down_creates_stay_pending_then_run(self):
        srv = self.server()
        w = self.worker()
        st, body, _ = srv.get("/ready")
        self.assertEqual(st, 200, body)
        self.redis.stop()
        st, body, _ = srv.get("/ready")
        self.assertEqual(st, 503, body)
        self.assertIn("redis", json.dumps(body).lower())
        jobs = []
        for i in range(5):
            job = srv.submit("noop", payload={"i": i})
            self.assertEqual(job["status"], "pending", job)
            jobs.append(job)
        st, body, _ = srv.post("/api/v1/jobs/batch", {"jobs": [{"strategy": "noop"}] * 3})
        self.assertEqual(st, 201, body)
        self.assertEqual([j["status"] for j in body["jobs"]], ["pending"] * 3)
        jobs += body["jobs"]
        time.sleep(1.5)
        self.assertTrue(srv.alive())
        self.redis.start()  # same port, empty
        for j in jobs:
            self.wait_done(j["id"], timeout=60)
        for j in jobs:
            self.assert_ran_once(j["id"], w.id)
        harness.wait_until(lambda: srv.get("/ready")[0] == 200, timeout=WAIT,
                           what="/ready to be 200 again")
        self.wait_empty()
        self.assertTrue(w.alive())


class Guarantee1PostgresTest(Cluster):
    pg = None

    @classmethod
    def setUpClass(cls):
        cls.pg = services.Postgres().start()
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        if cls.pg is not None:
            cls.pg.close()

    def setUp(self):
        super().setUp()
        type(self).n += 1
        name = "f%d" % self.n
        self.pg.psql("CREATE DATABASE %s OWNER jobplane" % name, db="postgres")
        self.db_url = self.pg.url.rsplit("/", 1)[0] + "/" + name

    def create_retrying(self, srv, i, deadline):
        """Creates job i, retrying (with its idempotency key) while the database is away."""
        req = {"strategy": "sleep", "payload": {"ms": 300}, "idempotency_key": "pg-%d" % i}
        while True:
            try:
                st, body, _ = srv.post("/api/v1/jobs", req, timeout=15)
                if st in (200, 201):
                    return body
                self.assertIn(st, (500, 503), body)
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                self.fail("job %d was never accepted\n%s" % (i, srv.log()[-3000:]))
            time.sleep(0.1)

    def restart_while_jobs_flow(self, mode):
        srv = self.server()
        w = self.worker()
        deadline = time.monotonic() + 90
        jobs = []
        for i in range(50):
            if i in (15, 35):
                self.pg.restart(mode)
            jobs.append(self.create_retrying(srv, i, deadline))
        self.assertEqual(len({j["id"] for j in jobs}), 50)
        for j in jobs:
            done = self.wait_done(j["id"], timeout=90)
            atts = srv.attempts(j["id"])
            completed = [a for a in atts if a["outcome"] == "completed"]
            self.assertEqual(len(completed), 1, atts)
            self.assertEqual(done["attempts"], completed[0]["attempt"], atts)
        self.wait_empty(timeout=60)
        # Both still serve.
        self.assertTrue(srv.alive() and w.alive())
        more = [srv.submit("noop") for _ in range(5)]
        for j in more:
            self.wait_done(j["id"])
            self.assert_ran_once(j["id"], w.id)
        st, body, _ = srv.get("/ready")
        self.assertEqual(st, 200, body)

    def test_guarantee1_postgres_fast_restart_while_jobs_flow(self):
        self.restart_while_jobs_flow("fast")

    def test_guarantee1_postgres_immediate_restart_while_jobs_flow(self):
        self.restart_while_jobs_flow("immediate")


class Guarantee5Test(Cluster):
    def test_guarantee5_bad_reports_do_not_crash(self):
        srv = self.server()
        w = self.worker()
        job = srv.submit("noop", delay_seconds=3600)
        bad = [
            b"not json", b"[]", b"{}", b'{"reports": []}', b'{"reports": {}}',
            b'{"reports": [1, "x", null]}', b'{"reports": [{}]}',
            b'{"reports": [{"id": "nope", "status": "running", "attempt": 1}]}',
            json.dumps({"reports": [{"id": job["id"], "status": "weird", "attempt": 1}]}).encode(),
            json.dumps({"reports": [{"id": job["id"], "status": "running",
                                     "attempt": 2 ** 70}]}).encode(),
            json.dumps({"reports": [{"id": job["id"], "status": "running",
                                     "attempt": -1}]}).encode(),
            json.dumps({"reports": [{"id": job["id"], "status": "completed", "attempt": 1,
                                     "result": "x" * 100}]}).encode(),
            json.dumps({"reports": [{"id": job["id"]}] * 5000}).encode(),
            b'{"reports": [' + b'[' * 10000 + b']' * 10000 + b']}',
        ]
        for raw in bad:
            st, body, _ = srv.request("POST", "/api/v1/jobs/status", raw=raw)
            self.assertTrue(st == 200 or 400 <= st < 500, (st, body, raw[:80]))
            if st == 200:
                self.assertTrue(all(r["code"] != "ok" for r in body["results"]), body)
        for raw in [b"not json", b'{"status": "running"}', b'{"status": "running", "attempt": "1"}',
                    b'{"status": "completed", "attempt": 1, "result": ' + b'[' * 5000 + b']' * 5000 + b'}']:
            st, body, _ = srv.request("POST", "/api/v1/jobs/%s/status" % job["id"], raw=raw)
            self.assertTrue(400 <= st < 500, (st, body, raw[:80]))
        self.assertEqual(srv.job(job["id"])["status"], "scheduled")
        self.assertEqual(srv.attempts(job["id"]), [])
        nxt = srv.submit("noop")
        self.wait_done(nxt["id"])
        self.assertTrue(srv.alive() and w.alive())


class Guarantee6Test(Cluster):
    def test_guarantee6_poison_job_fails_after_max_attempts(self):
        srv = self.server("--lease-seconds", "1")
        # The command kills the worker that runs it: its parent is the exec
        # guardian, whose parent is the worker.
        job = srv.submit("exec", max_attempts=2, payload={"command": [
            "/bin/sh", "-c", "kill -9 $(cut -d' ' -f4 /proc/$PPID/stat); sleep 5"]})
        deaths = 0
        deadline = time.monotonic() + 90
        w = None
        while srv.job(job["id"])["status"] not in ("failed", "completed", "cancelled"):
            self.assertLess(time.monotonic(), deadline, "the poison job keeps cycling: %r"
                            % srv.attempts(job["id"]))
            if w is None or not w.alive():
                if w is not None:
                    deaths += 1
                    self.assertEqual(w.stop(), -signal.SIGKILL, w.log()[-2000:])
                    self.assertLessEqual(deaths, 2, srv.attempts(job["id"]))
                w = self.worker(lease=1)
            time.sleep(0.1)
        done = srv.job(job["id"])
        self.assertEqual(done["status"], "failed", done)
        self.assertEqual(done["error"]["code"], "crashed_worker", done)
        self.assertEqual(deaths, 2)
        atts = srv.attempts(job["id"])
        # Two deliveries ran (and killed their workers); the third never ran,
        # so it is no attempt.
        self.assertEqual(done["attempts"], 2, (done, atts))
        self.assertEqual([(a["attempt"], a["outcome"]) for a in atts],
                         [(1, "lost"), (2, "crashed")], atts)
        self.assertEqual(atts[1]["error"]["code"], "crashed_worker", atts)
        self.assertTrue(all(a["outcome"] != "running" for a in atts), atts)
        self.wait_empty()
        # The worker that refused the third delivery is fine and serves on.
        self.assertTrue(w.alive())
        nxt = srv.submit("noop")
        self.assertEqual(self.wait_done(nxt["id"])["worker_id"], w.id)
        time.sleep(1.0)
        self.assertEqual(srv.job(job["id"]), done)


if __name__ == "__main__":
    harness.main()
