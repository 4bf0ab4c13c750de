//! Lease-based leader election (coordination.k8s.io/v1), so that two replicas never both write.
//!
//! The algorithm is client-go's: the holder renews the lease every `renew_every`; another
//! candidate takes it over only when the lease record has not changed for `leaseDurationSeconds`
//! **as measured on the candidate's own monotonic clock** since it first saw that record (the
//! holder's `renewTime` is another machine's wall clock and is never compared with ours). Every
//! write is guarded by `resourceVersion`, so two candidates cannot both win. A leader that cannot
//! renew within its lease duration minus one renew period steps down — and the operator cancels
//! its in-flight reconciles — before anyone else can take over.
//!
//! Why not the `kube-lease-manager` crate (compared: 0.13.1, which does support kube 5 and
//! k8s-openapi 0.29)? Three things this module does that it does not:
//!
//! - **Stepping down before the lease expires.** When renewing fails (API server unreachable,
//!   5xx, timeouts), the crate's `watch()` loop logs the error and backs off without publishing
//!   a change: its channel stays `true` until a later read of the Lease succeeds, so a leader cut
//!   off from the API server keeps "leading" after the lease has expired and a standby has taken
//!   it. [`LeaderElector::run`] sets the channel to `false` once no renewal has succeeded for the
//!   lease duration minus one renew period, and the operator then cancels the controllers'
//!   token (`operator::lead_and_run`), so a replica that loses the lease stops writing at once
//!   (tests: `operator::a_replica_that_loses_the_lease_stops_writing_at_once`,
//!   `operator::only_the_leader_writes_and_the_standby_takes_over`).
//! - **Expiry on our own monotonic clock.** The crate computes expiry as the holder's
//!   `renewTime` (another node's wall clock) plus the duration, compared with the local
//!   `SystemTime`, tolerating skew only up to its `grace`; here expiry is measured from when this
//!   candidate first saw the current lease record (client-go's rule), so clock skew between
//!   nodes cannot make two replicas both believe they lead.
//! - **Its own renew period, and a shutdown token.** The renew period is `--renew-seconds` (the
//!   crate renews at `duration - grace`, in whole seconds), and the loop stops on the
//!   operator's `CancellationToken` and releases the lease then (the crate releases only once
//!   every receiver of its channel has been dropped: workable, but the operator would have to
//!   drop each clone of the receiver before awaiting the task). This is the least of the three.
//!
//! The crate would save these ≈200 lines, but the first point is the one guarantee this module
//! exists for; switch only if it gains a "lost contact" step-down.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The other holder's lease record as last seen, and when (our clock) it was first seen.
    observed: Option<(String, tokio::time::Instant)>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    /// Tries once to acquire or renew the lease. `Ok(true)` when we hold it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let duration_secs = self.cfg.lease_duration.as_secs().max(1) as i32;
        let existing = self.api.get_opt(&self.cfg.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.cfg.identity;
        if !ours && !holder.is_empty() {
            // The record changes whenever its holder renews; expiry is measured from when we
            // first saw the current record, on our own clock.
            let record = format!(
                "{holder}|{:?}|{}",
                spec.renew_time.as_ref().map(|t| t.0),
                lease
                    .metadata
                    .resource_version
                    .as_deref()
                    .unwrap_or_default()
            );
            let now = tokio::time::Instant::now();
            let seen_at = match &self.observed {
                Some((r, at)) if *r == record => *at,
                _ => {
                    self.observed = Some((record, now));
                    now
                }
            };
            let duration = std::time::Duration::from_secs(
                spec.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64,
            );
            if now.duration_since(seen_at) < duration {
                return Ok(false);
            }
        }
        let mut new_spec = spec.clone();
        new_spec.holder_identity = Some(self.cfg.identity.clone());
        new_spec.lease_duration_seconds = Some(duration_secs);
        new_spec.renew_time = Some(now());
        if !ours {
            new_spec.acquire_time = Some(now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on graceful shutdown) so that a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.cfg.name, "released the leader lease"),
            Err(e) => warn!(error = %e, "releasing the leader lease failed"),
        }
    }

    /// Runs the election until `shutdown`, then releases the lease if held. The returned channel is `true` while we lead.
    /// Leadership is dropped (channel set to `false`) when renewal has failed for longer than
    /// the lease duration minus one renew period.
    pub fn run(
        mut self,
        shutdown: CancellationToken,
    ) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let mut last_renewed: Option<tokio::time::Instant> = None;
            loop {
                let leading = *tx.borrow();
                match self.try_acquire_or_renew().await {
                    Ok(true) => {
                        last_renewed = Some(tokio::time::Instant::now());
                        if !leading {
                            info!(identity = %self.cfg.identity, lease = %self.cfg.name, "became leader");
                            let _ = tx.send(true);
                        }
                    }
                    Ok(false) => {
                        if leading {
                            warn!("lost the leader lease to another replica");
                            let _ = tx.send(false);
                        }
                        last_renewed = None;
                    }
                    Err(e) => {
                        warn!(error = %e, "leader election request failed");
                        let deadline = self.cfg.lease_duration.saturating_sub(self.cfg.renew_every);
                        if leading && last_renewed.is_none_or(|t| t.elapsed() > deadline) {
                            warn!("could not renew the leader lease in time; stepping down");
                            let _ = tx.send(false);
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.cfg.renew_every) => {}
                }
            }
            if *tx.borrow() {
                let _ = tx.send(false);
                self.release().await;
            }
        });
        (rx, handle)
    }
}
