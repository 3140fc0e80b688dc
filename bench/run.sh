#!/usr/bin/env bash
# Trireme vs restic vs borg: one run, same generated data set, results in
# bench/RESULTS.md.  See bench/README.md for what is measured and how.
#
#   bench/run.sh [--size-mib N] [--seed N] [--s3] [--work DIR]
#                [--tools trireme,restic,borg] [--results FILE]
#                [--no-build] [--keep-repos]
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
INVOKED_FROM=$PWD
ORIG_CMD=""
for _v in TRIREME_BIN CARGO_TARGET_DIR GARAGE_BIN; do
  [[ -z ${!_v:-} ]] || ORIG_CMD+="$_v=$(printf '%q' "${!_v}") "
done
ORIG_CMD+=$0
for _a in "$@"; do
  if [[ $_a =~ ^[A-Za-z0-9_./,=:+@%-]+$ ]]; then ORIG_CMD+=" $_a"; else ORIG_CMD+=" $(printf '%q' "$_a")"; fi
done

SIZE_MIB=2048
SEED=1
S3=0
WORK="$BENCH_DIR/work"
TOOLS_ARG="trireme,restic,borg"
RESULTS="$BENCH_DIR/RESULTS.md"
BUILD=1
KEEP_REPOS=0
PASSWORD="trireme-bench-password"   # restic/borg repository password (benchmark only)

usage() {
  cat <<'EOF'
Usage: bench/run.sh [options]
  --size-mib N        data set size in MiB (default 2048)
  --seed N            data set seed (default 1)
  --s3                also benchmark against a local Garage S3 server
                      (deploy/dev/garage.sh); Trireme and restic only
  --work DIR          data set, repositories and logs (default bench/work)
  --tools LIST        comma list of trireme, restic, borg (= borg-zstd and
                      borg-lz4), borg-zstd, borg-lz4 (default trireme,restic,borg)
  --results FILE      where to write the report (default bench/RESULTS.md)
  --no-build          do not run cargo build (use TRIREME_BIN or the existing binary)
  --keep-repos        keep repositories after the run (default: deleted per target)
Environment: TRIREME_BIN (path to trireme-agent), CARGO_TARGET_DIR.
EOF
}

abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$INVOKED_FROM" "$1" ;; esac; }

while (($#)); do
  case $1 in
    --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
    --size-mib=*) SIZE_MIB=${1#*=}; shift ;;
    --seed) SEED=${2:?}; shift 2 ;;
    --seed=*) SEED=${1#*=}; shift ;;
    --s3) S3=1; shift ;;
    --work) WORK=$(abspath "${2:?}"); shift 2 ;;
    --work=*) WORK=$(abspath "${1#*=}"); shift ;;
    --tools) TOOLS_ARG=${2:?}; shift 2 ;;
    --tools=*) TOOLS_ARG=${1#*=}; shift ;;
    --results) RESULTS=$(abspath "${2:?}"); shift 2 ;;
    --results=*) RESULTS=$(abspath "${1#*=}"); shift ;;
    --no-build) BUILD=0; shift ;;
    --keep-repos) KEEP_REPOS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ $SIZE_MIB =~ ^[0-9]+$ ]] && ((SIZE_MIB >= 16)) || { echo "run.sh: --size-mib must be an integer >= 16" >&2; exit 2; }
[[ $SEED =~ ^[0-9]+$ ]] || { echo "run.sh: --seed must be an integer" >&2; exit 2; }

# Tools always run in this fixed order, whatever order --tools lists them in.
declare -A WANT=()
IFS=, read -r -a _tools <<<"$TOOLS_ARG"
for t in "${_tools[@]}"; do
  case $t in
    trireme|restic|borg-zstd|borg-lz4) WANT[$t]=1 ;;
    borg) WANT[borg-zstd]=1; WANT[borg-lz4]=1 ;;
    "") ;;
    *) echo "run.sh: unknown tool '$t' (trireme, restic, borg, borg-zstd, borg-lz4)" >&2; exit 2 ;;
  esac
done
TOOLS=()
for t in trireme restic borg-zstd borg-lz4; do [[ -n ${WANT[$t]:-} ]] && TOOLS+=("$t"); done
((${#TOOLS[@]})) || { echo "run.sh: no tools selected" >&2; exit 2; }
has_tool() { [[ -n ${WANT[$1]:-} ]]; }
has_borg() { has_tool borg-zstd || has_tool borg-lz4; }

declare -A LABEL=([trireme]="Trireme" [restic]="restic" [borg-zstd]="borg (zstd,3)" [borg-lz4]="borg (lz4, default)")

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
# CI machines start clean: install what is missing with apt-get.
APT_UPDATED=0
apt_install() {
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    "${sudo[@]}" apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null
}
PKGS=()
[[ -x /usr/bin/time ]] || PKGS+=(time)
command -v python3 >/dev/null || PKGS+=(python3)
command -v sha256sum >/dev/null || PKGS+=(coreutils)
has_tool restic && ! command -v restic >/dev/null && PKGS+=(restic)
has_borg && ! command -v borg >/dev/null && PKGS+=(borgbackup)
((${#PKGS[@]} == 0)) || apt_install "${PKGS[@]}"

FAILURES=()              # every failed step; the script exits 1 if any

# ---------------------------------------------------------------- Trireme binary
TRIREME_OK=0
TRIREME_NOTE=""
if has_tool trireme; then
  if [[ -n ${TRIREME_BIN:-} ]]; then
    if [[ $TRIREME_BIN == */* ]]; then TRIREME_BIN=$(abspath "$TRIREME_BIN"); else TRIREME_BIN=$(command -v "$TRIREME_BIN" || echo "$TRIREME_BIN"); fi
  else
    if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
      export CARGO_TARGET_DIR
      CARGO_TARGET_DIR=$(abspath "$CARGO_TARGET_DIR")
    fi
    TRIREME_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/trireme-agent"
    if ((BUILD)); then
      log "cargo build --release -p trireme-agent"
      (cd "$ROOT" && cargo build --release -p trireme-agent) || die "cargo build --release -p trireme-agent failed"
    fi
  fi
  [[ -x $TRIREME_BIN ]] || die "Trireme binary not found at $TRIREME_BIN (build it, set TRIREME_BIN, or drop trireme from --tools)"
  if help=$("$TRIREME_BIN" --help 2>&1) && grep -q backup <<<"$help" && grep -q restore <<<"$help"; then
    TRIREME_OK=1
  else
    TRIREME_NOTE="$TRIREME_BIN --help does not list backup/restore subcommands; Trireme was skipped"
    log "WARNING: $TRIREME_NOTE"
    FAILURES+=("trireme: $TRIREME_NOTE")
  fi
fi

# ---------------------------------------------------------------- layout
DATA="$WORK/data"
RUN="$WORK/run"
LOGDIR="$RUN/logs"
mkdir -p "$WORK"
rm -rf "$RUN"
mkdir -p "$LOGDIR"
START_EPOCH=$(date +%s)
START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

GARAGE_DIR=""
cleanup() {
  if [[ -n $GARAGE_DIR ]]; then
    "$ROOT/deploy/dev/garage.sh" stop "$GARAGE_DIR" >>"$LOGDIR/garage.log" 2>&1 || true
  fi
  if [[ -n ${RUN:-} ]]; then
    rm -rf "$RUN"/restore-* 2>/dev/null || true
  fi
}
trap cleanup EXIT

CACHE_NOTE="dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every timed step"
CACHE_DROPPED=1
drop_caches() {
  sync
  if ((CACHE_DROPPED)) && ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    CACHE_DROPPED=0
    CACHE_NOTE="NOT dropped (no permission to write /proc/sys/vm/drop_caches): page cache was warm"
    log "WARNING: cannot drop the page cache; measurements run with a warm cache"
  fi
}

# ---------------------------------------------------------------- measurement
declare -A R=()          # results: R[target.tool.phase.s], .rss, R[target.tool.repo], ...

# timed KEY CMD...: run CMD under GNU time; record wall seconds and max RSS (KiB).
timed() {
  local key=$1; shift
  local tf="$LOGDIR/$key.time" lf="$LOGDIR/$key.log" rc=0
  { printf '+'; printf ' %q' "$@"; echo; } >"$lf"
  /usr/bin/time -f '%e %M' -o "$tf" "$@" >>"$lf" 2>&1 || rc=$?
  if ((rc != 0)); then
    log "FAILED (exit $rc): $key; log: $lf"
    tail -n 15 "$lf" | sed 's/^/    /' >&2
    R[$key.s]=FAILED
    FAILURES+=("$key (exit $rc, log $lf)")
    return 1
  fi
  local s rss
  read -r s rss < <(tail -n 1 "$tf")
  R[$key.s]=$s
  R[$key.rss]=$rss
  log "$key: ${s}s, peak RSS $((rss / 1024)) MiB"
}

# quiet CMD...: untimed helper step (init, keygen); output to the step log.
quiet() {
  local key=$1; shift
  local lf="$LOGDIR/$key.log"
  { printf '+'; printf ' %q' "$@"; echo; } >"$lf"
  if ! "$@" >>"$lf" 2>&1; then
    log "FAILED: $key; log: $lf"
    tail -n 15 "$lf" | sed 's/^/    /' >&2
    FAILURES+=("$key (log $lf)")
    return 1
  fi
}

S3_ENDPOINT=""
S3_BUCKET="trireme"
repo_of() { # target tool
  local target=$1 tool=$2
  case $target:$tool in
    local:trireme) echo "file://$RUN/local/repos/trireme" ;;
    local:restic) echo "$RUN/local/repos/restic" ;;
    local:borg-*) echo "$RUN/local/repos/$tool" ;;
    s3:trireme) echo "s3://$S3_BUCKET/trireme-bench?endpoint=$S3_ENDPOINT&region=garage&allow_http=true" ;;
    s3:restic) echo "s3:$S3_ENDPOINT/$S3_BUCKET/restic" ;;
  esac
}
s3_prefix_of() { case $1 in trireme) echo "trireme-bench/" ;; restic) echo "restic/" ;; esac; }

# tool_cmd TARGET TOOL: sets CMD to the env + program prefix for this tool/target.
tool_cmd() {
  local target=$1 tool=$2
  case $tool in
    trireme) CMD=("$TRIREME_BIN") ;;
    restic) CMD=(env "RESTIC_PASSWORD=$PASSWORD" "RESTIC_REPOSITORY=$(repo_of "$target" restic)"
                 "RESTIC_CACHE_DIR=$RUN/$target/restic-cache" restic) ;;
    borg-*) CMD=(env "BORG_PASSPHRASE=$PASSWORD" "BORG_REPO=$(repo_of "$target" "$tool")"
                 "BORG_BASE_DIR=$RUN/$target/borg-base-$tool"
                 BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes borg) ;;
  esac
}

TRIREME_KEY=""
RESTIC_REPO_VERSION="?"
tool_init() { # target tool
  local target=$1 tool=$2
  tool_cmd "$target" "$tool"
  case $tool in
    trireme)
      TRIREME_KEY="$RUN/$target/trireme.key"
      if [[ $target == local ]]; then mkdir -p "$RUN/local/repos"; fi
      quiet "$target.$tool.keygen" "${CMD[@]}" keygen --key-file "$TRIREME_KEY" &&
        quiet "$target.$tool.init" "${CMD[@]}" init --location "$(repo_of "$target" trireme)" --key-file "$TRIREME_KEY" ;;
    restic)
      rm -rf "$RUN/$target/restic-cache"; mkdir -p "$RUN/$target/restic-cache"
      [[ $target == local ]] && mkdir -p "$RUN/local/repos"
      quiet "$target.$tool.init" "${CMD[@]}" init &&
        RESTIC_REPO_VERSION=$("${CMD[@]}" cat config 2>/dev/null |
          python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])' 2>/dev/null || echo "?") ;;
    borg-*)
      rm -rf "$RUN/$target/borg-base-$tool"; mkdir -p "$RUN/$target/borg-base-$tool" "$RUN/local/repos"
      quiet "$target.$tool.init" "${CMD[@]}" init -e repokey-blake2 ;;
  esac
}

tool_backup() { # target tool phase(full|incr)
  local target=$1 tool=$2 phase=$3
  tool_cmd "$target" "$tool"
  case $tool in
    trireme) timed "$target.$tool.$phase" "${CMD[@]}" backup --location "$(repo_of "$target" trireme)" \
               --key-file "$TRIREME_KEY" --source bench-data "$DATA" ;;
    restic) timed "$target.$tool.$phase" env -C "$WORK" "${CMD[@]}" backup data ;;
    borg-zstd) timed "$target.$tool.$phase" env -C "$WORK" "${CMD[@]}" create --compression zstd,3 "::$phase" data ;;
    borg-lz4) timed "$target.$tool.$phase" env -C "$WORK" "${CMD[@]}" create "::$phase" data ;;
  esac
}

tool_restore() { # target tool outdir
  local target=$1 tool=$2 out=$3
  tool_cmd "$target" "$tool"
  case $tool in
    trireme) timed "$target.$tool.restore" "${CMD[@]}" restore --location "$(repo_of "$target" trireme)" \
               --key-file "$TRIREME_KEY" latest --target "$out" ;;
    restic) timed "$target.$tool.restore" "${CMD[@]}" restore latest --target "$out" ;;
    borg-*) timed "$target.$tool.restore" env -C "$out" "${CMD[@]}" extract ::incr ;;
  esac
}

tool_repo_size() { # target tool -> bytes on stdout
  local target=$1 tool=$2
  if [[ $target == local ]]; then
    local repo; repo=$(repo_of local "$tool"); repo=${repo#file://}
    du -sb "$repo" | cut -f1
  else
    python3 "$BENCH_DIR/s3-du.py" --endpoint "$S3_ENDPOINT" --bucket "$S3_BUCKET" \
      --prefix "$(s3_prefix_of "$tool")" --region garage | cut -d' ' -f1
  fi
}

# manifest DIR: sorted "sha256  path" lines of every file, then "dir path" lines.
manifest() {
  (cd "$1" && find . -type f -printf '%P\0' | xargs -0 -r -n 64 -P "$(nproc)" sha256sum -- | sort -k2
   find . -mindepth 1 -type d -printf 'dir %P\n' | sort)
}

# verify_restore KEY OUT: compare the restored tree with the source manifest.
verify_restore() {
  local key=$1 out=$2 root="" cand sentinel
  sentinel=$(head -n 1 "$RUN/source.manifest" | cut -c 67-)
  for cand in "$out/data" "$out" "$out$DATA"; do
    if [[ -f $cand/$sentinel ]]; then root=$cand; break; fi
  done
  if [[ -z $root ]]; then
    R[$key.verify]="FAILED: data not found"
  else
    manifest "$root" >"$LOGDIR/$key.manifest"
    if cmp -s "$RUN/source.manifest" "$LOGDIR/$key.manifest"; then
      R[$key.verify]="yes"
      log "$key: restore verified byte-identical (${root#"$out"}/)"
      rm -f "$LOGDIR/$key.manifest"
      return 0
    fi
    R[$key.verify]="FAILED: differs"
    diff "$RUN/source.manifest" "$LOGDIR/$key.manifest" | head -n 20 >"$LOGDIR/$key.verify-diff" || true
  fi
  log "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  log "!!! RESTORE MISMATCH: $key: ${R[$key.verify]} (restored into $out)"
  [[ -f $LOGDIR/$key.verify-diff ]] && sed 's/^/!!!   /' "$LOGDIR/$key.verify-diff" >&2
  log "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  FAILURES+=("$key: restore is not byte-identical to the source (${R[$key.verify]})")
  return 1
}

gen_data() { # extra args...
  python3 "$BENCH_DIR/gen-data.py" --out "$DATA" --seed "$SEED" --size-mib "$SIZE_MIB" "$@"
}
data_bytes() { find "$DATA" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f\n", s}'; }
data_files() { find "$DATA" -type f | wc -l; }

# ---------------------------------------------------------------- one target
run_target() { # local|s3
  local target=$1 tool out
  local -a tools=()
  declare -A ok=()
  for tool in "${TOOLS[@]}"; do
    if [[ $tool == trireme ]] && ((TRIREME_OK == 0)); then continue; fi
    if [[ $target == s3 && $tool == borg-* ]]; then continue; fi
    tools+=("$tool"); ok[$tool]=1
  done
  ((${#tools[@]})) || { log "target $target: no tool to run"; return 0; }
  mkdir -p "$RUN/$target"
  log "=== target $target: ${tools[*]}"

  log "data set: base state (seed $SEED, $SIZE_MIB MiB)"
  gen_data --summary "$RUN/$target/gen-base.json" 2>&1 | sed 's/^/    /' >&2
  R[$target.base_bytes]=$(data_bytes)
  R[$target.base_files]=$(data_files)

  for tool in "${tools[@]}"; do
    tool_init "$target" "$tool" || ok[$tool]=""
  done

  for tool in "${tools[@]}"; do
    [[ -n ${ok[$tool]} ]] || continue
    drop_caches
    tool_backup "$target" "$tool" full || ok[$tool]=""
  done

  log "data set: mutate ~5%"
  gen_data --mutate --summary "$RUN/$target/gen-mutate.json" 2>&1 | sed 's/^/    /' >&2
  R[$target.mut_bytes]=$(data_bytes)
  R[$target.mut_files]=$(data_files)

  for tool in "${tools[@]}"; do
    [[ -n ${ok[$tool]} ]] || continue
    drop_caches
    tool_backup "$target" "$tool" incr || ok[$tool]=""
  done

  for tool in "${tools[@]}"; do
    [[ -n ${ok[$tool]} ]] || continue
    R[$target.$tool.repo]=$(tool_repo_size "$target" "$tool") || R[$target.$tool.repo]="?"
  done

  log "source manifest (sha256 of every file)"
  manifest "$DATA" >"$RUN/source.manifest"

  for tool in "${tools[@]}"; do
    [[ -n ${ok[$tool]} ]] || continue
    out="$RUN/restore-$target-$tool"
    rm -rf "$out"; mkdir -p "$out"
    drop_caches
    if tool_restore "$target" "$tool" "$out"; then
      verify_restore "$target.$tool.restore" "$out" || true
    fi
    rm -rf "$out"
  done

  if ((KEEP_REPOS == 0)) && [[ $target == local ]]; then
    rm -rf "$RUN/local/repos"
  fi
}

# ---------------------------------------------------------------- run
log "Trireme benchmark: tools ${TOOLS[*]}, $SIZE_MIB MiB, seed $SEED, work $WORK"
drop_caches
run_target local

if ((S3)); then
  GARAGE_SH="$ROOT/deploy/dev/garage.sh"
  [[ -x $GARAGE_SH || -f $GARAGE_SH ]] || die "--s3 needs $GARAGE_SH, which does not exist"
  GARAGE_DIR="$RUN/garage"
  log "starting Garage: deploy/dev/garage.sh start 1 $GARAGE_DIR"
  GARAGE_OWNER_PID=$$ bash "$GARAGE_SH" start 1 "$GARAGE_DIR" >"$LOGDIR/garage.log" 2>&1 || {
    tail -n 20 "$LOGDIR/garage.log" >&2; die "garage.sh start failed; log: $LOGDIR/garage.log"; }
  [[ -f $GARAGE_DIR/env ]] || die "garage.sh did not write $GARAGE_DIR/env"
  # shellcheck disable=SC1091
  source "$GARAGE_DIR/env"
  S3_ENDPOINT=${GARAGE_1_ENDPOINT:?garage env lacks GARAGE_1_ENDPOINT}
  export AWS_ACCESS_KEY_ID=${GARAGE_1_ACCESS_KEY_ID:?} AWS_SECRET_ACCESS_KEY=${GARAGE_1_SECRET_ACCESS_KEY:?}
  export AWS_DEFAULT_REGION=garage AWS_REGION=garage
  for _g in "${GARAGE_BIN:-}" "$(command -v garage || true)" "$HOME/.cargo/bin/garage"; do
    if [[ -n $_g && -x $_g ]]; then GARAGE_VERSION=$("$_g" --version 2>/dev/null | head -n 1 || true); break; fi
  done
  run_target s3
  bash "$GARAGE_SH" stop "$GARAGE_DIR" >>"$LOGDIR/garage.log" 2>&1 || log "WARNING: garage.sh stop failed"
  ((KEEP_REPOS)) || rm -rf "$GARAGE_DIR"
  GARAGE_DIR=""
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - START_EPOCH))

# ---------------------------------------------------------------- report
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", b / 1e6 / s; else print "-" }'; }
num_or() { [[ -n ${1:-} && $1 != FAILED ]]; }

cell_s() { local v=${R[$1.s]:-}; [[ -n $v ]] && echo "$v" || echo "-"; }
cell_rss() { local v=${R[$1.rss]:-}; [[ -n $v ]] && awk -v k="$v" 'BEGIN { printf "%.0f", k / 1024 }' || echo "-"; }
cell_mbps() { local v=${R[$1.s]:-}; num_or "$v" && mbps "$2" "$v" || echo "-"; }

table() { # target
  local target=$1 tool k
  echo "| Tool | Full backup (s) | Full MB/s | Full peak RSS (MiB) | Incr. backup (s) | Incr. peak RSS (MiB) | Restore (s) | Restore MB/s | Restore peak RSS (MiB) | Repo size after 2 backups (MiB) | Repo / data | Restore byte-identical |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  local borg_done=0
  for tool in "${TOOLS[@]}"; do
    if [[ $target == s3 && $tool == borg-* ]]; then
      ((borg_done)) || echo "| borg | n/a (borg has no S3 backend) | | | | | | | | | | |"
      borg_done=1; continue
    fi
    if [[ $tool == trireme ]] && ((TRIREME_OK == 0)); then
      echo "| ${LABEL[$tool]} | not run: ${TRIREME_NOTE} | | | | | | | | | | |"; continue
    fi
    k="$target.$tool"
    local repo=${R[$k.repo]:-} repo_cell="-" ratio="-"
    if [[ $repo =~ ^[0-9]+$ ]]; then
      repo_cell=$(mib "$repo")
      ratio=$(awk -v r="$repo" -v d="${R[$target.mut_bytes]}" 'BEGIN { printf "%.2f", r / d }')
    fi
    echo "| ${LABEL[$tool]} | $(cell_s "$k.full") | $(cell_mbps "$k.full" "${R[$target.base_bytes]}") | $(cell_rss "$k.full") | $(cell_s "$k.incr") | $(cell_rss "$k.incr") | $(cell_s "$k.restore") | $(cell_mbps "$k.restore" "${R[$target.mut_bytes]}") | $(cell_rss "$k.restore") | $repo_cell | $ratio | ${R[$k.restore.verify]:--} |"
  done
}

json_get() { python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
for k in sys.argv[2:]: d=d[k]
print(d)' "$@" 2>/dev/null || echo 0; }

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_KIB=$(awk '/^MemTotal/ { print $2 }' /proc/meminfo)
OS_NAME=$( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || uname -s)
FS_TYPE=$(df -T "$WORK" | awk 'NR==2 { print $2 }')
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
GIT_DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)
RESTIC_VERSION=$(has_tool restic && restic version 2>/dev/null | head -n 1 || echo "-")
BORG_VERSION=$(has_borg && borg --version 2>/dev/null || echo "-")
TRIREME_VERSION="-"
TRIREME_DEFAULTS=""
if has_tool trireme && ((TRIREME_OK)); then
  TRIREME_VERSION="$("$TRIREME_BIN" --version 2>/dev/null | head -n 1 || true)"
  TRIREME_VERSION="${TRIREME_VERSION:-trireme-agent (no --version)}, workspace commit $GIT_REV"
  if ((GIT_DIRTY)); then TRIREME_VERSION+=" + $GIT_DIRTY uncommitted changes"; fi
  TRIREME_DEFAULTS=$("$TRIREME_BIN" backup --help 2>/dev/null | grep -A3 -i 'zstd' | grep -o 'default: [0-9]*' | head -n 1 || true)
  [[ -z $TRIREME_DEFAULTS ]] || TRIREME_DEFAULTS=" (zstd level: ${TRIREME_DEFAULTS#default: })"
fi

{
  echo "# Trireme vs restic vs borg"
  echo
  echo "Generated by \`bench/run.sh\` on $START_DATE (took ${ELAPSED}s)."
  echo
  echo "Command (from \`$INVOKED_FROM\`):"
  echo
  echo '```'
  echo "$ORIG_CMD"
  echo '```'
  echo
  echo "## Machine"
  echo
  echo "- CPUs (\`nproc\`): $(nproc)"
  echo "- CPU model: $CPU_MODEL"
  echo "- RAM: $(awk -v k="$MEM_KIB" 'BEGIN { printf "%.1f GiB", k / 1048576 }')"
  echo "- OS / kernel: $OS_NAME / $(uname -r)"
  echo "- Work directory: \`$WORK\` ($FS_TYPE)"
  echo "- Load average (1/5/15 min) at start: $LOAD_START; at end: $LOAD_END"
  echo "- Page cache: $CACHE_NOTE"
  if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > 0.5 * n) }'; then
    echo "- **Warning:** the machine was busy when the run started (load $LOAD_START on $(nproc) CPUs): timings are noisy; rerun on an idle machine for numbers to compare."
  fi
  echo
  echo "## Data set"
  echo
  echo "Generated by \`bench/gen-data.py --seed $SEED --size-mib $SIZE_MIB\` (deterministic; Python $(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'))."
  echo
  echo "- Full backup input: ${R[local.base_files]:-?} files, ${R[local.base_bytes]:-?} bytes ($(mib "${R[local.base_bytes]:-0}") MiB):" \
       "logs $(mib "$(json_get "$RUN/local/gen-base.json" bytes_by_kind log)") MiB," \
       "SQL dumps $(mib "$(json_get "$RUN/local/gen-base.json" bytes_by_kind sql)") MiB," \
       "media $(mib "$(json_get "$RUN/local/gen-base.json" bytes_by_kind media)") MiB," \
       "small files (NDJSON, transcripts, thumbnails) $(mib "$(( $(json_get "$RUN/local/gen-base.json" bytes_by_kind small-json) + $(json_get "$RUN/local/gen-base.json" bytes_by_kind small-text) + $(json_get "$RUN/local/gen-base.json" bytes_by_kind small-bin) ))") MiB"
  m="$RUN/local/gen-mutate.json"
  echo "- Change before the incremental backup (\`--mutate\`): $(mib "$(json_get "$m" mutation changed_bytes)") MiB written" \
       "($(awk -v c="$(json_get "$m" mutation changed_bytes)" -v b="${R[local.base_bytes]:-1}" 'BEGIN { printf "%.1f", 100 * c / b }') % of the data set):" \
       "$(json_get "$m" mutation appended_files) log files appended to ($(mib "$(json_get "$m" mutation appended_bytes)") MiB)," \
       "$(json_get "$m" mutation rewritten_files) files rewritten in place or whole ($(mib "$(( $(json_get "$m" mutation rewritten_bytes) + $(json_get "$m" mutation small_rewritten_bytes) ))") MiB)," \
       "$(json_get "$m" mutation new_files) new media files ($(mib "$(json_get "$m" mutation new_bytes)") MiB)," \
       "$(json_get "$m" mutation deleted_files) small files deleted, $(json_get "$m" mutation touched_files) files with only the mtime changed"
  echo "- Restore input (latest snapshot): ${R[local.mut_files]:-?} files, ${R[local.mut_bytes]:-?} bytes ($(mib "${R[local.mut_bytes]:-0}") MiB)"
  echo
  echo "## Tools and settings"
  echo
  echo "| Tool | Version | Settings |"
  echo "|---|---|---|"
  has_tool trireme && echo "| Trireme | $TRIREME_VERSION | \`trireme-agent keygen --key-file K\`; \`init --location URL --key-file K\`; \`backup --location URL --key-file K --source bench-data DATA\` (twice; the second run finds its parent snapshot); \`restore --location URL --key-file K latest --target OUT\`. The binary's default settings${TRIREME_DEFAULTS:-} (\`cargo build --release -p trireme-agent\`). |"
  has_tool restic && echo "| restic | $RESTIC_VERSION | \`restic init\` (default repository format \`stable\`: version $RESTIC_REPO_VERSION), \`restic backup data\` (run in the work dir; compression: default \`auto\`), \`restic restore latest --target OUT\`; RESTIC_PASSWORD; a fresh RESTIC_CACHE_DIR per target, kept between the two backups. |"
  has_tool borg-zstd && echo "| borg (zstd,3) | $BORG_VERSION | \`borg init -e repokey-blake2\`; \`borg create --compression zstd,3 REPO::full data\` then \`::incr\`; \`borg extract REPO::incr\` run inside OUT; BORG_PASSPHRASE; a fresh BORG_BASE_DIR (so a cold files cache for the full backup). |"
  has_tool borg-lz4 && echo "| borg (lz4, default) | $BORG_VERSION | as above but without \`--compression\` (borg's default, lz4). |"
  if ((S3)); then
    echo
    echo "S3 target: Garage (\`${GARAGE_VERSION:-version unknown}\`) started by \`deploy/dev/garage.sh start 1 DIR\` on this machine (it shares the 2 CPUs with the tool under test), bucket \`$S3_BUCKET\`, region \`garage\`, plain HTTP on 127.0.0.1."
    has_tool trireme && echo "Trireme: \`s3://$S3_BUCKET/trireme-bench?endpoint=…&region=garage&allow_http=true\` (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment)."
    has_tool restic && echo "restic: \`s3:http://127.0.0.1:PORT/$S3_BUCKET/restic\` (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION=garage)."
    echo "Repository size on S3 = sum of the object sizes under each tool's prefix (\`bench/s3-du.py\`)."
  fi
  echo
  echo "## Results: local directory"
  echo
  table local
  if ((S3)); then
    echo
    echo "## Results: S3 (Garage)"
    echo
    table s3
  fi
  echo
  echo "How to read: MB = 10^6 bytes. Full MB/s = full-backup input bytes / wall seconds; restore MB/s = restored bytes / wall seconds."
  echo "Wall time and peak RSS (max resident set, GNU time \`%M\`) are per command. The incremental backup follows the ~5 % change above."
  echo "Repo size is \`du -sb\` of the repository directory (local) or the object total under the tool's prefix (S3) after both backups."
  echo "\"Restore byte-identical\" compares sha256 of every file plus the directory list of the restored tree with the source."
  if ((${#FAILURES[@]})); then
    echo
    echo "## FAILURES"
    echo
    for f in "${FAILURES[@]}"; do echo "- $f"; done
  fi
  echo
  echo "## Raw measurements"
  echo
  echo '```tsv'
  printf 'target\ttool\tphase\twall_s\tmax_rss_kib\n'
  for target in local s3; do
    for tool in "${TOOLS[@]}"; do
      for phase in full incr restore; do
        k="$target.$tool.$phase"
        [[ -n ${R[$k.s]:-} ]] && printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$tool" "$phase" "${R[$k.s]}" "${R[$k.rss]:--}"
      done
      [[ -n ${R[$target.$tool.repo]:-} ]] && printf '%s\t%s\trepo_bytes\t%s\t-\n' "$target" "$tool" "${R[$target.$tool.repo]}"
    done
  done
  echo '```'
} >"$RESULTS"
log "wrote $RESULTS"
sed -n '/^## Results/,/^How to read/p' "$RESULTS" | grep -v '^How to read' >&2

if ((${#FAILURES[@]})); then
  log "FAILED steps:"
  for f in "${FAILURES[@]}"; do log "  $f"; done
  exit 1
fi
log "all steps succeeded; logs in $LOGDIR"
