#!/usr/bin/env bash
# Drops the per-test PostgreSQL databases (latchkey_test_*) earlier test runs left behind.
# Safe only when no test run is in progress against the same server.
set -euo pipefail
url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
psql "$url" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'latchkey\_test\_%'" |
  while read -r name; do
    psql "$url" -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null
  done
echo "dropped leftover test databases"
