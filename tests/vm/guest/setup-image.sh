#!/bin/sh
# Run inside a copy of the base tree (chroot): install photo-ingest as docs/install.md tells a
# Debian user, from the wheels built on the host (in /tmp/wheels; the guest has no network).
set -eu

python3 -m venv /opt/photo-ingest
/opt/photo-ingest/bin/pip install --quiet --no-index --find-links /tmp/wheels \
  'photo-ingest[binary]'

# The library's owner, the catalog (peer authentication over the Unix socket, Debian's
# default pg_hba.conf), the config.
useradd --system --home /var/lib/photo-ingest --create-home photo-ingest
# = `sudo -u postgres createuser photo-ingest && sudo -u postgres createdb -O photo-ingest
# photo_ingest`, without a running server: PostgreSQL's single-user mode.
runuser -u postgres -- /usr/lib/postgresql/15/bin/postgres --single \
  -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf \
  postgres >/dev/null <<'SQL'
CREATE ROLE "photo-ingest" LOGIN;
CREATE DATABASE photo_ingest OWNER "photo-ingest";
SQL
install -d -o photo-ingest /var/lib/photo-ingest/library
install -D -m 0644 /tmp/config.toml /etc/photo-ingest/config.toml
sh /tmp/workarounds.sh

# The units and the udev rule, with this installation's paths.
/opt/photo-ingest/bin/photo-ingest install-units >/dev/null

# The test's agent on ttyS1.
install -D -m 0644 -t /usr/local/lib/vm-test /tmp/agent.py /tmp/watch.py
install -m 0644 /tmp/vm-agent.service /etc/systemd/system/vm-agent.service
systemctl enable vm-agent.service >/dev/null 2>&1
