#!/usr/bin/env python3
"""The docs as a test: runs the shell blocks of the operator docs as written.

A new user follows docs/broker-plugin.md ("Deploying it in an existing
Mosquitto"), then docs/operator-guide.md (controller, CLI, a release, a
campaign), then the quick start of docs/agent.md ("Install on Debian
(bookworm)", a real device agent), then docs/signing.md, in one
fresh temporary folder that stands in for the machine: every absolute path of
the docs (/etc, /usr/lib/upkeep, /var/lib/upkeep, /opt, ...) is moved under it,
every port is a free one on 127.0.0.1, and the files of examples/ are copied
with the same substitutions and nothing else. The table below (SUBST, SKIP,
STDIN) is all the test changes; the docs carry no test-only text except
HTML comments that the reader does not see:

  <!-- doctest: background ready="TEXT" -->  the next ```sh block's commands
      are long-running (the doc says "another terminal" or "a service"): each
      starts in the background and the test waits (polling, bounded) until its
      output contains TEXT; it is stopped by pid at the end.
  <!-- doctest: skip (REASON) -->  the next ```sh block is not run here.
  <!-- doctest: output -->  the next fenced block is the output of the last
      command before it: every line must appear, in order, in what the command
      printed (stdout and stderr). Tolerant: runs of spaces match any spacing,
      times (2026-11-27T07:35:40Z, 2026-11-27), hex of 8+ digits, `...`
      (any text) and `<WORD>` (any word) match anything of their kind.
  <!-- doctest: exit=N -->  the last command of the next block exits N (the
      others, and every command of an unmarked block, exit 0).

Only ```sh/```bash/```shell blocks run; other fences are ignored unless
marked output. Every command must exit 0 (or N); the first failure is
reported as FILE:LINE with the command, its output and the expected text.

Usage: doctest.py SOURCE_DIR BUILD_DIR [--keep] [--only DOC]
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# (doc, the `## ` section to run or None for the whole doc), in the order a
# new user reads them; blocks of other sections are neither run nor checked.
DOCS = [("docs/broker-plugin.md", "Deploying it in an existing Mosquitto"),
        ("docs/operator-guide.md", None),
        ("docs/agent.md", "Install on Debian (bookworm)"),
        ("docs/signing.md", None)]
PASSWORD = "doctest-password-1"   # what the test "types" at every password prompt
CMD_TIMEOUT = 60                  # seconds for one foreground command
READY_TIMEOUT = 30                # seconds for a background command to say it is ready
TOTAL_BUDGET = 170                # seconds for the whole run


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Failure(Exception):
    pass


def substitutions(root, build, ports):
    """The whole substitution table: (regex, replacement). Applied in one pass
    to every command and to every file copied from examples/."""
    home = os.path.join(root, "home", "alice")
    table = [
        # hosts and ports: every broker of the docs is the test's mosquitto
        (r"(?:127\.0\.0\.1|localhost|broker\.internal|broker\.example\.internal):1883\b",
         "127.0.0.1:%d" % ports["plain"]),
        (r"(?:127\.0\.0\.1|localhost|broker\.internal|broker\.example\.com|broker\.example\.internal):8883\b",
         "127.0.0.1:%d" % ports["tls"]),
        (r"(?:127\.0\.0\.1|localhost|broker\.internal|broker\.example\.com|broker\.example\.internal):8884\b",
         "127.0.0.1:%d" % ports["tls2"]),
        (r"(?m)^(listener\s+)1883\b", r"\g<1>%d" % ports["plain"]),
        (r"(?m)^(listener\s+)8883\b", r"\g<1>%d" % ports["tls"]),
        (r"(?m)^(listener\s+)8884\b", r"\g<1>%d" % ports["tls2"]),
        # the machine's folders live under the test's root
        (r"(?<![\w./-])/(etc|opt|var/lib/upkeep|usr/lib/upkeep|usr/local/bin)(?=/|\b)",
         root + r"/\g<1>"),
        (r"(?<![\w./-])/home/alice\b", home),
        # the build under test stands for the docs' `build/` folder
        (r"(?<![\w./-])build/(bin|lib)/", build + r"/\g<1>/"),
        # we are root in a throw-away folder
        (r"(?<![\w-])sudo\s+", ""),
    ]
    return [(re.compile(p), r) for p, r in table]


# Commands the test does not run, with why (matched on the substituted command).
SKIP = [
    (re.compile(r"^cmake\s"), "the test uses the build under test"),
    (re.compile(r"^(sudo\s+)?apt-get\s"), "dependencies are installed by scripts/deps.sh"),
    (re.compile(r"^(sudo\s+)?(systemctl|journalctl)\s"), "no systemd here; the test runs the daemon itself"),
]

# What the test types on stdin.
def stdin_for(cmd):
    if re.match(r"^mosquitto_passwd\b", cmd):
        return "%s\n%s\n" % (PASSWORD, PASSWORD)   # "Password:" and "Reenter password:"
    return "%s\n" % PASSWORD


def apply(table, text):
    for rx, rep in table:
        text = rx.sub(rep, text)
    return text


MARK = re.compile(r"<!--\s*doctest:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w-]*)")


def parse(path, section=None):
    """Yields blocks: dict(kind=run|output, line=N (1-based, first content
    line), lines=[...], mark={...})."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks = []
    pending = {}
    heading = None
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            heading = lines[i][3:].strip()
        m = MARK.search(lines[i])
        if m:
            spec = m.group(1)
            if spec.startswith("skip"):
                pending["skip"] = spec[4:].strip() or "(no reason)"
            elif spec.startswith("background"):
                r = re.search(r'ready="([^"]*)"', spec)
                pending["background"] = r.group(1) if r else ""
            elif spec.startswith("output"):
                pending["output"] = True
            elif spec.startswith("exit="):
                pending["exit"] = int(spec[5:])
            else:
                raise Failure("%s:%d: unknown doctest marker %r" % (path, i + 1, spec))
            i += 1
            continue
        f = FENCE.match(lines[i])
        if f:
            indent, fence, lang = f.group(1), f.group(2), f.group(3)
            start = i + 1
            j = start
            while j < len(lines) and not lines[j].strip().startswith(fence[:3]):
                j += 1
            body = [l[len(indent):] if l.startswith(indent) else l.lstrip() for l in lines[start:j]]
            if section is not None and heading != section:
                pass
            elif pending.get("output"):
                blocks.append(dict(kind="output", line=start + 1, lines=body, mark=pending))
            elif lang in ("sh", "bash", "shell"):
                blocks.append(dict(kind="run", line=start + 1, lines=body, mark=pending))
            pending = {}
            i = j + 1
            continue
        if lines[i].strip() and not lines[i].lstrip().startswith("<!--"):
            pass  # prose between a marker and its block is allowed
        i += 1
    return blocks


def commands(block):
    """Splits a block into (line_no, command) with continuation lines joined."""
    out, cur, first = [], "", None
    for k, l in enumerate(block["lines"]):
        if first is None:
            if not l.strip() or l.lstrip().startswith("#"):
                continue
            first = block["line"] + k
        cur += l
        s = l.rstrip()
        if s.endswith("\\"):
            cur = cur.rstrip()[:-1] + " "
            continue
        if s.endswith("&&") or s.endswith("|"):
            cur += " "
            continue
        out.append((first, cur.strip()))
        cur, first = "", None
    if cur.strip():
        out.append((first, cur.strip()))
    return out


def expected_regex(lines):
    parts = []
    for l in lines:
        l = l.rstrip()
        if not l.strip():
            continue
        if l.strip() == "...":
            parts.append(None)
            continue
        toks = re.split(r"(\.\.\.|<[A-Za-z_-]+>|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|\d{4}-\d\d-\d\d|\b[0-9a-f]{8,}\b|\s+)", l.strip())
        rx = ""
        for t in toks:
            if not t:
                continue
            if t == "...":
                rx += ".*?"
            elif re.fullmatch(r"<[A-Za-z_-]+>", t):
                rx += r"\S+"
            elif re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t):
                rx += r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
            elif re.fullmatch(r"\d{4}-\d\d-\d\d", t):
                rx += r"\d{4}-\d\d-\d\d"
            elif re.fullmatch(r"[0-9a-f]{8,}", t):
                rx += r"[0-9a-f]{8,}"
            elif t.isspace():
                rx += r"\s+"
            else:
                rx += re.escape(t)
        parts.append(rx)
    return parts


def output_matches(lines, actual):
    """Every expected line must match a whole actual line, in order;
    `...` lines only document that lines are left out."""
    act = [a.strip() for a in actual.split("\n")]
    pos = 0
    for rx in expected_regex(lines):
        if rx is None:
            continue
        c = re.compile(rx + r"\Z")
        while pos < len(act) and not c.match(act[pos]):
            pos += 1
        if pos == len(act):
            return False, rx
        pos += 1
    return True, None


class World:
    def __init__(self, src, build, keep):
        self.src, self.build, self.keep = src, build, keep
        self.root = tempfile.mkdtemp(prefix="upkeep-doctest-")
        os.chmod(self.root, 0o755)   # mosquitto drops to its own user
        self.ports = dict(plain=free_port(), tls=free_port(), tls2=free_port())
        self.table = substitutions(self.root, build, self.ports)
        self.home = os.path.join(self.root, "home", "alice")
        self.cwd = os.path.join(self.root, "work")   # the user's shell starts here
        os.makedirs(self.home)
        os.makedirs(self.cwd)
        # the folders every Debian machine has (the docs create only their own)
        for d in ("etc/mosquitto/conf.d", "etc/systemd/system", "usr/local/bin", "usr/lib",
                  "var/lib", "opt"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        # the repository's examples/, as a user has them in their clone
        for dirpath, _, files in os.walk(os.path.join(src, "examples")):
            rel = os.path.relpath(dirpath, src)
            os.makedirs(os.path.join(self.cwd, rel), exist_ok=True)
            for fn in files:
                s = os.path.join(dirpath, fn)
                d = os.path.join(self.cwd, rel, fn)
                with open(s, encoding="utf-8") as f:
                    text = f.read()
                with open(d, "w", encoding="utf-8") as f:
                    f.write(apply(self.table, text))
                shutil.copymode(s, d)
        self.state = os.path.join(self.root, ".doctest")
        os.makedirs(self.state)
        self.envfile = os.path.join(self.state, "env.sh")
        open(self.envfile, "w").close()
        self.cwdfile = os.path.join(self.state, "cwd")
        with open(self.cwdfile, "w") as f:
            f.write(self.cwd)
        self.env = {
            "HOME": self.home,
            "PATH": "%s:%s/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                    % (os.path.join(self.root, "usr/local/bin"), build),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "TMPDIR": os.path.join(self.root, "tmp"),
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=0"),
            "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", ""),
        }
        os.makedirs(self.env["TMPDIR"])
        self.bg = []   # (Popen, logpath, where)
        self.n = 0

    def script(self, cmd):
        return ("set -o pipefail\nset -a\n. %s 2>/dev/null\ncd \"$(cat %s)\"\n%s\nrc=$?\n"
                "export -p > %s.new 2>/dev/null && mv %s.new %s; pwd > %s\nexit $rc\n"
                % (shlex.quote(self.envfile), shlex.quote(self.cwdfile), cmd,
                   shlex.quote(self.envfile), shlex.quote(self.envfile), shlex.quote(self.envfile),
                   shlex.quote(self.cwdfile)))

    def run(self, cmd, where, want_rc):
        p = subprocess.Popen(["bash", "-c", self.script(cmd)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=self.env, errors="replace", start_new_session=True)
        try:
            out, _ = p.communicate(stdin_for(cmd), timeout=CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)   # its own session: only what it started
            out, _ = p.communicate()
            raise Failure("%s: `%s` did not end within %d s; it printed:\n%s"
                          % (where, cmd, CMD_TIMEOUT, (out or "").rstrip()[-3000:]))
        with open(os.path.join(self.state, "transcript.txt"), "a") as t:
            t.write("## %s (exit %d)\n$ %s\n%s\n" % (where, p.returncode, cmd, out))
        if p.returncode != want_rc:
            raise Failure("%s: `%s` exited %d (documented: %d); it printed:\n%s"
                          % (where, cmd, p.returncode, want_rc, out.rstrip()))
        return out

    def start(self, cmd, where, ready, deadline):
        self.n += 1
        log = os.path.join(self.state, "bg-%d.log" % self.n)
        lf = open(log, "w")
        p = subprocess.Popen(["bash", "-c", "set -o pipefail\n. %s 2>/dev/null\ncd \"$(cat %s)\"\nexec %s\n"
                              % (shlex.quote(self.envfile), shlex.quote(self.cwdfile), cmd)],
                             stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                             env=self.env, start_new_session=True)
        lf.close()
        self.bg.append((p, log, where, cmd))
        end = min(time.monotonic() + READY_TIMEOUT, deadline)
        while True:
            with open(log, errors="replace") as f:
                text = f.read()
            if ready in text:
                return
            if p.poll() is not None:
                raise Failure("%s: `%s` stopped (exit %s) before printing %r; its output:\n%s"
                              % (where, cmd, p.returncode, ready, text.rstrip()[-3000:]))
            if time.monotonic() > end:
                raise Failure("%s: `%s` did not print %r within %d s; its output:\n%s"
                              % (where, cmd, ready, READY_TIMEOUT, text.rstrip()[-3000:]))
            time.sleep(0.1)

    def stop(self):
        """Stops what the docs started, newest first, by SIGTERM to its own
        session; returns the problems: the docs say each daemon stops cleanly
        (exit 0) on SIGTERM."""
        problems = []
        for p, log, where, cmd in reversed(self.bg):
            if p.poll() is not None:
                continue   # ended by itself (e.g. `campaign watch` when its campaign ended)
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=15)
                if p.returncode != 0:
                    problems.append("%s: `%s` exited %d on SIGTERM, not 0" % (where, cmd, p.returncode))
            except subprocess.TimeoutExpired:
                problems.append("%s: `%s` was still running 15 s after SIGTERM; killed" % (where, cmd))
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.bg_done = True
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            print("doctest: kept %s" % self.root)
        return problems


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    src, build = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    keep = "--keep" in argv
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    t0 = time.monotonic()
    deadline = t0 + TOTAL_BUDGET
    w = World(src, build, keep)
    ran = skipped = checked = 0
    try:
        for doc, section in DOCS:
            if only and only not in doc:
                continue
            blocks = parse(os.path.join(src, doc), section)
            if not blocks:
                raise Failure("%s: no blocks to run%s" % (doc, " in section '%s'" % section if section else ""))
            last_out, last_where = None, None
            for b in blocks:
                if b["kind"] == "output":
                    where = "%s:%d" % (doc, b["line"])
                    if last_out is None:
                        raise Failure("%s: an output block with no command before it" % where)
                    ok, rx = output_matches([apply(w.table, l) for l in b["lines"]], last_out)
                    if not ok:
                        raise Failure("%s: the output of %s does not hold: no line matches /%s/ "
                                      "(in order); the command printed:\n%s"
                                      % (where, last_where, rx, last_out.rstrip()))
                    checked += 1
                    continue
                mark = b["mark"]
                if "skip" in mark:
                    skipped += 1
                    continue
                cmds = commands(b)
                for k, (line, raw) in enumerate(cmds):
                    where = "%s:%d" % (doc, line)
                    if time.monotonic() > deadline:
                        raise Failure("%s: the doc test ran over its %d s budget" % (where, TOTAL_BUDGET))
                    cmd = apply(w.table, raw)
                    why = next((r for rx, r in SKIP if rx.search(cmd)), None)
                    if why:
                        skipped += 1
                        continue
                    if "background" in mark:
                        w.start(cmd, where, apply(w.table, mark["background"]), deadline)
                        last_out, last_where = None, where
                    else:
                        want = mark.get("exit", 0) if k == len(cmds) - 1 else 0
                        last_out = w.run(cmd, where, want)
                        last_where = "`%s` (%s)" % (raw, where)
                    ran += 1
        problems = w.stop()
        for p in problems:
            print("doctest: FAIL %s" % p)
        print("doctest: %d commands ran, %d outputs checked, %d skipped, in %.1f s"
              % (ran, checked, skipped, time.monotonic() - t0))
        return 1 if problems else 0
    except Failure as e:
        print("doctest: FAIL %s" % e)
    except BaseException:
        w.stop()
        raise
    for p, log, where, cmd in w.bg:
        with open(log, errors="replace") as f:
            tail = f.read().rstrip().split("\n")[-15:]
        print("--- background `%s` (%s), last lines:\n%s" % (cmd, where, "\n".join(tail)))
    w.stop()
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
