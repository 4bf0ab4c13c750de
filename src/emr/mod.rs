//! EMR Serverless Spark OpenAPI client.
//!
//! * [`sign`]: pure canonicalization / signing (ACS3-HMAC-SHA256 and ROA HMAC-SHA1), shared with
//!   the simulator's verifier;
//! * [`client`]: `ListRayCluster` with paging, retries, timeouts and a client-side rate limit,
//!   and `GetRayCluster` (one cluster's instances) under the same protections;
//! * [`credentials`]: static, environment and RRSA credentials;
//! * [`endpoint`]: endpoint resolution; [`redact`]: endpoints without tokens;
//! * [`queues`]: the `ListWorkspaceQueues` model and its resource quantities;
//! * [`error`]: classified errors; [`model`]: the response types; [`text`]: every remote
//!   string cleaned and capped as it is decoded.
//!
//! This layer knows nothing of Kubernetes or of the command line.

pub mod client;
pub mod credentials;
pub mod endpoint;
pub mod error;
pub mod job;
pub mod model;
pub mod queues;
pub mod redact;
pub mod sign;
pub mod text;

pub use client::{
    ClientConfig, EmrClient, JobListing, Listing, PageDigests, RequestOutcome, SignatureVersion,
};
pub use credentials::{
    CredentialResolver, CredentialSource, Credentials, RrsaConfig, SecretString,
};
pub use error::{EmrError, ErrorKind};
pub use job::{ACTION_LIST_RAY_JOB, JobState, RayJob, SubmitWindow};
pub use model::*;
pub use queues::{
    ACTION_LIST_WORKSPACE_QUEUES, ListWorkspaceQueuesResponse, QueueResources, WorkspaceQueue,
};

/// Product API version.
pub const API_VERSION: &str = "2023-08-08";
/// Action name of the listing.
pub const ACTION_LIST_RAY_CLUSTER: &str = "ListRayCluster";
/// Action name of one cluster's details (`instances[]`).
pub const ACTION_GET_RAY_CLUSTER: &str = "GetRayCluster";
