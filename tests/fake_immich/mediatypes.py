"""File types Immich 3.x accepts, as ``GET /api/server/media-types`` reports them.

The lists are facts read from Immich's server (``server/src/utils/mime-types.ts``): the
upload endpoint accepts an ``assetData`` part whose file name ends in an image or video
extension and a ``sidecarData`` part ending in ``.xmp``; anything else is refused with
``400 {"message": "Unsupported file type <name>"}``.  Extensions are lower-case with the
dot, compared case-insensitively.
"""

from __future__ import annotations

from pathlib import PurePosixPath

RAW = (
    ".3fr", ".ari", ".arw", ".cap", ".cin", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf",
    ".fff", ".iiq", ".k25", ".kdc", ".mrw", ".nef", ".nrw", ".orf", ".ori", ".pef", ".psd",
    ".raf", ".raw", ".rw2", ".rwl", ".sr2", ".srf", ".srw", ".x3f",
)
IMAGE = (
    ".avif", ".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp",
    *RAW,
    ".heic", ".heif", ".hif", ".insp", ".jp2", ".jpe", ".jxl", ".mpo", ".svg", ".tif", ".tiff",
)
VIDEO = (
    ".3gp", ".3gpp", ".avi", ".flv", ".insv", ".m2t", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4",
    ".mpe", ".mpeg", ".mpg", ".mts", ".mxf", ".ts", ".vob", ".webm", ".wmv",
)
SIDECAR = (".xmp",)


def extension(filename: str) -> str:
    return PurePosixPath(filename).suffix.lower()


def is_image(filename: str) -> bool:
    return extension(filename) in IMAGE


def is_video(filename: str) -> bool:
    return extension(filename) in VIDEO


def is_asset(filename: str) -> bool:
    return is_image(filename) or is_video(filename)


def is_sidecar(filename: str) -> bool:
    return extension(filename) in SIDECAR


def asset_type(filename: str) -> str:
    """``AssetTypeEnum`` of a file name: IMAGE, VIDEO or OTHER."""
    if is_image(filename):
        return "IMAGE"
    if is_video(filename):
        return "VIDEO"
    return "OTHER"
