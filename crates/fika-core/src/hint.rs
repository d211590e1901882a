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
    prefetch_at((value as *const T).cast::<u8>());
}

/// As [`prefetch`], for every cache line of `*value`: for a node whose
/// handling of a message reads much of its state.
#[inline(always)]
pub fn prefetch_all<T: ?Sized>(value: &T) {
    prefetch_lines(value, usize::MAX);
}

/// As [`prefetch`], for the first two cache lines of `*value` (or its
/// only one): where nodes keep what a message offered to them reads (see
/// `Node::absorb`) and what most messages read.
#[inline(always)]
pub fn prefetch_front<T: ?Sized>(value: &T) {
    prefetch_lines(value, 2);
}

/// As [`prefetch`], for the first `lines` cache lines of `*value` (or as
/// many as it has).
#[inline(always)]
pub fn prefetch_lines<T: ?Sized>(value: &T, lines: usize) {
    let p = (value as *const T).cast::<u8>();
    for offset in (0..std::mem::size_of_val(value).min(lines.saturating_mul(64))).step_by(64) {
        prefetch_at(p.wrapping_add(offset));
    }
}

#[inline(always)]
fn prefetch_at(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults, whatever the address, and never
        // reads into a register; SSE (the instruction's only requirement)
        // is part of the x86_64 baseline.
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
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
        super::prefetch_all(&[0u8; 1000]);
        super::prefetch_front(&[0u8; 1000]);
        super::prefetch_front(&0u8);
        super::prefetch_lines(&[0u8; 1000], 3);
        assert!(v.iter().all(|&x| x == 7));
    }
}
