//! The names the limits keep their bookkeeping under: fixed-size digests
//! of a client network or a canonical user name, never the name itself.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;

/// A fixed-size penalty key: a keyed digest, so its size does not depend
/// on what a client sent and its value cannot be aimed at by one.
pub(crate) type Key = u64;

/// Makes [`Key`]s with a per-process random SipHash key.
pub(crate) struct Keys {
    hasher: RandomState,
    v6_prefix: u8,
}

impl Keys {
    pub(crate) fn new(v6_prefix: u8) -> Keys {
        Keys {
            hasher: RandomState::new(),
            v6_prefix: v6_prefix.min(128),
        }
    }

    /// The client's network: the IPv4 address, or its IPv6 prefix.
    pub(crate) fn network(&self, ip: IpAddr) -> Key {
        self.hasher.hash_one(self.net(ip))
    }

    fn net(&self, ip: IpAddr) -> (u8, u128) {
        match ip.to_canonical() {
            IpAddr::V4(v4) => (0, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => {
                let mask = match self.v6_prefix {
                    0 => 0,
                    p => u128::MAX << (128 - u32::from(p)),
                };
                (1, u128::from(v6) & mask)
            }
        }
    }

    /// The network as every instance names it in a shared store: a digest
    /// that is the same in every process (the in-memory keys are not).
    pub(crate) fn network_id(&self, ip: IpAddr) -> String {
        let (family, bits) = self.net(ip);
        let mut input = vec![b'n', family];
        input.extend_from_slice(&bits.to_be_bytes());
        shared_digest(&input)
    }

    /// The user as every instance names it in a shared store.
    pub(crate) fn user_id(&self, canonical: &str) -> String {
        shared_digest(&[b"u:", canonical.as_bytes()].concat())
    }

    /// A user, by the canonical name (see `session::authorization`).
    pub(crate) fn user(&self, canonical: &str) -> Key {
        self.hasher.hash_one((2u8, canonical))
    }

    /// A user at a network, for the addresses users logged in from.
    pub(super) fn known(&self, user: Key, network: Key) -> Key {
        self.hasher.hash_one((3u8, user, network))
    }
}

/// 128 bits of SHA-256, in hex: names a user or network in Redis without
/// writing the name itself there.
fn shared_digest(input: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, input);
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Keys;
    use std::net::IpAddr;

    #[test]
    fn shared_names_are_the_same_in_every_process_and_group_an_ipv6_prefix() {
        let (a, b) = (Keys::new(64), Keys::new(64));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let net = a.network_id(ip("192.0.2.1"));
        assert_eq!(net.len(), 32, "128 bits in hex");
        assert_eq!(
            net,
            b.network_id(ip("192.0.2.1")),
            "another instance agrees"
        );
        assert_eq!(
            net,
            a.network_id(ip("::ffff:192.0.2.1")),
            "a mapped address is the same"
        );
        assert_ne!(net, a.network_id(ip("192.0.2.2")));
        assert_eq!(
            a.network_id(ip("2001:db8::1")),
            b.network_id(ip("2001:db8::ffff:2")),
            "one /64"
        );
        assert_ne!(
            a.network_id(ip("2001:db8::1")),
            a.network_id(ip("2001:db8:0:1::1"))
        );
        assert_ne!(a.user_id("ann"), a.user_id("bob"));
        assert_eq!(a.user_id("ann"), b.user_id("ann"));
        assert_ne!(a.user_id("ann"), net);
    }
}
