# NixOS VM test 2, the full stack: the module with immich.server on nixpkgs' services.immich
# (machine learning off); an admin and an API key made through Immich's API as nixpkgs' own
# Immich test does; a card hot-plugged; its photos then in Immich, in the album the template
# names.
{ photoIngest }:
{ hostPkgs, ... }:
let
  card = hostPkgs.callPackage ./card-image.nix { };
in
{
  name = "photo-ingest-immich";

  nodes.machine = {
    imports = [ photoIngest.nixosModules.default ];
    services.photo-ingest = {
      enable = true;
      immich = {
        enable = true;
        apiKeyFile = "/var/lib/photo-ingest-secrets/immich-api-key";
        album = "{card_label} {date}";
        server = {
          enable = true;
          machineLearning = false;
        };
      };
    };
    # Immich needs a little more room (as in nixpkgs' Immich test).
    virtualisation = {
      cores = 2;
      memorySize = 4096;
      diskSize = 4096;
    };
    boot.kernelParams = [ "usb_storage.delay_use=0" ];
  };

  testScript = ''
    ${builtins.readFile ./card_checks.py}
    ${builtins.readFile ./immich_setup.py}

    machine.wait_for_unit("multi-user.target")
    key = immich_api_key(machine)

    with subtest("a card goes in"):
        image = insert_card(machine, "${card}")
        expected = check_card_ingested(machine, "${card}", image)

    with subtest("its photos reach Immich, in the album the template names"):
        names = sorted(f["name"] for f in expected["files"])
        def in_album(_):
            albums = immich_get(machine, key, "/albums")
            found = [a for a in albums if a["albumName"] == expected["album"]]
            return bool(found) and found[0]["assetCount"] == len(names)
        retry(in_album, timeout=300)
        album = [a for a in immich_get(machine, key, "/albums") if a["albumName"] == expected["album"]][0]
        assets = immich_get(machine, key, f"/albums/{album['id']}")["assets"]
        assert sorted(a["originalFileName"] for a in assets) == names, assets
        checksums = psql(machine, "SELECT count(*) FROM immich_assets WHERE state = 'done' AND immich_id IS NOT NULL")
        assert checksums == str(len(names)), checksums

    with subtest("the sync service serves its metrics on loopback"):
        machine.succeed("curl -sf http://127.0.0.1:9467/metrics | grep -q '^photo_ingest_immich_up 1.0'")
  '';
}
