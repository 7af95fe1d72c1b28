"""Where does a file go in the library? The layout template, rendered and sanitised.

The template is a `str.format` string over the tokens below, split on "/" into folders;
every rendered component is made safe on its own (no separators, no "." or "..", no
control characters, at most 255 bytes), so no value on a card can steer a path.
"""

from __future__ import annotations

import os
import string
import unicodedata
from datetime import datetime
from typing import Any

TOKENS = {
    "year": "capture year, 4 digits", "month": "capture month, 01-12",
    "day": "capture day, 01-31", "hour": "capture hour, 00-23", "minute": "00-59",
    "second": "00-59", "date": "YYYY-MM-DD", "filename": "original file name",
    "stem": "original name without extension", "ext": "original extension, no dot",
    "make": "camera make", "model": "camera model", "camera": "make and model",
    "media_type": "photo, raw or video", "card_label": "filesystem label of the card",
    "session": "ingest session id", "seq": "1-based position in the session (int)",
}
UNKNOWN = "Unknown"
NAME_MAX = 255


def check_template(template: str) -> None:
    """Raise ValueError saying what is wrong with a layout template."""
    if not template or template.startswith("/"):
        raise ValueError("must be a relative path template such as {year}/{month}/{filename}")
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None and field not in TOKENS:
            raise ValueError(f"unknown token {{{field}}}; known: {', '.join(TOKENS)}")
    try:
        render(template, example_values())
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"cannot be rendered: {exc}") from exc


def values(*, captured: datetime, name: bytes, media_type: str, make: str | None,
           model: str | None, card_label: str | None, session: int, seq: int) -> dict[str, Any]:
    filename = decode_name(name)
    stem, ext = os.path.splitext(filename)
    return {
        "year": f"{captured.year:04d}", "month": f"{captured.month:02d}",
        "day": f"{captured.day:02d}", "hour": f"{captured.hour:02d}",
        "minute": f"{captured.minute:02d}", "second": f"{captured.second:02d}",
        "date": f"{captured.year:04d}-{captured.month:02d}-{captured.day:02d}",
        "filename": filename, "stem": stem,
        "ext": ext[1:], "make": make or UNKNOWN, "model": model or UNKNOWN,
        "camera": camera_name(make, model), "media_type": media_type,
        "card_label": card_label or UNKNOWN, "session": session, "seq": seq,
    }


def example_values() -> dict[str, Any]:
    return values(captured=datetime(2024, 7, 1, 12, 0, 0), name=b"IMG_0001.JPG",
                  media_type="photo", make="Canon", model="Canon EOS R5",
                  card_label="EOS_DIGITAL", session=1, seq=1)


def render(template: str, vals: dict[str, Any]) -> str:
    """The relative library path for these values, every component sanitised."""
    # Values are made separator-free first: only the template itself makes folders.
    safe = {k: v.replace("/", "_").replace("\\", "_") if isinstance(v, str) else v
            for k, v in vals.items()}
    parts = [sanitize(p) for p in template.format(**safe).split("/") if p]
    if not parts:
        raise ValueError("renders to an empty path")
    return "/".join(parts)


def camera_name(make: str | None, model: str | None) -> str:
    """'Canon' + 'Canon EOS R5' -> 'Canon EOS R5'; no make repeated inside the model."""
    if not model:
        return make or UNKNOWN
    if not make or model.lower().startswith(make.split()[0].lower()):
        return model
    return f"{make.split()[0]} {model}"


def decode_name(name: bytes) -> str:
    """A file name as text: undecodable bytes become '_' (the original stays in the catalog)."""
    return name.decode("utf-8", "replace").replace("\ufffd", "_")


def display(path: bytes) -> str:
    """A source path for humans and the catalog: exact for UTF-8, \\xNN for other bytes."""
    return path.decode("utf-8", "backslashreplace")


def sanitize(component: str) -> str:
    """One path component that cannot escape its folder or hide itself."""
    cleaned = "".join(
        # Cs: a lone surrogate (from a broken JSON escape) cannot be written as UTF-8
        "_" if ch in "/\\" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")
        else ch
        for ch in unicodedata.normalize("NFC", component)
    ).strip()
    if cleaned.startswith("."):
        # ' .JPG' keeps its extension as '_.JPG'; '.hidden.JPG' becomes '_hidden.JPG'
        pure_ext = os.path.splitext("x" + cleaned)[0] == "x"
        cleaned = "_" + (cleaned if pure_ext else cleaned[1:])
    if not cleaned.strip("._"):
        cleaned = "_" if not cleaned else cleaned.replace(".", "_")
    return truncate(cleaned)


def truncate(name: str, limit: int = NAME_MAX) -> str:
    """Shorten a file name to `limit` UTF-8 bytes, keeping its extension."""
    if len(name.encode()) <= limit:
        return name
    stem, ext = _split_ext(name)
    budget = limit - len(ext.encode())
    cut = stem.encode()[:budget].decode("utf-8", "ignore")
    return cut + ext


def _split_ext(name: str) -> tuple[str, str]:
    """Stem and extension; an 'extension' longer than 16 bytes is part of the stem."""
    stem, ext = os.path.splitext(name)
    return (name, "") if len(ext.encode()) > 16 else (stem, ext)


def with_suffix(relpath: str, suffix: str) -> str:
    """IMG_0001.JPG + 'a1b2c3d4' -> IMG_0001_a1b2c3d4.JPG (still within NAME_MAX)."""
    folder, name = os.path.split(relpath)
    stem, ext = _split_ext(name)
    tail = f"_{suffix}{ext}"
    stem = stem.encode()[: NAME_MAX - len(tail.encode())].decode("utf-8", "ignore")
    return os.path.join(folder, stem + tail)


def sidecar_path(primary_relpath: str, primary_name: bytes, sidecar_name: bytes) -> str:
    """A sidecar follows its primary's library name: IMG_1_ab12.CR2 -> IMG_1_ab12.XMP."""
    folder, final = os.path.split(primary_relpath)
    sc = decode_name(sidecar_name)
    orig = decode_name(primary_name)
    if sc.lower().startswith(orig.lower() + "."):  # IMG_1.CR2.xmp style
        name = final + sc[len(orig):]
    else:
        name = os.path.splitext(final)[0] + os.path.splitext(sc)[1]
    return os.path.join(folder, sanitize(name))
