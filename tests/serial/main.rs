//! Tests that count the API server's requests or restart it: they run one at a time (each takes
//! [`common::serial`]), after the integration tests, in their own binary.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod fairness;
mod fault_suite;
mod steady_state;
mod write_refusals;
