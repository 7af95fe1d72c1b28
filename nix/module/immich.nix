# Immich: the sync service's settings, and optionally nixpkgs' services.immich on this host,
# with read access to the library, telemetry and GPU acceleration.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.photo-ingest;
  im = cfg.immich;
  srv = im.server;
  gpu = srv.gpu;
  secretPath = import ./secret-path.nix lib;

  nvidiaDevices = [
    "/dev/nvidia0"
    "/dev/nvidiactl"
    "/dev/nvidia-modeset"
    "/dev/nvidia-uvm"
    "/dev/nvidia-uvm-tools"
  ];
  transcodes = gpu.transcoding != "none";
  usesNvidia = gpu.transcoding == "nvenc" || gpu.machineLearning == "cuda";
  devices = lib.unique (
    lib.optional (lib.elem gpu.transcoding [ "vaapi" "qsv" ]) gpu.renderDevice
    ++ lib.optionals usesNvidia nvidiaDevices
  );
  nvidiaDriver = lib.elem "nvidia" config.services.xserver.videoDrivers;
  hasPackage = name: lib.any (p: lib.getName p == name) config.hardware.graphics.extraPackages;
in
{
  options.services.photo-ingest.immich = {
    enable = lib.mkEnableOption "photo-ingest-immich-sync.service, which keeps Immich in step with the library";
    url = mkOption {
      type = types.nullOr types.str;
      default = if srv.enable then "http://localhost:${toString config.services.immich.port}" else null;
      defaultText = lib.literalExpression ''the local server's address when immich.server.enable, else null'';
      example = "https://photos.example.org";
      description = "Immich's address (`immich.url`).";
    };
    apiKeyFile = mkOption {
      type = secretPath;
      default = null;
      example = "/run/secrets/immich-api-key";
      description = ''
        File holding the Immich API key (permissions in docs/immich.md). Passed to the sync
        service only, with `LoadCredential=`; the config names it as
        `$CREDENTIALS_DIRECTORY/immich-api-key`.
      '';
    };
    mode = mkOption {
      type = types.enum [
        "upload"
        "library"
      ];
      default = "upload";
      description = "`upload` sends every asset; `library` lets Immich read the library in place as an external library (`immich.mode`).";
    };
    album = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "{card_label} {date}";
      description = "Album name template (`immich.album`); null: no albums.";
    };
    workers = mkOption {
      type = types.ints.between 1 64;
      default = 4;
      description = "Concurrent uploads (`immich.workers`).";
    };
    libraryPath = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/mnt/photos";
      description = "Library mode: the library as the Immich server sees it (`immich.library_path`); null: {option}`services.photo-ingest.libraryDir`.";
    };

    server = {
      enable = lib.mkEnableOption "nixpkgs' services.immich on this host, configured for photo-ingest";
      mediaLocation = mkOption {
        type = types.path;
        default = "/var/lib/immich";
        description = "Where Immich keeps uploads, thumbnails and transcodes (services.immich.mediaLocation).";
      };
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open Immich's port (services.immich.openFirewall).";
      };
      machineLearning = mkOption {
        type = types.bool;
        default = true;
        description = "Run Immich's machine-learning service (faces, smart search).";
      };
      libraryAccess = mkOption {
        type = types.bool;
        default = im.mode == "library";
        defaultText = lib.literalExpression ''immich.mode == "library"'';
        description = "Add Immich's user to {option}`services.photo-ingest.group`, so it can read the library (needed in library mode).";
      };
      telemetry = {
        enable = lib.mkEnableOption "Immich's Prometheus metrics (IMMICH_TELEMETRY_INCLUDE=all), scraped by a local services.prometheus";
        apiPort = mkOption {
          type = types.port;
          default = 8081;
          description = "Port of the API worker's /metrics (IMMICH_API_METRICS_PORT).";
        };
        microservicesPort = mkOption {
          type = types.port;
          default = 8082;
          description = "Port of the microservices worker's /metrics (IMMICH_MICROSERVICES_METRICS_PORT).";
        };
      };
      gpu = {
        transcoding = mkOption {
          type = types.enum [
            "none"
            "vaapi"
            "qsv"
            "nvenc"
          ];
          default = "none";
          description = ''
            Hardware video transcoding: sets Immich's `ffmpeg.accel` (and `accelDecode`) and
            gives its units the device. `vaapi` (AMD, Intel) and `qsv` (Intel) use
            {option}`renderDevice`, `nvenc` the NVIDIA devices. Setting it makes
            services.immich.settings non-null, so Immich's admin settings page becomes read-only.
          '';
        };
        renderDevice = mkOption {
          type = types.str;
          default = "/dev/dri/renderD128";
          description = "DRM render node for VA-API and Quick Sync.";
        };
        machineLearning = mkOption {
          type = types.enum [
            "cpu"
            "cuda"
          ];
          default = "cpu";
          description = ''
            `cuda`: Immich's machine learning on an NVIDIA GPU (onnxruntime built with CUDA, which
            needs `nixpkgs.config.cudaSupport = true`; the /dev/nvidia* devices are allowed).
          '';
        };
      };
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        services.photo-ingest.settings.immich = lib.filterAttrs (_: v: v != null) {
          inherit (im) url mode album workers;
          api_key_file = if im.apiKeyFile != null then "$CREDENTIALS_DIRECTORY/immich-api-key" else null;
          library_path = im.libraryPath;
        };

        assertions = [
          {
            assertion = im.enable -> im.url != null;
            message = "services.photo-ingest.immich.enable needs immich.url, or immich.server.enable to run Immich on this host.";
          }
          {
            assertion = im.enable -> im.apiKeyFile != null;
            message = "services.photo-ingest.immich.enable needs immich.apiKeyFile (a file holding the API key; see docs/immich.md for its permissions).";
          }
          {
            assertion = srv.enable && im.mode == "library" -> srv.libraryAccess;
            message = "services.photo-ingest.immich.mode = \"library\" lets Immich read the library in place: set immich.server.libraryAccess = true so Immich's user can read ${cfg.libraryDir}.";
          }
          {
            assertion = srv.enable && im.mode == "library" -> !lib.hasPrefix "/home/" cfg.libraryDir;
            message = "services.photo-ingest.libraryDir (${cfg.libraryDir}) is under /home, which immich-server cannot see (ProtectHome): move the library, e.g. to /srv/photos/library.";
          }
          {
            assertion = (transcodes || gpu.machineLearning != "cpu") -> srv.enable;
            message = "services.photo-ingest.immich.server.gpu configures the Immich server on this host: set immich.server.enable = true.";
          }
          {
            assertion = srv.enable && transcodes -> config.hardware.graphics.enable;
            message = "services.photo-ingest.immich.server.gpu.transcoding = \"${gpu.transcoding}\" needs the GPU driver stack: set hardware.graphics.enable = true.";
          }
          {
            assertion = srv.enable && gpu.transcoding == "qsv" -> hasPackage "intel-media-driver";
            message = "services.photo-ingest.immich.server.gpu.transcoding = \"qsv\" needs Intel's media driver: add pkgs.intel-media-driver to hardware.graphics.extraPackages.";
          }
          {
            assertion = srv.enable && usesNvidia -> nvidiaDriver;
            message = "services.photo-ingest.immich.server.gpu (nvenc or cuda) needs the NVIDIA driver: add \"nvidia\" to services.xserver.videoDrivers (also on a headless host) and set hardware.nvidia.open.";
          }
          {
            assertion = srv.enable && gpu.machineLearning == "cuda" -> srv.machineLearning;
            message = "services.photo-ingest.immich.server.gpu.machineLearning = \"cuda\" needs immich.server.machineLearning = true.";
          }
          {
            assertion = srv.enable && gpu.machineLearning == "cuda" -> pkgs.config.cudaSupport or false;
            message = "services.photo-ingest.immich.server.gpu.machineLearning = \"cuda\" needs onnxruntime built with CUDA: set nixpkgs.config.cudaSupport = true.";
          }
        ];
      }

      (lib.mkIf srv.enable {
        services.immich = {
          enable = true;
          inherit (srv) mediaLocation openFirewall;
          machine-learning.enable = srv.machineLearning;
          accelerationDevices = lib.mkIf (devices != [ ]) devices;
          environment = lib.mkIf srv.telemetry.enable {
            IMMICH_TELEMETRY_INCLUDE = "all";
            IMMICH_API_METRICS_PORT = toString srv.telemetry.apiPort;
            IMMICH_MICROSERVICES_METRICS_PORT = toString srv.telemetry.microservicesPort;
          };
          settings = lib.mkIf transcodes {
            ffmpeg = {
              accel = gpu.transcoding;
              accelDecode = true;
            };
          };
        };
        users.users.${config.services.immich.user}.extraGroups =
          lib.optional srv.libraryAccess cfg.group
          ++ lib.optionals (lib.elem gpu.transcoding [ "vaapi" "qsv" ]) [
            "render"
            "video"
          ];
      })
    ]
  );
}
