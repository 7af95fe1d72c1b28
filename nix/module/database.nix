# The catalog: a local PostgreSQL (peer authentication over the Unix socket) or a remote one.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.services.photo-ingest;
  db = cfg.database;
  secretPath = import ./secret-path.nix lib;
  immichDb = config.services.immich.database;
  immichHere = cfg.immich.server.enable && immichDb.enable;
in
{
  options.services.photo-ingest.database = {
    createLocally = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run the catalog on this host: services.postgresql with the database and its owner role
        (ensureDatabases / ensureUsers), reached over the Unix socket with peer authentication,
        so no password exists at all.
      '';
    };
    host = mkOption {
      type = types.str;
      default = "/run/postgresql";
      example = "db.example.org";
      description = "Server host name, or the folder of its Unix socket (an absolute path).";
    };
    port = mkOption {
      type = types.port;
      default = 5432;
      description = "Server port (also names the Unix socket).";
    };
    name = mkOption {
      type = types.str;
      default = db.user;
      defaultText = lib.literalExpression "config.services.photo-ingest.database.user";
      description = "Database name. A local database is named like its owner (ensureDBOwnership).";
    };
    user = mkOption {
      type = types.str;
      default = cfg.user;
      defaultText = lib.literalExpression "config.services.photo-ingest.user";
      description = "Database role. Locally it must be the service user (peer authentication).";
    };
    passwordFile = mkOption {
      type = secretPath;
      default = null;
      example = "/run/secrets/photo-ingest-db";
      description = ''
        File holding the role's password, for a remote server. Passed to the units with
        `LoadCredential=` (never copied to the store); the config names it as
        `$CREDENTIALS_DIRECTORY/db-password`.
      '';
    };
    backup = {
      enable = lib.mkEnableOption ''
        nightly dumps of the catalog with services.postgresqlBackup (and of Immich's database
        when {option}`services.photo-ingest.immich.server.enable` runs it here). Location and
        schedule are services.postgresqlBackup's own options
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    services.photo-ingest.settings.database = {
      url = "host=${db.host} port=${toString db.port} dbname=${db.name} user=${db.user}";
    }
    // lib.optionalAttrs (db.passwordFile != null) {
      password_file = "$CREDENTIALS_DIRECTORY/db-password";
    };

    services.postgresql = lib.mkIf db.createLocally {
      enable = true;
      ensureDatabases = [ db.name ];
      ensureUsers = [
        {
          name = db.user;
          ensureDBOwnership = true;
        }
      ];
    };

    services.postgresqlBackup = lib.mkIf db.backup.enable {
      enable = true;
      databases = [ db.name ] ++ lib.optional immichHere immichDb.name;
    };

    assertions = [
      {
        assertion = db.createLocally -> lib.hasPrefix "/" db.host;
        message = "services.photo-ingest.database.createLocally uses the local Unix socket: leave database.host at /run/postgresql, or set createLocally = false for a remote server.";
      }
      {
        assertion = db.createLocally -> db.user == cfg.user;
        message = "services.photo-ingest.database.user must equal services.photo-ingest.user (${cfg.user}) with a local database: peer authentication maps the service user to the role of the same name.";
      }
      {
        assertion = db.createLocally -> db.name == db.user;
        message = "services.photo-ingest.database.name must equal database.user with a local database (ensureDBOwnership gives the role the database of its own name).";
      }
      {
        assertion = !db.createLocally && !lib.hasPrefix "/" db.host -> db.passwordFile != null;
        message = "services.photo-ingest.database: a remote server (host ${db.host}) needs database.passwordFile.";
      }
      {
        assertion = db.backup.enable -> db.createLocally;
        message = "services.photo-ingest.database.backup dumps the local server: back up a remote catalog where it runs.";
      }
    ];
  };
}
