# The site's settings as drop-ins on the package's units (like `photo-ingest install-units`
# writes on Debian): user, writable folders, credentials, environment, schedules, and the
# wantedBy that NixOS does not take from packaged [Install] sections.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.photo-ingest;
  db = cfg.database;
  hasNotify = cfg.notify.webhookUrlFile != null;

  # ProtectSystem=strict: a unit may write only what is listed. "-": a folder that is missing
  # (a mirror not mounted yet, metrics off) does not keep the unit from starting.
  textfiles = lib.optional cfg.metrics.enable "-${cfg.metrics.textfileDir}";
  mirrorPaths = map (m: "-${m.path}") cfg.mirrors;
  watchPaths = lib.concatMap (
    w: lib.optional (w.after != "leave") w.path ++ lib.optional (w.archiveDir != null) w.archiveDir
  ) cfg.watch;

  # Every unit may open the catalog and report; only the sync service gets the Immich key.
  credentials =
    lib.optional (db.passwordFile != null) "db-password:${db.passwordFile}"
    ++ lib.optional hasNotify "notify-webhook-url:${cfg.notify.webhookUrlFile}";
  account = {
    User = cfg.user;
    Group = cfg.group;
  };
  configFile = config.environment.etc."photo-ingest/config.toml".source;
  postgres = lib.optional db.createLocally "postgresql.target";

  dropIn =
    {
      serviceConfig,
      extraCredentials ? [ ],
      wantedBy ? [ ],
      after ? [ ],
      restart ? false,
    }:
    {
      overrideStrategy = "asDropin";
      inherit (cfg) environment;
      inherit wantedBy;
      after = postgres ++ after;
      wants = postgres;
      restartTriggers = lib.optional restart configFile;
      serviceConfig =
        serviceConfig
        // lib.optionalAttrs (credentials ++ extraCredentials != [ ]) {
          LoadCredential = credentials ++ extraCredentials;
        };
    };
  timer = enabled: schedule: {
    overrideStrategy = "asDropin";
    wantedBy = lib.optional enabled "timers.target";
    # OnCalendar= adds to the packaged one; the empty value clears it first.
    timerConfig = lib.optionalAttrs (schedule != null) {
      OnCalendar = [
        ""
        schedule
      ];
    };
  };

  # Narrowing card.filesystems: a rule sorted before 90-photo-ingest.rules marks every other
  # filesystem with the variable the packaged rule honours.
  filesystemRule = pkgs.writeTextDir "lib/udev/rules.d/89-photo-ingest-filesystems.rules" ''
    # services.photo-ingest.card.filesystems: other filesystems do not start card-ingest@.
    ACTION=="add", SUBSYSTEM=="block", ENV{ID_FS_USAGE}=="filesystem", ENV{ID_FS_TYPE}!="${lib.concatStringsSep "|" cfg.card.filesystems}", ENV{PHOTO_INGEST_IGNORE}="1"
  '';
  narrowed = !lib.all (fs: lib.elem fs cfg.card.filesystems) (import ./filesystems.nix);
in
{
  config = lib.mkIf cfg.enable {
    services.udev.packages = lib.optionals cfg.card.enable (
      [ cfg.package ] ++ lib.optional narrowed filesystemRule
    );

    # The card unit runs as root (it mounts) and copies in a child as the library user.
    systemd.services = {
      "card-ingest@" = dropIn {
        serviceConfig.ReadWritePaths = [ cfg.libraryDir ] ++ textfiles ++ mirrorPaths;
      };
      photo-ingest-metadata = dropIn { serviceConfig = account // { ReadWritePaths = textfiles; }; };
      photo-ingest-immich-sync = dropIn {
        serviceConfig = account;
        extraCredentials = lib.optional (
          cfg.immich.apiKeyFile != null
        ) "immich-api-key:${cfg.immich.apiKeyFile}";
        wantedBy = lib.optional cfg.immich.enable "multi-user.target";
        after = lib.optional cfg.immich.server.enable "immich-server.service";
        restart = true;
      };
    }
    // lib.optionalAttrs (cfg.watch != [ ]) {
      photo-ingest-watch = dropIn {
        serviceConfig = account // {
          ReadWritePaths = [ cfg.libraryDir ] ++ watchPaths ++ textfiles ++ mirrorPaths;
        };
        wantedBy = [ "multi-user.target" ];
        restart = true;
      };
    }
    // lib.optionalAttrs (cfg.mirrors != [ ]) {
      photo-ingest-mirror = dropIn {
        serviceConfig = account // { ReadWritePaths = mirrorPaths ++ textfiles; };
      };
    }
    // lib.optionalAttrs cfg.verify.enable {
      photo-ingest-verify = dropIn { serviceConfig = account // { ReadWritePaths = textfiles; }; };
    }
    // lib.optionalAttrs hasNotify {
      photo-ingest-backlog-check = dropIn { serviceConfig = account // { ReadWritePaths = textfiles; }; };
    };

    systemd.timers = {
      photo-ingest-metadata = timer cfg.metadata.enable cfg.metadata.schedule;
    }
    // lib.optionalAttrs (cfg.mirrors != [ ]) {
      photo-ingest-mirror = timer true cfg.mirrorSchedule;
    }
    // lib.optionalAttrs cfg.verify.enable {
      photo-ingest-verify = timer true cfg.verify.schedule;
    }
    // lib.optionalAttrs hasNotify {
      photo-ingest-backlog-check = timer true null;
    };
  };
}
