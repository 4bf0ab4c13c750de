//! emr-ray-operator: mirrors Alibaba Cloud EMR Serverless Spark Ray clusters as read-only
//! Kubernetes custom resources.
//!
//! Layers, each importing only those below it:
//!
//! 1. [`time`] — the one timestamp format; [`backoff`] — the one backoff formula;
//! 2. [`emr`] — the EMR OpenAPI client: signing, credentials, endpoints, errors, model,
//!    redaction (no Kubernetes, no command line);
//! 3. [`api`] — the custom resources, their conditions, reasons and durations (pure data);
//! 4. [`metrics`] — the Prometheus registry;
//! 5. [`controller`] — the reconciler: a pure `plan` and `status`, thin `apply`, `state`;
//! 6. [`operator`] — wiring: controllers per namespace, HTTP endpoints, leader election;
//! 7. [`cli`] — the subcommands (`run`, `list`, `sync`, `crdgen`).
//!
//! No test machinery lives here: the EMR simulator and the demo are the `emr-sim` crate
//! (`sim/`, using only [`emr`], [`time`] and, for the demo, [`operator`]), the benchmarks the
//! `emr-bench` crate (`bench/`), the fuzz targets `fuzz/`.

pub mod api;
pub mod backoff;
pub mod cli;
pub mod controller;
pub mod emr;
pub mod metrics;
pub mod operator;
pub mod time;
