#!/usr/bin/env bash
# Installs the pgvector extension into the locally running Postgres when it is missing.
# Debian bookworm has no pgvector package; trixie's source package builds against bookworm's
# server headers in seconds (see DESIGN.md). Idempotent: exits at once when the extension exists.
set -euo pipefail

PSQL_URL="${PGVECTOR_CHECK_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"

if psql "$PSQL_URL" -Atc "select 1 from pg_available_extensions where name='vector'" 2>/dev/null | grep -q 1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "pgvector is missing and installing it needs root (apt-get, make install)." >&2
  exit 1
fi

echo "==> installing pgvector into the local Postgres (one time, about a minute)"
server_version=$(psql "$PSQL_URL" -Atc "show server_version_num")
major=$((server_version / 10000))
pg_config="/usr/lib/postgresql/${major}/bin/pg_config"

if ! grep -rqs "trixie" /etc/apt/sources.list.d/pgvector-src.sources; then
  cat > /etc/apt/sources.list.d/pgvector-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "postgresql-server-dev-${major}" make gcc dpkg-dev >/dev/null

build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT
( cd "$build_dir" && apt-get source --download-only -qq pgvector && dpkg-source -x --no-check pgvector_*.dsc src >/dev/null )
make -s -C "$build_dir/src" OPTFLAGS="" PG_CONFIG="$pg_config" >/dev/null
make -s -C "$build_dir/src" OPTFLAGS="" PG_CONFIG="$pg_config" install >/dev/null

# Installing the server dev package can upgrade the Postgres minor version underneath the
# running server; restarting makes the cluster run the binaries now on disk.
if command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$major" main restart || true
fi
for _ in $(seq 1 30); do
  psql "$PSQL_URL" -Atc "select 1" >/dev/null 2>&1 && break
  sleep 1
done
psql "$PSQL_URL" -Atc "select 1 from pg_available_extensions where name='vector'" | grep -q 1
echo "==> pgvector installed"
