//! The operator's API: the custom resources ([`crd`], [`job`]), their conditions, the reasons they
//! report, and the duration type of their specs. Pure data; no I/O.

pub mod conditions;
pub mod crd;
pub mod credentials;
pub mod duration;
pub mod job;
pub mod reason;

pub use conditions::{ConditionSet, ConditionStatus, ConditionType, condition};
pub use crd::*;
pub use credentials::*;
pub use duration::{DurationError, Interval};
pub use job::*;
pub use reason::{AsReason, EventReason, MirrorReason, Reason, WriteRefusal};
