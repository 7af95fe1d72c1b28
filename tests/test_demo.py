"""The README's first command, tests/demo: the whole pipeline on the sample card."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fake_immich.validation import SpecMissing, get_spec

REPO = Path(__file__).resolve().parents[1]


def spec_present() -> bool:
    try:
        get_spec()
    except SpecMissing:
        return False
    return True


def test_demo_runs_every_stage_on_the_sample_card() -> None:
    result = subprocess.run([sys.executable, str(REPO / "tests" / "demo.py")],
                            capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, "PYTHONPATH": str(REPO / "python" / "src")})
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # ingest: 13 assets and 2 sidecars, a duplicate; the same card again copies nothing
    assert "session 1: completed" in out and "15 copied, 1 duplicate, 1 skipped" in out
    assert "session 2: completed" in out and "0 copied, 16 duplicate, 1 skipped" in out
    assert "13 read, 0 refreshed, 13 ok, 0 failed" in out          # extract
    assert "2024/07/14/Été 2024.JPG    2024-07-14 14:20:00  EXIF:OffsetTimeOriginal" in out
    if spec_present():
        assert "13 uploaded" in out
        assert "the stand-in Immich now holds 13 assets" in out
        assert "album 2024-07-14: Été 2024.JPG" in out
        assert "requests that broke Immich's API contract: 0" in out
    else:
        assert "Immich upload skipped" in out
    assert "metadata: 13 ok, 0 failed, 0 waiting" in out           # status
