#!/usr/bin/python3
"""The jobplane benchmark: starts each set-up (embedded SQLite; PostgreSQL +
Redis with one worker process; the same with two), drives it with
bench/loadgen, and prints one table (median [min-max] of the runs) plus the
machine, the durability settings and the command line. The figures also go
to bench/results/latest.json. Standard library only.

Phases of one run of one set-up (0, A and B-D each on a fresh database):
  0  idle RSS: the set-up started with an empty queue, VmRSS read once settled
  A  enqueue: jobs/s through POST /api/v1/jobs from N keep-alive connections,
     nothing executing (embedded: --workers 0; distributed: no worker)
  B  batch enqueue of the drain's jobs through POST /api/v1/jobs/batch, still
     nothing executing; then execution starts (embedded: the server restarts
     with its engine threads, and the clock includes that restart;
     distributed: the workers start) and the drain is timed until the
     database counts every job completed
  C  end to end: sequential jobs, submit -> completed seen through the API
  D  the same while a steady load of 50% of the set-up's peak runs; by
     default the peak is 1/(1/enqueue + 1/drain), the rate at which jobs can
     be taken in and run at once on one machine (--load-basis)
Peak RSS is VmHWM of every server and worker process, read before each stops.
Beside the figures it shows where the CPU went in each phase and, for the
distributed set-ups, the PostgreSQL and Redis work each job cost."""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

SETUPS = ("embedded", "pg1", "pg2")
SETUP_TITLES = {
    "embedded": "embedded (SQLite)",
    "pg1": "PG+Redis, 1 worker",
    "pg2": "PG+Redis, 2 workers",
}
MIB = 1024 * 1024

# Targets of the performance issue, for a 2-core machine: (metric, setups, op, value).
TARGETS = [
    ("drain_per_s", ("pg1",), ">=", 20000),
    ("drain_per_s", ("pg2",), ">=", 25000),
    ("drain_per_s", ("embedded",), ">=", 40000),
    ("batch_per_s", SETUPS, ">=", 100000),
    ("enqueue_per_s", SETUPS, ">=", 10000),
    ("e2e_p50_ms", ("embedded",), "<=", 0.5),
    ("e2e_p50_ms", ("pg1", "pg2"), "<=", 2.0),
    ("e2e_p99_ms", SETUPS, "<=", 5.0),
    ("rss_idle_server_mib", SETUPS, "<=", 16),
    ("rss_idle_worker_mib", ("pg1", "pg2"), "<=", 8),
]

# Rows of the table: (metric, label, decimals).
ROWS = [
    ("enqueue_per_s", "enqueue, 1 job/request (jobs/s)", 0),
    ("batch_per_s", "enqueue, batches of 100 (jobs/s)", 0),
    ("drain_per_s", "drain (jobs/s)", 0),
    ("e2e_p50_ms", "end to end p50 (ms)", 3),
    ("e2e_p99_ms", "end to end p99 (ms)", 3),
    ("e2e_max_ms", "end to end max (ms)", 2),
    ("load_rate_per_s", "under load: offered (jobs/s)", 0),
    ("load_p50_ms", "under load: p50 (ms)", 3),
    ("load_p99_ms", "under load: p99 (ms)", 3),
    ("load_max_ms", "under load: max (ms)", 2),
    ("rss_idle_server_mib", "RSS idle, server (MiB)", 1),
    ("rss_idle_worker_mib", "RSS idle, worker (MiB)", 1),
    ("rss_peak_server_mib", "RSS peak, server (MiB)", 1),
    ("rss_peak_worker_mib", "RSS peak, worker (MiB, max)", 1),
    ("errors", "errors (requests, jobs)", 0),
]


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def proc_status(pid, field, scale=1024):
    """A /proc/PID/status field: in bytes for the kB ones (VmRSS, VmHWM),
    as is with scale=1 (Threads); None when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * scale
    except OSError:
        pass
    return None


def mem_rollup(pid):
    """RSS split from /proc/PID/smaps_rollup, in KiB: how much is shared-library
    pages (Rss_File), how much the process's own (Rss_Anon), and its
    proportional share (Pss)."""
    out = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Anonymous", "Shared_Clean",
                         "Private_Clean", "Private_Dirty"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def read_first(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def run_text(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fsync_probe(directory, n=50):
    """Mean and max milliseconds of a 4 KiB write + fdatasync here: what a
    durable commit costs on this disk."""
    path = os.path.join(directory, "fsync-probe")
    times = []
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        block = b"x" * 4096
        for i in range(n):
            os.pwrite(fd, block, (i % 16) * 4096)
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    return {"mean_ms": round(statistics.mean(times), 3), "max_ms": round(max(times), 3)}


def machine_info(workdir):
    cpuinfo = read_first("/proc/cpuinfo")
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", read_first("/proc/meminfo"), re.M)
    osr = re.search(r'^PRETTY_NAME="?([^"\n]+)', read_first("/etc/os-release"), re.M)
    fs = run_text(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", workdir])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": m.group(1).strip() if m else "unknown",
        "memory_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "os": osr.group(1) if osr else "unknown",
        "loadavg_before": read_first("/proc/loadavg").split()[:3],
        "data_dir": workdir,
        "data_fs": fs,
        "fsync_4k": fsync_probe(workdir),
        "cc": run_text(["cc", "--version"]).splitlines()[0:1],
        "redis": run_text(["redis-server", "--version"]),
    }


def git_describe():
    head = run_text(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"])
    dirty = run_text(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    return (head or "unknown") + ("+dirty" if dirty else "")


def sqlite_synchronous():
    """The synchronous level the SQLite store sets (read from its source)."""
    src = read_first(os.path.join(ROOT, "src", "store", "sqlite.c"))
    m = re.search(r"PRAGMA synchronous\s*=\s*(\w+)", src, re.I)
    j = re.search(r"PRAGMA journal_mode\s*=\s*(\w+)", src, re.I)
    return (j.group(1).upper() if j else "unknown"), (m.group(1).upper() if m else "unknown")


CPU_GROUPS = ("server", "worker", "postgres", "redis", "loadgen", "bench", "other")


class CpuSampler:
    """Where the CPU goes, phase by phase: every few hundred ms it reads
    /proc and charges each process's new CPU time to a group -- this
    benchmark's server, workers, PostgreSQL, Redis, load generator, itself,
    or "other", processes that are not this benchmark's (other users of the
    machine, whose share says how noisy the figures are)."""

    def __init__(self, interval=0.25):
        self.interval = interval
        self.hz = os.sysconf("SC_CLK_TCK")
        self.me = os.getpid()
        self.lock = threading.Lock()
        self.phase = None
        self.phase_t = None
        self.acc = {}    # phase -> {"wall": s, group: cpu seconds}
        self.hot = {}    # phase -> {(group, tid): cpu seconds}, threads of server and workers
        self.prev = {}   # pid -> cpu ticks
        self.prev_t = {}  # tid -> cpu ticks
        self.stop_ev = threading.Event()
        self._snapshot(charge=False)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @staticmethod
    def _stat(path):
        """(ppid, comm, utime + stime ticks) from a stat file, or None."""
        try:
            with open(path, "rb") as f:
                st = f.read().decode("ascii", "replace")
        except OSError:
            return None
        lp, rp = st.find("("), st.rfind(")")
        fields = st[rp + 2:].split()
        if len(fields) < 13:
            return None
        return int(fields[1]), st[lp + 1:rp], int(fields[11]) + int(fields[12])

    def _read(self):
        procs = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                v = self._stat("/proc/%s/stat" % name)
                if v:
                    procs[int(name)] = v
        return procs

    def _threads(self, pid):
        out = {}
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            return out
        for t in tids:
            v = self._stat("/proc/%d/task/%s/stat" % (pid, t))
            if v:
                out[int(t)] = v[2]
        return out

    def _group(self, pid, procs, mine):
        if pid not in mine:
            return "other"
        comm = procs[pid][1]
        if comm.startswith("jobplane-serv"):
            return "server"
        if comm.startswith("jobplane-work"):
            return "worker"
        if comm.startswith("postgres"):
            return "postgres"
        if comm.startswith("redis"):
            return "redis"
        if comm == "loadgen":
            return "loadgen"
        return "bench"

    def _snapshot(self, charge=True):
        procs = self._read()
        children = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        mine, todo = set(), [self.me]
        while todo:
            p = todo.pop()
            if p in mine:
                continue
            mine.add(p)
            todo.extend(children.get(p, ()))
        deltas = dict.fromkeys(CPU_GROUPS, 0)
        tdeltas = {}
        tnow = {}
        for pid, (_, _, ticks) in procs.items():
            d = ticks - self.prev.get(pid, 0 if charge else ticks)
            g = self._group(pid, procs, mine)
            if d > 0:
                deltas[g] += d
                if g == "postgres":
                    tdeltas[(g, pid)] = d  # one backend per connection: its busiest
            if g in ("server", "worker"):
                for tid, tt in self._threads(pid).items():
                    tnow[tid] = tt
                    td = tt - self.prev_t.get(tid, 0 if charge else tt)
                    if td > 0:
                        tdeltas[(g, tid)] = td
        self.prev = {pid: v[2] for pid, v in procs.items()}
        self.prev_t = tnow
        if charge:
            with self.lock:
                if self.phase is not None:
                    a = self.acc.setdefault(self.phase, dict.fromkeys(CPU_GROUPS + ("wall",), 0.0))
                    for g, d in deltas.items():
                        a[g] += d / self.hz
                    h = self.hot.setdefault(self.phase, {})
                    for k, d in tdeltas.items():
                        h[k] = h.get(k, 0.0) + d / self.hz

    def _loop(self):
        while not self.stop_ev.wait(self.interval):
            try:
                self._snapshot()
            except Exception:  # a vanished process mid-read: skip this round
                pass

    def begin(self, phase):
        """Charges from now on to `phase` (None: to nothing)."""
        try:
            self._snapshot()
        except Exception:
            pass
        now = time.monotonic()
        with self.lock:
            if self.phase is not None:
                a = self.acc.setdefault(self.phase, dict.fromkeys(CPU_GROUPS + ("wall",), 0.0))
                a["wall"] += now - self.phase_t
            self.phase, self.phase_t = phase, now

    def take(self, prefix):
        """The accumulated phases whose names start with prefix, as
        {phase: {"wall": s, group: % of one core}}, removed from the tally."""
        out = {}
        with self.lock:
            for k in [k for k in self.acc if k.startswith(prefix)]:
                a = self.acc.pop(k)
                h = self.hot.pop(k, {})
                w = a["wall"] or 1e-9
                row = dict({"wall": round(a["wall"], 2)},
                           **{g: round(100 * a[g] / w, 1) for g in CPU_GROUPS})
                # The busiest single thread: near 100 means one thread is the limit.
                for g in ("server", "worker", "postgres"):
                    row[g + "_hottest_thread"] = round(100 * max(
                        [v for (gg, _), v in h.items() if gg == g] or [0.0]) / w, 1)
                out[k[len(prefix):]] = row
        return out

    def close(self):
        self.stop_ev.set()
        self.thread.join()


class Api:
    """A kept-alive connection for the benchmark's own small queries."""

    def __init__(self, url):
        m = re.match(r"http://127\.0\.0\.1:(\d+)$", url)
        self.port = int(m.group(1))
        self.conn = None

    def get(self, path):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = r.read()
                return r.status, json.loads(body) if body else None
            except (OSError, http.client.HTTPException, ValueError):
                self.close()
                if attempt:
                    raise
        return None, None

    def stats(self):
        st, body = self.get("/api/v1/queue/stats")
        if st != 200:
            raise RuntimeError("queue/stats answered %s: %r" % (st, body))
        return body["counts"]

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.loadgen = os.path.join(self.build, "bench", "loadgen")
        for b in ("jobplane-server", "jobplane-worker"):
            if not os.path.exists(os.path.join(self.build, b)):
                sys.exit("bench: %s not found in %s (build it first: make bench)" % (b, self.build))
        if not os.path.exists(self.loadgen):
            sys.exit("bench: %s not found (build it first: make bench)" % self.loadgen)
        os.environ["JOBPLANE_SERVER_BIN"] = os.path.join(self.build, "jobplane-server")
        os.environ["JOBPLANE_WORKER_BIN"] = os.path.join(self.build, "jobplane-worker")
        os.environ["JOBPLANE_CLI_BIN"] = os.path.join(self.build, "jobplane")
        global harness, services
        import harness  # noqa: E402  (reads the *_BIN variables at import)
        import services  # noqa: E402
        self.workdir = tempfile.mkdtemp(prefix="jp-bench-")
        self.redis = None
        self.pg = None
        self.dbseq = 0
        self.findings = []
        self.cpu = CpuSampler()
        self.other_cpu = []   # % of a core used by processes not of this benchmark, per phase
        self.prefix = ""

    def mark(self, phase):
        """CPU from now on is charged to `phase` of the current run (None: to nothing)."""
        self.cpu.begin(None if phase is None else self.prefix + phase)

    # --- services ---

    def distributed(self, setup):
        return setup != "embedded"

    def ensure_services(self):
        if self.redis is None:
            self.redis = services.Redis(appendonly=True)
            self.redis.dir = self._move(self.redis.dir, "redis")
            self.redis.start()
        if self.pg is None:
            self.pg = services.Postgres()
            self.pg.start()

    def _move(self, d, name):
        # Keep the services' data beside the rest of this run's files.
        nd = os.path.join(self.workdir, "%s-%d" % (name, self.dbseq))
        shutil.move(d, nd)
        return nd

    def close_services(self):
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        if self.pg is not None:
            self.pg.close()
            self.pg = None

    def durability(self):
        jm, sync = sqlite_synchronous()
        out = {"sqlite": {"journal_mode": jm, "synchronous": sync}}
        if self.pg is not None:
            out["postgres"] = {k: self.pg.psql("SHOW %s" % k, db="postgres")
                               for k in ("server_version", "synchronous_commit", "fsync",
                                         "wal_sync_method", "full_page_writes")}
        if self.redis is not None:
            cfg = {}
            for k in ("appendonly", "appendfsync", "maxmemory-policy", "save"):
                v = self.redis.cli("CONFIG", "GET", k).splitlines()
                cfg[k] = v[1] if len(v) > 1 else ""
            out["redis"] = cfg
        return out

    def fresh_database(self, setup, phase_dir):
        """A database URL no run has used."""
        if not self.distributed(setup):
            return None  # the harness puts SQLite in the phase directory
        self.dbseq += 1
        name = "bench_%d" % self.dbseq
        self.pg.psql("CREATE DATABASE %s OWNER jobplane" % name, db="postgres")
        self.redis.cli("FLUSHALL")
        return "postgres://jobplane:jobplane@127.0.0.1:%d/%s" % (self.pg.port, name)

    def counters(self, setup, db):
        """PostgreSQL and Redis activity counters of this database, for the
        work each job costs; None when embedded. PostgreSQL publishes a
        backend's counts within a second of it going idle: hence the wait."""
        if not self.distributed(setup) or not db:
            return None
        time.sleep(1.1)
        name = db.rsplit("/", 1)[1]
        out = {"pg": {}, "redis": {}}
        keys = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
        row = self.pg.psql("SELECT %s FROM pg_stat_database WHERE datname = '%s'"
                           % (", ".join(keys), name), db="postgres")
        vals = row.split("|") if row else ["0"] * len(keys)
        out["pg"].update({k: int(v or 0) for k, v in zip(keys, vals)})
        wkeys = ("wal_records", "wal_bytes", "wal_write", "wal_sync")
        row = self.pg.psql("SELECT %s FROM pg_stat_wal" % ", ".join(wkeys), db="postgres")
        out["pg"].update({k: int(float(v or 0)) for k, v in zip(wkeys, row.split("|"))})
        for line in self.redis.cli("INFO", "commandstats").splitlines():
            m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
            if m:
                out["redis"][m.group(1)] = int(m.group(2))
        return out

    @staticmethod
    def cost(before, after, jobs):
        """The counters' growth between two snapshots, for `jobs` jobs."""
        if before is None or after is None:
            return None
        pg = {k: after["pg"][k] - before["pg"].get(k, 0) for k in after["pg"]}
        redis = {k: v - before["redis"].get(k, 0) for k, v in after["redis"].items()}
        redis = {k: v for k, v in redis.items() if v > 0 and k not in ("info", "flushall")}
        return {"jobs": jobs, "pg": pg, "redis": redis}

    def drop_database(self, url):
        if url:
            name = url.rsplit("/", 1)[1]
            self.pg.psql("DROP DATABASE IF EXISTS %s" % name, db="postgres")

    # --- processes ---

    def server(self, setup, phase_dir, database, execute):
        args = []
        redis = None
        workers = None
        if self.distributed(setup):
            redis = self.redis.url
        else:
            workers = self.args.engine_threads if execute else 0
        s = harness.Server(args=args, workers=workers, tmpdir=phase_dir, database=database,
                           redis=redis)
        return s

    def worker_procs(self, setup, server, phase_dir):
        n = {"pg1": 1, "pg2": 2}.get(setup, 0)
        out = []
        for i in range(n):
            w = harness.Worker(self.redis.url, control_plane=server.url, tmpdir=phase_dir,
                               wid="bench-w%d" % (i + 1),
                               args=["--concurrency", str(self.args.worker_concurrency),
                                     "--report", "api"])
            out.append(w)
        return out

    def stop_server(self, s, peaks):
        if s is None or s.proc is None:
            return
        hwm = proc_status(s.proc.pid, "VmHWM")
        if hwm:
            peaks["server"] = max(peaks.get("server", 0), hwm)
        rc = s.stop(timeout=60)
        if rc not in (0, None):
            self.finding("server exited with status %s (log %s)" % (rc, s.log_path))

    def stop_workers(self, ws, peaks):
        for w in ws:
            if w.proc is None:
                continue
            hwm = proc_status(w.proc.pid, "VmHWM")
            if hwm:
                peaks[w.id] = max(peaks.get(w.id, 0), hwm)
            if not w.alive():
                self.finding("worker %s had exited with status %s before the end (log %s)"
                             % (w.id, w.proc.returncode, w.log_path))
            rc = w.stop(timeout=60)
            if rc not in (0, None):
                self.finding("worker %s exited with status %s (log %s)" % (w.id, rc, w.log_path))

    def finding(self, text):
        log("NOTE: " + text)
        self.findings.append(text)

    def wait_workers_registered(self, api, ws, timeout=15):
        want = {w.id for w in ws}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st, body = api.get("/api/v1/workers")
            if st == 200:
                have = {x.get("id") for x in body.get("workers", [])}
                if want <= have:
                    return True
            for w in ws:
                if not w.alive():
                    raise RuntimeError("worker %s exited at start:\n%s" % (w.id, w.log()))
            time.sleep(0.05)
        self.finding("workers %s not listed by /api/v1/workers within %ds" % (sorted(want), timeout))
        return False

    def loadgen_run(self, mode, url, extra, timeout):
        cmd = [self.loadgen, mode, "--url", url] + [str(a) for a in extra]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError("loadgen failed (%s): %s" % (p.returncode, p.stderr))
        return json.loads(p.stdout)

    # --- phases ---

    def phase_idle(self, setup, rdir, peaks):
        d = os.path.join(rdir, "0-idle")
        os.makedirs(d)
        db = self.fresh_database(setup, d)
        s = self.server(setup, d, db, execute=True).start()
        ws = self.worker_procs(setup, s, d)
        for w in ws:
            w.start()
        api = Api(s.url)
        try:
            if ws:
                self.wait_workers_registered(api, ws)
            self.mark("idle")
            time.sleep(self.args.settle)
            self.mark(None)
            out = {"server": proc_status(s.proc.pid, "VmRSS"),
                   "workers": [proc_status(w.proc.pid, "VmRSS") for w in ws],
                   "server_threads": proc_status(s.proc.pid, "Threads", 1),
                   "worker_threads": [proc_status(w.proc.pid, "Threads", 1) for w in ws],
                   "server_kib": mem_rollup(s.proc.pid),
                   "workers_kib": [mem_rollup(w.proc.pid) for w in ws]}
        finally:
            api.close()
            self.stop_workers(ws, peaks)
            self.stop_server(s, peaks)
            self.drop_database(db)
        return out

    def phase_enqueue(self, setup, rdir, peaks):
        d = os.path.join(rdir, "A-enqueue")
        os.makedirs(d)
        db = self.fresh_database(setup, d)
        s = self.server(setup, d, db, execute=False).start()
        try:
            before = self.counters(setup, db)
            self.mark("enqueue")
            r = self.loadgen_run("enqueue", s.url,
                                 ["--connections", self.args.connections,
                                  "--duration", self.args.enqueue_seconds],
                                 timeout=self.args.enqueue_seconds + 60)
            self.mark(None)
            r["cost"] = self.cost(before, self.counters(setup, db), r["ok"])
        finally:
            self.mark(None)
            self.stop_server(s, peaks)
            self.drop_database(db)
            self.remove_db_files(d)
        return r

    def remove_db_files(self, d):
        for f in os.listdir(d):
            if f.startswith("jobplane.db"):
                os.unlink(os.path.join(d, f))

    def wait_counts(self, api, pred, timeout, interval=0.05):
        deadline = time.monotonic() + timeout
        while True:
            c = api.stats()
            if pred(c) or time.monotonic() > deadline:
                return c
            time.sleep(interval)

    def watch_drain(self, api, last_id, n, t0):
        """Waits, up to the cap, until the database counts all n jobs done;
        returns the last counts and how many times they were asked for.
        Counting is a scan of the jobs table (~14 ms on PostgreSQL with 50,000
        jobs), too heavy to repeat every 50 ms beside what it measures, so
        until the last job enqueued is done a cheap GET of that job is what
        is polled every 50 ms; then the counts confirm (jobs finish in about
        the order they went in, so that is within milliseconds of the end)."""
        polls = 0
        last_done = last_id is None
        while True:
            if time.monotonic() - t0 >= self.args.drain_cap:
                return api.stats(), polls + 1
            if not last_done:
                st, job = api.get("/api/v1/jobs/" + last_id)
                if st == 200 and job.get("status") in ("completed", "failed", "cancelled"):
                    last_done = True
                else:
                    time.sleep(0.05)
                    continue
            c = api.stats()
            polls += 1
            if c["completed"] + c["failed"] >= n:
                return c, polls
            time.sleep(0.05)

    def phase_drain_and_latency(self, setup, rdir, peaks, enqueue_rate):
        """Phases B, C and D, which share one database and one running set-up."""
        d = os.path.join(rdir, "BCD-drain-latency")
        os.makedirs(d)
        n = self.args.drain_jobs
        db = self.fresh_database(setup, d)
        s = self.server(setup, d, db, execute=False).start()
        ws = []
        api = Api(s.url)
        out = {}
        try:
            # B1: the jobs go in through the batch API, nothing running them.
            c0 = self.counters(setup, db)
            self.mark("batch")
            out["batch"] = self.loadgen_run(
                "batch", s.url, ["--connections", self.args.connections, "--batch", 100,
                                 "--total", n, "--duration", 120], timeout=180)
            self.mark(None)
            c1 = self.counters(setup, db)
            out["costs"] = {"batch": self.cost(c0, c1, out["batch"]["jobs_ok"])}
            c = self.wait_counts(api, lambda c: c["queued"] >= n, 30)
            # Newest first: the job the drain reaches last.
            st, body = api.get("/api/v1/jobs?status=queued&limit=1")
            last_id = body["jobs"][0]["id"] if st == 200 and body.get("jobs") else None
            if c["queued"] != n:
                self.finding("%s: after a batch enqueue of %d jobs the database counts %r"
                             % (setup, n, c))
            # B2: execution starts; the clock runs until the database says done.
            if self.distributed(setup):
                self.mark("drain")
                t0 = time.monotonic()
                ws = self.worker_procs(setup, s, d)
                for w in ws:
                    w.start()
            else:
                # The same database, served again with engine threads: the
                # clock includes the restart and the recovery of the queue.
                api.close()
                self.stop_server(s, peaks)
                s = self.server(setup, d, db, execute=True)
                self.mark("drain")
                t0 = time.monotonic()
                s.start()
                api = Api(s.url)
            t_ready = time.monotonic()
            c, polls = self.watch_drain(api, last_id, n, t0)
            t1 = time.monotonic()
            self.mark(None)
            done = c["completed"]
            out["costs"]["drain"] = self.cost(c1, self.counters(setup, db), done)
            capped = c["completed"] + c["failed"] < n
            out["drain"] = {"jobs": n, "completed": done, "failed": c["failed"],
                            "seconds": round(t1 - t0, 4),
                            "startup_seconds": round(t_ready - t0, 4),
                            "per_second": round(done / (t1 - t0), 1), "capped": capped,
                            "counts_at_end": c, "stat_polls": polls}
            if capped:
                self.finding("%s: drain capped at %ds with %d of %d completed (partial rate %.0f/s)"
                             % (setup, self.args.drain_cap, done, n, done / (t1 - t0)))
                c = self.wait_counts(api, lambda c: c["completed"] + c["failed"] >= n, 120, 0.5)
                if c["completed"] + c["failed"] < n:
                    out["skipped"] = "backlog still there after the drain cap + 120 s"
                    return out
            if c["failed"]:
                self.finding("%s: %d noop jobs failed during the drain" % (setup, c["failed"]))
            # C: one job at a time on an otherwise idle set-up.
            self.mark("latency")
            out["latency"] = self.loadgen_run(
                "latency", s.url, ["--count", self.args.latency_jobs,
                                   "--max-seconds", self.args.latency_cap],
                timeout=self.args.latency_cap + 60)
            self.mark(None)
            # D: the same beside a steady load of half the set-up's peak.
            drain_rate = out["drain"]["per_second"]
            if self.args.load_basis == "combined":
                # Taking a job in and running it share one machine: the
                # rate at which both can go on at once.
                peak = 1.0 / (1.0 / max(enqueue_rate, 1.0) + 1.0 / max(drain_rate, 1.0))
            elif self.args.load_basis == "min":
                peak = min(enqueue_rate, drain_rate)
            else:
                peak = enqueue_rate
            out["load_peak"] = round(peak, 1)
            rate = max(1.0, round(peak * self.args.load_fraction))
            out["load_rate"] = rate
            before = api.stats()
            load = subprocess.Popen(
                [self.loadgen, "enqueue", "--url", s.url, "--connections",
                 str(self.args.connections), "--rate", str(rate), "--duration",
                 str(self.args.load_cap + 30)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                time.sleep(self.args.load_warmup)
                self.mark("load")
                out["load_latency"] = self.loadgen_run(
                    "latency", s.url, ["--count", self.args.latency_jobs,
                                       "--max-seconds", self.args.load_cap],
                    timeout=self.args.load_cap + 60)
                backlog = api.stats()
            finally:
                self.mark(None)
                load.send_signal(signal.SIGINT)
                lout, lerr = load.communicate(timeout=60)
            out["load"] = json.loads(lout) if lout.strip() else {"error": lerr}
            out["load_backlog"] = {"queued": backlog["queued"], "running": backlog["running"]}
            out["load_done"] = backlog["completed"] - before["completed"]
            out["final_counts"] = api.stats()
        finally:
            api.close()
            self.stop_workers(ws, peaks)
            self.stop_server(s, peaks)
            self.drop_database(db)
            self.remove_db_files(d)
        return out

    def one_run(self, setup, rep):
        rdir = os.path.join(self.workdir, setup, "run%d" % rep)
        os.makedirs(rdir)
        peaks = {}
        self.prefix = "%s/%d/" % (setup, rep)
        self.cpu.take(self.prefix)
        r = {"idle_rss": self.phase_idle(setup, rdir, peaks)}
        log("%s run %d: idle RSS server %.1f MiB, workers %s" % (
            setup, rep, r["idle_rss"]["server"] / MIB,
            ["%.1f MiB" % (x / MIB) for x in r["idle_rss"]["workers"] if x]))
        r["enqueue"] = self.phase_enqueue(setup, rdir, peaks)
        log("%s run %d: enqueue %.0f jobs/s (%d errors)" % (
            setup, rep, r["enqueue"]["per_second"], r["enqueue"]["errors"]))
        r.update(self.phase_drain_and_latency(setup, rdir, peaks, r["enqueue"]["per_second"]))
        r.setdefault("costs", {})["enqueue"] = r["enqueue"].pop("cost", None)
        r["peak_rss"] = peaks
        r["cpu_percent"] = self.cpu.take(self.prefix)
        self.other_cpu += [v["other"] for k, v in r["cpu_percent"].items() if k != "idle"]
        msg = "%s run %d: batch %.0f jobs/s, drain %.0f jobs/s" % (
            setup, rep, r["batch"]["per_second"], r["drain"]["per_second"])
        if "latency" in r:
            msg += ", e2e p50 %.3f p99 %.3f ms" % (r["latency"]["p50_ms"], r["latency"]["p99_ms"])
        if "load_latency" in r:
            msg += ", under %.0f/s p99 %.3f ms" % (r["load_rate"], r["load_latency"]["p99_ms"])
        log(msg)
        self.check_run(setup, rep, r)
        r["log_problems"] = self.scan_logs(setup, rep, rdir)
        return r

    def scan_logs(self, setup, rep, rdir):
        """Warnings and errors the server and workers logged during the run."""
        found = {}
        for dirpath, _, files in os.walk(rdir):
            for f in files:
                if not f.endswith(".log"):
                    continue
                with open(os.path.join(dirpath, f), errors="replace") as fh:
                    for line in fh:
                        m = re.match(r"^\S+ (WARN|ERROR) (.*)", line)
                        if m:
                            key = "%s: %s" % (f, m.group(1))
                            n, first = found.get(key, (0, m.group(2).strip()))
                            found[key] = (n + 1, first)
        for key, (n, first) in sorted(found.items()):
            self.finding("%s run %d, %s x%d, first: %s" % (setup, rep, key, n, first[:200]))
        return {k: {"count": n, "first": first} for k, (n, first) in found.items()}

    def check_run(self, setup, rep, r):
        """Records what looks wrong in the product, with the evidence."""
        for key in ("enqueue", "batch", "load"):
            x = r.get(key) or {}
            if x.get("errors") or x.get("conn_errors"):
                self.finding("%s run %d, %s: %s errors, %s broken connections; first: %s" % (
                    setup, rep, key, x.get("errors"), x.get("conn_errors"), x.get("first_error")))
        for key in ("latency", "load_latency"):
            x = r.get(key) or {}
            if x.get("errors"):
                self.finding("%s run %d, %s: %s errors; first: %s" % (
                    setup, rep, key, x["errors"], x.get("first_error")))
            if x and x.get("count", 0) < x.get("asked", 0):
                self.finding("%s run %d, %s: only %d of %d jobs measured in %.0fs" % (
                    setup, rep, key, x["count"], x["asked"], x["seconds"]))
            if x and x.get("max_ms", 0) > max(100, 5 * x.get("p99_ms", 0)):
                self.finding("%s run %d, %s: an outlier of %.1f ms (p99 %.2f ms)" % (
                    setup, rep, key, x["max_ms"], x["p99_ms"]))
        load = r.get("load") or {}
        if load.get("max_behind", 0) > self.args.connections * 4:
            self.finding("%s run %d: the steady load fell behind by up to %d requests "
                         "(all %d connections busy)" % (setup, rep, load["max_behind"],
                                                        self.args.connections))
        backlog = r.get("load_backlog") or {}
        if backlog.get("queued", 0) > max(1000, r.get("load_rate", 0)):
            self.finding("%s run %d: %d jobs queued at the end of the load: the set-up did "
                         "not keep up with %.0f jobs/s" % (setup, rep, backlog["queued"],
                                                           r.get("load_rate", 0)))

    # --- summary ---

    @staticmethod
    def figures(r):
        """The table's figures of one run."""
        f = {
            "enqueue_per_s": r["enqueue"]["per_second"],
            "batch_per_s": r["batch"]["per_second"],
            "drain_per_s": r["drain"]["per_second"],
            "rss_idle_server_mib": r["idle_rss"]["server"] / MIB,
        }
        wr = [x for x in r["idle_rss"]["workers"] if x]
        if wr:
            f["rss_idle_worker_mib"] = max(wr) / MIB
        if "latency" in r and r["latency"]["count"]:
            f["e2e_p50_ms"] = r["latency"]["p50_ms"]
            f["e2e_p99_ms"] = r["latency"]["p99_ms"]
            f["e2e_max_ms"] = r["latency"]["max_ms"]
        if "load_latency" in r and r["load_latency"]["count"]:
            f["load_rate_per_s"] = r["load"].get("per_second", r["load_rate"])
            f["load_p50_ms"] = r["load_latency"]["p50_ms"]
            f["load_p99_ms"] = r["load_latency"]["p99_ms"]
            f["load_max_ms"] = r["load_latency"]["max_ms"]
        peaks = r["peak_rss"]
        if "server" in peaks:
            f["rss_peak_server_mib"] = peaks["server"] / MIB
        wp = [v for k, v in peaks.items() if k != "server"]
        if wp:
            f["rss_peak_worker_mib"] = max(wp) / MIB
        errs = 0
        for key in ("enqueue", "batch", "load", "latency", "load_latency"):
            errs += (r.get(key) or {}).get("errors", 0) or 0
        errs += r["drain"]["failed"]
        f["errors"] = errs
        return f

    @staticmethod
    def summarize(runs):
        per = {}
        for r in runs:
            for k, v in Bench.figures(r).items():
                per.setdefault(k, []).append(v)
        out = {}
        for k, vs in per.items():
            out[k] = {"median": statistics.median(vs), "min": min(vs), "max": max(vs),
                      "values": vs}
        if "errors" in out:
            out["errors"]["total"] = sum(out["errors"]["values"])
        return out


def fmt_num(v, dec):
    if dec == 0:
        return "{:,.0f}".format(v)
    return "{:.{}f}".format(v, dec)


def fmt_cell(s, dec, metric):
    if s is None:
        return "-"
    if metric == "errors":
        return "%d" % s["total"]
    if s["min"] == s["max"] or len(s["values"]) == 1:
        return fmt_num(s["median"], dec)
    return "%s [%s-%s]" % (fmt_num(s["median"], dec), fmt_num(s["min"], dec),
                           fmt_num(s["max"], dec))


def target_text(metric):
    parts = []
    for m, setups, op, val in TARGETS:
        if m == metric:
            who = "" if setups == SETUPS else (
                "emb " if setups == ("embedded",) else "+".join(setups) + " ")
            parts.append("%s%s %s" % (who, op, fmt_num(val, 0 if val >= 10 else 1)))
    return ", ".join(parts)


def check_targets(summary):
    missed, met = [], []
    for metric, setups, op, val in TARGETS:
        for s in setups:
            fig = summary.get(s, {}).get(metric)
            if fig is None:
                continue
            v = fig["median"]
            ok = v >= val if op == ">=" else v <= val
            (met if ok else missed).append("%s %s: %s (target %s %s)" % (
                s, metric, fmt_num(v, 3 if v < 10 else 0), op, val))
    return met, missed


def render_table(setups, summary):
    label_w = max(len(r[1]) for r in ROWS)
    cells = [[fmt_cell(summary[s].get(m), dec, m) for s in setups] for m, _, dec in ROWS]
    col_w = [max([len(SETUP_TITLES[s])] + [len(c[i]) for c in cells]) for i, s in enumerate(setups)]
    tgt = [target_text(m) for m, _, _ in ROWS]
    tgt_w = max(len("target"), max(len(t) for t in tgt))
    lines = []
    head = "| " + "figure".ljust(label_w) + " | " + " | ".join(
        SETUP_TITLES[s].ljust(col_w[i]) for i, s in enumerate(setups)) + " | " + \
        "target".ljust(tgt_w) + " |"
    lines.append(head)
    lines.append("|" + "-" * (label_w + 2) + "|" + "|".join(
        "-" * (w + 2) for w in col_w) + "|" + "-" * (tgt_w + 2) + "|")
    for (m, label, dec), row, t in zip(ROWS, cells, tgt):
        lines.append("| " + label.ljust(label_w) + " | " + " | ".join(
            c.rjust(col_w[i]) for i, c in enumerate(row)) + " | " + t.ljust(tgt_w) + " |")
    return "\n".join(lines)


CPU_PHASES = ("enqueue", "batch", "drain", "latency", "load")


def median_run(runs):
    """The run whose drain rate is the median, to show one coherent CPU split."""
    order = sorted(runs, key=lambda r: r["drain"]["per_second"])
    return order[(len(order) - 1) // 2]


def render_rows(head, rows, left=2):
    """A Markdown table; the first `left` columns flush left, the rest right."""
    w = [max(len(head[i]), max((len(r[i]) for r in rows), default=0)) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w[i]) if i < left else c.rjust(w[i])
                                 for i, c in enumerate(cells)) + " |"
    return "\n".join([line(head), "|" + "|".join("-" * (x + 2) for x in w) + "|"] +
                     [line(r) for r in rows])


def render_cpu(setups, results):
    head = ["set-up", "phase", "wall s"] + list(CPU_GROUPS) + [
        "server 1 thread", "worker 1 thread", "PG 1 backend"]
    rows = []
    for s in setups:
        cpu = median_run(results[s]).get("cpu_percent", {})
        for ph in CPU_PHASES:
            if ph in cpu:
                c = cpu[ph]
                rows.append([s, ph, "%.1f" % c["wall"]] + ["%.0f" % c[g] for g in CPU_GROUPS] +
                            ["%.0f" % c.get("server_hottest_thread", 0),
                             "%.0f" % c.get("worker_hottest_thread", 0),
                             "%.0f" % c.get("postgres_hottest_thread", 0)])
    return render_rows(head, rows)


def render_costs(setups, results):
    """Database and Redis work per job, phase by phase (distributed set-ups)."""
    head = ["set-up", "phase", "jobs", "PG commits/job", "WAL fsyncs/job", "rows written/job",
            "WAL KiB/job", "Redis calls/job", "Redis calls, most frequent (per job)"]
    rows = []
    for s in setups:
        costs = median_run(results[s]).get("costs", {})
        for ph in ("enqueue", "batch", "drain"):
            c = costs.get(ph)
            if not c or not c.get("jobs"):
                continue
            n = c["jobs"]
            top = sorted(c["redis"].items(), key=lambda kv: -kv[1])[:4]
            rows.append([s, ph, "%d" % n, "%.2f" % (c["pg"]["xact_commit"] / n),
                         "%.3f" % (c["pg"]["wal_sync"] / n),
                         "%.2f" % ((c["pg"]["tup_inserted"] + c["pg"]["tup_updated"] +
                                    c["pg"]["tup_deleted"]) / n),
                         "%.2f" % (c["pg"]["wal_bytes"] / 1024 / n),
                         "%.2f" % (sum(c["redis"].values()) / n),
                         ", ".join("%s %.2f" % (k, v / n) for k, v in top)])
    return render_rows(head, rows) if rows else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"),
                    help="build directory with jobplane-server, jobplane-worker, bench/loadgen")
    ap.add_argument("--setups", default=",".join(SETUPS),
                    help="comma-separated, of: " + ", ".join(SETUPS))
    ap.add_argument("--quick", action="store_true",
                    help="one run with smaller counts, for development")
    ap.add_argument("--runs", type=int, help="runs per set-up (default 3; --quick: 1)")
    ap.add_argument("--connections", type=int, default=16,
                    help="keep-alive connections of the enqueue, batch and load phases")
    ap.add_argument("--enqueue-seconds", type=float,
                    help="length of the enqueue phase (default 5; --quick: 2)")
    ap.add_argument("--drain-jobs", type=int,
                    help="jobs batch-enqueued, then drained (default 50000; --quick: 10000)")
    ap.add_argument("--drain-cap", type=float, default=120.0,
                    help="seconds a drain may take before its partial rate is reported")
    ap.add_argument("--latency-jobs", type=int,
                    help="sequential jobs of the end-to-end phases (default 2000; --quick: 300)")
    ap.add_argument("--latency-cap", type=float, default=30.0,
                    help="seconds a latency measurement may take")
    ap.add_argument("--engine-threads", type=int, default=8,
                    help="embedded: --workers of the server (its default is 8)")
    ap.add_argument("--worker-concurrency", type=int, default=64,
                    help="distributed: --concurrency of each jobplane-worker")
    ap.add_argument("--load-warmup", type=float, default=1.0,
                    help="seconds the steady load runs before latency is measured beside it")
    ap.add_argument("--load-basis", choices=("combined", "min", "enqueue"), default="combined",
                    help="the peak the steady load is a fraction of: combined = "
                         "1/(1/enqueue + 1/drain), the rate at which jobs can be both taken "
                         "in and run (default); min = min(enqueue, drain); enqueue")
    ap.add_argument("--load-fraction", type=float, default=0.5,
                    help="the steady load as a fraction of the peak")
    ap.add_argument("--load-cap", type=float, default=40.0,
                    help="seconds the latency measurement under load may take")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds after start before idle RSS is read")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"),
                    help="where latest.json and the dated copy go")
    ap.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    args = ap.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.enqueue_seconds is None:
        args.enqueue_seconds = 2.0 if args.quick else 5.0
    if args.drain_jobs is None:
        args.drain_jobs = 10000 if args.quick else 50000
    if args.latency_jobs is None:
        args.latency_jobs = 300 if args.quick else 2000
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    for s in setups:
        if s not in SETUPS:
            sys.exit("bench: unknown set-up %r (choose from %s)" % (s, ", ".join(SETUPS)))

    command = " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv)
    started = time.time()
    b = Bench(args)
    machine = machine_info(b.workdir)
    log("work directory %s; machine %s x%d, load average %s" % (
        b.workdir, machine["cpu"], machine["nproc"], " ".join(machine["loadavg_before"])))
    results = {}
    durability = None
    ok = False
    try:
        durability = b.durability()
        for s in setups:
            # Each distributed set-up gets a PostgreSQL and a Redis of its
            # own, so one does not inherit the other's WAL and checkpoints.
            if b.distributed(s):
                b.ensure_services()
                if "postgres" not in durability:
                    durability = b.durability()
            runs = []
            for rep in range(1, args.runs + 1):
                runs.append(b.one_run(s, rep))
            results[s] = runs
            b.close_services()
        ok = True
    finally:
        b.cpu.close()
        b.close_services()
        if ok and not args.keep:
            shutil.rmtree(b.workdir, ignore_errors=True)
        elif not ok:
            log("kept %s for its logs" % b.workdir)
    machine["loadavg_after"] = read_first("/proc/loadavg").split()[:3]

    summary = {s: Bench.summarize(results[s]) for s in setups}
    met, missed = check_targets(summary)
    table = render_table(setups, summary)
    setup_desc = {
        "embedded": "jobplane-server --database sqlite://DIR/jobplane.db --workers %d "
                    "(drain: enqueued with --workers 0, then restarted with %d engine threads)"
                    % (args.engine_threads, args.engine_threads),
        "pg1": "jobplane-server --database postgres://… --redis redis://…; 1 x jobplane-worker "
               "--concurrency %d --report api" % args.worker_concurrency,
        "pg2": "the same with 2 x jobplane-worker --concurrency %d --report api"
               % args.worker_concurrency,
    }
    dur_lines = []
    d = durability or {}
    if "sqlite" in d and "embedded" in setups:
        dur_lines.append("SQLite: journal_mode=%s, synchronous=%s" % (
            d["sqlite"]["journal_mode"], d["sqlite"]["synchronous"]))
    if "postgres" in d:
        p = d["postgres"]
        dur_lines.append("PostgreSQL %s: synchronous_commit=%s, fsync=%s, wal_sync_method=%s, "
                         "full_page_writes=%s" % (p["server_version"], p["synchronous_commit"],
                                                  p["fsync"], p["wal_sync_method"],
                                                  p["full_page_writes"]))
    if "redis" in d:
        r = d["redis"]
        dur_lines.append("Redis (%s): appendonly=%s, appendfsync=%s, maxmemory-policy=%s" % (
            machine["redis"].split(" ")[2] if machine["redis"] else "?", r["appendonly"],
            r["appendfsync"], r["maxmemory-policy"]))
    elapsed = time.time() - started

    text = []
    text.append("jobplane benchmark, %s, commit %s, %d run(s) per set-up%s" % (
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        git_describe(), args.runs, " (--quick)" if args.quick else ""))
    text.append("each figure: median [min-max] of the runs")
    text.append("")
    text.append(table)
    text.append("")
    text.append("where the CPU went, in % of one core (the run with the median drain; "
                "\"other\" is every process not of this benchmark; the last three columns: "
                "the busiest single thread of the server, of a worker, and the busiest "
                "PostgreSQL backend):")
    text.append("")
    text.append(render_cpu(setups, results))
    costs = render_costs(setups, results)
    if costs:
        text.append("")
        text.append("work per job (the same runs; PostgreSQL counters of the job database, "
                    "Redis commandstats):")
        text.append("")
        text.append(costs)
    text.append("")
    text.append("set-ups:")
    for s in setups:
        text.append("  %-9s %s" % (s, setup_desc[s]))
    basis = {"combined": "1/(1/enqueue + 1/drain)", "min": "min(enqueue, drain)",
             "enqueue": "the enqueue rate"}[args.load_basis]
    text.append("workload: noop jobs; enqueue from %d keep-alive connections for %gs; batch "
                "enqueue and drain of %d jobs (batches of 100); end to end: %d sequential jobs, "
                "each waited for by GET ?wait_ms= (long-poll; back-to-back polls on a server "
                "without it); under load: the same beside a steady %.0f%% of the "
                "set-up's peak, %s of the same run" % (
                    args.connections, args.enqueue_seconds, args.drain_jobs, args.latency_jobs,
                    args.load_fraction * 100, basis))
    text.append("durability: " + ("; ".join(dur_lines) if dur_lines else "-"))
    oc = b.other_cpu or [0.0]
    machine["other_cpu_percent"] = {"median": statistics.median(oc), "max": max(oc)}
    text.append("machine: %s, %d CPU(s), %.1f GiB, %s, kernel %s; data on %s; "
                "4 KiB write+fdatasync %.2f ms mean; load average before %s, after %s; "
                "processes not of this benchmark used %.0f%% of a core (median over phases, "
                "max %.0f%%)" % (
                    machine["cpu"], machine["nproc"], machine["memory_gib"] or 0, machine["os"],
                    machine["kernel"], " ".join(machine["data_fs"].split()),
                    machine["fsync_4k"]["mean_ms"], " ".join(machine["loadavg_before"]),
                    " ".join(machine["loadavg_after"]), machine["other_cpu_percent"]["median"],
                    machine["other_cpu_percent"]["max"]))
    text.append("command: %s   (%.0f s)" % (command, elapsed))
    if missed:
        text.append("")
        text.append("targets missed (median):")
        text.extend("  " + m for m in missed)
    if b.findings:
        text.append("")
        text.append("notes:")
        text.extend("  " + f for f in b.findings)
    print("\n".join(text), flush=True)

    doc = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_describe(),
        "command": command,
        "elapsed_seconds": round(elapsed, 1),
        "config": {k: v for k, v in vars(args).items()},
        "machine": machine,
        "durability": durability,
        "setups": {s: {"description": setup_desc[s], "summary": summary[s], "runs": results[s]}
                   for s in setups},
        "targets": {"met": met, "missed": missed},
        "notes": b.findings,
        "table": table,
        "text": "\n".join(text),
    }
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    for name in ("latest.json", "run-%s.json" % stamp):
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(doc, f, indent=1, sort_keys=False)
            f.write("\n")
    log("wrote %s" % os.path.join(args.out, "latest.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
