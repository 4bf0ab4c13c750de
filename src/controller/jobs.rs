//! `EmrRayJob` mirrors of the workspaces that opt in (`spec.jobs.enabled`).
//!
//! Each remote listing round of such a workspace also lists its jobs submitted within the
//! retention window (`ListRayJob` with the `submitTime` filter, same endpoint, credentials and
//! remote budget as the cluster listing), then:
//!
//! * [`plan_jobs`] (pure, table-tested below) decides the writes from the job listing and the
//!   job mirrors that exist: a listed job gets a mirror, written only where it differs (a
//!   steady workspace makes no write); a mirror whose job is not in the listing (it left the
//!   window, or vanished) is deleted **only** when the listing is complete — a failed or
//!   partial job listing writes and deletes nothing, and the mirrors keep their data;
//! * [`write_jobs`] performs them (server-side apply with the operator's field manager;
//!   status through the status subresource).
//!
//! The existing job mirrors are read with one LIST by the workspace's label per round, served
//! from the API server's watch cache (`resourceVersion=0`); there is no job watch, so a job
//! mirror deleted by hand comes back at the next round rather than at once. Job mirrors left
//! without an owner by a workspace of the same name deleted with `--cascade=orphan` are taken
//! over here ([`ExistingJob::of`]); those of a workspace that does not come back are deleted
//! by the sweep ([`super::orphans::JobOrphans`]).
//!
//! Disabling jobs (or never enabling them) deletes the workspace's job mirrors: they are an
//! opt-in view, and a mirror that is no longer kept current would lie. This is looked at once
//! per workspace after the operator starts and after each change of the spec, never every
//! interval.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use super::apply::{self, publish};
use super::context::{Context, key};
use super::error::SyncError;
use super::mirror::{self, label_value};
use super::plan::Owner;
use super::state::WorkspaceState;
use crate::api::MirrorReason;
use crate::api::conditions::{ConditionSet, ConditionType};
use crate::api::{
    Condition, EmrRayJob, EmrRayJobSpec, EmrRayJobStatus, EmrWorkspace, Interval, LABEL_MANAGED_BY,
    LABEL_SHARD, LABEL_SUBMISSION_ID, LABEL_WORKSPACE, LABEL_WORKSPACE_ID, MANAGED_BY, Reason,
    WorkspaceJobsStatus,
};
use crate::emr::JobState;
use crate::emr::redact::redact_endpoint;
use crate::emr::{ErrorKind, JobListing, RayJob};
use crate::metrics::{KubeResource, WorkspaceLabels, WriteOperation};
use crate::time::{Time, rfc3339_millis};

/// What is remembered between rounds about a workspace's jobs.
#[derive(Clone, Debug, Default)]
pub struct JobsState {
    /// The job listing of the latest round, when it was complete; taken by the write pass.
    pub pending: Option<Arc<JobListing>>,
    /// The summary shown in `status.jobs` (counts of the last complete listing).
    pub summary: Option<WorkspaceJobsStatus>,
    /// The job mirrors of a disabled workspace have been looked for (and deleted) since the
    /// operator started or the spec changed.
    pub cleaned: bool,
    /// The `Failed`/`Timeout` jobs known after the last complete listing whose mirrors were
    /// looked at (`None` until the first since the operator started or jobs were enabled): what
    /// [`new_failures`] compares the next listing with.
    pub failed: Option<Arc<HashSet<String>>>,
}

/// The job listing of one round: complete, or why not.
pub type JobResult = Result<JobListing, SyncError>;

/// Records a round's job listing in the workspace state (the summary keeps the counts of the
/// last complete listing when this one failed).
pub fn record(st: &mut WorkspaceState, retention: Interval, result: JobResult, now: &str) {
    let jobs = &mut st.jobs;
    jobs.cleaned = false;
    let mut summary = jobs.summary.take().unwrap_or_default();
    summary.retention = Some(retention.to_string());
    match result {
        Ok(listing) => {
            let (by_state, failed) = count(&listing.jobs);
            summary.total = Some(listing.jobs.len() as i64);
            summary.failed = Some(failed);
            summary.by_state = by_state;
            summary.last_successful_list_time = Some(now.to_string());
            summary.reason = None;
            summary.message = None;
            jobs.pending = Some(Arc::new(listing));
        }
        Err(e) => {
            let reason = job_reason(&e);
            summary.reason = Some(reason.as_str().to_string());
            summary.message = Some(mirror::truncated(&e.to_string(), 1024));
            jobs.pending = None;
        }
    }
    jobs.summary = Some(summary);
}

/// A job listing's failure as a reason: too many jobs is its own.
fn job_reason(e: &SyncError) -> Reason {
    match e {
        SyncError::Remote(r) if r.kind == ErrorKind::TooManyClusters => Reason::TooManyJobs,
        e => e.reason(),
    }
}

/// Jobs per state (the SDK's eight, the rest as `Other`) and the failed ones.
fn count(jobs: &[RayJob]) -> (BTreeMap<String, i64>, i64) {
    let mut by_state = BTreeMap::new();
    let mut failed = 0;
    for j in jobs {
        let label = match (j.state(), j.status.as_deref()) {
            (Some(state), _) => state.as_str(),
            (None, None | Some("Unknown")) => "Unknown",
            (None, Some(_)) => "Other",
        };
        *by_state.entry(label.to_string()).or_insert(0) += 1;
        failed += i64::from(j.failed());
    }
    (by_state, failed)
}

/// The jobs of a complete listing that count as new failures (`emr_ray_operator_job_failures_total`),
/// and the failed jobs to compare the next listing with. A job counts once, when a listing
/// shows it `Failed` or `Timeout` and the previous one (`known`) did not.
///
/// The first listing since the operator started or jobs were enabled (`known` is `None`) counts
/// none: the counter has just been exported at 0, and a first sample that already holds the
/// failures would be no increase to Prometheus. It remembers as known only the jobs whose mirror
/// already shows them failed (or, in a workspace without any job mirror — jobs just enabled —
/// every failed job: the failures it already had are not news), so a job that failed while the
/// operator was away counts at the next listing.
///
/// Unlike the failed jobs in the window (`workspace_jobs_failed`), this never goes down when an
/// old failed job leaves the window, so a failure at the same moment is not hidden. Pure.
pub fn new_failures(
    jobs: &[RayJob],
    known: Option<&HashSet<String>>,
    existing: &[ExistingJob],
) -> (u64, HashSet<String>) {
    let failed: HashSet<String> = jobs
        .iter()
        .filter(|j| j.failed())
        .map(|j| j.submission_id.clone())
        .collect();
    match known {
        Some(known) => (
            failed.iter().filter(|id| !known.contains(*id)).count() as u64,
            failed,
        ),
        None => {
            let mirrors: HashMap<&str, &ExistingJob> = existing
                .iter()
                .filter(|e| e.ours)
                .map(|e| (e.submission_id.as_str(), e))
                .collect();
            if mirrors.is_empty() {
                return (0, failed);
            }
            let shown_failed = |id: &String| {
                mirrors.get(id.as_str()).is_some_and(|m| {
                    let state = m.status.as_ref().and_then(|s| s.state.as_deref());
                    matches!(
                        state.and_then(JobState::parse),
                        Some(JobState::Failed | JobState::Timeout)
                    )
                })
            };
            (0, failed.into_iter().filter(shown_failed).collect())
        }
    }
}

/// The labels of a job mirror.
pub fn job_labels(owner: &Owner, submission_id: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_WORKSPACE.to_string(), label_value(&owner.name)),
        (
            LABEL_WORKSPACE_ID.to_string(),
            label_value(&owner.workspace_id),
        ),
        (LABEL_SUBMISSION_ID.to_string(), label_value(submission_id)),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ]);
    if let Some(shard) = &owner.shard {
        labels.insert(LABEL_SHARD.to_string(), shard.clone());
    }
    labels
}

fn job_spec(owner: &Owner, submission_id: &str) -> EmrRayJobSpec {
    EmrRayJobSpec {
        workspace_ref: owner.name.clone(),
        workspace_id: owner.workspace_id.clone(),
        region_id: owner.region_id.clone(),
        submission_id: submission_id.to_string(),
    }
}

/// The status fields that come from the remote job (everything but conditions): times in
/// RFC 3339, the duration as `1h2m3s`, the dashboard URL without its token.
pub fn remote_job_status(j: &RayJob) -> EmrRayJobStatus {
    EmrRayJobStatus {
        conditions: Vec::new(),
        observed_generation: None,
        state: j.status.clone(),
        submission_id: Some(j.submission_id.clone()),
        name: j.name.clone(),
        resource_queue: j.resource_queue.clone(),
        cluster_state: j.cluster_state.clone(),
        submit_time: j.submit_time.and_then(rfc3339_millis),
        start_time: j.start_time.and_then(rfc3339_millis),
        end_time: j.end_time.and_then(rfc3339_millis),
        duration: j
            .duration
            .filter(|d| *d >= 0)
            .map(|d| Interval::from_secs(d as u64).min(Interval::MAX).to_string()),
        cu_hours: j.cu_hours.filter(|c| c.is_finite()),
        creator_name: j.creator_name.clone(),
        dashboard_url: j
            .dashboard_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(|u| mirror::truncated(&redact_endpoint(u), mirror::MAX_URL)),
    }
}

/// kstatus conditions of a job mirror, like KubeRay's RayJob: `Ready=True` once `Succeeded`;
/// `Stalled=True` when `Failed` or `Timeout`; `Reconciling=True` while `Submitted`, `Pending`,
/// `Running` or `Cancelling`; `Cancelled` is `Ready=False` and final.
pub fn job_conditions(
    status: &EmrRayJobStatus,
    previous: &[Condition],
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    let state = status.state.as_deref().unwrap_or("Unknown");
    let mut out = ConditionSet::new(previous, generation, now);
    let said = format!("Ray job is {state}");
    match JobState::parse(state) {
        Some(s @ JobState::Succeeded) => out.set(ConditionType::Ready, true, s, said),
        Some(s @ (JobState::Failed | JobState::Timeout)) => {
            let why = if s == JobState::Timeout {
                "Ray job was cancelled after its timeout".to_string()
            } else {
                "Ray job failed".to_string()
            };
            out.set(ConditionType::Ready, false, s, why.clone());
            out.set(ConditionType::Stalled, true, s, why)
        }
        Some(
            s
            @ (JobState::Submitted | JobState::Pending | JobState::Running | JobState::Cancelling),
        ) => {
            out.set(ConditionType::Ready, false, s, said.clone());
            out.set(ConditionType::Reconciling, true, s, said)
        }
        Some(s @ JobState::Cancelled) => out.set(ConditionType::Ready, false, s, said),
        None => out.set(
            ConditionType::Ready,
            false,
            MirrorReason::UnknownState,
            format!("Ray job reports state {state:?}"),
        ),
    };
    out.build()
}

/// A job mirror as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct ExistingJob {
    pub name: String,
    pub submission_id: String,
    pub generation: Option<i64>,
    /// Controlled by this workspace (by UID).
    pub ours: bool,
    /// Spec and labels as this owner gives them.
    pub shaped: bool,
    pub status: Option<EmrRayJobStatus>,
}

impl ExistingJob {
    /// A mirror without a controlling owner that names this workspace (left by a workspace of
    /// this name deleted with `--cascade=orphan`, see [`super::orphans`]) counts as this
    /// workspace's, never as shaped: it is taken over (applied with this owner) or deleted
    /// like its own.
    pub fn of(m: &EmrRayJob, owner: &Owner) -> Self {
        let controlled = m
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.uid == owner.uid);
        let orphan = !m
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true))
            && m.spec.workspace_ref == owner.name;
        let ours = controlled || orphan;
        let want = job_labels(owner, &m.spec.submission_id);
        let labels = m.labels();
        let shaped = controlled
            && m.spec == job_spec(owner, &m.spec.submission_id)
            && want.iter().all(|(k, v)| labels.get(k) == Some(v))
            && (owner.shard.is_some() || !labels.contains_key(LABEL_SHARD));
        ExistingJob {
            name: m.name_any(),
            submission_id: m.spec.submission_id.clone(),
            generation: m.metadata.generation,
            ours,
            shaped,
            status: m.status.clone(),
        }
    }
}

/// One job mirror's write.
#[derive(Clone, Debug, PartialEq)]
pub enum JobWrite {
    /// Metadata and spec (creation or repair), then the status.
    Apply {
        name: String,
        submission_id: String,
        status: Box<EmrRayJobStatus>,
    },
    /// Only the status differs.
    Status {
        name: String,
        status: Box<EmrRayJobStatus>,
    },
    Delete {
        name: String,
    },
}

/// The writes of one round. `listing`: the complete job listing of this round (`None`: the
/// listing failed or was partial — then nothing is written or deleted); `enabled`: jobs are on
/// (off: every mirror of this workspace is deleted). Pure.
pub fn plan_jobs(
    listing: Option<&[RayJob]>,
    enabled: bool,
    existing: &[ExistingJob],
    now: Time,
) -> (Vec<JobWrite>, Vec<String>) {
    let mut writes = Vec::new();
    let mut conflicts = Vec::new();
    let ours: HashMap<&str, &ExistingJob> = existing
        .iter()
        .filter(|e| e.ours)
        .map(|e| (e.submission_id.as_str(), e))
        .collect();
    let foreign: HashSet<&str> = existing
        .iter()
        .filter(|e| !e.ours)
        .map(|e| e.name.as_str())
        .collect();
    if !enabled {
        let mut names: Vec<&String> = ours.values().map(|e| &e.name).collect();
        names.sort();
        return (
            names
                .into_iter()
                .map(|n| JobWrite::Delete { name: n.clone() })
                .collect(),
            conflicts,
        );
    }
    let Some(jobs) = listing else {
        return (writes, conflicts);
    };
    let mut listed: HashSet<&str> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    for j in jobs {
        let id = j.submission_id.as_str();
        listed.insert(id);
        let prev = ours.get(id).copied();
        let name = prev.map(|p| p.name.clone()).unwrap_or_else(|| job_name(id));
        if !names.insert(name.clone()) || (prev.is_none() && foreign.contains(name.as_str())) {
            conflicts.push(name);
            continue;
        }
        let generation = prev.and_then(|p| p.generation).or(Some(1));
        let prev_status = prev.and_then(|p| p.status.as_ref());
        let mut desired = remote_job_status(j);
        desired.observed_generation = generation;
        desired.conditions = job_conditions(
            &desired,
            prev_status
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default(),
            generation,
            now,
        );
        match prev {
            Some(p) if p.shaped => {
                if p.status.as_ref() != Some(&desired) {
                    writes.push(JobWrite::Status {
                        name,
                        status: Box::new(desired),
                    });
                }
            }
            _ => writes.push(JobWrite::Apply {
                name,
                submission_id: id.to_string(),
                status: Box::new(desired),
            }),
        }
    }
    let mut gone: Vec<&String> = ours
        .values()
        .filter(|e| !listed.contains(e.submission_id.as_str()))
        .map(|e| &e.name)
        .collect();
    gone.sort();
    writes.extend(
        gone.into_iter()
            .map(|n| JobWrite::Delete { name: n.clone() }),
    );
    conflicts.sort();
    (writes, conflicts)
}

/// A job mirror's name: `job-` and the mirror name of its submission ID (DNS-safe, stable).
pub fn job_name(submission_id: &str) -> String {
    let base = mirror::mirror_name(submission_id);
    if base.len() + 4 <= 63 {
        format!("job-{base}")
    } else {
        mirror::mirror_name(&format!("job-{submission_id}"))
    }
}

/// The job mirrors of `owner`'s workspace (its label, from the watch cache).
async fn list_existing(ctx: &Context, owner: &Owner) -> Result<Vec<ExistingJob>, kube::Error> {
    let api: Api<EmrRayJob> = Api::namespaced(ctx.kube.client.clone(), &owner.namespace);
    let selector = format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_WORKSPACE}={}",
        label_value(&owner.name)
    );
    let list = api
        .list(&ListParams::default().labels(&selector).match_any())
        .await?;
    Ok(list
        .items
        .iter()
        .map(|m| ExistingJob::of(m, owner))
        .collect())
}

/// The job mirror writes of one round (after a job listing, or once for a workspace without
/// jobs), and the job metrics.
pub async fn write_jobs(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) {
    let enabled = ws.spec.jobs_enabled().is_some();
    let listing = st.jobs.pending.take();
    let labels = WorkspaceLabels {
        namespace: ws.namespace().unwrap_or_default(),
        workspace: ws.name_any(),
    };
    if enabled {
        let s = st.jobs.summary.as_ref();
        ctx.metrics
            .workspace_jobs
            .get_or_create(&labels)
            .set(s.and_then(|s| s.total).unwrap_or(0));
        ctx.metrics
            .workspace_jobs_failed
            .get_or_create(&labels)
            .set(s.and_then(|s| s.failed).unwrap_or(0));
        // Exported from 0, so that the first failure is an increase.
        let _ = ctx.metrics.job_failures.get_or_create(&labels);
    } else {
        forget_metrics(ctx, &labels);
        st.jobs.summary = None;
        st.jobs.failed = None;
    }
    let needed = if enabled {
        listing.is_some()
    } else {
        !st.jobs.cleaned
    };
    if !needed {
        return;
    }
    let Ok(shard) = super::lifecycle::mirror_shard(ctx, ws) else {
        return;
    };
    let owner = Owner::of(ws, shard);
    let existing = match list_existing(ctx, &owner).await {
        Ok(e) => e,
        // No EmrRayJob CRD installed (older CRDs): there is no job mirror to delete.
        Err(kube::Error::Api(e)) if e.code == 404 && !enabled => {
            st.jobs.cleaned = true;
            return;
        }
        Err(e) => {
            warn!(workspace = %key(ws), error = %e, "listing the workspace's job mirrors failed; retrying next round");
            return;
        }
    };
    if let Some(l) = listing.as_ref().filter(|_| enabled) {
        let (new, failed) = new_failures(&l.jobs, st.jobs.failed.as_deref(), &existing);
        if new > 0 {
            ctx.metrics.job_failures.get_or_create(&labels).inc_by(new);
        }
        st.jobs.failed = Some(Arc::new(failed));
    }
    let (writes, conflicts) = plan_jobs(
        listing.as_ref().map(|l| l.jobs.as_slice()),
        enabled,
        &existing,
        Time::now(),
    );
    if !conflicts.is_empty() {
        warn!(workspace = %key(ws), conflicts = ?conflicts, "job mirror names held by another workspace");
    }
    let api: Api<EmrRayJob> = Api::namespaced(ctx.kube.client.clone(), &owner.namespace);
    let (mut created, mut deleted, mut failed) = (0usize, 0usize, 0usize);
    let mut first_error: Option<String> = None;
    for w in writes {
        if ctx.stop.is_cancelled() {
            return;
        }
        let result = write_one(ctx, &api, &owner, &w).await;
        match (&w, result) {
            (_, Err(e)) => {
                failed += 1;
                let refused = apply::Refused::from_error(&e);
                ctx.metrics
                    .count_refusal(KubeResource::EmrRayJobs, refused.refusal);
                first_error.get_or_insert(refused.message);
            }
            (JobWrite::Apply { .. }, Ok(())) => created += 1,
            (JobWrite::Delete { .. }, Ok(())) => deleted += 1,
            _ => {}
        }
    }
    debug!(workspace = %key(ws), created, deleted, failed, "job mirrors written");
    if let Some(message) = first_error {
        publish(
            &ctx.kube.recorder,
            &ws.object_ref(&()),
            EventType::Warning,
            Reason::MirrorWriteFailed,
            format!("{failed} job mirror write(s) refused: {message}"),
        )
        .await;
    } else if !enabled {
        st.jobs.cleaned = true;
    }
}

async fn write_one(
    ctx: &Context,
    api: &Api<EmrRayJob>,
    owner: &Owner,
    w: &JobWrite,
) -> Result<(), kube::Error> {
    let _permit = ctx.kube.write_limiter.wait().await;
    match w {
        JobWrite::Apply {
            name,
            submission_id,
            status,
        } => {
            let body = serde_json::json!({
                "metadata": {
                    "labels": job_labels(owner, submission_id),
                    "ownerReferences": [owner.reference()],
                },
                "spec": job_spec(owner, submission_id),
            });
            apply::apply_ssa(api, name, body, apply::Subresource::Main).await?;
            ctx.metrics
                .count_write(KubeResource::EmrRayJobs, WriteOperation::Apply);
            let _permit2 = ctx.kube.write_limiter.wait().await;
            apply_status(ctx, api, name, status).await?;
        }
        JobWrite::Status { name, status } => {
            apply_status(ctx, api, name, status).await?;
        }
        JobWrite::Delete { name } => {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            ctx.metrics
                .count_write(KubeResource::EmrRayJobs, WriteOperation::Delete);
        }
    }
    Ok(())
}

/// Server-side apply of a job mirror's status, counted.
async fn apply_status(
    ctx: &Context,
    api: &Api<EmrRayJob>,
    name: &str,
    status: &EmrRayJobStatus,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({ "status": status });
    apply::apply_ssa(api, name, body, apply::Subresource::Status).await?;
    ctx.metrics
        .count_write(KubeResource::EmrRayJobs, WriteOperation::ApplyStatus);
    Ok(())
}

/// Forgets the job metrics of a workspace.
pub fn forget_metrics(ctx: &Context, labels: &WorkspaceLabels) {
    ctx.metrics.workspace_jobs.remove(labels);
    ctx.metrics.workspace_jobs_failed.remove(labels);
    ctx.metrics.job_failures.remove(labels);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn now() -> Time {
        NOW.parse().unwrap()
    }

    fn job(id: &str, status: &str) -> RayJob {
        RayJob {
            submission_id: id.into(),
            name: Some(format!("n-{id}")),
            status: Some(status.into()),
            submit_time: Some(1_700_000_000_000),
            duration: Some(3723),
            dashboard_url: Some("https://gw.example/jobs/x?token=SECRET".into()),
            ..Default::default()
        }
    }

    /// The mirror a previous round wrote for `j`.
    fn mirrored(j: &RayJob) -> ExistingJob {
        let (writes, _) = plan_jobs(Some(std::slice::from_ref(j)), true, &[], now());
        let JobWrite::Apply { status, name, .. } = writes[0].clone() else {
            panic!("{writes:?}")
        };
        ExistingJob {
            name,
            submission_id: j.submission_id.clone(),
            generation: Some(1),
            ours: true,
            shaped: true,
            status: Some(*status),
        }
    }

    fn kinds(w: &[JobWrite]) -> Vec<String> {
        w.iter()
            .map(|w| match w {
                JobWrite::Apply { name, .. } => format!("apply {name}"),
                JobWrite::Status { name, .. } => format!("status {name}"),
                JobWrite::Delete { name } => format!("delete {name}"),
            })
            .collect()
    }

    #[test]
    fn a_failure_counts_once_when_first_seen() {
        let ids = |v: &[&str]| -> HashSet<String> { v.iter().map(|s| s.to_string()).collect() };
        let run = job("raysubmit_run", "Running");
        let old = job("raysubmit_old", "Failed");
        let mut run_failed = run.clone();
        run_failed.status = Some("Timeout".into());
        let new = job("raysubmit_new", "Failed");
        let mirrors = [mirrored(&run), mirrored(&old)];

        // Jobs just enabled (no mirror): the failures already there are not news.
        assert_eq!(
            new_failures(&[old.clone(), run.clone()], None, &[]),
            (0, ids(&["raysubmit_old"]))
        );
        // First listing after a restart: nothing counts yet; what the mirrors show failed is
        // known, and a job that failed meanwhile (Running in its mirror, or without a mirror)
        // counts at the next listing.
        let listed = [old.clone(), run_failed.clone(), new.clone()];
        let (n, known) = new_failures(&listed, None, &mirrors);
        assert_eq!((n, &known), (0, &ids(&["raysubmit_old"])));
        assert_eq!(new_failures(&listed, Some(&known), &mirrors).0, 2);
        assert_eq!(
            new_failures(
                &listed,
                Some(&ids(&["raysubmit_old", "raysubmit_run", "raysubmit_new"])),
                &mirrors
            )
            .0,
            0
        );
        // Then against the previous listing: the old failure leaving the window while a new one
        // comes (the failed count in the window stays 1) still counts the new one.
        let known = ids(&["raysubmit_old"]);
        assert_eq!(
            new_failures(&[new.clone(), run.clone()], Some(&known), &mirrors),
            (1, ids(&["raysubmit_new"]))
        );
        assert_eq!(
            new_failures(&[old.clone(), run], Some(&known), &mirrors),
            (0, known.clone())
        );
    }

    #[test]
    fn the_rules_of_job_mirrors() {
        let a = job("raysubmit_a", "Running");
        let b = job("raysubmit_b", "Succeeded");
        let ma = mirrored(&a);
        let mb = mirrored(&b);
        let mut a_failed = a.clone();
        a_failed.status = Some("Failed".into());
        let foreign = ExistingJob {
            ours: false,
            ..mirrored(&job("raysubmit_c", "Running"))
        };
        let mut unshaped = mb.clone();
        unshaped.shaped = false;
        type Row<'a> = (
            &'a str,
            Option<Vec<RayJob>>,
            bool,
            Vec<ExistingJob>,
            Vec<&'a str>,
        );
        let rows: Vec<Row> = vec![
            (
                "new jobs are created",
                Some(vec![a.clone(), b.clone()]),
                true,
                vec![],
                vec!["apply job-raysubmit-a-", "apply job-raysubmit-b-"],
            ),
            (
                "steady state writes nothing",
                Some(vec![a.clone(), b.clone()]),
                true,
                vec![ma.clone(), mb.clone()],
                vec![],
            ),
            (
                "a changed job is a status write",
                Some(vec![a_failed.clone(), b.clone()]),
                true,
                vec![ma.clone(), mb.clone()],
                vec!["status job-raysubmit-a-"],
            ),
            (
                "a job out of a complete listing is deleted",
                Some(vec![a.clone()]),
                true,
                vec![ma.clone(), mb.clone()],
                vec!["delete job-raysubmit-b-"],
            ),
            (
                "a failed or partial listing deletes nothing",
                None,
                true,
                vec![ma.clone(), mb.clone()],
                vec![],
            ),
            (
                "an empty complete listing deletes all",
                Some(vec![]),
                true,
                vec![ma.clone(), mb.clone()],
                vec!["delete job-raysubmit-a-", "delete job-raysubmit-b-"],
            ),
            (
                "disabled deletes every mirror, listing or not",
                None,
                false,
                vec![ma.clone(), mb.clone(), foreign.clone()],
                vec!["delete job-raysubmit-a-", "delete job-raysubmit-b-"],
            ),
            (
                "another workspace's mirror is never touched",
                Some(vec![]),
                true,
                vec![foreign.clone()],
                vec![],
            ),
            (
                "a name held by another workspace is not taken",
                Some(vec![job("raysubmit_c", "Running")]),
                true,
                vec![foreign.clone()],
                vec![],
            ),
            (
                "a mirror with a wrong shape is repaired",
                Some(vec![b.clone()]),
                true,
                vec![unshaped],
                vec!["apply job-raysubmit-b-"],
            ),
        ];
        for (what, listing, enabled, existing, want) in rows {
            let (writes, _) = plan_jobs(listing.as_deref(), enabled, &existing, now());
            let got = kinds(&writes);
            assert_eq!(got.len(), want.len(), "{what}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.starts_with(w), "{what}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn an_orphan_naming_the_workspace_is_taken_over_and_no_other() {
        let owner = |uid: &str| Owner {
            namespace: "ns".into(),
            name: "ws".into(),
            uid: uid.into(),
            workspace_id: "w-1".into(),
            region_id: "cn-hangzhou".into(),
            policy: Default::default(),
            shard: None,
        };
        let old = owner("old-uid");
        let new = owner("new-uid");
        let mirror = |refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
                      workspace: &str| {
            let mut m = EmrRayJob::new("job-a", job_spec(&old, "raysubmit_a"));
            m.spec.workspace_ref = workspace.into();
            m.metadata.labels = Some(job_labels(&old, "raysubmit_a"));
            m.metadata.owner_references = Some(refs);
            m
        };
        // (mirror, owner asking) -> (ours, shaped)
        let rows = [
            (
                mirror(vec![old.reference()], "ws"),
                &old,
                (true, true),
                "its own",
            ),
            (
                mirror(vec![old.reference()], "ws"),
                &new,
                (false, false),
                "another workspace's (same name, other UID)",
            ),
            (
                mirror(vec![], "ws"),
                &new,
                (true, false),
                "an orphan naming it: taken over (applied)",
            ),
            (
                mirror(vec![], "other"),
                &new,
                (false, false),
                "an orphan naming another workspace",
            ),
        ];
        for (m, o, want, what) in rows {
            let e = ExistingJob::of(&m, o);
            assert_eq!((e.ours, e.shaped), want, "{what}");
        }
        // Taken over: a listed job is applied (with the owner), an unlisted one deleted.
        let orphan = ExistingJob::of(&mirror(vec![], "ws"), &new);
        let (w, _) = plan_jobs(
            Some(&[job("raysubmit_a", "Running")]),
            true,
            std::slice::from_ref(&orphan),
            now(),
        );
        assert_eq!(kinds(&w), ["apply job-a"]);
        let (w, _) = plan_jobs(Some(&[]), true, std::slice::from_ref(&orphan), now());
        assert_eq!(kinds(&w), ["delete job-a"]);
        let (w, _) = plan_jobs(None, false, &[orphan], now());
        assert_eq!(kinds(&w), ["delete job-a"]);
    }

    #[test]
    fn status_is_cleaned_redacted_and_conditions_follow_kuberay() {
        let s = remote_job_status(&job("raysubmit_a", "Failed"));
        assert_eq!(s.duration.as_deref(), Some("1h2m3s"));
        assert_eq!(s.submit_time.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(
            s.dashboard_url.as_deref(),
            Some("https://gw.example/jobs/x")
        );
        let c = |state: &str| {
            let mut s = s.clone();
            s.state = Some(state.into());
            job_conditions(&s, &[], Some(1), now())
                .into_iter()
                .map(|c| format!("{}={}:{}", c.type_, c.status, c.reason))
                .collect::<Vec<_>>()
        };
        assert_eq!(c("Succeeded"), ["Ready=True:Succeeded"]);
        assert_eq!(c("Failed"), ["Ready=False:Failed", "Stalled=True:Failed"]);
        assert_eq!(
            c("Timeout"),
            ["Ready=False:Timeout", "Stalled=True:Timeout"]
        );
        assert_eq!(
            c("Running"),
            ["Ready=False:Running", "Reconciling=True:Running"]
        );
        assert_eq!(c("Cancelled"), ["Ready=False:Cancelled"]);
        assert_eq!(c("Weird"), ["Ready=False:UnknownState"]);
    }

    #[test]
    fn names_are_dns_labels_and_distinct() {
        let a = job_name("raysubmit_ABC");
        assert!(a.starts_with("job-") && a.len() <= 63, "{a}");
        assert_ne!(a, job_name("raysubmit_abc"));
        assert!(job_name(&"x".repeat(128)).len() <= 63);
    }

    #[test]
    fn record_keeps_counts_when_a_listing_fails() {
        let mut st = WorkspaceState::default();
        let listing = JobListing {
            jobs: vec![job("a", "Failed"), job("b", "Succeeded"), job("c", "Odd")],
            ..Default::default()
        };
        record(&mut st, Interval::from_secs(3600), Ok(listing), NOW);
        let s = st.jobs.summary.clone().unwrap();
        assert_eq!((s.total, s.failed), (Some(3), Some(1)));
        assert_eq!(s.by_state.get("Other"), Some(&1));
        assert!(st.jobs.pending.is_some());
        let err = SyncError::Remote(crate::emr::EmrError::new(
            ErrorKind::TooManyClusters,
            "many",
        ));
        record(&mut st, Interval::from_secs(3600), Err(err), NOW);
        let s = st.jobs.summary.clone().unwrap();
        assert_eq!(
            (s.total, s.reason.as_deref()),
            (Some(3), Some("TooManyJobs"))
        );
        assert!(st.jobs.pending.is_none());
    }
}
