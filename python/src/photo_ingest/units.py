"""The shipped systemd units and udev rule, rendered for an installation.

The files in photo_ingest/systemd/ are the only copies: Debian and Raspberry Pi OS users
install them with `photo-ingest install-units`, the Nix package substitutes the same
placeholders, and site-specific settings (paths, users) go into drop-ins, never into
edited copies.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path

from photo_ingest.config import Config

UNITS = ("card-ingest@.service", "photo-ingest-metadata.service",
         "photo-ingest-metadata.timer", "photo-ingest-immich-sync.service",
         "photo-ingest-mirror.service", "photo-ingest-mirror.timer",
         "photo-ingest-verify.service", "photo-ingest-verify.timer",
         "photo-ingest-backlog-check.service", "photo-ingest-backlog-check.timer",
         "photo-ingest-watch.service")
RULE = "90-photo-ingest.rules"
SERVICE_USER = "photo-ingest"


def shipped(name: str) -> str:
    return resources.files("photo_ingest").joinpath("systemd", name).read_text("utf-8")


def default_bindir() -> Path:
    """Where this installation's `photo-ingest` script is: beside its Python, else on PATH."""
    beside = Path(sys.executable).parent
    if (beside / "photo-ingest").exists():
        return beside
    found = shutil.which("photo-ingest")
    return Path(found).parent if found else beside


def render(name: str, bindir: Path) -> str:
    return shipped(name).replace("@bindir@", os.fspath(bindir))


def drop_ins(cfg: Config, config_path: Path, user: str) -> dict[str, str]:
    """Per-unit drop-ins: the config file, the folders each unit may write, the user."""
    library = os.fspath(cfg.library.path)
    textfiles = os.fspath(cfg.metrics.textfile_dir) if cfg.metrics.textfile_dir else ""
    env = f"Environment=PHOTO_INGEST_CONFIG={config_path}\n"
    account = f"User={user}\nGroup={user}\n"
    # "-": a metrics folder that does not exist (yet) must not keep the unit from starting.
    optional = f" -{textfiles}" if textfiles else ""
    # "-" too: a mirror that is not mounted is reported by the job, not a unit that fails.
    mirrors = "".join(f" -{m.path}" for m in cfg.mirrors)
    metrics_only = f"ReadWritePaths={optional.strip()}\n" if textfiles else ""
    return {
        "card-ingest@.service": f"[Service]\n{env}ReadWritePaths={library}{optional}"
                                f"{mirrors}\n",
        "photo-ingest-metadata.service": f"[Service]\n{env}{account}{metrics_only}",
        "photo-ingest-immich-sync.service": f"[Service]\n{env}{account}",
        "photo-ingest-mirror.service":
            f"[Service]\n{env}{account}"
            + (f"ReadWritePaths={(optional + mirrors).strip()}\n" if optional + mirrors
               else ""),
        "photo-ingest-verify.service": f"[Service]\n{env}{account}{metrics_only}",
        "photo-ingest-backlog-check.service": f"[Service]\n{env}{account}{metrics_only}",
        "photo-ingest-watch.service": _watch_drop_in(cfg, env, user, optional),
    }


def _watch_drop_in(cfg: Config, env: str, user: str, optional: str) -> str:
    """The watcher writes library files as the library's owner; it may change the watched
    folders it archives or deletes from, and the archive folders. An archive folder must
    exist before the unit starts (ProtectSystem=strict: the watcher cannot make it then);
    "-" keeps a missing one from failing the unit's namespace, the watcher says why."""
    owner = cfg.card.user or user
    writable = [os.fspath(cfg.library.path)]
    for w in cfg.watch:
        if w.after != "leave":
            writable.append(os.fspath(w.path))
        if w.archive_dir is not None:
            writable.append(f"-{w.archive_dir}")
    return (f"[Service]\n{env}User={owner}\nGroup={owner}\n"
            f"ReadWritePaths={' '.join(writable)}{optional}\n")


def install(prefix: Path, cfg: Config, config_path: Path, *, bindir: Path | None = None,
            user: str = SERVICE_USER) -> list[Path]:
    """Write the units, their drop-ins and the udev rule under PREFIX; returns the paths."""
    bindir = bindir or default_bindir()
    unit_dir = prefix / "etc/systemd/system"
    rule_dir = prefix / "etc/udev/rules.d"
    written = []
    for name in UNITS:
        written.append(_write(unit_dir / name, render(name, bindir)))
    for name, text in drop_ins(cfg, config_path, user).items():
        header = "# Written by `photo-ingest install-units`: this site's paths and user.\n"
        written.append(_write(unit_dir / f"{name}.d" / "50-photo-ingest.conf", header + text))
    written.append(_write(rule_dir / RULE, shipped(RULE)))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
