//! emr-ray-operator: mirrors Alibaba Cloud EMR Serverless Spark Ray clusters as read-only
//! Kubernetes custom resources.
//!
//! One small module per concern: `crd` (the API types), `emr` (the remote API client), `sim`
//! (the EMR simulator), `mirror` (remote cluster → mirror, pure), `controller` (the reconciler),
//! `metrics`, `leader` (lease election), `operator` (wiring and HTTP endpoints), `demo`.

pub mod controller;
pub mod crd;
pub mod demo;
pub mod emr;
pub mod leader;
pub mod metrics;
pub mod mirror;
pub mod operator;
pub mod sim;
