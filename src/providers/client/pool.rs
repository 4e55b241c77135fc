//! Idle upstream connections, one pool per thread (see the parent module for why per thread).
//!
//! The most recently used connection goes out first, so under steady load the same few stay
//! warm and the rest age out. Bounds: at most [`MAX_IDLE_PER_ORIGIN`] idle connections per
//! upstream origin per thread (the origins are the config's), and none older than
//! [`IDLE_TIMEOUT`] is handed out; an idle connection the upstream closes ends its task at once
//! and is dropped from the pool the next time that origin is used.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Sender;

pub const MAX_IDLE_PER_ORIGIN: usize = 256;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

thread_local! {
    static IDLE: RefCell<Idle<Sender>> = RefCell::new(Idle::new(MAX_IDLE_PER_ORIGIN, IDLE_TIMEOUT));
}

/// An idle connection of this thread's pool for `origin`, if one is still open.
pub fn take(origin: &str) -> Option<Sender> {
    IDLE.with(|idle| idle.borrow_mut().take(origin, Instant::now()))
}

/// Returns a connection whose last answer was read to its end.
pub fn put(origin: &Arc<str>, sender: Sender) {
    IDLE.with(|idle| idle.borrow_mut().put(origin, sender, Instant::now()));
}

/// What the pool needs to know of a connection.
pub trait Connection {
    fn is_closed(&self) -> bool;
}

impl Connection for Sender {
    fn is_closed(&self) -> bool {
        Sender::is_closed(self)
    }
}

/// Idle connections per origin, oldest first.
pub struct Idle<C> {
    by_origin: HashMap<Arc<str>, VecDeque<(C, Instant)>>,
    max_per_origin: usize,
    timeout: Duration,
}

impl<C: Connection> Idle<C> {
    pub fn new(max_per_origin: usize, timeout: Duration) -> Self {
        Self { by_origin: HashMap::new(), max_per_origin, timeout }
    }

    pub fn take(&mut self, origin: &str, now: Instant) -> Option<C> {
        let idle = self.by_origin.get_mut(origin)?;
        while idle.front().is_some_and(|(_, since)| now.saturating_duration_since(*since) > self.timeout) {
            idle.pop_front();
        }
        while let Some((conn, _)) = idle.pop_back() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    pub fn put(&mut self, origin: &Arc<str>, conn: C, now: Instant) {
        if conn.is_closed() || self.max_per_origin == 0 {
            return;
        }
        if !self.by_origin.contains_key(&**origin) {
            self.by_origin.insert(origin.clone(), VecDeque::new());
        }
        let Some(idle) = self.by_origin.get_mut(&**origin) else { return };
        if idle.len() >= self.max_per_origin {
            idle.pop_front();
        }
        idle.push_back((conn, now));
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    struct Fake {
        id: u32,
        closed: Rc<Cell<bool>>,
    }

    impl Connection for Fake {
        fn is_closed(&self) -> bool {
            self.closed.get()
        }
    }

    fn fake(id: u32) -> (Fake, Rc<Cell<bool>>) {
        let closed = Rc::new(Cell::new(false));
        (Fake { id, closed: closed.clone() }, closed)
    }

    #[test]
    fn hands_out_the_most_recent_open_connection_of_the_origin() {
        let mut idle = Idle::new(8, IDLE_TIMEOUT);
        let (a, b): (Arc<str>, Arc<str>) = ("http://a:80".into(), "http://b:80".into());
        let now = Instant::now();
        let (first, _) = fake(1);
        let (second, second_closed) = fake(2);
        idle.put(&a, first, now);
        idle.put(&a, second, now);
        idle.put(&b, fake(3).0, now);
        second_closed.set(true);
        assert_eq!(idle.take(&a, now).map(|c| c.id), Some(1), "the closed one is skipped");
        assert!(idle.take(&a, now).is_none());
        assert_eq!(idle.take(&b, now).map(|c| c.id), Some(3));
        assert!(idle.take("http://c:80", now).is_none());
    }

    #[test]
    fn bounds_idle_connections_by_count_and_age() {
        let mut idle = Idle::new(2, Duration::from_secs(90));
        let origin: Arc<str> = "http://a:80".into();
        let start = Instant::now();
        for id in 1..=3 {
            idle.put(&origin, fake(id).0, start);
        }
        let later = start + Duration::from_secs(60);
        assert_eq!(idle.take(&origin, later).map(|c| c.id), Some(3));
        idle.put(&origin, fake(4).0, later);
        // 2 is past the idle timeout by now; 4 is not.
        let much_later = start + Duration::from_secs(120);
        assert_eq!(idle.take(&origin, much_later).map(|c| c.id), Some(4));
        assert!(idle.take(&origin, much_later).is_none(), "1 was dropped at the bound, 2 expired");
        let (closed, flag) = fake(5);
        flag.set(true);
        idle.put(&origin, closed, much_later);
        assert!(idle.take(&origin, much_later).is_none(), "a closed connection is not kept");
    }
}
