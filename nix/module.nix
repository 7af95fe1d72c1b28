# services.photo-ingest: the NixOS module (docs/nixos.md).
#
# The units and the udev rule are the package's own files (systemd.packages,
# services.udev.packages), so NixOS runs exactly what Debian and the VM tests run; this module
# writes /etc/photo-ingest/config.toml and adds the site's settings to the units as drop-ins.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types literalExpression;
  cfg = config.services.photo-ingest;
  format = pkgs.formats.toml { };
in
{
  imports = [
    ./module/ingest.nix
    ./module/database.nix
    ./module/immich.nix
    ./module/metrics.nix
    ./module/units.nix
  ];

  options.services.photo-ingest = {
    enable = lib.mkEnableOption "photo-ingest, the camera-card ingest server";

    # pkgs.photo-ingest comes from this flake's overlay; nixosModules.default sets the flake's
    # own package, so the overlay is needed only when importing nix/module.nix by path.
    package = lib.mkPackageOption pkgs "photo-ingest" { };

    user = mkOption {
      type = types.str;
      default = "photo-ingest";
      description = ''
        Owner of the library. The card unit copies as this user, and the metadata job and the
        Immich sync run as it; with a local database it is also the PostgreSQL role (peer
        authentication). Created as a system user when left at the default.
      '';
    };

    group = mkOption {
      type = types.str;
      default = "photo-ingest";
      description = "Group of the library. Created when left at the default.";
    };

    stateDir = mkOption {
      type = types.path;
      default = "/var/lib/photo-ingest";
      description = "Home of the service user; holds the library and the metrics textfiles by default.";
    };

    libraryDir = mkOption {
      type = types.path;
      default = "${cfg.stateDir}/library";
      defaultText = literalExpression ''"''${config.services.photo-ingest.stateDir}/library"'';
      example = "/srv/photos/library";
      description = ''
        The library (`library.path`): files land in it by the layout template. Created mode
        0750, owned by {option}`services.photo-ingest.user`. Keep it outside /home when Immich
        reads it (its unit has `ProtectHome`).
      '';
    };

    settings = mkOption {
      type = types.submodule { freeformType = format.type; };
      default = { };
      example = literalExpression ''
        {
          ingest.timezone = "Europe/Berlin";
          ingest.extensions.video = [ "mp4" "mov" "mts" ];
          metadata.makes."NIKON CORPORATION" = "Nikon";
        }
      '';
      description = ''
        The application's configuration, written to /etc/photo-ingest/config.toml (keys in
        docs/configuration.md). The typed options of this module set their keys here; any
        other key can be given directly. Secrets are never values here: the module names them
        as `$CREDENTIALS_DIRECTORY/…` files, loaded per unit with `LoadCredential=`.
      '';
    };

    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        TZ = "Europe/Berlin";
      };
      description = "Extra environment variables for every photo-ingest unit.";
    };
  };

  config = lib.mkIf cfg.enable {
    services.photo-ingest.settings.library.path = cfg.libraryDir;

    environment.etc."photo-ingest/config.toml".source =
      format.generate "photo-ingest.toml" cfg.settings;
    # `photo-ingest status`, `sessions`, `check` by hand (as the library user).
    environment.systemPackages = [ cfg.package ];

    systemd.packages = [ cfg.package ];

    users.users = lib.mkIf (cfg.user == "photo-ingest") {
      photo-ingest = {
        isSystemUser = true;
        group = cfg.group;
        home = cfg.stateDir;
        description = "photo-ingest library owner";
      };
    };
    users.groups = lib.mkIf (cfg.group == "photo-ingest") { photo-ingest = { }; };

    systemd.tmpfiles.settings.photo-ingest = {
      ${cfg.stateDir}.d = {
        inherit (cfg) user group;
        mode = "0755";
      };
      # Only the owner and its group (Immich, in external-library mode) read the photos.
      ${cfg.libraryDir}.d = {
        inherit (cfg) user group;
        mode = "0750";
      };
    };
  };
}
