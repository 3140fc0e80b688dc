//! The man pages the three binaries write (`man DIR`, clap_mangen): one
//! per command and subcommand, read back by the real `man` and checked by
//! `groff -k -ww` (UTF-8 input, warnings on).

mod support;

use std::process::Command;

use support::fleet::bin;

#[test]
fn every_binary_writes_man_pages_that_man_and_groff_read() {
    let tmp = tempfile::tempdir().unwrap();
    for (binary, page, says) in [
        ("trireme", "trireme-snapshots-hold.1", "--reason"),
        ("trireme", "trireme-restore.1", "--include"),
        ("trireme-agent", "trireme-agent-ls.1", "--recursive"),
        (
            "trireme-controller",
            "trireme-controller-check-config.1",
            "--config",
        ),
    ] {
        let dir = tmp.path().join(binary);
        let out = Command::new(bin(binary))
            .arg("man")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{binary} man: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dir.join(format!("{binary}.1")).is_file(), "{binary}.1");
        let path = dir.join(page);
        let text = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(&path)
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS") && text.contains(says),
            "{page}: {text}"
        );
        let lint = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            lint.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&lint.stderr)
        );
    }
    // One page per subcommand: as many as `--help` lists and more.
    let pages = std::fs::read_dir(tmp.path().join("trireme"))
        .unwrap()
        .count();
    assert!(pages > 40, "{pages}");
}
