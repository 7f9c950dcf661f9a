"""Deployment files against the binaries: the compose file validates and sets
only variables the binaries accept, the Dockerfiles build with the release
script (run here for real) and copy what it produces, their runtime stages
install what the binaries link, and the systemd units parse. No Docker engine
is needed: docker-compose validates a file on its own."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import services  # noqa: E402

ROOT = harness.ROOT
DEPLOY = os.path.join(ROOT, "deploy")
COMPOSE = os.path.join(DEPLOY, "docker-compose.yml")
STACK = os.path.join(ROOT, "scripts", "stack.sh")
RELEASE = os.path.join(ROOT, "scripts", "build-release.sh")
HEALTHCHECK = os.path.join(DEPLOY, "healthcheck.sh")
SYSTEMD = os.path.join(DEPLOY, "systemd")

BINS = {"server": harness.SERVER_BIN, "worker": harness.WORKER_BIN, "cli": harness.CLI_BIN}
TARGETS = {"server": "jobplane-server", "worker": "jobplane-worker", "cli": "jobplane"}
VAR_RE = re.compile(r"JOBPLANE_[A-Z0-9_]+")


def need(program):
    """The program's path; skips the test when it is missing (fails under CI=true)."""
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("%s is not installed, and CI requires it" % program)
        raise unittest.SkipTest("%s is not installed" % program)
    return path


_help = {}


def help_vars(role):
    """The JOBPLANE_* variables a binary's --help lists."""
    if role not in _help:
        out = subprocess.run([BINS[role], "--help"], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise AssertionError("%s --help exited %d: %s" % (BINS[role], out.returncode, out.stderr))
        found = set(re.findall(r"\((JOBPLANE_[A-Z0-9_]+)[,)]", out.stdout))
        if len(found) < 2:
            raise AssertionError("no variables found in %s --help:\n%s" % (BINS[role], out.stdout))
        _help[role] = found
    return _help[role]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- a reader for docker-compose's normalized `config` output ----------------

def _scalar(text):
    text = text.strip()
    if text in ("{}",):
        return {}
    if text in ("[]",):
        return []
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else bytes(inner, "utf-8").decode(
            "unicode_escape")
    if text == "true":
        return True
    if text == "false":
        return False
    if text in ("null", "~"):
        return None
    return text


def _split_key(text):
    """'key: value' → (key, value or None); None when text is no mapping entry."""
    m = re.match(r"^([^\s:'\"][^:]*|'[^']*'|\"[^\"]*\"):(?:\s+(.*))?$", text)
    if not m:
        return None
    return _scalar(m.group(1)), m.group(2)


def parse_block_yaml(text):
    """Block-style YAML as docker-compose prints it (mappings, sequences, plain
    and quoted scalars, {} and []); enough for its normalized output."""
    lines = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        lines.append((len(raw) - len(raw.lstrip(" ")), raw.strip()))
    pos = [0]

    def node(indent):
        if pos[0] >= len(lines):
            return None
        ind, txt = lines[pos[0]]
        if txt.startswith("- ") or txt == "-":
            return seq(ind)
        return mapping(ind)

    def seq(indent):
        out = []
        while pos[0] < len(lines):
            ind, txt = lines[pos[0]]
            if ind != indent or not (txt.startswith("- ") or txt == "-"):
                break
            item = txt[2:].strip() if txt != "-" else ""
            kv = _split_key(item) if item else None
            if kv is not None:
                # a mapping item: its first key sits after the dash
                lines[pos[0]] = (indent + 2, item)
                out.append(mapping(indent + 2))
            else:
                pos[0] += 1
                out.append(_scalar(item))
        return out

    def mapping(indent):
        out = {}
        while pos[0] < len(lines):
            ind, txt = lines[pos[0]]
            if ind != indent or txt.startswith("- "):
                break
            kv = _split_key(txt)
            if kv is None:
                raise ValueError("cannot read line: %r" % txt)
            key, val = kv
            pos[0] += 1
            if val is not None and val != "":
                out[key] = _scalar(val)
                continue
            if pos[0] < len(lines):
                nind, ntxt = lines[pos[0]]
                if nind > indent or (nind == indent and ntxt.startswith("- ")):
                    out[key] = node(nind)
                    continue
            out[key] = None
        return out

    return node(0)


_compose = {}


def compose_config():
    """The compose file as docker-compose resolves it (variables substituted)."""
    if "cfg" not in _compose:
        dc = need("docker-compose")
        out = subprocess.run([dc, "-f", COMPOSE, "config"], capture_output=True, text=True,
                             timeout=60, env=compose_env())
        if out.returncode != 0:
            raise AssertionError("docker-compose config failed:\n" + out.stderr)
        _compose["cfg"] = parse_block_yaml(out.stdout)
    return _compose["cfg"]


def compose_env():
    """The environment without any of the compose file's own knobs, so the
    defaults written in it are what gets checked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JP_")}
    env.pop("COMPOSE_FILE", None)
    return env


def seconds(text):
    m = re.fullmatch(r"(\d+)s", str(text))
    if not m:
        raise AssertionError("not a duration in seconds: %r" % (text,))
    return int(m.group(1))


def assert_accepted(test, role, names, where):
    unknown = sorted(set(names) - help_vars(role))
    test.assertFalse(unknown, "%s sets %s, which jobplane-%s --help does not list"
                     % (where, ", ".join(unknown), role))


class TestParser(unittest.TestCase):
    def test_reads_compose_style_yaml(self):
        doc = parse_block_yaml(
            "services:\n  a:\n    command:\n    - redis-server\n    - \"yes\"\n"
            "    environment:\n      X: '30'\n    ports:\n    - published: 8080\n"
            "      target: 8080\n    init: true\nvolumes:\n  v: {}\n")
        self.assertEqual(doc["services"]["a"]["command"], ["redis-server", "yes"])
        self.assertEqual(doc["services"]["a"]["environment"], {"X": "30"})
        self.assertEqual(doc["services"]["a"]["ports"], [{"published": "8080", "target": "8080"}])
        self.assertIs(doc["services"]["a"]["init"], True)
        self.assertEqual(doc["volumes"], {"v": {}})


class TestCompose(unittest.TestCase):
    def test_config_validates(self):
        dc = need("docker-compose")
        out = subprocess.run([dc, "-f", COMPOSE, "config", "-q"], capture_output=True,
                             text=True, timeout=60, env=compose_env())
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_services(self):
        services_ = compose_config()["services"]
        self.assertEqual(set(services_), {"redis", "postgres", "server", "worker"})

    def test_variables_are_ones_the_binaries_accept(self):
        services_ = compose_config()["services"]
        for name, role in (("server", "server"), ("worker", "worker")):
            env = services_[name].get("environment") or {}
            names = [k for k in env if k.startswith("JOBPLANE_")]
            self.assertGreaterEqual(len(names), 4, "%s has hardly any JOBPLANE_* settings" % name)
            assert_accepted(self, role, names, "compose service %s" % name)
        # Only the two jobplane services get jobplane settings.
        for name in ("redis", "postgres"):
            env = services_[name].get("environment") or {}
            self.assertFalse([k for k in env if k.startswith("JOBPLANE_")], name)

    def test_redis_persists_and_never_evicts(self):
        cmd = compose_config()["services"]["redis"]["command"]
        self.assertIn("--appendonly", cmd)
        self.assertEqual(cmd[cmd.index("--appendonly") + 1], "yes")
        self.assertIn("--maxmemory-policy", cmd)
        self.assertEqual(cmd[cmd.index("--maxmemory-policy") + 1], "noeviction")
        self.assertTrue(compose_config()["services"]["redis"].get("volumes"), "no data volume")

    def test_start_order_is_health_gated(self):
        s = compose_config()["services"]
        for svc in ("redis", "postgres", "server"):
            self.assertIn("test", s[svc].get("healthcheck") or {}, "%s has no healthcheck" % svc)
        for svc, deps in (("server", {"redis", "postgres"}), ("worker", {"redis", "server"})):
            dep = s[svc].get("depends_on") or {}
            self.assertEqual(set(dep), deps, svc)
            for d in deps:
                self.assertEqual(dep[d].get("condition"), "service_healthy", "%s → %s" % (svc, d))

    def test_server_reachable_with_tokens(self):
        s = compose_config()["services"]["server"]
        env = s["environment"]
        # Without tokens the server binds loopback only, out of the workers' reach.
        self.assertTrue(env["JOBPLANE_LISTEN"].startswith("0.0.0.0:"), env["JOBPLANE_LISTEN"])
        tokens_path = env["JOBPLANE_TOKENS_FILE"]
        mounts = [v for v in s.get("volumes") or [] if str(v).split(":")[1:2] == [tokens_path]]
        self.assertEqual(len(mounts), 1, "the tokens file %s is not mounted: %r"
                         % (tokens_path, s.get("volumes")))
        self.assertTrue(mounts[0].endswith(":ro"), "tokens mounted writable: " + mounts[0])
        host = mounts[0].split(":")[0]
        roles = {}
        for line in read(host).splitlines():
            line = line.split("#")[0].split()
            if line:
                self.assertEqual(len(line), 2, line)
                roles.setdefault(line[0], []).append(line[1])
                self.assertTrue(16 <= len(line[1]) <= 256, line)
        self.assertIn(compose_config()["services"]["worker"]["environment"]["JOBPLANE_TOKEN"],
                      roles.get("worker", []), "the workers' token is no worker token of " + host)
        port = env["JOBPLANE_LISTEN"].rsplit(":", 1)[1]
        self.assertIn(port, [str(p.get("target")) for p in s.get("ports") or []])

    def test_workers_scale(self):
        w = compose_config()["services"]["worker"]
        # A fixed name, host port or worker id would make a second replica clash.
        self.assertNotIn("container_name", w)
        self.assertNotIn("ports", w)
        self.assertNotIn("JOBPLANE_WORKER_ID", w["environment"])
        self.assertEqual(w["environment"]["JOBPLANE_CONTROL_PLANE_URL"], "http://server:8080")

    def test_init_and_grace(self):
        s = compose_config()["services"]
        for svc in ("server", "worker"):
            self.assertIs(s[svc].get("init"), True, "%s runs without an init" % svc)
            drain = int(s[svc]["environment"].get("JOBPLANE_DRAIN_TIMEOUT", "30"))
            self.assertGreater(seconds(s[svc].get("stop_grace_period", "10s")), drain,
                               "%s is killed before it drains" % svc)

    def test_images_built_from_the_dockerfiles(self):
        s = compose_config()["services"]
        for svc in ("server", "worker"):
            b = s[svc]["build"]
            self.assertEqual(os.path.realpath(b["context"]), os.path.realpath(ROOT))
            self.assertEqual(b["dockerfile"], "deploy/Dockerfile." + svc)
            self.assertTrue(os.path.exists(os.path.join(ROOT, b["dockerfile"])))


# --- Dockerfiles ---------------------------------------------------------------

def dockerfile_stages(path):
    """[(stage name, base image, [(instruction, arguments)])], continuation lines joined."""
    text = re.sub(r"\\\n", " ", read(path))
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        args = re.sub(r"\s+", " ", args).strip()
        if instr == "FROM":
            m = re.match(r"(\S+)(?: AS (\S+))?$", args, re.I)
            stages.append((m.group(2), m.group(1), []))
        else:
            stages[-1][2].append((instr, args))
    return stages


def apt_packages(run_args):
    m = re.search(r"apt-get install ([^&;|]*)", run_args)
    return [w for w in (m.group(1).split() if m else []) if not w.startswith("-")]


def package_known(name):
    st = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
    if "install ok installed" in st.stdout:
        return True
    return subprocess.run(["apt-cache", "show", "--no-all-versions", name],
                          capture_output=True).returncode == 0


def needed_packages(binary):
    """Debian packages holding the shared libraries a binary links directly."""
    dyn = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True,
                         check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    where = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    pkgs = set()
    for lib in needed:
        path = where.get(lib)
        if not path:
            raise AssertionError("%s: %s not found by ldd" % (binary, lib))
        for cand in (path, os.path.realpath(path), "/usr" + path):
            out = subprocess.run(["dpkg", "-S", cand], capture_output=True, text=True)
            if out.returncode == 0:
                pkgs.add(out.stdout.split(":")[0].strip())
                break
        else:
            raise AssertionError("no Debian package holds %s (%s)" % (lib, path))
    return pkgs


def meson_dependencies():
    """pkg-config names of the required dependency() calls of meson.build."""
    text = read(os.path.join(ROOT, "meson.build"))
    return [m.group(1) for m in re.finditer(r"dependency\('([^']+)'\)", text)
            if m.group(1) != "threads"]


class TestDockerfiles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="jp-release-")
        cls.built = {}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def release(self, what):
        """Runs scripts/build-release.sh for real; returns its build directory."""
        if what not in self.built:
            d = os.path.join(self.tmp, what)
            out = subprocess.run([RELEASE, what, d], capture_output=True, text=True, timeout=600,
                                 cwd=self.tmp)
            self.assertEqual(out.returncode, 0, "build-release.sh %s failed:\n%s%s"
                             % (what, out.stdout[-3000:], out.stderr[-3000:]))
            self.built[what] = d
        return self.built[what]

    def check_dockerfile(self, role):
        path = os.path.join(DEPLOY, "Dockerfile." + role)
        stages = dockerfile_stages(path)
        self.assertEqual(len(stages), 2, "a builder and a runtime stage")
        (bname, bbase, bsteps), (_, rbase, rsteps) = stages
        self.assertEqual(bbase, "debian:12")
        self.assertEqual(rbase, "debian:12-slim")
        # The builder compiles with the release script, as `make release` and this test do.
        runs = [a for i, a in bsteps if i == "RUN" and "build-release.sh" in a]
        self.assertEqual(len(runs), 1, "one build-release.sh step in %s" % path)
        m = re.search(r"\./scripts/build-release\.sh (\w+) (\S+)", runs[0])
        self.assertIsNotNone(m, runs[0])
        self.assertEqual(m.group(1), role)
        outdir = m.group(2)
        # Everything copied from the builder is a binary the script produced.
        copies = [a for i, a in rsteps if i == "COPY" and a.startswith("--from=")]
        self.assertTrue(copies, "nothing copied from the builder")
        built_dir = self.release(role)
        for c in copies:
            frm, src, _dst = c.split()
            self.assertEqual(frm, "--from=" + bname)
            self.assertEqual(os.path.dirname(src), outdir, c)
            self.assertEqual(os.path.basename(src), TARGETS[role], c)
            binary = os.path.join(built_dir, os.path.basename(src))
            self.assertTrue(os.access(binary, os.X_OK), "%s was not built" % binary)
        # Other COPYs take files of the repository.
        for c in (a for i, a in rsteps if i == "COPY" and not a.startswith("--from=")):
            src = c.split()[0]
            self.assertTrue(os.path.isfile(os.path.join(ROOT, src)), c)
        # The runtime stage installs every library the binary links, and the
        # builder every -dev package meson.build needs; all names exist in Debian 12.
        rpkgs = [p for i, a in rsteps if i == "RUN" for p in apt_packages(a)]
        bpkgs = [p for i, a in bsteps if i == "RUN" for p in apt_packages(a)]
        missing = needed_packages(os.path.join(built_dir, TARGETS[role])) - set(rpkgs) - {"libc6"}
        self.assertFalse(missing, "%s's runtime stage lacks %s" % (path, sorted(missing)))
        for dep in meson_dependencies():
            pc = subprocess.run(["pkg-config", "--path", dep], capture_output=True, text=True)
            self.assertEqual(pc.returncode, 0, "pkg-config knows no %s" % dep)
            owner = subprocess.run(["dpkg", "-S", pc.stdout.strip()], capture_output=True,
                                   text=True).stdout.split(":")[0]
            self.assertIn(owner, bpkgs, "%s's builder lacks %s (for %s)" % (path, owner, dep))
        for p in rpkgs + bpkgs:
            self.assertTrue(package_known(p), "%s: no Debian package %s" % (path, p))
        # Not root at run time; JOBPLANE_* defaults the binary accepts.
        users = [a for i, a in rsteps if i == "USER"]
        self.assertTrue(users and users[-1] not in ("root", "0"), "%s runs as root" % path)
        self.assertIn("ENTRYPOINT", [i for i, _ in rsteps])
        env_names = [n for i, a in rsteps if i == "ENV" for n in VAR_RE.findall(a)]
        assert_accepted(self, role, env_names, path)
        return rsteps

    def test_server_dockerfile(self):
        steps = self.check_dockerfile("server")
        hc = [a for i, a in steps if i == "HEALTHCHECK"]
        self.assertEqual(len(hc), 1, "one HEALTHCHECK")
        self.assertIn("/usr/local/bin/jobplane-healthcheck", hc[0])
        self.assertIn("deploy/healthcheck.sh /usr/local/bin/jobplane-healthcheck",
                      [a for i, a in steps if i == "COPY"])
        self.assertIn("EXPOSE", [i for i, _ in steps])

    def test_worker_dockerfile(self):
        self.check_dockerfile("worker")

    def test_release_server_has_no_engine(self):
        binary = os.path.join(self.release("server"), "jobplane-server")
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        self.assertIn("JOBPLANE_REDIS_URL", out.stdout)
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([binary, "--database", "sqlite://" + os.path.join(d, "x.db")],
                                 capture_output=True, text=True, timeout=30, cwd=d,
                                 env=harness._clean_env({}))
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("no execution engine", out.stderr)
        self.assertIn("--redis", out.stderr)
        # No engine code in it at all (the worker's build has these symbols).
        syms = subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout
        self.assertNotRegex(syms, r" T jp_engine_", "the engine is linked into the server")
        worker_syms = subprocess.run(["nm", os.path.join(self.release("worker"), "jobplane-worker")],
                                     capture_output=True, text=True, check=True).stdout
        self.assertRegex(worker_syms, r" T jp_engine_")

    def test_release_pair_runs_jobs_and_passes_healthcheck(self):
        """The two image binaries as compose runs them: the engine-less server in
        distributed mode with tokens, a worker reporting to it, and the image's
        health check against it."""
        server_bin = os.path.join(self.release("server"), "jobplane-server")
        worker_bin = os.path.join(self.release("worker"), "jobplane-worker")
        try:
            redis = services.Redis(appendonly=True)
        except services.Unavailable as e:
            self.skipTest("%s is not installed" % e)
        with redis, tempfile.TemporaryDirectory() as d:
            tokens = os.path.join(d, "tokens")
            with open(tokens, "w") as f:
                f.write("client client-token-0123456789\nworker worker-token-0123456789\n")
            saved = harness.SERVER_BIN
            harness.SERVER_BIN = server_bin
            try:
                server = harness.Server(redis=redis.url, tmpdir=d, token="client-token-0123456789",
                                        env={"JOBPLANE_TOKENS_FILE": tokens})
                server.start()
            finally:
                harness.SERVER_BIN = saved
            try:
                hc = subprocess.run([HEALTHCHECK, "127.0.0.1:%d" % server.port],
                                    capture_output=True, text=True, timeout=15)
                self.assertEqual(hc.returncode, 0, hc.stderr)
                hc = subprocess.run([HEALTHCHECK], capture_output=True, text=True, timeout=15,
                                    env=dict(os.environ, JOBPLANE_LISTEN="0.0.0.0:%d" % server.port))
                self.assertEqual(hc.returncode, 0, hc.stderr)
                hc = subprocess.run([HEALTHCHECK, "127.0.0.1:%d" % harness.free_port()],
                                    capture_output=True, text=True, timeout=15)
                self.assertNotEqual(hc.returncode, 0, "healthy without a server")

                env = {"JOBPLANE_REDIS_URL": redis.url, "JOBPLANE_CONTROL_PLANE_URL": server.url,
                       "JOBPLANE_TOKEN": "worker-token-0123456789", "JOBPLANE_REPORT": "api"}
                worker = subprocess.Popen([worker_bin], env=harness._clean_env(env), cwd=d,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    job = server.submit("sleep", {"ms": 10})
                    done = server.wait_status(job["id"], ["completed", "failed"], timeout=30)
                    self.assertEqual(done["status"], "completed", done)
                    self.assertEqual(done["result"], {"slept_ms": 10})
                finally:
                    worker.terminate()
                    self.assertEqual(worker.wait(30), 0)
            finally:
                self.assertEqual(server.stop(), 0, server.log())


# --- variables of scripts/stack.sh and the systemd files ------------------------

def stack_sections():
    """{"server"|"worker"|"cli": names} of the JOBPLANE_* variables stack.sh sets
    for each binary: the spawn of the server, of each worker, and the client's
    environment."""
    text = read(STACK)
    out = {}
    for role, start, end in (("server", r"spawn server", r'"\$SERVER_BIN"'),
                             ("worker", r'spawn "worker-', r'"\$WORKER_BIN"')):
        m = re.search(start + r"(.*?)" + end, text, re.S)
        if not m:
            raise AssertionError("no %s section in %s" % (role, STACK))
        out[role] = set(re.findall(r"(JOBPLANE_[A-Z0-9_]+)=", m.group(1)))
    cli = set()
    for m in re.finditer(r"export (JOBPLANE_[A-Z0-9_]+=\S+(?: JOBPLANE_[A-Z0-9_]+=\S+)*)", text):
        cli |= set(re.findall(r"(JOBPLANE_[A-Z0-9_]+)=", m.group(1)))
    out["cli"] = cli
    everything = set(re.findall(r"(JOBPLANE_[A-Z0-9_]+)=", text))
    leftover = everything - out["server"] - out["worker"] - out["cli"]
    if leftover:
        raise AssertionError("%s sets %s outside the server, worker and client sections"
                             % (STACK, sorted(leftover)))
    return out


def env_file_vars(path):
    """Variables an EnvironmentFile sets, commented-out suggestions included."""
    names = []
    for line in read(path).splitlines():
        m = re.match(r"^\s*#?\s*(JOBPLANE_[A-Z0-9_]+)=", line)
        if m:
            names.append(m.group(1))
    return names


def unit_keys(path):
    """[(section, key, value)] of a unit file."""
    section, out = None, []
    for line in read(path).splitlines():
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("["):
            section = s.strip("[]")
            continue
        k, _, v = s.partition("=")
        out.append((section, k.strip(), v.strip()))
    return out


class TestVariables(unittest.TestCase):
    def test_stack_sets_what_the_binaries_accept(self):
        sec = stack_sections()
        for role in ("server", "worker", "cli"):
            self.assertTrue(sec[role], "stack.sh sets nothing for the %s" % role)
            assert_accepted(self, role, sec[role], "scripts/stack.sh (%s)" % role)

    def test_stack_mirrors_compose(self):
        sec = stack_sections()
        s = compose_config()["services"]
        for svc in ("server", "worker"):
            compose_vars = {k for k in s[svc]["environment"] if k.startswith("JOBPLANE_")}
            missing = compose_vars - sec[svc]
            self.assertFalse(missing, "stack.sh does not set the compose %s's %s"
                             % (svc, sorted(missing)))

    def test_systemd_env_files(self):
        for role, name in (("server", "server.env.example"), ("worker", "worker.env.example")):
            names = env_file_vars(os.path.join(SYSTEMD, name))
            self.assertGreaterEqual(len(names), 4, name)
            assert_accepted(self, role, names, "deploy/systemd/" + name)
        for role, unit in (("server", "jobplane-server.service"),
                           ("worker", "jobplane-worker@.service")):
            names = [VAR_RE.match(v).group(0) for sec, k, v in unit_keys(os.path.join(SYSTEMD, unit))
                     if k == "Environment" and VAR_RE.match(v)]
            assert_accepted(self, role, names, unit)


# --- systemd units -------------------------------------------------------------

HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native", "Restart": "on-failure", "KillMode": "mixed",
}


class TestSystemd(unittest.TestCase):
    UNITS = (("server", "jobplane-server.service", "server.env.example"),
             ("worker", "jobplane-worker@.service", "worker.env.example"))

    def test_units_harden_and_restart(self):
        for role, unit, envfile in self.UNITS:
            keys = unit_keys(os.path.join(SYSTEMD, unit))
            svc = {k: v for sec, k, v in keys if sec == "Service"}
            for k, v in HARDENING.items():
                self.assertEqual(svc.get(k), v, "%s: %s" % (unit, k))
            self.assertTrue(svc.get("DynamicUser") == "yes" or svc.get("User"), unit)
            envfiles = [v for sec, k, v in keys if k == "EnvironmentFile"]
            self.assertIn("/etc/jobplane/%s" % envfile.replace(".example", ""), envfiles)
            exe = svc["ExecStart"].split()[0]
            self.assertEqual(os.path.basename(exe), TARGETS[role], unit)
            # The stop timeout outlasts the drain, so jobs are handed back, not killed.
            drain = dict(re.findall(r"^(JOBPLANE_DRAIN_TIMEOUT)=(\d+)", read(
                os.path.join(SYSTEMD, envfile)), re.M)).get("JOBPLANE_DRAIN_TIMEOUT", "30")
            self.assertGreater(seconds(svc["TimeoutStopSec"]), int(drain), unit)

    def test_units_verify(self):
        sa = need("systemd-analyze")
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for role, unit, _ in self.UNITS:
                text = read(os.path.join(SYSTEMD, unit))
                # verify wants the ExecStart programs to exist: the built ones.
                text = text.replace("/usr/local/bin/" + TARGETS[role], BINS[role])
                p = os.path.join(d, unit)
                with open(p, "w") as f:
                    f.write(text)
                paths.append(p)
            out = subprocess.run([sa, "verify", "--man=no"] + paths, capture_output=True,
                                 text=True, timeout=60, cwd=d)
        # Unknown keys and bad values are only warnings: any output is a failure.
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual((out.stdout + out.stderr).strip(), "")


if __name__ == "__main__":
    harness.main()
