//! kstatus-compatible conditions (`Ready`, `Reconciling`, `Stalled`, and the mirrors' `Synced`),
//! built so that `lastTransitionTime` moves only when a condition's status really changes.

use super::crd::Condition;
use super::reason::{AsReason, Reason};
use crate::time::Time;

/// A condition's `type`: the four the operator writes, and any other kept as read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    Ready,
    Reconciling,
    Stalled,
    /// The mirrors' condition: `False` while their data may be stale.
    Synced,
    /// A type the operator does not write (kept as read).
    Other(String),
}

impl ConditionType {
    pub fn as_str(&self) -> &str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
            ConditionType::Synced => "Synced",
            ConditionType::Other(s) => s,
        }
    }
}

impl From<&str> for ConditionType {
    fn from(s: &str) -> Self {
        match s {
            "Ready" => ConditionType::Ready,
            "Reconciling" => ConditionType::Reconciling,
            "Stalled" => ConditionType::Stalled,
            "Synced" => ConditionType::Synced,
            other => ConditionType::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ConditionType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ConditionType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ConditionType::from(
            std::borrow::Cow::<str>::deserialize(d)?.as_ref(),
        ))
    }
}

/// A condition's `status`, `True`, `False` or `Unknown` on the wire. Any other string (which
/// the operator never writes) reads as `Unknown`, as Kubernetes' conventions define it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

impl std::fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ConditionStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ConditionStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match std::borrow::Cow::<str>::deserialize(d)?.as_ref() {
            "True" => ConditionStatus::True,
            "False" => ConditionStatus::False,
            _ => ConditionStatus::Unknown,
        })
    }
}

/// Builds a condition, keeping `lastTransitionTime` from `previous` when the status is the same.
pub fn condition(
    previous: &[Condition],
    type_: ConditionType,
    status: bool,
    reason: impl AsReason,
    message: String,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let status = ConditionStatus::from(status);
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(now, |c| c.last_transition_time);
    Condition {
        type_,
        status,
        reason: reason.as_reason().to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

/// Gives each of `conditions` the `lastTransitionTime` of the condition of the same type and
/// status in `found` (what the object turned out to hold, when a write was planned without
/// it): a condition that did not change status keeps the time it last did.
pub fn keep_transition_times(conditions: &mut [Condition], found: &[Condition]) {
    for c in conditions {
        if let Some(f) = found
            .iter()
            .find(|f| f.type_ == c.type_ && f.status == c.status)
        {
            c.last_transition_time = f.last_transition_time;
        }
    }
}

/// Builds the conditions of one object against its previous ones.
pub struct ConditionSet<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: Time,
    out: Vec<Condition>,
}

impl<'a> ConditionSet<'a> {
    pub fn new(previous: &'a [Condition], generation: Option<i64>, now: Time) -> Self {
        ConditionSet {
            previous,
            generation,
            now,
            out: Vec::with_capacity(3),
        }
    }

    pub fn set(
        &mut self,
        type_: ConditionType,
        status: bool,
        reason: impl AsReason,
        message: String,
    ) -> &mut Self {
        self.out.push(condition(
            self.previous,
            type_,
            status,
            reason,
            message,
            self.generation,
            self.now,
        ));
        self
    }

    /// `Ready=False` plus `Stalled=True` (a person must act) or `Reconciling=True` (retrying).
    pub fn failing(&mut self, reason: Reason, stalled: bool, message: String) -> &mut Self {
        self.set(ConditionType::Ready, false, reason, message.clone());
        if stalled {
            self.set(ConditionType::Stalled, true, reason, message)
        } else {
            self.set(
                ConditionType::Reconciling,
                true,
                Reason::RetryingAfterError,
                format!("retrying after {reason}: {message}"),
            )
        }
    }

    pub fn build(self) -> Vec<Condition> {
        self.out
    }
}

/// Whether `conditions` hold `type_` with status `True`.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let (t1, t2, t3) = (Time::test(1), Time::test(2), Time::test(3));
        let c1 = ConditionSet::new(&[], Some(1), t1)
            .set(ConditionType::Ready, true, Reason::Synced, "ok".into())
            .clone_out();
        let c2 = ConditionSet::new(&c1, Some(2), t2)
            .set(
                ConditionType::Ready,
                true,
                Reason::Synced,
                "still ok".into(),
            )
            .clone_out();
        assert_eq!(c2[0].last_transition_time, t1);
        assert_eq!(c2[0].observed_generation, Some(2));
        let c3 = ConditionSet::new(&c2, Some(2), t3)
            .failing(Reason::Throttled, false, "slow down".into())
            .clone_out();
        assert_eq!(c3[0].last_transition_time, t3);
        assert_eq!(c3[1].type_, ConditionType::Reconciling);
        assert!(!is_true(&c3, ConditionType::Ready));
        assert!(is_true(&c3, ConditionType::Reconciling));
    }

    #[test]
    fn wire_format_is_unchanged() {
        let json = r#"{"type":"Ready","status":"True","reason":"Synced","message":"m","lastTransitionTime":"2024-08-15T11:44:39Z","observedGeneration":3}"#;
        let c: Condition = serde_json::from_str(json).unwrap();
        assert_eq!(c.type_, ConditionType::Ready);
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(serde_json::to_string(&c).unwrap(), json);
        let other = r#"{"type":"Custom","status":"Maybe","reason":"X","message":"","lastTransitionTime":"2024-08-15T11:44:39Z"}"#;
        let c: Condition = serde_json::from_str(other).unwrap();
        assert_eq!(c.type_, ConditionType::Other("Custom".into()));
        assert_eq!(c.status, ConditionStatus::Unknown);
    }

    impl ConditionSet<'_> {
        fn clone_out(&mut self) -> Vec<Condition> {
            self.out.clone()
        }
    }
}
