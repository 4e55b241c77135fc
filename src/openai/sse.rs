//! Server-sent events: splitting an upstream byte stream into whole events, so each can be
//! inspected (usage, first token) and forwarded the moment it is complete.

use bytes::{Bytes, BytesMut};

/// The last event of every OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Collects bytes and yields complete events (`...\n\n`), however the upstream split them.
#[derive(Default)]
pub struct EventSplitter {
    buf: BytesMut,
    /// How far `buf` is known to hold no event boundary (so reads are not rescanned).
    scanned: usize,
}

impl EventSplitter {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, with its terminating blank line.
    pub fn next_event(&mut self) -> Option<Bytes> {
        // A boundary may start up to two bytes before where the last scan stopped ("\n\r\n").
        let from = self.scanned.saturating_sub(2);
        match find_event_end(&self.buf[from..]) {
            Some(end) => {
                self.scanned = 0;
                Some(self.buf.split_to(from + end).freeze())
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Whatever is left when the upstream closed without a final blank line.
    pub fn take_rest(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        let rest = self.buf.split().freeze();
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// The index just past the first blank line (`\n\n` or `\r\n\r\n`).
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The `data:` payload of one event (multi-line data joined with `\n`); `None` for comments
/// and events without data.
pub fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(rest);
                }
                None => data = Some(rest.to_vec()),
            }
        }
    }
    data
}

/// One `data: …` event.
pub fn data_event(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_arbitrary_chunk_boundaries() {
        let stream = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        for cut in 1..stream.len() {
            let mut s = EventSplitter::default();
            let mut events = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                s.push(part);
                while let Some(e) = s.next_event() {
                    events.push(e);
                }
            }
            let data: Vec<_> = events.iter().map(|e| event_data(e)).collect();
            assert_eq!(
                data,
                vec![Some(b"{\"a\":1}".to_vec()), Some(b"{\"b\":2}".to_vec()), None, Some(b"[DONE]".to_vec())],
                "cut at {cut}"
            );
            assert!(s.take_rest().is_none());
        }
    }

    #[test]
    fn finds_every_boundary_when_fed_one_byte_at_a_time() {
        let stream = b"data: a\n\ndata: b\r\n\r\ndata: c\n\n";
        let mut s = EventSplitter::default();
        let mut events = Vec::new();
        for byte in stream {
            s.push(&[*byte]);
            while let Some(e) = s.next_event() {
                events.push(event_data(&e).unwrap());
            }
        }
        assert_eq!(events, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn keeps_an_unterminated_tail() {
        let mut s = EventSplitter::default();
        s.push(b"data: {\"x\":1}");
        assert!(s.next_event().is_none());
        assert_eq!(event_data(&s.take_rest().unwrap()), Some(b"{\"x\":1}".to_vec()));
    }
}
