#!/bin/sh
# Steps the product's install instructions do not (yet) take but the test needs; each one
# names the product bug it works around (see docs/vm-test.md). Empty when there is none.
set -eu

# B1 (docs/vm-test.md): docs/install.md configures [metrics] textfile_dir but never creates
# the folder; until a13bb64 the card unit then failed with 226/NAMESPACE, since then no
# textfile is written. The library user writes the textfiles.
install -d -o photo-ingest -g photo-ingest /var/lib/prometheus/node-exporter
