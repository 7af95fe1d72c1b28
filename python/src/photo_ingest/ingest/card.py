"""Who is this card? Filesystem UUID, label and reader serial, from udev when known."""

from __future__ import annotations

import logging
import os

from photo_ingest.ingest.sessions import Card

log = logging.getLogger(__name__)


def identify(source: str) -> Card:
    """The identity of the block device holding SOURCE; empty for non-block sources."""
    try:
        import pyudev

        dev_number = os.stat(source).st_dev
        device = pyudev.Devices.from_device_number(pyudev.Context(), "block", dev_number)
    except Exception as exc:  # not a block device, no udev database, no pyudev: unknown
        log.debug("no udev identity for %s: %s", source, exc)
        return Card()
    props = device.properties
    return Card(
        device=device.device_node,
        uuid=props.get("ID_FS_UUID"),
        label=props.get("ID_FS_LABEL"),
        serial=props.get("ID_SERIAL_SHORT") or props.get("ID_SERIAL"),
    )
