"""The Nix side: every .nix file parses, and the NixOS module's evaluation tests (tests/nix/)
pass against nixpkgs' lib when one is given in $PHOTO_INGEST_NIXPKGS_LIB (a nixpkgs lib/
folder; this machine's Nix is too old to fetch and evaluate nixpkgs itself)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NIX_FILES = sorted(p for p in ROOT.rglob("*.nix")
                   if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))
LIB_ENV = "PHOTO_INGEST_NIXPKGS_LIB"

needs_nix = pytest.mark.skipif(shutil.which("nix-instantiate") is None,
                               reason="nix-instantiate not installed (tests/bootstrap.sh "
                                      "installs Debian's nix-bin)")


def test_the_nix_files_are_there() -> None:
    names = {str(p.relative_to(ROOT)) for p in NIX_FILES}
    assert {"flake.nix", "nix/package.nix", "nix/module.nix", "tests/nix/default.nix",
            "tests/nixos/card.nix", "tests/nixos/immich.nix",
            "tests/nixos/metrics.nix"} <= names, names


@needs_nix
@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_parses(path: Path) -> None:
    out = subprocess.run(["nix-instantiate", "--parse", str(path)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


def test_flake_lock_pins_nixos_26_05() -> None:
    lock = json.loads((ROOT / "flake.lock").read_text())
    node = lock["nodes"]["nixpkgs"]
    assert node["original"] == {"owner": "NixOS", "ref": "nixos-26.05", "repo": "nixpkgs",
                                "type": "github"}
    assert node["locked"]["rev"] == "7fc6f2c20af09cdcaf48b92ec3121860139ec668"
    assert node["locked"]["narHash"] == "sha256-bNyvoIyOCu7lzoCpWKWGIsHpTtERUWzqYWFPlN++WTw="
    assert 'url = "github:NixOS/nixpkgs/nixos-26.05"' in (ROOT / "flake.nix").read_text()


@needs_nix
def test_module_evaluation() -> None:
    lib = os.environ.get(LIB_ENV)
    if not lib:
        pytest.skip(f"${LIB_ENV} is not set: give it a nixpkgs lib/ folder (e.g. from "
                    "github:nix-community/nixpkgs.lib) to run tests/nix")
    out = subprocess.run([str(ROOT / "tests/nix/run"), lib], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["failed"] == [] and result["passed"] == result["total"] > 50, result
