#!/usr/bin/python3
"""Watch one card unit from outside while it runs: where is the card mounted, and how?

Usage: watch.py KNAME SECONDS OUT.json. Polls every 20 ms: the mount table of every process
in card-ingest@KNAME.service's cgroup, the mount table of PID 1 (the rest of the system) and
udev's view of /dev/KNAME, and the unit's status text (every 10th poll). Stops when the
unit's cgroup has come and gone, or at SECONDS.
"""

import json
import os
import subprocess
import sys
import time

kname, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
cgroup = ("/sys/fs/cgroup/system.slice/system-card\\x2dingest.slice/"
          f"card-ingest@{kname}.service/cgroup.procs")
node = f"/dev/{kname}"
seen = {"unit_mounts": [], "outside_mounts": [], "udev": None, "unit_seen": False,
        "pids": [], "status": []}
unit = f"card-ingest@{kname}.service"
polls = 0


def card_mounts(pid: str) -> list[dict]:
    found = []
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, sfields = left.split(), right.split()
        if len(sfields) < 3:
            continue
        if sfields[1] == node or fields[4].startswith("/run/photo-ingest/cards/"):
            found.append({"mountpoint": fields[4], "options": fields[5], "fstype": sfields[0],
                          "source": sfields[1], "super": sfields[2]})
    return found


deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    if "USEC_INITIALIZED" not in (seen["udev"] or "") and os.path.exists(node):
        # udev's database entry, once udev has processed the device (not the bare node).
        seen["udev"] = subprocess.run(["udevadm", "info", "-q", "property", node],
                                      capture_output=True, text=True).stdout
    try:
        with open(cgroup) as f:
            pids = f.read().split()
    except OSError:
        pids = None
        if seen["unit_seen"]:
            break
    if pids is not None:
        seen["unit_seen"] = True
        polls += 1
        if polls % 10 == 1:  # what `systemctl status` shows (sd_notify STATUS=)
            text = subprocess.run(["systemctl", "show", "-p", "StatusText", "--value", unit],
                                  capture_output=True, text=True).stdout.strip()
            if text and text not in seen["status"]:
                seen["status"].append(text)
        for pid in pids:
            if pid not in seen["pids"]:
                seen["pids"].append(pid)
            for m in card_mounts(pid):
                if m not in seen["unit_mounts"]:
                    seen["unit_mounts"].append(m)
    for m in card_mounts("1") + card_mounts("self"):
        if m["source"] == node and m not in seen["outside_mounts"]:
            seen["outside_mounts"].append(m)
    time.sleep(0.02)

with open(out + ".tmp", "w") as f:
    json.dump(seen, f)
os.rename(out + ".tmp", out)
