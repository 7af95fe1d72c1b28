# Metrics: the oneshots' node-exporter textfiles, the sync service's /metrics, and the wiring
# into a Prometheus, node exporter and Grafana running on the same host.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.services.photo-ingest;
  m = cfg.metrics;
  srv = cfg.immich.server;
  bracket = host: if lib.hasInfix ":" host then "[${host}]" else host;
  # Prometheus on this host scrapes the loopback address when the service listens on all.
  scrapeHost =
    if lib.elem m.listenAddress [ "0.0.0.0" "::" ] then "localhost" else bracket m.listenAddress;
  job = name: target: {
    job_name = name;
    static_configs = [ { targets = [ target ]; } ];
  };
  share = "${cfg.package}/share/photo-ingest";
in
{
  options.services.photo-ingest.metrics = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = "Write node-exporter textfiles from the oneshots and serve /metrics from the sync service.";
    };
    textfileDir = mkOption {
      type = types.path;
      default = "${cfg.stateDir}/metrics";
      defaultText = lib.literalExpression ''"''${config.services.photo-ingest.stateDir}/metrics"'';
      description = "Folder of the textfiles (`metrics.textfile_dir`); created world-readable for the node exporter.";
    };
    listenAddress = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = "Address of the sync service's /metrics (`immich.metrics_listen`).";
    };
    port = mkOption {
      type = types.port;
      default = 9467;
      description = "Port of the sync service's /metrics.";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open {option}`port` for a Prometheus elsewhere.";
    };
    nodeExporter = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Enable services.prometheus.exporters.node with its textfile collector reading
        {option}`textfileDir` (and scrape it when services.prometheus runs here).
      '';
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        services.photo-ingest.settings =
          if m.enable then
            {
              metrics.textfile_dir = m.textfileDir;
              immich.metrics_listen = "${bracket m.listenAddress}:${toString m.port}";
            }
          else
            { immich.metrics_listen = ""; };
      }
      (lib.mkIf m.enable {
        systemd.tmpfiles.settings.photo-ingest.${m.textfileDir}.d = {
          inherit (cfg) user group;
          mode = "0755";
        };
        networking.firewall.allowedTCPPorts = lib.mkIf m.openFirewall [ m.port ];

        services.prometheus = lib.mkMerge [
          (lib.mkIf m.nodeExporter {
            exporters.node = {
              enable = true;
              enabledCollectors = [ "textfile" ];
              extraFlags = [ "--collector.textfile.directory=${m.textfileDir}" ];
            };
          })
          (lib.mkIf config.services.prometheus.enable {
            scrapeConfigs =
              lib.optional cfg.immich.enable (job "photo-ingest-sync" "${scrapeHost}:${toString m.port}")
              ++ lib.optional m.nodeExporter (
                job "photo-ingest-node" "localhost:${toString config.services.prometheus.exporters.node.port}"
              )
              ++ lib.optionals (srv.enable && srv.telemetry.enable) [
                (job "immich-api" "localhost:${toString srv.telemetry.apiPort}")
                (job "immich-microservices" "localhost:${toString srv.telemetry.microservicesPort}")
              ];
            ruleFiles = [ "${share}/prometheus/alerts.yml" ];
          })
        ];

        services.grafana.provision = lib.mkIf config.services.grafana.enable {
          enable = true;
          dashboards.settings.providers = [
            {
              name = "photo-ingest";
              options.path = "${share}/grafana";
            }
          ];
        };
      })
    ]
  );
}
