//! The man pages the three binaries write (`man DIR`, clap_mangen): one
//! per command and subcommand, read back by the real `man` and checked by
//! `groff -k -ww` (UTF-8 input, warnings on), each with its examples; and
//! the examples at the end of `--help`.

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

    // Every page of every binary has its examples, line by line (each
    // binary's unit test parses them with its real flags).
    for binary in ["trireme", "trireme-agent", "trireme-controller"] {
        for page in std::fs::read_dir(tmp.path().join(binary)).unwrap() {
            let path = page.unwrap().path();
            let roff = std::fs::read_to_string(&path).unwrap();
            let section = roff
                .split_once(".SH EXAMPLES\n.nf\n")
                .and_then(|(_, rest)| rest.split_once(".fi\n"))
                .map(|(lines, _)| lines)
                .unwrap_or_else(|| panic!("{}: no EXAMPLES section", path.display()));
            // roff escapes the hyphens: trireme\-agent.
            let name = binary.replace('-', "\\-");
            assert!(
                section.lines().any(|l| l.starts_with(&name)),
                "{}: {section}",
                path.display()
            );
        }
    }
    let dir = tmp.path().join("trireme");
    let text = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(dir.join("trireme-backup-run.1"))
        .env("MANWIDTH", "120")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let examples = text.split_once("EXAMPLES").map(|(_, e)| e).unwrap_or("");
    assert!(
        examples.contains("\n       trireme backup run web-1/uploads --wait\n")
            && examples.contains(
                "\n       trireme backup run db-1/postgres --full --tag before-upgrade\n"
            ),
        "one example per line, ASCII hyphens: {text}"
    );
}

/// `--help` (and `-h`) of a few commands ends with examples for that very
/// command.
#[test]
fn help_ends_with_examples() {
    for (args, want) in [
        (
            &["trireme", "backup", "run", "--help"][..],
            "trireme backup run web-1/uploads --wait",
        ),
        (
            &["trireme", "snapshots", "hold", "-h"][..],
            "trireme snapshots hold 3090544c --reason 'case 4711' --until 90d",
        ),
        (&["trireme", "--help"][..], "trireme status"),
        (
            &["trireme-agent", "restore", "--help"][..],
            "trireme-agent restore latest --source etc --target /srv/restore/etc",
        ),
        (
            &["trireme-controller", "key", "rotate", "--help"][..],
            "trireme-controller key rotate --config /etc/trireme/controller.toml --new-config /etc/trireme/controller-2027.toml",
        ),
    ] {
        let out = Command::new(bin(args[0])).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let examples = text
            .split_once("\nExamples:\n")
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("{args:?}: no examples in {text}"));
        assert!(
            examples.lines().any(|l| l.trim().starts_with(want)),
            "{args:?}: {examples}"
        );
    }
}
