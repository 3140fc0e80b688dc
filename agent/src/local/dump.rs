//! Local mode's `dump`: one file of a snapshot to standard output, or a
//! directory's subtree as a tar archive (the engine is
//! `trireme_common::dump`).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use trireme_common::browse::display_path;
use trireme_common::manifest::EntryKind;

use super::{human_bytes, open, RepoArgs};

/// Arguments of `trireme-agent dump`.
#[derive(Args)]
pub struct DumpArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The snapshot: an id (or unique prefix), or `latest` with --source.
    snapshot: String,
    /// The file or directory, from the snapshot's root. A directory comes
    /// as a tar archive whose entries are named from the snapshot's root
    /// (`etc/app/x`), with modes, numeric owners, mtimes and links.
    path: String,
    /// Resolve `latest` among this source's snapshots.
    #[arg(long)]
    source: Option<String>,
}

/// `trireme-agent dump`.
///
/// # Errors
/// An unknown snapshot or path, a link, a tar archive for a terminal,
/// storage and key errors, standard output closed.
pub async fn dump(a: DumpArgs) -> Result<ExitCode> {
    let repo = open(&a.repo).await?;
    let snap = repo.find_snapshot(&a.snapshot, a.source.as_deref()).await?;
    let ix = repo.load_index().await?;
    let entry = ix.entry_at(&snap, &a.path).await?;
    if entry.kind == EntryKind::Dir && std::io::stdout().is_terminal() {
        bail!(
            "{} is a directory: its dump is a tar archive, and standard output is a terminal; redirect it (`> dump.tar`) or pipe it (`| tar -xf - -C DIR`)",
            display_path(&entry)
        );
    }
    let shown = display_path(&entry);
    let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    let s = ix.dump(&snap, entry, out).await?;
    if s.tar {
        eprintln!(
            "dumped {shown} of snapshot {} as a tar archive: {} entries, {} of file data, {} written",
            snap.id.short(),
            s.entries,
            human_bytes(s.file_bytes),
            human_bytes(s.written)
        );
    }
    Ok(ExitCode::SUCCESS)
}
