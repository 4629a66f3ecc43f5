#!/usr/bin/env python3
"""End-state checks of one controller crash scenario run (scenario.sh), and
the run's stage decisions written out for compare.py.

usage: check.py FL_DIR DEVICES MODE SEED KILLS OUT_JSON

Fails (exit 1, one line per problem) unless:
  - every device of each campaign is listed exactly once, in a final state;
  - the controller's device registry agrees with each device's own retained
    state (version, status, campaign) and with the simulator's status counts;
  - every final outcome the store holds agrees with the device's own events
    (a device counted succeeded committed that release, a failed one did not
    end committed on it);
  - stored events of a device are unique by seq (the store's key) and no
    event is stored twice.
Event sequence gaps (events the controller never stored) are counted;
compare.py fails a run that has any (docs/reliability.md "Controller
crashes")."""
import json
import os
import sqlite3
import sys

FINAL = {"succeeded", "failed", "timed_out", "skipped"}


def main():
    fl_dir, n, mode, seed, kills, out = sys.argv[1:7]
    n = int(n)
    problems = []

    def bad(msg):
        problems.append(msg)

    def load(name):
        with open(os.path.join(fl_dir, name)) as f:
            return json.load(f)

    camps = {c: load(c + ".campaign.json") for c in ("good", "bad")}
    registry = {d["id"]: d for d in load("bad.devices.json")}
    sim = load("bad.sim.json")
    if len(registry) != n:
        bad(f"registry holds {len(registry)} devices, expected {n}")

    decisions = {}
    for cid, c in camps.items():
        seen = {}
        for d in c.get("device_list", []):
            if d["device"] in seen:
                bad(f"campaign {cid}: device {d['device']} listed twice")
            seen[d["device"]] = d
            if d["state"] not in FINAL:
                bad(f"campaign {cid}: device {d['device']} ends in non-final state {d['state']}")
        if len(seen) != c.get("devices", -1) or len(seen) != n:
            bad(f"campaign {cid}: {len(seen)} devices listed, campaign counts "
                f"{c.get('devices')}, fleet has {n}")
        reason = c.get("reason", "")
        decisions[cid] = {
            "state": c["state"],
            "stage": c["stage"],
            "stage_count": c["stage_count"],
            # The counts in a halt reason depend on how many failures had
            # arrived by the tick that halted; the stage and cause do not.
            "reason": reason.split(":")[0] + (" failed or timed out" if "failed or timed" in reason
                                              else (" health gate" if "health gate" in reason else "")),
            "devices": {k: [v["stage"], v["state"]] for k, v in sorted(seen.items())},
        }

    # The devices' own retained state against the registry.
    retained = {}
    with open(os.path.join(fl_dir, "bad.retained.txt")) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            topic, payload = line.split(" ", 1)
            st = json.loads(payload)
            retained[st["device"]] = st
    if len(retained) != n:
        bad(f"read {len(retained)} retained device states, expected {n}")
    for dev, st in retained.items():
        r = registry.get(dev)
        if r is None:
            bad(f"device {dev} has a retained state but is not registered")
            continue
        for k in ("version", "status", "campaign"):
            if str(r.get(k, "")) != str(st.get(k, "")):
                bad(f"device {dev}: controller says {k}={r.get(k)!r}, device says {st.get(k)!r}")
    hist_ret = {}
    for st in retained.values():
        hist_ret[st["status"]] = hist_ret.get(st["status"], 0) + 1
    for status, count in sim["status"].items():
        if count != hist_ret.get(status, 0):
            bad(f"simulator counts {count} devices {status}, retained states say "
                f"{hist_ret.get(status, 0)}")

    # Outcomes against the devices' own events, and event bookkeeping.
    db = sqlite3.connect("file:" + os.path.join(fl_dir, "ctl", "upkeep.db") + "?mode=ro", uri=True)
    gaps = 0
    stored = 0
    for dev in registry:
        seqs = [r[0] for r in db.execute("SELECT seq FROM events WHERE device=? ORDER BY seq", (dev,))]
        stored += len(seqs)
        if len(seqs) != len(set(seqs)):
            bad(f"device {dev}: an event stored twice")
        if seqs:
            gaps += seqs[-1] - len(seqs)
    for cid, c in camps.items():
        release = db.execute("SELECT r.version FROM campaigns c JOIN releases r ON r.id=c.release"
                             " WHERE c.id=?", (cid,)).fetchone()[0]
        for dev, (stage, state) in decisions[cid]["devices"].items():
            steps = [r[0] for r in db.execute(
                "SELECT step FROM events WHERE device=? AND campaign=? AND version=? ORDER BY seq",
                (dev, cid, release))]
            if state == "succeeded" and steps and "committed" not in steps and \
                    any(s in ("failed", "rolled_back", "rejected") for s in steps):
                bad(f"campaign {cid}: {dev} counted succeeded, its events say {steps}")
            if state == "failed" and "committed" in steps and steps[-1] == "committed":
                bad(f"campaign {cid}: {dev} counted failed, its last event is committed")
            if state == "skipped" and steps:
                bad(f"campaign {cid}: {dev} counted skipped but reported {steps}")
    db.close()

    result = {"mode": mode, "seed": int(seed), "kills": int(kills), "devices": n,
              "events_stored": stored, "event_gaps": gaps, "decisions": decisions}
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(f"check: {mode} seed={seed} kills={kills} events stored={stored} gaps={gaps} "
          f"good={decisions['good']['state']} bad={decisions['bad']['state']}"
          f"@{decisions['bad']['stage']}")
    for p in problems:
        print("FAIL: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
