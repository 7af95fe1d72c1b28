"""The `photo-ingest` command line.

Exit codes: 0 success; 1 the run ended with failed files or was stopped (see its report);
2 bad usage or configuration; 3 could not start (catalog unreachable, source missing).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from photo_ingest import catalog, config
from photo_ingest.cli_shared import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    positive_int,
    print_json,
)
from photo_ingest.report import IngestReporter, human_bytes, setup_logging

if TYPE_CHECKING:
    from photo_ingest.metadata.normalise import Settings

log = logging.getLogger("photo_ingest")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg = config.load(args.config)
        result: int = args.func(cfg, args)
        return result
    except config.ConfigError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_USAGE
    except catalog.CatalogError as exc:
        log.error("%s", exc)
        return EXIT_UNAVAILABLE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="photo-ingest",
        description="Copy camera cards into a verified, catalogued photo library.",
    )
    p.add_argument("--config", type=Path, help="TOML config file (default: $PHOTO_INGEST_CONFIG"
                   f" or {config.DEFAULT_PATH})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every file")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    c = sub.add_parser("ingest", help="copy every photo and video from SOURCE into the library",
                       description="Copy, verify and catalogue every photo and video under "
                       "SOURCE (a mounted card or any folder). Re-running resumes.")
    c.add_argument("source", help="folder to ingest (a mounted card's root or any tree), or a "
                   "card's block device such as /dev/sdb1 (as root: mounted read-only in a "
                   "private namespace, ejected after success)")
    c.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    c.add_argument("--library", type=Path, help="override library.path")
    c.add_argument("--verify", choices=("full", "size"), help="override ingest.verify")
    c.add_argument("--label", help="card label to record (default: from udev)")
    c.set_defaults(func=_cmd_ingest)

    c = sub.add_parser("sessions", help="list ingest sessions, or one session's files")
    c.add_argument("id", nargs="?", type=int, help="show this session's files")
    c.add_argument("--limit", type=int, default=20, help="how many sessions (default 20)")
    c.add_argument("--failed", action="store_true", help="with ID: only failed files")
    c.add_argument("--json", action="store_true", help="print JSON on stdout")
    c.set_defaults(func=_cmd_sessions)

    c = sub.add_parser("status", help="library totals, running and last sessions")
    c.add_argument("--json", action="store_true", help="print JSON on stdout")
    c.set_defaults(func=_cmd_status)

    from photo_ingest.immich.cli import add_commands as add_immich_commands

    add_immich_commands(sub)

    from photo_ingest.mirror.cli import add_commands as add_mirror_commands
    from photo_ingest.watch.cli import add_command as add_watch_command

    add_mirror_commands(sub)
    add_watch_command(sub)

    c = sub.add_parser("install-units", help="install the systemd units and udev rule "
                       "(Debian, Raspberry Pi OS)",
                       description="Write card-ingest@.service, the metadata timer, the "
                       "Immich sync service, the watch service and 90-photo-ingest.rules with "
                       "this installation's paths, plus drop-ins for this config's library, "
                       "metrics and watched folders.")
    c.add_argument("--prefix", type=Path, default=Path("/"),
                   help="root to install under (default /; e.g. a package build folder)")
    c.add_argument("--user", default="photo-ingest",
                   help="account for the metadata and sync services (default photo-ingest)")
    c.set_defaults(func=_cmd_install_units)

    c = sub.add_parser("migrate", help="apply catalog migrations and exit")
    c.set_defaults(func=_cmd_migrate)

    c = sub.add_parser("extract", help="give every asset a current metadata record",
                       description="Read the metadata of every asset without a current "
                       "record with exiftool, normalise it and store it in the catalog. "
                       "Re-running does only what is left; failed files are tried again "
                       "only when they change, or with --retry-failed.")
    c.add_argument("--workers", type=positive_int, help="exiftool processes "
                   "(default: metadata.workers, the number of CPUs)")
    c.add_argument("--batch-size", type=positive_int, help="files per exiftool call and "
                   "per transaction (default: metadata.batch_size)")
    c.add_argument("--limit", type=positive_int, help="do at most this many assets")
    c.add_argument("--retry-failed", action="store_true",
                   help="also try again every file whose extraction failed")
    c.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    c.set_defaults(func=_cmd_extract)

    c = sub.add_parser("export", help="write the metadata table to a Parquet or CSV file",
                       description="Write every asset's metadata record (with the asset's "
                       "path, checksum and type) to PATH through DuckDB, for analysis in "
                       "other tools. The file appears complete or not at all.")
    c.add_argument("path", type=Path, help="file to write")
    c.add_argument("--format", choices=("parquet", "csv"), help="default: from PATH's "
                   "extension")
    c.add_argument("--raw", action="store_true",
                   help="include exiftool's complete output (the raw JSON columns)")
    c.set_defaults(func=_cmd_export)
    return p


def _cmd_ingest(cfg: config.Config, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from photo_ingest.ingest.device import DeviceError, ingest_card, is_block_device
    from photo_ingest.ingest.pipeline import IngestError, ingest
    from photo_ingest.ingest.sessions import Card
    from photo_ingest.ingest.stops import stop_on_signals
    from photo_ingest.metrics import refresh_textfile
    from photo_ingest.mirror.session import after_session
    from photo_ingest.notify.send import Notifications
    from photo_ingest.notify.session import session_message
    from photo_ingest.sdnotify import Notifier

    if args.library:
        cfg = replace(cfg, library=replace(cfg.library, path=args.library))
    if args.verify:
        cfg = replace(cfg, ingest=replace(cfg.ingest, verify=args.verify))

    stop_on_signals()
    reporter = IngestReporter(status=Notifier().status)
    # Read now: a card's ingest runs as the library user, who cannot read credentials.
    notes = Notifications.from_config(cfg)

    def run(source: str, card: Card | None) -> dict[str, Any]:
        if args.label:
            card = replace(card or Card(), label=args.label)
        summary = ingest(cfg, source, reporter, card).as_json()
        summary.update(after_session(cfg, summary))  # mirrors; safe to format?
        # Here, not in the root parent of a card: this process is the catalog's user, and
        # the metrics are written before an eject makes systemd stop the card's unit.
        refresh_textfile(cfg, "ingest")
        if cfg.mirrors:
            refresh_textfile(cfg, "mirror")
        if notes.enabled:
            notes.send(session_message(summary, vars(card) if card else None))
            refresh_textfile(cfg, "notify")
        return summary

    try:
        if is_block_device(args.source):
            card_run = ingest_card(cfg, args.source, lambda where, card: run(str(where), card))
            summary = card_run.summary
            report = {"device": args.source, "card": vars(card_run.card),
                      "left_alone": card_run.left_alone, "ejected": card_run.ejected}
        else:
            summary, report = run(args.source, None), {}
    except (IngestError, DeviceError) as exc:
        log.error("%s", exc)
        return EXIT_UNAVAILABLE
    finally:
        reporter.close()
    if summary is None:  # a card left alone: not ours to touch
        log.info("%s left alone: %s", args.source, report["left_alone"])
        if args.json:
            print_json(report)
        return EXIT_OK
    if args.json:
        print_json({**summary, **report})
    else:
        _print_summary(summary)
        if report.get("ejected"):
            print(f"card: {report['ejected']}")
        elif report.get("left_alone"):
            print(f"card left in place: {report['left_alone']}")
    return EXIT_OK if summary["safe_to_format"] else EXIT_FAILED


def _print_summary(s: dict[str, Any]) -> None:
    f = s["files"]
    print(f"session {s['session']}: {s['status']} in {s['duration_seconds']:.1f}s — "
          f"{f['copied']} copied, {f['duplicate']} duplicate, {f['skipped']} skipped, "
          f"{f['failed']} failed; {human_bytes(s['bytes']['copied'])} written to {s['library']}")
    for o in s["outcomes"]:
        if o["outcome"] in ("failed", "skipped"):
            print(f"  {o['outcome']:<9} {o['path']}: {o['reason']}")
    if s["error"]:
        print(f"error: {s['error']}")
    for m in s.get("mirrors", []):
        state = "holds every file" if m["complete"] else "does NOT hold every file"
        print(f"mirror {m['name']} ({'required' if m['required'] else 'best effort'}): "
              f"{state}; {m['copied']} copied, {m['adopted']} already there, "
              f"{m['failed']} failed" + (f" - {m['reason']}" if m["reason"] else ""))
        for e in m["errors"]:
            print(f"  {e}")
    print(f"safe to format: {'yes' if s['safe_to_format'] else 'no'} - {s['safe_reason']}")


def _cmd_sessions(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.catalog import queries

    with catalog.connect(cfg.database.conninfo()) as conn:
        if args.id is None:
            rows = queries.sessions(conn, args.limit)
            if args.json:
                print_json(rows)
            else:
                for r in rows:
                    print(_session_line(r))
            return EXIT_OK
        session = queries.session(conn, args.id)
        if session is None:
            log.error("no session %d", args.id)
            return EXIT_FAILED
        files = queries.session_files(conn, args.id, "failed" if args.failed else None)
    if args.json:
        print_json({**session, "files": files})
    else:
        print(_session_line(session))
        if session["error"]:
            print(f"  error: {session['error']}")
        for row in files:
            where = row["reason"] if row["reason"] else f"-> {row['library_path']}"
            print(f"  {row['outcome']:<9} {row['relpath']}  {where}")
    return EXIT_OK


def _session_line(r: dict[str, Any]) -> str:
    card = r["card_label"] or r["card_uuid"] or ""
    return (f"#{r['id']:<5} {r['started_at']:%Y-%m-%d %H:%M}  {r['status']:<11} "
            f"{r['files_copied']:>5} copied {r['files_duplicate']:>5} dup "
            f"{r['files_skipped']:>4} skipped {r['files_failed']:>4} failed  "
            f"{human_bytes(r['bytes_copied']):>9}  {card + ' ' if card else ''}{r['source']}")


def _cmd_status(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.catalog import queries
    from photo_ingest.immich.status import format_status
    from photo_ingest.immich.status import status as immich_status
    from photo_ingest.metadata import backlog
    from photo_ingest.mirror.status import format_status as format_mirrors
    from photo_ingest.mirror.status import status as mirror_status

    versions = backlog.Versions(_metadata_settings(cfg).fingerprint())
    with catalog.connect(cfg.database.conninfo()) as conn:
        st = queries.status(conn)
        meta = backlog.status(conn, versions)
        immich = immich_status(conn, cfg.immich)
        mirrors = mirror_status(conn, cfg)
    if args.json:
        print_json({"library": str(cfg.library.path), **st, "metadata": meta,
                     "immich": immich, **mirrors})
        return EXIT_OK
    print(f"library {cfg.library.path}: {st['assets']} assets, {human_bytes(st['bytes'])}, "
          f"{st['sidecars']} sidecars")
    for kind, v in st["by_media_type"].items():
        print(f"  {kind:<6} {v['assets']:>7}  {human_bytes(v['bytes'])}")
    print("sessions: " + (", ".join(f"{n} {k}" for k, n in st["sessions"].items()) or "none"))
    for r in st["running"]:
        print(f"  running {_session_line(r)}")
    if st["last_session"]:
        print(f"last: {_session_line(st['last_session'])}")
        for f in st["last_session_failures"]:
            print(f"  failed {f['relpath']}: {f['reason']}")
    _print_metadata_status(meta)
    for line in format_status(immich):
        print(line)
    for line in format_mirrors(mirrors):
        print(line)
    return EXIT_OK


def _print_metadata_status(m: dict[str, Any]) -> None:
    waiting = f"{m['pending']} waiting"
    if m["to_refresh"]:
        waiting += f" ({m['to_refresh']} to refresh from stored output)"
    last = f"; last written {m['last_written']:%Y-%m-%d %H:%M}" if m["last_written"] else ""
    print(f"metadata: {m['ok']} ok, {m['failed']} failed, {waiting}{last}")
    for f in m["failures"]:
        print(f"  failed {f['library_path']}: {f['error']}")
    if m["failed"] > len(m["failures"]):
        print(f"  … and {m['failed'] - len(m['failures'])} more "
              "(photo-ingest extract --retry-failed tries them again)")


def _cmd_install_units(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest import units

    config_path = (args.config or Path(os.environ.get(config.ENV_VAR) or config.DEFAULT_PATH))
    written = units.install(args.prefix, cfg, config_path.absolute(), user=args.user)
    for path in written:
        print(path)
    if args.prefix == Path("/"):
        watch = " photo-ingest-watch.service" if cfg.watch else ""
        print("next: systemctl daemon-reload && udevadm control --reload && systemctl enable "
              "--now photo-ingest-metadata.timer photo-ingest-immich-sync.service" + watch
              + (" photo-ingest-mirror.timer" if cfg.mirrors else "")
              + " photo-ingest-verify.timer"
              + (" photo-ingest-backlog-check.timer" if cfg.notify.enabled else ""))
    return EXIT_OK


def _cmd_migrate(cfg: config.Config, args: argparse.Namespace) -> int:
    with catalog.connect(cfg.database.conninfo()):
        pass
    log.info("catalog schema is up to date")
    return EXIT_OK


def _metadata_settings(cfg: config.Config) -> Settings:
    from photo_ingest.metadata.normalise import Settings

    try:
        return Settings.from_config(cfg)
    except ValueError as exc:
        raise config.ConfigError(f"metadata.timezone: {exc}") from exc


def _cmd_extract(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.metadata.extractor import ExifToolUnavailable
    from photo_ingest.metadata.run import Extraction, Options
    from photo_ingest.metrics import refresh_textfile

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.warning("%s: finishing the batches in flight, then stopping",
                    signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    options = Options(workers=args.workers or cfg.metadata.workers,
                      batch_size=args.batch_size or cfg.metadata.batch_size,
                      limit=args.limit, retry_failed=args.retry_failed)
    try:
        summary = Extraction(cfg, options, stop).run()
    except ExifToolUnavailable as exc:
        log.error("%s", exc)
        return EXIT_UNAVAILABLE
    refresh_textfile(cfg, "metadata")
    data = summary.as_json()
    if args.json:
        print_json(data)
    else:
        _print_extract_summary(data)
    return EXIT_OK if summary.status == "completed" and not summary.failed else EXIT_FAILED


def _print_extract_summary(s: dict[str, Any]) -> None:
    waiting = "" if s["pending_after"] is None else f"; {s['pending_after']} waiting"
    print(f"metadata: {s['status']} in {s['duration_seconds']:.1f}s — {s['extracted']} "
          f"read, {s['refreshed']} refreshed, {s['ok']} ok, {s['failed']} failed "
          f"({s['files_per_second']:.0f} files/s){waiting}")
    for f in s["failures"]:
        print(f"  failed {f['library_path']}: {f['error']}")
    if s["error"]:
        print(f"error: {s['error']}")


def _cmd_export(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.metadata.export import ExportError, export

    fmt = args.format or args.path.suffix.lower().lstrip(".")
    if fmt not in ("parquet", "csv"):
        log.error("cannot tell the format from %s: give --format parquet or --format csv",
                  args.path)
        return EXIT_USAGE
    try:
        rows = export(cfg.database.conninfo(), args.path, fmt, raw=args.raw)
    except ExportError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    log.info("wrote %d records to %s", rows, args.path)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
