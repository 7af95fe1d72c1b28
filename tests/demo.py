"""The README's first command: the whole pipeline on a sample card, nothing to set up.

It generates a camera card (a DCIM tree of real JPEG/PNG/RAW-like/MP4/MOV files whose EXIF
and QuickTime tags were written by exiftool), starts a private PostgreSQL, runs the real
`photo-ingest` CLI against both, prints what happened, and cleans everything up.

The upload goes to your Immich when --immich-url and --immich-key-file are given, else to
the tests' stand-in Immich (tests/fake_immich: Immich's HTTP API, every request checked
against Immich's OpenAPI document) on loopback, when that document is beside the clone.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    with immich_target(work, immich_url, immich_key_file) as (url, key_file, fake):
        if url is not None:
            with config.open("a") as fh:
                fh.write(f'\n[immich]\nurl = "{url}"\n'
                         f'api_key_file = "{Path(key_file).absolute()}"\n'
                         'album = "{year}-{month}-{day}"\n')
            where = "your Immich" if fake is None else "the stand-in Immich"
            step(f"photo-ingest sync --once (upload to {where})",
                 ["photo-ingest", "--config", str(config), "sync", "--once"])
            if fake is not None:
                show_stand_in(fake)
    step("photo-ingest status", ["photo-ingest", "--config", str(config), "status"])
    return rc


@contextlib.contextmanager
def immich_target(work: Path, url: str | None, key_file: str | None,
                  ) -> Iterator[tuple[str | None, str, Any]]:
    """(url, key file, the stand-in server or None); url None: no upload in this demo."""
    if url and key_file:
        yield url, key_file, None
        return
    try:
        from fake_immich import FakeImmich, get_spec

        get_spec()
    except Exception as exc:  # no OpenAPI document beside the clone, or a missing module
        print(f"\n== Immich upload skipped: {str(exc).splitlines()[0]}\n"
              "   (run tests/demo --immich-url URL --immich-key-file FILE to use yours)")
        yield None, "", None
        return
    with FakeImmich(storage_dir=work / "immich") as fake:
        key = work / "immich.key"
        key.write_text(fake.create_api_key("photographer") + "\n")
        key.chmod(0o600)
        yield fake.url, str(key), fake


def show_stand_in(fake: Any) -> None:
    assets = fake.assets
    print(f"\nthe stand-in Immich now holds {len(assets)} assets", flush=True)
    for album in sorted(fake.albums.values(), key=lambda a: a.name):
        names = sorted(assets[i].filename for i in album.asset_ids if i in assets)
        print(f"  album {album.name}: {', '.join(names)}")
    bad = fake.validation_errors
    print(f"  requests that broke Immich's API contract: {len(bad)}")


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
