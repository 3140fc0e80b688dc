#!/usr/bin/env bash
# Trireme quick start on one machine, no setup. It builds the three
# binaries, creates a CA and certificates (controller, agent, operator), a
# master key, starts a controller with three file:// locations and one agent
# with a sample volume source, runs a backup through the `trireme` CLI,
# waits until the controller has copied it to all three locations and read
# the checksums back, shows the snapshot, restores it on the agent and
# compares it byte for byte.
#
#   deploy/dev/quickstart.sh [WORK_DIR]      (default: ./quickstart)
#
# Everything it creates stays in WORK_DIR (logs: controller.log, agent.log).
# The controller and agent are stopped at the end; set KEEP_RUNNING=1 to
# leave them up and try the CLI yourself (the script prints how).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$(realpath -m "${1:-$root/quickstart}")
port=${QUICKSTART_PORT:-17443}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

echo "== building trireme, trireme-controller and trireme-agent"
cargo build --quiet --locked -p trireme-controller -p trireme-agent -p trireme-cli
bin="$CARGO_TARGET_DIR/debug"
trireme="$bin/trireme"

rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
    if [ -z "${KEEP_RUNNING:-}" ]; then
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
    fi
}
trap cleanup EXIT

echo "== CA and certificates in $work/tls"
"$trireme" cert init-ca --dir "$work/tls" >/dev/null
"$trireme" cert issue --dir "$work/tls" --role controller --name localhost >/dev/null
"$trireme" cert issue --dir "$work/tls" --role agent --name demo-agent >/dev/null
"$trireme" cert issue --dir "$work/tls" --role operator --name admin >/dev/null
"$bin/trireme-controller" keygen --key-file "$work/master.key"

echo "== sample data in $work/data"
mkdir -p "$work/data/logs" "$work/data/media"
for i in $(seq 1 20); do
    seq -f "2026-11-25T10:%05g level=info user=$i msg=\"message delivered\"" 1 20000 > "$work/data/logs/chat-$i.log"
done
head -c 20000000 /dev/urandom > "$work/data/media/upload.bin"
ln -s logs/chat-1.log "$work/data/latest.log"

cat > "$work/controller.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "controller"
key_file = "master.key"
[tls]
dir = "tls"
name = "localhost"
[replication]
every = "10s"
[[location]]
name = "site-a"
url = "file://$work/locations/site-a"
[[location]]
name = "site-b"
url = "file://$work/locations/site-b"
[[location]]
name = "site-c"
url = "file://$work/locations/site-c"
TOML
cat > "$work/agent.toml" <<TOML
controller = "localhost:$port"
state_dir = "agent-state"
[tls]
dir = "tls"
name = "demo-agent"
[[source]]
name = "sample"
kind = "volume"
path = "$work/data"
TOML

echo "== starting trireme-controller and trireme-agent"
"$bin/trireme-controller" run --config "$work/controller.toml" >"$work/controller.log" 2>&1 &
pids+=($!)
"$bin/trireme-agent" run --config "$work/agent.toml" >"$work/agent.log" 2>&1 &
pids+=($!)

export TRIREME_CONTROLLER="localhost:$port" TRIREME_TLS_DIR="$work/tls" TRIREME_CERT_NAME=admin
for _ in $(seq 1 100); do
    if "$trireme" -o json agents ls 2>/dev/null | grep -q '"connected": *true'; then break; fi
    sleep 0.2
done
"$trireme" agents ls

echo "== backup (the agent streams encrypted chunks straight to the primary location)"
"$trireme" backup run demo-agent/sample --wait
"$trireme" snapshots ls
snap=$("$trireme" -o json snapshots ls | sed -n 's/.*"id": *"\([0-9a-f]\{64\}\)".*/\1/p' | head -1)

echo "== replication: the controller copies the snapshot to site-b and site-c and reads the checksums back"
for _ in $(seq 1 150); do
    n=$("$trireme" -o json snapshots show "$snap" | grep -c '"state": *"verified"' || true)
    if [ "$n" -ge 3 ]; then break; fi
    sleep 0.2
done
"$trireme" snapshots show "$snap"
if [ "$n" -lt 3 ]; then
    echo "error: the snapshot is verified at $n of 3 locations after 30 s (see $work/controller.log)" >&2
    exit 1
fi
"$trireme" locations ls

echo "== restore on the agent and compare"
"$trireme" restore "$snap" --to "demo-agent:$work/restored" --wait
diff -r "$work/data" "$work/restored" && echo "restored tree is identical to the source"

echo
echo "Done. Work directory: $work (controller.log, agent.log, locations/)."
if [ -n "${KEEP_RUNNING:-}" ]; then
    echo "Controller and agent still running (pids ${pids[*]}). Try:"
    echo "  export TRIREME_CONTROLLER=localhost:$port TRIREME_TLS_DIR=$work/tls TRIREME_CERT_NAME=admin"
    echo "  $trireme status; $trireme jobs ls"
fi
