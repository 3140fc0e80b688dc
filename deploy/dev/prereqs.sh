#!/usr/bin/env bash
# Install the datastores the test suite starts for real, when missing:
#   redis-server, redis-cli            (redis source tests)
#   PostgreSQL server and client tools (command source: pg_dump/pg_restore)
# Debian/Ubuntu packages through apt-get; run as root or with sudo available.
# Garage (the S3 server) is installed by deploy/dev/garage.sh install.
set -euo pipefail

have_pg() { ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v pg_dump >/dev/null; }

missing=()
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server redis-tools)
have_pg || missing+=(postgresql postgresql-client)

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "prerequisites present: $(redis-server --version | cut -d' ' -f3), PostgreSQL $(ls /usr/lib/postgresql | sort -n | tail -1)"
    exit 0
fi

echo "installing ${missing[*]} (apt-get)"
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
if ! command -v apt-get >/dev/null; then
    echo "apt-get not found: install ${missing[*]} with this system's package manager" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages may start system services; the tests start their own servers.
for svc in redis-server postgresql; do
    "${sudo[@]}" service "$svc" stop >/dev/null 2>&1 || true
done
command -v redis-server >/dev/null && have_pg || { echo "installing ${missing[*]} did not provide redis-server and PostgreSQL" >&2; exit 1; }
echo "installed ${missing[*]}"
