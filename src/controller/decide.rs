//! Every decision of a reconcile, as pure functions of their inputs (the clock and jitter are
//! passed in), each with a table test: when a listing is due, which sync request is new, which
//! of two workspaces mirroring one remote workspace is the duplicate, and when to come back.
//! (What to write is [`super::plan`]; what status to show and whether to write it,
//! [`super::status`].)

use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::error::SyncError;
use super::state::WorkspaceState;
use crate::api::{ANNOTATION_REQUESTED_AT, DurationError, EmrWorkspace, Interval, Reason};
use crate::emr::ErrorKind;

/// `spec.syncInterval` (at least [`Interval::MIN_SYNC`]), or the operator's default.
pub fn effective_interval(ws: &EmrWorkspace, default: Interval) -> Result<Interval, DurationError> {
    Ok(ws
        .spec
        .sync_interval()?
        .unwrap_or(default)
        .max(Interval::MIN_SYNC))
}

/// Whether a listing is due at `now`: its time `next_due` has come, or a spec edit or a
/// `requestedAt` annotation asks for one early (`early`) — but never while backing off from a
/// failure of the remote API (`backing_off`): then `next_due` is a backoff or
/// `x-acs-retry-after` deadline, and asking again must not call the remote sooner (a loop of
/// annotations cannot raise the request rate). After a local failure (a missing Secret, a
/// refused endpoint) nothing was called, so a fix is picked up at once. Pure.
pub(super) fn listing_due(
    now: Instant,
    next_due: Option<Instant>,
    backing_off: bool,
    early: bool,
) -> bool {
    next_due.is_none_or(|d| now >= d) || (early && !backing_off)
}

/// When a listing not due on its schedule, to refresh the clusters a plan needs (a mirror
/// edited or deleted by hand), may come: `gap` after the last listing started (at once if
/// that is past, or there was none), so that mirrors edited over and over (another controller
/// fighting the operator) cost at most one listing per `gap`. Pure.
pub(super) fn refresh_at(listed_at: Option<Instant>, gap: Duration, now: Instant) -> Instant {
    listed_at
        .and_then(|t| t.checked_add(gap))
        .map_or(now, |t| t.max(now))
}

/// When a listing due now should come instead: at the retry of refused mirror writes
/// (`retry_at`) if that comes within `gap` — the retry needs a decoded listing, and one listing
/// serves both. `None`: now. Pure.
pub(super) fn wait_for_write_retry(
    now: Instant,
    retry_at: Option<Instant>,
    gap: Duration,
) -> Option<Instant> {
    retry_at.filter(|&at| at > now && at.saturating_duration_since(now) <= gap)
}

/// Whether a failure came from a remote call (and so has a backoff a request must respect):
/// the EMR API, or STS for RRSA credentials (`CredentialsUnavailable` either way: before STS
/// was called — settings, a missing token file, a Secret — it is local, and a fix is picked up
/// at once; after, each request would call STS again). Pure.
pub(super) fn called_the_remote(e: &SyncError) -> bool {
    if e.remote().is_some_and(|r| r.kind == ErrorKind::Sts) {
        return true;
    }
    matches!(
        e.reason(),
        Reason::AuthenticationFailed
            | Reason::PermissionDenied
            | Reason::Throttled
            | Reason::RemoteUnavailable
            | Reason::Timeout
            | Reason::InvalidRequest
            | Reason::WorkspaceNotFound
            | Reason::MalformedResponse
            | Reason::IncompleteListing
            | Reason::TooManyClusters
    )
}

/// A `requestedAt` annotation value not handled yet (by this replica, or before, as the
/// status records).
pub(super) fn requested_sync(ws: &EmrWorkspace, st: &WorkspaceState) -> Option<String> {
    // A tenant's free text: cleaned and capped before it is compared or written to status.
    let value = crate::emr::error::clean_text(ws.annotations().get(ANNOTATION_REQUESTED_AT)?, 64);
    let handled = st.handled_request.as_ref().or(ws
        .status
        .as_ref()
        .and_then(|s| s.last_handled_reconcile_at.as_ref()));
    (handled != Some(&value)).then_some(value)
}

/// What names a remote workspace: the endpoint called (scheme, host, port, base path; what `regionId`,
/// `network` and `endpoint` resolve to) and the workspace ID. Two `EmrWorkspace`s with the same
/// identity mirror the same clusters, whatever region they name; all of it is immutable. A spec
/// whose endpoint does not resolve is identified by its fields as written. Pure.
pub(super) fn remote_identity(spec: &crate::api::EmrWorkspaceSpec) -> (String, String) {
    let endpoint = crate::emr::endpoint::resolve(
        &spec.region_id,
        spec.network == crate::api::EndpointNetwork::Vpc,
        spec.endpoint.as_deref(),
    );
    let origin = match endpoint {
        // The path too: an explicit endpoint's path is the base of the API's paths.
        Ok(url) => format!(
            "{}://{}:{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default().trim_end_matches('.'),
            url.port_or_known_default().unwrap_or_default(),
            url.path().trim_end_matches('/')
        ),
        Err(_) => format!(
            "{}|{:?}|{}",
            spec.region_id,
            spec.network,
            spec.endpoint.as_deref().unwrap_or_default()
        ),
    };
    (origin, spec.workspace_id.clone())
}

/// Where a workspace stands among those of one namespace that mirror the same remote
/// workspace: the one that owns mirrors first, then the first created, then the first name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Seniority {
    pub owns_no_mirrors: bool,
    pub created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    pub name: String,
}

/// The workspace `me` duplicates: the most senior of `others`, if it outranks `me`. Pure.
pub(super) fn senior_to(
    me: &Seniority,
    others: impl IntoIterator<Item = Seniority>,
) -> Option<String> {
    others.into_iter().filter(|o| o < me).min().map(|o| o.name)
}

/// When a reconcile comes back on its own (`None`: only on a change of the workspace or its
/// mirrors): at the earliest of the next listing (or its retry) and the next `GetRayCluster`
/// due — never for a suspended workspace or an invalid spec, which only an edit changes. At
/// least 100 ms from `now`. Pure.
pub(super) fn requeue_after(
    now: Instant,
    next_listing: Option<Instant>,
    next_diagnosis: Option<Instant>,
    suspended: bool,
    invalid_spec: bool,
) -> Option<Duration> {
    let wakeup = match (next_listing, next_diagnosis) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }?;
    (!suspended && !invalid_spec).then(|| {
        wakeup
            .saturating_duration_since(now)
            .max(Duration::from_millis(100))
    })
}

/// How long a failed reconcile waits after `failures` consecutive failures: 5 s doubling up to
/// 5 minutes, lengthened by `jitter` (a fraction drawn by the caller). Pure.
pub(super) fn reconcile_retry(failures: u32, jitter: f64) -> Duration {
    crate::backoff::stretch(
        crate::backoff::exponential(failures, Duration::from_secs(5), Duration::from_secs(300)),
        jitter,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emr::EmrError;

    #[test]
    fn early_listings_wait_for_a_backoff() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let earlier = now - Duration::from_secs(1);
        // (next_due, backing off from a remote failure, early) -> due
        let rows = [
            (None, false, false, true, "never listed"),
            (Some(earlier), false, false, true, "the interval has passed"),
            (Some(later), false, false, false, "within the interval"),
            (Some(later), false, true, true, "asked for early, healthy"),
            (
                Some(later),
                true,
                true,
                false,
                "asked for early while backing off",
            ),
            (Some(later), true, false, false, "backing off"),
            (Some(earlier), true, true, true, "the backoff has passed"),
            (
                None,
                true,
                true,
                true,
                "failed without a deadline (invalid spec fixed)",
            ),
        ];
        for (next_due, backing_off, early, want, what) in rows {
            assert_eq!(
                listing_due(now, next_due, backing_off, early),
                want,
                "{what}"
            );
        }
        let remote = |kind| SyncError::Remote(EmrError::new(kind, "x"));
        let local = |reason| SyncError::local(reason, "x".into());
        for (e, called, what) in [
            (remote(ErrorKind::Throttled), true, "throttled"),
            (remote(ErrorKind::Auth), true, "authentication failed"),
            (remote(ErrorKind::Transient), true, "remote unavailable"),
            (remote(ErrorKind::Sts), true, "STS refused or unreachable"),
            (
                remote(ErrorKind::Credentials),
                false,
                "RRSA settings or the token file",
            ),
            (
                local(Reason::CredentialsUnavailable),
                false,
                "a Secret unreadable",
            ),
            (local(Reason::SecretNotFound), false, "no Secret"),
            (local(Reason::CredentialsNotPermitted), false, "not granted"),
            (local(Reason::EndpointNotAllowed), false, "endpoint refused"),
            (local(Reason::InvalidSpec), false, "invalid spec"),
            (remote(ErrorKind::Config), false, "invalid endpoint"),
        ] {
            assert_eq!(called_the_remote(&e), called, "{what}");
            // STS or not, the reason consumers see is the same.
            if what.starts_with("STS") {
                assert_eq!(e.reason(), Reason::CredentialsUnavailable);
            }
        }
    }

    #[test]
    fn refreshing_listings_keep_their_gap() {
        let now = Instant::now();
        let gap = Duration::from_secs(5);
        let s = Duration::from_secs;
        assert_eq!(refresh_at(None, gap, now), now, "never listed: at once");
        assert_eq!(refresh_at(Some(now - s(9)), gap, now), now, "long ago");
        assert_eq!(
            refresh_at(Some(now - s(2)), gap, now),
            now + s(3),
            "listed 2 s ago: 3 s from now"
        );
        assert_eq!(refresh_at(Some(now), gap, now), now + gap);
        // A listing due 2 s before a write retry waits for it; not one due 9 s before, nor
        // one due after it.
        let retry = |after: i64| {
            let at = if after >= 0 {
                now + s(after as u64)
            } else {
                now - s((-after) as u64)
            };
            wait_for_write_retry(now, Some(at), gap)
        };
        assert_eq!(retry(2), Some(now + s(2)));
        assert_eq!(retry(9), None);
        assert_eq!(retry(-1), None);
        assert_eq!(wait_for_write_retry(now, None, gap), None);
    }

    #[test]
    fn one_remote_identity_whatever_the_region_names() {
        let spec = |region: &str, vpc: bool, endpoint: Option<&str>, id: &str| {
            serde_json::from_value::<crate::api::EmrWorkspaceSpec>(serde_json::json!({
                "regionId": region, "workspaceId": id,
                "network": if vpc { "VPC" } else { "Public" },
                "endpoint": endpoint,
                "credentials": {"secretRef": {"name": "c"}},
            }))
            .unwrap()
        };
        let same = |a: &crate::api::EmrWorkspaceSpec, b: &crate::api::EmrWorkspaceSpec| {
            remote_identity(a) == remote_identity(b)
        };
        let hz = spec("cn-hangzhou", false, None, "w-1");
        let rows = [
            ("itself", spec("cn-hangzhou", false, None, "w-1"), true),
            (
                "the derived endpoint written out",
                spec(
                    "cn-beijing",
                    false,
                    Some("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com"),
                    "w-1",
                ),
                true,
            ),
            (
                "upper case, default port, trailing dot",
                spec(
                    "cn-shanghai",
                    false,
                    Some("HTTPS://Emr-Serverless-Spark.cn-hangzhou.aliyuncs.com.:443/"),
                    "w-1",
                ),
                true,
            ),
            (
                "another workspace",
                spec("cn-hangzhou", false, None, "w-2"),
                false,
            ),
            (
                "the VPC endpoint",
                spec("cn-hangzhou", true, None, "w-1"),
                false,
            ),
            (
                "another region",
                spec("cn-beijing", false, None, "w-1"),
                false,
            ),
            (
                "another port",
                spec(
                    "cn-hangzhou",
                    false,
                    Some("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com:8443"),
                    "w-1",
                ),
                false,
            ),
            (
                "another base path",
                spec(
                    "cn-hangzhou",
                    false,
                    Some("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/other"),
                    "w-1",
                ),
                false,
            ),
        ];
        for (what, other, want) in rows {
            assert_eq!(same(&hz, &other), want, "{what}");
        }
    }

    #[test]
    fn the_senior_workspace_keeps_the_mirrors() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |s: &str| Some(Time(s.parse().unwrap()));
        let w = |owns: bool, created: &str, name: &str| Seniority {
            owns_no_mirrors: !owns,
            created: at(created),
            name: name.into(),
        };
        let t1 = "2026-01-01T00:00:00Z";
        let t2 = "2026-01-01T00:00:01Z";
        let rows = [
            ("alone", w(false, t2, "b"), vec![], None),
            (
                "older one",
                w(false, t2, "b"),
                vec![w(false, t1, "a")],
                Some("a"),
            ),
            (
                "newer one",
                w(false, t1, "a"),
                vec![w(false, t2, "b")],
                None,
            ),
            (
                "same second: first name",
                w(false, t1, "b"),
                vec![w(false, t1, "a")],
                Some("a"),
            ),
            (
                "same second, this one first",
                w(false, t1, "a"),
                vec![w(false, t1, "b")],
                None,
            ),
            (
                "the owner of mirrors, though newer",
                w(false, t1, "a"),
                vec![w(true, t2, "b")],
                Some("b"),
            ),
            (
                "owning mirrors wins over age",
                w(true, t2, "b"),
                vec![w(false, t1, "a")],
                None,
            ),
            (
                "the most senior of several",
                w(false, t2, "c"),
                vec![w(false, t1, "b"), w(true, t2, "d"), w(false, t1, "a")],
                Some("d"),
            ),
        ];
        for (what, me, others, want) in rows {
            assert_eq!(senior_to(&me, others).as_deref(), want, "{what}");
        }
    }

    #[test]
    fn a_sync_request_is_handled_once() {
        let mut ws = EmrWorkspace::new(
            "ws",
            serde_json::from_value(serde_json::json!({
                "regionId": "r", "workspaceId": "w",
                "credentials": {"secretRef": {"name": "s"}}
            }))
            .unwrap(),
        );
        let st = WorkspaceState::default();
        assert_eq!(requested_sync(&ws, &st), None, "no annotation");
        ws.metadata.annotations =
            Some([(ANNOTATION_REQUESTED_AT.to_string(), "t1".to_string())].into());
        assert_eq!(requested_sync(&ws, &st).as_deref(), Some("t1"));
        let handled = WorkspaceState {
            handled_request: Some("t1".into()),
            ..Default::default()
        };
        assert_eq!(
            requested_sync(&ws, &handled),
            None,
            "handled by this replica"
        );
        ws.status = Some(crate::api::EmrWorkspaceStatus {
            last_handled_reconcile_at: Some("t1".into()),
            ..Default::default()
        });
        assert_eq!(requested_sync(&ws, &st), None, "handled before a restart");
        ws.metadata.annotations = Some(
            [(
                ANNOTATION_REQUESTED_AT.to_string(),
                format!("t2\n{}", "x".repeat(500)),
            )]
            .into(),
        );
        let v = requested_sync(&ws, &st).unwrap();
        assert!(v.chars().count() <= 65 && !v.contains('\n'), "{v}");
        let handled = WorkspaceState {
            handled_request: Some(v),
            ..Default::default()
        };
        assert_eq!(
            requested_sync(&ws, &handled),
            None,
            "a long value is not a loop"
        );
    }

    #[test]
    fn a_reconcile_comes_back_at_its_first_deadline_unless_only_an_edit_can_help() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let (in5, in9) = (Some(now + s(5)), Some(now + s(9)));
        // (next listing, next diagnosis, suspended, invalid spec) -> requeue after
        let rows = [
            (None, None, false, false, None, "nothing scheduled"),
            (in9, None, false, false, Some(s(9)), "the next listing"),
            (None, in5, false, false, Some(s(5)), "the next diagnosis"),
            (in9, in5, false, false, Some(s(5)), "the earlier of the two"),
            (
                in5,
                in9,
                true,
                false,
                None,
                "suspended: only an edit resumes it",
            ),
            (
                in5,
                None,
                false,
                true,
                None,
                "an invalid spec: only an edit fixes it",
            ),
            (
                Some(now - s(1)),
                None,
                false,
                false,
                Some(Duration::from_millis(100)),
                "overdue: soon, not in a busy loop",
            ),
        ];
        for (listing, diagnosis, suspended, invalid, want, why) in rows {
            assert_eq!(
                requeue_after(now, listing, diagnosis, suspended, invalid),
                want,
                "{why}"
            );
        }
    }

    #[test]
    fn failed_reconciles_back_off_from_5s_to_5_minutes() {
        let s = Duration::from_secs;
        assert_eq!(reconcile_retry(1, 0.0), s(5));
        assert_eq!(reconcile_retry(2, 0.0), s(10));
        assert_eq!(reconcile_retry(7, 0.0), s(300));
        assert_eq!(reconcile_retry(u32::MAX, 0.0), s(300));
        assert_eq!(
            reconcile_retry(1, 0.2),
            s(6),
            "the drawn jitter lengthens it"
        );
    }
}
