//! The one list of reasons the operator reports, with what each one means: the condition
//! reason string, whether a person must act (`Stalled`) or the operator retries by itself
//! (`Reconciling`), and the metric label. Nothing else matches reasons by hand.

use crate::emr::{ClusterState, ErrorKind};

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident => $stalls:expr ),* $(,)?) => {
        /// Why a workspace (or a mirror) is in the state it is in.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[$doc])* $name, )*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            /// The CamelCase string of conditions, Events and metric labels.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Reason::$name => stringify!($name), )*
                }
            }

            /// A person must change something before a retry can succeed: reported as
            /// `Stalled=True` rather than `Reconciling=True`.
            pub const fn is_stalling(self) -> bool {
                match self {
                    $( Reason::$name => $stalls, )*
                }
            }
        }
    };
}

reasons! {
    /// Every mirror matches the last complete listing.
    Synced => false,
    /// No listing has completed yet.
    Pending => false,
    /// The `Reconciling` reason while a retryable failure is retried.
    RetryingAfterError => false,
    /// `spec.suspend` is set.
    Suspended => false,
    /// The remote API rejected the access key, signature, token or timestamp.
    AuthenticationFailed => true,
    /// The access key may not list the workspace's Ray clusters.
    PermissionDenied => true,
    /// The remote API throttled us.
    Throttled => false,
    /// 5xx or a network error.
    RemoteUnavailable => false,
    /// A request or the whole listing took too long.
    Timeout => false,
    /// The remote API rejected the request as invalid.
    InvalidRequest => true,
    /// The remote workspace does not exist.
    WorkspaceNotFound => true,
    /// A 200 whose body is not the documented JSON.
    MalformedResponse => false,
    /// The listing could not be completed consistently.
    IncompleteListing => false,
    /// Credentials could not be obtained (environment, RRSA, STS, or an unreadable Secret).
    /// Whether the remote was called (STS) is not in the reason: see
    /// `controller::decide::called_the_remote`.
    CredentialsUnavailable => true,
    /// The endpoint or region is not usable.
    InvalidEndpoint => true,
    /// The credentials Secret does not exist.
    SecretNotFound => true,
    /// The credentials Secret lacks a key.
    SecretKeyMissing => true,
    /// The spec cannot be acted on (e.g. an unparsable `syncInterval`).
    InvalidSpec => true,
    /// The referenced `EmrClusterCredentials` does not exist or does not allow this namespace.
    CredentialsNotPermitted => true,
    /// The endpoint is not one the operator (or the cluster credentials) may send credentials to.
    EndpointNotAllowed => true,
    /// The workspace has more clusters than the operator mirrors (`--max-clusters-per-workspace`).
    TooManyClusters => true,
    /// The workspace has more Ray jobs in its retention window than the operator mirrors
    /// (`--max-jobs-per-workspace`): shorten `spec.jobs.retention`.
    TooManyJobs => true,
    /// Another `EmrWorkspace` of the namespace mirrors the same remote workspace.
    DuplicateWorkspace => true,
    /// The API server refused mirror writes. Whether it stalls depends on the refusal:
    /// see [`WriteRefusal::is_permanent`].
    MirrorWriteFailed => false,
    /// A mirror missing from a listing that ended on a page boundary (kept, not deleted).
    RemovalUnconfirmed => false,
    /// A mirror name is held by another workspace's mirror.
    MirrorNameConflict => true,
}

impl Reason {
    /// The metric label of this reason (a fixed set: the reasons themselves).
    pub const fn metric_label(self) -> &'static str {
        self.as_str()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ErrorKind> for Reason {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Auth => Reason::AuthenticationFailed,
            ErrorKind::Permission => Reason::PermissionDenied,
            ErrorKind::Throttled => Reason::Throttled,
            ErrorKind::Transient => Reason::RemoteUnavailable,
            ErrorKind::Timeout => Reason::Timeout,
            ErrorKind::InvalidRequest => Reason::InvalidRequest,
            ErrorKind::NotFound => Reason::WorkspaceNotFound,
            ErrorKind::Malformed => Reason::MalformedResponse,
            ErrorKind::Incomplete => Reason::IncompleteListing,
            ErrorKind::Credentials | ErrorKind::Sts => Reason::CredentialsUnavailable,
            ErrorKind::Config => Reason::InvalidEndpoint,
            ErrorKind::TooManyClusters => Reason::TooManyClusters,
        }
    }
}

/// A reason the operator writes (a condition's `reason`, an Event's `reason`). Only the typed
/// reasons implement it ([`Reason`], [`MirrorReason`], [`EventReason`], and the remote job
/// states, [`crate::emr::JobState`]), so a string literal cannot be written as one.
pub trait AsReason: Copy {
    fn as_reason(self) -> &'static str;
}

impl AsReason for Reason {
    fn as_reason(self) -> &'static str {
        self.as_str()
    }
}

/// Declares a fieldless enum whose variant names are its strings (`as_str`, `ALL`, `Display`,
/// [`AsReason`]).
macro_rules! named_reasons {
    ($(#[$m:meta])* $enum_name:ident { $( $(#[$doc:meta])* $name:ident ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $enum_name {
            $( $(#[$doc])* $name, )*
        }

        impl $enum_name {
            pub const ALL: &'static [$enum_name] = &[$($enum_name::$name),*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $enum_name::$name => stringify!($name), )*
                }
            }
        }

        impl std::fmt::Display for $enum_name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsReason for $enum_name {
            fn as_reason(self) -> &'static str {
                self.as_str()
            }
        }
    };
}

named_reasons! {
    /// The reasons of a mirror's own conditions (`EmrRayCluster`, `EmrRayJob`) beside the
    /// workspace [`Reason`]s their `Synced` condition repeats and the job states.
    MirrorReason {
        /// The remote cluster is Running (`Ready=True`).
        Running,
        /// The remote cluster is Starting.
        Starting,
        /// The remote cluster is Stopping.
        Stopping,
        /// The remote cluster is Stopped.
        Stopped,
        /// The remote cluster is in Error (`Ready=False`).
        Error,
        /// The remote cluster is in Error (`Stalled=True`).
        ClusterError,
        /// A state outside the reference, or none.
        UnknownState,
        /// The remote cluster is no longer listed (`goneClusterPolicy: Keep`).
        RemoteClusterGone,
        /// `Synced=True`: the status mirrors the last complete listing.
        ListingSucceeded,
    }
}

impl MirrorReason {
    /// The `Ready` reason of a remote cluster state (`UnknownState` outside the reference).
    pub fn of_state(state: Option<&ClusterState>) -> Self {
        match state {
            Some(ClusterState::Running) => MirrorReason::Running,
            Some(ClusterState::Starting) => MirrorReason::Starting,
            Some(ClusterState::Stopping) => MirrorReason::Stopping,
            Some(ClusterState::Stopped) => MirrorReason::Stopped,
            Some(ClusterState::Error) => MirrorReason::Error,
            Some(ClusterState::Other(_)) | None => MirrorReason::UnknownState,
        }
    }
}

named_reasons! {
    /// The reasons of the Events the operator publishes beside the workspace [`Reason`]s.
    EventReason {
        /// A mirror was created.
        Created,
        /// A mirror was deleted: its remote cluster is no longer listed.
        MirrorDeleted,
        /// A remote cluster changed state.
        StateChanged,
        /// A remote cluster is no longer listed; its mirror is kept.
        RemoteClusterGone,
        /// Many mirrors were created or deleted at once (one Event for all).
        MirrorsSynced,
        /// Mirror writes are accepted again.
        MirrorWritesRecovered,
        /// The resource queues could not be listed.
        QueueListingFailed,
        /// The resource queues are listed again.
        QueueListingRecovered,
        /// A listing failed.
        SyncFailed,
        /// A listing succeeded after failures.
        SyncRecovered,
    }
}

macro_rules! refusals {
    ($( $(#[$doc:meta])* $name:ident => $permanent:expr ),* $(,)?) => {
        /// Why the Kubernetes API server refused one of our writes: a fixed set (metric label).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum WriteRefusal {
            $( $(#[$doc])* $name, )*
        }

        impl WriteRefusal {
            pub const ALL: &'static [WriteRefusal] = &[$(WriteRefusal::$name),*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( WriteRefusal::$name => stringify!($name), )*
                }
            }

            /// Repeating the same write unchanged will fail again until a person acts
            /// (RBAC, a policy, a quota, an invalid or oversized object).
            pub const fn is_permanent(self) -> bool {
                match self {
                    $( WriteRefusal::$name => $permanent, )*
                }
            }
        }
    };
}

refusals! {
    /// 401/403: RBAC, or an admission policy or webhook that denies.
    Forbidden => true,
    /// 400/422: the object is invalid (schema, CEL rule, admission policy).
    Invalid => true,
    /// 413, or the object is over the API server's size limit.
    TooLarge => true,
    /// 409: a conflict (another writer); retried.
    Conflict => false,
    /// 429: the API server throttled us; retried after its `Retry-After`.
    Throttled => false,
    /// 5xx.
    ServerError => false,
    /// The request timed out or the connection failed.
    Unavailable => false,
    /// Anything else.
    Other => false,
}

impl WriteRefusal {
    pub const fn metric_label(self) -> &'static str {
        self.as_str()
    }

    /// Classifies a refusal from its HTTP status and the API server's reason and message.
    pub fn classify(code: u16, reason: &str, message: &str) -> Self {
        let too_large = reason == "RequestEntityTooLarge"
            || message.contains("request is too large")
            || message.contains("Too long: must have at most")
            || message.contains("exceeds the maximum")
            // etcd's gRPC limit, as the API server passes it on (a 500).
            || message.contains("larger than max");
        match code {
            _ if too_large => WriteRefusal::TooLarge,
            413 => WriteRefusal::TooLarge,
            401 | 403 => WriteRefusal::Forbidden,
            400 | 422 => WriteRefusal::Invalid,
            409 => WriteRefusal::Conflict,
            429 => WriteRefusal::Throttled,
            500..=599 => WriteRefusal::ServerError,
            _ => WriteRefusal::Other,
        }
    }
}

impl std::fmt::Display for WriteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalling_reasons_need_a_person() {
        for r in [
            Reason::AuthenticationFailed,
            Reason::SecretNotFound,
            Reason::SecretKeyMissing,
            Reason::InvalidSpec,
            Reason::WorkspaceNotFound,
        ] {
            assert!(r.is_stalling(), "{r}");
        }
        for r in [
            Reason::Throttled,
            Reason::RemoteUnavailable,
            Reason::Timeout,
            Reason::MalformedResponse,
            Reason::IncompleteListing,
            Reason::Synced,
        ] {
            assert!(!r.is_stalling(), "{r}");
        }
    }

    #[test]
    fn every_error_kind_has_a_reason_and_retryable_ones_do_not_stall() {
        let kinds = [
            ErrorKind::Auth,
            ErrorKind::Permission,
            ErrorKind::Throttled,
            ErrorKind::Transient,
            ErrorKind::Timeout,
            ErrorKind::InvalidRequest,
            ErrorKind::NotFound,
            ErrorKind::Malformed,
            ErrorKind::Incomplete,
            ErrorKind::Credentials,
            ErrorKind::Sts,
            ErrorKind::Config,
            ErrorKind::TooManyClusters,
        ];
        for k in kinds {
            let r = Reason::from(k);
            let e = crate::emr::EmrError::new(k, "x");
            assert_eq!(e.is_retryable(), !r.is_stalling(), "{k:?} → {r}");
        }
    }

    #[test]
    fn names_are_unique_camel_case() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()));
            assert!(r.as_str().chars().next().unwrap().is_ascii_uppercase());
        }
    }

    #[test]
    fn mirror_and_event_reasons_are_their_names() {
        assert_eq!(
            MirrorReason::ListingSucceeded.as_reason(),
            "ListingSucceeded"
        );
        assert_eq!(MirrorReason::of_state(None), MirrorReason::UnknownState);
        assert_eq!(
            MirrorReason::of_state(Some(&ClusterState::Error)).as_str(),
            ClusterState::Error.as_str()
        );
        assert_eq!(EventReason::MirrorDeleted.to_string(), "MirrorDeleted");
        assert_eq!(EventReason::ALL.len(), 10);
    }

    #[test]
    fn write_refusals() {
        assert_eq!(
            WriteRefusal::classify(403, "Forbidden", ""),
            WriteRefusal::Forbidden
        );
        assert_eq!(
            WriteRefusal::classify(422, "Invalid", ""),
            WriteRefusal::Invalid
        );
        assert_eq!(
            WriteRefusal::classify(500, "InternalError", "etcdserver: request is too large"),
            WriteRefusal::TooLarge
        );
        assert_eq!(WriteRefusal::classify(413, "", ""), WriteRefusal::TooLarge);
        assert_eq!(
            WriteRefusal::classify(
                500,
                "InternalError",
                "rpc error: code = ResourceExhausted desc = trying to send message larger than \
                 max (2099432 vs. 2097152)"
            ),
            WriteRefusal::TooLarge
        );
        assert_eq!(
            WriteRefusal::classify(429, "TooManyRequests", ""),
            WriteRefusal::Throttled
        );
        assert_eq!(
            WriteRefusal::classify(503, "", ""),
            WriteRefusal::ServerError
        );
        assert_eq!(
            WriteRefusal::classify(409, "Conflict", ""),
            WriteRefusal::Conflict
        );
        assert!(WriteRefusal::Forbidden.is_permanent());
        assert!(!WriteRefusal::Throttled.is_permanent());
    }
}
