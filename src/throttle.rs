//! Backoff for failed authentication: dashboard logins, API keys on `/api` and `/mcp`,
//! and git push tokens. Failures are counted per client address (IPv6 by /64) and, for
//! git, per repository; after too many in a window, further attempts are refused with
//! `429` and `Retry-After` before any key is checked (a correct key included), and each
//! new block lasts twice the last. The table is bounded: it never holds more than
//! [`MAX_TRACKED`] entries, whatever an attacker sends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed within [`WINDOW`] before a block.
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first block; each further one doubles, up to [`MAX_BLOCK`].
pub const FIRST_BLOCK: Duration = Duration::from_secs(30);
/// The longest block.
pub const MAX_BLOCK: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most (addresses and accounts together).
pub const MAX_TRACKED: usize = 10_000;

/// What a failure is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A client address (an IPv6 address stands for its /64).
    Address(IpAddr),
    /// An account: `org/repo` for git tokens.
    Account(String),
}

impl Subject {
    /// The subject of a client address.
    pub fn address(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                Self::Address(IpAddr::V6(segments.into()))
            }
            IpAddr::V6(v6) => Self::Address(IpAddr::V4(v6.to_ipv4_mapped().expect("checked"))),
            v4 => Self::Address(v4),
        }
    }
}

#[derive(Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    last_block: Duration,
    last_seen: Instant,
}

impl Entry {
    /// Forgotten once nothing happened for the longest block.
    fn stale(&self, now: Instant) -> bool {
        self.blocked_until.is_none_or(|until| until <= now) && now.duration_since(self.last_seen) > MAX_BLOCK
    }
}

/// The failure table shared by every authenticating endpoint.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    entries: Mutex<HashMap<Subject, Entry>>,
}

impl AuthThrottle {
    /// `Err(retry after)` while any of `subjects` is blocked.
    pub fn check(&self, subjects: &[Subject]) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("throttle lock");
        let wait = subjects
            .iter()
            .filter_map(|s| entries.get(s)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a failed attempt against each of `subjects`.
    pub fn failure(&self, subjects: &[Subject]) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("throttle lock");
        for subject in subjects {
            if !entries.contains_key(subject) && entries.len() >= MAX_TRACKED {
                make_room(&mut entries, now);
            }
            let entry = entries.entry(subject.clone()).or_insert(Entry {
                window_start: now,
                failures: 0,
                blocked_until: None,
                last_block: Duration::ZERO,
                last_seen: now,
            });
            if now.duration_since(entry.window_start) > WINDOW {
                entry.window_start = now;
                entry.failures = 0;
            }
            entry.failures += 1;
            entry.last_seen = now;
            if entry.failures >= MAX_FAILURES {
                let block = if entry.last_block.is_zero() {
                    FIRST_BLOCK
                } else {
                    (entry.last_block * 2).min(MAX_BLOCK)
                };
                entry.last_block = block;
                entry.blocked_until = Some(now + block);
                entry.failures = 0;
                entry.window_start = now;
            }
        }
    }
}

/// Frees a slot: stale entries first, else the one quiet for longest that is not blocked
/// (a blocked one only if every entry is).
fn make_room(entries: &mut HashMap<Subject, Entry>, now: Instant) {
    entries.retain(|_, e| !e.stale(now));
    if entries.len() < MAX_TRACKED {
        return;
    }
    let victim = entries
        .iter()
        .min_by_key(|(_, e)| (e.blocked_until.is_some_and(|u| u > now), e.last_seen))
        .map(|(s, _)| s.clone());
    if let Some(victim) = victim {
        entries.remove(&victim);
    }
}

/// A `Retry-After` value in whole seconds (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_too_many_failures_and_doubles() {
        let t = AuthThrottle::default();
        let who = [Subject::address("10.0.0.1".parse().unwrap())];
        for _ in 0..MAX_FAILURES - 1 {
            t.failure(&who);
        }
        assert!(t.check(&who).is_ok());
        t.failure(&who);
        let first = t.check(&who).unwrap_err();
        assert!(first <= FIRST_BLOCK && first > FIRST_BLOCK - Duration::from_secs(1));
        for _ in 0..MAX_FAILURES {
            t.failure(&who);
        }
        let second = t.check(&who).unwrap_err();
        assert!(second > FIRST_BLOCK, "{second:?}");
        assert!(t.check(&[Subject::address("10.0.0.2".parse().unwrap())]).is_ok());
    }

    #[test]
    fn ipv6_counts_by_64_and_the_table_is_bounded() {
        let a = Subject::address("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Subject::address("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        let mapped = Subject::address("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped, Subject::address("10.0.0.1".parse().unwrap()));
        let t = AuthThrottle::default();
        for i in 0..(MAX_TRACKED as u32 + 50) {
            t.failure(&[Subject::Account(format!("org/repo{i}"))]);
        }
        assert!(t.entries.lock().unwrap().len() <= MAX_TRACKED);
    }
}
