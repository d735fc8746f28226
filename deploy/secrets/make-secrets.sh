#!/bin/sh
# Creates the secret files deploy/compose.yaml mounts (random values; existing files are kept).
# They are readable by the containers' non-root users; the folder keeps them from others.
set -eu
cd "$(dirname "$0")"
umask 022
chmod 700 .
for name in postgres_password grafana_admin_password; do
  [ -s "$name" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$name"
done
echo "secrets in $(pwd): postgres_password grafana_admin_password (Grafana user: admin)"
