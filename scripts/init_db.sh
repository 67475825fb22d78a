#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers for the tests (no Docker engine on these
# machines: it starts the local Debian cluster if one is installed but stopped).
#
#   TEST_DATABASE_URL  where the tests connect (default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail

url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
host=127.0.0.1
port=5432

if pg_isready -h "$host" -p "$port" >/dev/null 2>&1; then
  echo "PostgreSQL is accepting connections on $host:$port"
  exit 0
fi

if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | head -n 1)
  echo "Starting PostgreSQL cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi

for _ in $(seq 1 30); do
  if pg_isready -h "$host" -p "$port" >/dev/null 2>&1; then
    echo "PostgreSQL is up"
    exit 0
  fi
  sleep 1
done

echo "PostgreSQL is not reachable at $host:$port (tests use $url)." >&2
echo "Install and start it (apt-get install postgresql), or set TEST_DATABASE_URL." >&2
exit 1
