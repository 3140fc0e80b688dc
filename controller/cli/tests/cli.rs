//! The `trireme` operator CLI as a real process: errors without a
//! controller, and every output path against a small fake `OperatorService`
//! (canned replies, real mTLS through `tls::serve`, real role checks). The
//! real controller is exercised by the end-to-end tests.

use std::path::PathBuf;
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use trireme_net::tls::{self, ca, Authorizer, HealthService, ReloadingServerConfig, Role};
use trireme_proto::v1::health_server::HealthServer;
use trireme_proto::v1::operator_service_server::{OperatorService, OperatorServiceServer};
use trireme_proto::v1::*;

const TRIREME: &str = env!("CARGO_BIN_EXE_trireme");

/// Run `trireme` without any TRIREME_* settings from the environment.
async fn trireme(args: &[&str]) -> Output {
    // TRIREME_TEST_BIN_DIR: binaries copied aside (a shared target directory).
    let bin = std::env::var_os("TRIREME_TEST_BIN_DIR").map_or_else(
        || PathBuf::from(TRIREME),
        |d| PathBuf::from(d).join("trireme"),
    );
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRIREME_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.output().await.unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "trireme failed ({:?}):\n{}",
        o.status,
        stderr(o)
    );
    stdout(o)
}

/// A documented failure exit code (1 error, 3 refused, 4 unreachable, 5
/// job failed) and the `error: …` message.
fn fails(o: &Output) -> String {
    assert!(
        matches!(o.status.code(), Some(1 | 3 | 4 | 5)),
        "expected exit 1, 3, 4 or 5, got {:?}; stdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    let err = stderr(o);
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// Exit code `code` and the `error: …` message.
fn fails_with(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    fails(o)
}

/// A CA with the controller's certificate (`localhost`), an operator `op`
/// and a viewer `eve`.
struct Pki {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        ca::init_ca(&dir).unwrap();
        ca::issue(&dir, Role::Controller, "localhost", 30, &dir).unwrap();
        ca::issue(&dir, Role::Operator, "op", 30, &dir).unwrap();
        ca::issue(&dir, Role::Viewer, "eve", 30, &dir).unwrap();
        Pki { _tmp: tmp, dir }
    }

    fn dir(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

// ---- no controller needed ----

#[tokio::test]
async fn completions_need_no_controller() {
    let out = ok(&trireme(&["completions", "bash"]).await);
    for word in [
        "trireme",
        "agents",
        "snapshots",
        "restore",
        "locations",
        "verify",
        "completions",
        "--controller",
    ] {
        assert!(out.contains(word), "{word} missing from the bash script");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        ok(&trireme(&["completions", shell]).await);
    }
}

#[tokio::test]
async fn an_unreachable_controller_is_named() {
    let pki = Pki::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let err = fails_with(
        &trireme(&[
            "status",
            "--controller",
            &addr,
            "--tls-dir",
            pki.dir(),
            "--name",
            "op",
        ])
        .await,
        4,
    );
    assert!(
        err.contains(&format!("cannot reach the controller at {addr}")),
        "{err}"
    );
    assert!(err.contains("is trireme-controller running"), "{err}");
}

#[tokio::test]
async fn missing_certificate_settings_name_the_flags() {
    let err = fails(&trireme(&["agents", "ls"]).await);
    for want in [
        "--tls-dir",
        "--name",
        "--cert",
        "--key",
        "--ca",
        "TRIREME_TLS_DIR",
        "trireme cert issue",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    // A named file that is not there.
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(
        &trireme(&[
            "agents",
            "ls",
            "--tls-dir",
            tmp.path().to_str().unwrap(),
            "--name",
            "ghost",
        ])
        .await,
    );
    assert!(err.contains("ghost.pem") || err.contains("ca.pem"), "{err}");
}

#[tokio::test]
async fn restore_target_needs_agent_and_colon() {
    let err = fails(&trireme(&["restore", "X", "--to", "nocolon"]).await);
    assert!(err.contains("--to web-2:/srv/restore"), "{err}");
    let err = fails(&trireme(&["backup", "run", "no-slash"]).await);
    assert!(err.contains("AGENT/SOURCE"), "{err}");
}

// ---- against a fake controller ----

#[derive(Default)]
struct Fake {
    authz: Option<Authorizer>,
    restores: Mutex<Vec<RestoreRequest>>,
    applied: Mutex<Vec<String>>,
    verifies: Mutex<Vec<VerifyRequest>>,
    /// The `x-trireme-totp` metadata of each sensitive call.
    totps: Mutex<Vec<Option<String>>>,
    audit_lists: Mutex<Vec<ListAuditRequest>>,
    prunes: Mutex<Vec<PruneRequest>>,
    snapshot_lists: Mutex<Vec<ListSnapshotsRequest>>,
}

fn totp_of<T>(r: &Request<T>) -> Option<String> {
    r.metadata()
        .get("x-trireme-totp")
        .map(|v| v.to_str().unwrap().to_string())
}

const JOB_OK: &str = "0193a0b1-0000-7000-8000-000000000001";
const JOB_BAD: &str = "0193a0b1-0000-7000-8000-000000000002";
const SNAP: &str = "5eedc0ffee00112233445566778899aabbccddeeff00112233445566778899aa";

fn src(agent: &str, source: &str) -> Option<SourceRef> {
    Some(SourceRef {
        agent: agent.into(),
        source: source.into(),
    })
}

fn job(id: &str, state: JobState) -> JobInfo {
    let mut j = JobInfo {
        id: id.into(),
        source: src("web-1", "www"),
        agent: "web-1".into(),
        created_unix: 1_764_052_020,
        trigger: "manual by op".into(),
        attempt: 1,
        mode: "incremental".into(),
        ..Default::default()
    };
    j.set_kind(JobKind::Backup);
    j.set_state(state);
    match state {
        JobState::Running => {
            j.started_unix = 1_764_052_021;
            j.progress = Some(JobProgress {
                job_id: id.into(),
                bytes_read: 3 << 29,
                bytes_uploaded: 1 << 20,
                files: 1234,
                bytes_per_sec: 10.0 * 1048576.0,
                bytes_total: 0,
            });
        }
        JobState::Succeeded => {
            j.started_unix = 1_764_052_021;
            j.finished_unix = 1_764_052_081;
            j.snapshot_id = SNAP.into();
            j.summary = Some(JobSummary {
                files: 1234,
                bytes: 3 << 29,
                new_bytes: 1 << 20,
                duration_secs: 60.0,
                ..Default::default()
            });
        }
        JobState::Failed => {
            j.started_unix = 1_764_052_021;
            j.finished_unix = 1_764_052_022;
            j.error_message = "the agent lost its disk".into();
        }
        _ => {}
    }
    j
}

fn snapshot() -> SnapshotInfo {
    SnapshotInfo {
        id: SNAP.into(),
        source: src("web-1", "www"),
        time_unix: 1_764_052_021,
        agent: "web-1".into(),
        size: 3 << 29,
        summary: Some(JobSummary {
            files: 1234,
            ..Default::default()
        }),
        copies: vec![
            SnapshotCopy {
                location: "primary".into(),
                verified: true,
                verified_unix: 1_764_052_100,
                state: "verified".into(),
                detail: String::new(),
            },
            SnapshotCopy {
                location: "offsite".into(),
                verified: false,
                verified_unix: 0,
                state: "failed".into(),
                detail: "upload refused: quota exceeded".into(),
            },
            SnapshotCopy {
                location: "cold".into(),
                verified: false,
                verified_unix: 0,
                state: "copying".into(),
                detail: String::new(),
            },
        ],
        ..Default::default()
    }
}

impl Fake {
    fn check<T>(&self, r: &Request<T>, roles: &[Role]) -> Result<(), Status> {
        self.authz.as_ref().unwrap().authorize(r, roles).map(|_| ())
    }
    fn read<T>(&self, r: &Request<T>) -> Result<(), Status> {
        self.check(r, &[Role::Operator, Role::Viewer])
    }
    fn operate<T>(&self, r: &Request<T>) -> Result<(), Status> {
        self.check(r, &[Role::Operator])
    }
}

fn find_job(id: &str) -> Result<&'static str, Status> {
    [JOB_OK, JOB_BAD]
        .into_iter()
        .find(|j| j.starts_with(id) && id.len() >= 4)
        .ok_or_else(|| Status::not_found(format!("no job {id:?}")))
}

type JobStream = Pin<Box<dyn Stream<Item = Result<JobInfo, Status>> + Send>>;

#[tonic::async_trait]
impl OperatorService for Fake {
    async fn list_agents(
        &self,
        r: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsReply>, Status> {
        self.read(&r)?;
        Ok(Response::new(ListAgentsReply {
            agents: vec![
                AgentInfo {
                    name: "web-1".into(),
                    version: "0.1.0".into(),
                    hostname: "web-1.example".into(),
                    connected: true,
                    last_seen_unix: 1_764_052_020,
                    certificate_not_after_unix: 1_795_588_020,
                    sources: vec![SourceInfo {
                        name: "www".into(),
                        kind: "volume".into(),
                        details: [("path".to_string(), "/srv/www".to_string())].into(),
                        ..Default::default()
                    }],
                },
                AgentInfo {
                    name: "db-1".into(),
                    ..Default::default()
                },
            ],
        }))
    }
    async fn list_sources(
        &self,
        r: Request<ListSourcesRequest>,
    ) -> Result<Response<ListSourcesReply>, Status> {
        self.read(&r)?;
        let agent = r.into_inner().agent;
        let all = vec![SourceEntry {
            agent: "web-1".into(),
            source: Some(SourceInfo {
                name: "www".into(),
                kind: "volume".into(),
                details: Default::default(),
                ..Default::default()
            }),
            policy: "web-1/www".into(),
        }];
        Ok(Response::new(ListSourcesReply {
            sources: all
                .into_iter()
                .filter(|s| agent.is_empty() || s.agent == agent)
                .collect(),
        }))
    }
    async fn apply_policy(
        &self,
        r: Request<ApplyPolicyRequest>,
    ) -> Result<Response<ApplyPolicyReply>, Status> {
        self.operate(&r)?;
        self.totps.lock().unwrap().push(totp_of(&r));
        self.applied.lock().unwrap().push(r.into_inner().toml);
        Ok(Response::new(ApplyPolicyReply {
            applied: vec!["web-1/www".into()],
            warnings: vec!["no agent reports db-1/pg yet".into()],
        }))
    }
    async fn list_policies(
        &self,
        r: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesReply>, Status> {
        self.read(&r)?;
        Ok(Response::new(ListPoliciesReply {
            policies: vec![PolicyInfo {
                name: "web-1/www".into(),
                toml: "[[policy]]\nsource = \"web-1/www\"\nschedule = \"0 2 * * *\"\nretention = \"daily-30\"\n".into(),
                next_run_unix: 1_764_122_400,
            }],
        }))
    }
    async fn run_backup(&self, r: Request<RunBackupRequest>) -> Result<Response<JobInfo>, Status> {
        self.operate(&r)?;
        let id = if r.get_ref().full { JOB_BAD } else { JOB_OK };
        Ok(Response::new(job(id, JobState::Queued)))
    }
    async fn list_jobs(
        &self,
        r: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsReply>, Status> {
        self.read(&r)?;
        let want = r.get_ref().state;
        let jobs = vec![
            job(JOB_OK, JobState::Succeeded),
            job(JOB_BAD, JobState::Failed),
        ]
        .into_iter()
        .filter(|j| want == 0 || j.state == want)
        .collect();
        Ok(Response::new(ListJobsReply { jobs }))
    }
    async fn get_job(&self, r: Request<GetJobRequest>) -> Result<Response<JobInfo>, Status> {
        self.read(&r)?;
        let id = find_job(&r.get_ref().id)?;
        let state = if id == JOB_OK {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        Ok(Response::new(job(id, state)))
    }
    async fn cancel_job(&self, r: Request<CancelJobRequest>) -> Result<Response<JobInfo>, Status> {
        self.operate(&r)?;
        let id = find_job(&r.get_ref().id)?;
        Ok(Response::new(job(id, JobState::Cancelled)))
    }
    type WatchJobStream = JobStream;
    async fn watch_job(
        &self,
        r: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.read(&r)?;
        let id = find_job(&r.get_ref().id)?;
        let end = if id == JOB_OK {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        let updates = vec![
            Ok(job(id, JobState::Queued)),
            Ok(job(id, JobState::Running)),
            Ok(job(id, end)),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(updates))))
    }
    async fn list_snapshots(
        &self,
        r: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsReply>, Status> {
        self.read(&r)?;
        let r = r.into_inner();
        self.snapshot_lists.lock().unwrap().push(r.clone());
        let keep = r
            .source
            .is_none_or(|s| s.agent == "web-1" && s.source == "www");
        Ok(Response::new(ListSnapshotsReply {
            snapshots: if keep { vec![snapshot()] } else { vec![] },
        }))
    }
    async fn get_snapshot(
        &self,
        r: Request<GetSnapshotRequest>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        self.read(&r)?;
        if !SNAP.starts_with(&r.get_ref().id) {
            return Err(Status::not_found("no such snapshot"));
        }
        Ok(Response::new(snapshot()))
    }
    async fn restore(&self, r: Request<RestoreRequest>) -> Result<Response<JobInfo>, Status> {
        self.operate(&r)?;
        let req = r.into_inner();
        let mut j = job(JOB_OK, JobState::Queued);
        j.set_kind(JobKind::Restore);
        j.agent = req.to_agent.clone();
        j.restore_snapshot_id = SNAP.into();
        j.restore_target = req.target.clone();
        self.restores.lock().unwrap().push(req);
        Ok(Response::new(j))
    }
    async fn status(&self, r: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        self.read(&r)?;
        Ok(Response::new(StatusReply {
            version: "9.9.9".into(),
            agents_total: 2,
            agents_connected: 1,
            jobs_running: 0,
            jobs_queued: 0,
            jobs_failed_24h: 1,
            problems: vec!["agent db-1 is not connected".into()],
            protection: vec![SourceProtection {
                source: src("web-1", "www"),
                snapshot_id: "4a1b2c3d00000000".into(),
                snapshot_time_unix: 1_764_000_000,
                newest_snapshot_id: SNAP.into(),
                newest_verified_copies: 1,
                newest_shortfall: vec![
                    "verified at 1 of the 3 locations the protection rule needs".into(),
                ],
            }],
            locations_total: 3,
            protection_rule: "verified at 3 locations, in 2 or more regions".into(),
            rule_problems: Vec::new(),
            state: "RED".into(),
            recovery: vec![SourceRecovery {
                source: src("web-1", "www"),
                state: "red".into(),
                rpo_secs: 3600.0,
                age_secs: 7200.0,
                rto_secs: 600.0,
                last_test_unix: 1_764_000_000,
                last_test_ok: false,
                last_test_secs: 30.0,
                problems: vec!["RPO missed".into()],
            }],
        }))
    }
    async fn list_locations(
        &self,
        r: Request<ListLocationsRequest>,
    ) -> Result<Response<ListLocationsReply>, Status> {
        self.read(&r)?;
        Ok(Response::new(ListLocationsReply {
            locations: vec![
                LocationInfo {
                    name: "primary".into(),
                    url: "s3://backups.example/trireme".into(),
                    reachable: true,
                    objects: 1200,
                    bytes: 3 << 29,
                    last_sync_unix: 1_764_052_100,
                    last_quick_verify_unix: 1_764_052_200,
                    last_deep_round_unix: 1_764_000_000,
                    deep_round_progress: 0.5,
                    problems_found: 2,
                    problems_repaired: 2,
                    incidents: vec![
                        "2025-11-25T06:30:00Z chunks/ab: hash mismatch, repaired".into()
                    ],
                    ..Default::default()
                },
                LocationInfo {
                    name: "offsite".into(),
                    url: "sftp://vault.example/trireme".into(),
                    reachable: false,
                    last_error: "connection refused".into(),
                    ..Default::default()
                },
            ],
        }))
    }
    /// Damage at `offsite` cannot be repaired; elsewhere everything was.
    // Restore tests and drills are exercised against the real controller
    // (controller/tests/recovery.rs); this fake only says so.
    async fn run_restore_test(
        &self,
        _: Request<RunRestoreTestRequest>,
    ) -> Result<Response<JobInfo>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn list_restore_tests(
        &self,
        _: Request<ListRestoreTestsRequest>,
    ) -> Result<Response<ListRestoreTestsReply>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn run_drill(&self, _: Request<RunDrillRequest>) -> Result<Response<DrillInfo>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn list_drills(
        &self,
        _: Request<ListDrillsRequest>,
    ) -> Result<Response<ListDrillsReply>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn get_drill(&self, _: Request<GetDrillRequest>) -> Result<Response<DrillInfo>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn annotate_drill(
        &self,
        _: Request<AnnotateDrillRequest>,
    ) -> Result<Response<DrillInfo>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn restore_platform(
        &self,
        _: Request<RestorePlatformRequest>,
    ) -> Result<Response<DrillInfo>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn rebuild_catalog(
        &self,
        _: Request<RebuildCatalogRequest>,
    ) -> Result<Response<RebuildCatalogReply>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn verify(&self, r: Request<VerifyRequest>) -> Result<Response<VerifyReply>, Status> {
        self.operate(&r)?;
        let req = r.into_inner();
        let bad = req.location == "offsite";
        self.verifies.lock().unwrap().push(req);
        let mut reply = VerifyReply {
            objects_checked: 1200,
            bytes_read: 3 << 29,
            problems: vec!["primary: chunks/ab: hash mismatch".into()],
            repaired: vec!["primary: chunks/ab".into()],
            unrepaired: vec![],
            objects_copied: 3,
            bytes_copied: 3 << 20,
        };
        if bad {
            reply.problems.push("offsite: chunks/cd: missing".into());
            reply.unrepaired.push("offsite: chunks/cd".into());
        }
        Ok(Response::new(reply))
    }
    async fn list_audit(
        &self,
        r: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditReply>, Status> {
        self.read(&r)?;
        self.audit_lists.lock().unwrap().push(r.into_inner());
        let entry = |seq: u64, actor: &str, outcome: &str, reason: &str| AuditEntry {
            seq,
            time: "2026-03-01T10:00:00.000000000Z".into(),
            actor: actor.into(),
            role: "operator".into(),
            action: "policy apply".into(),
            target: "1 policies: web-1/www".into(),
            outcome: outcome.into(),
            reason: reason.into(),
            peer: "10.1.2.3:40000".into(),
            prev_hash: "00".repeat(32),
            hash: "ab".repeat(32),
        };
        Ok(Response::new(ListAuditReply {
            entries: vec![
                entry(1, "op", "refused", "policy apply is a sensitive action"),
                entry(2, "op", "ok", ""),
            ],
        }))
    }
    async fn verify_audit(
        &self,
        r: Request<VerifyAuditRequest>,
    ) -> Result<Response<VerifyAuditReply>, Status> {
        self.read(&r)?;
        Ok(Response::new(VerifyAuditReply {
            entries_checked: 6,
            first_broken_seq: 7,
            problem: "entry 7 does not match its hash (edited after it was written)".into(),
            head_seq: 0,
            head_hash: String::new(),
            mirrors: vec![AuditMirrorCheck {
                location: "primary".into(),
                entries_compared: 9,
                problems: vec![],
                error: String::new(),
            }],
        }))
    }
    async fn mfa_enroll(
        &self,
        r: Request<MfaEnrollRequest>,
    ) -> Result<Response<MfaEnrollReply>, Status> {
        self.operate(&r)?;
        self.totps.lock().unwrap().push(totp_of(&r));
        Ok(Response::new(MfaEnrollReply {
            account: "op".into(),
            secret_base32: "JBSWY3DPEHPK3PXP".into(),
            otpauth_uri: "otpauth://totp/Trireme:op?secret=JBSWY3DPEHPK3PXP&issuer=Trireme".into(),
        }))
    }
    async fn mfa_confirm(
        &self,
        r: Request<MfaConfirmRequest>,
    ) -> Result<Response<MfaConfirmReply>, Status> {
        self.operate(&r)?;
        if r.get_ref().code != "123456" {
            return Err(Status::permission_denied(
                "mfa confirm: the TOTP code is wrong or expired",
            ));
        }
        Ok(Response::new(MfaConfirmReply {
            account: "op".into(),
        }))
    }
    async fn export_key(
        &self,
        r: Request<trireme_proto::v1::ExportKeyRequest>,
    ) -> Result<Response<trireme_proto::v1::ExportKeyReply>, Status> {
        self.operate(&r)?;
        // The real export is tested against the real controller (audit.rs).
        Err(Status::unimplemented("the fake controller holds no key"))
    }

    async fn hold_snapshot(
        &self,
        r: Request<HoldSnapshotRequest>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        self.operate(&r)?;
        let req = r.into_inner();
        let mut s = snapshot();
        s.hold = Some(SnapshotHold {
            reason: req.reason,
            by: "op".into(),
            since_unix: 1_764_052_020,
            until_unix: req.until_unix,
            active: true,
        });
        Ok(Response::new(s))
    }
    async fn unhold_snapshot(
        &self,
        r: Request<UnholdSnapshotRequest>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        self.operate(&r)?;
        self.totps.lock().unwrap().push(totp_of(&r));
        Ok(Response::new(snapshot()))
    }
    async fn tag_snapshot(
        &self,
        r: Request<TagSnapshotRequest>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        self.operate(&r)?;
        let mut s = snapshot();
        s.tags = r.into_inner().add;
        Ok(Response::new(s))
    }
    async fn forget_snapshot(
        &self,
        r: Request<ForgetSnapshotRequest>,
    ) -> Result<Response<ForgetSnapshotReply>, Status> {
        self.operate(&r)?;
        self.totps.lock().unwrap().push(totp_of(&r));
        Ok(Response::new(ForgetSnapshotReply {
            id: SNAP.into(),
            source: src("web-1", "www"),
            time_unix: 1_764_052_020,
            removed_at: vec!["primary".into()],
            pending: vec!["offsite: unreachable".into()],
            note: "the next prune reclaims its data".into(),
        }))
    }

    async fn list_tree(
        &self,
        r: Request<ListTreeRequest>,
    ) -> Result<Response<ListTreeReply>, Status> {
        self.read(&r)?;
        if r.get_ref().path == "/nope" {
            return Err(Status::not_found("snapshot 8f3a2c1d has no path /nope"));
        }
        let e = |path: &str, kind: &str, mode: u32, size: u64, target: &str| TreeEntryInfo {
            path: path.into(),
            r#type: kind.into(),
            mode,
            uid: 1000,
            gid: 1000,
            size,
            mtime_ns: 1_764_052_020_000_000_000,
            target: target.into(),
        };
        Ok(Response::new(ListTreeReply {
            snapshot: SNAP.into(),
            location: "primary".into(),
            entries: vec![
                e("/etc", "dir", 0o755, 0, ""),
                e("/run.sh", "file", 0o4750, 42, ""),
                e("/latest", "symlink", 0o777, 7, "run.sh"),
            ],
            truncated: r.get_ref().limit == 3,
            note: "truncated at 3 entries: narrow PATH".into(),
        }))
    }

    async fn diff_snapshots(
        &self,
        r: Request<DiffSnapshotsRequest>,
    ) -> Result<Response<DiffSnapshotsReply>, Status> {
        self.read(&r)?;
        let c = |path: &str, what: &str, old_size, new_size| ChangeInfo {
            path: path.into(),
            what: what.into(),
            old_size,
            new_size,
        };
        Ok(Response::new(DiffSnapshotsReply {
            from: SNAP.into(),
            to: SNAP.into(),
            location: "primary".into(),
            changes: vec![
                c("/a", "added", 0, 10),
                c("/b", "removed", 5, 0),
                c("/c", "modified", 3, 4),
                c("/d", "metadata", 2, 2),
            ],
            added: 1,
            removed: 1,
            modified: 1,
            metadata: 1,
            added_bytes: 14,
            removed_bytes: 8,
            truncated: false,
            note: String::new(),
        }))
    }

    async fn find_files(
        &self,
        r: Request<FindFilesRequest>,
    ) -> Result<Response<FindFilesReply>, Status> {
        self.read(&r)?;
        Ok(Response::new(FindFilesReply {
            versions: vec![FoundVersion {
                path: "/etc/app.json".into(),
                r#type: "file".into(),
                size: 12,
                mtime_ns: 1_764_052_020_000_000_000,
                snapshots: vec![FoundSnapshot {
                    id: SNAP.into(),
                    source: src("web-1", "www"),
                    time_unix: 1_764_052_020,
                }],
            }],
            snapshots_searched: 2,
            location: "primary".into(),
            truncated: false,
            note: String::new(),
        }))
    }

    type DumpFileStream = Pin<Box<dyn Stream<Item = Result<DumpChunk, Status>> + Send>>;

    async fn dump_file(
        &self,
        r: Request<DumpFileRequest>,
    ) -> Result<Response<Self::DumpFileStream>, Status> {
        self.operate(&r)?;
        self.totps.lock().unwrap().push(totp_of(&r));
        let blocks = vec![
            Ok(DumpChunk {
                data: b"hello ".to_vec(),
            }),
            Ok(DumpChunk {
                data: b"world\n".to_vec(),
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(blocks))))
    }

    async fn snapshot_stats(
        &self,
        r: Request<SnapshotStatsRequest>,
    ) -> Result<Response<SnapshotStatsReply>, Status> {
        self.read(&r)?;
        Ok(Response::new(SnapshotStatsReply {
            snapshots: 1,
            files: 3,
            dirs: 1,
            symlinks: 0,
            logical_bytes: 4096,
            unique_chunks: 2,
            unique_bytes: 2048,
            stored_bytes: 1024,
            location: "primary".into(),
        }))
    }

    async fn prune(&self, r: Request<PruneRequest>) -> Result<Response<PruneReply>, Status> {
        self.operate(&r)?;
        self.totps.lock().unwrap().push(totp_of(&r));
        let req = r.into_inner();
        let failing = req.source.as_ref().is_some_and(|s| s.source == "broken");
        self.prunes.lock().unwrap().push(req.clone());
        Ok(Response::new(PruneReply {
            dry_run: req.dry_run,
            removed: vec![PruneSnapshot {
                id: SNAP.into(),
                source: "web-1/www".into(),
                time_unix: 1_764_052_020,
                reason: "outside every window".into(),
                ..Default::default()
            }],
            kept: vec![],
            locations: vec![
                PruneLocation {
                    name: "primary".into(),
                    snapshots_removed: vec![SNAP.into()],
                    packs_deleted: 2,
                    bytes_freed: 5 << 20,
                    error: if failing { "storage error at s3://b".into() } else { String::new() },
                    ..Default::default()
                },
                PruneLocation {
                    name: "offsite".into(),
                    skipped: "behind: kept snapshot 1234abcd of web-1/www is not verified here (not copied yet)".into(),
                    ..Default::default()
                },
            ],
            notes: vec!["db-1/pg: no policy, so no retention class: keeping its 3 snapshot(s)".into()],
        }))
    }
}

/// The fake controller on 127.0.0.1 behind `tls::serve`.
struct Server {
    fake: Arc<Fake>,
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    async fn start(pki: &Pki) -> Self {
        let tls = Arc::new(
            ReloadingServerConfig::new(tls::TlsFiles::in_dir(&pki.dir, "localhost")).unwrap(),
        );
        let authz = Authorizer::new(tls.clone());
        let fake = Arc::new(Fake {
            authz: Some(authz.clone()),
            ..Default::default()
        });
        let routes = tonic::service::Routes::new(HealthServer::new(HealthService::new(authz)))
            .add_service(OperatorServiceServer::from_arc(fake.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(tls::serve(routes, listener, tls, async {
            let _ = stopped.await;
        }));
        Server {
            fake,
            addr,
            stop: Some(stop),
        }
    }

    /// `trireme ARGS` as `who`, against this server.
    async fn run(&self, pki: &Pki, who: &str, args: &[&str]) -> Output {
        let mut all = vec![
            "--controller",
            &self.addr,
            "--server-name",
            "localhost",
            "--tls-dir",
            pki.dir(),
            "--name",
            who,
        ];
        all.extend_from_slice(args);
        trireme(&all).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_as_tables_and_json() {
    let pki = Pki::new();
    let s = Server::start(&pki).await;

    let out = ok(&s.run(&pki, "eve", &["status"]).await);
    assert!(
        out.contains("you:") && out.contains("eve (viewer, serial"),
        "{out}"
    );
    assert!(out.contains("1 connected of 2"), "{out}");
    assert!(out.contains("agent db-1 is not connected"), "{out}");
    assert!(
        out.contains("state:")
            && out.contains("RED")
            && out.contains("rule:")
            && out.contains("verified at 3 locations, in 2 or more regions"),
        "{out}"
    );
    assert!(
        out.contains("web-1/www  RED    RPO 1h (2h old); RTO 10m (last test 2025-11-24T16:00:00Z FAILED, took 30s)"),
        "{out}"
    );
    assert!(
        out.contains(
            "web-1/www  newest 5eedc0ff 1/3 verified, not protected; last protected: 4a1b2c3d at 2025-11-24T16:00:00Z ("
        ),
        "{out}"
    );
    let v = json(&s.run(&pki, "eve", &["status", "-o", "json"]).await);
    assert_eq!(v["you"]["role"], "viewer");
    assert_eq!(v["jobs"]["failed_24h"], 1);
    assert_eq!(v["locations_total"], 3);
    assert_eq!(v["protection"][0]["source"]["agent"], "web-1");
    assert_eq!(v["protection"][0]["snapshot_id"], "4a1b2c3d00000000");
    assert_eq!(v["protection"][0]["newest_verified_copies"], 1);
    assert_eq!(v["state"], "RED");
    assert_eq!(
        v["protection_rule"],
        "verified at 3 locations, in 2 or more regions"
    );
    assert!(v["protection"][0]["newest_shortfall"][0]
        .as_str()
        .unwrap()
        .contains("verified at 1 of the 3"));
    assert_eq!(v["recovery"][0]["state"], "red");
    assert_eq!(v["recovery"][0]["age_secs"], 7200.0);
    assert_eq!(v["recovery"][0]["last_test_ok"], false);

    let out = ok(&s.run(&pki, "op", &["agents", "ls"]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CERT EXPIRES"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("web-1")
            && lines[1].contains("connected")
            && lines[1].contains("2025-11-25T06:27:00Z")
            && lines[1].contains("2026-11-25T06:27:00Z"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("db-1") && lines[2].contains("offline"),
        "{out}"
    );
    let v = json(&s.run(&pki, "op", &["agents", "ls", "-o", "json"]).await);
    assert_eq!(v[0]["sources"][0]["details"]["path"], "/srv/www");
    assert_eq!(v[1]["last_seen"], Value::Null);
    assert_eq!(v[0]["certificate_not_after"], "2026-11-25T06:27:00Z");
    assert_eq!(v[1]["certificate_not_after"], Value::Null);

    let out = ok(&s
        .run(&pki, "op", &["sources", "ls", "--agent", "web-1"])
        .await);
    assert!(
        out.lines().nth(1).unwrap().starts_with("web-1  www"),
        "{out}"
    );

    let out = ok(&s.run(&pki, "op", &["policy", "ls"]).await);
    assert!(
        out.contains("0 2 * * *") && out.contains("daily-30"),
        "{out}"
    );

    let out = ok(&s
        .run(&pki, "op", &["jobs", "ls", "--state", "failed"])
        .await);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("the agent lost its disk"), "{out}");
    let v = json(&s.run(&pki, "op", &["jobs", "ls", "-o", "json"]).await);
    assert_eq!(v[0]["state"], "succeeded");
    assert_eq!(v[0]["kind"], "backup");
    assert_eq!(v[0]["summary"]["files"], 1234);
    assert_eq!(v[1]["error"], "the agent lost its disk");

    let out = ok(&s
        .run(
            &pki,
            "op",
            &["jobs", "show", "0193a0b1-0000-7000-8000-000000000001"],
        )
        .await);
    assert!(out.contains("state:") && out.contains("succeeded"), "{out}");
    assert!(out.contains("1.5 GiB"), "{out}");

    let out = ok(&s.run(&pki, "op", &["snapshots", "ls", "web-1/www"]).await);
    assert!(
        out.lines().nth(1).unwrap().starts_with("5eedc0ff "),
        "{out}"
    );
    assert!(out.contains("1/3"), "{out}");
    let out = ok(&s.run(&pki, "op", &["snapshots", "show", "5eedc0ff"]).await);
    assert!(
        out.contains("primary: verified 2025-11-25T06:28:20Z"),
        "{out}"
    );
    assert!(
        out.contains("offsite: failed (upload refused: quota exceeded)"),
        "{out}"
    );
    assert!(out.contains("cold: copying"), "{out}");
    let v = json(
        &s.run(&pki, "op", &["snapshots", "show", "5eedc0ff", "-o", "json"])
            .await,
    );
    assert_eq!(v["copies"][0]["state"], "verified");
    assert_eq!(v["copies"][1]["state"], "failed");
    assert_eq!(v["copies"][1]["detail"], "upload refused: quota exceeded");

    // Locations.
    let out = ok(&s.run(&pki, "eve", &["locations", "ls"]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("DEEP ROUND"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("primary")
            && lines[1].contains("reachable")
            && lines[1].contains("2/2"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("offsite")
            && lines[2].contains("unreachable")
            && lines[2].ends_with("connection refused"),
        "{out}"
    );
    let v = json(&s.run(&pki, "eve", &["locations", "ls", "-o", "json"]).await);
    let all = v.as_array().expect("an array");
    assert_eq!(all.len(), 2);
    let keys: Vec<&str> = all[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "name",
        "url",
        "reachable",
        "last_error",
        "objects",
        "bytes",
        "last_sync",
        "last_quick_verify",
        "last_deep_round",
        "deep_round_progress",
        "problems_found",
        "problems_repaired",
        "incidents",
        "role",
        "region",
        "provider",
    ];
    want.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(all[0]["name"], "primary");
    assert_eq!(all[0]["reachable"], true);
    assert_eq!(all[0]["objects"], 1200);
    assert_eq!(all[0]["bytes"], 3u64 << 29);
    assert_eq!(all[0]["last_sync"], "2025-11-25T06:28:20Z");
    assert_eq!(all[0]["deep_round_progress"], 0.5);
    assert_eq!(all[0]["last_error"], Value::Null);
    assert_eq!(
        all[0]["incidents"][0],
        "2025-11-25T06:30:00Z chunks/ab: hash mismatch, repaired"
    );
    assert_eq!(all[1]["reachable"], false);
    assert_eq!(all[1]["last_error"], "connection refused");
    assert_eq!(all[1]["last_sync"], Value::Null);
    assert_eq!(all[1]["incidents"], serde_json::json!([]));

    let err = fails(&s.run(&pki, "op", &["snapshots", "show", "abcdef"]).await);
    assert_eq!(err.trim(), "error: not found: no such snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_the_operator_role() {
    let pki = Pki::new();
    let s = Server::start(&pki).await;
    let err = fails_with(
        &s.run(&pki, "eve", &["backup", "run", "web-1/www"]).await,
        3,
    );
    assert!(
        err.contains("error: permission denied: /trireme.v1.OperatorService/RunBackup needs the operator role, but eve has the viewer role"),
        "{err}"
    );

    let out = ok(&s.run(&pki, "op", &["backup", "run", "web-1/www"]).await);
    assert!(out.contains(JOB_OK) && out.contains("queued"), "{out}");

    let out = ok(&s
        .run(
            &pki,
            "op",
            &["jobs", "cancel", "0193a0b1-0000-7000-8000-000000000002"],
        )
        .await);
    assert!(out.contains("cancelled"), "{out}");

    // --to splits at the first colon.
    let v = json(
        &s.run(
            &pki,
            "op",
            &[
                "restore",
                "5eed",
                "--to",
                "web-2:tidb://10.0.0.5:4000",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(v["kind"], "restore");
    assert_eq!(v["restore"]["target"], "tidb://10.0.0.5:4000");
    let req = s.fake.restores.lock().unwrap().pop().unwrap();
    assert_eq!(
        (
            req.snapshot_id.as_str(),
            req.to_agent.as_str(),
            req.target.as_str()
        ),
        ("5eed", "web-2", "tidb://10.0.0.5:4000")
    );

    // A policy from standard input, sent as text.
    let policy =
        "[[policy]]\nsource = \"web-1/www\"\nschedule = \"@daily\"\nretention = \"daily-30\"\n";
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("p.toml");
    std::fs::write(&file, policy).unwrap();
    let out = s
        .run(
            &pki,
            "op",
            &["policy", "apply", "-f", file.to_str().unwrap()],
        )
        .await;
    assert!(ok(&out).contains("applied web-1/www"));
    assert!(stderr(&out).contains("warning: no agent reports db-1/pg yet"));
    assert_eq!(s.fake.applied.lock().unwrap().pop().unwrap(), policy);
    let err = fails(
        &s.run(&pki, "op", &["policy", "apply", "-f", "/nonexistent.toml"])
            .await,
    );
    assert!(err.contains("/nonexistent.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_only_when_copies_stay_damaged() {
    let pki = Pki::new();
    let s = Server::start(&pki).await;

    // Verifying repairs, so it needs the operator role.
    let err = fails(&s.run(&pki, "eve", &["verify"]).await);
    assert!(err.contains("Verify needs the operator role"), "{err}");

    // Damage found and all of it repaired: exit 0, the problems printed.
    let out = ok(&s.run(&pki, "op", &["verify", "--deep"]).await);
    assert!(
        out.contains("objects checked:") && out.contains("1200"),
        "{out}"
    );
    assert!(
        out.contains("bytes re-read:") && out.contains("1.5 GiB"),
        "{out}"
    );
    assert!(out.contains("primary: chunks/ab: hash mismatch"), "{out}");
    assert!(
        out.contains("repaired:") && out.contains("primary: chunks/ab"),
        "{out}"
    );
    assert!(out.contains("1 damaged copy repaired"), "{out}");
    assert!(!out.contains("unrepaired"), "{out}");
    assert!(out.contains("3 objects (3.0 MiB)"), "{out}");
    let req = s.fake.verifies.lock().unwrap().pop().unwrap();
    assert!(req.deep && req.location.is_empty() && req.snapshot_id.is_empty());

    // Damage that could not be repaired: listed, and exit 1 saying so.
    let o = s
        .run(
            &pki,
            "op",
            &["verify", "--location", "offsite", "--snapshot", "5eed"],
        )
        .await;
    let err = fails(&o);
    assert!(
        err.contains("1 damaged copy could not be repaired")
            && err.contains("no good copy is left")
            && err.contains("offsite: chunks/cd"),
        "{err}"
    );
    let out = stdout(&o);
    assert!(
        out.contains("unrepaired:") && out.contains("offsite: chunks/cd"),
        "{out}"
    );
    assert!(out.contains("offsite: chunks/cd: missing"), "{out}");
    let req = s.fake.verifies.lock().unwrap().pop().unwrap();
    assert_eq!(
        (req.deep, req.location.as_str(), req.snapshot_id.as_str()),
        (false, "offsite", "5eed")
    );

    // JSON: the report on stdout, still exit 1.
    let o = s
        .run(
            &pki,
            "op",
            &["verify", "--location", "offsite", "-o", "json"],
        )
        .await;
    fails(&o);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["unrepaired"], serde_json::json!(["offsite: chunks/cd"]));
    assert_eq!(v["objects_checked"], 1200);
    assert_eq!(v["objects_copied"], 3);
    assert_eq!(v["location"], "offsite");
    let v = json(&s.run(&pki, "op", &["verify", "-o", "json"]).await);
    assert_eq!(v["ok"], true);
    assert_eq!(v["repaired"], serde_json::json!(["primary: chunks/ab"]));
    assert_eq!(v["location"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_ends_with_the_jobs_outcome() {
    let pki = Pki::new();
    let s = Server::start(&pki).await;

    // Not a terminal: plain lines, then the final job.
    let out = ok(&s
        .run(
            &pki,
            "op",
            &["jobs", "watch", "0193a0b1-0000-7000-8000-000000000001"],
        )
        .await);
    assert!(
        out.contains("queued") && out.contains("running  read 1.5 GiB"),
        "{out}"
    );
    assert!(out.contains("state:") && out.contains("succeeded"), "{out}");

    let o = s.run(&pki, "eve", &["jobs", "watch", JOB_BAD]).await;
    let err = fails_with(&o, 5);
    assert!(
        err.contains(&format!("job {JOB_BAD} failed: the agent lost its disk")),
        "{err}"
    );
    assert!(stdout(&o).contains("failed"), "{}", stdout(&o));

    // JSON: one object per update, the last one final.
    let o = s
        .run(&pki, "op", &["jobs", "watch", JOB_OK, "-o", "json"])
        .await;
    let lines: Vec<Value> = ok(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<&str> = lines.iter().map(|v| v["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["queued", "running", "succeeded"]);
    assert_eq!(lines[1]["progress"]["files"], 1234);

    // backup run --wait follows the new job; the fake fails full backups.
    let out = ok(&s
        .run(&pki, "op", &["backup", "run", "web-1/www", "--wait"])
        .await);
    assert!(
        out.contains(&format!("started backup job {JOB_OK}")),
        "{out}"
    );
    assert!(out.contains("succeeded"), "{out}");
    let err = fails(
        &s.run(
            &pki,
            "op",
            &["backup", "run", "web-1/www", "--full", "--wait"],
        )
        .await,
    );
    assert!(err.contains("failed: the agent lost its disk"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_certificate_is_checked() {
    let pki = Pki::new();
    let s = Server::start(&pki).await;
    // The controller's certificate says "localhost", not "127.0.0.1".
    let err = fails(
        &trireme(&[
            "status",
            "--controller",
            &s.addr,
            "--tls-dir",
            pki.dir(),
            "--name",
            "op",
        ])
        .await,
    );
    assert!(err.contains("--server-name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_certificate_is_explained() {
    let pki = Pki::new();
    let other = Pki::new();
    let s = Server::start(&pki).await;
    let o = trireme(&[
        "status",
        "--controller",
        &s.addr,
        "--server-name",
        "localhost",
        "--cert",
        other.dir.join("op.pem").to_str().unwrap(),
        "--key",
        other.dir.join("op.key").to_str().unwrap(),
        "--ca",
        pki.dir.join("ca.pem").to_str().unwrap(),
    ])
    .await;
    // The TLS alert that says why reaches the client only when it wins a
    // race with the connection's end; either way the message points at the
    // certificate.
    let err = fails(&o);
    assert!(err.contains("your certificate"), "{err}");
    assert!(err.contains(&s.addr), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_mfa_commands() {
    let pki = Pki::new();
    let s = Server::start(&pki).await;

    let out = ok(&s
        .run(
            &pki,
            "eve",
            &["audit", "ls", "--actor", "op", "--since", "24h"],
        )
        .await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("SEQ") && lines[0].contains("FROM"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("1 ")
            && lines[1].contains("op (operator)")
            && lines[1].contains("10.1.2.3:40000")
            && lines[1].contains("refused: policy apply is a sensitive action"),
        "{out}"
    );
    let req = s.fake.audit_lists.lock().unwrap().pop().unwrap();
    assert_eq!(req.actor, "op");
    let ago = chrono::Utc::now().timestamp() - req.since_unix;
    assert!((24 * 3600 - 60..=24 * 3600 + 60).contains(&ago), "{ago}");
    let v = json(&s.run(&pki, "eve", &["audit", "ls", "--json"]).await);
    assert_eq!(v[1]["outcome"], "ok");
    assert_eq!(v[1]["reason"], Value::Null);
    assert_eq!(v[0]["hash"], "ab".repeat(32));
    let err = fails(
        &s.run(&pki, "eve", &["audit", "ls", "--since", "soon"])
            .await,
    );
    assert!(err.contains("24h"), "{err}");

    // A broken chain: the report, and exit 1 naming the entry.
    let o = s.run(&pki, "eve", &["audit", "verify"]).await;
    let err = fails(&o);
    assert!(err.contains("the audit log is broken at entry 7"), "{err}");
    assert!(stdout(&o).contains("BROKEN at entry 7"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("primary: agrees (9 entries compared)"),
        "{}",
        stdout(&o)
    );

    // MFA: the secret is shown once; the code travels as metadata.
    let out = ok(&s.run(&pki, "op", &["mfa", "enroll"]).await);
    assert!(
        out.contains("JBSWY3DPEHPK3PXP") && out.contains("trireme mfa confirm"),
        "{out}"
    );
    ok(&s.run(&pki, "op", &["mfa", "confirm", "123456"]).await);
    let err = fails(&s.run(&pki, "op", &["mfa", "confirm", "654321"]).await);
    assert!(err.contains("wrong or expired"), "{err}");
    let policy = pki.dir.join("p.toml");
    std::fs::write(&policy, "[[policy]]\n").unwrap();
    ok(&s
        .run(
            &pki,
            "op",
            &[
                "policy",
                "apply",
                "-f",
                policy.to_str().unwrap(),
                "--totp",
                "424242",
            ],
        )
        .await);
    ok(&s
        .run(
            &pki,
            "op",
            &["policy", "apply", "-f", policy.to_str().unwrap()],
        )
        .await);
    let totps = s.fake.totps.lock().unwrap().clone();
    assert_eq!(
        totps,
        vec![None, Some("424242".to_string()), None],
        "enroll, apply with --totp, apply without"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_shows_what_goes_per_location_and_needs_the_operator_role() {
    let pki = Pki::new();
    let s = Server::start(&pki).await;
    let err = fails(&s.run(&pki, "eve", &["prune", "--dry-run"]).await);
    assert!(err.contains("Prune needs the operator role"), "{err}");

    let out = ok(&s
        .run(&pki, "op", &["prune", "--dry-run", "--source", "web-1/www"])
        .await);
    assert!(out.contains("would remove 1 snapshot(s)"), "{out}");
    assert!(
        out.contains("5eedc0ffee00") && out.contains("outside every window"),
        "{out}"
    );
    assert!(out.contains("5.0 MiB"), "{out}");
    assert!(
        out.contains("skipped: behind: kept snapshot 1234abcd"),
        "{out}"
    );
    assert!(out.contains("note: db-1/pg: no policy"), "{out}");
    let req = s.fake.prunes.lock().unwrap().pop().unwrap();
    assert!(req.dry_run);
    assert_eq!(req.source, src("web-1", "www"));

    let out = ok(&s
        .run(&pki, "op", &["-o", "json", "prune", "--totp", "135790"])
        .await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["locations"][0]["packs_deleted"], 2);
    assert_eq!(
        v["locations"][1]["skipped"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("behind")
    );
    assert!(s
        .fake
        .prunes
        .lock()
        .unwrap()
        .pop()
        .unwrap()
        .source
        .is_none());

    // A location that stopped part-way: exit 1, naming it.
    let err = fails(
        &s.run(&pki, "op", &["prune", "--source", "web-1/broken"])
            .await,
    );
    assert!(
        err.contains("prune stopped part-way at primary: storage error"),
        "{err}"
    );
    let err = fails(&s.run(&pki, "op", &["prune", "--source", "nope"]).await);
    assert!(
        err.contains("agent/source") || err.contains("AGENT/SOURCE"),
        "{err}"
    );
    // The code travels like a restore's: `--totp` as request metadata.
    assert_eq!(
        s.fake.totps.lock().unwrap().clone(),
        vec![None, Some("135790".to_string()), None],
        "dry run, prune with --totp, prune without"
    );
}

#[tokio::test]
async fn snapshot_holds_tags_filters_and_forget() {
    let pki = Pki::new();
    let s = Server::start(&pki).await;
    // Filters travel as asked.
    ok(&s
        .run(
            &pki,
            "eve",
            &[
                "snapshots",
                "ls",
                "--tag",
                "weekly",
                "--tag",
                "pre-upgrade",
                "--host",
                "web-1",
                "--source",
                "www",
                "--since",
                "2026-01-01T00:00:00Z",
                "--until",
                "2026-02-01T00:00:00Z",
            ],
        )
        .await);
    let asked = s.fake.snapshot_lists.lock().unwrap().pop().unwrap();
    assert_eq!(asked.tags, ["weekly", "pre-upgrade"]);
    assert_eq!(asked.source, src("web-1", "www"));
    assert_eq!(asked.since_unix, 1_767_225_600);
    assert_eq!(asked.until_unix, 1_769_904_000);
    let err = fails(
        &s.run(
            &pki,
            "eve",
            &["snapshots", "ls", "web-1/www", "--host", "db-1"],
        )
        .await,
    );
    assert!(err.contains("two different agents"), "{err}");

    // Hold: shown in JSON and the listing; a viewer is refused.
    let err = fails(
        &s.run(&pki, "eve", &["snapshots", "hold", "5eed", "--reason", "x"])
            .await,
    );
    assert!(err.contains("needs the operator role"), "{err}");
    let out = ok(&s
        .run(
            &pki,
            "op",
            &[
                "-o",
                "json",
                "snapshots",
                "hold",
                "5eed",
                "--reason",
                "case 42",
            ],
        )
        .await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["held"], true, "{v}");
    assert_eq!(v["hold"]["reason"], "case 42", "{v}");
    assert_eq!(v["hold"]["until"], Value::Null, "{v}");
    let out = ok(&s
        .run(
            &pki,
            "op",
            &["snapshots", "hold", "5eed", "--reason", "case 42"],
        )
        .await);
    assert!(
        out.contains("held by op") && out.contains("case 42"),
        "{out}"
    );

    let out = ok(&s
        .run(
            &pki,
            "op",
            &[
                "-o",
                "json",
                "snapshots",
                "tag",
                "5eed",
                "--add",
                "keep",
                "--add",
                "q1",
            ],
        )
        .await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["keep", "q1"]), "{v}");

    // Forget carries the code and says what happens to the data.
    let out = ok(&s
        .run(
            &pki,
            "op",
            &["snapshots", "forget", "5eed", "--totp", "123456"],
        )
        .await);
    assert_eq!(
        s.fake.totps.lock().unwrap().pop().unwrap().as_deref(),
        Some("123456")
    );
    assert!(out.contains("manifest deleted at primary"), "{out}");
    assert!(out.contains("still at offsite: unreachable"), "{out}");
    assert!(out.contains("next prune"), "{out}");
}

/// `ls`, `diff`, `find`, `stats` and `dump` print what the agent's local
/// mode prints (`ls -l` mode strings, `+ - M m`, one line per version, the
/// ratios), and `dump` writes the bytes as they arrive, with the code.
#[tokio::test]
async fn browse_commands_print_like_local_mode() {
    let pki = Pki::new();
    let s = Server::start(&pki).await;
    let out = ok(&s.run(&pki, "eve", &["ls", SNAP, "-l"]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("drwxr-xr-x   1000   1000"), "{out}");
    assert!(lines[0].ends_with("2025-11-25T06:27:00Z /etc/"), "{out}");
    assert!(lines[1].starts_with("-rwsr-x---"), "{out}");
    assert!(
        lines[1].contains(" 42 ") && lines[1].ends_with("/run.sh"),
        "{out}"
    );
    assert!(lines[2].starts_with("lrwxrwxrwx") && lines[2].ends_with("/latest -> run.sh"));
    let short = ok(&s.run(&pki, "eve", &["ls", SNAP]).await);
    assert_eq!(short, "/etc/\n/run.sh\n/latest\n");
    let capped = ok(&s.run(&pki, "eve", &["ls", SNAP, "--limit", "3"]).await);
    assert!(capped.contains("note: truncated at 3 entries"), "{capped}");
    let v = json(&s.run(&pki, "eve", &["ls", SNAP, "-o", "json"]).await);
    assert_eq!(v["entries"][1]["mode"], "4750");
    assert_eq!(v["entries"][2]["target"], "run.sh");
    assert_eq!(v["entries"][0]["target"], Value::Null);
    let err = fails(&s.run(&pki, "eve", &["ls", SNAP, "/nope"]).await);
    assert!(err.contains("/nope"), "{err}");

    let d = ok(&s.run(&pki, "eve", &["diff", SNAP, SNAP]).await);
    for want in [
        "+ /a  (10 bytes)",
        "- /b  (5 bytes)",
        "M /c  (3 -> 4 bytes)",
        "m /d  (2 bytes)",
        "1 added, 1 removed, 1 modified, 1 metadata only; +14 B -8 B",
    ] {
        assert!(d.contains(want), "{want}: {d}");
    }
    let f = ok(&s.run(&pki, "eve", &["find", "*.json"]).await);
    assert!(
        f.contains("/etc/app.json  12 bytes, modified 2025-11-25T06:27:00Z  in 1 snapshot(s): ")
            && f.contains("1 version(s) of 1 path(s) in 2 snapshot(s) searched"),
        "{f}"
    );
    let st = ok(&s.run(&pki, "eve", &["stats", SNAP]).await);
    assert!(
        st.contains("deduplication      2.00x") && st.contains("compression        2.00x"),
        "{st}"
    );
    let v = json(&s.run(&pki, "eve", &["stats", "-o", "json"]).await);
    assert_eq!(v["dedup_ratio"], 2.0);

    let out = s
        .run(&pki, "op", &["dump", SNAP, "/x", "--totp", "123456"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"hello world\n");
    assert_eq!(
        s.fake
            .totps
            .lock()
            .unwrap()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("123456")
    );
    // Viewers may not dump.
    fails_with(&s.run(&pki, "eve", &["dump", SNAP, "/x"]).await, 3);
}
