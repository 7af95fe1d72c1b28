"""Who is this card? Filesystem UUID, label and reader serial of the device holding a path.

udev's database knows all three when udevd runs; without it (containers, early boot) the
filesystem's own UUID and label still come from blkid, which reads the superblock.
"""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any

from photo_ingest.ingest.sessions import Card

log = logging.getLogger(__name__)


def identify(source: str) -> Card:
    """The identity of the block device holding SOURCE; empty for non-block sources."""
    try:
        import pyudev

        dev_number = os.stat(source).st_dev
        device = pyudev.Devices.from_device_number(pyudev.Context(), "block", dev_number)
    except Exception as exc:  # not on a block device (tmpfs, overlay, NFS): no identity
        log.debug("no block device identity for %s: %s", source, exc)
        return Card()
    return _from_udev(device)


def identify_device(node: str) -> Card:
    """The identity of the block device NODE itself (/dev/sdb1)."""
    try:
        import pyudev

        device = pyudev.Devices.from_device_file(pyudev.Context(), node)
    except Exception as exc:  # no udev: the filesystem still knows its UUID and label
        log.debug("no udev entry for %s: %s", node, exc)
        probed = blkid(node)
        return Card(device=node, uuid=probed.get("UUID"), label=probed.get("LABEL"))
    return _from_udev(device)


def matches(card: Card, patterns: tuple[str, ...]) -> str | None:
    """The first "uuid:…", "label:…" or "serial:…" pattern that names CARD, if any."""
    for pattern in patterns:
        kind, _, value = pattern.partition(":")
        have = {"uuid": card.uuid, "label": card.label, "serial": card.serial}.get(kind)
        if have is not None and have.casefold() == value.casefold():
            return pattern
    return None


def _from_udev(device: Any) -> Card:
    props = device.properties
    card = Card(
        device=device.device_node,
        uuid=props.get("ID_FS_UUID"),
        label=props.get("ID_FS_LABEL"),
        serial=props.get("ID_SERIAL_SHORT") or props.get("ID_SERIAL"),
    )
    if card.device and not (card.uuid and card.label):
        probed = blkid(card.device)
        card.uuid = card.uuid or probed.get("UUID")
        card.label = card.label or probed.get("LABEL")
    return card


def blkid(device: str) -> dict[str, str]:
    """blkid's `-o export` answer for DEVICE as a dict; empty when it cannot tell."""
    try:
        # -p probes the device itself: blkid's cache goes stale when loop devices are reused
        out = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
