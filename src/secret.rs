//! Secrets (passwords, SASL payloads, tokens), shared by both protocols.

/// A password or SASL payload. Its `Debug` never shows the bytes, so it cannot
/// leak into a log line by accident, and its bytes are wiped when it drops.
/// Build it from a buffer that already holds the whole secret: a `Vec` that
/// grows leaves its old copy behind unwiped.
pub struct Secret(pub Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A copy of exactly the secret's length: nothing to grow, all of it wiped
/// on drop.
impl Clone for Secret {
    fn clone(&self) -> Self {
        Secret(self.0.as_slice().to_vec())
    }
}

/// In constant time for secrets of equal length.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.0.as_slice(), other.0.as_slice()).into()
    }
}

impl Eq for Secret {}

impl Secret {
    /// Volatile writes over the whole capacity (the spare part too), which
    /// the compiler cannot drop as dead stores.
    fn wipe(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl zeroize::ZeroizeOnDrop for Secret {}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn wipe_clears_the_whole_buffer() {
        let mut buf = b"hunter2-and-an-older-longer-secret".to_vec();
        buf.truncate(7);
        let mut s = Secret(buf);
        s.wipe();
        let v = &mut s.0;
        assert!(v.is_empty());
        let spare = v.spare_capacity_mut();
        assert!(spare.len() >= 34);
        // SAFETY: wipe wrote every byte of the capacity.
        assert!(spare.iter().all(|b| unsafe { b.assume_init() } == 0));
    }

    #[test]
    fn equality_and_copies() {
        let a = Secret(b"pw".to_vec());
        assert_eq!(a, a.clone());
        assert_ne!(a, Secret(b"px".to_vec()));
        assert_ne!(a, Secret(b"pw2".to_vec()));
        assert_eq!(a.clone().0.capacity(), 2);
        assert_eq!(format!("{a:?}"), "Secret(<redacted>)");
    }
}
