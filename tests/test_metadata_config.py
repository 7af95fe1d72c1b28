"""The [metadata] table of the config: defaults, validation, the assumed time zone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from photo_ingest import config
from photo_ingest.metadata.normalise import Settings


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return config.load(path)


def test_defaults(tmp_path: Path) -> None:
    m = load(tmp_path, "").metadata
    assert (m.batch_size, m.workers, m.timezone, m.timeout, m.makes) == (
        500, os.cpu_count(), None, 120.0, {})


def test_values(tmp_path: Path) -> None:
    m = load(tmp_path, '[metadata]\nbatch_size = 50\nworkers = 3\ntimezone = "Asia/Tokyo"\n'
                       'timeout = 7.5\n[metadata.makes]\n"Acme Corp." = " Acme "\n').metadata
    assert (m.batch_size, m.workers, m.timezone, m.timeout) == (50, 3, "Asia/Tokyo", 7.5)
    assert m.makes == {"ACME CORP.": "Acme"}


@pytest.mark.parametrize(("text", "message"), [
    ("batch_size = 0", "metadata.batch_size: must be between 1 and 10000, got 0"),
    ('batch_size = "10"', "metadata.batch_size: must be int, got str"),
    ("workers = 0", "metadata.workers: must be between 1 and 256"),
    ("workers = true", "metadata.workers: must be int, got bool"),
    ('timezone = "Mars/Olympus"', "metadata.timezone: unknown time zone 'Mars/Olympus'"),
    ("timeout = 0", "metadata.timeout: must be a positive number of seconds, got 0"),
    ('timeout = "1m"', "metadata.timeout: must be a number of seconds, got str"),
    ("batchsize = 5", "unknown key metadata.batchsize"),
    ('[metadata.makes]\nCanon = ""', "metadata.makes.Canon: must be a non-empty string"),
    ("makes = 5", "metadata.makes: must be a table, got int"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        load(tmp_path, "[metadata]\n" + text + "\n")
    assert message in str(err.value)


@pytest.mark.parametrize(("text", "zone"), [
    ('[ingest]\ntimezone = "Europe/Berlin"\n', "Europe/Berlin"),   # the ingest's, by default
    ('[ingest]\ntimezone = "Europe/Berlin"\n[metadata]\ntimezone = "Asia/Tokyo"\n',
     "Asia/Tokyo"),
    ('[ingest]\ntimezone = "Europe/Berlin"\n[metadata]\ntimezone = "none"\n', None),
])
def test_assumed_zone(tmp_path: Path, text: str, zone: str | None) -> None:
    cfg = load(tmp_path, text)
    assert cfg.metadata.zone_name(cfg.ingest) == zone
    assert Settings.from_config(cfg).zone == zone


def test_machine_zone_when_none_is_configured(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/Denver")
    cfg = load(tmp_path, "")
    assert cfg.metadata.zone_name(cfg.ingest) == config.MACHINE_ZONE
    assert Settings.from_config(cfg).zone == "America/Denver"


def test_settings_fingerprint_follows_what_changes_records(tmp_path: Path) -> None:
    a = Settings.from_config(load(tmp_path, '[metadata]\ntimezone = "Asia/Tokyo"\n'))
    b = Settings.from_config(load(tmp_path, '[metadata]\ntimezone = "Asia/Tokyo"\n'
                                            '[metadata.makes]\nX = "Y"\n'))
    assert a.fingerprint() == Settings.from_config(
        load(tmp_path, '[metadata]\ntimezone = "Asia/Tokyo"\nworkers = 1\n')).fingerprint()
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint().startswith("zone=Asia/Tokyo;")
