//! The workspace's resource queues: the status entries built from a queue listing (pure), the
//! failure kept while listings fail, and the `queue_resource` series (replaced when a listing
//! changes them, dropped with the queue or the workspace).

use std::sync::Arc;

use super::context::{Context, labels};
use super::error::SyncError;
use super::state::WorkspaceState;
use crate::api::{EmrWorkspace, QueueListingFailure, QueueQuantities, WorkspaceQueueStatus};
use crate::emr::model::format_quantity;
use crate::emr::{QueueResources, WorkspaceQueue};
use crate::metrics::{QueueFigure, QueueLabels, QueueResource};

/// Most queues a workspace's status (and its metric series) names; further ones (by name) are
/// left out, so that a remote service cannot grow the status or the series without bound.
pub const MAX_STATUS_QUEUES: usize = 64;

/// The status entries of a complete queue listing: by name, at most [`MAX_STATUS_QUEUES`],
/// quantities as Kubernetes quantities (cores, `Gi`, devices). Pure.
pub fn queue_statuses(queues: &[WorkspaceQueue]) -> Vec<WorkspaceQueueStatus> {
    let mut out: Vec<WorkspaceQueueStatus> = queues
        .iter()
        .filter_map(|q| {
            Some(WorkspaceQueueStatus {
                name: q.queue_name.clone().filter(|n| !n.is_empty())?,
                status: q.queue_status.clone(),
                queue_type: q.queue_type.clone(),
                min: quantities(q.min_resource.as_deref()),
                max: quantities(q.max_resource.as_deref()),
                used: quantities(q.used_resource.as_deref()),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out.truncate(MAX_STATUS_QUEUES);
    out
}

fn quantities(wire: Option<&str>) -> Option<QueueQuantities> {
    let r = QueueResources::parse(wire);
    let q = QueueQuantities {
        cpu: r.cpu.map(format_quantity),
        memory: r.memory_gi.map(|v| format!("{}Gi", format_quantity(v))),
        gpu: r.gpu.map(format_quantity),
    };
    (q != QueueQuantities::default()).then_some(q)
}

/// The numbers behind a status entry, per resource and kind (the `queue_resource` series):
/// `(resource, kind, value)`. Pure.
pub fn series_values(q: &WorkspaceQueueStatus) -> Vec<(QueueResource, QueueFigure, f64)> {
    let mut out = Vec::new();
    for (kind, v) in [
        (QueueFigure::Min, &q.min),
        (QueueFigure::Max, &q.max),
        (QueueFigure::Used, &q.used),
    ] {
        let Some(v) = v else { continue };
        let num = |s: &Option<String>, strip: &str| {
            s.as_deref()
                .and_then(|s| s.strip_suffix(strip).unwrap_or(s).parse::<f64>().ok())
        };
        for (resource, value) in [
            (QueueResource::Cpu, num(&v.cpu, "")),
            (QueueResource::MemoryGibibytes, num(&v.memory, "Gi")),
            (QueueResource::Gpu, num(&v.gpu, "")),
        ] {
            if let Some(value) = value {
                out.push((resource, kind, value));
            }
        }
    }
    out
}

/// Records a queue listing's outcome in the workspace's state: the queues of a complete
/// listing, or the failure (the queues stay as they were). Returns the failure's first message
/// when listings just started failing, and `true` in `.1` when they just recovered.
pub(super) fn record(
    st: &mut WorkspaceState,
    outcome: Result<Vec<WorkspaceQueue>, SyncError>,
    now: &str,
) -> (Option<String>, bool) {
    match outcome {
        Ok(queues) => {
            let statuses = queue_statuses(&queues);
            if st.queues.as_deref() != Some(&statuses) {
                st.queues = Some(Arc::new(statuses));
            }
            (None, st.queue_failure.take().is_some())
        }
        Err(e) => {
            let reason = e.reason().as_str().to_string();
            let message = format!("listing the workspace's queues failed: {e}");
            let started = st.queue_failure.is_none();
            let since = st
                .queue_failure
                .as_ref()
                .filter(|f| f.reason == reason)
                .map_or_else(|| now.to_string(), |f| f.since.clone());
            st.queue_failure = Some(QueueListingFailure {
                reason,
                message: message.clone(),
                since,
            });
            (started.then_some(message), false)
        }
    }
}

/// Exports the queues' quantities when they changed; drops the series of queues that left.
pub(super) fn update_series(ws: &EmrWorkspace, ctx: &Context, st: &mut WorkspaceState) {
    let Some(queues) = &st.queues else { return };
    if st
        .exported_queues
        .as_ref()
        .is_some_and(|e| Arc::ptr_eq(e, queues))
    {
        return;
    }
    let l = labels(ws);
    remove_series(
        ctx,
        &l.namespace,
        &l.workspace,
        st.exported_queues.as_deref(),
    );
    for q in queues.iter() {
        for (resource, kind, value) in series_values(q) {
            ctx.metrics
                .queue_resource
                .get_or_create(&QueueLabels {
                    namespace: l.namespace.clone(),
                    workspace: l.workspace.clone(),
                    queue: q.name.clone(),
                    resource,
                    kind,
                })
                .set(value);
        }
    }
    st.exported_queues = Some(queues.clone());
}

/// Drops the `queue_resource` series of `exported` (a workspace's queues as last exported).
pub(super) fn remove_series(
    ctx: &Context,
    namespace: &str,
    workspace: &str,
    exported: Option<&Vec<WorkspaceQueueStatus>>,
) {
    for q in exported.into_iter().flatten() {
        for (resource, kind, _) in series_values(q) {
            ctx.metrics.queue_resource.remove(&QueueLabels {
                namespace: namespace.to_string(),
                workspace: workspace.to_string(),
                queue: q.name.clone(),
                resource,
                kind,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Reason;

    fn q(name: &str, max: &str, used: &str) -> WorkspaceQueue {
        WorkspaceQueue {
            queue_name: Some(name.into()),
            queue_status: Some("RUNNING".into()),
            max_resource: Some(max.into()),
            used_resource: Some(used.into()),
            ..Default::default()
        }
    }

    #[test]
    fn statuses_are_sorted_capped_and_in_kubernetes_units() {
        let s = queue_statuses(&[
            q(
                "root_queue",
                r#"{"cpu":"100","memory":"400Gi","gpu":"2"}"#,
                r#"{"cpu":0.5,"memory":"512Mi"}"#,
            ),
            q("dev_queue", "not json", r#"{"cpu":"-1","memory":"1e999"}"#),
            WorkspaceQueue::default(),
        ]);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "dev_queue");
        assert_eq!((s[0].max.clone(), s[0].used.clone()), (None, None));
        let root = &s[1];
        assert_eq!(
            root.max,
            Some(QueueQuantities {
                cpu: Some("100".into()),
                memory: Some("400Gi".into()),
                gpu: Some("2".into())
            })
        );
        assert_eq!(root.used.as_ref().unwrap().memory.as_deref(), Some("0.5Gi"));
        assert_eq!(
            series_values(root)
                .into_iter()
                .map(|(r, k, v)| (r.as_str(), k.as_str(), v))
                .collect::<Vec<_>>(),
            vec![
                ("cpu", "max", 100.0),
                ("memory_gibibytes", "max", 400.0),
                ("gpu", "max", 2.0),
                ("cpu", "used", 0.5),
                ("memory_gibibytes", "used", 0.5)
            ]
        );
        let many: Vec<_> = (0..200)
            .map(|i| q(&format!("q{i:03}"), "{}", "{}"))
            .collect();
        assert_eq!(queue_statuses(&many).len(), MAX_STATUS_QUEUES);
    }

    #[test]
    fn quantities_always_fit_the_crd_patterns() {
        // `^[0-9]+(\.[0-9]+)?$` (and `Gi` after it for memory): the API server refuses a status
        // that does not match, so no remote value may produce anything else.
        let decimal = |s: &str| {
            let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
            !int.is_empty()
                && !frac.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        };
        for v in [
            "0",
            "0.0001",
            "1e300",
            "123456789012345678901",
            "2.5",
            "1.23456789",
            "500m",
        ] {
            let wire = format!(r#"{{"cpu":"{v}","memory":"{v}","gpu":{v}}}"#);
            let s = queue_statuses(&[q("x", &wire, "{}")]);
            let Some(max) = s[0].max.clone() else {
                continue;
            };
            for n in [&max.cpu, &max.gpu].into_iter().flatten() {
                assert!(decimal(n), "{v:?} -> {n:?}");
            }
            if let Some(m) = &max.memory {
                assert!(decimal(m.strip_suffix("Gi").unwrap()), "{v:?} -> {m:?}");
            }
        }
    }

    #[test]
    fn a_failed_listing_keeps_the_queues_and_reports_once() {
        let mut st = WorkspaceState::default();
        let ok = || Ok(vec![q("a", r#"{"cpu":"4"}"#, r#"{"cpu":"1"}"#)]);
        assert_eq!(record(&mut st, ok(), "t0"), (None, false));
        let before = st.queues.clone().unwrap();
        let fail = || Err(SyncError::local(Reason::Throttled, "slow down".into()));
        let (first, _) = record(&mut st, fail(), "t1");
        assert!(first.unwrap().contains("slow down"));
        assert_eq!(record(&mut st, fail(), "t2"), (None, false));
        assert_eq!(st.queue_failure.as_ref().unwrap().since, "t1");
        assert!(Arc::ptr_eq(st.queues.as_ref().unwrap(), &before), "kept");
        // Recovery clears the failure; the same queues keep their Arc (nothing to export).
        assert_eq!(record(&mut st, ok(), "t3"), (None, true));
        assert!(st.queue_failure.is_none());
        assert!(Arc::ptr_eq(st.queues.as_ref().unwrap(), &before));
    }
}
