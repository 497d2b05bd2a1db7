//! RFC 2449's LOGIN-DELAY: the least time between two logins of one user.
//! Each proven login books the user's time; a login inside the delay is
//! refused with `[LOGIN-DELAY]`. On Redis the booking is one `SET NX PX`
//! shared by every instance; otherwise, or while Redis is away with
//! `state.on_unavailable: serve`, this instance's table counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::limits::Key;

/// Users logged in within the delay, on this instance.
pub(crate) struct LoginDelays {
    delay: Duration,
    booked: Mutex<Booked>,
}

struct Booked {
    last: HashMap<Key, Instant>,
    /// Table size at which expired entries are swept.
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 1024;

impl LoginDelays {
    pub(crate) fn new(delay: Duration) -> LoginDelays {
        LoginDelays {
            delay,
            booked: Mutex::new(Booked {
                last: HashMap::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }

    pub(crate) fn delay(&self) -> Duration {
        self.delay
    }

    /// True when `user` may log in at `now`, which is then booked; a
    /// refused login books nothing, so the delay runs from the last
    /// login that got in.
    pub(crate) fn admit(&self, user: Key, now: Instant) -> bool {
        let mut b = self.booked.lock().unwrap_or_else(|p| p.into_inner());
        if b.last.len() >= b.sweep_at {
            let delay = self.delay;
            b.last.retain(|_, t| now.duration_since(*t) < delay);
            b.sweep_at = (b.last.len() * 2).max(FIRST_SWEEP);
        }
        match b.last.get(&user) {
            Some(t) if now.duration_since(*t) < self.delay => false,
            _ => {
                b.last.insert(user, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_login_inside_the_delay_is_refused() {
        let d = LoginDelays::new(Duration::from_secs(60));
        let (a, b) = (1u64, 2u64);
        let t = Instant::now();
        assert!(d.admit(a, t));
        assert!(!d.admit(a, t + Duration::from_secs(59)));
        assert!(d.admit(b, t + Duration::from_secs(1)));
        assert!(d.admit(a, t + Duration::from_secs(60)));
        assert!(!d.admit(a, t + Duration::from_secs(61)));
    }

    #[test]
    fn expired_entries_are_swept() {
        let d = LoginDelays::new(Duration::from_secs(1));
        let t = Instant::now();
        for i in 0..5000 {
            assert!(d.admit(i, t));
        }
        // The table grows to twice what is live before a sweep, no more.
        let later = t + Duration::from_secs(2);
        for i in 5000..10_000 {
            assert!(d.admit(i, later));
        }
        let held = d.booked.lock().unwrap().last.len();
        assert!(held < 10_000, "{held}");
    }

    #[test]
    fn a_sweep_keeps_the_logins_still_inside_the_delay() {
        let d = LoginDelays::new(Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..FIRST_SWEEP as u64 {
            assert!(d.admit(i, t + Duration::from_secs(i % 2 * 30)));
        }
        // This login sweeps: the expired half goes, the rest still wait.
        let later = t + Duration::from_secs(61);
        assert!(d.admit(u64::MAX, later));
        assert_eq!(d.booked.lock().unwrap().last.len(), FIRST_SWEEP / 2 + 1);
        assert!(!d.admit(1, later), "booked 31 s ago");
        assert!(d.admit(0, later), "booked 61 s ago");
    }
}
