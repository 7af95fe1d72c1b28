# Shared by the VM tests with an Immich server: an admin and an API key made through Immich's
# API (as nixpkgs' own Immich test does), handed to the sync service as its credential file.
import json

KEY_FILE = "/var/lib/photo-ingest-secrets/immich-api-key"
IMMICH = "http://localhost:2283/api"


def immich_api_key(machine):
    machine.wait_for_unit("immich-server.service")
    machine.wait_for_open_port(2283, timeout=600)
    machine.wait_until_succeeds(f"curl -sf {IMMICH}/server/ping", timeout=300)
    admin = {"email": "admin@example.org", "name": "Admin", "password": "admin"}
    machine.succeed(f"curl -sf --json '{json.dumps(admin)}' {IMMICH}/auth/admin-sign-up")
    login = {"email": admin["email"], "password": admin["password"]}
    token = json.loads(machine.succeed(
        f"curl -sf --json '{json.dumps(login)}' {IMMICH}/auth/login"))["accessToken"]
    request = {"name": "photo-ingest", "permissions": ["all"]}
    key = json.loads(machine.succeed(
        f"curl -sf -H 'Cookie: immich_access_token={token}' "
        f"--json '{json.dumps(request)}' {IMMICH}/api-keys"))["secret"]
    machine.succeed(f"(umask 077; mkdir -p {KEY_FILE.rsplit('/', 1)[0]}; "
                    f"printf '%s\\n' '{key}' > {KEY_FILE})")
    # Without its credential file the service failed to start at boot, maybe past its
    # start limit: start it afresh now that the key exists.
    machine.succeed("systemctl reset-failed photo-ingest-immich-sync.service || true")
    machine.succeed("systemctl restart photo-ingest-immich-sync.service")
    machine.wait_for_unit("photo-ingest-immich-sync.service")
    return key


def immich_get(machine, key, path):
    return json.loads(machine.succeed(f"curl -sf -H 'x-api-key: {key}' {IMMICH}{path}"))
