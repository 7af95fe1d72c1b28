#!/bin/sh
# Steps the product's install instructions do not (yet) take but the test needs; each one
# names the product bug it works around (see docs/vm-test.md). Empty when there is none.
set -eu

# Bug: the card and metadata units' drop-ins list [metrics] textfile_dir in ReadWritePaths=
# (without "-"), but neither install-units nor docs/install.md creates the folder, so the
# card unit fails with 226/NAMESPACE before photo-ingest even starts.
install -d -o photo-ingest -g photo-ingest /var/lib/prometheus/node-exporter
