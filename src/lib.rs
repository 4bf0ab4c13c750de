//! emr-ray-operator: mirrors Alibaba Cloud EMR Serverless Spark Ray clusters as read-only
//! Kubernetes custom resources.
//!
//! Layers, each importing only those below it:
//!
//! 1. [`time`] — the one timestamp format;
//! 2. [`emr`] — the EMR OpenAPI client: signing, credentials, endpoints, errors, model,
//!    redaction (no Kubernetes, no command line);
//! 3. [`api`] — the custom resources, their conditions, reasons and durations (pure data);
//! 4. [`metrics`] — the Prometheus registry;
//! 5. [`controller`] — the reconciler: a pure `plan` and `status`, thin `apply`, `state`;
//! 6. [`operator`] — wiring: controllers per namespace, HTTP endpoints, leader election;
//! 7. [`cli`] — the subcommands (`run`, `list`, `crdgen`, `demo`).
//!
//! [`sim`], the EMR simulator for the demo, tests and benchmarks, uses only [`emr`] and
//! [`time`], and is built only with the `sim` feature (on by default, off in the image).

pub mod api;
pub mod cli;
pub mod controller;
pub mod emr;
pub mod metrics;
pub mod operator;
#[cfg(feature = "sim")]
pub mod sim;
pub mod time;
