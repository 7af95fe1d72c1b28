"""The README's first command: the whole pipeline on a sample card, nothing to set up.

It generates a camera card (a DCIM tree of real JPEG/PNG/RAW-like/MP4/MOV files whose EXIF
and QuickTime tags were written by exiftool), starts a private PostgreSQL, runs the real
`photo-ingest` CLI against both, prints what happened, and cleans everything up.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from support.pgserver import TempPostgres
from support.samplecard import sample_card


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the card, library and "
                        "database files (the database server is stopped either way)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="photo-ingest-demo-"))
    pg = TempPostgres().start()
    try:
        return demo(work, pg.create_database("photo_ingest"))
    finally:
        pg.stop()
        if args.keep:
            print(f"\nkept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def demo(work: Path, dsn: str) -> int:
    card, library = work / "card", work / "library"
    sample_card(card)
    config = work / "config.toml"
    config.write_text(f'[library]\npath = "{library}"\n\n[database]\nurl = "{dsn}"\n\n'
                      '[ingest]\ntimezone = "Europe/Berlin"\nverify = "full"\n')
    step("The sample card", ["sh", "-c", "find card -type f | sort"], cwd=work)
    rc = step("photo-ingest ingest card/", ["photo-ingest", "--config", str(config), "ingest",
                                           str(card)])
    step("The library it built", ["sh", "-c", "find . -type f -not -path './.incoming/*' | sort"],
         cwd=library)
    step("Every file's state (photo-ingest sessions 1)",
         ["photo-ingest", "--config", str(config), "sessions", "1"])
    step("Inserting the same card again copies nothing",
         ["photo-ingest", "--config", str(config), "ingest", str(card)])
    step("photo-ingest status", ["photo-ingest", "--config", str(config), "status"])
    print("\nNot run here: metadata extraction and Immich upload are not built yet "
          "(no Immich server is configured for this demo).")
    return rc


def step(title: str, argv: list[str], cwd: Path | None = None) -> int:
    shown = [a for i, a in enumerate(argv) if "--config" not in argv[max(i - 1, 0):i + 1]]
    print(f"\n== {title}\n$ {' '.join(shown)}", flush=True)
    return subprocess.run(argv, cwd=cwd).returncode


if __name__ == "__main__":
    sys.exit(main())
