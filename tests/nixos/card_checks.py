# Shared by the VM tests that insert the card: hot-plug it the way nixpkgs' udisks2 test
# does (drive_add + device_add usb-storage; removable=on, as a card reader reports), then the
# facts every card run must leave behind.
import hashlib
import json
import shutil

SUCCESS = "7ad2d189f7e94e70a38c781354912448"  # systemd: "Deactivated successfully."


def sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def psql(machine, query):
    command = f"runuser -u postgres -- psql -d photo-ingest -tAF '|' -c \"{query}\""
    return machine.succeed(command).strip()


def insert_card(machine, card_dir):
    image = machine.state_dir / "card.img"
    shutil.copyfile(f"{card_dir}/card.img", image)  # the store copy is read-only
    image.chmod(0o644)
    machine.send_monitor_command(f"drive_add 0 id=card,if=none,file={image},format=raw")
    machine.send_monitor_command("device_add usb-storage,id=card,drive=card,removable=on")
    return image


def check_card_ingested(machine, card_dir, image):
    with open(f"{card_dir}/expected.json") as f:
        expected = json.load(f)
    files = expected["files"]
    unit = "card-ingest@sda1.service"
    machine.wait_until_succeeds(f"journalctl -q -u {unit} MESSAGE_ID={SUCCESS} | grep -q .",
                                timeout=300)
    log = machine.succeed(f"journalctl -q -o cat -u {unit}")
    print(log)

    # the library: every file at its date, byte for byte
    for f in files:
        path = f"/var/lib/photo-ingest/library/{f['library_path']}"
        got = machine.succeed(f"sha1sum {path}").split()[0]
        assert got == f["sha1"], f"{path}: {got} != {f['sha1']}"
        owner = machine.succeed(f"stat -c %U {path}").strip()
        assert owner == "photo-ingest", f"{path} belongs to {owner}"

    # the catalog
    rows = psql(machine, "SELECT library_path, encode(sha1, 'hex') FROM assets ORDER BY 1")
    assert rows.splitlines() == [f"{f['library_path']}|{f['sha1']}" for f in files], rows
    session = psql(machine, "SELECT status, card_label FROM ingest_sessions")
    assert session == f"completed|{expected['label']}", session

    # ejected: the disk is gone, and the card was never written
    assert "sda powered off" in log, log
    machine.wait_until_fails("test -b /dev/sda")
    assert sha1(image) == sha1(f"{card_dir}/card.img"), "the card image changed"

    # the metrics textfile, written by the card unit
    prom = machine.succeed("cat /var/lib/photo-ingest/metrics/photo_ingest_ingest.prom")
    values = dict(line.rsplit(" ", 1) for line in prom.splitlines()
                  if line and not line.startswith("#"))
    copied = values.get('photo_ingest_ingest_files_total{outcome="copied"}')
    assert copied is not None and float(copied) == len(files), prom
    return expected
