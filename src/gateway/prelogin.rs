//! Connections per client address that have not logged in yet, bounded by
//! `limits.connections_per_ip`. When an address reaches the bound, its
//! oldest such connection is closed to make room, as Dovecot's login
//! processes do, rather than the newcomer refused: behind a carrier-grade
//! NAT whole populations of customers share one address, so a refusal
//! would turn away a real user while idle sockets (an attacker's, usually)
//! kept their places. Logged-in sessions do not count: a user's session is
//! bounded by `sessions_per_user` instead.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Notify;

pub struct PreLogin {
    /// Per address, its waiting connections, oldest first.
    by_ip: DashMap<IpAddr, VecDeque<(u64, Arc<Notify>)>>,
    /// 0: unlimited; changed by a config reload.
    max: AtomicUsize,
    next: AtomicU64,
}

/// A connection counted against its address until it logs in or closes.
pub struct Waiting {
    table: Arc<PreLogin>,
    ip: IpAddr,
    id: u64,
    evicted: Arc<Notify>,
}

impl PreLogin {
    pub(crate) fn new(max: usize) -> Arc<PreLogin> {
        Arc::new(PreLogin {
            by_ip: DashMap::new(),
            max: AtomicUsize::new(max),
            next: AtomicU64::new(0),
        })
    }

    /// Counts a new connection from `ip`; true when that closed the
    /// address's oldest waiting connection to make room.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> (Waiting, bool) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        let mut queue = self.by_ip.entry(ip).or_default();
        let mut made_room = false;
        let max = self.max.load(Ordering::Relaxed);
        if max > 0 && queue.len() >= max {
            if let Some((_, oldest)) = queue.pop_front() {
                // Stored as a permit if the connection is not waiting on it
                // yet: it still goes.
                oldest.notify_one();
                made_room = true;
            }
        }
        queue.push_back((id, evicted.clone()));
        drop(queue);
        let waiting = Waiting {
            table: self.clone(),
            ip,
            id,
            evicted,
        };
        (waiting, made_room)
    }

    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn waiting(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&ip).map_or(0, |q| q.len())
    }
}

impl Waiting {
    /// Completes when the connection must close to make room.
    pub(crate) fn evicted(&self) -> Arc<Notify> {
        self.evicted.clone()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // Remove the entry, and the address once it holds none, so the map
        // only holds addresses with waiting connections.
        self.table.by_ip.remove_if_mut(&self.ip, |_, queue| {
            queue.retain(|(id, _)| *id != self.id);
            queue.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_makes_room_and_logins_leave_the_count() {
        let table = PreLogin::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (first, room) = table.enter(ip);
        assert!(!room);
        let (second, _) = table.enter(ip);
        let (third, room) = table.enter(ip);
        assert!(room, "the third made room");
        // The first was told to go, even though it was not listening yet.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            first.evicted().notified(),
        )
        .await
        .expect("the oldest is evicted");
        assert_eq!(table.waiting(ip), 2);
        drop(first); // closing it removes nothing else
        assert_eq!(table.waiting(ip), 2);
        drop(second); // logged in
        let (_fourth, room) = table.enter(ip);
        assert!(!room, "a login made room without an eviction");
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!table.enter(other).1, "other addresses are unaffected");
        drop(third);
        assert_eq!(table.waiting(ip), 1);
    }

    #[test]
    fn a_new_maximum_applies_to_the_next_connection() {
        let table = PreLogin::new(3);
        let ip: IpAddr = "192.0.2.3".parse().unwrap();
        let first = table.enter(ip);
        table.set_max(1);
        let (_second, room) = table.enter(ip);
        assert!(room, "one waiting is the new limit");
        assert_eq!(table.waiting(ip), 1);
        drop(first);
    }

    #[test]
    fn zero_is_unlimited_and_empty_addresses_are_dropped() {
        let table = PreLogin::new(0);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let held: Vec<_> = (0..100).map(|_| table.enter(ip)).collect();
        assert!(held.iter().all(|(_, room)| !room));
        drop(held);
        assert!(table.by_ip.is_empty());
    }
}
