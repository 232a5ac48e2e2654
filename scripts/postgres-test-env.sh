#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the tests that run berth on Postgres: initdb into
# a fresh directory, listening on loopback only, trust authentication (no password
# exists to leak; nothing off this machine can reach it). Idempotent: a cluster that
# already answers is kept. Prints the URL tests read from BERTH_TEST_POSTGRES_URL.
set -euo pipefail

dir="${BERTH_TEST_PG_DIR:-/tmp/berth-test-pg}"
port="${BERTH_TEST_PG_PORT:-55432}"
bin=""
for v in 17 16 15; do
  if [ -x "/usr/lib/postgresql/$v/bin/initdb" ]; then bin="/usr/lib/postgresql/$v/bin"; break; fi
done
if [ -z "$bin" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql-15 >/dev/null
  bin=/usr/lib/postgresql/15/bin
fi
# Tests read and dump a server's database with the client tools.
if ! command -v psql >/dev/null || ! command -v pg_dump >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql-client >/dev/null
fi
# Postgres refuses to run as root: the cluster belongs to the postgres user (created by
# the package; made here when only the binaries are present).
id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if as_pg "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
  echo "postgres://postgres@127.0.0.1:$port/postgres"
  exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
# Many tests each make a database; fsync off because the cluster is thrown away.
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-c listen_addresses=127.0.0.1 -p $port -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -k $dir" start >/dev/null
echo "postgres://postgres@127.0.0.1:$port/postgres"
