# What gets ingested and how: cards, the metadata job, watch folders, mirrors, the scrub and
# notifications. Each option sets its key in services.photo-ingest.settings.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.services.photo-ingest;
  secretPath = import ./secret-path.nix lib;

  allFilesystems = import ./filesystems.nix;
  cardMatch = types.strMatching "(uuid|label|serial):.+";
  schedule =
    what:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "Sun 03:00";
      description = "systemd OnCalendar= of the ${what} timer; null keeps the packaged schedule.";
    };

  watchFolder = types.submodule {
    options = {
      path = mkOption {
        type = types.path;
        description = "The folder (absolute) whose new files are ingested.";
      };
      name = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Name in sessions and metrics; default: the folder's last component.";
      };
      stableSeconds = mkOption {
        type = types.ints.positive;
        default = 10;
        description = "A file is taken once its size and mtime stayed unchanged this long.";
      };
      after = mkOption {
        type = types.enum [
          "leave"
          "archive"
          "delete"
        ];
        default = "leave";
        description = "What happens to a file once its verified copy is in the library.";
      };
      archiveDir = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "Where `after = \"archive\"` moves ingested files.";
      };
      waitForImmich = mkOption {
        type = types.bool;
        default = false;
        description = "Archive or delete only once Immich has the asset.";
      };
    };
  };

  mirror = types.submodule {
    options = {
      name = mkOption {
        type = types.strMatching "[a-z0-9_-]+";
        description = "Unique name of the mirror (metrics, `verify --destination`).";
      };
      path = mkOption {
        type = types.path;
        description = "Root of the mirror (absolute).";
      };
      required = mkOption {
        type = types.bool;
        default = true;
        description = "A card is ejected only once every required mirror holds a verified copy.";
      };
      verify = mkOption {
        type = types.nullOr (
          types.enum [
            "full"
            "size"
          ]
        );
        default = null;
        description = "How copies on this mirror are verified; null: like {option}`card.verify`.";
      };
    };
  };
  orNull = lib.filterAttrs (_: v: v != null);
in
{
  options.services.photo-ingest = {
    card = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Ingest camera cards when they are inserted (installs the package's udev rule).";
      };
      filesystems = mkOption {
        type = types.nonEmptyListOf (types.enum allFilesystems);
        default = allFilesystems;
        example = [
          "vfat"
          "exfat"
        ];
        description = ''
          Filesystems that start an ingest. Narrowing the list adds a udev rule that sorts before
          the packaged one and sets `PHOTO_INGEST_IGNORE=1` for any other filesystem.
        '';
      };
      allow = mkOption {
        type = types.listOf cardMatch;
        default = [ ];
        example = [ "label:EOS_DIGITAL" ];
        description = "Only these cards (`uuid:…`, `label:…`, `serial:…`) are ingested; empty: every card (`card.allow`).";
      };
      deny = mkOption {
        type = types.listOf cardMatch;
        default = [ ];
        example = [ "serial:0123456789AB" ];
        description = "Cards that are never ingested (`card.deny`).";
      };
      layout = mkOption {
        type = types.str;
        default = "{year}/{month}/{day}/{filename}";
        example = "{year}/{date} {card_label}/{filename}";
        description = "Where a file goes in the library (`library.layout`; tokens in docs/configuration.md).";
      };
      verify = mkOption {
        type = types.enum [
          "full"
          "size"
        ];
        default = "full";
        description = "`full`: every copy is read back from storage and hashed again; `size`: only its size is checked (`ingest.verify`).";
      };
      eject = mkOption {
        type = types.bool;
        default = true;
        description = "Power the card off after a completed session (never after a failure) (`card.eject`).";
      };
    };

    metadata = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Run the metadata job (photo-ingest-metadata.timer).";
      };
      schedule = mkOption {
        type = types.str;
        default = "*:0/15";
        example = "hourly";
        description = "OnCalendar= of photo-ingest-metadata.timer.";
      };
      workers = mkOption {
        type = types.nullOr (types.ints.between 1 256);
        default = null;
        description = "exiftool processes (`metadata.workers`); null: one per CPU.";
      };
      batchSize = mkOption {
        type = types.ints.between 1 10000;
        default = 500;
        description = "Files per exiftool call and per transaction (`metadata.batch_size`).";
      };
    };

    watch = mkOption {
      type = types.listOf watchFolder;
      default = [ ];
      example = lib.literalExpression ''[ { path = "/srv/inbox/phone"; after = "archive"; archiveDir = "/srv/inbox/done"; } ]'';
      description = "Folders watched by photo-ingest-watch.service (`[[watch]]` tables).";
    };

    mirrors = mkOption {
      type = types.listOf mirror;
      default = [ ];
      example = lib.literalExpression ''[ { name = "nas"; path = "/mnt/nas/photos"; } ]'';
      description = "Further verified destinations (`[[mirror]]` tables), caught up by photo-ingest-mirror.timer.";
    };
    mirrorSchedule = schedule "photo-ingest-mirror";

    verify = {
      enable = lib.mkEnableOption "the periodic bit-rot scrub of the library and mirrors (photo-ingest-verify.timer)";
      schedule = schedule "photo-ingest-verify";
      sample = mkOption {
        type = types.ints.unsigned;
        default = 0;
        description = "Files checked per scrub run; 0: all (`verify.sample`).";
      };
    };

    notify = {
      webhookUrlFile = mkOption {
        type = secretPath;
        default = null;
        example = "/run/secrets/photo-ingest-webhook";
        description = ''
          File holding the webhook URL (a secret: ntfy topics, Home Assistant webhook ids). It is
          passed with `LoadCredential=`, never copied to the store. Setting it turns
          notifications and photo-ingest-backlog-check.timer on.
        '';
      };
      format = mkOption {
        type = types.enum [
          "json"
          "ntfy"
          "slack"
        ];
        default = "json";
        description = "Body format of the webhook (`notify.format`).";
      };
      events = mkOption {
        type = types.listOf (
          types.enum [
            "success"
            "partial"
            "failure"
            "stall"
          ]
        );
        default = [
          "success"
          "partial"
          "failure"
          "stall"
        ];
        description = "Which events are sent (`notify.events`).";
      };
      stallMinutes = mkOption {
        type = types.ints.positive;
        default = 60;
        description = "A backlog not shrinking this long is a stall (`notify.stall_minutes`).";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    services.photo-ingest.settings = lib.mkMerge [
      {
        library.layout = cfg.card.layout;
        ingest.verify = cfg.card.verify;
        card = {
          user = cfg.user;
          inherit (cfg.card) eject allow deny;
        };
        metadata = orNull {
          batch_size = cfg.metadata.batchSize;
          inherit (cfg.metadata) workers;
        };
      }
      # The tables of newer features are written only when used, so a package without them
      # still accepts the file.
      (lib.mkIf (cfg.watch != [ ]) {
        watch = map (w: orNull {
          inherit (w) path name after;
          stable_seconds = w.stableSeconds;
          archive_dir = w.archiveDir;
          wait_for_immich = w.waitForImmich;
        }) cfg.watch;
      })
      (lib.mkIf (cfg.mirrors != [ ]) {
        mirror = map (m: orNull { inherit (m) name path required verify; }) cfg.mirrors;
      })
      (lib.mkIf cfg.verify.enable { verify.sample = cfg.verify.sample; })
      (lib.mkIf (cfg.notify.webhookUrlFile != null) {
        notify = {
          webhook_url_file = "$CREDENTIALS_DIRECTORY/notify-webhook-url";
          inherit (cfg.notify) format events;
          stall_minutes = cfg.notify.stallMinutes;
        };
      })
    ];

    assertions =
      map (w: {
        assertion = w.after == "archive" -> w.archiveDir != null;
        message = "services.photo-ingest.watch: folder ${w.path} has after = \"archive\" but no archiveDir.";
      }) cfg.watch
      ++ map (w: {
        assertion = w.waitForImmich -> cfg.immich.enable;
        message = "services.photo-ingest.watch: folder ${w.path} waits for Immich, but services.photo-ingest.immich.enable is false.";
      }) cfg.watch;
  };
}
