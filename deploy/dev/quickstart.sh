#!/usr/bin/env bash
# Trireme quick start on one machine, no setup: builds the agent, creates a
# master key and a file:// repository, backs up a sample data set, changes it,
# backs up again (incremental), restores, compares, and deep-checks.
#
#   deploy/dev/quickstart.sh [WORK_DIR]      (default: ./quickstart)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$(realpath -m "${1:-$root/quickstart}")
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

echo "== building trireme-agent"
cargo build --quiet -p trireme-agent
agent="$CARGO_TARGET_DIR/debug/trireme-agent"

rm -rf "$work"
mkdir -p "$work/data/logs" "$work/data/db"
export TRIREME_KEY_FILE="$work/master.key"
export TRIREME_LOCATION="file://$work/repo"

echo "== sample data in $work/data"
for i in $(seq 1 20); do
    seq -f "2026-11-25T10:%05g level=info user=$i msg=\"message delivered\"" 1 20000 > "$work/data/logs/chat-$i.log"
done
head -c 20000000 /dev/urandom > "$work/data/db/media.bin"
ln -s logs/chat-1.log "$work/data/latest.log"

echo "== master key and repository"
"$agent" keygen
"$agent" init

echo "== full backup"
"$agent" backup --source sample "$work/data"
echo "== incremental backup after a change"
echo 'one more line' >> "$work/data/logs/chat-7.log"
"$agent" backup --source sample "$work/data"
"$agent" snapshots

echo "== restore and compare"
"$agent" restore latest --target "$work/restored"
diff -r "$work/data" "$work/restored" && echo "restored tree is identical to the source"

echo "== deep check"
"$agent" check --deep
echo
echo "Done. Repository: $TRIREME_LOCATION  key: $TRIREME_KEY_FILE"
