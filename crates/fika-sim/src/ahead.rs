//! Heavy-tailed delays drawn ahead, on a second thread for large networks.
//!
//! Every message between two regions draws its delay from that pair's
//! Pareto law. Each law draws from a random stream of its own, so its
//! delays are one fixed sequence whatever the run does with them: they can
//! be drawn before they are needed, by another thread, and the run still
//! gets the same delay for the same message. [`Draws`] hands them out in
//! order, a chunk at a time; a thread fills used chunks again while the
//! run goes on ([`Draws::threaded`]), or the run fills them itself
//! ([`Draws::inline`]), with the same numbers either way.

use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use fika_core::NodeRng;

use crate::net::pareto_factor;

/// Delays per chunk drawn on the thread: few enough hand-overs that waking
/// the thread costs little.
const CHUNK: usize = 4096;

/// Delays per chunk drawn inline: enough for the processor to overlap the
/// draws, few enough that a small network draws little it will not use.
const INLINE_CHUNK: usize = 64;

/// Delays per cache line.
const LINE: usize = 64 / std::mem::size_of::<u64>();

/// One pair's law: `scale · U^(−exponent)` milliseconds, plus `fixed_ms`,
/// as nanoseconds.
#[derive(Clone)]
pub(crate) struct Law {
    /// The Pareto minimum, milliseconds.
    pub scale: f64,
    /// `1 / shape`.
    pub exponent: f64,
    /// The model's fixed costs added to each delay, milliseconds, in the
    /// order they are added.
    pub fixed_ms: [f64; 2],
    /// The law's own stream.
    pub rng: NodeRng,
}

impl Law {
    /// Draws the next `out.len()` delays, in nanoseconds.
    fn fill(&mut self, out: &mut [u64]) {
        for d in out {
            let ms = self.scale * pareto_factor(&mut self.rng, self.exponent);
            *d = crate::net::round_to_u64((ms + self.fixed_ms[0] + self.fixed_ms[1]) * 1e6);
        }
    }
}

/// Where the chunks come from.
enum Source {
    /// Drawn here when needed.
    Inline(Vec<Law>),
    /// Drawn on the maker thread: per law, the chunks made and not yet
    /// used; used chunks go back with the law's index to be filled again.
    Thread {
        ready: Vec<Receiver<Box<[u64]>>>,
        used: Option<Sender<(u32, Box<[u64]>)>>,
        maker: Option<JoinHandle<()>>,
    },
}

/// The delays of a set of laws, handed out in order per law.
pub(crate) struct Draws {
    /// Per law: the chunk in use and the next position in it.
    current: Vec<(Box<[u64]>, usize)>,
    source: Source,
}

impl Draws {
    /// Draws each law's delays on this thread, when needed.
    pub fn inline(laws: Vec<Law>) -> Self {
        let current = laws.iter().map(|_| (Box::from([]), 0)).collect();
        Draws { current, source: Source::Inline(laws) }
    }

    /// Draws each law's delays on a thread of its own, two chunks ahead;
    /// inline if no thread can be started.
    pub fn threaded(laws: Vec<Law>) -> Self {
        let n = laws.len();
        let mut laws_there = laws.clone();
        let (senders, ready): (Vec<SyncSender<Box<[u64]>>>, Vec<_>) = (0..n).map(|_| sync_channel(2)).unzip();
        let (used, requests) = channel::<(u32, Box<[u64]>)>();
        let spawned = std::thread::Builder::new().name("fika-latency".into()).spawn(move || {
            // Two chunks per law to begin with: one to use, one ready.
            let laws = &mut laws_there;
            for (law, tx) in laws.iter_mut().zip(&senders) {
                for _ in 0..2 {
                    let mut chunk: Box<[u64]> = vec![0; CHUNK].into_boxed_slice();
                    law.fill(&mut chunk);
                    if tx.send(chunk).is_err() {
                        return;
                    }
                }
            }
            // Then one more for each chunk used. Ends when the run drops
            // its side.
            for (k, mut chunk) in requests {
                let (Some(law), Some(tx)) = (laws.get_mut(k as usize), senders.get(k as usize)) else {
                    return;
                };
                law.fill(&mut chunk);
                if tx.send(chunk).is_err() {
                    return;
                }
            }
        });
        match spawned {
            Ok(maker) => {
                let current = (0..n).map(|_| (Box::from([]), 0)).collect();
                Draws { current, source: Source::Thread { ready, used: Some(used), maker: Some(maker) } }
            }
            // The same draws, made here.
            Err(_) => Draws::inline(laws),
        }
    }

    /// The next delay of law `k`, in nanoseconds.
    #[inline]
    pub fn next(&mut self, k: usize) -> u64 {
        if let Some((chunk, pos)) = self.current.get_mut(k) {
            if let Some(&d) = chunk.get(*pos) {
                // A chunk drawn on the other core comes over line by line:
                // ask for the line after next when starting a line.
                if *pos % LINE == 0 {
                    if let Some(ahead) = chunk.get(*pos + 2 * LINE) {
                        fika_core::hint::prefetch(ahead);
                    }
                }
                *pos += 1;
                return d;
            }
        }
        self.next_chunk(k)
    }

    /// Takes law `k`'s next chunk and its first delay.
    #[cold]
    fn next_chunk(&mut self, k: usize) -> u64 {
        let Some((chunk, pos)) = self.current.get_mut(k) else {
            // Not reached: every Pareto pair has its law.
            return 0;
        };
        match &mut self.source {
            Source::Inline(laws) => {
                if chunk.len() != INLINE_CHUNK {
                    *chunk = vec![0; INLINE_CHUNK].into_boxed_slice();
                }
                laws[k].fill(chunk);
            }
            Source::Thread { ready, used, .. } => {
                // The maker keeps two chunks ahead, and ends only when this
                // side is dropped.
                let next = ready[k].recv().expect("the latency thread runs as long as the network");
                let old = std::mem::replace(chunk, next);
                if !old.is_empty() {
                    if let Some(tx) = used {
                        let _ = tx.send((k as u32, old));
                    }
                }
            }
        }
        *pos = 1;
        chunk[0]
    }
}

impl Drop for Draws {
    fn drop(&mut self) {
        if let Source::Thread { ready, used, maker } = &mut self.source {
            drop(used.take());
            ready.clear();
            if let Some(m) = maker.take() {
                let _ = m.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fika_core::derive_rng;
    use rand::Rng;

    fn laws() -> Vec<Law> {
        (0..5u32)
            .map(|k| Law {
                scale: 10.0 + f64::from(k),
                exponent: 0.2 + 0.1 * f64::from(k),
                fixed_ms: [1.5, 0.25],
                rng: derive_rng(7, "law", u64::from(k)),
            })
            .collect()
    }

    #[test]
    fn the_thread_hands_out_what_drawing_inline_gives() {
        let mut inline = Draws::inline(laws());
        let mut threaded = Draws::threaded(laws());
        let mut pick = derive_rng(8, "test", 0);
        for i in 0..(12 * CHUNK) {
            // Mostly one law at a time, as a block spreads in one region.
            let k = if pick.gen_bool(0.9) { (i / 700) % 5 } else { pick.gen_range(0..5) };
            assert_eq!(threaded.next(k), inline.next(k), "draw {i} of law {k}");
        }
    }

    #[test]
    fn a_law_draws_the_same_whatever_is_drawn_between() {
        let mut alone = laws().swap_remove(2);
        let mut want = vec![0; 3 * CHUNK];
        alone.fill(&mut want);
        let mut draws = Draws::threaded(laws());
        let mut got = Vec::new();
        for i in 0.. {
            if got.len() == want.len() {
                break;
            }
            let d = draws.next(i % 5);
            if i % 5 == 2 {
                got.push(d);
            }
        }
        assert_eq!(got, want);
        // The scale is the minimum: 12 ms, plus 1.75 ms of fixed costs.
        assert!(want.iter().all(|&d| d >= 13_750_000));
        assert!(want.iter().any(|&d| d > 20_000_000), "a heavy tail");
    }
}
