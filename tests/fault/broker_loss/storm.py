#!/usr/bin/env python3
"""Reconnect storm after each broker kill, from the devices' own log lines
("device=<id> connected to <url>", logged by each agent at info level and
stamped by it with milliseconds when the broker accepted it).

usage: storm.py STORM_FILE DEVICES [SUMMARY_OUT]
STORM_FILE holds "restart <epoch s>" per broker kill (taken just before the
new broker is started on the same port), "up <epoch s>" when its port
accepts connections again, and "log <path>" (the fleet log).
For each kill: the first reconnection of every device until the next kill,
its delay after the kill (p50, p90, max), the peak of connections in any
one second (sliding window), and a histogram per 100 ms. Fails (exit 1)
unless every device reconnected after every kill."""
import datetime
import re
import sys

CONN = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z INFO\s+device=(\S+) connected to ")


def stamp(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def main():
    restarts, ups, log = [], [], None
    with open(sys.argv[1]) as f:
        for line in f:
            k, v = line.split(None, 1)
            if k == "restart":
                restarts.append(float(v))
            elif k == "up":
                ups.append(float(v))
            elif k == "log":
                log = v.strip()
    n = int(sys.argv[2])
    conns = []
    with open(log, errors="replace") as f:
        for line in f:
            m = CONN.match(line)
            if m:
                conns.append((stamp(m.group(1)), m.group(2)))
    ok = bool(restarts)
    lines = []
    for i, t0 in enumerate(restarts):
        t1 = restarts[i + 1] if i + 1 < len(restarts) else float("inf")
        first = {}
        for t, dev in conns:
            if t0 <= t < t1 and dev not in first:
                first[dev] = t - t0
        d = sorted(first.values())
        up = min([u for u in ups if t0 <= u < t1] or [t0]) - t0
        hist = {}
        for x in d:
            hist[int(x * 10)] = hist.get(int(x * 10), 0) + 1
        peak, j = 0, 0
        for k in range(len(d)):
            while d[k] - d[j] >= 1.0:
                j += 1
            peak = max(peak, k - j + 1)
        lines.append(f"restart {i + 1}: broker port open again {up:.2f} s after the kill; "
                     f"{len(d)} of {n} devices reconnected; after the kill "
                     f"p50 {pct(d, 0.5):.2f} s, p90 {pct(d, 0.9):.2f} s, "
                     f"max {(max(d) if d else 0):.2f} s; peak {peak} connects in one second")
        lines.append("  per 100 ms after the kill: " + " ".join(
            f"{b / 10:.1f}s:{c}" for b, c in sorted(hist.items())))
        if len(d) < n:
            ok = False
            lines.append(f"FAIL: only {len(d)} of {n} devices reconnected after kill {i + 1}")
    text = "\n".join(lines)
    print(text)
    if len(sys.argv) > 3 and sys.argv[3]:
        with open(sys.argv[3], "a") as f:
            f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
