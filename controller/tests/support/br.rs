//! A `br` stand-in for end-to-end tests of `tidb` sources, with the
//! behaviour that matters for chains: a "cluster" is a directory
//! (`<root>/clusters/<pd host>`); `backup full` copies all of it, or with
//! `--lastbackupts` only the files changed since that backup, and records
//! the full file list; `validate decode --field=end-version` prints the
//! backup TS; `restore full` rebuilds the target cluster from a full
//! backup, and applies an incremental only on top of exactly the backup it
//! starts after (it fails otherwise, as BR would leave a broken cluster),
//! deleting what the backup's file list no longer has. Restoring a chain
//! in order therefore reproduces the cluster as it was at that backup,
//! byte for byte, and a missing or misordered link fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The stand-in under `root`; the path of the `br` program.
pub fn install(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root.join("clusters")).unwrap();
    let br = root.join("br");
    let body = format!(
        r#"#!/bin/bash
set -euo pipefail
root={root}
storage=""; last=""; pd=""
for a in "$@"; do
  case "$a" in
    --storage=local://*) storage="${{a#--storage=local://}}" ;;
    --lastbackupts=*) last="${{a#--lastbackupts=}}" ;;
    --pd=*) pd="${{a#--pd=}}"; pd="${{pd%%:*}}" ;;
  esac
done
[ -n "$storage" ] || {{ echo "[error] --storage is required" >&2; exit 2; }}
cluster="$root/clusters/$pd"
case "$1 $2" in
  "backup full")
    [ -d "$cluster" ] || {{ echo "[error] no cluster at pd $pd" >&2; exit 1; }}
    ts=$(( $(cat "$root/ts" 2>/dev/null || echo 435000000000000000) + 1000 ))
    echo $ts > "$root/ts"
    mkdir -p "$storage/data" "$root/stamps"
    if [ -z "$last" ]; then
      cp -a "$cluster/." "$storage/data/"
    else
      [ -f "$root/stamps/$last" ] || {{ echo "[error] unknown lastbackupts $last" >&2; exit 1; }}
      (cd "$cluster" && find . -type f -newer "$root/stamps/$last" -exec cp -a --parents {{}} "$storage/data/" \;)
    fi
    touch "$root/stamps/$ts"
    (cd "$cluster" && find . -type f | sort) > "$storage/files"
    echo "ts=$ts last=$last" > "$storage/backupmeta"
    echo "[INFO] [\"Full Backup success summary\"] [BackupTS=$ts]"
    ;;
  "validate decode") sed -n 's/^ts=\([0-9]*\).*/\1/p' "$storage/backupmeta" ;;
  "restore full")
    ts=$(sed -n 's/^ts=\([0-9]*\).*/\1/p' "$storage/backupmeta")
    from=$(sed -n 's/.* last=\([0-9]*\)$/\1/p' "$storage/backupmeta")
    mkdir -p "$root/applied"
    if [ -z "$from" ]; then
      rm -rf "$cluster"; mkdir -p "$cluster"
    else
      at=$(cat "$root/applied/$pd" 2>/dev/null || echo none)
      [ "$at" = "$from" ] || {{ echo "[error] incremental backup $ts starts after $from but the cluster is at $at" >&2; exit 1; }}
    fi
    [ -d "$storage/data" ] && cp -a "$storage/data/." "$cluster/"
    (cd "$cluster" && find . -type f | sort | comm -23 - "$storage/files" | while read -r f; do rm -f "$f"; done)
    echo "$ts" > "$root/applied/$pd"
    echo "$ts" >> "$root/restored-$pd"
    ;;
  *) echo "unknown command $1 $2" >&2; exit 2 ;;
esac
"#,
        root = root.display()
    );
    std::fs::write(&br, body).unwrap();
    std::fs::set_permissions(&br, std::fs::Permissions::from_mode(0o755)).unwrap();
    br
}

/// The directory of the cluster whose PD host is `pd`.
pub fn cluster(root: &Path, pd: &str) -> PathBuf {
    root.join("clusters").join(pd)
}

/// `[[source]]` tables for the agent: a `tidb` source `name` on the
/// cluster `pd`.
pub fn source(name: &str, pd: &str, br: &Path, staging: &Path) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\nkind = \"tidb\"\npd = \"{pd}:2379\"\nstaging_dir = \"{}\"\nbr = \"{}\"\n",
        staging.display(),
        br.display()
    )
}
