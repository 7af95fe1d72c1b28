#!/usr/bin/env python3
"""Run the VM scenarios by hand: python tests/vm/run.py --scenario all (see docs/vm-test.md).

Builds (or takes from .cache/vm/) the guest image, boots one guest per scenario and prints
what happened and how long it took. Exit status 0 when every scenario passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vm import image, scenarios


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", action="append", choices=["all", *scenarios.SCENARIOS],
                   help="which scenario (repeatable; default: all)")
    p.add_argument("--work", type=Path, help="folder for card images, consoles and sockets "
                   "(default: a fresh temporary folder, kept on failure)")
    p.add_argument("--build-only", action="store_true", help="build the image and stop")
    args = p.parse_args()
    chosen = args.scenario or ["all"]
    names = list(scenarios.SCENARIOS) if "all" in chosen else chosen

    image.install_host_packages()
    img = image.ensure_image()
    print(f"image {img.key}: " + (f"built in {img.build_seconds:.0f}s" if img.build_seconds
                                  else "from the cache"))
    if args.build_only:
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="photo-ingest-vm-"))
    failed = xfailed = 0
    for name in names:
        started = time.monotonic()
        try:
            outcome = scenarios.run(name, img, work)
        except Exception:
            failed += 1
            print(f"FAIL {name} after {time.monotonic() - started:.0f}s (files in {work / name})")
            traceback.print_exc()
            continue
        xfailed += bool(outcome.bugs)
        status = "xfail" if outcome.bugs else "ok   "
        print(f"{status} {name}: {outcome.seconds:.0f}s (boot {outcome.boot_seconds:.0f}s)")
        for note in outcome.notes:
            print(f"       {note}")
        for bug in outcome.bugs:
            print(f"       known product bug {bug}")
    passed = len(names) - failed - xfailed
    print(f"{passed} passed, {xfailed} xfailed (known product bugs only), {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
