#!/usr/bin/env python3
"""Compares the stage decisions of a crash run with those of the reference
run (scenario.sh ref): per campaign the final state, the stage it ended at,
the cause of a halt, and every device's stage and final state. Exit 1 with
one line per difference. Also compares how many events the run's store
holds against the reference: the agents keep each event until the
controller has stored it (protocol.md 5.9), so a kill may delay an event
but must not lose one, and a missing event is a difference too.

usage: compare.py REF_JSON RUN_JSON"""
import json
import sys


def main():
    with open(sys.argv[1]) as f:
        ref = json.load(f)
    with open(sys.argv[2]) as f:
        run = json.load(f)
    diffs = []
    for cid, want in ref["decisions"].items():
        got = run["decisions"].get(cid)
        if got is None:
            diffs.append(f"campaign {cid}: missing from the crash run")
            continue
        for k in ("state", "stage", "stage_count", "reason"):
            if want[k] != got[k]:
                diffs.append(f"campaign {cid}: {k} is {got[k]!r}, without kills {want[k]!r}")
        for dev, w in want["devices"].items():
            g = got["devices"].get(dev)
            if g != w:
                diffs.append(f"campaign {cid}: device {dev} is (stage, state) {g}, "
                             f"without kills {w}")
        for dev in got["devices"]:
            if dev not in want["devices"]:
                diffs.append(f"campaign {cid}: device {dev} only in the crash run")
    # Events the devices sent that the store does not hold (the scenario is
    # deterministic: every run sends the same events; docs/reliability.md
    # "Controller crashes").
    missing = ref["events_stored"] - run["events_stored"]
    if missing != 0:
        diffs.append(f"events stored {run['events_stored']}, without kills {ref['events_stored']}")
    if run.get("event_gaps", 0) != 0:
        diffs.append(f"{run['event_gaps']} gaps in the devices' stored event seqs")
    print(f"compare: seed={run['seed']} kills={run['kills']} "
          f"{'same decisions' if not diffs else str(len(diffs)) + ' differences'}; "
          f"events stored {run['events_stored']} of {ref['events_stored']} "
          f"(events_missing={missing})")
    for d in diffs:
        print("FAIL: " + d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
