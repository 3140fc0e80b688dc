#!/usr/bin/env bash
# Find and get back one file (issue 15, "Measured, in bench/"): Trireme's
# agent local mode next to restic on file:// repositories.
#
#   bench/browse.sh [--size-mib N] [--files N] [--snapshots N] [--seed N]
#                   [--work DIR] [--append FILE] [--no-build] [--keep] [--warm]
#
# Two repositories per tool:
#   tree: a generated tree of --files small files (default 100,000), backed
#         up --snapshots times (default 30) with a small change between
#         backups. Measured: `ls` of the newest snapshot (recursive, long),
#         `find` of a name glob across every snapshot, `diff` of the first
#         and the last snapshot.
#   big:  the bench/gen-data.py data set (--size-mib, default 2048), one
#         backup. Measured: restoring its largest media file (random bytes,
#         up to 50 MiB) by path, by glob and with `dump`, and `stats`.
# Every measured command runs once with the page cache dropped before it
# (when permitted; not with --warm, for smoke runs on a busy machine), under /usr/bin/time -v (wall time, peak RSS); bytes read
# are the process's rchar and read_bytes from /proc/<pid>/io (taken exactly:
# the measuring process reads its own /proc/self/io before and after, and a
# reaped child's counters are added to its parent's).
#
# The report (Markdown) goes to stdout and WORK/browse/report.md, and is
# appended to FILE with --append (e.g. --append bench/RESULTS.md). Exits 1 if
# a step failed, a restored file differs, or the single-file restore read 2x
# the file's size or more.
# Environment: TRIREME_BIN (use this trireme-agent), CARGO_TARGET_DIR.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
INVOKED_FROM=$PWD
ORIG_CMD="$0 $*"

SIZE_MIB=2048
NFILES=100000
NSNAP=30
SEED=1
WORK="$BENCH_DIR/work"
APPEND=""
BUILD=1
KEEP=0
WARM=0
PASSWORD="trireme-bench-password"   # restic repository password (benchmark only)

usage() {
  sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}
abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$INVOKED_FROM" "$1" ;; esac; }

while (($#)); do
  case $1 in
    --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
    --files) NFILES=${2:?}; shift 2 ;;
    --snapshots) NSNAP=${2:?}; shift 2 ;;
    --seed) SEED=${2:?}; shift 2 ;;
    --work) WORK=$(abspath "${2:?}"); shift 2 ;;
    --append) APPEND=$(abspath "${2:?}"); shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    --warm) WARM=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $NFILES =~ ^[0-9]+$ ]] && ((NFILES >= 100)) || { echo "--files must be a number >= 100" >&2; exit 2; }
[[ $NSNAP =~ ^[0-9]+$ ]] && ((NSNAP >= 2)) || { echo "--snapshots must be a number >= 2" >&2; exit 2; }
[[ $SIZE_MIB =~ ^[0-9]+$ ]] && ((SIZE_MIB >= 16)) || { echo "--size-mib must be a number >= 16" >&2; exit 2; }

log() { printf '[browse %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# CI machines start clean: install what is missing with apt-get (as bench/run.sh does).
PKGS=()
[[ -x /usr/bin/time ]] || PKGS+=(time)
command -v python3 >/dev/null || PKGS+=(python3)
command -v restic >/dev/null || PKGS+=(restic)
if ((${#PKGS[@]})); then
  sudo=(); ((EUID == 0)) || sudo=(sudo)
  log "apt-get install -y ${PKGS[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${PKGS[@]}" >/dev/null
fi

if [[ -z ${TRIREME_BIN:-} ]]; then
  if ((BUILD)); then
    log "cargo build --release -p trireme-agent"
    (cd "$ROOT" && cargo build --release -q -p trireme-agent) || die "cargo build failed"
  fi
  TRIREME_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/trireme-agent"
fi
[[ -x $TRIREME_BIN ]] || die "no trireme-agent at $TRIREME_BIN (build it, or set TRIREME_BIN)"
for c in ls find diff stats dump restore; do
  "$TRIREME_BIN" "$c" --help >/dev/null 2>&1 || die "$TRIREME_BIN has no '$c' command"
done

B="$WORK/browse"
LOGDIR="$B/logs"
rm -rf "$B"
mkdir -p "$LOGDIR"
DATA="$WORK/data"
# Disk: the data set (unless already there) plus one repository (~0.6x) and a margin
# (the tree phase needs less and is deleted first).
have_kib=$(df -Pk "$WORK" | awk 'NR==2 { print $4 }')
data_kib=$(du -sk "$DATA" 2>/dev/null | cut -f1 || echo 0)
need_kib=$(( SIZE_MIB * 1024 * 17 / 10 - ${data_kib:-0} + 512 * 1024 ))
((have_kib >= need_kib)) || die "not enough disk in $WORK: $((have_kib / 1024)) MiB free, about $((need_kib / 1024)) MiB needed for --size-mib $SIZE_MIB (data set + one repository + 512 MiB); free some space or use a smaller --size-mib"
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
START_EPOCH=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
FAILURES=()

CACHE_NOTE="dropped before every measured command (\`echo 3 > /proc/sys/vm/drop_caches\`)"
CACHE_DROPPED=1
if ((WARM)); then CACHE_DROPPED=0; CACHE_NOTE="NOT dropped (--warm): warm page cache, read_bytes is not meaningful"; fi
drop_caches() {
  sync
  if ((CACHE_DROPPED)) && ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    CACHE_DROPPED=0
    CACHE_NOTE="NOT dropped (no permission to write /proc/sys/vm/drop_caches): warm page cache, read_bytes is not meaningful"
    log "WARNING: cannot drop the page cache"
  fi
}

# measure KEY OUTFILE CMD...: run CMD (stdout to OUTFILE, stderr to the log)
# under /usr/bin/time -v; write "wall_s max_rss_kib rchar read_bytes wchar rc"
# to $LOGDIR/KEY.m. The I/O counters are the delta of this helper's own
# /proc/self/io, which after the wait includes the reaped child's.
measure() {
  local key=$1 out=$2; shift 2
  { printf '+'; printf ' %q' "$@"; printf ' > %s\n' "$out"; } >"$LOGDIR/$key.log"
  drop_caches
  python3 - "$LOGDIR/$key" "$out" "$@" <<'PY'
import subprocess, sys, time
base, out, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
def io():
    d = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            d[k] = int(v)
    return d
tf = base + ".time"
with open(out, "wb") as o, open(base + ".log", "ab") as e:
    a = io()
    t = time.monotonic()
    rc = subprocess.call(["/usr/bin/time", "-v", "-o", tf] + cmd, stdout=o, stderr=e)
    wall = time.monotonic() - t
    b = io()
rss = 0
for line in open(tf):
    if "Maximum resident set size" in line:
        rss = int(line.rsplit(":", 1)[1])
with open(base + ".m", "w") as m:
    m.write("%.2f %d %d %d %d %d\n" % (wall, rss, b["rchar"] - a["rchar"],
            b["read_bytes"] - a["read_bytes"], b["wchar"] - a["wchar"], rc))
PY
  local rc
  rc=$(cut -d' ' -f6 "$LOGDIR/$key.m")
  if [[ $rc != 0 ]]; then
    log "FAILED (exit $rc): $key; log $LOGDIR/$key.log"
    tail -n 10 "$LOGDIR/$key.log" | sed 's/^/    /' >&2
    FAILURES+=("$key: exit $rc (log $LOGDIR/$key.log)")
    return 1
  fi
  log "$key: $(awk '{ printf "%s s, %.0f MiB RSS, rchar %.1f MiB, read_bytes %.1f MiB", $1, $2/1024, $3/1048576, $4/1048576 }' "$LOGDIR/$key.m")"
}
m_field() { [[ -f $LOGDIR/$1.m ]] && cut -d' ' -f"$2" "$LOGDIR/$1.m" || echo ""; }

# quiet KEY CMD...: an unmeasured step; its output goes to the log.
quiet() {
  local key=$1; shift
  { printf '+'; printf ' %q' "$@"; echo; } >>"$LOGDIR/$key.log"
  "$@" >>"$LOGDIR/$key.log" 2>&1 || { tail -n 10 "$LOGDIR/$key.log" >&2; die "$key failed (log $LOGDIR/$key.log)"; }
}

export TRIREME_KEY_FILE="$B/trireme.key"
export RESTIC_PASSWORD="$PASSWORD"
T() { TRIREME_LOCATION="file://$B/repos/trireme-$1" "$TRIREME_BIN" "${@:2}"; }
Tcmd() { echo env "TRIREME_LOCATION=file://$B/repos/trireme-$1" "$TRIREME_BIN"; }
R() { RESTIC_REPOSITORY="$B/repos/restic-$1" RESTIC_CACHE_DIR="$B/restic-cache" restic "${@:2}"; }
Rcmd() { echo env "RESTIC_REPOSITORY=$B/repos/restic-$1" "RESTIC_CACHE_DIR=$B/restic-cache" restic; }
quiet keygen "$TRIREME_BIN" keygen
mkdir -p "$B/repos"

# ---------------------------------------------------------------- tree: ls, find, diff
TREE="$B/tree"
# tree_gen DIR N SEED [STEP]: without STEP make the tree; with STEP apply
# change number STEP (rewrite 20 files, add 5, delete 3). Deterministic.
tree_gen() {
  python3 - "$@" <<'PY'
import os, random, sys
root, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
step = int(sys.argv[4]) if len(sys.argv) > 4 else 0
WORDS = ("hello ok thanks see you tomorrow meeting deploy error retry channel "
         "message upload image lunch review merge ticket customer invoice").split()
KINDS = (("msg", "json"), ("chat", "txt"), ("thumb", "bin"))
def path(i):
    d = i // 100
    kind, ext = KINDS[i % 3]
    return os.path.join(root, "g%03d" % (d // 100), "d%02d" % (d % 100), "%s-%06d.%s" % (kind, i, ext))
def write(p, rng, ext, mtime):
    size = rng.randint(100, 4000)
    if ext == "bin":
        data = rng.randbytes(size)
    elif ext == "json":
        data = ("".join('{"id":%d,"user":%d,"text":"%s"}\n' % (rng.getrandbits(40), rng.randint(1, 9999),
                " ".join(rng.choice(WORDS) for _ in range(12))) for _ in range(size // 110 + 1))).encode()[:size]
    else:
        data = ("".join("[%02d:%02d] user%d: %s\n" % (rng.randint(0, 23), rng.randint(0, 59), rng.randint(1, 500),
                " ".join(rng.choice(WORDS) for _ in range(9))) for _ in range(size // 70 + 1))).encode()[:size]
    with open(p, "wb") as f:
        f.write(data)
    os.utime(p, (mtime, mtime))
T0 = 1_700_000_000
if step == 0:
    for i in range(n):
        p = path(i)
        if i % 100 == 0:
            os.makedirs(os.path.dirname(p), exist_ok=True)
        write(p, random.Random("%d-%d" % (seed, i)), KINDS[i % 3][1], T0 + i)
else:
    rng = random.Random("%d-step-%d" % (seed, step))
    for _ in range(20):
        i = rng.randrange(n)
        if os.path.exists(path(i)):
            write(path(i), random.Random("%d-%d-%d" % (seed, i, step)), KINDS[i % 3][1], T0 + n + step)
    d = os.path.dirname(path(rng.randrange(n)))
    for j in range(5):
        write(os.path.join(d, "new-%03d-%d.json" % (step, j)), random.Random("%d-new-%d-%d" % (seed, step, j)), "json", T0 + n + step)
    for _ in range(3):
        p = path(rng.randrange(n))
        if os.path.exists(p):
            os.remove(p)
PY
}

log "tree: $NFILES small files, $NSNAP snapshots (seed $SEED)"
tree_gen "$TREE" "$NFILES" "$SEED"
TREE_FILES=$(find "$TREE" -type f | wc -l)
TREE_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }')
quiet tree-init T tree init
quiet tree-init R tree init -q
TREE_BACKUP_T=0; TREE_BACKUP_R=0
for ((s = 1; s <= NSNAP; s++)); do
  if ((s > 1)); then tree_gen "$TREE" "$NFILES" "$SEED" $((s - 1)); fi
  t0=$(date +%s.%N)
  quiet tree-backup-trireme T tree backup --source bench-tree "$TREE"
  t1=$(date +%s.%N)
  quiet tree-backup-restic R tree backup -q --host bench "$TREE"
  t2=$(date +%s.%N)
  if ((s == 1)); then
    TREE_FIRST_T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    TREE_FIRST_R=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", b - a }')
  else
    TREE_BACKUP_T=$(awk -v x="$TREE_BACKUP_T" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", x + b - a }')
    TREE_BACKUP_R=$(awk -v x="$TREE_BACKUP_R" -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", x + b - a }')
  fi
  ((s % 10 == 0 || s == NSNAP)) && log "tree: $s of $NSNAP backups done"
done
TREE_FILES_LAST=$(find "$TREE" -type f | wc -l)
T_FIRST=$(T tree snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
T_LAST=$(T tree snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
R_FIRST=$(R tree snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
R_LAST=$(R tree snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
T_NSNAP=$(T tree snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
R_NSNAP=$(R tree snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
TREE_REPO_T=$(du -sb "$B/repos/trireme-tree" | cut -f1)
TREE_REPO_R=$(du -sb "$B/repos/restic-tree" | cut -f1)
# A name glob that matches a handful of msg-*.json files in every snapshot.
PATTERN="msg-$(printf '%05d' $((NFILES / 20)))?.json"

log "tree: measuring ls, find, diff"
measure ls.trireme "$B/ls.trireme.out" $(Tcmd tree) ls -R -l latest --source bench-tree / || true
measure ls.restic "$B/ls.restic.out" $(Rcmd tree) ls -l latest || true
measure find.trireme "$B/find.trireme.out" $(Tcmd tree) find "$PATTERN" || true
measure find.restic "$B/find.restic.out" $(Rcmd tree) find "$PATTERN" || true
measure diff.trireme "$B/diff.trireme.out" $(Tcmd tree) diff "$T_FIRST" "$T_LAST" || true
measure diff.restic "$B/diff.restic.out" $(Rcmd tree) diff "$R_FIRST" "$R_LAST" || true
lines() { [[ -f $1 ]] && wc -l <"$1" || echo 0; }
# What each listed: entries (files + dirs) for ls, matches for find, changed paths for diff.
LS_T=$(lines "$B/ls.trireme.out")
LS_R=$(($(lines "$B/ls.restic.out") - 1))            # minus restic's "snapshot … of […]" header
FIND_T=$(grep -c ' in [0-9]* snapshot(s): ' "$B/find.trireme.out" || true)
FIND_T_SUM=$(tail -n 1 "$B/find.trireme.out" 2>/dev/null || true)
FIND_R=$(grep -c '^/' "$B/find.restic.out" || true)
FIND_R_SNAPS=$(grep -c '^Found matching entries in snapshot' "$B/find.restic.out" || true)
DIFF_T=$(grep -c '^[-+M] ' "$B/diff.trireme.out" || true)
DIFF_T_SUM=$(tail -n 1 "$B/diff.trireme.out" 2>/dev/null || true)
DIFF_R=$(grep -cE '^[-+MUT?]+ +/' "$B/diff.restic.out" || true)
DIFF_R_SUM=$(grep -E '^Files:' "$B/diff.restic.out" | tr -s ' ' || true)
if ((KEEP == 0)); then rm -rf "$TREE" "$B/repos/trireme-tree" "$B/repos/restic-tree" "$B/restic-cache"; fi

# ---------------------------------------------------------------- big: one file back
DATA="$WORK/data"
log "data set: gen-data.py --seed $SEED --size-mib $SIZE_MIB (base state)"
python3 "$BENCH_DIR/gen-data.py" --out "$DATA" --seed "$SEED" --size-mib "$SIZE_MIB" 2>&1 | sed 's/^/    /' >&2
DATA_BYTES=$(find "$DATA" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }')
DATA_FILES=$(find "$DATA" -type f | wc -l)
BIG=$(cd "$DATA" && find media -type f -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2)
BIG_SIZE=$(stat -c %s "$DATA/$BIG")
BIG_SHA=$(sha256sum "$DATA/$BIG" | cut -d' ' -f1)
log "the file: $BIG ($BIG_SIZE bytes)"
declare -A OK=()
check_file() { # KEY FILE
  if [[ -f $2 ]] && [[ $(sha256sum "$2" | cut -d' ' -f1) == "$BIG_SHA" ]]; then OK[$1]=yes; else
    OK[$1]=NO; FAILURES+=("$1: the restored file is missing or differs from the original (sha256)"); fi
  rm -rf "$B/out" "$B/dump.bin"
}
# One tool at a time, its repository deleted before the next (disk: the data
# set plus one repository at a time).
log "big: Trireme: backup, then single-file restore, dump, stats"
quiet big-init T big init
t0=$(date +%s.%N)
(cd "$WORK" && quiet big-backup-trireme T big backup --source bench-data data)
BIG_BACKUP_T=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
BIG_REPO_T=$(du -sb "$B/repos/trireme-big" | cut -f1)
measure restore-path.trireme "$B/restore-path.trireme.out" $(Tcmd big) restore latest --source bench-data --target "$B/out" --path "$BIG" || true
check_file restore-path.trireme "$B/out/$BIG"
measure restore-include.trireme "$B/restore-include.trireme.out" $(Tcmd big) restore latest --source bench-data --target "$B/out" --include "/$BIG" || true
check_file restore-include.trireme "$B/out/$BIG"
measure dump.trireme "$B/dump.bin" $(Tcmd big) dump latest --source bench-data "/$BIG" || true
check_file dump.trireme "$B/dump.bin"
measure stats.trireme "$B/stats.trireme.out" $(Tcmd big) stats latest --source bench-data || true
((KEEP)) || rm -rf "$B/repos/trireme-big"

log "big: restic: backup, then single-file restore, dump, stats"
quiet big-init R big init -q
t0=$(date +%s.%N)
(cd "$WORK" && quiet big-backup-restic R big backup -q --host bench data)
BIG_BACKUP_R=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
BIG_REPO_R=$(du -sb "$B/repos/restic-big" | cut -f1)
measure restore-include.restic "$B/restore-include.restic.out" $(Rcmd big) restore latest --target "$B/out" --include "/data/$BIG" || true
check_file restore-include.restic "$B/out/data/$BIG"
measure dump.restic "$B/dump.bin" $(Rcmd big) dump latest "/data/$BIG" || true
check_file dump.restic "$B/dump.bin"
measure stats.restic "$B/stats.restic.out" $(Rcmd big) stats latest --mode raw-data || true
((KEEP)) || rm -rf "$B/repos" "$B/restic-cache"

# ---------------------------------------------------------------- report
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
row() { # label command key extra
  local k=$3
  if [[ -z $(m_field "$k" 1) ]]; then echo "| $1 | \`$2\` | not run | | | | | $4 |"; return; fi
  local rc; rc=$(m_field "$k" 6)
  [[ $rc == 0 ]] || { echo "| $1 | \`$2\` | FAILED (exit $rc) | | | | | $4 |"; return; }
  echo "| $1 | \`$2\` | $(m_field "$k" 1) | $(awk -v k="$(m_field "$k" 2)" 'BEGIN { printf "%.0f", k / 1024 }') | $(mib "$(m_field "$k" 3)") | $(mib "$(m_field "$k" 4)") | $(mib "$(m_field "$k" 5)") | $4 |"
}
ratio_cell() { # key
  local r; r=$(m_field "$1" 3)
  [[ -n $r && $(m_field "$1" 6) == 0 ]] || { echo "-"; return; }
  local x; x=$(ratio "$r" "$BIG_SIZE")
  if awk -v x="$x" 'BEGIN { exit !(x < 2) }'; then echo "$x (< 2: met)"; else echo "$x (NOT met)"; fi
}
BAR=$(ratio_cell restore-path.trireme)
[[ $BAR == *met* && $BAR != *NOT* ]] || FAILURES+=("trireme restore --path: read/file size $BAR: the bar (< 2x) is not met")
ELAPSED=$(($(date +%s) - START_EPOCH))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
GIT_DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
((GIT_DIRTY == 0)) || GIT_REV+=" + $GIT_DIRTY uncommitted changed files in the checkout"

REPORT="$B/report.md"
{
  echo "## Find and get back one file: ls, find, diff, single-file restore (issue 15)"
  echo
  echo "Generated by \`bench/browse.sh\` on $START_DATE (took ${ELAPSED}s). Command (from \`$INVOKED_FROM\`):"
  echo
  echo '```'
  echo "$ORIG_CMD"
  echo '```'
  echo
  echo "- Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -r); work directory \`$WORK\` ($(df -T "$WORK" | awk 'NR==2 { print $2 }'))"
  echo "- Load average (1/5/15 min) at start: $LOAD_START; at end: $LOAD_END"
  echo "- Page cache: $CACHE_NOTE"
  echo "- Trireme: \`$("$TRIREME_BIN" --version 2>/dev/null | head -n 1)\`, workspace commit $GIT_REV, \`$TRIREME_BIN\`; restic: \`$(restic version | head -n 1)\` (its default cache, \`RESTIC_CACHE_DIR\` filled by the backups; rchar counts cache reads too)"
  echo "- Repositories: \`file://\` directories on the same disk, one per tool and data set"
  echo "- **Tree** (ls, find, diff): $TREE_FILES small files (100 B to 4 KiB; JSON lines, chat text, random bytes) in $(( (NFILES + 99) / 100 )) directories, $(mib "$TREE_BYTES") MiB, backed up $NSNAP times (Trireme: $T_NSNAP snapshots, restic: $R_NSNAP); between backups 20 files rewritten, 5 added, up to 3 deleted ($TREE_FILES_LAST files in the last). First backup: Trireme ${TREE_FIRST_T} s, restic ${TREE_FIRST_R} s; the other $((NSNAP - 1)) together: Trireme ${TREE_BACKUP_T} s, restic ${TREE_BACKUP_R} s (not dropped caches; for scale only). Repository after all: Trireme $(mib "$TREE_REPO_T") MiB, restic $(mib "$TREE_REPO_R") MiB."
  echo "- **Big** (single-file restore, stats): \`bench/gen-data.py --seed $SEED --size-mib $SIZE_MIB\`: $DATA_FILES files, $(mib "$DATA_BYTES") MiB, one backup (Trireme ${BIG_BACKUP_T} s, restic ${BIG_BACKUP_R} s; repository Trireme $(mib "$BIG_REPO_T") MiB, restic $(mib "$BIG_REPO_R") MiB). The file: \`$BIG\`, $BIG_SIZE bytes ($(mib "$BIG_SIZE") MiB) of random bytes, its largest media file: incompressible, so its compressed size is at least its size and read / file size is an upper bound of read / compressed size."
  echo
  echo "| Operation | Command | Wall (s) | Peak RSS (MiB) | rchar (MiB) | read_bytes (MiB) | wchar (MiB) | Result |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
  row "ls, Trireme" "trireme-agent ls -R -l latest --source bench-tree /" ls.trireme "$LS_T entries"
  row "ls, restic" "restic ls -l latest" ls.restic "$LS_R entries"
  row "find, Trireme" "trireme-agent find '$PATTERN'" find.trireme "$FIND_T path versions; \"$FIND_T_SUM\""
  row "find, restic" "restic find '$PATTERN'" find.restic "$FIND_R matches in $FIND_R_SNAPS snapshots"
  row "diff first..last, Trireme" "trireme-agent diff FIRST LAST" diff.trireme "$DIFF_T paths; \"$DIFF_T_SUM\""
  row "diff first..last, restic" "restic diff FIRST LAST" diff.restic "$DIFF_R paths; \"$DIFF_R_SUM\""
  row "one file by path, Trireme" "trireme-agent restore latest --target OUT --path $BIG" restore-path.trireme "read/size $(ratio_cell restore-path.trireme); sha256 ${OK[restore-path.trireme]:-?}"
  row "one file by glob, Trireme" "trireme-agent restore latest --target OUT --include /$BIG" restore-include.trireme "read/size $(ratio_cell restore-include.trireme); sha256 ${OK[restore-include.trireme]:-?}"
  row "one file to stdout, Trireme" "trireme-agent dump latest /$BIG > F" dump.trireme "read/size $(ratio_cell dump.trireme); sha256 ${OK[dump.trireme]:-?}"
  row "one file by glob, restic" "restic restore latest --target OUT --include /data/$BIG" restore-include.restic "read/size $(ratio_cell restore-include.restic); sha256 ${OK[restore-include.restic]:-?}"
  row "one file to stdout, restic" "restic dump latest /data/$BIG > F" dump.restic "read/size $(ratio_cell dump.restic); sha256 ${OK[dump.restic]:-?}"
  row "stats of the big snapshot, Trireme" "trireme-agent stats latest --source bench-data" stats.trireme ""
  row "stats of the big snapshot, restic" "restic stats latest --mode raw-data" stats.restic ""
  echo
  echo "Issue 15's bar, the single-file restore (\`restore --path\`) reads less than 2x the file's compressed size from the location: read (rchar) / file size = $BAR."
  echo
  echo "How to read: each command ran once, output to a file (ls, find, diff, stats output is in WORK/browse/*.out while the run lasts). rchar = bytes the process got from read()/pread() of any file (repository objects, key file, restic's local cache, /proc; output written is counted in wchar, not rchar): for these file:// repositories it is the bytes read from the location, plus small local reads. read_bytes = bytes the kernel fetched from the disk for the process (only meaningful with the page cache dropped; includes pages of the program itself). Peak RSS: \`/usr/bin/time -v\` maximum resident set size. MiB = 2^20 bytes."
  if ((${#FAILURES[@]})); then
    echo
    echo "Failures:"
    echo
    for f in "${FAILURES[@]}"; do echo "- $f"; done
  fi
} >"$REPORT"
cat "$REPORT"
if [[ -n $APPEND ]]; then { echo; cat "$REPORT"; } >>"$APPEND"; log "appended to $APPEND"; fi
((${#FAILURES[@]} == 0)) || { log "FAILED: ${#FAILURES[@]} step(s), see above"; exit 1; }
log "done; logs in $LOGDIR"
