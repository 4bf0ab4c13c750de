//! The remote data all listings hold at once. One listing is capped
//! ([`ClientConfig::max_listing_bytes`](super::ClientConfig)), but `--concurrency` listings run
//! side by side: without a bound on their sum, a few hostile endpoints answering megabyte pages
//! would add up past the pod's memory limit and crash-loop the operator for every tenant.
//!
//! A listing holds the bytes it has read plus, while a page is read, that page's largest
//! possible body. Holding more than the operator-wide cap — or, with a budget key (the
//! namespace), more than that key's share of it — is refused at once rather than waited for
//! (waiting listings holding part of the budget could wait on each other until their
//! deadlines): the listing fails as throttled and is retried after its backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The operator-wide account of bytes held by listings.
#[derive(Debug)]
pub struct InFlight {
    cap: usize,
    per_key_cap: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_key: HashMap<String, usize>,
}

/// What one listing holds; released when dropped.
#[derive(Debug)]
pub struct Hold {
    account: Arc<InFlight>,
    key: Option<String>,
    bytes: usize,
}

/// A refused hold: what was held and the limit that refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub held: usize,
    pub limit: usize,
    /// The budget key's share refused it (not the operator-wide cap).
    pub by_share: bool,
}

impl InFlight {
    /// `cap` bytes in all; one budget key at most `share` (0–1] of it.
    pub fn new(cap: usize, share: f64) -> Arc<Self> {
        let per_key_cap = ((cap as f64) * share.clamp(0.0, 1.0)) as usize;
        Arc::new(InFlight {
            cap,
            per_key_cap: per_key_cap.max(1),
            held: Mutex::new(Held::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty hold for one listing counted against `key`.
    pub fn hold(self: &Arc<Self>, key: Option<&str>) -> Hold {
        Hold {
            account: self.clone(),
            key: key.map(str::to_string),
            bytes: 0,
        }
    }

    /// Bytes held by every listing together.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.lock().total
    }
}

impl Hold {
    /// Holds `bytes` instead of what it held. Shrinking always succeeds; growing past a limit
    /// is refused and changes nothing.
    pub fn resize(&mut self, bytes: usize) -> Result<(), Refused> {
        let account = self.account.clone();
        let mut held = account.lock();
        let others = held.total - self.bytes;
        let key_held = self
            .key
            .as_ref()
            .map(|k| held.by_key.get(k).copied().unwrap_or(0));
        if bytes > self.bytes {
            if others.saturating_add(bytes) > account.cap {
                return Err(Refused {
                    held: held.total,
                    limit: account.cap,
                    by_share: false,
                });
            }
            if let Some(k) = key_held
                && (k - self.bytes).saturating_add(bytes) > account.per_key_cap
            {
                return Err(Refused {
                    held: k,
                    limit: account.per_key_cap,
                    by_share: true,
                });
            }
        }
        held.total = others + bytes;
        if let Some(key) = &self.key {
            let k = key_held.unwrap_or(0) - self.bytes + bytes;
            if k == 0 {
                held.by_key.remove(key);
            } else {
                held.by_key.insert(key.clone(), k);
            }
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = self.resize(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_add_up_within_the_cap_and_each_key_within_its_share() {
        let f = InFlight::new(100, 0.5);
        let mut a1 = f.hold(Some("a"));
        let mut a2 = f.hold(Some("a"));
        let mut b = f.hold(Some("b"));
        a1.resize(30).unwrap();
        a2.resize(20).unwrap();
        // Namespace a holds its share (50): no more, though the operator could.
        let refused = a2.resize(21).unwrap_err();
        assert!(refused.by_share && refused.limit == 50 && refused.held == 50);
        assert_eq!(f.total(), 50, "a refused resize changes nothing");
        b.resize(50).unwrap();
        // The operator-wide cap.
        let mut none = f.hold(None);
        let refused = none.resize(1).unwrap_err();
        assert!(!refused.by_share && refused.limit == 100);
        // Shrinking always works, dropping releases.
        a1.resize(10).unwrap();
        none.resize(20).unwrap();
        assert_eq!(f.total(), 100);
        drop(a1);
        drop(a2);
        drop(b);
        drop(none);
        assert_eq!(f.total(), 0);
        assert!(f.lock().by_key.is_empty(), "no key is remembered at 0");
    }
}
