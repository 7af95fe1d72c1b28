"""Library paths from templates: tokens, sanitising, suffixes, sidecar names."""

from __future__ import annotations

from datetime import datetime

import pytest

from photo_ingest.ingest import layout


def vals(name: bytes = b"IMG_0001.JPG", **kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(captured=datetime(2024, 3, 9, 7, 5, 1), name=name,
                                   media_type="photo", make="Canon", model="Canon EOS R5",
                                   card_label="EOS_DIGITAL", session=12, seq=7)
    base.update(kw)
    return layout.values(**base)  # type: ignore[arg-type]


def test_default_template() -> None:
    assert layout.render("{year}/{month}/{day}/{filename}", vals()) == "2024/03/09/IMG_0001.JPG"


def test_every_token() -> None:
    template = ("{date}/{hour}{minute}{second}/{camera}/{make}-{model}/{card_label}/"
                "s{session}-{seq:04}-{media_type}-{stem}.{ext}")
    assert layout.render(template, vals()) == (
        "2024-03-09/070501/Canon EOS R5/Canon-Canon EOS R5/EOS_DIGITAL/"
        "s12-0007-photo-IMG_0001.JPG")


@pytest.mark.parametrize(("make", "model", "camera"), [
    ("Canon", "Canon EOS R5", "Canon EOS R5"),
    ("NIKON CORPORATION", "NIKON Z 6", "NIKON Z 6"),
    ("FUJIFILM", "X-T5", "FUJIFILM X-T5"),
    (None, None, "Unknown"),
    ("Apple", None, "Apple"),
])
def test_camera_name_has_no_repeated_make(make: str | None, model: str | None,
                                          camera: str) -> None:
    assert layout.camera_name(make, model) == camera


@pytest.mark.parametrize(("name", "expected"), [
    (b"../../etc/passwd.JPG", "2024/_._.._etc_passwd.JPG"),
    (b"..", "2024/__"),
    (b".hidden.JPG", "2024/_hidden.JPG"),
    (b" .JPG", "2024/_.JPG"),                 # the extension survives
    (b".JPG", "2024/_.JPG"),
    (b"new\nline\t.JPG", "2024/new_line_.JPG"),
    (b"caf\xe9.JPG", "2024/caf_.JPG"),          # latin-1 byte, not UTF-8
    (b"back\\slash.JPG", "2024/back_slash.JPG"),
    ("Été 2024.JPG".encode(), "2024/Été 2024.JPG"),
])
def test_hostile_names_are_sanitised(name: bytes, expected: str) -> None:
    assert layout.render("{year}/{filename}", vals(name)) == expected


def test_values_cannot_add_folders() -> None:
    path = layout.render("{make}/{filename}", vals(make="../../x"))
    assert path == "_._.._x/IMG_0001.JPG"
    assert ".." not in path.split("/")


def test_long_names_keep_extension_and_fit() -> None:
    name = ("é" * 200 + ".JPG").encode()  # 404 bytes
    path = layout.render("{filename}", vals(name))
    assert path.endswith(".JPG") and len(path.encode()) <= 255
    suffixed = layout.with_suffix(path, "0123abcd")
    assert suffixed.endswith("_0123abcd.JPG") and len(suffixed.encode()) <= 255


def test_suffix_and_sidecar_names() -> None:
    assert layout.with_suffix("2024/IMG_1.CR2", "ab12cd34") == "2024/IMG_1_ab12cd34.CR2"
    assert layout.sidecar_path("2024/IMG_1_ab12.CR2", b"IMG_1.CR2", b"IMG_1.XMP") == \
        "2024/IMG_1_ab12.XMP"
    assert layout.sidecar_path("2024/IMG_1.CR2", b"IMG_1.CR2", b"IMG_1.CR2.xmp") == \
        "2024/IMG_1.CR2.xmp"


@pytest.mark.parametrize("bad", ["", "/x/{filename}", "{year}/{bogus}", "{year:d}"])
def test_bad_templates_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        layout.check_template(bad)
