//! The handoff between handlers and the publisher thread: a bounded queue split into one shard
//! per publishing thread (round robin over a fixed number), so handlers on different workers do
//! not take the same lock and never wait for the publisher (it holds a shard's lock only to move
//! its events out).
//!
//! Each event gets a sequence number from one counter as it is published, and the publisher
//! takes events in that order: an event published after another one was (a call's response
//! after its request, the next call after this one) comes after it, whichever threads
//! published them. The same counter gives the bound.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::Event;

/// One shard, on its own cache lines.
#[repr(align(128))]
struct Shard(Mutex<Vec<(u64, Event)>>);

pub(super) struct Queue {
    shards: Box<[Shard]>,
    /// Sequence numbers handed out (every publish takes one, refused ones too).
    published: AtomicU64,
    /// Sequence numbers done with: taken by the publisher, or refused at the bound.
    done: AtomicU64,
    capacity: u64,
    /// Where the taker gathers and sorts the shards' events (one taker at a time).
    scratch: Mutex<Vec<(u64, Event)>>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard index (modulo the shard count).
    static THREAD_SHARD: Cell<usize> = Cell::new(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
}

impl Queue {
    /// A queue that holds at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (cores * 2).next_power_of_two().clamp(4, 128);
        Self {
            shards: (0..shards).map(|_| Shard(Mutex::new(Vec::with_capacity(256)))).collect(),
            published: AtomicU64::new(0),
            done: AtomicU64::new(0),
            capacity: capacity.max(1) as u64,
            scratch: Mutex::new(Vec::with_capacity(1024)),
        }
    }

    /// Queues an event; gives it back when the queue is at its bound.
    pub fn push(&self, event: Event) -> Result<(), Event> {
        let seq = self.published.fetch_add(1, Ordering::Relaxed);
        if seq.saturating_sub(self.done.load(Ordering::Relaxed)) >= self.capacity {
            self.done.fetch_add(1, Ordering::Relaxed);
            return Err(event);
        }
        let shard = &self.shards[THREAD_SHARD.with(Cell::get) & (self.shards.len() - 1)];
        shard.0.lock().unwrap_or_else(PoisonError::into_inner).push((seq, event));
        Ok(())
    }

    /// Moves every queued event to the end of `out`, in publish order; returns how many.
    pub fn take_into(&self, out: &mut Vec<Event>) -> usize {
        let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        scratch.clear();
        for shard in self.shards.iter() {
            let mut events = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            if !events.is_empty() {
                scratch.append(&mut events);
            }
        }
        let taken = scratch.len();
        self.done.fetch_add(taken as u64, Ordering::Relaxed);
        scratch.sort_unstable_by_key(|(seq, _)| *seq);
        out.extend(scratch.drain(..).map(|(_, event)| event));
        taken
    }

    pub fn len(&self) -> usize {
        let published = self.published.load(Ordering::Relaxed);
        published.saturating_sub(self.done.load(Ordering::Relaxed)) as usize
    }
}

/// The key an event is published under (empty for none).
pub(super) fn key(event: &Event) -> &str {
    match event {
        Event::Request(e) => e.envelope.request_id.as_deref().unwrap_or(""),
        Event::Response(e) => e.envelope.request_id.as_deref().unwrap_or(""),
        Event::Deployment(e) => &e.deployment_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{DeploymentEvent, Envelope};

    fn event(n: usize) -> Event {
        Event::Deployment(Box::new(DeploymentEvent {
            envelope: Envelope::new("deployment", None, "gw"),
            deployment_id: "d".into(),
            model_group: n.to_string(),
            provider: "openai".into(),
            api_base: String::new(),
            change: "cooldown_left",
            reason: None,
            cooldown_until: None,
        }))
    }

    fn number(e: &Event) -> usize {
        match e {
            Event::Deployment(d) => d.model_group.parse().unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn events_come_out_in_publish_order_across_threads_and_the_total_is_bounded() {
        let queue = std::sync::Arc::new(Queue::new(1000));
        // Published in turn from this thread and from new ones (each in a shard of its own).
        for n in 0..40 {
            if n % 2 == 0 {
                queue.push(event(n)).map_err(|_| ()).unwrap();
            } else {
                let q = queue.clone();
                std::thread::spawn(move || q.push(event(n)).map_err(|_| ()).unwrap()).join().unwrap();
            }
        }
        let mut out = Vec::new();
        assert_eq!(queue.take_into(&mut out), 40);
        assert_eq!(out.iter().map(number).collect::<Vec<_>>(), (0..40).collect::<Vec<_>>());
        assert_eq!(queue.len(), 0);

        let small = Queue::new(3);
        for n in 0..3 {
            assert!(small.push(event(n)).is_ok());
        }
        let refused = small.push(event(3)).expect_err("at the bound");
        assert_eq!(number(&refused), 3, "the refused event is handed back");
        assert_eq!(small.len(), 3);
        out.clear();
        assert_eq!(small.take_into(&mut out), 3);
        assert!(small.push(event(4)).is_ok(), "room again once taken");
        assert_eq!(small.len(), 1);
    }
}
