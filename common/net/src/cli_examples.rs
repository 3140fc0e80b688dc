//! Examples for every command of the three binaries, shown at the end of
//! its `--help` (and in its man page, which clap_mangen renders from the
//! same text). Each binary keeps one table, command path → example lines
//! (`""` is the binary itself, `"backup run"` a subcommand), attaches it
//! with [`with_examples`], and has a unit test calling [`check`]: every
//! command needs an example, and every example line must parse as that
//! very command with the binary's real flags. [`write_man_pages`] writes
//! them as each page's EXAMPLES section, one line each.

use std::io::Write as _;
use std::path::Path;

use clap::Command;

/// The heading above the examples.
pub const HEADING: &str = "Examples:";

/// `cmd` with each command's examples from `examples` (path → lines) as its
/// `after_help` and `after_long_help`.
pub fn with_examples(cmd: Command, examples: &[(&str, &str)]) -> Command {
    apply(cmd, "", examples)
}

fn apply(mut cmd: Command, path: &str, examples: &[(&str, &str)]) -> Command {
    if let Some((_, lines)) = examples.iter().find(|(p, _)| *p == path) {
        let text = render(lines);
        cmd = cmd.after_help(text.clone()).after_long_help(text);
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        let sub = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |s| apply(s, &sub, examples));
    }
    cmd
}

/// The text under [`HEADING`]: each line indented by two spaces.
fn render(lines: &str) -> String {
    let mut out = String::from(HEADING);
    for l in lines.trim().lines() {
        out.push_str("\n  ");
        out.push_str(l.trim());
    }
    out
}

/// Write the man page of `cmd` and of every (visible) subcommand into `dir`
/// (clap_mangen, as `clap_mangen::generate_to`), each with an EXAMPLES
/// section of its lines from `examples` kept line by line; how many pages.
///
/// # Errors
/// When a page cannot be written.
pub fn write_man_pages(
    cmd: Command,
    dir: &Path,
    examples: &[(&str, &str)],
) -> std::io::Result<usize> {
    fn one(
        cmd: &Command,
        path: &str,
        dir: &Path,
        examples: &[(&str, &str)],
    ) -> std::io::Result<usize> {
        let mut n = 0;
        for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let p = if path.is_empty() {
                s.get_name().to_string()
            } else {
                format!("{path} {}", s.get_name())
            };
            n += one(s, &p, dir, examples)?;
        }
        // clap_mangen would fill the help's examples into one paragraph.
        let plain = cmd
            .clone()
            .after_help(None::<&str>)
            .after_long_help(None::<&str>);
        let man = clap_mangen::Man::new(plain);
        let mut page = Vec::new();
        man.render(&mut page)?;
        let mut page = String::from_utf8_lossy(&page).into_owned();
        if let Some((_, lines)) = examples.iter().find(|(p, _)| *p == path) {
            let section = roff_examples(lines);
            match page.find("\n.SH VERSION") {
                Some(at) => page.insert_str(at + 1, &section),
                None => page.push_str(&section),
            }
        }
        let mut f = std::fs::File::create(dir.join(man.get_filename()))?;
        f.write_all(page.as_bytes())?;
        Ok(n + 1)
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    one(&cmd, "", dir, examples)
}

/// An EXAMPLES section: the lines unfilled, escaped for roff.
fn roff_examples(lines: &str) -> String {
    let mut out = String::from(".SH EXAMPLES\n.nf\n");
    for l in lines.trim().lines() {
        let l = l.trim().replace('\\', "\\e").replace('-', "\\-");
        if l.starts_with('.') || l.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str(".fi\n");
    out
}

/// Split an example line into words as a POSIX shell would for the simple
/// quoting examples use (`'…'`, `"…"`); a trailing `# comment` and anything
/// from a pipe or redirection (`|`, `>`, `<`) on are left out.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '#' | '|' | '>' | '<') if !in_word => break,
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// What is wrong with `examples` for `cmd` (a binary's full command, with
/// its examples attached or not): commands without an example, and example
/// lines that do not parse as the command they illustrate (or, for a
/// command with subcommands, one of them). Empty when all
/// is well. (An entry for a command this build does not have, e.g. one
/// behind a cargo feature that is off, is not attached and not a problem.)
pub fn check(cmd: &Command, examples: &[(&str, &str)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut cmd = cmd.clone();
    cmd.build();
    let bin = cmd.get_name().to_string();
    let mut paths = Vec::new();
    walk(&cmd, "", &mut paths);
    for p in &paths {
        let lines: Vec<&str> = examples
            .iter()
            .filter(|(e, _)| e == p)
            .flat_map(|(_, l)| l.lines())
            .map(str::trim)
            .filter(|l| l.starts_with(&format!("{bin} ")) || *l == bin)
            .collect();
        if lines.is_empty() {
            problems.push(format!(
                "`{bin} {p}` has no example: add a line starting with `{bin}` to its entry"
            ));
        }
        for line in lines {
            match cmd.clone().try_get_matches_from(words(line)) {
                Ok(m) => {
                    let mut got = Vec::new();
                    let mut cur = &m;
                    while let Some((name, sub)) = cur.subcommand() {
                        got.push(name.to_string());
                        cur = sub;
                    }
                    let got = got.join(" ");
                    // A group's example may run one of its subcommands.
                    let inside = p.is_empty() || got == *p || got.starts_with(&format!("{p} "));
                    if !inside {
                        problems.push(format!(
                            "an example of `{bin} {p}` runs `{bin} {got}` instead: {line}"
                        ));
                    }
                }
                Err(e) => problems.push(format!(
                    "an example of `{bin} {p}` does not parse: {line}: {}",
                    e.to_string().lines().next().unwrap_or_default()
                )),
            }
        }
    }
    problems
}

/// Every command path below `cmd` (`""` for `cmd` itself), clap's own
/// `help` subcommand left out.
fn walk(cmd: &Command, path: &str, out: &mut Vec<String>) {
    out.push(path.to_string());
    for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let p = if path.is_empty() {
            s.get_name().to_string()
        } else {
            format!("{path} {}", s.get_name())
        };
        walk(s, &p, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn demo() -> Command {
        Command::new("demo")
            .subcommand_required(true)
            .subcommand(
                Command::new("run")
                    .arg(Arg::new("wait").long("wait").action(ArgAction::SetTrue))
                    .arg(Arg::new("what").required(true)),
            )
            .subcommand(Command::new("ls"))
    }

    #[test]
    fn words_follow_simple_shell_quoting() {
        assert_eq!(
            words("demo find '*.zip' --since 7d   # each version"),
            ["demo", "find", "*.zip", "--since", "7d"]
        );
        assert_eq!(
            words("demo restore x --stdout | psql -d app"),
            ["demo", "restore", "x", "--stdout"]
        );
        assert_eq!(words("demo a\"b c\"d"), ["demo", "ab cd"]);
        assert_eq!(
            words("demo drill show 01 --html > d.html"),
            ["demo", "drill", "show", "01", "--html"]
        );
    }

    #[test]
    fn every_command_needs_an_example_that_parses_as_itself() {
        let good: &[(&str, &str)] = &[
            ("", "demo ls"),
            ("run", "# now\ndemo run web --wait"),
            ("ls", "demo ls"),
        ];
        assert_eq!(check(&demo(), good), Vec::<String>::new());
        let bad: &[(&str, &str)] = &[
            ("", "demo ls"),
            ("run", "demo run --wait\ndemo ls"),
            ("lls", "demo ls"),
        ];
        let p = check(&demo(), bad);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p[0].starts_with("an example of `demo run` does not parse: demo run --wait"),
            "{}",
            p[0]
        );
        assert!(
            p[1].starts_with("an example of `demo run` runs `demo ls` instead"),
            "{}",
            p[1]
        );
        assert!(p[2].starts_with("`demo ls` has no example"), "{}", p[2]);
    }

    #[test]
    fn man_pages_have_the_examples_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let n = write_man_pages(
            demo().version("1.0").propagate_version(true),
            dir.path(),
            &[("run", "# first\ndemo run web --wait\n.hidden")],
        )
        .unwrap();
        assert_eq!(n, 3);
        let page = std::fs::read_to_string(dir.path().join("demo-run.1")).unwrap();
        assert!(
            page.contains(
                ".SH EXAMPLES\n.nf\n# first\ndemo run web \\-\\-wait\n\\&.hidden\n.fi\n.SH VERSION"
            ),
            "{page}"
        );
        let root = std::fs::read_to_string(dir.path().join("demo.1")).unwrap();
        assert!(!root.contains("EXAMPLES"), "{root}");
    }

    #[test]
    fn examples_end_the_help() {
        let mut cmd = with_examples(demo(), &[("run", "demo run web --wait")]);
        let help = cmd
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.ends_with("Examples:\n  demo run web --wait\n"),
            "{help}"
        );
    }
}
