"""A card given as a block device: mount it read-only where nobody else sees it, eject it.

`ingest /dev/sdb1` (the card unit, or root by hand) runs in a mount namespace of its own,
so the card's mount is invisible to the rest of the system and vanishes with the process,
even on a crash. The mount is read-only, nosuid, nodev, noexec: the card is never written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import pwd
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from photo_ingest.config import CardConfig, Config, keep_secrets
from photo_ingest.ingest.card import blkid, identify_device, matches
from photo_ingest.ingest.sessions import Card
from photo_ingest.ingest.stops import Stopped

log = logging.getLogger(__name__)

CLONE_NEWNS = 0x00020000
MOUNT_ROOT = Path("/run/photo-ingest/cards")

# Filesystems a camera card or reader may carry, and the options that make their names and
# times come out right without any write access.
FS_OPTIONS = {
    "vfat": "utf8,shortname=mixed,errors=remount-ro",
    "exfat": "iocharset=utf8,errors=remount-ro",
    "ntfs": "",
    "ntfs3": "",
    "ext4": "noload",  # noload: do not replay the journal, which would write to the card
    "ext3": "noload",
    "ext2": "",
    "hfsplus": "",
    "btrfs": "",
    "xfs": "norecovery",
}
BASE_OPTIONS = "ro,nosuid,nodev,noexec,noatime"


class DeviceError(RuntimeError):
    """The device cannot be ingested: not a block device, unknown filesystem, mount failed."""


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def private_mount_namespace() -> None:
    """Move this process into a new mount namespace whose mounts never propagate out."""
    unshare = getattr(os, "unshare", None)
    if unshare is not None:  # Python >= 3.12
        unshare(CLONE_NEWNS)
    else:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise DeviceError(f"cannot create a private mount namespace: {os.strerror(err)}")
    # Without this, mounts made here would still propagate to a shared parent mount.
    subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)


@contextlib.contextmanager
def mounted(device: str) -> Iterator[Path]:
    """Mount DEVICE read-only at a fresh folder (in the current namespace) for the block."""
    if not is_block_device(device):
        raise DeviceError(f"{device} is not a block device")
    fstype = blkid(device).get("TYPE")
    if fstype is None:
        raise DeviceError(f"{device} carries no filesystem that blkid recognises")
    if fstype not in FS_OPTIONS:
        raise DeviceError(f"{device} has a {fstype} filesystem, which is not ingested")
    where = MOUNT_ROOT / os.path.basename(device)
    where.mkdir(parents=True, exist_ok=True)
    options = ",".join(o for o in (BASE_OPTIONS, FS_OPTIONS[fstype]) if o)
    result = subprocess.run(["mount", "-t", fstype, "-o", options, device, str(where)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise DeviceError(f"mounting {device} ({fstype}) failed: {result.stderr.strip()}")
    log.info("mounted %s (%s) read-only at %s", device, fstype, where)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)
        with contextlib.suppress(OSError):
            where.rmdir()


def eject(device: str) -> str:
    """Flush and power off the card's disk where the bus allows it; says what it did."""
    disk = _parent_disk(device)
    delete = Path("/sys/block") / disk / "device" / "delete"
    if delete.exists():  # USB/SCSI: the reader detaches the medium; safe to pull
        try:
            delete.write_text("1")
            return f"{disk} powered off"
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            return f"{disk} could not be powered off ({exc.strerror}); it is unmounted"
    return f"{disk} is unmounted and safe to remove"


def _parent_disk(device: str) -> str:
    """sdb1 -> sdb, mmcblk0p1 -> mmcblk0, sdb (superfloppy) -> sdb."""
    name = os.path.basename(os.path.realpath(device))
    sys_path = Path("/sys/class/block") / name
    if (sys_path / "partition").exists():
        return sys_path.resolve().parent.name
    return name


@dataclass
class CardRun:
    """What happened to a card: the ingest summary (JSON form) or why it was left alone."""

    device: str
    card: Card
    summary: dict[str, Any] | None = None
    left_alone: str | None = None
    ejected: str | None = None


def ingest_card(cfg: Config, device: str, run: Callable[[Path, Card], dict[str, Any]]
                ) -> CardRun:
    """Check, mount privately, ingest as the library user, and eject on success only.

    RUN(mountpoint, card) performs the ingest and returns its JSON summary; it is called
    in a child process that has given up root, while this process keeps the right to
    unmount and eject.
    """
    if os.geteuid() != 0:
        raise DeviceError(f"ingesting the block device {device} needs root (to mount it): "
                          "run as root, or let card-ingest@.service do it")
    card = identify_device(device)
    result = CardRun(device, card)
    refused = _refusal(cfg.card, card)
    if refused:
        result.left_alone = refused
        return result
    private_mount_namespace()
    with mounted(device) as where:
        if cfg.card.require_dcim and not _has_dcim(where):
            result.left_alone = "no DCIM folder: not a camera card"
            return result
        if cfg.card.user is not None:
            keep_secrets(cfg)  # the child cannot read root's credentials folder
        result.summary = _as_library_user(cfg.card.user, lambda: run(where, card))
    files = result.summary["files"]
    if result.summary["status"] != "completed":
        return result  # never eject after a failure: the card may hold the only copy
    if files["copied"] + files["duplicate"] == 0:
        result.left_alone = "no photos or videos on the card"
    elif not result.summary.get("safe_to_format", True):
        # A required mirror lacks some of its files: the card may still be needed.
        result.left_alone = f"not safe to format: {result.summary.get('safe_reason')}"
    elif cfg.card.eject:
        # Powering the card off removes its device, and systemd then stops this unit
        # (BindsTo=): the session is complete, so that stop must not turn it into a failure.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        result.ejected = eject(device)
    return result


def _refusal(cfg: CardConfig, card: Card) -> str | None:
    denied = matches(card, cfg.deny)
    if denied:
        return f"card matches card.deny entry {denied!r}"
    if cfg.allow and not matches(card, cfg.allow):
        return "card is not in card.allow"
    return None


def _has_dcim(root: Path) -> bool:
    return any(e.is_dir() and e.name.upper() == "DCIM" for e in os.scandir(root))


def _as_library_user(user: str | None, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run WORK in a child process as USER (when root); its JSON result comes back by pipe."""
    if user is None or os.geteuid() != 0:
        return work()
    pw = pwd.getpwnam(user)
    _preload()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop every privilege for good, then ingest
        os.close(read_end)
        code = 1
        try:
            os.initgroups(user, pw.pw_gid)
            os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
            os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
            try:
                answer = work()
            except Exception as exc:  # handed to the parent, which reports it
                answer = {_ERROR: str(exc)}
            with os.fdopen(write_end, "w") as out:
                json.dump(answer, out, default=str)
            code = 0
        except BaseException:
            log.exception("the ingest as user %s failed", user)
        finally:
            os._exit(code)
    os.close(write_end)
    data, status = _result_of(pid, read_end)
    if not data:
        raise DeviceError(f"the ingest as user {user} ended without a result "
                          f"(wait status {status})")
    result: dict[str, Any] = json.loads(data)
    if _ERROR in result:
        raise DeviceError(result[_ERROR])
    return result


_ERROR = "__error__"


def _result_of(pid: int, fd: int) -> tuple[str, int]:
    """The child's answer and wait status. A stop signal meanwhile (systemd stopping the unit
    of a pulled card) reaches the child too, which ends its session and answers: wait for
    that answer rather than leave the session unrecorded and the child orphaned."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except Stopped:
            log.info("stop requested; waiting for the ingest to record where it stopped")
            continue
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except Stopped:
            continue
    return b"".join(chunks).decode(), status


def _preload() -> None:
    """Import now what the child would import lazily: after the drop to the library user it
    may not be allowed to read this Python installation (a venv under root's home, say)."""
    from prometheus_client import CollectorRegistry, generate_latest

    import photo_ingest.metrics
    import photo_ingest.mirror.metrics
    import photo_ingest.mirror.session
    import photo_ingest.notify.metrics
    import photo_ingest.notify.session
    import photo_ingest.notify.webhook  # noqa: F401 - it imports aiohttp
    from photo_ingest.catalog.migrate import available
    from photo_ingest.ingest.capture import CaptureReader

    available()
    CaptureReader().close()
    generate_latest(CollectorRegistry())
