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

/// Events handed over at once (about 56 kB).
const BATCH: usize = 1024;

/// Batches in flight at most; beyond them the run waits for the sink, so
/// memory stays bounded when the sink is the slower.
const IN_FLIGHT: usize = 16;

/// A sink of type `S` running on a thread of its own (or, if no thread
/// could be started, on the run's: the same records either way).
pub struct Offloaded<S> {
    batch: Vec<Stamped>,
    to_sink: Option<SyncSender<Vec<Stamped>>>,
    /// Recorded batches coming back, to be emptied and filled again.
    recycled: Option<Receiver<Vec<Stamped>>>,
    worker: Option<JoinHandle<Option<S>>>,
    /// The sink itself when no thread could be started.
    inline: Option<S>,
}

impl<S: EventSink + Send + 'static> Offloaded<S> {
    /// Starts the thread that records into `sink`.
    pub fn start(sink: S) -> Self {
        let (to_sink, from_run) = sync_channel::<Vec<Stamped>>(IN_FLIGHT);
        let (give_back, recycled) = sync_channel(IN_FLIGHT + 1);
        // The sink goes over only once the thread runs, so that it stays
        // here if none can be started.
        let (hand_sink, take_sink) = sync_channel::<S>(1);
        let spawned = std::thread::Builder::new().name("fika-events".into()).spawn(move || {
            let mut sink = take_sink.recv().ok()?;
            for batch in from_run {
                for (at, node, event) in &batch {
                    sink.record(*at, *node, event);
                }
                // Freed where they were made, so that the run's thread
                // keeps reusing its own memory. The run may have finished
                // already: then nobody wants them back.
                let _ = give_back.try_send(batch);
            }
            Some(sink)
        });
        let Ok(worker) = spawned else {
            return Self::inline(sink);
        };
        if let Err(back) = hand_sink.send(sink) {
            // Not reached: the thread waits for the sink first.
            return Self::inline(back.0);
        }
        Offloaded {
            batch: Vec::with_capacity(BATCH),
            to_sink: Some(to_sink),
            recycled: Some(recycled),
            worker: Some(worker),
            inline: None,
        }
    }

    /// Records into `sink` on the run's thread (what `start` falls back to).
    pub fn inline(sink: S) -> Self {
        Offloaded { batch: Vec::new(), to_sink: None, recycled: None, worker: None, inline: Some(sink) }
    }

    /// Hands over the events recorded so far and waits for the sink to
    /// have recorded them; returns the sink.
    pub fn finish(mut self) -> S {
        if let Some(sink) = self.inline.take() {
            return sink;
        }
        self.hand_over();
        drop(self.to_sink.take());
        let worker = self.worker.take().expect("a sink is inline or on its thread");
        match worker.join() {
            Ok(Some(sink)) => sink,
            Ok(None) => unreachable!("the thread got the sink before the run began"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = match self.recycled.as_ref().map(Receiver::try_recv) {
            Some(Ok(mut v)) => {
                v.clear();
                v
            }
            Some(Err(TryRecvError::Empty | TryRecvError::Disconnected)) | None => Vec::with_capacity(BATCH),
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
        match &mut self.inline {
            Some(sink) => sink.record(at, node, event),
            None => self.take(at, node, event.clone()),
        }
    }

    fn take(&mut self, at: SimTime, node: Option<NodeId>, event: Event) {
        if let Some(sink) = &mut self.inline {
            return sink.take(at, node, event);
        }
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
        check_in_order(Offloaded::start(Vec::new()));
        check_in_order(Offloaded::inline(Vec::new()));
    }

    #[track_caller]
    fn check_in_order(mut off: Offloaded<Vec<Stamped>>) {
        let mut direct: Vec<Stamped> = Vec::new();
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
