# Evaluation tests of the NixOS module: lib.evalModules with nixpkgs' lib, the module, and
# stubs of the NixOS options it touches (stubs.nix, pkgs.nix). Result: { total; failed; }.
#   nix-instantiate --eval --strict --json tests/nix --arg lib 'import /path/to/nixpkgs/lib'
# (tests/nix/run does that; the flake's checks.<system>.module-eval too).
{
  lib,
  module ? ../../nix/module.nix,
}:
let
  evalWith =
    pkgsArgs: modules:
    (lib.evalModules {
      modules = [
        module
        ./stubs.nix
        { _module.args.pkgs = import ./pkgs.nix ({ inherit lib; } // pkgsArgs); }
      ]
      ++ modules;
    }).config;
  on = extra: evalWith { } [
    { services.photo-ingest.enable = true; }
    extra
  ];
  toml = c: c.environment.etc."photo-ingest/config.toml".source.value;
  unit = c: name: c.systemd.services.${name};
  failing = c: map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  # One assertion fails, and its message says SUBSTRING; else the messages, to read.
  fires =
    c: substring:
    let
      msgs = failing c;
    in
    if lib.length msgs == 1 && lib.hasInfix substring (lib.head msgs) then "fires" else msgs;
  evaluates = value: (builtins.tryEval (builtins.deepSeq value true)).success;
  pkg = "/nix/store/00000000000000000000000000000000-photo-ingest";

  plain = on { };
  remote = on {
    services.photo-ingest = {
      environment.TZ = "Europe/Berlin";
      database = {
        createLocally = false;
        host = "db.example.org";
        port = 5433;
        name = "photos";
        user = "ingest";
        passwordFile = "/run/secrets/db";
      };
      metadata = {
        enable = false;
        schedule = "hourly";
        workers = 2;
        batchSize = 100;
      };
      notify = {
        webhookUrlFile = "/run/secrets/hook";
        format = "ntfy";
        events = [ "failure" ];
      };
      immich = {
        enable = true;
        url = "https://photos.example.org";
        apiKeyFile = "/run/keys/immich";
        album = "{card_label} {date}";
        workers = 8;
      };
    };
  };
  server = extra: on {
    imports = [ extra ];
    services.photo-ingest.immich = {
      enable = true;
      apiKeyFile = "/run/keys/immich";
      server.enable = true;
    };
  };
  local = server { };
  library = server {
    services.photo-ingest.immich.mode = "library";
  };
  gpu =
    choice: extra:
    server {
      imports = [ extra ];
      services.photo-ingest.immich.server.gpu.transcoding = choice;
      hardware.graphics.enable = true;
    };
  nvidia.services.xserver.videoDrivers = [ "nvidia" ];
  vaapi = gpu "vaapi" { };
  qsv = gpu "qsv" {
    hardware.graphics.extraPackages = [ ((import ./pkgs.nix { inherit lib; }).drv "intel-media-driver") ];
  };
  nvenc = gpu "nvenc" nvidia;
  cudaWith =
    extra:
    evalWith { cudaSupport = true; } [
      nvidia
      extra
      {
        services.photo-ingest = {
          enable = true;
          immich = {
            enable = true;
            apiKeyFile = "/run/keys/immich";
            server.enable = true;
            server.gpu.machineLearning = "cuda";
          };
        };
      }
    ];
  cuda = cudaWith { };
  nvidiaDevices = [
    "/dev/nvidia0"
    "/dev/nvidiactl"
    "/dev/nvidia-modeset"
    "/dev/nvidia-uvm"
    "/dev/nvidia-uvm-tools"
  ];
  monitored = server {
    services.prometheus.enable = true;
    services.grafana.enable = true;
    services.photo-ingest.metrics.nodeExporter = true;
    services.photo-ingest.immich.server.telemetry.enable = true;
  };
  folders = on {
    services.photo-ingest = {
      watch = [
        {
          path = "/srv/inbox/phone";
          after = "archive";
          archiveDir = "/srv/inbox/done";
        }
        {
          path = "/srv/inbox/scans";
          name = "scans";
        }
      ];
      mirrors = [
        {
          name = "nas";
          path = "/mnt/nas/photos";
        }
        {
          name = "usb";
          path = "/mnt/usb";
          required = false;
          verify = "size";
        }
      ];
      mirrorSchedule = "daily";
      verify = {
        enable = true;
        sample = 500;
      };
    };
  };

  tests = {
    # --- defaults: local catalog, card and metadata units, nothing else ---
    testConfigFile = {
      expr = toml plain;
      expected = {
        library = {
          path = "/var/lib/photo-ingest/library";
          layout = "{year}/{month}/{day}/{filename}";
        };
        database.url = "host=/run/postgresql port=5432 dbname=photo-ingest user=photo-ingest";
        ingest.verify = "full";
        card = {
          user = "photo-ingest";
          eject = true;
          allow = [ ];
          deny = [ ];
        };
        metadata.batch_size = 500;
        metrics.textfile_dir = "/var/lib/photo-ingest/metrics";
        immich = {
          mode = "upload";
          workers = 4;
          metrics_listen = "127.0.0.1:9467";
        };
      };
    };
    testPackagedUnitsAndRule = {
      expr = {
        systemd = plain.systemd.packages;
        udev = plain.services.udev.packages;
      };
      expected = {
        systemd = [ plain.services.photo-ingest.package ];
        udev = [ plain.services.photo-ingest.package ];
      };
    };
    testCardDropIn = {
      expr = unit plain "card-ingest@";
      expected = {
        overrideStrategy = "asDropin";
        environment = { };
        wantedBy = [ ];
        after = [ "postgresql.target" ];
        wants = [ "postgresql.target" ];
        restartTriggers = [ ];
        serviceConfig.ReadWritePaths = [
          "/var/lib/photo-ingest/library"
          "-/var/lib/photo-ingest/metrics"
        ];
        timerConfig = { };
      };
    };
    testMetadataDropIn = {
      expr = (unit plain "photo-ingest-metadata").serviceConfig;
      expected = {
        User = "photo-ingest";
        Group = "photo-ingest";
        ReadWritePaths = [ "-/var/lib/photo-ingest/metrics" ];
      };
    };
    testMetadataTimer = {
      expr = plain.systemd.timers.photo-ingest-metadata;
      expected = {
        overrideStrategy = "asDropin";
        environment = { };
        wantedBy = [ "timers.target" ];
        after = [ ];
        wants = [ ];
        restartTriggers = [ ];
        serviceConfig = { };
        timerConfig.OnCalendar = [
          ""
          "*:0/15"
        ];
      };
    };
    testSyncIdleWithoutImmich = {
      expr =
        let
          s = unit plain "photo-ingest-immich-sync";
        in
        {
          inherit (s) wantedBy serviceConfig;
          restarts = s.restartTriggers == [ plain.environment.etc."photo-ingest/config.toml".source ];
        };
      expected = {
        wantedBy = [ ];
        serviceConfig = {
          User = "photo-ingest";
          Group = "photo-ingest";
        };
        restarts = true;
      };
    };
    testNoUnitsForUnusedFeatures = {
      expr = {
        services = lib.attrNames plain.systemd.services;
        timers = lib.attrNames plain.systemd.timers;
      };
      expected = {
        services = [
          "card-ingest@"
          "photo-ingest-immich-sync"
          "photo-ingest-metadata"
        ];
        timers = [ "photo-ingest-metadata" ];
      };
    };
    testLocalPostgres = {
      expr = plain.services.postgresql;
      expected = {
        enable = true;
        ensureDatabases = [ "photo-ingest" ];
        ensureUsers = [
          {
            name = "photo-ingest";
            ensureDBOwnership = true;
          }
        ];
      };
    };
    testUserAndFolders = {
      expr = {
        user = plain.users.users.photo-ingest;
        groups = lib.attrNames plain.users.groups;
        tmpfiles = plain.systemd.tmpfiles.settings.photo-ingest;
      };
      expected = {
        user = {
          isSystemUser = true;
          group = "photo-ingest";
          home = "/var/lib/photo-ingest";
          description = "photo-ingest library owner";
          extraGroups = [ ];
        };
        groups = [ "photo-ingest" ];
        tmpfiles = {
          "/var/lib/photo-ingest".d = {
            user = "photo-ingest";
            group = "photo-ingest";
            mode = "0755";
          };
          "/var/lib/photo-ingest/library".d = {
            user = "photo-ingest";
            group = "photo-ingest";
            mode = "0750";
          };
          "/var/lib/photo-ingest/metrics".d = {
            user = "photo-ingest";
            group = "photo-ingest";
            mode = "0755";
          };
        };
      };
    };
    testDefaultsPassAssertions = {
      expr = map failing [
        plain
        remote
        local
        library
        vaapi
        qsv
        nvenc
        cuda
        monitored
        folders
      ];
      expected = lib.genList (_: [ ]) 10;
    };
    testDisabledDoesNothing = {
      expr =
        let
          c = evalWith { } [ { services.photo-ingest.card.layout = "{date}/{filename}"; } ];
        in
        {
          inherit (c.systemd) services packages;
          etc = c.environment.etc;
        };
      expected = {
        services = { };
        packages = [ ];
        etc = { };
      };
    };
    testOtherUserIsNotCreated = {
      expr =
        let
          c = on { services.photo-ingest.user = "alice"; };
        in
        {
          users = lib.attrNames c.users.users;
          role = c.services.postgresql.ensureUsers;
          owner = (toml c).card.user;
          runsAs = (unit c "photo-ingest-metadata").serviceConfig.User;
        };
      expected = {
        users = [ ];
        role = [
          {
            name = "alice";
            ensureDBOwnership = true;
          }
        ];
        owner = "alice";
        runsAs = "alice";
      };
    };

    # --- remote catalog, credentials, notifications, schedule, environment ---
    testRemoteDatabase = {
      expr = {
        db = (toml remote).database;
        postgres = remote.services.postgresql.enable;
        after = (unit remote "card-ingest@").after;
      };
      expected = {
        db = {
          url = "host=db.example.org port=5433 dbname=photos user=ingest";
          password_file = "$CREDENTIALS_DIRECTORY/db-password";
        };
        postgres = false;
        after = [ ];
      };
    };
    testCredentialsPerUnit = {
      expr = lib.mapAttrs (_: u: u.serviceConfig.LoadCredential or null) remote.systemd.services;
      expected = {
        "card-ingest@" = [
          "db-password:/run/secrets/db"
          "notify-webhook-url:/run/secrets/hook"
        ];
        photo-ingest-metadata = [
          "db-password:/run/secrets/db"
          "notify-webhook-url:/run/secrets/hook"
        ];
        photo-ingest-backlog-check = [
          "db-password:/run/secrets/db"
          "notify-webhook-url:/run/secrets/hook"
        ];
        photo-ingest-immich-sync = [
          "db-password:/run/secrets/db"
          "notify-webhook-url:/run/secrets/hook"
          "immich-api-key:/run/keys/immich"
        ];
      };
    };
    testSecretsAreNotInTheConfig = {
      expr = lib.hasInfix "/run/" (builtins.toJSON (toml remote));
      expected = false;
    };
    testImmichSettings = {
      expr = (toml remote).immich;
      expected = {
        url = "https://photos.example.org";
        api_key_file = "$CREDENTIALS_DIRECTORY/immich-api-key";
        mode = "upload";
        album = "{card_label} {date}";
        workers = 8;
        metrics_listen = "127.0.0.1:9467";
      };
    };
    testNotifySettingsAndTimer = {
      expr = {
        notify = (toml remote).notify;
        timer = remote.systemd.timers.photo-ingest-backlog-check.wantedBy;
      };
      expected = {
        notify = {
          webhook_url_file = "$CREDENTIALS_DIRECTORY/notify-webhook-url";
          format = "ntfy";
          events = [ "failure" ];
          stall_minutes = 60;
        };
        timer = [ "timers.target" ];
      };
    };
    testMetadataOffAndScheduled = {
      expr = {
        timer = remote.systemd.timers.photo-ingest-metadata;
        settings = (toml remote).metadata;
      };
      expected = {
        timer = plain.systemd.timers.photo-ingest-metadata // {
          wantedBy = [ ];
          timerConfig.OnCalendar = [
            ""
            "hourly"
          ];
        };
        settings = {
          batch_size = 100;
          workers = 2;
        };
      };
    };
    testEnvironmentOnEveryUnit = {
      expr = lib.unique (lib.mapAttrsToList (_: u: u.environment) remote.systemd.services);
      expected = [ { TZ = "Europe/Berlin"; } ];
    };
    testSyncWanted = {
      expr = (unit remote "photo-ingest-immich-sync").wantedBy;
      expected = [ "multi-user.target" ];
    };
    testSecretMustNotBeAPathLiteral = {
      expr = evaluates (on { services.photo-ingest.immich.apiKeyFile = ./default.nix; }).services.photo-ingest.immich.apiKeyFile;
      expected = false;
    };

    # --- Immich on this host, and each GPU choice ---
    testLocalImmich = {
      expr = {
        inherit (local.services.immich)
          enable
          accelerationDevices
          settings
          environment
          ;
        ml = local.services.immich.machine-learning.enable;
        url = (toml local).immich.url;
        after = (unit local "photo-ingest-immich-sync").after;
        groups = local.users.users.immich.extraGroups;
      };
      expected = {
        enable = true;
        accelerationDevices = [ ];
        settings = null;
        environment = { };
        ml = true;
        url = "http://localhost:2283";
        after = [
          "postgresql.target"
          "immich-server.service"
        ];
        groups = [ ];
      };
    };
    testLibraryModeGivesImmichReadAccess = {
      expr = {
        groups = library.users.users.immich.extraGroups;
        mode = (toml library).immich.mode;
      };
      expected = {
        groups = [ "photo-ingest" ];
        mode = "library";
      };
    };
    testVaapi = {
      expr = {
        inherit (vaapi.services.immich) accelerationDevices settings;
        groups = vaapi.users.users.immich.extraGroups;
      };
      expected = {
        accelerationDevices = [ "/dev/dri/renderD128" ];
        settings.ffmpeg = {
          accel = "vaapi";
          accelDecode = true;
        };
        groups = [
          "render"
          "video"
        ];
      };
    };
    testQsv = {
      expr = {
        inherit (qsv.services.immich) accelerationDevices settings;
      };
      expected = {
        accelerationDevices = [ "/dev/dri/renderD128" ];
        settings.ffmpeg = {
          accel = "qsv";
          accelDecode = true;
        };
      };
    };
    testNvenc = {
      expr = {
        inherit (nvenc.services.immich) accelerationDevices settings;
        groups = nvenc.users.users.immich.extraGroups;
      };
      expected = {
        accelerationDevices = nvidiaDevices;
        settings.ffmpeg = {
          accel = "nvenc";
          accelDecode = true;
        };
        groups = [ ];
      };
    };
    testCudaMachineLearning = {
      expr = {
        inherit (cuda.services.immich) accelerationDevices settings;
        ml = cuda.services.immich.machine-learning.enable;
      };
      expected = {
        accelerationDevices = nvidiaDevices;
        settings = null;
        ml = true;
      };
    };
    testCudaAndNvencShareDevices = {
      expr =
        (cudaWith {
          services.photo-ingest.immich.server.gpu.transcoding = "nvenc";
          hardware.graphics.enable = true;
        }).services.immich.accelerationDevices;
      expected = nvidiaDevices;
    };
    testMachineLearningOff = {
      expr =
        (server { services.photo-ingest.immich.server.machineLearning = false; })
        .services.immich.machine-learning.enable;
      expected = false;
    };

    # --- metrics, Prometheus, node exporter, Grafana ---
    testScrapeConfigs = {
      expr = monitored.services.prometheus.scrapeConfigs;
      expected = [
        {
          job_name = "photo-ingest-sync";
          static_configs = [ { targets = [ "127.0.0.1:9467" ]; } ];
        }
        {
          job_name = "photo-ingest-node";
          static_configs = [ { targets = [ "localhost:9100" ]; } ];
        }
        {
          job_name = "immich-api";
          static_configs = [ { targets = [ "localhost:8081" ]; } ];
        }
        {
          job_name = "immich-microservices";
          static_configs = [ { targets = [ "localhost:8082" ]; } ];
        }
      ];
    };
    testScrapeTargetIsTheListenAddress = {
      expr = map (j: lib.head (lib.head j.static_configs).targets) (on {
        services.prometheus.enable = true;
        services.photo-ingest.metrics.listenAddress = "::1";
        services.photo-ingest.immich = {
          enable = true;
          url = "https://photos.example.org";
          apiKeyFile = "/run/keys/immich";
        };
      }).services.prometheus.scrapeConfigs;
      expected = [ "[::1]:9467" ];
    };
    testAlertRules = {
      expr = monitored.services.prometheus.ruleFiles;
      expected = [ "${pkg}/share/photo-ingest/prometheus/alerts.yml" ];
    };
    testImmichTelemetry = {
      expr = monitored.services.immich.environment;
      expected = {
        IMMICH_TELEMETRY_INCLUDE = "all";
        IMMICH_API_METRICS_PORT = "8081";
        IMMICH_MICROSERVICES_METRICS_PORT = "8082";
      };
    };
    testNodeExporterTextfiles = {
      expr = monitored.services.prometheus.exporters.node;
      expected = {
        enable = true;
        port = 9100;
        enabledCollectors = [ "textfile" ];
        extraFlags = [ "--collector.textfile.directory=/var/lib/photo-ingest/metrics" ];
      };
    };
    testGrafanaDashboards = {
      expr = monitored.services.grafana.provision;
      expected = {
        enable = true;
        dashboards.settings.providers = [
          {
            name = "photo-ingest";
            options.path = "${pkg}/share/photo-ingest/grafana";
          }
        ];
      };
    };
    testNoPrometheusNoScrapes = {
      expr = {
        inherit (local.services.prometheus) scrapeConfigs ruleFiles;
        grafana = local.services.grafana.provision.enable;
      };
      expected = {
        scrapeConfigs = [ ];
        ruleFiles = [ ];
        grafana = false;
      };
    };
    testMetricsOnAllAddresses = {
      expr =
        let
          c = on {
            services.photo-ingest.metrics = {
              listenAddress = "0.0.0.0";
              openFirewall = true;
            };
          };
        in
        {
          listen = (toml c).immich.metrics_listen;
          firewall = c.networking.firewall.allowedTCPPorts;
        };
      expected = {
        listen = "0.0.0.0:9467";
        firewall = [ 9467 ];
      };
    };
    testMetricsOff = {
      expr =
        let
          c = on { services.photo-ingest.metrics.enable = false; };
        in
        {
          metrics = (toml c).metrics or null;
          listen = (toml c).immich.metrics_listen;
          card = (unit c "card-ingest@").serviceConfig.ReadWritePaths;
          metadata = (unit c "photo-ingest-metadata").serviceConfig.ReadWritePaths;
          tmpfiles = lib.attrNames c.systemd.tmpfiles.settings.photo-ingest;
        };
      expected = {
        metrics = null;
        listen = "";
        card = [ "/var/lib/photo-ingest/library" ];
        metadata = [ ];
        tmpfiles = [
          "/var/lib/photo-ingest"
          "/var/lib/photo-ingest/library"
        ];
      };
    };

    # --- cards ---
    testCardSettings = {
      expr =
        let
          c = on {
            services.photo-ingest = {
              libraryDir = "/srv/photos";
              card = {
                allow = [ "label:EOS_DIGITAL" ];
                deny = [ "serial:0123" ];
                layout = "{year}/{date} {card_label}/{filename}";
                verify = "size";
                eject = false;
              };
            };
          };
        in
        {
          inherit (toml c) card library ingest;
          writes = (unit c "card-ingest@").serviceConfig.ReadWritePaths;
        };
      expected = {
        card = {
          user = "photo-ingest";
          allow = [ "label:EOS_DIGITAL" ];
          deny = [ "serial:0123" ];
          eject = false;
        };
        library = {
          path = "/srv/photos";
          layout = "{year}/{date} {card_label}/{filename}";
        };
        ingest.verify = "size";
        writes = [
          "/srv/photos"
          "-/var/lib/photo-ingest/metrics"
        ];
      };
    };
    testCardMatchMustHaveAKind = {
      expr = evaluates (on { services.photo-ingest.card.allow = [ "EOS_DIGITAL" ]; }).services.photo-ingest.card.allow;
      expected = false;
    };
    testNarrowedFilesystems = {
      expr =
        let
          c = on { services.photo-ingest.card.filesystems = [ "vfat" "exfat" ]; };
        in
        map (p: p.text or p) c.services.udev.packages;
      expected = [
        { outPath = "${pkg}"; name = "photo-ingest"; pname = "photo-ingest"; type = "derivation"; }
        ''
          # services.photo-ingest.card.filesystems: other filesystems do not start card-ingest@.
          ACTION=="add", SUBSYSTEM=="block", ENV{ID_FS_USAGE}=="filesystem", ENV{ID_FS_TYPE}!="vfat|exfat", ENV{PHOTO_INGEST_IGNORE}="1"
        ''
      ];
    };
    testNarrowedRuleSortsFirst = {
      expr =
        (lib.last (on { services.photo-ingest.card.filesystems = [ "exfat" ]; }).services.udev.packages)
        .path;
      expected = "lib/udev/rules.d/89-photo-ingest-filesystems.rules";
    };
    testCardsOff = {
      expr = (on { services.photo-ingest.card.enable = false; }).services.udev.packages;
      expected = [ ];
    };

    # --- watch folders, mirrors, scrub (issue #8) ---
    testWatchAndMirrorTables = {
      expr = {
        inherit (toml folders) watch mirror verify;
      };
      expected = {
        watch = [
          {
            path = "/srv/inbox/phone";
            after = "archive";
            archive_dir = "/srv/inbox/done";
            stable_seconds = 10;
            wait_for_immich = false;
          }
          {
            path = "/srv/inbox/scans";
            name = "scans";
            after = "leave";
            stable_seconds = 10;
            wait_for_immich = false;
          }
        ];
        mirror = [
          {
            name = "nas";
            path = "/mnt/nas/photos";
            required = true;
          }
          {
            name = "usb";
            path = "/mnt/usb";
            required = false;
            verify = "size";
          }
        ];
        verify.sample = 500;
      };
    };
    testWatchUnit = {
      expr =
        let
          w = unit folders "photo-ingest-watch";
        in
        {
          inherit (w) wantedBy;
          inherit (w.serviceConfig) ReadWritePaths User;
          restarts = w.restartTriggers != [ ];
        };
      expected = {
        wantedBy = [ "multi-user.target" ];
        ReadWritePaths = [
          "/var/lib/photo-ingest/library"
          "/srv/inbox/phone"
          "/srv/inbox/done"
          "-/var/lib/photo-ingest/metrics"
          "-/mnt/nas/photos"
          "-/mnt/usb"
        ];
        User = "photo-ingest";
        restarts = true;
      };
    };
    testMirrorUnitAndTimer = {
      expr = {
        writes = (unit folders "photo-ingest-mirror").serviceConfig.ReadWritePaths;
        timer = {
          inherit (folders.systemd.timers.photo-ingest-mirror) wantedBy timerConfig;
        };
        card = (unit folders "card-ingest@").serviceConfig.ReadWritePaths;
      };
      expected = {
        writes = [
          "-/mnt/nas/photos"
          "-/mnt/usb"
          "-/var/lib/photo-ingest/metrics"
        ];
        timer = {
          wantedBy = [ "timers.target" ];
          timerConfig.OnCalendar = [
            ""
            "daily"
          ];
        };
        card = [
          "/var/lib/photo-ingest/library"
          "-/var/lib/photo-ingest/metrics"
          "-/mnt/nas/photos"
          "-/mnt/usb"
        ];
      };
    };
    testVerifyTimerKeepsPackagedSchedule = {
      expr = {
        inherit (folders.systemd.timers.photo-ingest-verify) wantedBy timerConfig;
      };
      expected = {
        wantedBy = [ "timers.target" ];
        timerConfig = { };
      };
    };

    # --- backups ---
    testBackupWithImmich = {
      expr =
        (server { services.photo-ingest.database.backup.enable = true; }).services.postgresqlBackup;
      expected = {
        enable = true;
        databases = [
          "photo-ingest"
          "immich"
        ];
      };
    };
    testBackupCatalogOnly = {
      expr = (on { services.photo-ingest.database.backup.enable = true; }).services.postgresqlBackup.databases;
      expected = [ "photo-ingest" ];
    };

    # --- every assertion fires, with its message ---
    testAssertWatchArchiveDir = {
      expr = fires (on {
        services.photo-ingest.watch = [
          {
            path = "/srv/in";
            after = "archive";
          }
        ];
      }) "no archiveDir";
      expected = "fires";
    };
    testAssertWatchWaitsForImmich = {
      expr = fires (on {
        services.photo-ingest.watch = [
          {
            path = "/srv/in";
            waitForImmich = true;
          }
        ];
      }) "waits for Immich";
      expected = "fires";
    };
    testAssertLocalSocket = {
      expr = fires (on { services.photo-ingest.database.host = "127.0.0.1"; }) "local Unix socket";
      expected = "fires";
    };
    testAssertPeerUser = {
      expr = fires (on { services.photo-ingest.database.user = "someone"; }) "peer authentication";
      expected = "fires";
    };
    testAssertOwnDatabase = {
      expr = fires (on { services.photo-ingest.database.name = "photo_ingest"; }) "ensureDBOwnership";
      expected = "fires";
    };
    testAssertRemotePassword = {
      expr = fires (on {
        services.photo-ingest.database = {
          createLocally = false;
          host = "db.example.org";
        };
      }) "needs database.passwordFile";
      expected = "fires";
    };
    testAssertBackupRemote = {
      expr = fires (on {
        services.photo-ingest.database = {
          createLocally = false;
          host = "/run/other-postgresql";
          backup.enable = true;
        };
      }) "back up a remote catalog";
      expected = "fires";
    };
    testAssertImmichUrl = {
      expr = fires (on {
        services.photo-ingest.immich = {
          enable = true;
          apiKeyFile = "/run/keys/immich";
        };
      }) "needs immich.url";
      expected = "fires";
    };
    testAssertImmichKey = {
      expr = fires (on {
        services.photo-ingest.immich = {
          enable = true;
          url = "https://photos.example.org";
        };
      }) "needs immich.apiKeyFile";
      expected = "fires";
    };
    testAssertLibraryAccess = {
      expr = fires (server {
        services.photo-ingest.immich.mode = "library";
        services.photo-ingest.immich.server.libraryAccess = false;
      }) "libraryAccess = true";
      expected = "fires";
    };
    testAssertLibraryUnderHome = {
      expr = fires (server {
        services.photo-ingest.immich.mode = "library";
        services.photo-ingest.libraryDir = "/home/alice/photos";
      }) "ProtectHome";
      expected = "fires";
    };
    testAssertGpuNeedsServer = {
      expr = fires (on { services.photo-ingest.immich.server.gpu.transcoding = "vaapi"; }) "immich.server.enable = true";
      expected = "fires";
    };
    testAssertGraphics = {
      expr = fires (server { services.photo-ingest.immich.server.gpu.transcoding = "vaapi"; }) "hardware.graphics.enable";
      expected = "fires";
    };
    testAssertQsvDriver = {
      expr = fires (gpu "qsv" { }) "intel-media-driver";
      expected = "fires";
    };
    testAssertNvidiaDriver = {
      expr = fires (gpu "nvenc" { }) "NVIDIA driver";
      expected = "fires";
    };
    testAssertCudaNeedsMachineLearning = {
      expr = fires (cudaWith { services.photo-ingest.immich.server.machineLearning = false; }) "machineLearning = true";
      expected = "fires";
    };
    testAssertCudaSupport = {
      expr = fires (server {
        imports = [ nvidia ];
        services.photo-ingest.immich.server.gpu.machineLearning = "cuda";
      }) "cudaSupport";
      expected = "fires";
    };
  };
  failed = lib.runTests tests;
in
{
  total = lib.length (lib.attrNames tests);
  passed = lib.length (lib.attrNames tests) - lib.length failed;
  inherit failed;
}
