"""Properties of the layout renderer and sanitiser, over generated names, values and templates.

Whatever a card holds (names of any bytes, EXIF makes and models of any text, any capture
date) and whatever template is configured, a rendered library path stays inside the library,
has no empty, '.' or '..' component, no component over 255 bytes, is valid UTF-8, and is the
same every time. CI runs a fixed set of examples (conftest.py: profile "ci").
"""

from __future__ import annotations

import os
import posixpath
from datetime import datetime
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from photo_ingest.ingest import layout

# Text as hostile as Python strings get: controls, separators, lone surrogates, combining marks.
texts = st.text(st.characters(codec=None, categories=None), max_size=300)
names = st.one_of(
    st.binary(min_size=1, max_size=300),
    texts.map(lambda t: t.encode("utf-8", "surrogatepass") or b"x"),
    st.sampled_from([b"..", b".", b"...", b"../../etc/passwd", b"..\\..\\x.JPG", b"/abs.JPG",
                     b"\\\\server\\share.JPG", b"~", b"-rf", b".JPG", b"a.", b"\x00",
                     "\u0958".encode() * 85, b"\xe9" * 255, b"a." + b"b" * 253]),
).filter(lambda n: b"/" not in n)  # a name from a directory entry never holds a slash
maybe_text = st.one_of(st.none(), texts, st.sampled_from(["..", ".", "../..", "/", "\\"]))
captured = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59))

_TOKENS = [f"{{{t}}}" for t in layout.TOKENS] + ["{seq:04}", "{session:>8}", "{filename:.5}"]
_LITERALS = ["", ".", "..", "...", "x", " ", "-", "\\", "~", "{{", "}}", "\n", "é"]
components = st.lists(st.sampled_from(_TOKENS + _LITERALS), min_size=1, max_size=4).map("".join)
templates = st.lists(components, min_size=1, max_size=6).map("/".join)


def render_values(name: bytes, make: str | None, model: str | None, label: str | None,
                  when: datetime) -> dict[str, Any]:
    return layout.values(captured=when, name=name, media_type="photo", make=make, model=model,
                         card_label=label, session=7, seq=3)


def assert_safe(relpath: str) -> None:
    relpath.encode("utf-8")  # strict: raises on anything that is not valid UTF-8
    assert not relpath.startswith("/")
    parts = relpath.split("/")
    for part in parts:
        assert part not in ("", ".", ".."), relpath
        assert len(part.encode()) <= layout.NAME_MAX, relpath
        assert "\x00" not in part and "\\" not in part
    library = "/srv/library"
    inside = posixpath.normpath(posixpath.join(library, relpath))
    assert inside.startswith(library + "/"), relpath


@given(templates, names, maybe_text, maybe_text, maybe_text, captured)
def test_no_rendered_path_escapes_the_library(template: str, name: bytes, make: str | None,
                                              model: str | None, label: str | None,
                                              when: datetime) -> None:
    try:
        layout.check_template(template)
    except ValueError:
        assume(False)
    vals = render_values(name, make, model, label, when)
    try:
        relpath = layout.render(template, vals)
    except ValueError as exc:  # a template of optional parts only, all empty this time
        assert "empty path" in str(exc)
        return
    assert_safe(relpath)
    assert layout.render(template, render_values(name, make, model, label, when)) == relpath
    # only the template makes folders: values never add any
    assert len(relpath.split("/")) <= len([c for c in template.split("/") if c])


@given(names, captured, st.text("0123456789abcdef", min_size=8, max_size=40))
def test_suffixed_and_sidecar_names_stay_safe(name: bytes, when: datetime, digest: str) -> None:
    primary = layout.render("{year}/{filename}", render_values(name, None, None, None, when))
    suffixed = layout.with_suffix(primary, digest)
    assert_safe(suffixed)
    assert posixpath.dirname(suffixed) == posixpath.dirname(primary)
    assert f"_{digest}" in suffixed
    for sidecar in (name + b".xmp", os.path.splitext(name)[0] + b".XMP", b"x.THM", name):
        path = layout.sidecar_path(suffixed, name, sidecar)
        assert_safe(path)
        assert posixpath.dirname(path) == posixpath.dirname(primary)


@given(texts)
def test_sanitised_components_are_plain_names(component: str) -> None:
    clean = layout.sanitize(component)
    assert_safe(clean)
    assert "/" not in clean and not clean.startswith(".")


@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_ -]{0,200}\.(JPG|CR3|MP4)", fullmatch=True),
       captured)
def test_ordinary_names_are_kept_as_they_are(name: str, when: datetime) -> None:
    name = name.strip() if name.strip() == name else name.replace(" ", "_")
    relpath = layout.render("{year}/{month}/{day}/{filename}",
                            render_values(name.encode(), "Canon", "EOS R5", None, when))
    assert relpath == f"{when.year:04d}/{when.month:02d}/{when.day:02d}/{name}"
