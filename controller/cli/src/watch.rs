//! Following a job to its end (`jobs watch`, `backup run --wait`,
//! `restore --wait`) over the `WatchJob` stream.
//!
//! Three displays: a live progress bar on stderr when it is a terminal;
//! otherwise plain lines on stdout (on every state change, and at most every
//! [`PLAIN_EVERY`] while running); with `-o json`, every update as one JSON
//! object per line. At the end the final job is printed (as a listing; in
//! JSON the last line is already the final job), and a job that failed or
//! was cancelled is an error, so the exit code is 1.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use trireme_proto::v1::{GetJobRequest, JobInfo, JobState, WatchJobRequest};

use trireme_client::Controller;

use crate::output::{print_json, println, time, Format};
use crate::view;

/// Least time between two plain progress lines of a running job.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Follow job `id` until it ends and report how it ended.
///
/// # Errors
/// RPC errors; the job failing or being cancelled; Ctrl-C (the job goes on).
pub async fn watch(c: &mut Controller, format: Format, id: &str) -> anyhow::Result<()> {
    let mut stream = c
        .operator
        .watch_job(WatchJobRequest { id: id.to_string() })
        .await
        .map_err(|s| c.error(s))?
        .into_inner();
    let mut display = Display::new(format, id);
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(interrupted);
    let mut last: Option<JobInfo> = None;
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            () = &mut interrupted => {
                display.abandon();
                let id = last.as_ref().map_or(id, |j| j.id.as_str());
                bail!("stopped watching; job {id} goes on (`trireme jobs cancel {id}` stops it)");
            }
        };
        match next {
            Ok(Some(job)) => {
                display.update(&job)?;
                let done = view::is_final(job.state);
                last = Some(job);
                if done {
                    break;
                }
            }
            Ok(None) => break,
            Err(status) => {
                display.abandon();
                return Err(c.error(status));
            }
        }
    }
    let job = match last {
        Some(job) if view::is_final(job.state) => job,
        last => {
            // The stream ended before the job did (e.g. the controller
            // restarted): ask once where it is.
            let id = last.map_or_else(|| id.to_string(), |j| j.id);
            let job = c
                .operator
                .get_job(GetJobRequest { id: id.clone() })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            if !view::is_final(job.state) {
                display.abandon();
                bail!(
                    "the controller stopped reporting job {id}, which is still {}; \
                     run `trireme jobs watch {id}` again",
                    view::state_name(job.state)
                );
            }
            display.update(&job)?;
            job
        }
    };
    display.finish(&job)?;
    outcome(&job)
}

/// Ok for a job that succeeded, the error to print otherwise.
fn outcome(job: &JobInfo) -> anyhow::Result<()> {
    let why = if job.error_message.is_empty() {
        String::new()
    } else {
        format!(": {}", job.error_message)
    };
    match JobState::try_from(job.state) {
        Ok(JobState::Succeeded) => Ok(()),
        Ok(JobState::Cancelled) => {
            Err(trireme_client::Failure::JobFailed
                .wrap(anyhow!("job {} was cancelled{why}", job.id)))
        }
        _ => Err(trireme_client::Failure::JobFailed.wrap(anyhow!("job {} failed{why}", job.id))),
    }
}

/// Where updates go.
enum Display {
    Bar {
        bar: ProgressBar,
        with_total: bool,
    },
    Plain {
        last_state: i32,
        last_line: Option<Instant>,
    },
    Json,
}

impl Display {
    fn new(format: Format, id: &str) -> Self {
        match format {
            Format::Json => Display::Json,
            Format::Table if std::io::stderr().is_terminal() => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(spinner_style());
                bar.set_message(format!("job {id}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                Display::Bar {
                    bar,
                    with_total: false,
                }
            }
            Format::Table => Display::Plain {
                last_state: -1,
                last_line: None,
            },
        }
    }

    fn update(&mut self, job: &JobInfo) -> anyhow::Result<()> {
        match self {
            Display::Json => print_json(&view::job_json(job), true),
            Display::Bar { bar, with_total } => {
                bar.set_prefix(view::state_name(job.state));
                match &job.progress {
                    Some(p) => {
                        if p.bytes_total > 0 {
                            if !*with_total {
                                bar.set_style(bar_style());
                                *with_total = true;
                            }
                            bar.set_length(p.bytes_total);
                            bar.set_position(p.bytes_read.min(p.bytes_total));
                        }
                        bar.set_message(view::progress_text(p));
                    }
                    None => {
                        let agent = if job.agent.is_empty() {
                            "the agent"
                        } else {
                            job.agent.as_str()
                        };
                        let doing = match JobState::try_from(job.state) {
                            Ok(JobState::Queued) => format!(", waiting for {agent}"),
                            Ok(JobState::Running) => format!(", starting on {agent}"),
                            _ => String::new(),
                        };
                        bar.set_message(format!("{}{doing}", view::job_headline(job)));
                    }
                }
                Ok(())
            }
            Display::Plain {
                last_state,
                last_line,
            } => {
                let changed = *last_state != job.state;
                let due =
                    job.progress.is_some() && last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
                *last_state = job.state;
                // The final state is printed by `finish`.
                if view::is_final(job.state) || !(changed || due) {
                    return Ok(());
                }
                *last_line = Some(Instant::now());
                let detail = job
                    .progress
                    .as_ref()
                    .map(|p| format!("  {}", view::progress_text(p)))
                    .unwrap_or_default();
                println(&format!(
                    "{}  {}{detail}",
                    time(chrono::Utc::now().timestamp()),
                    view::state_name(job.state)
                ))
            }
        }
    }

    /// Stop drawing, leaving the last state on screen.
    fn abandon(&self) {
        if let Display::Bar { bar, .. } = self {
            bar.abandon();
        }
    }

    /// Clear the bar and print the final job.
    fn finish(&self, job: &JobInfo) -> anyhow::Result<()> {
        match self {
            Display::Json => Ok(()),
            Display::Bar { bar, .. } => {
                bar.finish_and_clear();
                println(&view::job_fields(job))
            }
            Display::Plain { .. } => println(&view::job_fields(job)),
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:9} {elapsed:>4} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:9} {elapsed:>4} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        let mut j = JobInfo {
            id: "j1".into(),
            ..Default::default()
        };
        j.set_state(JobState::Succeeded);
        assert!(outcome(&j).is_ok());
        j.set_state(JobState::Failed);
        j.error_message = "disk full".into();
        assert_eq!(
            outcome(&j).unwrap_err().to_string(),
            "job j1 failed: disk full"
        );
        j.set_state(JobState::Cancelled);
        j.error_message.clear();
        assert_eq!(outcome(&j).unwrap_err().to_string(), "job j1 was cancelled");
        // Templates parse.
        assert!(
            ProgressStyle::with_template("{spinner} {prefix:9} {elapsed:>4} [{bar:30}] {msg}")
                .is_ok()
        );
    }
}
