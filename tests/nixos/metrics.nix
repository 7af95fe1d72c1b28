# NixOS VM test 3: Prometheus on the same host scrapes the sync service, the node exporter's
# textfile collector (the oneshots' metrics) and Immich's own metrics ports, loads the alert
# rules; Grafana has the dashboard provisioned.
{ photoIngest }:
{ ... }:
{
  name = "photo-ingest-metrics";

  nodes.machine = {
    imports = [ photoIngest.nixosModules.default ];
    services.photo-ingest = {
      enable = true;
      metrics.nodeExporter = true;
      immich = {
        enable = true;
        apiKeyFile = "/var/lib/photo-ingest-secrets/immich-api-key";
        server = {
          enable = true;
          machineLearning = false;
          telemetry.enable = true;
        };
      };
    };
    services.prometheus = {
      enable = true;
      globalConfig.scrape_interval = "2s";
    };
    services.grafana = {
      enable = true;
      settings.security.secret_key = "only-for-this-vm-test";
    };
    virtualisation = {
      cores = 2;
      memorySize = 4096;
      diskSize = 4096;
    };
  };

  testScript = ''
    import json
    ${builtins.readFile ./immich_setup.py}

    def prometheus(query):
        out = machine.succeed(f"curl -sf --get --data-urlencode 'query={query}' http://localhost:9090/api/v1/query")
        return json.loads(out)["data"]["result"]

    def scraped(query):
        def check(_):
            result = prometheus(query)
            return bool(result) and all(r["value"][1] == "1" for r in result)
        retry(check, timeout=120)

    machine.wait_for_unit("multi-user.target")
    immich_api_key(machine)
    machine.wait_for_unit("prometheus.service")
    machine.wait_for_open_port(9090)

    with subtest("Prometheus scrapes the sync service and Immich"):
        scraped('up{job="photo-ingest-sync"}')
        scraped("photo_ingest_immich_up")
        scraped('up{job="immich-api"}')
        scraped('up{job="immich-microservices"}')

    with subtest("the oneshots' textfiles reach Prometheus through the node exporter"):
        machine.succeed("systemctl start photo-ingest-metadata.service")
        scraped('up{job="photo-ingest-node"}')
        retry(lambda _: bool(prometheus("photo_ingest_metadata_backlog_assets")), timeout=60)

    with subtest("the alert rules are loaded"):
        rules = machine.succeed("curl -sf http://localhost:9090/api/v1/rules")
        assert "PhotoIngestImmichDown" in rules, rules

    with subtest("Grafana has the dashboard"):
        machine.wait_for_unit("grafana.service")
        machine.wait_for_open_port(3000)
        machine.wait_until_succeeds("curl -sf -u admin:admin http://localhost:3000/api/dashboards/uid/photo-ingest | grep -q photo-ingest")
  '';
}
