# NixOS VM test 1: a camera card, hot-plugged as a USB disk, is ingested by the udev-started
# card-ingest@sda1.service: the library, the catalog, the eject and the metrics; then the
# metadata job. Modelled on nixpkgs' udisks2 test (hot-plug through the QEMU monitor).
{ photoIngest }:
{ hostPkgs, ... }:
let
  card = hostPkgs.callPackage ./card-image.nix { };
in
{
  name = "photo-ingest-card";

  nodes.machine = {
    imports = [ photoIngest.nixosModules.default ];
    services.photo-ingest.enable = true;
    virtualisation.memorySize = 1536;
    # The card appears at once instead of after usb-storage's settle delay.
    boot.kernelParams = [ "usb_storage.delay_use=0" ];
  };

  testScript = ''
    ${builtins.readFile ./card_checks.py}

    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("postgresql.target")
    machine.succeed("grep -q card-ingest@ /etc/udev/rules.d/90-photo-ingest.rules")
    machine.succeed("systemctl cat card-ingest@sda1.service | grep -q 'ReadWritePaths=/var/lib/photo-ingest/library'")

    with subtest("a card goes in and is ingested"):
        image = insert_card(machine, "${card}")
        check_card_ingested(machine, "${card}", image)

    with subtest("the metadata job runs as the library user"):
        machine.succeed("systemctl start photo-ingest-metadata.service")
        count = psql(machine, "SELECT count(*) FROM asset_metadata")
        assert count == "3", count
        machine.succeed("test -s /var/lib/photo-ingest/metrics/photo_ingest_metadata.prom")
        machine.succeed("systemctl list-timers photo-ingest-metadata.timer | grep -q photo-ingest-metadata")

    with subtest("by hand: photo-ingest status as the library user"):
        out = machine.succeed("runuser -u photo-ingest -- photo-ingest status --json")
        print(out)
  '';
}
