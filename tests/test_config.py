"""Config loading: defaults, typed validation, errors that name the key, secrets from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from photo_ingest import config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_when_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    cfg = config.load()
    assert cfg.ingest.verify == "full"
    assert cfg.library.layout == "{year}/{month}/{day}/{filename}"
    assert "cr3" in cfg.ingest.extensions["raw"] and "mts" in cfg.ingest.extensions["video"]


def test_env_var_selects_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, '[library]\npath = "lib"\n')
    monkeypatch.setenv(config.ENV_VAR, str(path))
    assert config.load().library.path == tmp_path / "lib"  # relative to the file


@pytest.mark.parametrize(("text", "message"), [
    ('[ingest]\nverify = "fast"\n', "ingest.verify: must be one of full, size; got 'fast'"),
    ('[ingest]\nbuffer_size = "8M"\n', "ingest.buffer_size: must be int, got str"),
    ('[ingest]\ntimezone = "Mars/Olympus"\n', "ingest.timezone: unknown time zone"),
    ('[ingest]\nverfy = "full"\n', "unknown key ingest.verfy"),
    ('[libary]\npath = "/x"\n', "unknown key libary"),
    ('[library]\nlayout = "{year}/{nope}"\n', "library.layout: unknown token {nope}"),
    ('[library]\nlayout = "/abs/{filename}"\n', "library.layout: must be a relative"),
    ('[ingest.extensions]\nphoto = ["jpg", "xmp"]\n',
     "ingest.extensions.photo: .xmp is already listed under sidecar"),
    ('[ingest.extensions]\nvideo = "mp4"\n', "ingest.extensions.video: must be a list"),
    ('[database]\nurl = 5\n', "database.url: must be str, got int"),
    ("[ingest\n", "invalid TOML"),
    ('[card]\nallow = ["EOS_DIGITAL"]\n', "card.allow: 'EOS_DIGITAL' must look like uuid:"),
    ('[card]\neject = "yes"\n', "card.eject: must be bool, got str"),
    ('[metrics]\ntextfile = "/x"\n', "unknown key metrics.textfile"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)  # and the file


def test_password_comes_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = config.load(write(tmp_path, '[database]\nurl = "host=db dbname=x"\n'
                                      'password_file = "pw"\n'))
    assert "password=s3cret" in cfg.database.conninfo()
    assert "s3cret" not in repr(cfg)


def test_unreadable_password_file_is_named(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[database]\npassword_file = "missing"\n'))
    with pytest.raises(config.ConfigError, match=r"database\.password_file: cannot read"):
        cfg.database.conninfo()


def test_secrets_from_the_units_credentials_directory(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config.load(write(tmp_path, '[database]\nurl = "host=db dbname=x"\n'
                                      'password_file = "$CREDENTIALS_DIRECTORY/db-password"\n'
                                      '[immich]\nurl = "http://immich:2283"\n'
                                      'api_key_file = "$CREDENTIALS_DIRECTORY/immich-key"\n'))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(config.ConfigError, match=r"CREDENTIALS_DIRECTORY is not set"):
        cfg.database.conninfo()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "db-password").write_text("pw1\n")
    (creds / "immich-key").write_text("key1\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert "password=pw1" in cfg.database.conninfo()
    assert cfg.immich.api_key() == "key1"


def test_cli_reports_config_error_with_exit_2(tmp_path: Path) -> None:
    from conftest import run_cli

    result = run_cli(write(tmp_path, '[ingest]\nverify = "nah"\n'), "status")
    assert result.returncode == 2
    assert "ingest.verify" in result.stderr
