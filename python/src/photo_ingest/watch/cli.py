"""`photo-ingest watch [DIR...] [--once]`: the watcher from the command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from photo_ingest import config

log = logging.getLogger("photo_ingest")


def add_command(sub: Any) -> None:
    c = sub.add_parser(
        "watch", help="ingest files that land in watched folders, once they are complete",
        description="Watch folders (inotify, recursive) and ingest every photo and video "
        "once it is complete: size and mtime unchanged for stable_seconds and no one "
        "writing it. Then leave, archive or delete the source, per folder. Without DIR, "
        "every [[watch]] folder of the configuration is watched.")
    c.add_argument("dirs", nargs="*", metavar="DIR", type=Path,
                   help="folders to watch (default: the configured [[watch]] folders); a "
                   "configured folder keeps its settings, others are left alone after ingest")
    c.add_argument("--once", action="store_true", help="ingest what is there and complete, "
                   "then exit (for cron and tests)")
    c.add_argument("--stable-seconds", type=float, metavar="S",
                   help="override stable_seconds of every watched folder")
    c.add_argument("--json", action="store_true", help="print the sessions as JSON at exit")
    c.set_defaults(func=cmd_watch)


def watches_for(cfg: config.Config, dirs: list[Path], stable: float | None,
                ) -> tuple[Any, ...]:
    from dataclasses import replace

    from photo_ingest.watch.config import WatchConfig, check_distinct, check_library

    if not dirs:
        chosen = list(cfg.watch)
    else:
        configured = {w.path: w for w in cfg.watch}
        chosen = []
        for d in dirs:
            path = Path(os.path.normpath(os.path.abspath(d)))
            chosen.append(configured.get(path) or WatchConfig(path=path, name=path.name))
    if stable is not None:
        if not 0 < stable <= 86400:
            raise config.ConfigError(f"--stable-seconds: must be above 0, got {stable}")
        chosen = [replace(w, stable_seconds=stable) for w in chosen]
    watches = tuple(chosen)
    check_distinct(watches, "watch")
    check_library(watches, cfg.library.path)
    return watches


def cmd_watch(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.cli_shared import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, print_json
    from photo_ingest.ingest.pipeline import IngestError
    from photo_ingest.sdnotify import Notifier
    from photo_ingest.watch.service import Watcher, WatchError

    watches = watches_for(cfg, args.dirs, args.stable_seconds)
    try:
        watcher = Watcher(cfg, watches, once=args.once, notifier=Notifier())
    except WatchError as exc:
        log.error("%s", exc)
        return EXIT_UNAVAILABLE

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        watcher.stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        summaries = watcher.run()
    except IngestError as exc:
        log.error("%s", exc)
        return EXIT_UNAVAILABLE
    except psycopg.Error as exc:  # the catalog went away: systemd restarts the unit
        log.error("catalog database error: %s", str(exc).strip())
        return EXIT_UNAVAILABLE
    if args.json:
        print_json(watcher.report())
    bad = [s for s in summaries if s.status != "completed"]
    return EXIT_FAILED if args.once and bad else EXIT_OK
