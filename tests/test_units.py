"""The shipped units and rule: rendered by install-units, valid for systemd, hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

from photo_ingest import units

TARGETS = {"photo-ingest-metadata.service": 2.0, "photo-ingest-immich-sync.service": 2.0,
           "card-ingest@sdb1.service": 4.5, "photo-ingest-mirror.service": 2.0,
           "photo-ingest-verify.service": 2.0, "photo-ingest-backlog-check.service": 2.0,
           "photo-ingest-watch.service": 2.0}
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    config = tmp_path / "site.toml"
    config.write_text(f'[library]\npath = "{tmp_path}/photos"\n'
                      f'[metrics]\ntextfile_dir = "{tmp_path}/prom"\n'
                      '[[mirror]]\nname = "nas"\npath = "/mnt/nas/photos"\n'
                      '[[mirror]]\nname = "usb"\npath = "/media/usb"\nrequired = false\n')
    result = run_cli(config, "install-units", "--prefix", tmp_path / "root", "--user", "alice")
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_install_units_renders_the_shipped_files(installed: Path) -> None:
    system = installed / "root/etc/systemd/system"
    assert sorted(p.name for p in system.iterdir()) == sorted(
        [*units.UNITS, *(f"{u}.d" for u in units.UNITS if u.endswith(".service"))])
    bindir = units.default_bindir()
    for name in units.UNITS:
        text = (system / name).read_text()
        assert "@bindir@" not in text
        assert text == units.shipped(name).replace("@bindir@", str(bindir))
    card = (system / "card-ingest@.service.d/50-photo-ingest.conf").read_text()
    assert f"PHOTO_INGEST_CONFIG={installed}/site.toml" in card
    meta = (system / "photo-ingest-metadata.service.d/50-photo-ingest.conf").read_text()
    assert "User=alice" in meta and f"ReadWritePaths=-{installed}/prom" in meta
    assert f"ReadWritePaths={installed}/photos -{installed}/prom -/mnt/nas/photos -/media/usb" \
        in card
    mirror = (system / "photo-ingest-mirror.service.d/50-photo-ingest.conf").read_text()
    assert "User=alice" in mirror
    assert f"ReadWritePaths=-{installed}/prom -/mnt/nas/photos -/media/usb" in mirror
    for name in ("verify", "backlog-check"):
        drop_in = (system / f"photo-ingest-{name}.service.d/50-photo-ingest.conf").read_text()
        assert "User=alice" in drop_in and "/mnt/nas" not in drop_in  # they only read
    assert (installed / "root/etc/udev/rules.d/90-photo-ingest.rules").read_text() == \
        units.shipped(units.RULE)


def test_watch_drop_in_opens_the_folders_it_changes(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'[library]\npath = "{tmp_path}/photos"\n[card]\nuser = "photos"\n'
                      f'[[watch]]\npath = "{tmp_path}/phone"\n'
                      f'[[watch]]\npath = "{tmp_path}/booth"\nafter = "delete"\n'
                      f'[[watch]]\npath = "{tmp_path}/scans"\nafter = "archive"\n'
                      f'archive_dir = "{tmp_path}/done"\n')
    result = run_cli(config, "install-units", "--prefix", tmp_path / "root")
    assert result.returncode == 0, result.stderr
    drop_in = (tmp_path / "root/etc/systemd/system/photo-ingest-watch.service.d"
               / "50-photo-ingest.conf").read_text()
    assert "User=photos\nGroup=photos\n" in drop_in          # the library's owner
    # the library, the folders it deletes or archives from, the archive: never "phone"
    assert (f"ReadWritePaths={tmp_path}/photos {tmp_path}/booth {tmp_path}/scans "
            f"-{tmp_path}/done\n") in drop_in


def test_rule_wants_the_card_unit_only_for_removable_filesystems() -> None:
    rule = units.shipped(units.RULE)
    assert 'ENV{SYSTEMD_WANTS}+="card-ingest@%k.service"' in rule
    assert 'KERNEL=="loop*|dm-*|md*' in rule
    assert 'ENV{ID_FS_USAGE}!="filesystem", GOTO="photo_ingest_end"' in rule
    for fs in ("vfat", "exfat", "ntfs", "ext4", "hfsplus"):
        assert fs in rule


@needs_systemd
def test_systemd_accepts_the_units(installed: Path, tmp_path: Path) -> None:
    system = installed / "root/etc/systemd/system"
    instance = tmp_path / "card-ingest@sdb1.service"
    instance.write_text((system / "card-ingest@.service").read_text())
    paths = [str(system / n) for n in units.UNITS if "@" not in n] + [str(instance)]
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *paths],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@needs_systemd
def test_hardening_scores_meet_the_targets(installed: Path, tmp_path: Path) -> None:
    system = installed / "root/etc/systemd/system"
    (tmp_path / "card-ingest@sdb1.service").write_text(
        (system / "card-ingest@.service").read_text())
    for name, target in TARGETS.items():
        path = tmp_path / name if "@" in name else system / name
        out = subprocess.run(["systemd-analyze", "security", "--offline=true", str(path)],
                             capture_output=True, text=True)
        score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
        assert score, out.stdout + out.stderr
        assert float(score.group(1)) <= target, f"{name}: {score.group(1)} > {target}"
