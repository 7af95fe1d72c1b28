"""`photo-ingest sync` and `photo-ingest check`.

`add_commands(subparsers)` registers both on the main parser; their handlers take
`(cfg, args)` like every other command.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from photo_ingest import config
from photo_ingest.cli_shared import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    positive_int,
    print_json,
)
from photo_ingest.immich.config import ImmichConfig

log = logging.getLogger("photo_ingest")

NOT_CONFIGURED = ("Immich sync is not configured: set immich.url and immich.api_key_file "
                  "in the configuration file (see docs/immich.md)")


def add_commands(sub: Any) -> None:
    """Register `sync` and `check` on an argparse sub-parser collection."""
    c = sub.add_parser(
        "sync", help="upload every catalogued asset to Immich (the sync service)",
        description="Keep Immich in step with the library: every asset uploaded once "
        "(or scanned in place, in external-library mode), in the album its template names, "
        "its Immich id recorded. Without --once it runs as a service: woken by new assets "
        "and a periodic tick, serving /metrics, until SIGTERM.")
    c.add_argument("--once", action="store_true",
                   help="drain the backlog and exit instead of running as a service")
    c.add_argument("--retry-failed", action="store_true",
                   help="first put failed, trashed and skipped assets back in the queue")
    c.add_argument("--workers", type=positive_int,
                   help="concurrent uploads (default: immich.workers, 4)")
    c.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    c.set_defaults(func=cmd_sync)

    c = sub.add_parser("check", help="test the Immich connection and the API key",
                       description="Connect to Immich, check the API key and say exactly "
                       "which permissions this configuration needs and the key lacks.")
    c.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    c.set_defaults(func=cmd_check)


def cmd_sync(cfg: config.Config, args: argparse.Namespace) -> int:
    from photo_ingest.immich.sync import run
    from photo_ingest.sdnotify import Notifier

    icfg = cfg.immich
    if not icfg.enabled:
        log.error("%s", NOT_CONFIGURED)
        return EXIT_USAGE
    summary = asyncio.run(run(cfg, icfg, once=args.once, workers=args.workers,
                              retry_failed=args.retry_failed, notifier=Notifier()))
    data = summary.as_json()
    if args.json:
        print_json(data)
    else:
        for line in summary_lines(data):
            print(line)
    if summary.status == "unavailable":
        return EXIT_UNAVAILABLE
    if summary.status == "completed" or (summary.status == "stopped" and not args.once):
        return EXIT_OK
    return EXIT_FAILED


def summary_lines(s: dict[str, Any]) -> list[str]:
    a = s["assets"]
    done = (f"{a['scanned']} handed to Immich's library scan" if s["mode"] == "library"
            else f"{a['uploaded']} uploaded, {a['duplicate']} duplicate")
    lines = [f"immich sync: {s['status']} in {s['duration_seconds']:.1f}s — {done}, "
             f"{a['trashed']} in Immich's trash, {a['skipped']} skipped, {a['failed']} "
             f"failed, {a['retrying']} waiting for a retry; "
             f"{s['bytes_uploaded'] / 1e6:.1f} MB sent ({s['mb_per_second']:.1f} MB/s, "
             f"{s['assets_per_second']:.1f} assets/s); "
             f"{s['album_added']} added to albums"]
    if s["albums_created"]:
        lines.append("  new albums: " + ", ".join(s["albums_created"]))
    for p in s["problems"]:
        lines.append(f"  {p['state']} {p['library_path']}: {p['reason']}")
    if s["pending_after"]:
        lines.append(f"  {s['pending_after']} asset(s) still waiting")
    if s["error"]:
        lines.append(f"error: {s['error']}")
    return lines


def cmd_check(cfg: config.Config, args: argparse.Namespace) -> int:
    icfg = cfg.immich
    if not icfg.enabled:
        log.error("%s", NOT_CONFIGURED)
        return EXIT_USAGE
    code, report = asyncio.run(check(cfg, icfg))
    if args.json:
        print_json(report)
    else:
        for line in report["lines"]:
            print(line)
    return code


async def check(cfg: config.Config, icfg: ImmichConfig) -> tuple[int, dict[str, Any]]:
    """Connect, identify the key, compare its permissions with what ICFG needs."""
    from photo_ingest.immich.client import ApiError, ImmichClient, ImmichError, Unreachable
    from photo_ingest.immich.sync import permission_problems, required_permissions

    report: dict[str, Any] = {"url": icfg.url, "mode": icfg.mode, "ok": False,
                              "missing": [], "lines": []}
    lines: list[str] = report["lines"]
    key = icfg.api_key()
    async with ImmichClient(icfg.url or "", key, timeout=icfg.timeout, retries=1,
                            ca_file=icfg.ca_file) as client:
        try:
            info = await client.connect()
        except Unreachable as exc:
            lines.append(f"UNREACHABLE: {exc}")
            report["error"] = str(exc)
            return EXIT_UNAVAILABLE, report
        except ApiError as exc:
            msg = (f"Immich does not accept the API key in {icfg.api_key_file} "
                   f"({exc.message})" if exc.status == 401 else str(exc))
            lines.append(f"KEY REJECTED: {msg}")
            report["error"] = msg
            return EXIT_FAILED, report
        except ImmichError as exc:
            lines.append(f"ERROR: {exc}")
            report["error"] = str(exc)
            return EXIT_UNAVAILABLE, report
        report |= {"api_url": info.api_url, "version": info.version, "user": info.user_email,
                   "admin": info.is_admin, "key": info.key_name,
                   "permissions": list(info.permissions),
                   "needed": required_permissions(icfg)}
        lines.append(f"Immich {info.version} at {info.api_url}")
        who = info.user_email or "(user unknown: the key lacks user.read)"
        lines.append(f"user {who}{' (admin)' if info.is_admin else ''}, key {info.key_name!r}"
                     f" with {', '.join(info.permissions) or 'no permissions'}")
        problems = permission_problems(info, icfg)
        report["missing"] = problems
        what = f"{icfg.mode} mode" + (f", albums {icfg.album!r}" if icfg.album else "")
        if problems:
            lines.append(f"MISSING for {what}:")
            lines += [f"  {p}" for p in problems]
            lines.append("Give the key these permissions in Immich (Account Settings > "
                         "API Keys) or make a new key with them.")
            return EXIT_FAILED, report
        if icfg.mode == "library":
            path = icfg.library_path or str(cfg.library.path)
            lines.append(f"external library: Immich must see the library at {path} "
                         "(read-only is enough); see docs/immich.md")
        report["ok"] = True
        lines.append(f"OK: the key has every permission this configuration needs ({what})")
        return EXIT_OK, report
