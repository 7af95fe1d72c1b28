"""The [[mirror]], [verify] and [notify] tables: defaults, validation naming the key, the
webhook URL read from its secret file without ever being echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from photo_ingest import config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[library]\npath = "/srv/photos"\n' + text)
    return path


def test_full_tables(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, """
[ingest]
verify = "size"
[[mirror]]
name = "nas"
path = "/mnt/nas/photos"
[[mirror]]
name = "usb-1"
path = "/media/usb"
required = false
verify = "full"
[verify]
sample = 500
[notify]
webhook_url_file = "$CREDENTIALS_DIRECTORY/notify-webhook-url"
format = "ntfy"
events = ["failure", "stall"]
stall_minutes = 120
"""))
    nas, usb = cfg.mirrors
    assert (nas.name, str(nas.path), nas.required, nas.verify) == \
        ("nas", "/mnt/nas/photos", True, "size")  # verify defaults to ingest.verify
    assert (usb.required, usb.verify) == (False, "full")
    assert cfg.verify.sample == 500
    assert cfg.notify.enabled and cfg.notify.format == "ntfy"
    assert cfg.notify.events == ("failure", "stall") and cfg.notify.stall_minutes == 120


def test_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ""))
    assert cfg.mirrors == () and cfg.verify.sample == 0
    assert not cfg.notify.enabled
    assert cfg.notify.events == ("success", "partial", "failure", "stall")


@pytest.mark.parametrize(("text", "message"), [
    ('[[mirror]]\npath = "/mnt/x"\n', "mirror[0].name: required"),
    ('[[mirror]]\nname = "nas"\n', "mirror[0].path: required"),
    ('[[mirror]]\nname = "NAS"\npath = "/mnt/x"\n', "mirror[0].name: must be 1-64 of a-z"),
    ('[[mirror]]\nname = "library"\npath = "/mnt/x"\n', "mirror[0].name: must be"),
    ('[[mirror]]\nname = "nas"\npath = "rel"\n', "mirror[0].path: must be an absolute path"),
    ('[[mirror]]\nname = "nas"\npath = "/srv/photos/copy"\n',
     "mirror[0].path: /srv/photos/copy overlaps the library"),
    ('[[mirror]]\nname = "nas"\npath = "/mnt/x"\nrequired = "yes"\n',
     "mirror[0].required: must be bool"),
    ('[[mirror]]\nname = "nas"\npath = "/mnt/x"\nverify = "fast"\n',
     "mirror[0].verify: must be one of full, size"),
    ('[[mirror]]\nname = "nas"\npath = "/mnt/x"\nspeed = 1\n', "unknown key mirror[0].speed"),
    ('[[mirror]]\nname = "a"\npath = "/mnt/x"\n[[mirror]]\nname = "a"\npath = "/mnt/y"\n',
     "mirror[1].name: 'a' is used by another mirror"),
    ('[[mirror]]\nname = "a"\npath = "/mnt/x"\n[[mirror]]\nname = "b"\npath = "/mnt/x"\n',
     "mirror[1].path: /mnt/x is used by another mirror"),
    ('[mirror]\nname = "a"\n', "mirror: must be an array of tables"),
    ('[verify]\nsample = -1\n', "verify.sample: must be a whole number >= 0"),
    ('[verify]\nevery = 1\n', "unknown key verify.every"),
    ('[notify]\nformat = "xml"\n', "notify.format: must be one of json, ntfy, slack"),
    ('[notify]\nevents = ["done"]\n', "notify.events: must be a list of success, partial"),
    ('[notify]\nstall_minutes = 0\n', "notify.stall_minutes: must be a whole number >= 1"),
    ('[notify]\nwebhook_url = "https://x"\n', "unknown key notify.webhook_url"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(write(tmp_path, text))
    assert message in str(err.value)


def test_webhook_url_is_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config.load(write(tmp_path, '[notify]\nwebhook_url_file = "url"\n'))
    (tmp_path / "url").write_text("ntfy.sh/my-secret-topic\n")
    with pytest.raises(config.ConfigError) as err:
        cfg.notify.webhook_url()
    assert "does not hold an http:// or https:// URL" in str(err.value)
    assert "my-secret-topic" not in str(err.value)
    (tmp_path / "url").write_text("https://ntfy.sh/my-secret-topic\n")
    assert cfg.notify.webhook_url() == "https://ntfy.sh/my-secret-topic"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hook").write_text("http://ha.local:8123/api/webhook/abc\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = config.load(write(tmp_path, '[notify]\nwebhook_url_file = '
                                      '"$CREDENTIALS_DIRECTORY/hook"\n'))
    assert cfg.notify.webhook_url() == "http://ha.local:8123/api/webhook/abc"
