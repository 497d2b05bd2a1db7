use super::{Counter, Crowded, Held, Key, Keys, Limiters, Penalty};
use std::net::IpAddr;
use std::time::{Duration, Instant};

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn counter_limits_and_forgets() {
    let c = Counter::new(2);
    let a = c.acquire("x").unwrap();
    let b = c.acquire("x").unwrap();
    assert!(c.acquire("x").is_none());
    assert!(c.acquire("y").is_some());
    drop(a);
    let _a = c.acquire("x").unwrap();
    drop((b, _a));
    assert_eq!(c.len(), 0, "released keys leave no entry");
    assert!(Counter::new(0).acquire("z").is_some(), "0 is unlimited");
}

#[test]
fn serial_failures_wait_longer_each_time_up_to_the_cap() {
    let p = Penalty::new(S(15), 100, 4);
    let mut t = Instant::now();
    assert_eq!(p.reserve(1, t), Ok(Duration::ZERO));
    let mut seen = Vec::new();
    for _ in 0..6 {
        p.failed(1, t);
        let wait = p.reserve(1, t).unwrap();
        seen.push(wait.as_secs());
        t += wait;
    }
    assert_eq!(seen, vec![1, 2, 4, 8, 15, 15]);
    assert_eq!(p.reserve(1, t + S(3600)), Ok(Duration::ZERO));
}

#[test]
fn parallel_attempts_queue_one_step_apart_and_the_queue_is_bounded() {
    let p = Penalty::new(S(2), 100, 4);
    let t = Instant::now();
    for _ in 0..3 {
        p.failed(7, t);
    }
    // Step 2 s: eight attempts at once are spaced 2 s apart, not all at 2 s.
    let waits: Vec<_> = (0..5).map(|_| p.reserve(7, t)).collect();
    assert_eq!(
        waits,
        vec![Ok(S(2)), Ok(S(4)), Ok(S(6)), Ok(S(8)), Err(Crowded)]
    );
    assert_eq!(p.pending(7, t), S(10));
}

#[test]
fn memory_is_bounded_and_swept() {
    let p = Penalty::new(S(15), 1000, 4);
    let t = Instant::now();
    for i in 0..10_000u64 {
        p.failed(i, t + Duration::from_millis(i));
    }
    assert!(p.len() <= 1000, "{}", p.len());
    // The most recent offenders are still remembered.
    assert!(p.pending(9_999, t + S(10)) > Duration::ZERO);
    p.sweep(t + S(3600));
    assert_eq!(p.len(), 0, "expired entries are swept");
}

#[test]
fn zero_max_delay_disables() {
    let p = Penalty::new(Duration::ZERO, 10, 4);
    p.failed(1, Instant::now());
    assert_eq!(p.len(), 0);
}

#[test]
fn ipv6_counts_per_prefix_and_mapped_ipv4_as_ipv4() {
    let k = Keys::new(64);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        k.network(ip("2001:db8:1:2::1")),
        k.network(ip("2001:db8:1:2:ffff::9"))
    );
    assert_ne!(
        k.network(ip("2001:db8:1:2::1")),
        k.network(ip("2001:db8:1:3::1"))
    );
    assert_eq!(
        k.network(ip("::ffff:192.0.2.1")),
        k.network(ip("192.0.2.1"))
    );
    assert_ne!(k.network(ip("192.0.2.1")), k.network(ip("192.0.2.2")));
    let whole = Keys::new(128);
    assert_ne!(
        whole.network(ip("2001:db8::1")),
        whole.network(ip("2001:db8::2"))
    );
}

#[test]
fn a_known_address_skips_the_users_queue_but_a_new_one_waits() {
    let config = crate::config::Limits {
        auth_penalty_max: S(8),
        ..Default::default()
    };
    let l = Limiters::new(&config, false);
    let t = Instant::now();
    let (home, guesser, cafe) = (
        l.keys.network("192.0.2.1".parse().unwrap()),
        l.keys.network("198.51.100.1".parse().unwrap()),
        l.keys.network("203.0.113.1".parse().unwrap()),
    );
    let user = l.keys.user("ann");
    l.succeeded(home, user, t);
    for _ in 0..3 {
        l.failed(guesser, user, t);
    }
    let at_home = l.admit(home, user, t).unwrap();
    assert_eq!(
        (at_home.wait, at_home.held),
        (Duration::ZERO, Held::Network)
    );
    assert!(at_home.in_flight.is_none(), "home is not counted in flight");
    let at_cafe = l.admit(cafe, user, t).unwrap();
    assert_eq!((at_cafe.wait, at_cafe.held), (S(4), Held::User));
}

#[test]
fn attempts_in_flight_per_user_are_bounded_even_without_failures() {
    let config = crate::config::Limits {
        auth_attempts_queued_per_user: 2,
        ..Default::default()
    };
    let l = Limiters::new(&config, false);
    let t = Instant::now();
    let user = l.keys.user("ann");
    let net = |i: u8| l.keys.network(IpAddr::from([192, 0, 2, i]));
    let a = l.admit(net(1), user, t).unwrap();
    let _b = l.admit(net(2), user, t).unwrap();
    assert!(l.admit(net(3), user, t).is_err(), "a third in flight");
    assert_eq!(a.wait, Duration::ZERO);
    drop(a);
    assert!(l.admit(net(3), user, t).is_ok(), "a slot came back");
    let other = l.keys.user("bob");
    assert!(l.admit(net(4), other, t).is_ok(), "other users unaffected");
}

#[test]
fn a_full_table_makes_room_only_for_a_new_key() {
    let p = Penalty::new(S(60), 4, 4);
    let t = Instant::now();
    for key in 1..=4 {
        p.failed(key, t + S(key));
    }
    p.failed(1, t + S(10));
    assert_eq!(p.len(), 4, "a key already counted takes no room");
    assert_eq!(p.pending(1, t + S(10)), S(2), "its second failure counts");
    p.failed(5, t + S(11));
    assert_eq!(
        p.len(),
        2,
        "the older half went for a new key, and it came in"
    );
    assert_eq!(p.pending(2, t + S(11)), Duration::ZERO);
    assert_eq!(p.pending(1, t + S(11)), S(1));
}

#[test]
fn known_networks_are_kept_a_day_and_a_full_table_drops_its_older_half() {
    let known = super::Known {
        since: dashmap::DashMap::new(),
        capacity: 4,
    };
    let t = Instant::now();
    for key in 1..=4 {
        known.insert(key, t + S(key));
    }
    known.sweep(t + S(23 * 3600));
    assert_eq!(known.since.len(), 4, "23 hours are inside the day");
    known.insert(5, t + S(3600));
    let mut kept: Vec<Key> = known.since.iter().map(|e| *e.key()).collect();
    kept.sort_unstable();
    assert_eq!(kept, [4, 5], "the three oldest made room");
    // Full again: a key already there takes no room and drops no one.
    for key in 6..=7 {
        known.insert(key, t + S(3600 + key));
    }
    known.insert(7, t + S(3700));
    assert_eq!(
        known.since.len(),
        4,
        "refreshing a known key evicts nothing"
    );
    for key in 6..=7 {
        known.since.remove(&key);
    }
    let day = super::KNOWN_FOR;
    known.sweep(t + day + S(4));
    assert!(known.contains(4, t + day + S(4)), "known for exactly a day");
    known.sweep(t + day + S(5));
    assert!(!known.contains(4, t + day + S(5)));
    assert_eq!(known.since.len(), 1);
}

#[test]
fn the_gauge_counts_every_table() {
    let config = crate::config::Limits {
        auth_penalty_max: S(8),
        ..Default::default()
    };
    let l = Limiters::new(&config, false);
    let t = Instant::now();
    let net = |s: &str| l.keys.network(s.parse().unwrap());
    let (ann, bob) = (l.keys.user("ann"), l.keys.user("bob"));
    l.failed(net("192.0.2.1"), ann, t);
    assert_eq!(l.remembered(), 2, "a network and a user");
    l.failed(net("192.0.2.2"), bob, t);
    l.succeeded(net("192.0.2.1"), ann, t);
    // Two users' failures, 192.0.2.2's, and ann's login from 192.0.2.1,
    // which cleared that network.
    assert_eq!(l.remembered(), 2 + 1 + 1);
    l.sweep(t + S(2 * 86_400));
    assert_eq!(l.remembered(), 0, "every table swept");
}

#[test]
fn failures_are_forgotten_after_five_minutes_or_four_longest_delays() {
    let window = |max| {
        let config = crate::config::Limits {
            auth_penalty_max: S(max),
            ..Default::default()
        };
        Limiters::new(&config, false).window()
    };
    assert_eq!(window(15), S(300));
    assert_eq!(window(120), S(480));
}
