#!/usr/bin/env python3
"""Run every fault scenario with its full trial count and print the reliability scorecard.

    tests/faults/scorecard.py [--quick] [--write] [-- PYTEST ARGS]

--quick   the CI's trial counts instead of the full ones (FAULT_TRIALS unset)
--write   also put the table into docs/reliability.md, between its scorecard markers

The scenarios (tests/test_faults_*.py, the disk-full test of tests/test_resilience.py)
each append a line of JSON to $FAULT_SCORECARD; this script sets it, runs pytest in the
venv of tests/bootstrap.sh, and prints one Markdown row per line. A failing scenario writes
no line, and the exit status is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = ["tests/test_faults_crash.py", "tests/test_faults_card.py",
         "tests/test_faults_db.py", "tests/test_faults_immich.py",
         "tests/test_faults_load.py",
         "tests/test_resilience.py::test_full_disk_stops_cleanly_and_resumes_when_space_is_freed",
         "tests/test_memory.py", "tests/test_security.py",
         "tests/test_card_device.py::test_library_files_have_the_library_users_owner_and_mode"]
START, END = "<!-- scorecard: start -->", "<!-- scorecard: end -->"
# Not run here: the VM scenarios (docs/vm-test.md), with their latest recorded figures,
# and the checks that are plain tests with nothing to count.
STATIC = [
    ("card pulled (VM, USB device_del)", "see docs/vm-test.md",
     "pull: the last recorded runs took 84-130 s each and passed; B5 (about one run in "
     "ten ended `partial`) is fixed since", "-", "tests/run -m vm -k pull"),
    ("power loss (VM: qemu SIGKILLed, library and PostgreSQL on a cache=unsafe disk)",
     "see docs/vm-test.md",
     "powerloss: 2/2 recorded runs passed (qemu killed with 8 and 4 of 20 files "
     "catalogued): e2fsck -p clean after the journal replay, every catalogued file complete "
     "with its SHA-1, nothing partial outside .incoming/, the unsynced control file empty; "
     "re-plugged: completed without duplicates", "262-318 s",
     "python tests/vm/run.py --scenario powerloss"),
    ("security: card mounted ro,nosuid,nodev,noexec, private to the unit", "every run",
     "checked in the VM (`card`: the unit's mount table and PID 1's) and on the host "
     "(loop device: never in the host's namespace, image unchanged)", "-",
     "tests/run -m vm -k card; .venv/bin/python -m pytest tests/test_card_device.py"),
    ("security: systemd-analyze security targets", "every run",
     "offline scores of the shipped units within docs/install.md's targets (card <= 4.5, "
     "others <= 2.0); in the VM against the loaded units (`card`)", "-",
     ".venv/bin/python -m pytest "
     "'tests/test_units.py::test_hardening_scores_meet_the_targets'"),
]



def table(lines: list[dict[str, object]], full: bool) -> str:
    rows = ["| scenario | trials | result | time | command |", "| --- | --- | --- | --- | --- |"]
    prefix = "FAULT_TRIALS=full " if full else ""
    for d in lines:
        cmd = f"`{prefix}.venv/bin/python -m pytest '{d['test']}'`"
        rows.append(f"| {d['scenario']} | {d['trials']} | {d['result']} | {d['seconds']} s "
                    f"| {cmd} |")
    for s in STATIC:
        rows.append(f"| {s[0]} | {s[1]} | {s[2]} | {s[3]} | `{s[4]}` |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--write", action="store_true")
    p.add_argument("pytest_args", nargs="*")
    args = p.parse_args()
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        env = {**os.environ, "FAULT_SCORECARD": out.name}
        env.pop("FAULT_TRIALS", None)
        if not args.quick:
            env["FAULT_TRIALS"] = "full"
        # tests/run would add the whole of tests/: bootstrap as it does, run only these
        cmd = ["bash", "-c", 'source tests/bootstrap.sh && exec python -m pytest "$@"',
               "scorecard", "-q", *args.pytest_args, *TESTS]
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
        lines = [json.loads(line) for line in out.read().splitlines() if line.strip()]
    text = table(lines, full=not args.quick)
    print(text)
    if rc:
        print(f"\nFAILED: pytest exited {rc}; the scenarios above are the ones that passed")
    if args.write:
        doc = REPO / "docs" / "reliability.md"
        body = doc.read_text()
        new = re.sub(f"{re.escape(START)}.*?{re.escape(END)}",
                     lambda _: f"{START}\n{text}\n{END}", body, flags=re.S)
        doc.write_text(new)
    return rc


if __name__ == "__main__":
    sys.exit(main())
