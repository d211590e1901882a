//! Recording events on a second thread while the run goes on.
//!
//! Digesting, writing and tallying a run's events is a fixed share of a
//! large simulation's work that nothing in the run waits for. [`Offloaded`]
//! hands the events, in batches and in order, to a thread that owns the
//! real sink, so that this work overlaps the event loop. The sink sees the
//! same events in the same order as it would on the run's thread, so every
//! result — the trace digest first — is the same.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use fika_core::{Event, EventSink, NodeId, SimTime};

/// One event as the runtime stamps it.
type Stamped = (SimTime, Option<NodeId>, Event);

/// Events handed over at once: few enough that a batch stays well below
/// the allocator's threshold for mapping memory of its own.
const BATCH: usize = 1024;

/// Batches in flight at most; beyond them the run waits for the sink, so
/// memory stays bounded when the sink is the slower.
const IN_FLIGHT: usize = 16;

/// A sink of type `S` running on a thread of its own.
pub struct Offloaded<S> {
    batch: Vec<Stamped>,
    to_sink: Option<SyncSender<Vec<Stamped>>>,
    /// Recorded batches coming back, to be emptied and filled again.
    recycled: Receiver<Vec<Stamped>>,
    worker: Option<JoinHandle<S>>,
}

impl<S: EventSink + Send + 'static> Offloaded<S> {
    /// Starts the thread that records into `sink`.
    pub fn start(mut sink: S) -> Self {
        let (to_sink, from_run) = sync_channel::<Vec<Stamped>>(IN_FLIGHT);
        let (give_back, recycled) = sync_channel(IN_FLIGHT + 1);
        let worker = std::thread::Builder::new()
            .name("fika-events".into())
            .spawn(move || {
                for batch in from_run {
                    for (at, node, event) in &batch {
                        sink.record(*at, *node, event);
                    }
                    // Freed where they were made, so that the run's thread
                    // keeps reusing its own memory (the allocator locks
                    // what one thread frees of another's). The run may have
                    // finished already: then nobody wants them back.
                    let _ = give_back.try_send(batch);
                }
                sink
            })
            // Without a thread, the run cannot record its events at all.
            .expect("spawning the event-recording thread");
        Offloaded { batch: Vec::with_capacity(BATCH), to_sink: Some(to_sink), recycled, worker: Some(worker) }
    }

    /// Hands over the events recorded so far and waits for the sink to
    /// have recorded them; returns the sink.
    pub fn finish(mut self) -> S {
        self.hand_over();
        drop(self.to_sink.take());
        let worker = self.worker.take().expect("finish runs once");
        match worker.join() {
            Ok(sink) => sink,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = match self.recycled.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Vec::with_capacity(BATCH),
        };
        let full = std::mem::replace(&mut self.batch, next);
        if let Some(tx) = &self.to_sink {
            if tx.send(full).is_err() {
                // The thread is gone: it panicked, which `finish` reports.
                self.to_sink = None;
            }
        }
    }
}

impl<S: EventSink + Send + 'static> EventSink for Offloaded<S> {
    fn record(&mut self, at: SimTime, node: Option<NodeId>, event: &Event) {
        self.take(at, node, event.clone());
    }

    fn take(&mut self, at: SimTime, node: Option<NodeId>, event: Event) {
        self.batch.push((at, node, event));
        if self.batch.len() >= BATCH {
            self.hand_over();
        }
    }
}

impl<S> Drop for Offloaded<S> {
    fn drop(&mut self) {
        // Unfinished (the run was abandoned): let the thread end.
        drop(self.to_sink.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_gets_every_event_in_order() {
        let mut direct: Vec<Stamped> = Vec::new();
        let mut off = Offloaded::start(Vec::<Stamped>::new());
        for i in 0..(3 * BATCH as u64 + 17) {
            let ev = Event::new("test.tick").with("i", i);
            let node = (i % 3 != 0).then_some(NodeId(i as u32 % 7));
            if i % 2 == 0 {
                direct.record(SimTime(i), node, &ev);
                off.record(SimTime(i), node, &ev);
            } else {
                direct.take(SimTime(i), node, ev.clone());
                off.take(SimTime(i), node, ev);
            }
        }
        assert_eq!(off.finish(), direct);
    }

    /// A sink that fails on its first event.
    struct Failing;

    impl EventSink for Failing {
        fn record(&mut self, _: SimTime, _: Option<NodeId>, _: &Event) {
            panic!("sink failed");
        }
    }

    #[test]
    fn a_failing_sink_fails_the_finish_not_the_run() {
        let mut off = Offloaded::start(Failing);
        for i in 0..(IN_FLIGHT as u64 + 4) * BATCH as u64 {
            off.take(SimTime(i), None, Event::new("test.tick"));
        }
        let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| off.finish()));
        assert!(finished.is_err(), "the sink's panic surfaces at finish");
    }
}
