//! External programs as byte streams: a dump tool's stdout read by the
//! backup pipeline, a restore tool's stdin fed by a restore. The exit status
//! is part of the stream: a tool that fails makes the read fail, so the
//! backup writes no snapshot, and a restore that fails midway kills the tool
//! before it sees the end of its input.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};

/// Lines of stderr kept for error messages.
const TAIL_LINES: usize = 20;

/// A program to run: argv, extra environment, and a name for messages.
#[derive(Debug, Clone)]
pub struct Program {
    /// What the program is for, e.g. `source pg-app: backup command`.
    pub what: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the agent's).
    pub dir: Option<PathBuf>,
}

impl Program {
    /// `what` runs `argv`.
    pub fn new(what: impl Into<String>, argv: Vec<String>) -> Self {
        Program {
            what: what.into(),
            argv,
            env: BTreeMap::new(),
            dir: None,
        }
    }

    fn command(&self) -> Result<Command> {
        let (prog, args) = self
            .argv
            .split_first()
            .ok_or_else(|| anyhow!("{}: the command is empty", self.what))?;
        let mut c = Command::new(prog);
        c.args(args).envs(&self.env);
        // Its own process group, so that stopping it (see `kill_tree`)
        // stops what it started too (a script's pipeline, a wrapper's tool).
        c.process_group(0);
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        Ok(c)
    }

    fn spawn(&self, stdin: Stdio, stdout: Stdio) -> Result<Child> {
        let mut c = self.command()?;
        c.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
        c.spawn().map_err(|e| self.spawn_error(&e))
    }

    fn spawn_error(&self, e: &std::io::Error) -> anyhow::Error {
        let prog = &self.argv[0];
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!(
                "{}: cannot start {prog:?}: not found (install it on this host or give its full path in the source's configuration)",
                self.what
            )
        } else {
            anyhow!("{}: cannot start {prog:?}: {e}", self.what)
        }
    }

    /// Run to completion with no input; returns stdout. A non-zero exit is
    /// an error carrying the end of stderr.
    pub fn output(&self) -> Result<String> {
        let child = self.spawn(Stdio::null(), Stdio::piped())?;
        let out = child
            .wait_with_output()
            .with_context(|| format!("{}: waiting for {:?}", self.what, self.argv[0]))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "{}",
                self.failure(out.status, &tail_of(stderr.lines().map(str::to_string)))
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run to completion; returns stdout and stderr together (some tools,
    /// like BR, report on either). A non-zero exit is an error.
    pub fn output_all(&self) -> Result<(String, String)> {
        let child = self.spawn(Stdio::null(), Stdio::piped())?;
        let out = child
            .wait_with_output()
            .with_context(|| format!("{}: waiting for {:?}", self.what, self.argv[0]))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            let lines = stderr.lines().chain(stdout.lines()).map(str::to_string);
            bail!("{}", self.failure(out.status, &tail_of(lines)));
        }
        Ok((stdout, stderr))
    }

    fn failure(&self, status: ExitStatus, tail: &str) -> String {
        let status = match status.code() {
            Some(c) => format!("exit status {c}"),
            None => format!("{status}"),
        };
        if tail.is_empty() {
            format!("{}: {:?} failed ({status})", self.what, self.argv[0])
        } else {
            format!(
                "{}: {:?} failed ({status}): {tail}",
                self.what, self.argv[0]
            )
        }
    }

    /// Start the program with its stdout as a stream. `on_line` sees each
    /// stderr line (for tools that report counts there).
    pub fn reader(&self, on_line: Option<LineHook>) -> Result<ChildReader> {
        let mut child = self.spawn(Stdio::null(), Stdio::piped())?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = Stderr::collect(&mut child, on_line);
        Ok(ChildReader {
            program: self.clone(),
            child: Arc::new(Mutex::new(Some(child))),
            stdout,
            stderr: Some(stderr),
        })
    }

    /// Start the program with a stream as its stdin. Write exactly
    /// `expected` bytes, then [`ChildWriter::finish`]; dropped early, the
    /// program is killed before it can take a short input for a whole one.
    pub fn writer(&self, expected: u64, on_line: Option<LineHook>) -> Result<ChildWriter> {
        let mut child = self.spawn(Stdio::piped(), Stdio::piped())?;
        let stdin = child.stdin.take().expect("piped");
        // Drain stdout too, so a chatty tool never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped");
        let drain = std::thread::spawn(move || {
            let _ = std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink());
        });
        let stderr = Stderr::collect(&mut child, on_line);
        let state = Arc::new(Mutex::new(WriterState {
            child: Some(child),
            stderr: Some(stderr),
            drain: Some(drain),
            written: 0,
            expected,
        }));
        Ok(ChildWriter {
            program: self.clone(),
            stdin: Some(stdin),
            state,
        })
    }
}

/// Called with each stderr line of a running program.
pub type LineHook = Box<dyn FnMut(&str) + Send>;

/// The stderr of a running program, read on its own thread.
struct Stderr {
    thread: JoinHandle<Vec<String>>,
}

impl Stderr {
    fn collect(child: &mut Child, mut on_line: Option<LineHook>) -> Self {
        let err = child.stderr.take().expect("piped");
        let thread = std::thread::spawn(move || {
            let mut tail: std::collections::VecDeque<String> = Default::default();
            let mut r = BufReader::new(err);
            let mut line = Vec::new();
            while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                line.clear();
                if let Some(f) = on_line.as_mut() {
                    f(&text);
                }
                if text.is_empty() {
                    continue;
                }
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
            tail.into()
        });
        Stderr { thread }
    }

    fn tail(self) -> String {
        tail_of(self.thread.join().unwrap_or_default().into_iter())
    }
}

/// Kill `child` and whatever it started that is still in its process group
/// (each program runs in its own, see [`Program`]): a cancelled or failed
/// job leaves no dump or restore tool of its own running. `child` must not
/// have been waited for (its pid, the group's id, is still its own).
fn kill_tree(child: &mut Child) {
    use rustix::process::{kill_process_group, Pid, Signal};
    let group = Pid::from_child(child);
    if group != Pid::INIT {
        let _ = kill_process_group(group, Signal::KILL);
    }
    let _ = child.kill();
}

/// The last lines, joined, at most 1,000 characters.
fn tail_of(lines: impl Iterator<Item = String>) -> String {
    let lines: Vec<String> = lines.filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    let text = lines[start..].join(" | ");
    let n = text.chars().count();
    if n > 1000 {
        format!("…{}", text.chars().skip(n - 1000).collect::<String>())
    } else {
        text
    }
}

/// A program's stdout; reading past its end waits for the program and
/// fails when it exited non-zero.
pub struct ChildReader {
    program: Program,
    child: Arc<Mutex<Option<Child>>>,
    stdout: ChildStdout,
    stderr: Option<Stderr>,
}

/// Kills a [`ChildReader`]'s program when dropped, unless it has ended: the
/// backup that owns it was cancelled or timed out while the reader thread
/// may be blocked on a program that writes nothing.
pub struct KillOnDrop(Arc<Mutex<Option<Child>>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            kill_tree(c);
        }
    }
}

impl ChildReader {
    /// A guard that kills the program when dropped (see [`KillOnDrop`]).
    pub fn kill_on_drop(&self) -> KillOnDrop {
        KillOnDrop(self.child.clone())
    }
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(0);
        };
        let status = child.wait()?;
        let tail = self.stderr.take().map(Stderr::tail).unwrap_or_default();
        if status.success() {
            Ok(0)
        } else {
            Err(std::io::Error::other(self.program.failure(status, &tail)))
        }
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // Stopped early (a failed upload, a cancel): the tool must not
            // run on unattended.
            kill_tree(&mut c);
            let _ = c.wait();
        }
    }
}

struct WriterState {
    child: Option<Child>,
    stderr: Option<Stderr>,
    drain: Option<JoinHandle<()>>,
    written: u64,
    expected: u64,
}

/// A program's stdin. See [`Program::writer`].
pub struct ChildWriter {
    program: Program,
    stdin: Option<ChildStdin>,
    state: Arc<Mutex<WriterState>>,
}

/// Waits for a [`ChildWriter`]'s program after its input is complete.
#[derive(Clone)]
pub struct WriterHandle {
    program: Program,
    state: Arc<Mutex<WriterState>>,
}

impl ChildWriter {
    /// A handle to wait for the program once the writer is gone.
    pub fn handle(&self) -> WriterHandle {
        WriterHandle {
            program: self.program.clone(),
            state: self.state.clone(),
        }
    }
}

impl Write for ChildWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("closed"))?;
        let n = stdin.write(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::io::Error::other(format!(
                    "{}: {:?} stopped reading its input (see its exit status below)",
                    self.program.what, self.program.argv[0]
                ))
            } else {
                e
            }
        })?;
        self.state.lock().unwrap_or_else(|e| e.into_inner()).written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for ChildWriter {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.written != st.expected {
            // Kill before closing stdin: a short input must not look complete.
            if let Some(c) = st.child.as_mut() {
                kill_tree(c);
            }
        }
        drop(self.stdin.take());
    }
}

impl WriterHandle {
    /// Wait for the program; an error if it was given less than its whole
    /// input or exited non-zero.
    pub fn finish(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = st.child.take() else {
            bail!("{}: already finished", self.program.what);
        };
        let status = child.wait().with_context(|| {
            format!(
                "{}: waiting for {:?}",
                self.program.what, self.program.argv[0]
            )
        })?;
        if let Some(d) = st.drain.take() {
            let _ = d.join();
        }
        let tail = st.stderr.take().map(Stderr::tail).unwrap_or_default();
        if st.written != st.expected {
            if status.code().is_some() {
                // It exited by itself before taking all its input.
                bail!(
                    "{} (after taking {} of {} bytes)",
                    self.program.failure(status, &tail),
                    st.written,
                    st.expected
                );
            }
            bail!(
                "{}: stopped after {} of {} bytes; {:?} was killed so it could not take a partial input for a whole one",
                self.program.what,
                st.written,
                st.expected,
                self.program.argv[0]
            );
        }
        if !status.success() {
            bail!("{}", self.program.failure(status, &tail));
        }
        Ok(())
    }
}

impl Drop for WriterState {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_tree(&mut c);
            let _ = c.wait();
        }
    }
}

/// Run a hook (argv) with a timeout, with `TRIREME_SOURCE` set; its
/// failure names the hook and shows the end of its stderr.
///
/// # Errors
/// The hook could not start, failed or ran too long (it is killed then).
pub async fn run_hook(
    argv: &[String],
    which: &str,
    source: &str,
    timeout: std::time::Duration,
) -> Result<()> {
    let Some((prog, args)) = argv.split_first() else {
        return Ok(());
    };
    let what = format!("source {source}: {which}");
    let child = tokio::process::Command::new(prog)
        .args(args)
        .env("TRIREME_SOURCE", source)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Program::new(what.clone(), argv.to_vec()).spawn_error(&e))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            anyhow!(
                "{what} {prog:?} did not finish within {} (killed)",
                humantime::format_duration(timeout)
            )
        })?
        .with_context(|| format!("{what} {prog:?}"))?;
    if !out.status.success() {
        let p = Program::new(what, argv.to_vec());
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{}",
            p.failure(out.status, &tail_of(err.lines().map(str::to_string)))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(what: &str, script: &str) -> Program {
        Program::new(what, vec!["sh".into(), "-c".into(), script.into()])
    }

    #[test]
    fn a_reader_fails_when_the_program_fails() {
        let mut out = Vec::new();
        let mut r = sh(
            "dump",
            "printf hello; echo 'password authentication failed' >&2; exit 3",
        )
        .reader(None)
        .unwrap();
        let e = r.read_to_end(&mut out).unwrap_err().to_string();
        assert_eq!(out, b"hello");
        assert!(e.contains("exit status 3"), "{e}");
        assert!(e.contains("password authentication failed"), "{e}");
    }

    #[test]
    fn a_reader_sees_stderr_lines_and_succeeds() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut r = sh(
            "dump",
            "echo 'done dumping a.b (3 documents)' >&2; printf ok",
        )
        .reader(Some(Box::new(move |l| {
            s2.lock().unwrap().push(l.to_string())
        })))
        .unwrap();
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "ok");
        assert_eq!(seen.lock().unwrap()[0], "done dumping a.b (3 documents)");
    }

    #[test]
    fn a_missing_program_says_so() {
        let e = Program::new("source x: backup command", vec!["no-such-tool-xyz".into()])
            .reader(None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("not found") && e.contains("no-such-tool-xyz"),
            "{e}"
        );
    }

    #[test]
    fn a_short_input_kills_the_writer_program() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("applied");
        let p = sh(
            "restore",
            &format!("cat >/dev/null; touch {}", marker.display()),
        );
        let mut w = p.writer(10, None).unwrap();
        let h = w.handle();
        w.write_all(b"12345").unwrap();
        drop(w);
        let e = h.finish().unwrap_err().to_string();
        assert!(e.contains("5 of 10 bytes"), "{e}");
        assert!(
            !marker.exists(),
            "the program must not see a clean end of input"
        );

        let mut w = p.writer(5, None).unwrap();
        let h = w.handle();
        w.write_all(b"12345").unwrap();
        drop(w);
        h.finish().unwrap();
        assert!(marker.exists());
    }

    #[test]
    fn a_failing_writer_program_is_reported() {
        let p = sh(
            "restore",
            "cat >/dev/null; echo 'relation exists' >&2; exit 1",
        );
        let mut w = p.writer(3, None).unwrap();
        let h = w.handle();
        w.write_all(b"abc").unwrap();
        drop(w);
        let e = h.finish().unwrap_err().to_string();
        assert!(
            e.contains("relation exists") && e.contains("exit status 1"),
            "{e}"
        );
    }
}
