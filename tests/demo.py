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
    parser.add_argument("--immich-url", help="also upload to this Immich server")
    parser.add_argument("--immich-key-file", help="file holding an Immich API key")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="photo-ingest-demo-"))
    pg = TempPostgres().start()
    try:
        return demo(work, pg.create_database("photo_ingest"), args.immich_url,
                    args.immich_key_file)
    finally:
        pg.stop()
        if args.keep:
            print(f"\nkept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def demo(work: Path, dsn: str, immich_url: str | None = None,
         immich_key_file: str | None = None) -> int:
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
    step("photo-ingest extract (what photo-ingest-metadata.timer runs)",
         ["photo-ingest", "--config", str(config), "extract"])
    show_metadata(dsn)
    if immich_url and immich_key_file:
        with config.open("a") as fh:
            fh.write(f'\n[immich]\nurl = "{immich_url}"\n'
                     f'api_key_file = "{Path(immich_key_file).absolute()}"\n'
                     'album = "{year}-{month}-{day}"\n')
        step("photo-ingest sync --once (upload to your Immich)",
             ["photo-ingest", "--config", str(config), "sync", "--once"])
    else:
        print("\n== Immich upload skipped: no Immich server is configured for this demo "
              "(run tests/demo --immich-url URL --immich-key-file FILE to include it)")
    step("photo-ingest status", ["photo-ingest", "--config", str(config), "status"])
    return rc


def show_metadata(dsn: str) -> None:
    import psycopg

    print("\n== The metadata it extracted (SELECT … FROM asset_metadata)", flush=True)
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        rows = conn.execute(
            "SELECT a.library_path, m.captured_at, m.capture_offset_source, m.camera,"
            " m.width, m.height, m.video_codec, m.raw_sidecars IS NOT NULL"
            " FROM asset_metadata m JOIN assets a ON a.id = m.asset_id ORDER BY 1").fetchall()
    print(f"{'library path':<26} {'captured (UTC)':<20} {'offset':<24} {'camera':<13} "
          f"{'size':<7} {'codec':<6} sidecar")
    for path, at, source, camera, w, h, codec, sidecar in rows:
        when = f"{at:%Y-%m-%d %H:%M:%S}" if at else "-"
        print(f"{path:<26} {when:<20} {source or '-':<24} {camera or '-':<13} "
              f"{w}x{h:<4} {codec or '-':<6} {'yes' if sidecar else ''}")


def step(title: str, argv: list[str], cwd: Path | None = None) -> int:
    shown = [a for i, a in enumerate(argv) if "--config" not in argv[max(i - 1, 0):i + 1]]
    print(f"\n== {title}\n$ {' '.join(shown)}", flush=True)
    return subprocess.run(argv, cwd=cwd).returncode


if __name__ == "__main__":
    sys.exit(main())
