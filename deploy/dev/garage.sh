#!/usr/bin/env bash
# Local Garage (S3-compatible object store) instances for development and tests.
#
#   deploy/dev/garage.sh start N DIR   start N independent single-node Garage
#                                      instances under DIR (configured on first
#                                      start, restarted if stopped), print their
#                                      settings and write them to DIR/env
#   deploy/dev/garage.sh stop DIR [I]  stop every instance under DIR (or only I)
#   deploy/dev/garage.sh status DIR    show which instances are running
#   deploy/dev/garage.sh install       install Garage (cargo install garage --locked)
#
# Each instance i (1..N) lives in DIR/i with its own config.toml, meta/ and
# data/ directories, rpc_secret and admin token, replication factor 1, listens
# on 127.0.0.1 only, and has a bucket `trireme` plus an access key with
# read/write/owner rights on it. Printed (and written to DIR/env), per instance:
#
#   GARAGE_i_ENDPOINT=http://127.0.0.1:PORT   GARAGE_i_REGION=garage
#   GARAGE_i_BUCKET=trireme                   GARAGE_i_ACCESS_KEY_ID=GK…
#   GARAGE_i_SECRET_ACCESS_KEY=…              GARAGE_i_DATA_DIR=DIR/i/data
#   GARAGE_i_META_DIR=DIR/i/meta              GARAGE_i_CONFIG=DIR/i/config.toml
#   GARAGE_i_ADMIN_ENDPOINT=http://127.0.0.1:PORT  GARAGE_i_ADMIN_TOKEN=…
#   GARAGE_i_LOG=DIR/i/garage.log             GARAGE_i_PID=…
#
# Environment:
#   GARAGE_BIN           the garage binary (default: `garage` on PATH, then ~/.cargo/bin/garage)
#   GARAGE_OWNER_PID     if set, each started instance is stopped when that process exits
#   GARAGE_START_TIMEOUT seconds to wait for an instance to answer (default 60)
#   GARAGE_INSTALL_WAIT  seconds to wait for a concurrent `cargo install garage` (default 3600)
#   GARAGE_STOP_GRACE    seconds between SIGTERM and SIGKILL on stop (default 15; Garage
#                        itself waits up to 10 s for open client connections)
#
# Requires bash, coreutils (od, head), and Garage v1 or v2 (the CLI differs; both handled).

set -euo pipefail

BUCKET=trireme
REGION=garage
KEY_NAME=trireme
START_TIMEOUT=${GARAGE_START_TIMEOUT:-60}
INSTALL_WAIT=${GARAGE_INSTALL_WAIT:-3600}
STOP_GRACE=${GARAGE_STOP_GRACE:-15}
[[ "$STOP_GRACE" =~ ^[1-9][0-9]*$ ]] || { echo "garage.sh: error: GARAGE_STOP_GRACE must be a whole number of seconds >= 1" >&2; exit 1; }

die() {
    echo "garage.sh: error: $*" >&2
    exit 1
}
log() { echo "garage.sh: $*" >&2; }

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

hex() { # hex N: N random bytes as hex
    od -An -vtx1 -N"$1" /dev/urandom | tr -d ' \n'
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---------------------------------------------------------------- install --

find_garage() {
    if [[ -n "${GARAGE_BIN:-}" ]]; then
        [[ -x "$GARAGE_BIN" ]] || die "GARAGE_BIN=$GARAGE_BIN is not an executable"
        echo "$GARAGE_BIN"
        return 0
    fi
    if command -v garage >/dev/null 2>&1; then
        command -v garage
        return 0
    fi
    if [[ -x "$HOME/.cargo/bin/garage" ]]; then
        echo "$HOME/.cargo/bin/garage"
        return 0
    fi
    return 1
}

# A `cargo install garage` already running (started by someone else)?
install_running() {
    local pid args
    for pid in $(pgrep -x cargo 2>/dev/null || true); do
        args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
        if [[ "$args" == *" install "*garage* ]]; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

ensure_garage() {
    local bin pid waited=0
    if bin=$(find_garage); then
        echo "$bin"
        return 0
    fi
    if pid=$(install_running); then
        log "waiting for the running 'cargo install garage' (pid $pid; see /tmp/garage-install.log) ..."
        while kill -0 "$pid" 2>/dev/null; do
            sleep 10
            waited=$((waited + 10))
            ((waited < INSTALL_WAIT)) || die "cargo install garage (pid $pid) still running after ${INSTALL_WAIT}s"
        done
        bin=$(find_garage) || die "the concurrent 'cargo install garage' ended without installing garage: see /tmp/garage-install.log"
        echo "$bin"
        return 0
    fi
    command -v cargo >/dev/null 2>&1 || die "garage is not installed and cargo is not available to build it"
    log "installing garage with 'cargo install garage --locked' (takes a while; log: /tmp/garage-install.log) ..."
    if ! cargo install garage --locked >/tmp/garage-install.log 2>&1; then
        tail -n 30 /tmp/garage-install.log >&2
        die "cargo install garage failed (full log: /tmp/garage-install.log)"
    fi
    find_garage || die "cargo install garage succeeded but no garage binary was found"
}

# ------------------------------------------------------------- instances --

# garage CLI on instance directory $1
g() {
    local dir=$1
    shift
    "$GARAGE" -c "$dir/config.toml" "$@"
}

garage_major() {
    local v
    v=$("$GARAGE" --version 2>/dev/null | grep -oE 'v?[0-9]+\.[0-9]+' | head -n1 | tr -d v)
    echo "${v%%.*}"
}

write_config() { # dir s3_port rpc_port admin_port
    local dir=$1 s3=$2 rpc=$3 admin=$4
    mkdir -p "$dir/meta" "$dir/data"
    chmod 700 "$dir"
    umask 077
    cat >"$dir/config.toml" <<EOF
# Garage dev instance written by deploy/dev/garage.sh
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(hex 32)"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$(hex 32)"
metrics_token = "$(hex 32)"
EOF
    chmod 600 "$dir/config.toml"
    echo "$s3 $rpc $admin" >"$dir/ports"
}

config_value() { # dir key -> value of `key = "value"` in the config
    sed -n "s/^$2 = \"\\(.*\\)\"\$/\\1/p" "$1/config.toml" | head -n1
}

ephemeral_low() { # first port of the kernel's range for outgoing connections
    local low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
    [[ "$low" =~ ^[0-9]+$ ]] || low=32768
    echo "$low"
}

pick_ports() { # prints three free ports
    # Below the ephemeral range: a stopped instance is restarted on the same
    # ports, and a port in that range can meanwhile become the source port of
    # some outgoing connection, which makes the restart fail to bind.
    local tries=0 base low span
    low=$(ephemeral_low)
    span=$((low - 3 - 15000))
    ((span > 1000)) || span=40000 # an unusual range: fall back to anywhere
    while ((tries < 50)); do
        tries=$((tries + 1))
        base=$((15000 + (RANDOM * 32768 + RANDOM) % span))
        if ! port_in_use "$base" && ! port_in_use $((base + 1)) && ! port_in_use $((base + 2)); then
            echo "$base $((base + 1)) $((base + 2))"
            return 0
        fi
    done
    die "could not find three free ports on 127.0.0.1"
}

instance_pid() { # dir -> pid if running
    local pid
    [[ -f "$1/pid" ]] || return 1
    pid=$(cat "$1/pid")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # Make sure the pid is still a garage server for this config.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1/config.toml" || return 1
    echo "$pid"
}

launch() { # dir: start the server process, record its pid
    local dir=$1 pid
    : >>"$dir/garage.log"
    echo "---- $(date -u +%FT%TZ) start" >>"$dir/garage.log"
    RUST_LOG=${GARAGE_RUST_LOG:-garage=info,netapp=warn} \
        setsid "$GARAGE" -c "$dir/config.toml" server >>"$dir/garage.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/pid"
    if [[ -n "${GARAGE_OWNER_PID:-}" ]]; then
        # Stop the instance when its owner (e.g. a test process) goes away.
        (
            trap '' HUP
            while kill -0 "$GARAGE_OWNER_PID" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
                sleep 1
            done
            kill "$pid" 2>/dev/null || true
        ) >/dev/null 2>&1 </dev/null &
        disown $! 2>/dev/null || true
    fi
    disown "$pid" 2>/dev/null || true
}

wait_answering() { # dir: wait until the server answers RPC and S3
    local dir=$1 s3 rpc admin waited=0 pid
    read -r s3 rpc admin <"$dir/ports"
    pid=$(cat "$dir/pid")
    while true; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "---- last lines of $dir/garage.log:" >&2
            tail -n 60 "$dir/garage.log" >&2
            die "garage instance in $dir exited during startup (log above)"
        fi
        if port_in_use "$s3" && g "$dir" status >/dev/null 2>&1; then
            return 0
        fi
        if ((waited >= START_TIMEOUT * 2)); then
            echo "---- last lines of $dir/garage.log:" >&2
            tail -n 60 "$dir/garage.log" >&2
            die "garage instance in $dir did not answer within ${START_TIMEOUT}s (log above)"
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}

configure() { # dir: layout, bucket, key; writes dir/key
    local dir=$1 node out key_id secret major
    major=$(garage_major)
    node=$(g "$dir" node id -q 2>/dev/null | head -n1)
    node=${node%%@*}
    [[ -n "$node" ]] || die "could not read the node id of $dir"
    g "$dir" layout assign -z dc1 -c 1G "${node:0:16}" >/dev/null ||
        die "garage layout assign failed for $dir"
    g "$dir" layout apply --version 1 >/dev/null ||
        die "garage layout apply failed for $dir"

    # The bucket and key need the layout to be live: retry for a little while.
    local tries=0
    until g "$dir" bucket info "$BUCKET" >/dev/null 2>&1 || g "$dir" bucket create "$BUCKET" >/dev/null 2>&1; do
        tries=$((tries + 1))
        ((tries < 40)) || die "could not create bucket $BUCKET on $dir: $(g "$dir" bucket create "$BUCKET" 2>&1 | tail -n 3)"
        sleep 0.5
    done

    if [[ "$major" -ge 2 ]]; then
        out=$(g "$dir" key create "$KEY_NAME") || die "garage key create failed for $dir"
    else
        out=$(g "$dir" key new --name "$KEY_NAME") || die "garage key new failed for $dir"
    fi
    key_id=$(printf '%s\n' "$out" | sed -n 's/^Key ID:[[:space:]]*\([^[:space:]]*\).*/\1/p' | head -n1)
    secret=$(printf '%s\n' "$out" | sed -n 's/^Secret key:[[:space:]]*\([^[:space:]]*\).*/\1/p' | head -n1)
    [[ -n "$key_id" && -n "$secret" ]] || die "could not read the new key from 'garage key create' output on $dir"
    g "$dir" bucket allow --read --write --owner "$BUCKET" --key "$key_id" >/dev/null ||
        die "garage bucket allow failed for $dir"
    umask 077
    printf '%s\n%s\n' "$key_id" "$secret" >"$dir/key"
    touch "$dir/configured"
}

instance_env() { # i dir
    local i=$1 dir=$2 s3 rpc admin key_id secret pid
    read -r s3 rpc admin <"$dir/ports"
    { read -r key_id; read -r secret; } <"$dir/key"
    pid=$(instance_pid "$dir" || echo "")
    cat <<EOF
GARAGE_${i}_ENDPOINT=http://127.0.0.1:$s3
GARAGE_${i}_REGION=$REGION
GARAGE_${i}_BUCKET=$BUCKET
GARAGE_${i}_ACCESS_KEY_ID=$key_id
GARAGE_${i}_SECRET_ACCESS_KEY=$secret
GARAGE_${i}_DATA_DIR=$dir/data
GARAGE_${i}_META_DIR=$dir/meta
GARAGE_${i}_CONFIG=$dir/config.toml
GARAGE_${i}_ADMIN_ENDPOINT=http://127.0.0.1:$admin
GARAGE_${i}_ADMIN_TOKEN=$(config_value "$dir" admin_token)
GARAGE_${i}_RPC_PORT=$rpc
GARAGE_${i}_LOG=$dir/garage.log
GARAGE_${i}_PID=$pid
EOF
}

start_one() { # i dir
    local i=$1 dir=$2 attempt s3 rpc admin
    mkdir -p "$dir"
    if [[ -f "$dir/configured" ]]; then
        if instance_pid "$dir" >/dev/null; then
            log "instance $i already running (pid $(cat "$dir/pid"))"
        else
            log "restarting instance $i"
            # Its ports are fixed by now (clients know them): when one is
            # briefly taken, wait for it rather than fail.
            local before
            for attempt in 1 2 3 4 5 6; do
                before=$(wc -l <"$dir/garage.log" 2>/dev/null || echo 0)
                launch "$dir"
                if (wait_answering "$dir") 2>/dev/null; then
                    return 0
                fi
                tail -n +"$((before + 1))" "$dir/garage.log" | grep -q -i "address already in use" || break
                ((attempt < 6)) || break
                log "instance $i: a port is taken; retrying in 5s"
                sleep 5
            done
        fi
        wait_answering "$dir"
        return 0
    fi
    # First start, or a setup that was interrupted: start from scratch.
    stop_one "$dir"
    rm -rf "$dir/meta" "$dir/data" "$dir/ports" "$dir/config.toml" "$dir/key"
    # A port may be taken between picking and binding: retry with others.
    for attempt in 1 2 3; do
        read -r s3 rpc admin < <(pick_ports)
        [[ -n "$admin" ]] || die "could not pick ports for instance $i"
        write_config "$dir" "$s3" "$rpc" "$admin"
        launch "$dir"
        if (wait_answering "$dir") 2>/dev/null; then
            break
        fi
        stop_one "$dir"
        if grep -q -i "address already in use" "$dir/garage.log" && ((attempt < 3)); then
            log "instance $i: port taken, retrying with other ports"
            rm -rf "$dir/meta" "$dir/data"
            continue
        fi
        echo "---- last lines of $dir/garage.log:" >&2
        tail -n 60 "$dir/garage.log" >&2
        die "garage instance $i in $dir did not start within ${START_TIMEOUT}s (log above)"
    done
    configure "$dir"
}

stop_one() { # dir
    local dir=$1 pid waited=0
    if pid=$(instance_pid "$dir"); then
        kill "$pid" 2>/dev/null || true
        # Garage waits up to 10 s for open client connections to close.
        while kill -0 "$pid" 2>/dev/null; do
            sleep 0.2
            waited=$((waited + 1))
            if ((waited == STOP_GRACE * 5)); then
                log "instance in $dir still running ${STOP_GRACE}s after SIGTERM, killing it"
                kill -9 "$pid" 2>/dev/null || true
            fi
        done
    fi
    rm -f "$dir/pid"
}

cmd_start() {
    local n=${1:-} dir=${2:-} i out
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || usage
    [[ -n "$dir" ]] || usage
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    GARAGE=$(ensure_garage)
    export GARAGE
    out=""
    for ((i = 1; i <= n; i++)); do
        start_one "$i" "$dir/$i"
        out+=$(instance_env "$i" "$dir/$i")$'\n'
    done
    out+="GARAGE_COUNT=$n"$'\n'
    out+="GARAGE_DIR=$dir"$'\n'
    (umask 077 && printf '%s' "$out" >"$dir/env.tmp" && mv "$dir/env.tmp" "$dir/env")
    printf '%s' "$out"
}

cmd_stop() {
    local dir=${1:-} only=${2:-} d
    [[ -n "$dir" ]] || usage
    [[ -d "$dir" ]] || return 0
    if [[ -n "$only" ]]; then
        [[ -d "$dir/$only" ]] || die "no instance $only under $dir"
        stop_one "$dir/$only"
        return 0
    fi
    for d in "$dir"/*/; do
        [[ -f "$d/config.toml" ]] && stop_one "${d%/}"
    done
    return 0
}

cmd_status() {
    local dir=${1:-} d pid
    [[ -n "$dir" ]] || usage
    for d in "$dir"/*/; do
        d=${d%/}
        [[ -f "$d/config.toml" ]] || continue
        if pid=$(instance_pid "$d"); then
            echo "instance $(basename "$d"): running (pid $pid)"
        else
            echo "instance $(basename "$d"): stopped"
        fi
    done
}

case "${1:-}" in
start) shift && cmd_start "$@" ;;
stop) shift && cmd_stop "$@" ;;
status) shift && cmd_status "$@" ;;
install) ensure_garage ;;
*) usage ;;
esac
