#!/usr/bin/env bash
# Makes sure the local services the platform needs are up: Postgres (with pgvector), Redis and
# RabbitMQ. On this kind of machine they run already; this starts any that stopped, installs
# pgvector once, and creates the database named by DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
export PGOPTIONS="-c client_min_messages=warning"

DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/chatplatform}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
admin_url="${DATABASE_URL%/*}/postgres"

wait_for() {  # wait_for NAME COMMAND...
  local name=$1; shift
  for _ in $(seq 1 30); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "$name did not come up" >&2; return 1
}

if ! psql "$admin_url" -Atc "select 1" >/dev/null 2>&1; then
  if command -v pg_ctlcluster >/dev/null; then
    echo "==> starting Postgres"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  fi
  wait_for Postgres psql "$admin_url" -Atc "select 1"
fi

if ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    echo "==> starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  wait_for Redis redis-cli -u "$REDIS_URL" ping
fi

if [ "${NEED_RABBITMQ:-1}" = 1 ] && command -v rabbitmq-server >/dev/null; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    echo "==> starting RabbitMQ"
    rabbitmq-server -detached || true
    wait_for RabbitMQ bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672'
  fi
fi

PGVECTOR_CHECK_URL="$admin_url" bash scripts/install_pgvector.sh

# The test suite runs several live servers next to itself; Debian's default of 100 connections
# is tight for that on a shared development database. Raised once, when we own the server.
if [ "$(psql "$admin_url" -Atc "show max_connections")" -lt 300 ] && [ "$(id -u)" = 0 ] \
   && command -v pg_ctlcluster >/dev/null; then
  echo "==> raising Postgres max_connections to 300 (restarts the local cluster once)"
  psql "$admin_url" -qc "alter system set max_connections = 300"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main restart
  wait_for Postgres psql "$admin_url" -Atc "select 1"
fi

dbname="${DATABASE_URL##*/}"; dbname="${dbname%%\?*}"
if ! psql "$admin_url" -Atc "select 1 from pg_database where datname='$dbname'" | grep -q 1; then
  echo "==> creating database $dbname"
  psql "$admin_url" -qc "create database \"$dbname\""
fi
psql "$DATABASE_URL" -qc "create extension if not exists vector" >/dev/null
