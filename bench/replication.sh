#!/usr/bin/env bash
# Replication throughput: Trireme's controller copying a repository from one
# Garage S3 server to another (read, check the SHA-256 against the object's
# name, write with the S3 checksum, read the checksum back), next to rclone
# copying the same objects between the same servers.
#
#   bench/replication.sh [--size-mib N] [--work DIR]     (default 1024 MiB, bench/work)
#
# Steps: build release binaries; start two Garage servers; back up a
# generated data set with a controller and an agent to server 1 only; then
# start a controller with both servers as locations and time its first
# replication pass until server 2 holds every object (verified); run
# `trireme verify` to show a repeated replication copies zero bytes; then
# time `rclone copy --checksum` of the same objects between the servers.
# Prints a Markdown table for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
size_mib=1024
work=$root/bench/work
while [[ $# -gt 0 ]]; do
    case $1 in
        --size-mib) size_mib=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        *) echo "usage: bench/replication.sh [--size-mib N] [--work DIR]" >&2; exit 2 ;;
    esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
command -v rclone >/dev/null || { echo "== installing rclone"; apt-get install -y rclone >/dev/null; }
# rclone 1.60 cannot combine a custom CA bundle with its own HTTP transport;
# the servers here are plain http anyway.

echo "== building release binaries"
cargo build --release --quiet --locked -p trireme-controller -p trireme-agent -p trireme-cli
bin=$CARGO_TARGET_DIR/release
trireme=$bin/trireme

run=$work/replication
rm -rf "$run"; mkdir -p "$run"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    deploy/dev/garage.sh stop "$run/garage" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== two Garage servers"
deploy/dev/garage.sh start 2 "$run/garage" >/dev/null
# shellcheck disable=SC1091
source "$run/garage/env"
for i in 1 2; do
    key=GARAGE_${i}_ACCESS_KEY_ID; secret=GARAGE_${i}_SECRET_ACCESS_KEY
    printf 'access_key_id = %s\nsecret_access_key = %s\n' "${!key}" "${!secret}" > "$run/creds$i"
    chmod 600 "$run/creds$i"
done
url() { local e=GARAGE_${1}_ENDPOINT; echo "s3://trireme/repo?endpoint=${!e}&region=garage&allow_http=true&credentials_file=$run/creds$1"; }

echo "== data set: $size_mib MiB"
python3 bench/gen-data.py --out "$run/data" --seed 7 --size-mib "$size_mib" >/dev/null

"$trireme" cert init-ca --dir "$run/tls" >/dev/null
for spec in "controller localhost" "agent bench-agent" "operator bench-op"; do
    set -- $spec
    "$trireme" cert issue --dir "$run/tls" --role "$1" --name "$2" >/dev/null
done
"$bin/trireme-controller" keygen --key-file "$run/master.key" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export TRIREME_CONTROLLER=localhost:$port TRIREME_TLS_DIR=$run/tls TRIREME_CERT_NAME=bench-op

controller_config() { # locations...
    {
        printf 'listen = "127.0.0.1:%s"\ndata_dir = "%s/controller"\nkey_file = "%s/master.key"\n' "$port" "$run" "$run"
        printf '[tls]\ndir = "%s/tls"\nname = "localhost"\n[replication]\nevery = "1h"\n' "$run"
        local n=1
        for u in "$@"; do printf '[[location]]\nname = "loc%s"\nurl = "%s"\nagent_url = "%s"\n' "$n" "$u" "$u"; n=$((n + 1)); done
    } > "$run/controller.toml"
}
start_controller() {
    "$bin/trireme-controller" run --config "$run/controller.toml" >>"$run/controller.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do "$trireme" status >/dev/null 2>&1 && return; sleep 0.1; done
    echo "controller did not start; see $run/controller.log" >&2; exit 1
}

echo "== backup to server 1 only"
controller_config "$(url 1)"
start_controller
cat > "$run/agent.toml" <<TOML
controller = "localhost:$port"
state_dir = "$run/agent-state"
[tls]
dir = "$run/tls"
name = "bench-agent"
[[source]]
name = "data"
kind = "volume"
path = "$run/data"
TOML
"$bin/trireme-agent" run --config "$run/agent.toml" >>"$run/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do "$trireme" -o json agents ls 2>/dev/null | grep -q '"connected": *true' && break; sleep 0.1; done
"$trireme" backup run bench-agent/data --wait >/dev/null
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true

objects=$("$trireme" -o json locations ls 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["objects"])' 2>/dev/null || echo "?")

echo "== Trireme: replicate server 1 -> server 2"
controller_config "$(url 1)" "$(url 2)"
t0=$(date +%s.%N)
start_controller
while :; do
    state=$("$trireme" -o json locations ls)
    done_=$(python3 -c '
import json,sys
l=json.loads(sys.argv[1])
print(1 if len(l)==2 and l[1]["last_sync"] and l[1]["objects"]==l[0]["objects"] else 0)' "$state")
    [[ $done_ == 1 ]] && break
    sleep 0.1
done
t1=$(date +%s.%N)
read -r objects bytes < <(python3 -c 'import json,sys; l=json.loads(sys.argv[1])[1]; print(l["objects"], l["bytes"])' "$state")
trireme_secs=$(python3 -c "print(round($t1 - $t0, 2))")

echo "== Trireme: repeated replication (trireme verify)"
t0=$(date +%s.%N)
again=$("$trireme" -o json verify)
t1=$(date +%s.%N)
again_secs=$(python3 -c "print(round($t1 - $t0, 2))")
again_bytes=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bytes_copied"])' "$again")

echo "== rclone copy --checksum server 1 -> server 2 (another prefix)"
rc() { local e=GARAGE_${1}_ENDPOINT k=GARAGE_${1}_ACCESS_KEY_ID s=GARAGE_${1}_SECRET_ACCESS_KEY
    echo ":s3,provider=Other,endpoint='${!e}',access_key_id=${!k},secret_access_key=${!s},region=garage,force_path_style=true:"; }
t0=$(date +%s.%N)
env -u AWS_CA_BUNDLE rclone copy --checksum --transfers 8 --checkers 8 "$(rc 1)trireme/repo" "$(rc 2)trireme/rclone-copy" 2>"$run/rclone.log"
t1=$(date +%s.%N)
rclone_secs=$(python3 -c "print(round($t1 - $t0, 2))")
rclone_objects=$(env -u AWS_CA_BUNDLE rclone size --json "$(rc 2)trireme/rclone-copy" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')

mib=$(python3 -c "print(round($bytes / 1048576, 1))")
echo
echo "Replication between two Garage servers on this machine ($(nproc) cores, $(uname -r)), $(date -u +%Y-%m-%d),"
echo "\`bench/replication.sh --size-mib $size_mib\`: a repository of $objects objects, $mib MiB."
echo
echo "| copy | objects | seconds | MiB/s |"
echo "|---|---|---|---|"
echo "| Trireme controller, first pass (read, check SHA-256 vs name, PUT with checksum, read checksum back) | $objects | $trireme_secs | $(python3 -c "print(round($mib / $trireme_secs, 1))") |"
echo "| rclone $(rclone version | head -1 | awk '{print $2}') \`copy --checksum --transfers 8\` | $rclone_objects | $rclone_secs | $(python3 -c "print(round($mib / $rclone_secs, 1))") |"
echo "| Trireme repeated replication (\`trireme verify\`: HEAD every object at both, copy what is missing) | $again_bytes bytes copied | $again_secs | – |"
