//! Integration tests that may run side by side: the control plane itself, the EMR client and
//! simulator, the operator end to end, the chart and the GitOps assets. One binary, so that the
//! crate is linked once.

#[path = "../common/mod.rs"]
mod common;
#[path = "../consumer_tools/mod.rs"]
mod consumer_tools;
#[path = "../support/mod.rs"]
mod support;

mod chart;
mod consumers;
mod control_plane;
mod emr_client;
mod emr_sim;
mod fuzz_seeds;
mod gitops;
mod hostile;
mod instances;
mod jobs;
mod metrics_security;
mod operator;
mod queue_status;
mod queues;
mod release;
mod sdk_conformance;
mod sharding;
mod tenancy;
