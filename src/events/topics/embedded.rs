//! The embedded backend: topics as files under `event_log.path`, one partition (0).
//!
//! Each topic has a directory `<event_log.path>/<prefix>.<short>/` holding `records.log` and
//! one `<group>.offsets` file per named consumer. Records are binary, little-endian:
//! `[body length u32][crc32 of the body u32][body]`, the body being
//! `[offset i64][append time, ms since the epoch i64][key length u32][key][1 = value, 0 = tombstone][value]`.
//! The offset is stored in the record, so compaction keeps every record's offset. On open, a
//! torn tail (a crash mid-write) is cut off; a record whose checksum fails is skipped.
//!
//! **Compaction** (`keys`, `spend`): when dead records (superseded by a later record of their
//! key) number at least [`MIN_DEAD`] and outnumber the live ones, after an append (which then
//! returns after it) or when the topic is first opened in the process. It writes the last
//! record of each key to `records.log.compacting`, fsyncs it, renames it over `records.log`
//! and fsyncs the directory: a crash leaves either file whole. Tombstones older than
//! [`TOMBSTONE_RETENTION`] are dropped then (a follower that falls that far behind can miss a
//! deletion, as with Kafka's `delete.retention.ms`), except the topic's last record, which is
//! always kept so offsets are never reused after a restart.
//!
//! **Followers** read the file on their own (a compaction makes them reopen it and skip what
//! they have read), in a blocking task, and return only records whose append has been
//! fsync'd. An append wakes the followers at once (a `watch` channel carrying the next
//! offset). The embedded topics are one process's: the embedded default runs the consumers in
//! the gateway's process, [`Embedded::open`] shares the store of a path already open in it,
//! and a follower sees the appends of its own process only. Nothing stops a second process
//! from writing the same directory, which would interleave records: do not.
//!
//! **The event log's views**: `events` and `deployments` read the event log the publisher
//! writes at `event_log.path` (its line offsets are theirs), polling it every [`EVENTS_POLL`];
//! only their consumers' offsets live in `<prefix>.events/` and `<prefix>.deployments/`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::{blocking, Append, Record, Start, TopicError};
use crate::events::log;
use crate::events::types::RouteFields;

/// A topic's records, in its directory.
const RECORDS: &str = "records.log";
/// A compaction's output until it replaces [`RECORDS`].
const COMPACTING: &str = "records.log.compacting";
/// The largest body a record may have (key and value, plus 21 bytes).
pub(super) const MAX_RECORD: usize = 16 << 20;
/// Offset, time, key length and the value flag.
const BODY_MIN: usize = 21;
const HEADER: usize = 8;
/// Compaction waits for at least this many dead records (a small topic is not rewritten at
/// every other append).
pub(super) const MIN_DEAD: u64 = 64;
/// How long a compaction keeps a tombstone.
pub(super) const TOMBSTONE_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often a follower of the event log looks for what the publisher thread appended.
const EVENTS_POLL: Duration = Duration::from_millis(5);

/// The stores open in this process, by directory: opening a path again shares its writers.
static OPEN: Mutex<Vec<(PathBuf, Weak<Store>)>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// The embedded topics of one `event_log.path`; cheap to clone.
#[derive(Clone)]
pub(super) struct Embedded {
    /// Shared by every handle on the same path in this process.
    store: Arc<Store>,
}

struct Store {
    /// `event_log.path`: the event log itself, and a directory per topic.
    root: PathBuf,
    /// The keyed topics opened so far, by full name (a topic is opened on first use).
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

/// Which events of the event log a view returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum View {
    /// Request and response events, keyed by request id (empty if none).
    Events,
    /// Deployment events, keyed by deployment id.
    Deployments,
}

impl View {
    /// The key of an event of this view; `None` if the event is not one of its.
    fn key_of(self, json: &[u8]) -> Option<String> {
        // A record that is not an event at all shows in the events view, so its consumers see,
        // count and set it aside rather than never knowing it was there.
        let fields = match RouteFields::hint(json).or_else(|| RouteFields::of(json)) {
            Some(fields) => fields,
            None => return matches!(self, View::Events).then(String::new),
        };
        match (self, fields.kind.as_str()) {
            (View::Deployments, "deployment") => Some(fields.deployment_id.unwrap_or_default()),
            (View::Events, "deployment") | (View::Deployments, _) => None,
            (View::Events, _) => Some(fields.request_id.unwrap_or_default()),
        }
    }
}

impl Embedded {
    /// The store of `root` (created if missing), shared with whoever in this process opened it.
    pub(super) fn open(root: &Path) -> Result<Self, TopicError> {
        let context = || format!("cannot open the embedded topics at {}", root.display());
        fs::create_dir_all(root).map_err(|e| TopicError::io(context(), e))?;
        let root = fs::canonicalize(root).map_err(|e| TopicError::io(context(), e))?;
        let mut open = lock(&OPEN);
        open.retain(|(_, store)| store.strong_count() > 0);
        if let Some(store) = open.iter().find(|(path, _)| *path == root).and_then(|(_, s)| s.upgrade()) {
            return Ok(Self { store });
        }
        let store = Arc::new(Store { root: root.clone(), topics: Mutex::new(HashMap::new()) });
        open.push((root, Arc::downgrade(&store)));
        Ok(Self { store })
    }

    pub(super) async fn append(
        &self,
        name: &str,
        compacted: bool,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), TopicError> {
        self.append_all(name, compacted, vec![(key.to_string(), value.map(<[u8]>::to_vec))]).await
    }

    /// Appends the records in order with one write and one fsync.
    pub(super) async fn append_all(&self, name: &str, compacted: bool, records: Vec<Append>) -> Result<(), TopicError> {
        for (key, value) in &records {
            let size = BODY_MIN + key.len() + value.as_ref().map_or(0, Vec::len);
            if size > MAX_RECORD {
                return Err(TopicError::TooLarge { size, max: MAX_RECORD });
            }
        }
        let (store, name) = (self.store.clone(), name.to_string());
        blocking(move || {
            let topic = store.topic(&name, compacted)?;
            topic.append_all(records.iter().map(|(key, value)| (key.as_str(), value.as_deref())))
        })
        .await
    }

    /// The group's committed position on the topic `name` (empty if it never committed).
    pub(super) fn committed(&self, name: &str, group: &str) -> Result<Vec<(i32, i64)>, TopicError> {
        let path = self.store.root.join(name).join(format!("{group}.offsets"));
        Ok(read_group(&path)?.map(|offset| (0, offset)).into_iter().collect())
    }

    /// A follower of a keyed topic (`view: None`) or of a view of the event log.
    pub(super) fn follow(
        &self,
        name: &str,
        view: Option<View>,
        compacted: bool,
        start: Start,
    ) -> Result<Follower, TopicError> {
        let dir = self.store.root.join(name);
        let group = match &start {
            Start::Group(group) | Start::GroupOrEnd(group) => Some(dir.join(format!("{group}.offsets"))),
            _ => None,
        };
        // Where it starts, unless at the end (which depends on the source).
        let fixed = match &start {
            // `Start::Shared` is opened (by `Follower::place`) as `Start::At`, never as itself.
            Start::Beginning | Start::Shared(_) => Some(0),
            Start::End => None,
            Start::At(at) => Some(at.iter().find(|(p, _)| *p == 0).map_or(0, |(_, o)| (*o).max(0))),
            Start::Group(_) => match &group {
                Some(path) => Some(read_group(path)?.unwrap_or(0)),
                None => Some(0),
            },
            Start::GroupOrEnd(_) => match &group {
                Some(path) => read_group(path)?,
                None => None,
            },
        };
        let (source, appended, position, end) = match view {
            None => {
                let topic = self.store.topic(name, compacted)?;
                let end = lock(&topic.log).next_offset;
                let position = fixed.unwrap_or(end);
                let cursor =
                    KeyedCursor { topic: topic.clone(), file: None, pos: 0, skip_below: position, buf: Vec::new() };
                (Source::Keyed(cursor), Some(topic.appended.subscribe()), position, Some(end))
            }
            Some(view) => {
                let root = self.store.root.clone();
                let mut cursor =
                    EventsCursor { dir: root.clone(), view, reader: None, payload: Vec::new(), seek: None };
                let context = |e| TopicError::io(format!("cannot read the event log at {}", root.display()), e);
                let position = match fixed {
                    Some(position) => {
                        let from = u64::try_from(position).unwrap_or(0);
                        cursor.reader = Some(log::Reader::open(&root, from).map_err(context)?);
                        position
                    }
                    None => cursor.skip_to_end().map_err(context)?,
                };
                (Source::Events(cursor), None, position, None)
            }
        };
        let caught_up = end.is_some_and(|end| position >= end);
        let cursor = Arc::new(Mutex::new(Cursor { source, pending: VecDeque::new(), at_end: false }));
        Ok(Follower { appended, cursor, position, end, caught_up, group })
    }
}

impl Store {
    /// The keyed topic `name`, opened (and compacted if due) on first use.
    fn topic(&self, name: &str, compacted: bool) -> Result<Arc<Topic>, TopicError> {
        let mut topics = lock(&self.topics);
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        let dir = self.root.join(name);
        let topic = Arc::new(
            Topic::open(&dir, compacted)
                .map_err(|e| TopicError::io(format!("cannot open the topic at {}", dir.display()), e))?,
        );
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }
}

/// One keyed topic of this process.
struct Topic {
    /// Its directory.
    dir: PathBuf,
    /// The writer, and what compaction needs to know; appends and compactions hold it.
    log: Mutex<Keyed>,
    /// Bumped by each compaction: a cursor holding the replaced file reopens the new one.
    generation: AtomicU64,
    /// The next offset, sent after each append: wakes this process's followers at once.
    appended: watch::Sender<i64>,
}

/// A keyed topic's writer.
struct Keyed {
    /// `records.log`, opened for appending.
    file: File,
    /// Its length: where a failed write is cut back to.
    len: u64,
    /// The offset of the next record appended.
    next_offset: i64,
    /// Records in the file (live and dead).
    records: u64,
    /// Hashes of the keys with a record in the file: the live records, to tell when compaction
    /// is due (a hash collision only delays it a little).
    keys: HashSet<u64>,
    /// Hashes the keys for `keys`.
    hasher: RandomState,
    /// Whether the topic is compacted (`keys`, `spend`).
    compacted: bool,
    /// The record being written, reused.
    buf: Vec<u8>,
}

impl Topic {
    fn open(dir: &Path, compacted: bool) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let _ = fs::remove_file(dir.join(COMPACTING));
        let path = dir.join(RECORDS);
        let hasher = RandomState::new();
        let (mut records, mut keys, mut next_offset) = (0u64, HashSet::new(), 0i64);
        let len = if path.exists() {
            scan(&path, |record, _| {
                records += 1;
                keys.insert(hasher.hash_one(record.key));
                next_offset = next_offset.max(record.offset + 1);
                Ok(())
            })?
        } else {
            0
        };
        let created = !path.exists();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if created {
            // The new file's name survives a crash of the machine as well as its records do.
            File::open(dir)?.sync_all()?;
        }
        if file.metadata()?.len() != len {
            tracing::warn!(topic = %dir.display(), "cutting a torn or corrupt tail off the topic");
            file.set_len(len)?;
            file.sync_all()?;
        }
        let mut log = Keyed { file, len, next_offset, records, keys, hasher, compacted, buf: Vec::new() };
        if log.compaction_due() {
            if let Err(e) = log.compact(dir) {
                tracing::error!(topic = %dir.display(), error = %e, "cannot compact the topic");
            }
        }
        let (appended, _) = watch::channel(next_offset);
        Ok(Self { dir: dir.to_path_buf(), log: Mutex::new(log), generation: AtomicU64::new(0), appended })
    }

    /// Appends and fsyncs records (one write, one fsync), compacts if due, and wakes the
    /// followers.
    fn append_all<'a>(&self, records: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Result<(), TopicError> {
        let mut log = lock(&self.log);
        let next = log
            .append_all(records)
            .map_err(|e| TopicError::io(format!("cannot append to {}", self.dir.display()), e))?;
        if log.compaction_due() {
            let compacted = log.compact(&self.dir);
            // Even a compaction that failed may have replaced the file: cursors reopen it (and
            // skip what they have read).
            self.generation.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = compacted {
                // The append itself is durable; the next one tries again.
                tracing::error!(topic = %self.dir.display(), error = %e, "cannot compact the topic");
            }
        }
        self.appended.send_replace(next);
        Ok(())
    }
}

impl Keyed {
    /// Writes the records and fsyncs them once; returns the next offset.
    fn append_all<'a>(&mut self, records: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> io::Result<i64> {
        let (mut offset, at) = (self.next_offset, now_ms());
        let mut batch = Vec::new();
        let mut keys = Vec::new();
        for (key, value) in records {
            encode(offset, at, key, value, &mut self.buf);
            batch.extend_from_slice(&self.buf);
            keys.push(self.hasher.hash_one(key));
            offset += 1;
        }
        if let Err(e) = self.file.write_all(&batch).and_then(|()| self.file.sync_data()) {
            // Leave no partial record behind for the next append to follow.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += batch.len() as u64;
        self.records += keys.len() as u64;
        self.keys.extend(keys);
        self.next_offset = offset;
        Ok(offset)
    }

    fn compaction_due(&self) -> bool {
        let live = self.keys.len() as u64;
        let dead = self.records.saturating_sub(live);
        self.compacted && dead >= MIN_DEAD && dead > live
    }

    /// Rewrites the file with the last record of each key (see the module doc).
    fn compact(&mut self, dir: &Path) -> io::Result<()> {
        let path = dir.join(RECORDS);
        let mut latest: HashMap<String, i64> = HashMap::new();
        let mut last = -1;
        scan(&path, |record, _| {
            match latest.get_mut(record.key) {
                Some(offset) => *offset = record.offset,
                None => {
                    latest.insert(record.key.to_string(), record.offset);
                }
            }
            last = record.offset;
            Ok(())
        })?;
        let horizon = now_ms().saturating_sub(TOMBSTONE_RETENTION.as_millis() as i64);
        let tmp = dir.join(COMPACTING);
        let mut out = BufWriter::with_capacity(256 * 1024, File::create(&tmp)?);
        let (mut records, mut keys, mut len) = (0u64, HashSet::new(), 0u64);
        scan(&path, |record, raw| {
            let expired = record.value.is_none() && record.timestamp_ms < horizon && record.offset != last;
            if latest.get(record.key) == Some(&record.offset) && !expired {
                out.write_all(raw)?;
                records += 1;
                len += raw.len() as u64;
                keys.insert(self.hasher.hash_one(record.key));
            }
            Ok(())
        })?;
        out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
        // Opened before the rename, so the writer follows the file to its new name.
        let file = OpenOptions::new().append(true).open(&tmp)?;
        fs::rename(&tmp, &path)?;
        tracing::debug!(topic = %dir.display(), before = self.records, after = records, "compacted the topic");
        (self.file, self.len, self.records, self.keys) = (file, len, records, keys);
        File::open(dir)?.sync_all()
    }
}

/// A record's body, borrowed from a read buffer.
struct Stored<'a> {
    offset: i64,
    timestamp_ms: i64,
    key: &'a str,
    value: Option<&'a [u8]>,
}

fn encode(offset: i64, timestamp_ms: i64, key: &str, value: Option<&[u8]>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    // The caller bounded the record at MAX_RECORD.
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.push(u8::from(value.is_some()));
    out.extend_from_slice(value.unwrap_or_default());
    let body_len = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[..4].copy_from_slice(&body_len.to_le_bytes());
    out[4..HEADER].copy_from_slice(&crc.to_le_bytes());
}

fn decode(body: &[u8]) -> Option<Stored<'_>> {
    let offset = i64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let timestamp_ms = i64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    let key_len = u32::from_le_bytes(body.get(16..20)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(body.get(20..20usize.checked_add(key_len)?)?).ok()?;
    let value = match body.get(20 + key_len)? {
        0 => None,
        1 => Some(body.get(21 + key_len..)?),
        _ => return None,
    };
    Some(Stored { offset, timestamp_ms, key, value })
}

/// What [`read_one`] found.
enum Step {
    /// A whole record, in the buffer.
    Record,
    /// A whole record whose checksum or body is wrong, in the buffer (skip it).
    Corrupt,
    /// The end of the file, or a record not yet (or never) wholly written.
    End,
}

/// Reads the record at the reader's position into `buf` (header included).
fn read_one(reader: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Step> {
    buf.clear();
    buf.resize(HEADER, 0);
    if !read_full(reader, buf)? {
        return Ok(Step::End);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if !(BODY_MIN..=MAX_RECORD).contains(&len) {
        // No length to skip by: nothing after this can be read.
        return Ok(Step::End);
    }
    buf.resize(HEADER + len, 0);
    if !read_full(reader, &mut buf[HEADER..])? {
        return Ok(Step::End);
    }
    if crc32fast::hash(&buf[HEADER..]) != crc || decode(&buf[HEADER..]).is_none() {
        return Ok(Step::Corrupt);
    }
    Ok(Step::Record)
}

/// `read_exact`, false at the end of the file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Calls `each` with every valid record of the file (and its bytes); returns the length of
/// the file up to the end of the last whole record.
fn scan(path: &Path, mut each: impl FnMut(&Stored<'_>, &[u8]) -> io::Result<()>) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let (mut buf, mut len) = (Vec::new(), 0u64);
    loop {
        match read_one(&mut reader, &mut buf)? {
            Step::Record => {
                if let Some(record) = decode(&buf[HEADER..]) {
                    each(&record, &buf)?;
                }
            }
            Step::Corrupt => tracing::warn!(file = %path.display(), at = len, "skipping a corrupt topic record"),
            Step::End => return Ok(len),
        }
        len += buf.len() as u64;
    }
}

fn read_group(path: &Path) -> Result<Option<i64>, TopicError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().find_map(|line| {
            let (partition, offset) = line.split_once(' ')?;
            (partition.trim() == "0").then(|| offset.trim().parse().ok())?
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TopicError::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Stores a group's position: a new file, fsync'd, renamed over the old one.
fn write_group(path: &Path, offset: i64) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("offsets.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(format!("0 {offset}\n").as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Follows one embedded topic or view.
pub(super) struct Follower {
    /// Keyed topics: the topic's append signal (views poll the event log instead).
    appended: Option<watch::Receiver<i64>>,
    /// The reader, shared with the blocking task that fills it, so a call that is cancelled
    /// loses no record (they wait in `pending`).
    cursor: Arc<Mutex<Cursor>>,
    /// The offset after the last record returned.
    position: i64,
    /// Keyed topics: the next offset when the follower was created.
    end: Option<i64>,
    /// Set once every record there was at creation has been returned.
    caught_up: bool,
    /// `Start::Group` and `GroupOrEnd`: the file that keeps the group's position.
    group: Option<PathBuf>,
}

/// A follower's reader and the records it read ahead.
struct Cursor {
    /// What it reads.
    source: Source,
    /// Read, not yet returned.
    pending: VecDeque<Record>,
    /// The last fill reached the end of what is written.
    at_end: bool,
}

enum Source {
    /// A keyed topic's file.
    Keyed(KeyedCursor),
    /// A view of the event log.
    Events(EventsCursor),
}

impl Source {
    /// Reads up to `max` records into `out`; true if it reached the end of what is written.
    fn fill(&mut self, max: usize, out: &mut VecDeque<Record>) -> io::Result<bool> {
        match self {
            Source::Keyed(c) => c.fill(max, out),
            Source::Events(c) => c.fill(max, out),
        }
    }
}

/// Reads a keyed topic's file.
struct KeyedCursor {
    /// Its file, compaction generation and durable end.
    topic: Arc<Topic>,
    /// The open file and the compaction generation it belongs to.
    file: Option<(BufReader<File>, u64)>,
    /// Byte position of the next record in the file.
    pos: u64,
    /// Records below this offset have been read (skipped after a reopen).
    skip_below: i64,
    /// The record being read, reused.
    buf: Vec<u8>,
}

impl KeyedCursor {
    fn fill(&mut self, max: usize, out: &mut VecDeque<Record>) -> io::Result<bool> {
        let generation = self.topic.generation.load(Ordering::SeqCst);
        if self.file.as_ref().is_none_or(|(_, g)| *g != generation) {
            let file = File::open(self.topic.dir.join(RECORDS))?;
            self.file = Some((BufReader::with_capacity(64 * 1024, file), generation));
            self.pos = 0;
        }
        let Some((reader, _)) = self.file.as_mut() else { return Ok(true) };
        // Records from here on are written but not yet fsync'd (or their append failed): they
        // are not returned yet.
        let durable = *self.topic.appended.borrow();
        let mut read = 0;
        while read < max {
            match read_one(reader, &mut self.buf)? {
                Step::Record => {
                    let Some(record) = decode(&self.buf[HEADER..]) else {
                        self.pos += self.buf.len() as u64;
                        continue;
                    };
                    if record.offset >= durable {
                        reader.seek(SeekFrom::Start(self.pos))?;
                        return Ok(true);
                    }
                    self.pos += self.buf.len() as u64;
                    if record.offset >= self.skip_below {
                        self.skip_below = record.offset + 1;
                        out.push_back(Record {
                            partition: 0,
                            offset: record.offset,
                            key: record.key.to_string(),
                            value: record.value.map(<[u8]>::to_vec),
                        });
                        read += 1;
                    }
                }
                Step::Corrupt => {
                    tracing::warn!(topic = %self.topic.dir.display(), at = self.pos, "skipping a corrupt topic record");
                    self.pos += self.buf.len() as u64;
                }
                Step::End => {
                    // Read it again, whole, next time.
                    reader.seek(SeekFrom::Start(self.pos))?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// Reads the event log (a view of it).
struct EventsCursor {
    /// The event log's directory.
    dir: PathBuf,
    /// Which events it returns.
    view: View,
    /// Opened at the start position.
    reader: Option<log::Reader>,
    /// The event being read, reused.
    payload: Vec<u8>,
    /// Where the next fill starts, if ahead of the reader (set by [`Follower::skip_to`]).
    seek: Option<u64>,
}

impl EventsCursor {
    /// Opens the reader at the end of the log (reading its last segment through); returns that
    /// offset.
    fn skip_to_end(&mut self) -> io::Result<i64> {
        let last = log::segments(&self.dir)?.last().copied().unwrap_or(0);
        let mut reader = log::Reader::open(&self.dir, last)?;
        while reader.next_record(&mut self.payload)?.is_some() {}
        let end = reader.next_offset();
        self.reader = Some(reader);
        Ok(i64::try_from(end).unwrap_or(i64::MAX))
    }

    fn fill(&mut self, max: usize, out: &mut VecDeque<Record>) -> io::Result<bool> {
        if let Some(at) = self.seek.take() {
            if self.reader.as_ref().is_none_or(|r| r.next_offset() < at) {
                self.reader = Some(log::Reader::open(&self.dir, at)?);
            }
        }
        let Some(reader) = self.reader.as_mut() else { return Ok(true) };
        let mut read = 0;
        while read < max {
            match reader.next_record(&mut self.payload)? {
                Some(log::Record::Valid(offset)) => {
                    if let Some(key) = self.view.key_of(&self.payload) {
                        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
                        out.push_back(Record { partition: 0, offset, key, value: Some(self.payload.clone()) });
                        read += 1;
                    }
                }
                Some(log::Record::Corrupt(_)) => {}
                None => return Ok(true),
            }
        }
        Ok(false)
    }
}

impl Follower {
    pub(super) async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, TopicError> {
        let start = tokio::time::Instant::now();
        loop {
            if let Some(appended) = &mut self.appended {
                appended.borrow_and_update();
            }
            let batch = self.read(max).await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            let left = wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(batch);
            }
            match &mut self.appended {
                Some(appended) => {
                    if let Ok(Err(_)) = tokio::time::timeout(left, appended.changed()).await {
                        // The topic is gone (cannot happen while this follower holds it).
                        tokio::time::sleep(left).await;
                    }
                }
                None => tokio::time::sleep(left.min(EVENTS_POLL)).await,
            }
        }
    }

    /// Fills the cursor in a blocking task, then takes up to `max` records from it.
    async fn read(&mut self, max: usize) -> Result<Vec<Record>, TopicError> {
        let cursor = self.cursor.clone();
        blocking(move || {
            let mut cursor = lock(&cursor);
            let cursor = &mut *cursor;
            if cursor.pending.len() < max {
                let want = max - cursor.pending.len();
                cursor.at_end = cursor
                    .source
                    .fill(want, &mut cursor.pending)
                    .map_err(|e| TopicError::io("cannot read a topic", e))?;
            }
            Ok(())
        })
        .await?;
        let mut cursor = lock(&self.cursor);
        let n = max.min(cursor.pending.len());
        let batch: Vec<Record> = cursor.pending.drain(..n).collect();
        if let Some(last) = batch.last() {
            self.position = last.offset + 1;
        }
        let drained = cursor.at_end && cursor.pending.is_empty();
        drop(cursor);
        if !self.caught_up {
            self.caught_up = match self.end {
                Some(end) => self.position >= end,
                None => drained,
            };
        }
        Ok(batch)
    }

    pub(super) fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Forward to `position`: what was read ahead before it is dropped, and the next read
    /// starts there (no I/O here: the reader is moved by the next fill).
    pub(super) fn skip_to(&mut self, position: i64) {
        if position <= self.position {
            return;
        }
        self.position = position;
        let mut cursor = lock(&self.cursor);
        cursor.pending.retain(|r| r.offset >= position);
        cursor.at_end = false;
        match &mut cursor.source {
            Source::Events(c) => c.seek = Some(u64::try_from(position).unwrap_or(0)),
            Source::Keyed(c) => c.skip_below = c.skip_below.max(position),
        }
        drop(cursor);
        if !self.caught_up {
            self.caught_up = self.end.is_some_and(|end| position >= end);
        }
    }

    pub(super) fn position(&self) -> Vec<(i32, i64)> {
        vec![(0, self.position)]
    }

    pub(super) async fn commit(&mut self) -> Result<(), TopicError> {
        let Some(path) = self.group.clone() else { return Ok(()) };
        let position = self.position;
        blocking(move || {
            write_group(&path, position).map_err(|e| TopicError::io(format!("cannot write {}", path.display()), e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::topics::{Follower as Any, Topics};
    use crate::events::{EventLogConfig, FsyncPolicy};

    fn config(dir: &Path) -> EventLogConfig {
        EventLogConfig {
            enabled: false,
            kafka: None,
            path: dir.to_path_buf(),
            fsync: FsyncPolicy::Always,
            segment_bytes: 1 << 20,
            queue_capacity: 16,
            gateway_id: "gw-test".into(),
        }
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("switchyard-topics-{}", uuid::Uuid::new_v4()))
    }

    /// Everything the follower returns within `wait` of the last record.
    async fn drain(follower: &mut Any) -> Vec<Record> {
        let mut all = Vec::new();
        loop {
            let batch = follower.next_batch(1000, Duration::from_millis(50)).await.unwrap();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    fn summary(records: &[Record]) -> Vec<(i64, &str, Option<&str>)> {
        records
            .iter()
            .map(|r| (r.offset, r.key.as_str(), r.value.as_deref().map(|v| std::str::from_utf8(v).unwrap())))
            .collect()
    }

    #[tokio::test]
    async fn appended_records_and_tombstones_are_followed_from_the_beginning() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        assert_eq!(topics.name("keys"), "switchyard.keys");
        topics.append("keys", "k1", Some(b"v1")).await.unwrap();
        topics.append("keys", "k2", Some(b"v2")).await.unwrap();
        topics.append("keys", "k1", None).await.unwrap();
        assert!(dir.join("switchyard.keys").join(RECORDS).exists());
        let mut follower = topics.follow("keys", Start::Beginning).unwrap();
        assert!(!follower.caught_up());
        let records = drain(&mut follower).await;
        assert_eq!(summary(&records), [(0, "k1", Some("v1")), (1, "k2", Some("v2")), (2, "k1", None)]);
        assert!(follower.caught_up());
        assert_eq!(follower.position(), [(0, 3)]);
        assert!(matches!(
            topics.append("events", "r", Some(b"{}")).await,
            Err(TopicError::NotWritable(name)) if name == "switchyard.events"
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn caught_up_means_every_record_present_at_creation_was_returned() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        let empty = topics.follow("spend", Start::Beginning).unwrap();
        assert!(empty.caught_up(), "nothing existed: caught up at once");
        for n in 0..5 {
            topics.append("spend", &format!("k{n}"), Some(b"x")).await.unwrap();
        }
        let mut follower = topics.follow("spend", Start::Beginning).unwrap();
        topics.append("spend", "later", Some(b"x")).await.unwrap();
        let first = follower.next_batch(4, Duration::ZERO).await.unwrap();
        assert_eq!(first.len(), 4);
        assert!(!follower.caught_up(), "one record of the five is still unread");
        let rest = follower.next_batch(1, Duration::ZERO).await.unwrap();
        assert_eq!(rest[0].offset, 4);
        assert!(follower.caught_up(), "the appends after creation do not count");
        let end = topics.follow("spend", Start::End).unwrap();
        assert!(end.caught_up());
        assert_eq!(end.position(), [(0, 6)]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_waiting_follower_wakes_on_an_append_at_once() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        let mut follower = topics.follow("keys", Start::End).unwrap();
        // Opened again elsewhere in the process: the same store, so its appends wake followers.
        let writer = Topics::open(&config(&dir)).unwrap();
        let appended = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer.append("keys", "k", Some(b"v")).await.unwrap();
            std::time::Instant::now()
        });
        let batch = follower.next_batch(10, Duration::from_secs(10)).await.unwrap();
        let received = std::time::Instant::now();
        let appended = appended.await.unwrap();
        assert_eq!(summary(&batch), [(0, "k", Some("v"))]);
        // Woken by the append, not by the end of its 10 s wait (a loose bound: the machine is
        // shared, and the delay itself is not what is tested).
        let delay = received.saturating_duration_since(appended);
        assert!(delay < Duration::from_secs(5), "woken {delay:?} after the append");
        // Nothing more: it waits the whole time, then returns nothing.
        let started = std::time::Instant::now();
        assert!(follower.next_batch(10, Duration::from_millis(150)).await.unwrap().is_empty());
        assert!(started.elapsed() >= Duration::from_millis(150));
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn compaction_keeps_the_last_record_of_each_key_at_its_offset() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        // A follower positioned before the compaction, part-way through.
        for n in 0..10 {
            topics.append("keys", &format!("k{}", n % 3), Some(format!("{n}").as_bytes())).await.unwrap();
        }
        let mut before = topics.follow("keys", Start::Beginning).unwrap();
        assert_eq!(before.next_batch(2, Duration::ZERO).await.unwrap().len(), 2);
        // k0..k2 rewritten many times, k1 deleted at the end: dead records pile up.
        for n in 10..200 {
            topics.append("keys", &format!("k{}", n % 3), Some(format!("{n}").as_bytes())).await.unwrap();
        }
        topics.append("keys", "k1", None).await.unwrap();
        let file = dir.join("switchyard.keys").join(RECORDS);
        let mut stored = 0;
        scan(&file, |_, _| {
            stored += 1;
            Ok(())
        })
        .unwrap();
        assert!(stored < 100, "compacted: {stored} records left of 201");
        let latest = [(198, "k0", Some("198")), (197, "k2", Some("197")), (200, "k1", None)];
        let mut fresh = topics.follow("keys", Start::Beginning).unwrap();
        let all = drain(&mut fresh).await;
        let mut last: HashMap<&str, (i64, Option<&str>)> = HashMap::new();
        for (offset, key, value) in summary(&all) {
            last.insert(key, (offset, value));
        }
        for (offset, key, value) in latest {
            assert_eq!(last[key], (offset, value), "{key}");
        }
        let offsets: Vec<i64> = all.iter().map(|r| r.offset).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase: {offsets:?}");
        // The old follower continues where it was and ends on the same latest values.
        let rest = drain(&mut before).await;
        assert!(rest.iter().all(|r| r.offset >= 2));
        let mut last: HashMap<&str, (i64, Option<&str>)> = HashMap::new();
        for (offset, key, value) in summary(&rest) {
            last.insert(key, (offset, value));
        }
        for (offset, key, value) in latest {
            assert_eq!(last[key], (offset, value), "{key}");
        }
        assert_eq!(before.position(), [(0, 201)]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_restart_reads_the_same_records_and_offsets_go_on() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        for n in 0..150 {
            topics.append("keys", &format!("k{}", n % 2), Some(format!("{n}").as_bytes())).await.unwrap();
        }
        let before = drain(&mut topics.follow("keys", Start::Beginning).unwrap()).await;
        drop(topics);
        let topics = Topics::open(&config(&dir)).unwrap();
        let after = drain(&mut topics.follow("keys", Start::Beginning).unwrap()).await;
        assert_eq!(summary(&before), summary(&after));
        topics.append("keys", "k9", Some(b"new")).await.unwrap();
        let mut end = topics.follow("keys", Start::At(vec![(0, 150)])).unwrap();
        assert_eq!(summary(&drain(&mut end).await), [(150, "k9", Some("new"))]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn records_appended_together_are_followed_in_order() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        topics.append("spend", "a", Some(b"0")).await.unwrap();
        let batch = (1..=3).map(|n| (format!("k{n}"), Some(n.to_string().into_bytes()))).collect();
        topics.append_all("spend", batch).await.unwrap();
        topics.append_all("spend", vec![("a".into(), None)]).await.unwrap();
        let all = drain(&mut topics.follow("spend", Start::Beginning).unwrap()).await;
        assert_eq!(
            summary(&all),
            [(0, "a", Some("0")), (1, "k1", Some("1")), (2, "k2", Some("2")), (3, "k3", Some("3")), (4, "a", None)]
        );
        assert!(topics.append_all("events", vec![("x".into(), None)]).await.is_err(), "the publisher's topic");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_reopened_store_compacts_what_it_finds() {
        let dir = temp_dir();
        let topic_dir = dir.join("switchyard.spend");
        {
            // Written without compaction: 300 records of 2 keys.
            let topic = Topic::open(&topic_dir, false).unwrap();
            for n in 0..300 {
                topic.append_all([(format!("k{}", n % 2).as_str(), Some(&b"x"[..]))]).unwrap();
            }
        }
        let topics = Topics::open(&config(&dir)).unwrap();
        let all = drain(&mut topics.follow("spend", Start::Beginning).unwrap()).await;
        assert_eq!(all.iter().map(|r| (r.offset, r.key.as_str())).collect::<Vec<_>>(), [(298, "k0"), (299, "k1")]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn compaction_drops_old_tombstones_but_never_the_last_record() {
        let dir = temp_dir();
        let topic_dir = dir.join("switchyard.keys");
        fs::create_dir_all(&topic_dir).unwrap();
        let old = now_ms() - TOMBSTONE_RETENTION.as_millis() as i64 - 1000;
        let mut bytes = Vec::new();
        let mut record = Vec::new();
        let mut put = |offset: i64, at: i64, key: &str, value: Option<&[u8]>| {
            encode(offset, at, key, value, &mut record);
            bytes.extend_from_slice(&record);
        };
        put(0, old, "gone", Some(b"v"));
        put(1, old, "gone", None); // an expired tombstone: dropped
        put(2, now_ms(), "recent", None); // a recent one: kept
        for offset in 3..103 {
            put(offset, now_ms(), "filler", Some(b"f"));
        }
        put(103, old, "last", None); // expired, but the last record: kept
        fs::write(topic_dir.join(RECORDS), &bytes).unwrap();
        let topics = Topics::open(&config(&dir)).unwrap();
        let all = drain(&mut topics.follow("keys", Start::Beginning).unwrap()).await;
        assert_eq!(summary(&all), [(2, "recent", None), (102, "filler", Some("f")), (103, "last", None)]);
        topics.append("keys", "next", Some(b"n")).await.unwrap();
        let next = drain(&mut topics.follow("keys", Start::At(vec![(0, 104)])).unwrap()).await;
        assert_eq!(summary(&next), [(104, "next", Some("n"))]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        topics.append("keys", "a", Some(b"1")).await.unwrap();
        topics.append("keys", "b", Some(b"2")).await.unwrap();
        drop(topics);
        let file = dir.join("switchyard.keys").join(RECORDS);
        let mut bytes = fs::read(&file).unwrap();
        let mut torn = Vec::new();
        encode(2, now_ms(), "c", Some(b"3"), &mut torn);
        bytes.extend_from_slice(&torn[..torn.len() - 3]); // a crash mid-write
        fs::write(&file, &bytes).unwrap();
        let topics = Topics::open(&config(&dir)).unwrap();
        topics.append("keys", "d", Some(b"4")).await.unwrap();
        let all = drain(&mut topics.follow("keys", Start::Beginning).unwrap()).await;
        assert_eq!(summary(&all), [(0, "a", Some("1")), (1, "b", Some("2")), (2, "d", Some("4"))]);
        fs::remove_dir_all(dir).unwrap();
    }

    /// A record in the file whose append has not been fsync'd (or failed) is not returned.
    #[tokio::test]
    async fn followers_return_only_durable_records() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        topics.append("keys", "a", Some(b"1")).await.unwrap();
        let mut pending = Vec::new();
        encode(1, now_ms(), "b", Some(b"2"), &mut pending);
        let file = dir.join("switchyard.keys").join(RECORDS);
        OpenOptions::new().append(true).open(&file).unwrap().write_all(&pending).unwrap();
        let mut follower = topics.follow("keys", Start::Beginning).unwrap();
        assert_eq!(summary(&drain(&mut follower).await), [(0, "a", Some("1"))]);
        assert!(follower.caught_up());
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_group_resumes_after_its_commit_across_a_reopen() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        for n in 0..5 {
            topics.append("alerts", &format!("a{n}"), Some(b"x")).await.unwrap();
        }
        let mut group = topics.follow("alerts", Start::Group("budgets".into())).unwrap();
        assert_eq!(group.next_batch(3, Duration::ZERO).await.unwrap().len(), 3);
        group.commit().await.unwrap();
        assert_eq!(group.next_batch(1, Duration::ZERO).await.unwrap().len(), 1, "read, not committed");
        drop((group, topics));
        let topics = Topics::open(&config(&dir)).unwrap();
        let mut group = topics.follow("alerts", Start::Group("budgets".into())).unwrap();
        assert_eq!(summary(&drain(&mut group).await), [(3, "a3", Some("x")), (4, "a4", Some("x"))]);
        let mut other = topics.follow("alerts", Start::Group("other".into())).unwrap();
        assert_eq!(drain(&mut other).await.len(), 5, "a new group starts at the beginning");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_group_or_end_starts_at_the_end_until_it_commits() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        topics.append("alerts", "old", Some(b"x")).await.unwrap();
        let mut fresh = topics.follow("alerts", Start::GroupOrEnd("deliver".into())).unwrap();
        assert!(fresh.next_batch(10, Duration::ZERO).await.unwrap().is_empty(), "the history is not read");
        fresh.commit().await.unwrap();
        topics.append("alerts", "new", Some(b"y")).await.unwrap();
        drop(fresh);
        let mut again = topics.follow("alerts", Start::GroupOrEnd("deliver".into())).unwrap();
        assert_eq!(summary(&drain(&mut again).await), [(1, "new", Some("y"))], "from the commit on");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_shared_follower_is_the_whole_group_and_reads_nothing_until_placed() {
        let dir = temp_dir();
        let topics = Topics::open(&config(&dir)).unwrap();
        for n in 0..5 {
            topics.append("alerts", &format!("a{n}"), Some(b"x")).await.unwrap();
        }
        let mut shared = topics.follow("alerts", Start::Shared(topics.group("spend"))).unwrap();
        assert_eq!(topics.group("spend"), "switchyard.consumer.spend");
        assert!(shared.next_batch(10, Duration::from_secs(5)).await.unwrap().is_empty(), "returns at once");
        let change = shared.reassigned().unwrap();
        assert_eq!((change.assigned, change.revoked), ([0].into(), [].into()));
        assert!(shared.reassigned().is_none(), "reported once");
        assert!(shared.next_batch(10, Duration::from_millis(20)).await.unwrap().is_empty(), "held");
        shared.place(&[(0, 3)]).await.unwrap();
        assert_eq!(summary(&drain(&mut shared).await), [(3, "a3", Some("x")), (4, "a4", Some("x"))]);
        assert_eq!(shared.position(), [(0, 5)]);
        assert!(shared.reassigned().is_none(), "nothing is ever revoked");
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_events_view_follows_what_the_publisher_writes() {
        let dir = temp_dir();
        let mut log = log::SegmentLog::open(&dir, 1 << 20, FsyncPolicy::Never).unwrap();
        log.append(br#"{"type":"request","request_id":"r1"}"#).unwrap();
        log.append(br#"{"type":"deployment","deployment_id":"d1"}"#).unwrap();
        log.flush().unwrap();
        let topics = Topics::open(&config(&dir)).unwrap();
        let mut events = topics.follow("events", Start::Beginning).unwrap();
        let mut deployments = topics.follow("deployments", Start::Beginning).unwrap();
        let mut end = topics.follow("events", Start::End).unwrap();
        assert_eq!(end.position(), [(0, 2)]);
        let first = drain(&mut events).await;
        assert_eq!(first.iter().map(|r| (r.offset, r.key.as_str())).collect::<Vec<_>>(), [(0, "r1")]);
        assert!(events.caught_up());
        let d = drain(&mut deployments).await;
        assert_eq!(d.iter().map(|r| (r.offset, r.key.as_str())).collect::<Vec<_>>(), [(1, "d1")]);
        // Another thread appends (the publisher): a waiting follower sees it within a few ms.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            log.append(br#"{"type":"response","request_id":"r1"}"#).unwrap();
            log.flush().unwrap();
            std::time::Instant::now()
        });
        let batch = events.next_batch(10, Duration::from_secs(10)).await.unwrap();
        let delay = std::time::Instant::now().saturating_duration_since(writer.join().unwrap());
        assert_eq!(batch.iter().map(|r| (r.offset, r.key.as_str())).collect::<Vec<_>>(), [(2, "r1")]);
        assert!(delay < Duration::from_millis(50), "seen {delay:?} after the write");
        assert_eq!(drain(&mut end).await.iter().map(|r| r.offset).collect::<Vec<_>>(), [2]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_follower_skipped_ahead_reads_on_from_there_and_commits_it() {
        let dir = temp_dir();
        let mut log = log::SegmentLog::open(&dir, 1 << 20, FsyncPolicy::Never).unwrap();
        for n in 0..6 {
            log.append(format!(r#"{{"type":"request","request_id":"r{n}"}}"#).as_bytes()).unwrap();
        }
        log.flush().unwrap();
        let topics = Topics::open(&config(&dir)).unwrap();
        for n in 0..6 {
            topics.append("alerts", &format!("a{n}"), Some(b"x")).await.unwrap();
        }
        for short in ["events", "alerts"] {
            let mut follower = topics.follow(short, Start::Group("fed".into())).unwrap();
            assert_eq!(follower.next_batch(2, Duration::ZERO).await.unwrap().len(), 2);
            follower.skip_to(&[(0, 4)]).unwrap();
            follower.skip_to(&[(0, 3)]).unwrap();
            assert_eq!(follower.position(), [(0, 4)], "{short}: never backwards");
            follower.commit().await.unwrap();
            assert_eq!(drain(&mut follower).await.iter().map(|r| r.offset).collect::<Vec<_>>(), [4, 5], "{short}");
            let mut again = topics.follow(short, Start::Group("fed".into())).unwrap();
            assert_eq!(drain(&mut again).await.first().map(|r| r.offset), Some(4), "{short}: the group resumes there");
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let mut buf = Vec::new();
        encode(7, 1234, "kéy", Some(b"v\nwith newline"), &mut buf);
        let record = decode(&buf[HEADER..]).unwrap();
        assert_eq!((record.offset, record.timestamp_ms, record.key), (7, 1234, "kéy"));
        assert_eq!(record.value, Some(&b"v\nwith newline"[..]));
        encode(8, 0, "k", None, &mut buf);
        assert_eq!(decode(&buf[HEADER..]).unwrap().value, None);
        let mut flipped = buf.clone();
        flipped[HEADER + 2] ^= 1;
        assert!(matches!(read_one(&mut &flipped[..], &mut Vec::new()).unwrap(), Step::Corrupt));
        assert!(matches!(read_one(&mut &buf[..buf.len() - 1], &mut Vec::new()).unwrap(), Step::End));
        assert!(matches!(read_one(&mut &buf[..], &mut Vec::new()).unwrap(), Step::Record));
    }
}
