#!/usr/bin/env bash
# Restore one large file out of a big snapshot, Trireme vs restic: time and
# bytes read (the process's rchar from /proc, which counts every byte read
# from the repository, index and keys included). Issue 15's bar: Trireme
# reads less than 2x the file's stored size.
#
#   bench/restore-one-file.sh [--size-mib N] [--work DIR] [--no-build]
#
# Uses the same data set as bench/run.sh (bench/gen-data.py, seed 1) and
# picks its largest media file (random bytes: stored size = its size).
# Writes bench/RESULTS-restore-one-file.md. TRIREME_BIN overrides the
# binary (default: a release build in CARGO_TARGET_DIR or target/).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZE=2048
WORK="$ROOT/bench/work"
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
    --size-mib) SIZE="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
command -v restic >/dev/null || apt-get install -y restic >/dev/null
if [[ -z ${TRIREME_BIN:-} ]]; then
    if ((BUILD)); then (cd "$ROOT" && cargo build --release -q -p trireme-agent); fi
    TRIREME_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/trireme-agent"
fi
[[ -x $TRIREME_BIN ]] || { echo "no trireme-agent at $TRIREME_BIN" >&2; exit 1; }

mkdir -p "$WORK"
DATA="$WORK/data"
python3 "$ROOT/bench/gen-data.py" --out "$DATA" --seed 1 --size-mib "$SIZE" >/dev/null
RUN="$WORK/one-file"
rm -rf "$RUN"
mkdir -p "$RUN"
BIG=$(cd "$DATA" && find media -type f -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2)
BIG_SIZE=$(stat -c %s "$DATA/$BIG")
WANT=$(sha256sum "$DATA/$BIG" | cut -d' ' -f1)

# `io CMD...`: run CMD, print "seconds rchar" (rchar sampled until it exits).
io() {
    python3 - "$@" <<'PY'
import subprocess, sys, time
t = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
rchar = 0
while p.poll() is None:
    try:
        for line in open(f"/proc/{p.pid}/io"):
            if line.startswith("rchar:"):
                rchar = int(line.split()[1])
    except OSError:
        pass
    time.sleep(0.005)
err = p.stderr.read().decode()
if p.returncode != 0:
    sys.exit(f"{sys.argv[1:]} failed: {err}")
print(f"{time.monotonic() - t:.2f} {rchar}")
PY
}
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

export TRIREME_KEY_FILE="$RUN/key" TRIREME_LOCATION="file://$RUN/trireme"
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$RUN/restic" RESTIC_CACHE_DIR="$RUN/restic-cache"
"$TRIREME_BIN" keygen >/dev/null
"$TRIREME_BIN" init >/dev/null
"$TRIREME_BIN" backup --source data "$DATA" >/dev/null
restic init -q
(cd "$WORK" && restic backup -q data)

drop
read -r T_TIME T_READ < <(io "$TRIREME_BIN" restore latest --target "$RUN/out-trireme" --path "$BIG")
drop
read -r R_TIME R_READ < <(io restic restore latest --target "$RUN/out-restic" --include "data/$BIG")
GOT_T=$(sha256sum "$RUN/out-trireme/$BIG" | cut -d' ' -f1)
GOT_R=$(find "$RUN/out-restic" -type f -name "$(basename "$BIG")" -exec sha256sum {} + | cut -d' ' -f1)
[[ $GOT_T == "$WANT" ]] || { echo "trireme restored a different file" >&2; exit 1; }
[[ $GOT_R == "$WANT" ]] || { echo "restic restored a different file" >&2; exit 1; }
DATA_BYTES=$(du -sb "$DATA" | cut -f1)
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

OUT="$ROOT/bench/RESULTS-restore-one-file.md"
{
    echo "# Restoring one file out of a big snapshot"
    echo
    echo "\`bench/restore-one-file.sh --size-mib $SIZE\` on $(date -u +%Y-%m-%d), $(nproc) cores, page cache dropped before each restore; $($TRIREME_BIN --version), $(restic version | cut -d' ' -f1-2)."
    echo "Data set: $((DATA_BYTES >> 20)) MiB (gen-data.py seed 1); the file: \`$BIG\`, $((BIG_SIZE >> 20)) MiB of random bytes (stored size about its size)."
    echo "Trireme binary: \`$TRIREME_BIN\` ($(case $TRIREME_BIN in */release/*) echo release build ;; */debug/*) echo "debug build: times are not representative, bytes read are" ;; *) echo as given ;; esac))."
    echo "Bytes read: the restoring process's rchar (/proc/PID/io), which counts repository, index and key reads."
    echo
    echo "| tool | command | time | bytes read | read / file size |"
    echo "|---|---|---|---|---|"
    echo "| Trireme | \`trireme-agent restore latest --path $BIG\` | ${T_TIME} s | $((T_READ >> 20)) MiB | $(ratio "$T_READ" "$BIG_SIZE") |"
    echo "| restic | \`restic restore latest --include data/$BIG\` | ${R_TIME} s | $((R_READ >> 20)) MiB | $(ratio "$R_READ" "$BIG_SIZE") |"
    echo
    echo "Both restored files match the original's SHA-256 (\`sha256sum\`)."
} >"$OUT"
cat "$OUT"
rm -rf "$RUN"
