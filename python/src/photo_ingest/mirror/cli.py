"""`photo-ingest mirror`, `verify`, `backlog-check` and `notify-test`.

`add_commands(subparsers)` registers them on the main parser; their handlers take
`(cfg, args)` like every other command.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from photo_ingest import catalog, config
from photo_ingest.cli_shared import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    non_negative_int,
)
from photo_ingest.ingest.stops import stop_on_signals
from photo_ingest.report import human_bytes

log = logging.getLogger("photo_ingest")


def add_commands(sub: Any) -> None:
    c = sub.add_parser(
        "mirror", help="copy every library file not yet on each mirror",
        description="Copy every library file that a [[mirror]] does not hold yet, with the "
        "library's own temp file, fsync, verify and publish rules, from the library's "
        "verified copy. Mirrors that are not mounted are reported and tried again next "
        "time; nothing is lost.")
    c.add_argument("--destination", metavar="NAME", help="only this mirror")
    c.add_argument("--retry-failed", action="store_true",
                   help="first put failed files back in the queue")
    c.add_argument("--init", action="store_true",
                   help="with --destination: mark that existing folder as the mirror "
                   "(writes its .photo-ingest-mirror marker) and exit")
    c.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    c.set_defaults(func=cmd_mirror)

    c = sub.add_parser(
        "verify", help="re-hash stored copies against the catalog (bit-rot scrub)",
        description="Read stored files back and compare them with the catalog's SHA-1: "
        "the library and every mirror, or one of them. Reports rot, missing and unreadable "
        "files, records the scrub in the catalog, and never rewrites anything.")
    c.add_argument("--destination", metavar="NAME",
                   help="'library' or a mirror's name (default: all of them)")
    c.add_argument("--sample", type=non_negative_int, metavar="N",
                   help="check the N files per destination checked longest ago "
                   "(default: verify.sample; 0: all)")
    c.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    c.set_defaults(func=cmd_verify)

    c = sub.add_parser(
        "backlog-check", help="sample the backlogs; notify when one stalls or recovers",
        description="Record the metadata, Immich and mirror backlogs in the catalog and "
        "send one notification when a backlog stops shrinking for notify.stall_minutes, "
        "and one when it moves again (run by photo-ingest-backlog-check.timer).")
    c.add_argument("--json", action="store_true", help="print the backlogs as JSON on stdout")
    c.set_defaults(func=cmd_backlog_check)

    c = sub.add_parser("notify-test", help="send a test notification",
                       description="Send a test message through the configured [notify] "
                       "webhook and say whether it was delivered.")
    c.set_defaults(func=cmd_notify_test)


def cmd_mirror(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.cli_shared import print_json
    from photo_ingest.metrics import refresh_textfile
    from photo_ingest.mirror.destination import Unavailable, init_destination
    from photo_ingest.mirror.run import catch_up

    mirrors = _chosen(cfg, args.destination)
    if args.init:
        if args.destination is None:
            log.error("--init needs --destination NAME: which folder is the mirror?")
            return EXIT_USAGE
        try:
            print(init_destination(mirrors[0]).decode())
        except (Unavailable, OSError) as exc:
            log.error("%s", exc.strerror or exc)
            return EXIT_UNAVAILABLE
        return EXIT_OK
    if not mirrors:
        log.error("no mirrors are configured ([[mirror]] tables, see docs/mirror.md)")
        return EXIT_USAGE
    stop_on_signals()
    with catalog.connect(cfg.database.conninfo()) as conn:
        reports = catch_up(cfg, conn, mirrors, retry_failed=args.retry_failed)
    refresh_textfile(cfg, "mirror")
    if args.json:
        print_json({"mirrors": [r.as_json() for r in reports]})
    else:
        for r in reports:
            print(f"mirror {r.name}: " + (
                f"{r.copied} copied ({human_bytes(r.bytes)}), {r.adopted} already there, "
                f"{r.failed} failed, {r.deferred} to retry" if r.available else
                "unavailable") + (f" - {r.reason}" if r.reason else ""))
            for e in r.errors:
                print(f"  {e}")
    if any(not r.available for r in reports):
        return EXIT_UNAVAILABLE
    return EXIT_FAILED if any(r.failed or r.deferred or r.reason for r in reports) else EXIT_OK


def _chosen(cfg: config.Config, name: str | None) -> list[Any]:
    if name is None:
        return list(cfg.mirrors)
    found = [m for m in cfg.mirrors if m.name == name]
    if not found:
        raise config.ConfigError(f"--destination: no mirror named {name!r} (configured: "
                                 f"{', '.join(m.name for m in cfg.mirrors) or 'none'})")
    return found


def cmd_verify(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.cli_shared import print_json
    from photo_ingest.metrics import refresh_textfile
    from photo_ingest.mirror.verify import destinations, scrub

    names = destinations(cfg, args.destination)
    sample = cfg.verify.sample if args.sample is None else args.sample
    stop_on_signals()
    results = []
    try:
        with catalog.connect(cfg.database.conninfo()) as conn:
            for name in names:
                results.append(scrub(cfg, conn, name, sample))
    finally:
        refresh_textfile(cfg, "verify")
    if args.json:
        print_json({"destinations": [r.as_json() for r in results]})
    else:
        for r in results:
            head = (f"verify {r.destination}: {r.checked} files ({human_bytes(r.bytes)}) in "
                    f"{r.duration_seconds:.1f}s - {r.rot} rotten, {r.missing} missing, "
                    f"{r.unreadable} unreadable")
            print(head if r.status == "completed" else f"verify {r.destination}: "
                  f"{r.status} - {r.reason}")
            for f in r.findings:
                print(f"  {f['kind']:<10} {f['path']}: {f['detail']}")
    return EXIT_FAILED if any(r.problems for r in results) else EXIT_OK


def cmd_backlog_check(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.cli_shared import print_json
    from photo_ingest.metrics import refresh_textfile
    from photo_ingest.notify.send import Notifications
    from photo_ingest.notify.stalls import check

    notes = Notifications.from_config(cfg)
    with catalog.connect(cfg.database.conninfo()) as conn:
        now, changes = check(cfg, conn)
    for change in changes:
        notes.send(change.message(cfg.notify.stall_minutes))
    refresh_textfile(cfg, "notify")
    if args.json:
        print_json({"backlogs": {k: {"waiting": b, "done": d} for k, (b, d) in now.items()},
                    "changes": [{"backlog": c.kind, "stalled": c.stalled} for c in changes]})
    else:
        for kind, (backlog, done) in now.items():
            print(f"{kind}: {backlog} waiting, {done} done")
        for c in changes:
            print(f"{c.kind}: {'stalled' if c.stalled else 'moving again'}")
    return EXIT_OK


def cmd_notify_test(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.ingest.copy import HOST
    from photo_ingest.notify.message import Message
    from photo_ingest.notify.send import Notifications

    if not cfg.notify.enabled:
        log.error("notifications are not configured: set notify.webhook_url_file")
        return EXIT_USAGE
    ok = Notifications.from_config(cfg).send(Message(
        "test", "photo-ingest: test notification",
        f"photo-ingest on {HOST} can reach you ({cfg.notify.format} format).",
        tags=("test_tube",)))
    print("delivered" if ok else "NOT delivered (see the log above)")
    return EXIT_OK if ok else EXIT_UNAVAILABLE
