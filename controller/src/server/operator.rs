//! `OperatorService`: what the `trireme` CLI calls. Viewers read; operators
//! also change things. Ids may be given as unique prefixes.
//!
//! Each handler checks the caller's role (and, for sensitive actions, the
//! TOTP second factor), decodes the request, makes one call — into
//! [`crate::views`] or [`crate::status`] to read, into [`super::actions`]
//! to act — and encodes the answer ([`super::convert`]).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};
use trireme_net::Role;
use trireme_proto::v1 as pb;
use trireme_proto::v1::operator_service_server::OperatorService;

use super::actions::{self, holds};
use super::{blocking, browse_rpc, convert, Shared};
use crate::views;

mod security;
mod watch;

const READ: &[Role] = &[Role::Operator, Role::Viewer];
const OPERATE: &[Role] = &[Role::Operator];

/// Implementation of `trireme.v1.OperatorService`.
pub struct OperatorApi {
    shared: Arc<Shared>,
}

impl OperatorApi {
    /// The service over the controller's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        OperatorApi { shared }
    }

    /// `job` as the CLI shows it, with its snapshot.
    fn job_info(&self, job: crate::jobs::Job) -> pb::JobInfo {
        convert::job_info(&views::job_view(&self.shared.catalog, job))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::JobInfo, Status>> + Send>>;

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsReply>, Status> {
        self.authorize(&request, READ, "agents ls")?;
        let agents = actions::agents(&self.shared)?;
        Ok(Response::new(convert::agents_reply(agents)))
    }

    async fn list_sources(
        &self,
        request: Request<pb::ListSourcesRequest>,
    ) -> Result<Response<pb::ListSourcesReply>, Status> {
        self.authorize(&request, READ, "sources ls")?;
        let sources = views::sources(&self.shared.catalog, &request.get_ref().agent)?;
        Ok(Response::new(convert::sources_reply(sources)))
    }

    async fn apply_policy(
        &self,
        request: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyReply>, Status> {
        let (caller, passed) = self.sensitive(&request, "policy apply").await?;
        let applied =
            actions::apply_policy(&self.shared, &caller, passed, &request.get_ref().toml)?;
        Ok(Response::new(convert::apply_policy_reply(applied)))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesReply>, Status> {
        self.authorize(&request, READ, "policy ls")?;
        let policies = views::policies(&self.shared.catalog, self.shared.now())?;
        Ok(Response::new(convert::policies_reply(policies)))
    }

    async fn run_backup(
        &self,
        request: Request<pb::RunBackupRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let caller = self.caller(&request, OPERATE, "backup run")?;
        let r = request.into_inner();
        let source = convert::source_id(r.source.as_ref())?;
        let mode = convert::backup_mode(r.full);
        let job = actions::run_backup(&self.shared, &caller, &source, mode, &r.tags)?;
        Ok(Response::new(self.job_info(job)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsReply>, Status> {
        self.authorize(&request, READ, "jobs ls")?;
        let filter = convert::job_filter(request.into_inner());
        let jobs = views::jobs(&self.shared.catalog, &filter)?;
        Ok(Response::new(convert::jobs_reply(&jobs)))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        self.authorize(&request, READ, "jobs show")?;
        let job = views::find_job(&self.shared.catalog, &request.get_ref().id)?;
        Ok(Response::new(self.job_info(job)))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let caller = self.caller(&request, OPERATE, "job cancel")?;
        let job = actions::cancel_job(&self.shared, &caller, &request.get_ref().id)?;
        Ok(Response::new(self.job_info(job)))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = self.caller(&request, READ, "jobs watch")?;
        let job = views::find_job(&self.shared.catalog, &request.get_ref().id)?;
        let stream = watch::watch(self.shared.clone(), caller.id, caller.peer, job);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsReply>, Status> {
        self.authorize(&request, READ, "snapshots ls")?;
        let filter = convert::snapshot_filter(request.into_inner());
        let snapshots = views::snapshots(&self.shared.catalog, &filter)?;
        Ok(Response::new(convert::snapshots_reply(
            &snapshots,
            self.shared.now(),
            &self.shared.protection,
        )))
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        self.authorize(&request, READ, "snapshots show")?;
        let s = views::find_snapshot(&self.shared.catalog, &request.get_ref().id)?;
        let v = views::snapshot_view(&self.shared.catalog, s)?;
        Ok(Response::new(convert::snapshot_view_info(
            &v,
            self.shared.now(),
            &self.shared.protection,
        )))
    }

    async fn restore(
        &self,
        request: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        // Every restore counts as sensitive: it writes onto a machine.
        let (caller, passed) = self.sensitive(&request, "restore").await?;
        let ask = convert::restore_ask(request.into_inner())?;
        let job = actions::restore(&self.shared, &caller, passed, &ask)?;
        Ok(Response::new(self.job_info(job)))
    }

    async fn list_locations(
        &self,
        request: Request<pb::ListLocationsRequest>,
    ) -> Result<Response<pb::ListLocationsReply>, Status> {
        self.authorize(&request, READ, "locations ls")?;
        let states = self.shared.replicator.states();
        Ok(Response::new(convert::locations_reply(
            &self.shared.locations,
            &states,
        )))
    }

    async fn rebuild_catalog(
        &self,
        request: Request<pb::RebuildCatalogRequest>,
    ) -> Result<Response<pb::RebuildCatalogReply>, Status> {
        let (caller, passed) = self.sensitive(&request, "catalog rebuild").await?;
        let location = request.into_inner().location;
        let report = actions::rebuild_catalog(&self.shared, &caller, passed, &location).await?;
        Ok(Response::new(convert::rebuild_reply(report)))
    }

    async fn run_restore_test(
        &self,
        request: Request<pb::RunRestoreTestRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        // A restore test restores (onto a staging target): sensitive too.
        let (caller, passed) = self.sensitive(&request, "restore-test run").await?;
        let source = convert::source_id(request.get_ref().source.as_ref())?;
        let job = actions::run_restore_test(&self.shared, &caller, passed, &source)?;
        Ok(Response::new(self.job_info(job)))
    }

    async fn list_restore_tests(
        &self,
        request: Request<pb::ListRestoreTestsRequest>,
    ) -> Result<Response<pb::ListRestoreTestsReply>, Status> {
        self.authorize(&request, READ, "restore-test ls")?;
        let r = request.get_ref();
        let only = convert::restore_tests_of(r)?;
        let tests = views::restore_tests(&self.shared.catalog, only.as_ref(), r.limit)?;
        Ok(Response::new(convert::restore_tests_reply(&tests)))
    }

    async fn run_drill(
        &self,
        request: Request<pb::RunDrillRequest>,
    ) -> Result<Response<pb::DrillInfo>, Status> {
        let (caller, passed) = self.sensitive(&request, "drill run").await?;
        let (location, people) = convert::drill_location(request.into_inner());
        let drill = actions::run_drill(&self.shared, &caller, passed, location, &people)?;
        Ok(Response::new(convert::drill_info(&drill, false)))
    }

    async fn restore_platform(
        &self,
        request: Request<pb::RestorePlatformRequest>,
    ) -> Result<Response<pb::DrillInfo>, Status> {
        let (caller, passed) = self.sensitive(&request, "restore platform").await?;
        let r = request.into_inner();
        let d = actions::restore_platform(&self.shared, &caller, passed, &r)?;
        Ok(Response::new(convert::drill_info(&d, false)))
    }

    async fn annotate_drill(
        &self,
        request: Request<pb::AnnotateDrillRequest>,
    ) -> Result<Response<pb::DrillInfo>, Status> {
        let caller = self.caller(&request, OPERATE, "drill annotate")?;
        let r = request.into_inner();
        let d = actions::annotate_drill(&self.shared, &caller, &r.id, &r.lessons, &r.participants)?;
        Ok(Response::new(convert::drill_info(&d, false)))
    }

    async fn list_drills(
        &self,
        request: Request<pb::ListDrillsRequest>,
    ) -> Result<Response<pb::ListDrillsReply>, Status> {
        self.authorize(&request, READ, "drill ls")?;
        let drills = views::drills(&self.shared.catalog)?;
        Ok(Response::new(convert::drills_reply(&drills)))
    }

    async fn get_drill(
        &self,
        request: Request<pb::GetDrillRequest>,
    ) -> Result<Response<pb::DrillInfo>, Status> {
        self.authorize(&request, READ, "drill show")?;
        let d = views::find_drill(&self.shared.catalog, &request.get_ref().id)?;
        Ok(Response::new(convert::drill_info(&d, true)))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyReply>, Status> {
        let caller = self.caller(&request, OPERATE, "verify")?;
        let ask = convert::verify_ask(request.into_inner());
        let verified = actions::verify(&self.shared, &caller, &ask).await?;
        Ok(Response::new(convert::verify_reply(verified)))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        self.authorize(&request, READ, "status")?;
        let status = actions::status(&self.shared)?;
        Ok(Response::new(convert::status_reply(status)))
    }

    async fn prune(
        &self,
        request: Request<pb::PruneRequest>,
    ) -> Result<Response<pb::PruneReply>, Status> {
        let action = super::prune_rpc::ACTION;
        let caller = self.caller(&request, OPERATE, action)?;
        // Deleting backups is as sensitive as restoring them. A dry run
        // deletes nothing: the role suffices (it is still audited).
        let mfa = if request.get_ref().dry_run {
            " (dry run: no second factor needed)"
        } else {
            actions::mfa_note(self.second_factor(&request, &caller, action).await?)
        };
        let r = request.get_ref();
        let outcome = super::prune_rpc::run(
            &self.shared,
            &caller.id,
            caller.peer,
            mfa,
            r.dry_run,
            convert::prune_source(r),
        )
        .await?;
        Ok(Response::new(convert::prune_reply(&outcome)))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditReply>, Status> {
        self.authorize(&request, READ, "audit ls")?;
        let r = request.get_ref();
        let (since, actor) = convert::audit_filter(r);
        let limit = views::page(r.limit);
        let entries = blocking(|| self.shared.catalog.audit().list(since, actor, limit))?;
        Ok(Response::new(convert::audit_reply(entries)))
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditReply>, Status> {
        let caller = self.caller(&request, READ, "audit verify")?;
        let check = actions::verify_audit(&self.shared, &caller).await;
        Ok(Response::new(convert::verify_audit_reply(check)))
    }

    async fn mfa_enroll(
        &self,
        request: Request<pb::MfaEnrollRequest>,
    ) -> Result<Response<pb::MfaEnrollReply>, Status> {
        let caller = self.caller(&request, OPERATE, "mfa enroll")?;
        let code = security::totp_code(&request);
        let enrollment = actions::mfa_enroll(&self.shared, &caller, code.as_deref()).await?;
        Ok(Response::new(convert::mfa_enroll_reply(
            caller.id.name,
            enrollment,
        )))
    }

    async fn mfa_confirm(
        &self,
        request: Request<pb::MfaConfirmRequest>,
    ) -> Result<Response<pb::MfaConfirmReply>, Status> {
        let caller = self.caller(&request, OPERATE, "mfa confirm")?;
        actions::mfa_confirm(&self.shared, &caller, &request.get_ref().code).await?;
        Ok(Response::new(convert::mfa_confirm_reply(caller.id.name)))
    }

    async fn export_key(
        &self,
        request: Request<pb::ExportKeyRequest>,
    ) -> Result<Response<pb::ExportKeyReply>, Status> {
        let (caller, passed) = self.sensitive(&request, "key export").await?;
        let passphrase = request.into_inner().passphrase;
        let (export, key_id) =
            actions::export_key(&self.shared, &caller, passed, passphrase).await?;
        Ok(Response::new(convert::export_key_reply(export, key_id)))
    }

    async fn hold_snapshot(
        &self,
        request: Request<pb::HoldSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let caller = self.caller(&request, OPERATE, holds::HOLD)?;
        let (id, reason, until) = convert::hold_ask(request.into_inner());
        let (s, marks) = holds::hold(&self.shared, &caller, &id, &reason, until)?;
        Ok(Response::new(self.marked(s, marks)))
    }

    async fn unhold_snapshot(
        &self,
        request: Request<pb::UnholdSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        // Lifting a hold makes the snapshot deletable again: sensitive.
        let (caller, passed) = self.sensitive(&request, holds::UNHOLD).await?;
        let (s, marks) = holds::unhold(&self.shared, &caller, passed, &request.get_ref().id)?;
        Ok(Response::new(self.marked(s, marks)))
    }

    async fn tag_snapshot(
        &self,
        request: Request<pb::TagSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotInfo>, Status> {
        let caller = self.caller(&request, OPERATE, holds::TAG)?;
        let r = request.into_inner();
        let (s, marks) = holds::tag(&self.shared, &caller, &r.id, &r.add, &r.remove)?;
        Ok(Response::new(self.marked(s, marks)))
    }

    async fn forget_snapshot(
        &self,
        request: Request<pb::ForgetSnapshotRequest>,
    ) -> Result<Response<pb::ForgetSnapshotReply>, Status> {
        // Deleting a backup is as sensitive as a prune or a restore.
        let (caller, passed) = self.sensitive(&request, holds::FORGET).await?;
        let done = holds::forget(&self.shared, &caller, passed, &request.get_ref().id).await?;
        Ok(Response::new(convert::forget_reply(
            &done,
            holds::FORGET_NOTE,
        )))
    }

    async fn list_tree(
        &self,
        request: Request<pb::ListTreeRequest>,
    ) -> Result<Response<pb::ListTreeReply>, Status> {
        let caller = self.caller(&request, READ, browse_rpc::LS)?;
        let r = browse_rpc::list(&self.shared, &caller, request.into_inner()).await?;
        Ok(Response::new(r))
    }

    async fn diff_snapshots(
        &self,
        request: Request<pb::DiffSnapshotsRequest>,
    ) -> Result<Response<pb::DiffSnapshotsReply>, Status> {
        let caller = self.caller(&request, READ, browse_rpc::DIFF)?;
        let r = browse_rpc::diff(&self.shared, &caller, request.into_inner()).await?;
        Ok(Response::new(r))
    }

    async fn find_files(
        &self,
        request: Request<pb::FindFilesRequest>,
    ) -> Result<Response<pb::FindFilesReply>, Status> {
        let caller = self.caller(&request, READ, browse_rpc::FIND)?;
        let r = browse_rpc::find(&self.shared, &caller, request.into_inner()).await?;
        Ok(Response::new(r))
    }

    type DumpFileStream = Pin<Box<dyn Stream<Item = Result<pb::DumpChunk, Status>> + Send>>;

    async fn dump_file(
        &self,
        request: Request<pb::DumpFileRequest>,
    ) -> Result<Response<Self::DumpFileStream>, Status> {
        // Reading backed-up data back is as sensitive as a restore.
        let (caller, passed) = self.sensitive(&request, browse_rpc::DUMP).await?;
        let rx = browse_rpc::dump(
            self.shared.clone(),
            caller,
            actions::mfa_note(passed),
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn snapshot_stats(
        &self,
        request: Request<pb::SnapshotStatsRequest>,
    ) -> Result<Response<pb::SnapshotStatsReply>, Status> {
        let caller = self.caller(&request, READ, browse_rpc::STATS)?;
        let r = browse_rpc::stats(&self.shared, &caller, request.into_inner()).await?;
        Ok(Response::new(r))
    }
}

impl OperatorApi {
    /// Snapshot `s` with `marks`, as the CLI shows it.
    fn marked(
        &self,
        s: crate::snapshots::SnapshotRecord,
        marks: crate::holds::Marks,
    ) -> pb::SnapshotInfo {
        convert::snapshot_view_info(
            &views::SnapshotView { record: s, marks },
            self.shared.now(),
            &self.shared.protection,
        )
    }
}
