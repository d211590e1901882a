//! Cache hints for simulators of many nodes.
//!
//! A large simulation waits on memory more than it computes: each event is
//! handled by a different node, whose state is rarely in cache. Reading a
//! node's first line a few events ahead hides that wait; a prefetch does it
//! without stalling the processor until the line has arrived.

/// Asks the processor to bring the cache line holding `*value` towards the
/// core. Changes nothing observable; on targets without a prefetch
/// instruction it does nothing.
#[inline(always)]
pub fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = (value as *const T).cast::<i8>();
        // SAFETY: a prefetch never faults and never reads into a register;
        // `p` comes from a live reference, and SSE (the instruction's only
        // requirement) is part of the x86_64 baseline.
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefetch_changes_nothing() {
        let v = vec![7u64; 1024];
        for x in &v {
            super::prefetch(x);
        }
        super::prefetch(&v[..]);
        assert!(v.iter().all(|&x| x == 7));
    }
}
