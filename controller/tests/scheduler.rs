//! The scheduler driven by a simulated clock across days, through a real
//! catalog on disk, with simulated agents and controller restarts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use tempfile::TempDir;
use trireme_common::Id;
use trireme_controller::jobs::{self, JobEvent, JobState, Trigger};
use trireme_controller::lifecycle::{self, reconcile_after_restart, update_job, RESTART_REASON};
use trireme_controller::policy::{apply_policies, parse_policies, read_policy_file};
use trireme_controller::scheduler::{Action, Clock, LoopOptions, ManualClock, Tick};
use trireme_controller::sources::SourceRecord;
use trireme_controller::{BackupMode, Catalog, Job, JobId, Scheduler, SourceId};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const AGENT: &str = "host-a";

/// A controller with a catalog in a temp dir, a manual clock and one agent
/// whose sources are those of `policies`.
struct Sim {
    dir: TempDir,
    clock: Arc<ManualClock>,
    sched: Option<Scheduler>,
}

impl Sim {
    fn new(start: &str, policies: &str) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(t(start)));
        let catalog = Catalog::open(dir.path()).unwrap();
        let ps = parse_policies("policies.toml", policies).unwrap();
        let sources: Vec<(String, SourceRecord)> = ps
            .iter()
            .map(|p| {
                (
                    p.source.name.clone(),
                    SourceRecord {
                        kind: "volume".into(),
                        details: Default::default(),
                        last_seen: clock.now(),
                        drill_rank: None,
                    },
                )
            })
            .collect();
        catalog
            .register_agent(AGENT, AGENT, "test", &sources, clock.now())
            .unwrap();
        apply_policies(&catalog, &ps, "policies.toml", clock.now()).unwrap();
        let sched = Scheduler::new(catalog, clock.clone());
        Sim {
            dir,
            clock,
            sched: Some(sched),
        }
    }

    fn sched(&self) -> &Scheduler {
        self.sched.as_ref().unwrap()
    }

    fn catalog(&self) -> &Catalog {
        self.sched().catalog()
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Simulated controller restart: everything dropped, catalog reopened.
    fn restart(&mut self) {
        self.sched = None;
        let catalog = Catalog::open(self.dir.path()).unwrap();
        self.sched = Some(Scheduler::new(catalog, self.clock.clone()));
    }

    fn tick(&self) -> Tick {
        let tick = self.sched().tick().unwrap();
        assert!(tick.errors.is_empty(), "{:?}", tick.errors);
        self.check_one_unfinished_job_per_source();
        tick
    }

    /// Tick every `step` until `end` (inclusive), handing each queued job
    /// to `agent`; returns every action.
    fn run_until(
        &self,
        end: DateTime<Utc>,
        step: Duration,
        agent: &mut dyn FnMut(&Sim, &Job),
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        while self.now() <= end {
            for a in self.tick().actions {
                if let Action::Queued(job) = &a {
                    agent(self, job);
                }
                actions.push(a);
            }
            self.clock.advance(step);
        }
        actions
    }

    fn event(&self, id: &JobId, e: JobEvent) -> lifecycle::Updated {
        let u = update_job(self.catalog(), id, &e, self.now()).unwrap();
        self.sched().wake();
        u
    }

    fn start(&self, job: &Job) {
        self.event(
            &job.id,
            JobEvent::Assign {
                agent: AGENT.into(),
            },
        );
        self.event(
            &job.id,
            JobEvent::Start {
                agent: AGENT.into(),
            },
        );
    }

    fn succeed(&self, job: &Job) {
        self.event(
            &job.id,
            JobEvent::Succeed {
                agent: AGENT.into(),
                snapshot: Id([7; 32]),
            },
        );
    }

    fn fail(&self, job: &Job, reason: &str) -> lifecycle::Updated {
        self.event(
            &job.id,
            JobEvent::Fail {
                agent: Some(AGENT.into()),
                reason: reason.into(),
            },
        )
    }

    fn check_one_unfinished_job_per_source(&self) {
        let mut seen = HashSet::new();
        for j in self.catalog().jobs().values().unwrap() {
            if !j.state.is_terminal() {
                assert!(
                    seen.insert(j.source.clone()),
                    "two unfinished jobs of {}",
                    j.source
                );
            }
        }
    }

    fn all_jobs(&self) -> Vec<Job> {
        self.catalog().jobs().values().unwrap()
    }
}

/// The agent finishes every job at once.
fn instant_success(sim: &Sim, job: &Job) {
    sim.start(job);
    sim.succeed(job);
}

fn queued(actions: &[Action]) -> Vec<&Job> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Queued(j) => Some(&**j),
            Action::Skipped { .. } => None,
        })
        .collect()
}

const DAILY: &str = r#"
[[policy]]
source = "host-a/redis"
schedule = "0 2 * * *"
retention = "daily-30"
"#;

#[test]
fn fires_exactly_at_cron_times() {
    let sim = Sim::new(
        "2025-03-01T00:00:00Z",
        r#"
[[policy]]
source = "host-a/redis"
schedule = "0 2 * * *"
retention = "daily-30"

[[policy]]
source = "host-a/kafka"
schedule = "30 */6 * * MON-FRI"
timezone = "Europe/Paris"
retention = "daily-30"
"#,
    );
    let actions = sim.run_until(
        t("2025-03-04T23:59:00Z"),
        Duration::minutes(1),
        &mut instant_success,
    );
    let times = |name: &str| -> Vec<DateTime<Utc>> {
        queued(&actions)
            .into_iter()
            .filter(|j| j.source.name == name)
            .map(|j| {
                assert_eq!(j.created, j.slot(), "fired at its slot");
                assert!(matches!(j.trigger, Trigger::Schedule { missed: 0, .. }));
                j.created
            })
            .collect()
    };
    let want: Vec<_> = (1..=4)
        .map(|d| t(&format!("2025-03-0{d}T02:00:00Z")))
        .collect();
    assert_eq!(times("redis"), want);
    // 2025-03-01/02 is a weekend; Paris is UTC+1 in March: Monday 00:30 in
    // Paris is Sunday 23:30 UTC.
    let kafka = times("kafka");
    assert_eq!(
        kafka,
        [
            "2025-03-02T23:30:00Z",
            "2025-03-03T05:30:00Z",
            "2025-03-03T11:30:00Z",
            "2025-03-03T17:30:00Z",
            "2025-03-03T23:30:00Z",
            "2025-03-04T05:30:00Z",
            "2025-03-04T11:30:00Z",
            "2025-03-04T17:30:00Z",
            "2025-03-04T23:30:00Z",
        ]
        .map(t)
    );
    assert!(actions.iter().all(|a| matches!(a, Action::Queued(_))));
}

#[test]
fn jumping_to_the_next_wake_fires_on_time() {
    let sim = Sim::new("2025-03-01T00:00:00Z", DAILY);
    let mut fired = Vec::new();
    for _ in 0..5 {
        let tick = sim.tick();
        for j in queued(&tick.actions) {
            instant_success(&sim, j);
            fired.push(j.created);
        }
        let next = sim
            .tick()
            .next_wake
            .expect("a daily schedule always has a next slot");
        assert!(next > sim.now());
        sim.clock.set(next);
    }
    let tick = sim.tick();
    fired.extend(queued(&tick.actions).iter().map(|j| j.created));
    let want: Vec<_> = (1..=5)
        .map(|d| t(&format!("2025-03-0{d}T02:00:00Z")))
        .collect();
    assert_eq!(fired, want);
}

#[test]
fn three_days_of_downtime_catch_up_once_then_stay_on_schedule() {
    let mut sim = Sim::new("2025-03-01T00:00:00Z", DAILY);
    let before = sim.run_until(
        t("2025-03-02T03:00:00Z"),
        Duration::minutes(1),
        &mut instant_success,
    );
    assert_eq!(queued(&before).len(), 2);

    // Down from 2025-03-02T03:00 to 2025-03-05T10:00: slots of 03-03, 03-04
    // and 03-05 pass.
    sim.restart();
    sim.clock.set(t("2025-03-05T10:00:00Z"));
    let after = sim.run_until(
        t("2025-03-07T03:00:00Z"),
        Duration::minutes(1),
        &mut instant_success,
    );
    let jobs = queued(&after);
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    assert_eq!(jobs[0].created, t("2025-03-05T10:00:00Z"));
    assert_eq!(
        jobs[0].trigger,
        Trigger::Schedule {
            slot: t("2025-03-05T02:00:00Z"),
            missed: 2
        }
    );
    assert_eq!(jobs[1].created, t("2025-03-06T02:00:00Z"));
    assert_eq!(jobs[2].created, t("2025-03-07T02:00:00Z"));
    assert_eq!(sim.all_jobs().len(), 5);
}

#[test]
fn a_long_job_makes_the_next_slots_skip_not_double() {
    let sim = Sim::new(
        "2025-03-01T00:00:00Z",
        r#"
[[policy]]
source = "host-a/tidb"
schedule = "0 * * * *"
retention = "hourly"
"#,
    );
    // The 01:00 job runs until 03:30; the others finish at once.
    let is_long = |job: &Job| job.created == t("2025-03-01T01:00:00Z");
    let mut agent = |sim: &Sim, job: &Job| {
        sim.start(job);
        if !is_long(job) {
            sim.succeed(job);
        }
    };
    let mut actions = sim.run_until(t("2025-03-01T03:29:00Z"), Duration::minutes(1), &mut agent);
    let long = (*queued(&actions)
        .into_iter()
        .find(|j| is_long(j))
        .expect("the 01:00 job ran"))
    .clone();
    sim.succeed(&long);
    actions.extend(sim.run_until(t("2025-03-01T05:00:00Z"), Duration::minutes(1), &mut agent));

    let fired: Vec<_> = queued(&actions).iter().map(|j| j.created).collect();
    assert_eq!(
        fired,
        [
            "2025-03-01T01:00:00Z",
            "2025-03-01T04:00:00Z",
            "2025-03-01T05:00:00Z"
        ]
        .map(t)
    );
    let skips: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Skipped {
                slot,
                slots,
                blocking,
                ..
            } => Some((*slot, *slots, *blocking)),
            Action::Queued(_) => None,
        })
        .collect();
    assert_eq!(
        skips,
        [
            (t("2025-03-01T02:00:00Z"), 1, long.id),
            (t("2025-03-01T03:00:00Z"), 1, long.id)
        ]
    );
    let source: SourceId = "host-a/tidb".parse().unwrap();
    let state = sim.catalog().schedule().get(&source).unwrap().unwrap();
    assert_eq!(state.skipped, 2);
    assert_eq!(state.last_skip.unwrap().blocked_by, long.id);
}

#[test]
fn failures_retry_with_exponential_backoff_then_give_up() {
    let sim = Sim::new(
        "2025-03-01T00:00:00Z",
        r#"
[[policy]]
source = "host-a/mongo"
schedule = "0 2 * * *"
retention = "daily"
max_retries = 3
retry_backoff = "5m"
"#,
    );
    // Every attempt on 03-01 fails at once; on 03-02 it works.
    let mut follow_ups = Vec::new();
    let mut agent = |sim: &Sim, job: &Job| {
        sim.start(job);
        if job.created < t("2025-03-02T00:00:00Z") {
            follow_ups.push(sim.fail(job, "mongodump exited with status 1").follow_up);
        } else {
            sim.succeed(job);
        }
    };
    let actions = sim.run_until(t("2025-03-02T03:00:00Z"), Duration::minutes(1), &mut agent);
    let jobs = queued(&actions);
    let got: Vec<_> = jobs.iter().map(|j| (j.created, j.attempt)).collect();
    assert_eq!(
        got,
        [
            (t("2025-03-01T02:00:00Z"), 1),
            (t("2025-03-01T02:05:00Z"), 2),
            (t("2025-03-01T02:15:00Z"), 3),
            (t("2025-03-01T02:35:00Z"), 4),
            (t("2025-03-02T02:00:00Z"), 1),
        ]
    );
    for (i, j) in jobs[1..4].iter().enumerate() {
        assert_eq!(
            j.trigger,
            Trigger::Retry {
                slot: t("2025-03-01T02:00:00Z"),
                previous: jobs[i].id
            }
        );
    }
    use trireme_controller::scheduler::FollowUp;
    assert_eq!(follow_ups.last(), Some(&FollowUp::GaveUp { attempts: 4 }));
    let source: SourceId = "host-a/mongo".parse().unwrap();
    let state = sim.catalog().schedule().get(&source).unwrap().unwrap();
    assert_eq!(state.gave_up.unwrap().attempts, 4);
    assert_eq!(state.last_success, Some(t("2025-03-02T02:00:00Z")));
}

#[test]
fn a_restart_mid_way_continues_without_duplicate_runs() {
    let mut sim = Sim::new("2025-03-01T00:00:00Z", DAILY);
    let a = sim.run_until(
        t("2025-03-01T02:00:00Z"),
        Duration::minutes(1),
        &mut |sim, job| sim.start(job),
    );
    let first = queued(&a)[0].clone();

    // Restart while the job runs; its agent reconnects and reports it.
    sim.restart();
    sim.clock.advance(Duration::seconds(30));
    let r = reconcile_after_restart(sim.catalog(), &HashSet::from([first.id]), sim.now()).unwrap();
    assert_eq!(r.resumed, [first.id]);
    let b = sim.run_until(
        t("2025-03-01T02:30:00Z"),
        Duration::minutes(1),
        &mut instant_success,
    );
    assert!(b.is_empty(), "the 02:00 slot is not fired again: {b:?}");
    sim.succeed(&first);
    sim.clock.set(t("2025-03-01T03:00:00Z"));

    // Restart right after the next slot fired and finished.
    let c = sim.run_until(
        t("2025-03-02T02:00:00Z"),
        Duration::minutes(1),
        &mut instant_success,
    );
    assert_eq!(queued(&c).len(), 1);
    sim.restart();
    let d = sim.run_until(
        t("2025-03-02T02:10:00Z"),
        Duration::seconds(20),
        &mut instant_success,
    );
    assert!(d.is_empty(), "{d:?}");
    sim.clock.set(t("2025-03-02T03:00:00Z"));

    // Restart while a job runs and its agent does not come back: the job
    // fails cleanly and is retried per the policy's backoff.
    let e = sim.run_until(
        t("2025-03-03T02:00:00Z"),
        Duration::minutes(1),
        &mut |sim, job| sim.start(job),
    );
    let lost = queued(&e)[0].clone();
    sim.restart();
    sim.clock.set(t("2025-03-03T02:03:00Z"));
    let r = reconcile_after_restart(sim.catalog(), &HashSet::new(), sim.now()).unwrap();
    assert_eq!(r.failed, [lost.id]);
    let job = sim.catalog().jobs().get(&lost.id).unwrap().unwrap();
    assert_eq!(
        job.state,
        JobState::Failed {
            reason: RESTART_REASON.into(),
            finished: t("2025-03-03T02:03:00Z")
        }
    );
    let f = sim.run_until(
        t("2025-03-03T02:30:00Z"),
        Duration::minutes(1),
        &mut instant_success,
    );
    let retry = queued(&f);
    assert_eq!(retry.len(), 1);
    assert_eq!(
        retry[0].created,
        t("2025-03-03T02:08:00Z"),
        "default backoff 5m"
    );
    assert_eq!(retry[0].attempt, 2);

    let slots: Vec<_> = sim
        .all_jobs()
        .iter()
        .filter(|j| j.attempt == 1)
        .map(|j| j.slot())
        .collect();
    assert_eq!(
        slots,
        [
            "2025-03-01T02:00:00Z",
            "2025-03-02T02:00:00Z",
            "2025-03-03T02:00:00Z"
        ]
        .map(t),
        "one run per slot across three restarts"
    );
}

#[test]
fn full_every_makes_a_weekly_full_in_a_daily_schedule() {
    let sim = Sim::new(
        "2025-03-01T00:00:00Z",
        r#"
[[policy]]
source = "host-a/redis"
schedule = "0 2 * * *"
full_every = "7d"
retention = "daily"
timezone = "Europe/Paris"
"#,
    );
    // Across the 2025-03-30 daylight saving change in Paris.
    let actions = sim.run_until(
        t("2025-04-06T00:00:00Z"),
        Duration::minutes(10),
        &mut instant_success,
    );
    let fulls: Vec<_> = queued(&actions)
        .into_iter()
        .filter(|j| j.mode == BackupMode::Full)
        .map(|j| j.slot().date_naive().to_string())
        .collect();
    // 03-29 01:00 UTC to 04-05 00:00 UTC is an hour short of 7 days.
    assert_eq!(
        fulls,
        [
            "2025-03-01",
            "2025-03-08",
            "2025-03-15",
            "2025-03-22",
            "2025-03-29",
            "2025-04-05"
        ]
    );
}

#[test]
fn bad_cron_and_bad_toml_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.toml");
    std::fs::write(
        &path,
        "[[policy]]\nsource = \"host-a/redis\"\nschedule = \"0 2 * * 8\"\nretention = \"daily\"\n",
    )
    .unwrap();
    let e = read_policy_file(&path).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:3:12: ", path.display())), "{e}");
    assert!(e.contains("day-of-week field \"8\""), "{e}");
    assert!(e.contains("e.g. \"0 2 * * *\""), "{e}");

    std::fs::write(&path, "[[policy]]\nsource = \"host-a/redis\"\nschedule = \"0 2 * * *\"\nretention = \"daily\"\nretries = 3\n").unwrap();
    let e = read_policy_file(&path).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:5:1: ", path.display())), "{e}");
    assert!(
        e.contains("unknown field `retries`") && e.contains("max_retries"),
        "{e}"
    );

    std::fs::write(&path, "[[policy]\nsource = 1\n").unwrap();
    let e = read_policy_file(&path).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:1:", path.display())), "{e}");
}

/// A clock that follows tokio's (paused) time, so the real async loop runs
/// across simulated hours in milliseconds.
struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + Duration::from_std(self.start.elapsed()).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn the_async_loop_ticks_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let base = t("2025-03-01T00:00:00Z");
    let clock = Arc::new(TokioClock {
        base,
        start: tokio::time::Instant::now(),
    });
    let catalog = Catalog::open(dir.path()).unwrap();
    let ps = parse_policies(
        "p",
        "[[policy]]\nsource = \"host-a/redis\"\nschedule = \"*/10 * * * *\"\nretention = \"r\"\n",
    )
    .unwrap();
    apply_policies(&catalog, &ps, "p", base).unwrap();
    let sched = Scheduler::new(catalog.clone(), clock.clone());
    let mut fired = Vec::new();
    sched
        .run(
            LoopOptions::default(),
            tokio::time::sleep(StdDuration::from_secs(3600 + 30)),
            |tick| {
                for a in tick.actions {
                    if let Action::Queued(job) = a {
                        for e in [
                            JobEvent::Assign {
                                agent: AGENT.into(),
                            },
                            JobEvent::Start {
                                agent: AGENT.into(),
                            },
                            JobEvent::Succeed {
                                agent: AGENT.into(),
                                snapshot: Id([1; 32]),
                            },
                        ] {
                            update_job(&catalog, &job.id, &e, tick.now).unwrap();
                        }
                        fired.push(job.created);
                    }
                }
            },
        )
        .await;
    let want: Vec<_> = (1..=6).map(|i| base + Duration::minutes(10 * i)).collect();
    assert_eq!(fired.len(), want.len(), "{fired:?}");
    for (got, want) in fired.iter().zip(&want) {
        let late = *got - *want;
        assert!(
            late >= Duration::zero() && late < Duration::seconds(1),
            "{got} for {want}"
        );
    }
}

/// The child half of `a_finished_job_survives_kill_9`, run in a copy of
/// this test binary: finish a job in the catalog at `dir`, then die by
/// SIGKILL without closing anything.
fn finish_a_job_then_kill_9(dir: &str) -> ! {
    let now = t("2025-03-01T02:00:00Z");
    let c = Catalog::open(dir).unwrap();
    let source = SourceRecord {
        kind: "redis".into(),
        details: Default::default(),
        last_seen: now,
        drill_rank: None,
    };
    c.register_agent(AGENT, AGENT, "test", &[("redis".into(), source)], now)
        .unwrap();
    let src: SourceId = "host-a/redis".parse().unwrap();
    let job = jobs::enqueue_manual(&c, &src, BackupMode::Full, "op", now).unwrap();
    for e in [
        JobEvent::Assign {
            agent: AGENT.into(),
        },
        JobEvent::Start {
            agent: AGENT.into(),
        },
    ] {
        update_job(&c, &job.id, &e, now).unwrap();
    }
    let snapshot = trireme_controller::snapshots::SnapshotRecord {
        id: Id([5; 32]),
        source: src,
        agent: AGENT.into(),
        time: now,
        size: 42,
        summary: Default::default(),
        job: None,
        copies: Default::default(),
        position: Default::default(),
        depends_on: Vec::new(),
    };
    lifecycle::complete_job(&c, &job.id, AGENT, &snapshot, now).unwrap();
    // No drop, no flush: die at once.
    let _ = std::process::Command::new("sh")
        .args(["-c", &format!("kill -9 {}", std::process::id())])
        .status();
    std::thread::sleep(StdDuration::from_secs(60));
    unreachable!("SIGKILL did not arrive");
}

#[test]
fn a_finished_job_survives_kill_9() {
    use std::os::unix::process::ExitStatusExt;
    // In the copy of this binary started below, be the child.
    if let Ok(dir) = std::env::var("TRIREME_TEST_KILL9_DIR") {
        finish_a_job_then_kill_9(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_finished_job_survives_kill_9",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("TRIREME_TEST_KILL9_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let c = Catalog::open(dir.path()).unwrap();
    let all = c.jobs().values().unwrap();
    assert_eq!(all.len(), 1);
    assert!(
        matches!(all[0].state, JobState::Succeeded { snapshot, .. } if snapshot == Id([5; 32])),
        "{:?}",
        all[0].state
    );
    let snap = c.snapshots().get(&Id([5; 32])).unwrap().unwrap();
    assert_eq!((snap.size, snap.job), (42, Some(all[0].id)));
    assert!(c.active().is_empty(), "the source is free again");
}
