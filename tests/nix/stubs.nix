# Minimal declarations of the NixOS options that nix/module.nix sets or reads, so the module
# can be evaluated with lib.evalModules and nixpkgs' lib alone (no nixpkgs, no store).
# Types follow NixOS where it matters for merging: lists concatenate, unit settings may be
# lists (several lines) or scalars.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  bool = opt types.bool false;
  strs = opt (types.listOf types.str) [ ];
  anys = opt (types.listOf types.anything) [ ];
  unitValue = types.either (types.listOf types.str) (
    types.oneOf [
      types.bool
      types.int
      types.str
    ]
  );
  unit = types.submodule {
    options = {
      overrideStrategy = opt types.str "asDropinIfExists";
      environment = opt (types.attrsOf types.str) { };
      wantedBy = strs;
      after = strs;
      wants = strs;
      restartTriggers = anys;
      serviceConfig = opt (types.attrsOf unitValue) { };
      timerConfig = opt (types.attrsOf unitValue) { };
    };
  };
in
{
  options = {
    assertions = opt (types.listOf types.unspecified) [ ];
    environment.etc = opt (types.attrsOf (types.submodule { options.source = opt types.anything null; })) { };
    environment.systemPackages = anys;
    systemd.packages = anys;
    systemd.services = opt (types.attrsOf unit) { };
    systemd.timers = opt (types.attrsOf unit) { };
    systemd.tmpfiles.settings = opt (types.attrsOf (types.attrsOf (types.attrsOf types.anything))) { };
    services.udev.packages = anys;
    users.users = opt (types.attrsOf (
      types.submodule {
        freeformType = types.attrsOf types.anything;
        options.extraGroups = strs;
      }
    )) { };
    users.groups = opt (types.attrsOf (types.attrsOf types.anything)) { };
    networking.firewall.allowedTCPPorts = opt (types.listOf types.port) [ ];
    hardware.graphics.enable = bool;
    hardware.graphics.extraPackages = anys;
    services.xserver.videoDrivers = strs;

    services.postgresql = {
      enable = bool;
      ensureDatabases = strs;
      ensureUsers = anys;
    };
    services.postgresqlBackup = {
      enable = bool;
      databases = strs;
    };

    services.immich = {
      enable = bool;
      port = opt types.port 2283;
      user = opt types.str "immich";
      mediaLocation = opt types.str "/var/lib/immich";
      openFirewall = bool;
      machine-learning.enable = opt types.bool true;
      accelerationDevices = opt (types.nullOr (types.listOf types.str)) [ ];
      environment = opt (types.attrsOf types.str) { };
      settings = opt (types.nullOr (types.attrsOf types.anything)) null;
      database.enable = opt types.bool true;
      database.name = opt types.str "immich";
    };

    services.prometheus = {
      enable = bool;
      scrapeConfigs = anys;
      ruleFiles = anys;
      exporters.node = {
        enable = bool;
        port = opt types.port 9100;
        enabledCollectors = strs;
        extraFlags = strs;
      };
    };
    services.grafana = {
      enable = bool;
      provision.enable = bool;
      provision.dashboards.settings = opt (types.nullOr (
        types.submodule { options.providers = anys; }
      )) null;
    };
  };
}
