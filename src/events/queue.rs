//! The handoff between handlers and the publisher thread: a bounded queue split into one shard
//! per publishing thread (round robin over a fixed number), so handlers on different workers do
//! not take the same lock and never wait for the publisher (it holds a shard's lock only to move
//! its events out).
//!
//! Each event gets a sequence number from one counter as it is published, and the publisher
//! takes events in that order: an event published after another one was (a call's response
//! after its request, the next call after this one) comes after it, whichever threads
//! published them. The same counter gives the bound.
//!
//! Events the publisher is done with go back to their shard, and the thread that made them frees
//! them as it publishes the next ones, in its own allocator arena: freed on the publisher thread,
//! an event's dozen allocations made it and the workers wait on each other's allocator lock
//! (about 2,000 futex waits a second at 27,000 requests a second, and a worker up to 20% slower).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::Event;

/// Spent events a publish frees, at most (one is published, so the list does not grow).
const FREE_PER_PUSH: usize = 2;
/// Spent events a shard keeps for its thread, at most; the publisher frees the rest itself (a
/// thread that stopped publishing).
const SPENT_MAX: usize = 4096;

/// One shard, on its own cache lines.
#[repr(align(128))]
struct Shard {
    events: Mutex<Vec<(u64, Event)>>,
    /// Taken and done with, to be freed by the publishing thread.
    spent: Mutex<Vec<Event>>,
}

/// An event taken off the queue, with the shard it came through.
pub(super) struct Taken {
    pub event: Event,
    shard: usize,
}

pub(super) struct Queue {
    shards: Box<[Shard]>,
    /// Sequence numbers handed out (every publish takes one, refused ones too).
    published: AtomicU64,
    /// Sequence numbers done with: taken by the publisher, or refused at the bound.
    done: AtomicU64,
    capacity: u64,
    /// Where the taker gathers and sorts the shards' events (one taker at a time).
    scratch: Mutex<Vec<(u64, Taken)>>,
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
            shards: (0..shards)
                .map(|_| Shard { events: Mutex::new(Vec::with_capacity(256)), spent: Mutex::new(Vec::new()) })
                .collect(),
            published: AtomicU64::new(0),
            done: AtomicU64::new(0),
            capacity: capacity.max(1) as u64,
            scratch: Mutex::new(Vec::with_capacity(1024)),
        }
    }

    /// Queues an event; gives it back when the queue is at its bound. Frees a few of this
    /// shard's spent events.
    pub fn push(&self, event: Event) -> Result<(), Event> {
        let seq = self.published.fetch_add(1, Ordering::Relaxed);
        if seq.saturating_sub(self.done.load(Ordering::Relaxed)) >= self.capacity {
            self.done.fetch_add(1, Ordering::Relaxed);
            return Err(event);
        }
        let shard = &self.shards[THREAD_SHARD.with(Cell::get) & (self.shards.len() - 1)];
        shard.events.lock().unwrap_or_else(PoisonError::into_inner).push((seq, event));
        // Never waits: if the publisher is handing events back right now, next time.
        if let Ok(mut spent) = shard.spent.try_lock() {
            let keep = spent.len().saturating_sub(FREE_PER_PUSH);
            spent.truncate(keep);
        }
        Ok(())
    }

    /// Moves every queued event to the end of `out`, in publish order; returns how many.
    pub fn take_into(&self, out: &mut Vec<Taken>) -> usize {
        let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        scratch.clear();
        for (i, shard) in self.shards.iter().enumerate() {
            let mut events = shard.events.lock().unwrap_or_else(PoisonError::into_inner);
            scratch.extend(events.drain(..).map(|(seq, event)| (seq, Taken { event, shard: i })));
        }
        let taken = scratch.len();
        self.done.fetch_add(taken as u64, Ordering::Relaxed);
        scratch.sort_unstable_by_key(|(seq, _)| *seq);
        out.extend(scratch.drain(..).map(|(_, taken)| taken));
        taken
    }

    /// Hands events the publisher is done with (all of `spent`) back to their shards.
    pub fn recycle(&self, spent: &mut Vec<Taken>) {
        spent.sort_unstable_by_key(|t| t.shard);
        let mut taken = spent.drain(..).peekable();
        while let Some(first) = taken.next() {
            let i = first.shard;
            let mut back = self.shards[i].spent.lock().unwrap_or_else(PoisonError::into_inner);
            back.push(first.event);
            while let Some(next) = taken.next_if(|t| t.shard == i) {
                back.push(next.event);
            }
            if back.len() > SPENT_MAX {
                let excess = back.len() - SPENT_MAX;
                back.drain(..excess);
            }
        }
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
        assert_eq!(out.iter().map(|t| number(&t.event)).collect::<Vec<_>>(), (0..40).collect::<Vec<_>>());
        assert_eq!(queue.len(), 0);
        // Handed back, and freed by the threads that publish through those shards.
        queue.recycle(&mut out);
        assert!(out.is_empty());
        let spent = |q: &Queue| q.shards.iter().map(|s| s.spent.lock().unwrap().len()).sum::<usize>();
        assert_eq!(spent(&queue), 40);
        queue.push(event(40)).map_err(|_| ()).unwrap();
        assert_eq!(spent(&queue), 40 - FREE_PER_PUSH);

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
