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

/// The process's allocator: the system's, but every block is zeroed before
/// it is given back. A password passes through buffers popgate does not
/// own (rustls's plaintext queues, the line reader's buffer); wiping freed
/// memory is what keeps it from outliving the session in the heap, where a
/// memory-reading attacker or a core file would find it. The cost is one
/// write per freed byte, well below the copies each byte already takes.
pub struct WipingAllocator;

// SAFETY: every call is passed to the system allocator with its own
// arguments; `dealloc` only writes inside the block it is about to free.
unsafe impl std::alloc::GlobalAlloc for WipingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        std::alloc::System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        std::alloc::System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::ptr::write_bytes(ptr, 0, layout.size());
        // The block is freed next, so the compiler could drop the writes
        // as dead stores; an empty asm block that may read through the
        // pointer keeps them (`black_box` promises this only on a best-effort
        // basis).
        std::arch::asm!("/* {0} */", in(reg) ptr, options(nostack, preserves_flags));
        std::alloc::System.dealloc(ptr, layout)
    }
}

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
