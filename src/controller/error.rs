//! Why a reconcile or a sync failed.

use crate::api::Reason;
use crate::emr::EmrError;

/// Why a reconcile failed (the workspace is retried with a growing backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the workspace status failed: {0}")]
    StatusWrite(#[source] kube::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::StatusWrite(_) => "StatusWrite",
        }
    }
}

/// Why a sync failed: before the remote call (credentials, configuration) or in it.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{message}")]
    Local { reason: Reason, message: String },
    #[error(transparent)]
    Remote(#[from] EmrError),
}

impl SyncError {
    pub fn local(reason: Reason, message: String) -> Self {
        SyncError::Local { reason, message }
    }
    pub fn reason(&self) -> Reason {
        match self {
            SyncError::Local { reason, .. } => *reason,
            SyncError::Remote(e) => Reason::from(e.kind),
        }
    }
    pub(super) fn remote(&self) -> Option<&EmrError> {
        match self {
            SyncError::Local { .. } => None,
            SyncError::Remote(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_labels_are_fixed() {
        let e = Error::StatusWrite(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(e.metric_label(), "StatusWrite");
    }
}
