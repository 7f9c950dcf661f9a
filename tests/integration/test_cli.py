"""Black-box tests of the jobplane command-line client against a real server:
output forms, exit statuses, waiting, pagination and error lines."""

import fcntl
import http.server
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

COMMANDS = ["submit", "get", "list", "cancel", "retry", "attempts", "stats", "workers", "watch"]
STATUSES = ["pending", "scheduled", "queued", "running", "completed", "failed", "cancelled"]


def uniq(prefix):
    """A queue or key name no other test uses."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def frames(out):
    """The frames `watch` printed to a pipe: each is followed by a blank line
    and has none inside."""
    if not out:
        return []
    assert out.endswith("\n\n"), repr(out[-200:])
    return out[:-2].split("\n\n")


def frame_counts(frame):
    """{status: count} from a watch frame's count lines."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"\b(%s)\s+(\d+)\b" % "|".join(STATUSES), frame)}


def frame_rate(frame):
    """Jobs completed per second shown in a frame, or None for "-"."""
    m = re.search(r"^completed/s (\S+)", frame, re.M)
    assert m, frame
    return None if m.group(1) == "-" else float(m.group(1))


def cli(args, server=None, env=None, timeout=60, stdin=None):
    """Runs the CLI with a clean JOBPLANE_* environment; returns CompletedProcess.
    server: a harness.Server whose URL goes in --server."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("JOBPLANE_")}
    e.update(env or {})
    cmd = [harness.CLI_BIN]
    if server is not None:
        cmd += ["--server", server.url]
    cmd += list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                       timeout=timeout, input=stdin)
    p.out = p.stdout.decode("utf-8", "replace")
    p.err = p.stderr.decode("utf-8", "replace")
    return p


class CliCase(harness.ServerCase):
    """Assertions shared by the CLI tests."""

    def assertExit(self, p, code):
        if p.returncode != code:
            raise AssertionError("exit %s, wanted %s\nargs: %r\nstdout: %s\nstderr: %s"
                                 % (p.returncode, code, p.args, p.out, p.err))

    def assertOk(self, p):
        self.assertExit(p, 0)
        self.assertEqual(p.err, "", "stderr of a successful command")

    def assertOneErrorLine(self, p, code, *needles):
        """Exit `code` with exactly one line on stderr, starting "jobplane: "."""
        self.assertExit(p, code)
        lines = p.err.splitlines()
        self.assertEqual(len(lines), 1, "want one line on stderr, got %r" % p.err)
        self.assertTrue(p.err.endswith("\n"), p.err)
        self.assertTrue(lines[0].startswith("jobplane: "), lines[0])
        for n in needles:
            self.assertIn(n, lines[0])
        return lines[0]

    def check_workers(self, srv):
        """`workers` against a real server: tolerant of what it lists, or of
        a server without the list."""
        st, body, _ = srv.get("/api/v1/workers")
        p = cli(["workers"], server=srv)
        if st != 200:
            # A server without the list: its error, like any other refusal.
            self.assertOneErrorLine(p, 1, "(%s)" % body["error"]["code"])
            return
        self.assertExit(p, 0)
        listed = body["workers"]
        if not listed:
            self.assertIn("no live workers", p.err)
            self.assertEqual(p.out, "")
        else:
            self.assertEqual(p.err, "")
            head, rows = self.table(p.out)
            self.assertEqual(head, ["ID", "HOST", "QUEUES", "STRATEGIES", "IN-FLIGHT",
                                    "LAST-HEARTBEAT"])
            self.assertEqual(sorted(r[0] for r in rows), sorted(w.get("id", "-") for w in listed))
        j = cli(["workers", "--json"], server=srv)
        self.assertOk(j)
        again = json.loads(j.out)
        self.assertEqual(sorted(again), sorted(body))
        self.assertEqual([w.get("id") for w in again["workers"]],
                         [w.get("id") for w in listed])
        return listed

    def table(self, text):
        """A printed table as (header words, rows of words)."""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        self.assertTrue(lines, "empty table output")
        return lines[0].split(), [ln.split() for ln in lines[1:]]


class CliWithWorkersTest(CliCase):
    """A server that runs jobs: submit, wait, get, attempts."""

    server = dict(workers=2)

    def run_cli(self, *args, **kw):
        return cli(args, server=self.srv, **kw)

    def test_submit_prints_only_the_id_and_get_finds_it(self):
        p = self.run_cli("submit", "--strategy", "noop", "--payload", '{"a": [1, 2]}')
        self.assertOk(p)
        job_id = p.out.strip()
        self.assertEqual(p.out, job_id + "\n", "stdout must be the id alone")
        self.assertRegex(job_id, harness.UUID7_RE)
        job = self.srv.job(job_id)
        self.assertEqual(job["strategy"], "noop")
        self.assertEqual(job["payload"], {"a": [1, 2]})

        g = self.run_cli("get", job_id)
        self.assertOk(g)
        self.assertIn("\n  ", g.out, "get prints indented JSON")
        self.assertEqual(json.loads(g.out)["id"], job_id)

    def test_get_json_flag_prints_one_compact_line_anywhere_on_the_line(self):
        job = self.srv.submit("noop")
        for args in (["--json", "get", job["id"]], ["get", job["id"], "--json"],
                     ["get", "--json", job["id"]]):
            p = self.run_cli(*args)
            self.assertOk(p)
            self.assertEqual(len(p.out.splitlines()), 1, p.out)
            self.assertEqual(json.loads(p.out)["id"], job["id"])

    def test_submit_json_prints_the_created_job(self):
        q = uniq("q")
        p = self.run_cli("submit", "--json", "--strategy", "noop", "--queue", q,
                         "--priority", "high", "--key", "tenant-1", "--timeout", "42",
                         "--max-attempts", "5", "--delay", "3600")
        self.assertOk(p)
        job = json.loads(p.out)
        self.assertEqual(job["queue"], q)
        self.assertEqual(job["priority"], "high")
        self.assertEqual(job["key"], "tenant-1")
        self.assertEqual(job["timeout_seconds"], 42)
        self.assertEqual(job["max_attempts"], 5)
        self.assertEqual(job["status"], "scheduled")
        self.assertGreater(harness.parse_ts(job["run_at"]), harness.now_ms() + 3500 * 1000)
        self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])

    def test_submit_priority_number_passes_through(self):
        p = self.run_cli("submit", "--json", "--strategy", "noop", "--priority", "0")
        self.assertOk(p)
        self.assertEqual(json.loads(p.out)["priority"], "emergency")
        p = self.run_cli("submit", "--strategy", "noop", "--priority", "7")
        self.assertOneErrorLine(p, 1, "(invalid_argument)")
        p = self.run_cli("submit", "--strategy", "noop", "--priority", "urgent")
        self.assertOneErrorLine(p, 1, "(invalid_argument)")

    def test_submit_run_at_schedules_the_job(self):
        at = harness.format_ts(harness.now_ms() + 3600 * 1000)
        p = self.run_cli("submit", "--json", "--strategy", "noop", "--run-at", at)
        self.assertOk(p)
        job = json.loads(p.out)
        self.assertEqual(job["status"], "scheduled")
        self.assertEqual(job["run_at"], at)
        self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])

    def test_submit_payload_from_file_and_stdin(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            f.write('{"ms": 1}\n')
            name = f.name
        try:
            p = self.run_cli("submit", "--strategy", "sleep", "--payload", "@" + name, "--wait")
            self.assertOk(p)
            self.assertEqual(json.loads(p.out)["result"], {"slept_ms": 1})
        finally:
            os.unlink(name)
        p = self.run_cli("submit", "--strategy", "noop", "--payload", "@-", "--json",
                         stdin=b'{"from": "stdin"}')
        self.assertOk(p)
        self.assertEqual(json.loads(p.out)["payload"], {"from": "stdin"})
        p = self.run_cli("submit", "--strategy", "noop", "--payload", "@/nonexistent/x.json")
        self.assertOneErrorLine(p, 2, "/nonexistent/x.json")

    def test_submit_idempotency_key_returns_the_same_job(self):
        k = uniq("order")
        a = self.run_cli("submit", "--strategy", "noop", "--idempotency-key", k)
        b = self.run_cli("submit", "--strategy", "noop", "--idempotency-key", k)
        self.assertOk(a)
        self.assertOk(b)
        self.assertEqual(a.out, b.out)
        c = self.run_cli("submit", "--strategy", "noop", "--payload", '{"x":1}',
                         "--idempotency-key", k)
        self.assertOneErrorLine(c, 1, "(conflict)")

    def test_submit_wait_on_noop_exits_0_with_the_completed_job(self):
        t0 = time.monotonic()
        p = self.run_cli("submit", "--strategy", "noop", "--wait")
        self.assertOk(p)
        job = json.loads(p.out)
        self.assertEqual(job["status"], "completed")
        self.assertEqual(job["result"], {})
        self.assertIn("\n  ", p.out, "the final job is pretty-printed")
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(self.srv.job(job["id"])["status"], "completed")

    def test_submit_wait_on_failing_job_exits_1(self):
        p = self.run_cli("submit", "--strategy", "sleep", "--payload", '{"ms": "x"}',
                         "--max-attempts", "1", "--wait")
        line = self.assertOneErrorLine(p, 1, "failed", "(invalid_payload)")
        job = json.loads(p.out)
        self.assertEqual(job["status"], "failed")
        self.assertEqual(job["error"]["code"], "invalid_payload")
        self.assertIn(job["id"], line)

    def test_submit_wait_on_cancelled_job_exits_1(self):
        p = subprocess.Popen([harness.CLI_BIN, "--server", self.srv.url, "submit", "--strategy",
                              "sleep", "--payload", '{"ms": 30001}', "--wait", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            def running():
                st, body, _ = self.srv.get("/api/v1/jobs?status=running&limit=1000")
                for j in body["jobs"]:
                    if j["strategy"] == "sleep" and j["payload"] == {"ms": 30001}:
                        return j
                return None
            job = harness.wait_until(running, timeout=10, what="the sleep job to run")
            st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % job["id"])
            self.assertEqual(st, 200, body)
            out, err = p.communicate(timeout=15)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 1, err)
        self.assertEqual(json.loads(out)["status"], "cancelled")
        self.assertEqual(len(err.decode().splitlines()), 1, err)

    def test_wait_timeout_exits_124(self):
        t0 = time.monotonic()
        p = self.run_cli("submit", "--strategy", "sleep", "--payload", '{"ms": 30000}',
                         "--wait", "--wait-timeout", "0.5")
        elapsed = time.monotonic() - t0
        line = self.assertOneErrorLine(p, 124, "--wait-timeout")
        self.assertEqual(p.out, "")
        self.assertLess(elapsed, 5)
        self.assertGreaterEqual(elapsed, 0.5)
        job_id = line.split()[2]
        self.assertIn(self.srv.job(job_id)["status"], ("queued", "running"))
        self.srv.post("/api/v1/jobs/%s/cancel" % job_id)

    def test_wait_timeout_without_wait_is_a_usage_error(self):
        p = self.run_cli("submit", "--strategy", "noop", "--wait-timeout", "1")
        self.assertOneErrorLine(p, 2, "--wait")

    def test_unknown_strategy_prints_the_servers_message(self):
        st, body, _ = self.srv.post("/api/v1/jobs", {"strategy": "no-such-strategy"})
        err = harness.assert_error(st, body, 400)
        p = self.run_cli("submit", "--strategy", "no-such-strategy")
        line = self.assertOneErrorLine(p, 1)
        self.assertEqual(line, "jobplane: %s (%s)" % (err["message"], err["code"]))
        self.assertEqual(p.out, "")

    def test_get_unknown_id_exits_1_with_not_found(self):
        p = self.run_cli("get", "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f")
        self.assertOneErrorLine(p, 1, "(not_found)")
        self.assertEqual(p.out, "")

    def test_get_malformed_id_is_escaped_and_refused(self):
        for bad in ("not-a-uuid", "../../health", "a b?c=d#e"):
            p = self.run_cli("get", bad)
            self.assertOneErrorLine(p, 1)
            self.assertEqual(p.out, "")

    def test_attempts_lists_each_attempt(self):
        p = self.run_cli("submit", "--strategy", "sleep", "--payload", '{"ms": "x"}',
                         "--max-attempts", "1", "--wait", "--json")
        self.assertExit(p, 1)
        job_id = json.loads(p.out)["id"]
        a = self.run_cli("attempts", job_id)
        self.assertOk(a)
        head, rows = self.table(a.out)
        self.assertEqual(head, ["ATTEMPT", "OUTCOME", "WORKER", "STARTED", "DURATION", "ERROR"])
        self.assertEqual(len(rows), 1, a.out)
        self.assertEqual(rows[0][:2], ["1", "failed"])
        self.assertIn("invalid_payload", a.out)
        j = self.run_cli("attempts", job_id, "--json")
        self.assertOk(j)
        att = json.loads(j.out)["attempts"]
        self.assertEqual(len(att), 1)
        self.assertEqual(att[0]["outcome"], "failed")
        self.assertEqual(att[0]["started_at"], rows[0][3])

    def test_workers_lists_the_embedded_engine(self):
        listed = self.check_workers(self.srv)
        if not listed:
            self.skipTest("this server does not list its workers")
        p = self.run_cli("workers")
        _, rows = self.table(p.out)
        for w, r in zip(listed, rows):
            if "concurrency" in w:
                self.assertRegex(r[4], r"^(\d+|-)/%d$" % w["concurrency"])
            if "last_heartbeat" in w:
                self.assertEqual(r[6], "ago", r)

    def test_watch_shows_throughput_of_a_working_server(self):
        # Unbuffered, so the first frame can be read before the second comes.
        p = subprocess.Popen([harness.CLI_BIN, "--server", self.srv.url, "watch", "--count",
                              "2", "--interval", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        try:
            first = b""
            while not first.endswith(b"\n\n"):
                chunk = p.stdout.read(1)
                self.assertTrue(chunk, "watch ended before its first frame")
                first += chunk
            st, body, _ = self.srv.post("/api/v1/jobs/batch",
                                        {"jobs": [{"strategy": "noop"}] * 20})
            self.assertEqual(st, 201, body)
            rest, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        got = frames((first + rest).decode())
        self.assertEqual(len(got), 2)
        done = [frame_counts(f)["completed"] for f in got]
        self.assertGreater(done[1], done[0], "noop jobs complete within the 2 s interval")
        self.assertIsNone(frame_rate(got[0]))
        rate = frame_rate(got[1])
        # The rate is the difference over the time between the two answers,
        # about the 2 s interval.
        self.assertTrue((done[1] - done[0]) / 2.5 <= rate <= (done[1] - done[0]) / 1.9,
                        (done, rate))

    def test_env_var_selects_the_server(self):
        p = cli(["stats"], env={"JOBPLANE_SERVER": self.srv.url})
        self.assertOk(p)
        p = cli(["stats", "--json"], env={"JOBPLANE_SERVER": self.srv.url + "/"})
        self.assertOk(p)
        self.assertIn("counts", json.loads(p.out))

    def test_server_flag_overrides_env_var(self):
        dead = "http://127.0.0.1:%d" % harness.free_port()
        p = cli(["--server", self.srv.url, "stats"], env={"JOBPLANE_SERVER": dead})
        self.assertOk(p)
        p = cli(["stats", "--server", self.srv.url], env={"JOBPLANE_SERVER": dead})
        self.assertOk(p)
        p = cli(["stats"], env={"JOBPLANE_SERVER": dead})
        self.assertOneErrorLine(p, 3, dead)


class CliQueuedTest(CliCase, harness.ServerCase):
    """A server without workers: jobs stay queued, so lists and counts are exact."""

    server = dict(workers=0)

    def run_cli(self, *args, **kw):
        return cli(args, server=self.srv, **kw)

    def make_jobs(self, n, queue, **fields):
        ids = []
        while n > 0:
            k = min(n, 100)
            jobs = [dict({"strategy": "noop", "queue": queue}, **fields) for _ in range(k)]
            st, body, _ = self.srv.post("/api/v1/jobs/batch", {"jobs": jobs})
            self.assertEqual(st, 201, body)
            ids += [j["id"] for j in body["jobs"]]
            n -= k
        return ids

    def test_bad_payload_exits_2_and_creates_nothing(self):
        q = uniq("bad")
        for bad in ('{"ms": ', "not json", '{"a":1,"a":2}', ""):
            p = self.run_cli("submit", "--strategy", "noop", "--queue", q, "--payload", bad)
            self.assertOneErrorLine(p, 2, "--payload")
            self.assertEqual(p.out, "")
        st, body, _ = self.srv.get("/api/v1/jobs?queue=" + q)
        self.assertEqual(st, 200, body)
        self.assertEqual(body["jobs"], [])
        p = self.run_cli("list", "--queue", q, "--json")
        self.assertOk(p)
        self.assertEqual(json.loads(p.out)["jobs"], [])

    def test_list_all_follows_every_page_exactly_once(self):
        q = uniq("page")
        ids = self.make_jobs(120, q)
        p = self.run_cli("list", "--queue", q, "--all", "--limit", "50")
        self.assertOk(p)
        head, rows = self.table(p.out)
        self.assertEqual(head, ["ID", "STATUS", "QUEUE", "STRATEGY", "PRIORITY", "ATTEMPTS",
                                "CREATED"])
        got = [r[0] for r in rows]
        self.assertEqual(len(got), 120)
        self.assertEqual(sorted(got), sorted(ids))
        self.assertEqual(got, sorted(got, reverse=True), "newest first")
        for r in rows:
            self.assertEqual(r[1:5], ["queued", q, "noop", "normal"])
            self.assertEqual(r[5], "0/3")
            harness.parse_ts(r[6])

        p = self.run_cli("list", "--queue", q, "--all", "--limit", "50", "--json")
        self.assertOk(p)
        body = json.loads(p.out)
        self.assertIsNone(body["next_cursor"])
        self.assertEqual(sorted(j["id"] for j in body["jobs"]), sorted(ids))

    def test_list_without_all_prints_next_cursor_on_stderr(self):
        q = uniq("cur")
        ids = self.make_jobs(7, q)
        p = self.run_cli("list", "--queue", q, "--limit", "5")
        self.assertExit(p, 0)
        _, rows = self.table(p.out)
        self.assertEqual(len(rows), 5)
        lines = p.err.splitlines()
        self.assertEqual(len(lines), 1, p.err)
        self.assertTrue(lines[0].startswith("next: "), lines[0])
        cursor = lines[0][len("next: "):]
        p2 = self.run_cli("list", "--queue", q, "--limit", "5", "--cursor", cursor)
        self.assertOk(p2)
        _, rows2 = self.table(p2.out)
        self.assertEqual(len(rows2), 2)
        self.assertEqual(sorted(r[0] for r in rows + rows2), sorted(ids))

        p3 = self.run_cli("list", "--queue", q, "--limit", "5", "--json")
        self.assertExit(p3, 0)
        body = json.loads(p3.out)
        self.assertEqual(len(body["jobs"]), 5)
        self.assertEqual(p3.err, "next: %s\n" % body["next_cursor"])

    def test_list_filters_by_status_queue_and_key(self):
        q = uniq("filt")
        ids = self.make_jobs(3, q)
        keyed = self.make_jobs(2, q, key="acme")
        st, body, _ = self.srv.post("/api/v1/jobs/%s/cancel" % ids[0])
        self.assertEqual(st, 200, body)

        p = self.run_cli("list", "--queue", q, "--status", "cancelled")
        self.assertOk(p)
        _, rows = self.table(p.out)
        self.assertEqual([r[0] for r in rows], [ids[0]])
        self.assertEqual(rows[0][1], "cancelled")

        p = self.run_cli("list", "--queue", q, "--status", "queued", "--json")
        self.assertOk(p)
        self.assertEqual(sorted(j["id"] for j in json.loads(p.out)["jobs"]),
                         sorted(ids[1:] + keyed))

        p = self.run_cli("list", "--queue", q, "--key", "acme")
        self.assertOk(p)
        _, rows = self.table(p.out)
        self.assertEqual(sorted(r[0] for r in rows), sorted(keyed))

        p = self.run_cli("list", "--queue", uniq("empty"))
        self.assertOk(p)
        head, rows = self.table(p.out)
        self.assertEqual(head[0], "ID")
        self.assertEqual(rows, [])

    def test_list_bad_status_is_the_servers_error(self):
        p = self.run_cli("list", "--status", "sleeping")
        self.assertOneErrorLine(p, 1, "(invalid_argument)")
        p = self.run_cli("list", "--limit", "many")
        self.assertOneErrorLine(p, 2, "--limit")

    def test_cancel_and_retry(self):
        job_id = self.run_cli("submit", "--strategy", "noop").out.strip()
        p = self.run_cli("cancel", job_id)
        self.assertOk(p)
        self.assertEqual(p.out, "%s cancelled\n" % job_id)
        self.assertEqual(self.srv.job(job_id)["status"], "cancelled")

        p = self.run_cli("cancel", job_id)
        self.assertOneErrorLine(p, 1, "(conflict)")

        p = self.run_cli("retry", job_id)
        self.assertOk(p)
        self.assertEqual(p.out, "%s queued\n" % job_id)
        self.assertEqual(self.srv.job(job_id)["status"], "queued")

        p = self.run_cli("retry", job_id)
        self.assertOneErrorLine(p, 1, "(conflict)")

        p = self.run_cli("cancel", job_id, "--json")
        self.assertOk(p)
        self.assertEqual(json.loads(p.out)["status"], "cancelled")

        p = self.run_cli("cancel", "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f")
        self.assertOneErrorLine(p, 1, "(not_found)")

    def test_attempts_of_a_job_never_run_is_an_empty_table(self):
        job_id = self.srv.submit("noop")["id"]
        p = self.run_cli("attempts", job_id)
        self.assertOk(p)
        head, rows = self.table(p.out)
        self.assertEqual(head[0], "ATTEMPT")
        self.assertEqual(rows, [])

    def test_stats_shows_counts_and_queues(self):
        q = uniq("stats")
        self.make_jobs(3, q)
        self.make_jobs(2, q, priority="high")
        st, api, _ = self.srv.get("/api/v1/queue/stats")
        self.assertEqual(st, 200, api)
        p = self.run_cli("stats")
        self.assertOk(p)
        counts = {}
        queues = {}
        for ln in p.out.splitlines():
            w = ln.split()
            if len(w) == 2 and w[0] in api["counts"]:
                counts[w[0]] = int(w[1])
            if len(w) >= 4 and w[0] == q:
                queues[w[1]] = int(w[2])
        self.assertEqual(counts, api["counts"])
        self.assertGreaterEqual(counts["queued"], 5)
        self.assertEqual(queues, {"high": 2, "normal": 3})
        self.assertIn("STATUS", p.out)
        self.assertIn("QUEUE", p.out)

        p = self.run_cli("stats", "--json")
        self.assertOk(p)
        body = json.loads(p.out)
        self.assertEqual(body["counts"], api["counts"])
        self.assertEqual(body["queues"][q]["normal"]["length"], 3)


    def test_watch_piped_prints_plain_frames_matching_the_api(self):
        q = uniq("watch")
        self.make_jobs(3, q)
        self.make_jobs(2, q, priority="high")
        st, api, _ = self.srv.get("/api/v1/queue/stats")
        self.assertEqual(st, 200, api)
        t0 = time.monotonic()
        p = self.run_cli("watch", "--count", "2", "--interval", "0.2")
        elapsed = time.monotonic() - t0
        self.assertOk(p)
        self.assertNotIn("\x1b", p.out, "no escape codes into a pipe")
        got = frames(p.out)
        self.assertEqual(len(got), 2, p.out)
        self.assertGreaterEqual(elapsed, 0.2)
        for f in got:
            self.assertTrue(f.startswith("jobplane watch  " + self.srv.url), f)
            self.assertEqual(frame_counts(f), api["counts"], f)
            rows = {w[1]: int(w[2]) for w in (ln.split() for ln in f.splitlines())
                    if len(w) >= 4 and w[0] == q}
            self.assertEqual(rows, {"high": 2, "normal": 3}, f)
            self.assertIn("QUEUE", f)
            for ln in f.splitlines():
                self.assertLessEqual(len(ln), 80, ln)
        # Nothing runs on this server: no rate before a previous frame, then 0.
        self.assertIsNone(frame_rate(got[0]))
        self.assertEqual(frame_rate(got[1]), 0.0)

    def test_watch_json_prints_one_line_per_refresh(self):
        st, api, _ = self.srv.get("/api/v1/queue/stats")
        self.assertEqual(st, 200, api)
        p = self.run_cli("watch", "--count", "2", "--interval", "0.1", "--json")
        self.assertOk(p)
        lines = p.out.splitlines()
        self.assertEqual(len(lines), 2, p.out)
        first, second = (json.loads(ln) for ln in lines)
        self.assertEqual(first["stats"]["counts"], api["counts"])
        self.assertIsNone(first["completed_per_second"])
        self.assertEqual(second["completed_per_second"], 0)
        self.assertLessEqual(harness.parse_ts(first["time"]), harness.parse_ts(second["time"]))

    def test_workers_against_the_real_server(self):
        self.check_workers(self.srv)


class CliWithoutServerTest(CliCase):
    """What the client decides alone: help, usage errors, an absent server."""

    def test_server_down_exits_3_with_one_line(self):
        url = "http://127.0.0.1:%d" % harness.free_port()
        for args in (["get", "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f"], ["stats"],
                     ["submit", "--strategy", "noop", "--wait"], ["list", "--all"]):
            p = cli(["--server", url] + args)
            self.assertOneErrorLine(p, 3, "cannot reach " + url, "Connection refused")
            self.assertEqual(p.out, "")

    def test_watch_keeps_trying_a_dead_server_and_exits_0_at_count(self):
        url = "http://127.0.0.1:%d" % harness.free_port()
        p = cli(["--server", url, "watch", "--count", "2", "--interval", "0.1"])
        self.assertOk(p)
        got = frames(p.out)
        self.assertEqual(len(got), 2, p.out)
        for f in got:
            self.assertIn("server unreachable: cannot reach " + url, f)
            self.assertIn("Connection refused", f)

    def test_workers_against_a_dead_server_exits_3(self):
        url = "http://127.0.0.1:%d" % harness.free_port()
        p = cli(["--server", url, "workers"])
        self.assertOneErrorLine(p, 3, "cannot reach " + url)

    def test_watch_ends_with_exit_0_on_sigint(self):
        url = "http://127.0.0.1:%d" % harness.free_port()
        # Unbuffered, so what readline does not consume is left for communicate.
        p = subprocess.Popen([harness.CLI_BIN, "--server", url, "watch", "--interval", "30"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        try:
            first = p.stdout.readline()  # the frame is written at once, then the pause
            self.assertTrue(first.startswith(b"jobplane watch"), first)
            t0 = time.monotonic()
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=10)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        self.assertLess(time.monotonic() - t0, 5, "SIGINT must end the 30 s pause")
        self.assertEqual(err, b"")
        self.assertIn(b"server unreachable", out)
        self.assertTrue(out.endswith(b"\n\n\n"), out)

    def test_help_mentions_every_command_and_variable(self):
        for args in (["--help"], ["help"], ["-h"]):
            p = cli(args)
            self.assertOk(p)
            for c in COMMANDS:
                self.assertRegex(p.out, r"(?m)^\s+%s\b" % c)
            for word in ("JOBPLANE_SERVER", "JOBPLANE_TOKEN", "http://127.0.0.1:8080", "--json",
                         "--wait-timeout", "--all", "--idempotency-key", "--interval",
                         "--count"):
                self.assertIn(word, p.out)

    def test_command_help_lists_its_flags(self):
        p = cli(["submit", "--help"])
        self.assertOk(p)
        for flag in ("--strategy", "--payload", "--queue", "--priority", "--key",
                     "--idempotency-key", "--timeout", "--max-attempts", "--delay", "--run-at",
                     "--wait", "--wait-timeout"):
            self.assertIn(flag, p.out)
        self.assertEqual(cli(["help", "submit"]).out, p.out)
        p = cli(["list", "-h"])
        self.assertOk(p)
        for flag in ("--status", "--queue", "--key", "--limit", "--cursor", "--all"):
            self.assertIn(flag, p.out)
        p = cli(["watch", "--help"])
        self.assertOk(p)
        for word in ("--interval", "--count", "default 1"):
            self.assertIn(word, p.out)
        self.assertEqual(cli(["help", "watch"]).out, p.out)
        p = cli(["workers", "--help"])
        self.assertOk(p)
        self.assertIn("usage: jobplane workers", p.out)

    def test_usage_errors_exit_2_before_contacting_the_server(self):
        # The server is unreachable: exit 3 would mean the CLI tried to send.
        url = "http://127.0.0.1:%d" % harness.free_port()
        cases = [
            ([], "command"),
            (["frobnicate"], "frobnicate"),
            (["workers", "extra"], '"extra"'),
            (["watch", "now"], '"now"'),
            (["watch", "--interval", "0.05"], "--interval"),
            (["watch", "--interval", "soon"], "--interval"),
            (["watch", "--interval", "-1"], "--interval"),
            (["watch", "--count", "0"], "--count"),
            (["watch", "--count", "two"], "--count"),
            (["help", "frobnicate"], "frobnicate"),
            (["--bogus", "stats"], "--bogus"),
            (["submit"], "--strategy"),
            (["submit", "--strategy"], "--strategy"),
            (["submit", "--strategy", "noop", "--timeout", "soon"], "--timeout"),
            (["submit", "--strategy", "noop", "--max-attempts", "1.5"], "--max-attempts"),
            (["submit", "--strategy", "noop", "--wait", "--wait-timeout", "-1"], "--wait-timeout"),
            (["submit", "--strategy", "noop", "--payload", "{"], "--payload"),
            (["get"], "ID"),
            (["get", "a", "b"], '"b"'),
            (["cancel"], "ID"),
            (["stats", "extra"], '"extra"'),
            (["list", "--all=maybe"], "--all"),
        ]
        for args, needle in cases:
            p = cli(["--server", url] + args)
            self.assertOneErrorLine(p, 2, needle)
            self.assertEqual(p.out, "", args)
        p = cli(["--server", "ftp://example.com", "stats"])
        self.assertOneErrorLine(p, 2, "ftp://example.com")


class FakeApi(http.server.ThreadingHTTPServer):
    """A stand-in server that records each request and answers from `reply`,
    for what the real one cannot show: headers sent, connections used, broken
    answers."""

    daemon_threads = True

    def __init__(self, reply):
        self.reply = reply  # (method, path) -> (status, body bytes)
        self.seen = []      # (method, path, headers dict, client port)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                self.server.seen.append((self.command, self.path, dict(self.headers),
                                         self.client_address[1]))
                status, body = self.server.reply(self.command, self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()


JOB = {"id": "01939a5e-7d1c-7f3a-9c2e-5b1d2a3c4e5f", "status": "queued", "queue": "default",
       "strategy": "noop", "priority": "normal", "attempts": 0, "max_attempts": 3,
       "created_at": "2026-11-26T10:00:00.000Z"}


class CliFakeServerTest(CliCase):
    """Headers, connection reuse and broken answers, against FakeApi."""

    def serve(self, reply):
        api = FakeApi(reply)
        self.addCleanup(api.close)
        return api

    def test_token_is_sent_as_bearer_from_flag_or_variable(self):
        api = self.serve(lambda m, p: (200, json.dumps(JOB).encode()))
        self.assertOk(cli(["--server", api.url, "--token", "s3cret", "get", JOB["id"]]))
        self.assertOk(cli(["--server", api.url, "get", JOB["id"]],
                          env={"JOBPLANE_TOKEN": "from-env"}))
        self.assertOk(cli(["--server", api.url, "get", JOB["id"]]))
        auth = [h.get("Authorization") for _, _, h, _ in api.seen]
        self.assertEqual(auth, ["Bearer s3cret", "Bearer from-env", None])
        self.assertEqual(api.seen[0][1], "/api/v1/jobs/" + JOB["id"])

    def test_list_all_reuses_one_connection(self):
        def reply(method, path):
            page = int(path.split("cursor=c")[1]) if "cursor=c" in path else 0
            nxt = None if page >= 2 else "c%d" % (page + 1)
            job = dict(JOB, id=JOB["id"][:-1] + str(page))
            return 200, json.dumps({"jobs": [job], "next_cursor": nxt}).encode()
        api = self.serve(reply)
        p = cli(["--server", api.url, "list", "--all", "--status", "queued", "--limit", "1"])
        self.assertOk(p)
        _, rows = self.table(p.out)
        self.assertEqual(len(rows), 3)
        self.assertEqual([s[1] for s in api.seen],
                         ["/api/v1/jobs?status=queued&limit=1",
                          "/api/v1/jobs?status=queued&limit=1&cursor=c1",
                          "/api/v1/jobs?status=queued&limit=1&cursor=c2"])
        self.assertEqual(len({s[3] for s in api.seen}), 1, "one keep-alive connection")

    def test_a_repeated_cursor_stops_all(self):
        api = self.serve(lambda m, p: (200, json.dumps({"jobs": [JOB],
                                                        "next_cursor": "same"}).encode()))
        p = cli(["--server", api.url, "list", "--all"], timeout=20)
        self.assertOneErrorLine(p, 1, "cursor")
        self.assertLessEqual(len(api.seen), 3)

    def test_answers_that_are_not_the_api_are_one_line_errors(self):
        cases = {
            "/api/v1/jobs/a": (502, b"<html>\nBad Gateway\n</html>"),
            "/api/v1/jobs/b": (200, b"not json"),
            "/api/v1/jobs/c": (200, b"[1, 2]"),
            "/api/v1/jobs/d": (404, json.dumps({"error": {
                "code": "not_found", "message": "line one\nline two\x1b[31m"}}).encode()),
        }
        api = self.serve(lambda m, p: cases[p])
        for path, needle in (("a", "HTTP 502"), ("b", "HTTP 200"), ("c", "HTTP 200"),
                             ("d", "line one line two")):
            p = cli(["--server", api.url, "get", path])
            line = self.assertOneErrorLine(p, 1, needle)
            self.assertNotIn("\x1b", line)
            self.assertEqual(p.out, "")


def iso_ago(ms):
    """An RFC 3339 UTC timestamp `ms` milliseconds ago."""
    return harness.format_ts(harness.now_ms() - ms)


def workers_body():
    """A workers answer like the distributed server's, plus an embedded one
    without most fields."""
    return {"workers": [
        {"id": "alpha:1234", "host": "alpha", "pid": 1234, "queues": ["default", "mail"],
         "strategies": ["noop", "sleep"], "concurrency": 16, "in_flight": 3,
         "last_heartbeat": iso_ago(400), "started_at": iso_ago(3600 * 1000)},
        {"id": "beta:99", "host": "beta", "pid": 99, "queues": ["default"],
         "strategies": ["http"], "concurrency": 8, "in_flight": 4,
         "last_heartbeat": iso_ago(125 * 1000), "started_at": iso_ago(7200 * 1000)},
        {"id": "gamma:7", "host": "gamma", "embedded": True},
    ]}


def stats_body(completed, queues=None):
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(queued=5, completed=completed)
    return {"counts": counts, "queues": queues if queues is not None else
            {"default": {"normal": {"length": 5, "pending": 0, "oldest_age_ms": 1500}}}}


class CliFakeWorkersTest(CliCase):
    """workers and watch against FakeApi: shapes the real server may not
    produce yet (or not on demand): many workers, missing fields, a rising
    completed count, a terminal."""

    def serve(self, reply):
        api = FakeApi(reply)
        self.addCleanup(api.close)
        return api

    def test_workers_prints_a_tolerant_table(self):
        body = workers_body()
        api = self.serve(lambda m, p: (200, json.dumps(body).encode()))
        p = cli(["--server", api.url, "workers"])
        self.assertOk(p)
        self.assertEqual(api.seen[0][1], "/api/v1/workers")
        lines = p.out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "HOST", "QUEUES", "STRATEGIES", "IN-FLIGHT",
                                            "LAST-HEARTBEAT"])
        rows = [ln.split(None, 5) for ln in lines[1:]]
        self.assertEqual(len(rows), 3, p.out)
        self.assertEqual(rows[0][:5], ["alpha:1234", "alpha", "default,mail", "noop,sleep",
                                       "3/16"])
        m = re.fullmatch(r"(\d+)\.(\d)s ago", rows[0][5])
        self.assertTrue(m, rows[0][5])
        self.assertTrue(0.4 <= float(rows[0][5].split("s")[0]) < 10, rows[0][5])
        self.assertEqual(rows[1][:5], ["beta:99", "beta", "default", "http", "4/8"])
        self.assertRegex(rows[1][5], r"^2m0[5-9]s ago$")
        self.assertEqual(rows[2], ["gamma:7", "gamma", "-", "-", "-", "-"])

    def test_workers_json_passes_the_answer_through(self):
        body = workers_body()
        api = self.serve(lambda m, p: (200, json.dumps(body).encode()))
        p = cli(["--server", api.url, "workers", "--json"])
        self.assertOk(p)
        self.assertEqual(len(p.out.splitlines()), 1)
        self.assertEqual(json.loads(p.out), body)

    def test_workers_none_live_says_so_on_stderr_and_exits_0(self):
        api = self.serve(lambda m, p: (200, b'{"workers": []}'))
        p = cli(["--server", api.url, "workers"])
        self.assertExit(p, 0)
        self.assertEqual(p.out, "")
        self.assertIn("no live workers", p.err)
        self.assertEqual(len(p.err.splitlines()), 1)

    def test_workers_odd_answers_are_one_line_errors(self):
        cases = [(200, b'{"workers": 5}', 1, "workers"), (200, b"[]", 1, "HTTP 200"),
                 (404, b'{"error":{"code":"not_found","message":"no such endpoint"}}', 1,
                  "(not_found)")]
        for status, raw, code, needle in cases:
            api = self.serve(lambda m, p, s=status, b=raw: (s, b))
            self.assertOneErrorLine(cli(["--server", api.url, "workers"]), code, needle)

    def test_watch_shows_throughput_and_workers(self):
        calls = {"stats": 0}
        body = workers_body()

        def reply(method, path):
            if path == "/api/v1/queue/stats":
                calls["stats"] += 1
                return 200, json.dumps(stats_body(100 * calls["stats"])).encode()
            if path == "/api/v1/workers":
                return 200, json.dumps(body).encode()
            return 404, b'{"error":{"code":"not_found","message":"no"}}'
        api = self.serve(reply)
        p = cli(["--server", api.url, "watch", "--count", "3", "--interval", "0.5"])
        self.assertOk(p)
        got = frames(p.out)
        self.assertEqual(len(got), 3, p.out)
        self.assertEqual(frame_counts(got[0])["completed"], 100)
        self.assertEqual(frame_counts(got[2])["completed"], 300)
        self.assertIsNone(frame_rate(got[0]))
        for f in got[1:]:
            # 100 more completed each refresh, refreshes 0.5 s apart (a little
            # more when the machine is slow).
            self.assertTrue(125 <= frame_rate(f) <= 215, f)
        for f in got:
            self.assertIn("workers 3", f)
            self.assertIn("in flight 7", f)
            self.assertNotIn("in flight 7/", f, "capacity is unknown: gamma has none")
        paths = [s[1] for s in api.seen]
        self.assertEqual(paths.count("/api/v1/queue/stats"), 3)
        self.assertEqual(len({s[3] for s in api.seen}), 1, "one keep-alive connection")

    def test_watch_without_workers_endpoint_leaves_the_line_out(self):
        def reply(method, path):
            if path == "/api/v1/queue/stats":
                return 200, json.dumps(stats_body(0)).encode()
            return 404, b'{"error":{"code":"not_found","message":"no"}}'
        api = self.serve(reply)
        p = cli(["--server", api.url, "watch", "--count", "1", "--interval", "0.1"])
        self.assertOk(p)
        got = frames(p.out)
        self.assertEqual(len(got), 1)
        self.assertNotIn("workers", got[0])
        self.assertEqual(frame_counts(got[0])["queued"], 5)

    def test_watch_server_error_is_shown_and_retried(self):
        def reply(method, path):
            return 500, b'{"error":{"code":"internal","message":"database is locked"}}'
        api = self.serve(reply)
        p = cli(["--server", api.url, "watch", "--count", "2", "--interval", "0.1"])
        self.assertOk(p)
        got = frames(p.out)
        self.assertEqual(len(got), 2)
        for f in got:
            self.assertIn("server error: database is locked (internal)", f)

    def test_watch_on_a_terminal_redraws_in_place_and_fits(self):
        queues = {"q%02d" % i: {"normal": {"length": i + 1, "pending": 0, "oldest_age_ms": 10}}
                  for i in range(20)}
        api = self.serve(lambda m, p: (200, json.dumps(stats_body(0, queues)).encode())
                         if p == "/api/v1/queue/stats" else (404, b"{}"))
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 12, 80, 0, 0))
        try:
            p = subprocess.Popen([harness.CLI_BIN, "--server", api.url, "watch", "--count", "2",
                                  "--interval", "0.1"], stdout=slave, stderr=subprocess.PIPE)
            os.close(slave)
            slave = None
            out = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the other end closed
                    break
                if not chunk:
                    break
                out += chunk
            err = p.communicate(timeout=10)[1]
        finally:
            if slave is not None:
                os.close(slave)
            os.close(master)
        self.assertEqual(p.returncode, 0, err)
        text = out.decode().replace("\r\n", "\n")
        parts = text.split("\x1b[H\x1b[J")
        self.assertEqual(parts[0], "", "the screen is cleared before the first frame")
        self.assertEqual(len(parts), 3, text)
        for f in parts[1:]:
            lines = f.splitlines()
            self.assertLessEqual(len(lines), 11, "a 12-line terminal must not scroll:\n" + f)
            self.assertIn("q00", f)
            self.assertRegex(f, r"\.\.\. \d+ more")


if __name__ == "__main__":
    harness.main()
