//! kstatus-compatible conditions (`Ready`, `Reconciling`, `Stalled`, and the mirrors' `Synced`),
//! built so that `lastTransitionTime` moves only when a condition's status really changes.

use super::crd::Condition;
use super::reason::Reason;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const SYNCED: &str = "Synced";

/// Builds a condition, keeping `lastTransitionTime` from `previous` when the status is the same.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

/// Builds the conditions of one object against its previous ones.
pub struct ConditionSet<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: &'a str,
    out: Vec<Condition>,
}

impl<'a> ConditionSet<'a> {
    pub fn new(previous: &'a [Condition], generation: Option<i64>, now: &'a str) -> Self {
        ConditionSet {
            previous,
            generation,
            now,
            out: Vec::with_capacity(3),
        }
    }

    pub fn set(&mut self, type_: &str, status: bool, reason: &str, message: String) -> &mut Self {
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
        self.set(READY, false, reason.as_str(), message.clone());
        if stalled {
            self.set(STALLED, true, reason.as_str(), message)
        } else {
            self.set(
                RECONCILING,
                true,
                Reason::RetryingAfterError.as_str(),
                format!("retrying after {reason}: {message}"),
            )
        }
    }

    pub fn build(self) -> Vec<Condition> {
        self.out
    }
}

/// Whether `conditions` hold `type_` with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let c1 = ConditionSet::new(&[], Some(1), "t1")
            .set(READY, true, "Synced", "ok".into())
            .clone_out();
        let c2 = ConditionSet::new(&c1, Some(2), "t2")
            .set(READY, true, "Synced", "still ok".into())
            .clone_out();
        assert_eq!(c2[0].last_transition_time, "t1");
        assert_eq!(c2[0].observed_generation, Some(2));
        let c3 = ConditionSet::new(&c2, Some(2), "t3")
            .failing(Reason::Throttled, false, "slow down".into())
            .clone_out();
        assert_eq!(c3[0].last_transition_time, "t3");
        assert_eq!(c3[1].type_, RECONCILING);
        assert!(!is_true(&c3, READY));
        assert!(is_true(&c3, RECONCILING));
    }

    impl ConditionSet<'_> {
        fn clone_out(&mut self) -> Vec<Condition> {
            self.out.clone()
        }
    }
}
