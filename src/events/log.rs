//! A durable, segmented, append-only log of records on local disk: the embedded event log (one
//! JSON event per record) when no Kafka is configured, and the spool in front of Kafka when it is
//! (each record a routed event, see `kafka`).
//!
//! Each record is one line, `<crc32 as 8 hex digits> <payload>\n`; a record's offset is its index
//! in the log. Segments are files named by their first offset (`00000000000000000042.log`),
//! rolled at `segment_bytes`. On open, a torn or corrupt tail (a crash mid-write) is cut off.
//! `committed` (a file beside the segments) records how far a consumer of the log — the Kafka
//! spool drainer — has got; segments wholly below it are deleted.
//!
//! A [`Reader`] is a cursor: it keeps its file and position between reads, so reading a log from
//! its start to its end scans it once, also while it is being written to.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::config::FsyncPolicy;

pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    fsync: FsyncPolicy,
    writer: BufWriter<File>,
    /// Bytes in the current segment.
    segment_len: u64,
    segment_start: u64,
    next_offset: u64,
    committed: u64,
    last_sync: Instant,
    /// Appended since the last sync.
    dirty: bool,
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.log"))
}

/// Segment start offsets, ascending.
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut starts: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    starts.sort_unstable();
    Ok(starts)
}

/// The payload of one line, if its checksum holds.
pub fn decode(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let payload = &line[9..];
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// `<crc> ` of a payload, without allocating.
fn header(payload: &[u8]) -> [u8; 9] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let crc = crc32fast::hash(payload);
    let mut out = [b' '; 9];
    for (i, byte) in out[..8].iter_mut().enumerate() {
        *byte = HEX[((crc >> (28 - 4 * i)) & 0xf) as usize];
    }
    out
}

impl SegmentLog {
    pub fn open(dir: &Path, segment_bytes: u64, fsync: FsyncPolicy) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let committed = fs::read_to_string(dir.join("committed")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let starts = segments(dir)?;
        let start = starts.last().copied().unwrap_or(committed);
        let path = segment_path(dir, start);
        let (records, valid_len) = if path.exists() { scan_valid(&path)? } else { (0, 0) };
        let mut file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(&path)?;
        if file.metadata()?.len() != valid_len {
            tracing::warn!(segment = %path.display(), "cutting a torn or corrupt tail off the event log");
            file.set_len(valid_len)?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(4096),
            fsync,
            writer: BufWriter::with_capacity(64 * 1024, file),
            segment_len: valid_len,
            segment_start: start,
            next_offset: start + records,
            committed: committed.min(start + records),
            last_sync: Instant::now(),
            dirty: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record (buffered; [`SegmentLog::flush`] makes it durable per the policy).
    pub fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        if self.segment_len >= self.segment_bytes {
            self.roll()?;
        }
        self.writer.write_all(&header(payload))?;
        self.writer.write_all(payload)?;
        self.writer.write_all(b"\n")?;
        self.segment_len += payload.len() as u64 + 10;
        self.dirty = true;
        let offset = self.next_offset;
        self.next_offset += 1;
        Ok(offset)
    }

    fn roll(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_data()?;
        let file = OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, self.next_offset))?;
        self.writer = BufWriter::with_capacity(64 * 1024, file);
        self.segment_start = self.next_offset;
        self.segment_len = 0;
        Ok(())
    }

    /// Hands buffered records to the OS (a process crash no longer loses them), and syncs them
    /// to disk as the policy says. Cheap when nothing was appended.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if !self.writer.buffer().is_empty() {
            self.writer.flush()?;
        }
        let sync = match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            FsyncPolicy::Never => false,
        };
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Flushes and syncs regardless of the policy (shutdown).
    pub fn sync(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_data()?;
        self.last_sync = Instant::now();
        self.dirty = false;
        Ok(())
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Records appended but not yet committed.
    pub fn pending(&self) -> u64 {
        self.next_offset - self.committed
    }

    /// Up to `max` records from `from` on, as (offset, payload). Corrupt records are skipped.
    pub fn read(&mut self, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        self.writer.flush()?;
        read_records(&self.dir, from, max)
    }

    /// A cursor at `from` (records still in the write buffer are visible after a flush).
    pub fn reader(&mut self, from: u64) -> io::Result<Reader> {
        self.writer.flush()?;
        Reader::open(&self.dir, from)
    }

    /// Everything before `offset` has been consumed: remember it, delete whole segments below it.
    pub fn commit(&mut self, offset: u64) -> io::Result<()> {
        let offset = offset.min(self.next_offset);
        let tmp = self.dir.join("committed.tmp");
        fs::write(&tmp, offset.to_string())?;
        fs::rename(&tmp, self.dir.join("committed"))?;
        self.committed = offset;
        let starts = segments(&self.dir)?;
        for pair in starts.windows(2) {
            // A segment ends where the next begins; keep the current (last) one.
            if pair[1] <= offset && pair[0] != self.segment_start {
                fs::remove_file(segment_path(&self.dir, pair[0]))?;
            }
        }
        Ok(())
    }
}

/// Counts the valid records of a segment and the byte length they cover.
fn scan_valid(path: &Path) -> io::Result<(u64, u64)> {
    let mut reader = BufReader::new(File::open(path)?);
    let (mut records, mut len) = (0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') || decode(&line).is_none() {
            return Ok((records, len));
        }
        records += 1;
        len += n as u64;
    }
}

/// One record as a [`Reader`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The record at this offset; its payload is in the caller's buffer.
    Valid(u64),
    /// The record at this offset fails its checksum (skip it).
    Corrupt(u64),
}

/// A cursor over a log directory: it keeps its file and position between reads, and moves on to
/// the next segment when it reaches the end of one. Works on a log another process (or this one)
/// is appending to: a line not yet fully written is left for the next read.
pub struct Reader {
    dir: PathBuf,
    file: Option<BufReader<File>>,
    /// The first offset of the open segment.
    segment: u64,
    /// Byte position of the next record in the current segment.
    pos: u64,
    /// Offset of the next record read.
    next: u64,
    /// Records below this offset are read past, not returned.
    skip_to: u64,
    line: Vec<u8>,
}

impl Reader {
    /// A cursor at offset `from` (or at the first record still on disk, if that is later). The
    /// records of its segment before `from` are skipped on the first read.
    pub fn open(dir: &Path, from: u64) -> io::Result<Self> {
        let starts = segments(dir)?;
        let start = starts.iter().rev().find(|s| **s <= from).or(starts.first()).copied().unwrap_or(from);
        Ok(Self {
            dir: dir.to_path_buf(),
            file: None,
            segment: start,
            pos: 0,
            next: start,
            skip_to: from,
            line: Vec::new(),
        })
    }

    /// The offset of the next record this cursor returns.
    pub fn next_offset(&self) -> u64 {
        self.next.max(self.skip_to)
    }

    /// The next record, its payload in `payload`; `None` at the (current) end of the log.
    pub fn next_record(&mut self, payload: &mut Vec<u8>) -> io::Result<Option<Record>> {
        loop {
            if self.file.is_none() {
                let path = segment_path(&self.dir, self.next);
                match File::open(&path) {
                    Ok(file) => {
                        self.file = Some(BufReader::with_capacity(64 * 1024, file));
                        self.segment = self.next;
                        self.pos = 0;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            match self.read_line()? {
                Some(_) => {
                    let offset = self.next;
                    self.next += 1;
                    if offset < self.skip_to {
                        continue;
                    }
                    payload.clear();
                    return Ok(Some(match decode(&self.line) {
                        Some(p) => {
                            payload.extend_from_slice(p);
                            Record::Valid(offset)
                        }
                        None => {
                            tracing::warn!(offset, "skipping a corrupt event log record");
                            Record::Corrupt(offset)
                        }
                    }));
                }
                // The end of this segment; a later one starts at the next offset once rolled.
                None if self.next > self.segment && segment_path(&self.dir, self.next).exists() => self.file = None,
                None => return Ok(None),
            }
        }
    }

    /// Reads the next complete line into `self.line`; at the end (or before a line still being
    /// written), leaves the position where it was and returns `None`.
    fn read_line(&mut self) -> io::Result<Option<()>> {
        let Some(file) = self.file.as_mut() else { return Ok(None) };
        self.line.clear();
        let n = file.read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        if self.line.last() != Some(&b'\n') {
            // A torn or unfinished line: read it again next time, from its start.
            file.seek(SeekFrom::Start(self.pos))?;
            return Ok(None);
        }
        self.pos += n as u64;
        Ok(Some(()))
    }
}

/// Reads up to `max` records from `from` on, as (offset, payload); corrupt records are skipped.
/// Works on a log another process is writing (`switchyard tail`).
pub fn read_records(dir: &Path, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut reader = Reader::open(dir, from)?;
    let mut out = Vec::new();
    let mut payload = Vec::new();
    while out.len() < max {
        match reader.next_record(&mut payload)? {
            Some(Record::Valid(offset)) => out.push((offset, std::mem::take(&mut payload))),
            Some(Record::Corrupt(_)) => {}
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-log-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn jsons(records: &[(u64, Vec<u8>)]) -> Vec<String> {
        records.iter().map(|(_, j)| String::from_utf8(j.clone()).unwrap()).collect()
    }

    #[test]
    fn records_survive_reopening_across_segments() {
        let dir = temp_dir();
        let mut log = SegmentLog::open(&dir, 4096, FsyncPolicy::Always).unwrap();
        for i in 0..300 {
            log.append(format!("{{\"n\":{i}}}").as_bytes()).unwrap();
        }
        log.flush().unwrap();
        assert!(segments(&dir).unwrap().len() > 1, "rolled into several segments");
        drop(log);
        let mut log = SegmentLog::open(&dir, 4096, FsyncPolicy::Always).unwrap();
        assert_eq!(log.next_offset(), 300);
        let all = log.read(0, 1000).unwrap();
        assert_eq!(all.len(), 300);
        assert_eq!(all[299], (299, b"{\"n\":299}".to_vec()));
        assert_eq!(jsons(&log.read(150, 2).unwrap()), ["{\"n\":150}", "{\"n\":151}"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_corrupt_records_are_skipped() {
        let dir = temp_dir();
        let mut log = SegmentLog::open(&dir, 1 << 20, FsyncPolicy::Never).unwrap();
        log.append(b"{\"a\":1}").unwrap();
        log.append(b"{\"a\":2}").unwrap();
        log.sync().unwrap();
        drop(log);
        let path = segment_path(&dir, 0);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"0000abcd {\"torn"); // a crash mid-write
        fs::write(&path, &bytes).unwrap();
        let mut log = SegmentLog::open(&dir, 1 << 20, FsyncPolicy::Never).unwrap();
        assert_eq!(log.next_offset(), 2);
        log.append(b"{\"a\":3}").unwrap();
        log.sync().unwrap();
        // Flip a byte inside the second record: its checksum no longer holds.
        let mut bytes = fs::read(&path).unwrap();
        let second = bytes.iter().position(|b| *b == b'\n').unwrap() + 14;
        bytes[second] = b'9';
        fs::write(&path, &bytes).unwrap();
        assert_eq!(jsons(&read_records(&dir, 0, 10).unwrap()), ["{\"a\":1}", "{\"a\":3}"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn commit_remembers_progress_and_deletes_consumed_segments() {
        let dir = temp_dir();
        let mut log = SegmentLog::open(&dir, 4096, FsyncPolicy::Always).unwrap();
        for i in 0..300 {
            log.append(format!("{{\"n\":{i}}}").as_bytes()).unwrap();
        }
        log.flush().unwrap();
        let before = segments(&dir).unwrap().len();
        log.commit(250).unwrap();
        assert!(segments(&dir).unwrap().len() < before);
        assert_eq!(log.pending(), 50);
        drop(log);
        let mut log = SegmentLog::open(&dir, 4096, FsyncPolicy::Always).unwrap();
        assert_eq!((log.committed(), log.pending()), (250, 50));
        assert_eq!(log.read(log.committed(), 1).unwrap()[0].0, 250);
        log.commit(300).unwrap();
        assert_eq!(log.pending(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_reader_keeps_its_place_while_the_log_grows_and_rolls() {
        let dir = temp_dir();
        let mut log = SegmentLog::open(&dir, 4096, FsyncPolicy::Never).unwrap();
        let mut reader = log.reader(0).unwrap();
        let mut payload = Vec::new();
        assert_eq!(reader.next_record(&mut payload).unwrap(), None, "an empty log");
        let mut read = Vec::new();
        for round in 0..5 {
            for i in 0..100 {
                log.append(format!("{{\"n\":{}}}", round * 100 + i).as_bytes()).unwrap();
            }
            log.flush().unwrap();
            while let Some(record) = reader.next_record(&mut payload).unwrap() {
                assert_eq!(record, Record::Valid(read.len() as u64));
                read.push(String::from_utf8(payload.clone()).unwrap());
            }
            assert_eq!(reader.next_offset(), log.next_offset());
        }
        assert!(segments(&dir).unwrap().len() > 1, "it crossed segments");
        assert_eq!(read.len(), 500);
        assert_eq!(read[499], "{\"n\":499}");

        // A line still being written is left for the next read.
        let path = segment_path(&dir, *segments(&dir).unwrap().last().unwrap());
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let line =
            format!("{} {{\"n\":500}}\n", String::from_utf8(header(b"{\"n\":500}").to_vec()).unwrap().trim_end());
        file.write_all(&line.as_bytes()[..10]).unwrap();
        assert_eq!(reader.next_record(&mut payload).unwrap(), None);
        file.write_all(&line.as_bytes()[10..]).unwrap();
        assert_eq!(reader.next_record(&mut payload).unwrap(), Some(Record::Valid(500)));
        assert_eq!(payload, b"{\"n\":500}");

        // A cursor opened in the middle starts there.
        let mut middle = Reader::open(&dir, 250).unwrap();
        assert_eq!(middle.next_record(&mut payload).unwrap(), Some(Record::Valid(250)));
        assert_eq!(payload, b"{\"n\":250}");
        fs::remove_dir_all(dir).unwrap();
    }
}
