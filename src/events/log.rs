//! A durable, segmented, append-only log of JSON events on local disk: the embedded event log
//! when no Kafka is configured, and the spool in front of Kafka when it is.
//!
//! Each record is one line, `<crc32 as 8 hex digits> <json>\n`; a record's offset is its index
//! in the log. Segments are files named by their first offset (`00000000000000000042.log`),
//! rolled at `segment_bytes`. On open, a torn or corrupt tail (a crash mid-write) is cut off.
//! `committed` (a file beside the segments) records how far a consumer of the log — the Kafka
//! spool drainer — has got; segments wholly below it are deleted.

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

/// The JSON of one line, if its checksum holds.
pub fn decode(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let json = &line[9..];
    (crc32fast::hash(json) == crc).then_some(json)
}

fn encode(json: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{:08x} ", crc32fast::hash(json)).as_bytes());
    out.extend_from_slice(json);
    out.push(b'\n');
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

    /// Appends one record (buffered; [`SegmentLog::flush`] makes it durable per the policy).
    pub fn append(&mut self, json: &[u8]) -> io::Result<u64> {
        if self.segment_len >= self.segment_bytes {
            self.roll()?;
        }
        let mut line = Vec::with_capacity(json.len() + 10);
        encode(json, &mut line);
        self.writer.write_all(&line)?;
        self.segment_len += line.len() as u64;
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

    /// Hands buffered records to the OS, and syncs them to disk as the policy says.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if self.writer.buffer().is_empty() && matches!(self.fsync, FsyncPolicy::Never) {
            return Ok(());
        }
        self.writer.flush()?;
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

    /// Up to `max` records from `from` on, as (offset, json). Corrupt records are skipped.
    pub fn read(&mut self, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        self.writer.flush()?;
        read_records(&self.dir, from, max)
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

/// Reads records from a log directory (also from another process: `switchyard tail`).
pub fn read_records(dir: &Path, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let starts = segments(dir)?;
    let first = starts.iter().rposition(|s| *s <= from).unwrap_or(0);
    let mut out = Vec::new();
    for start in starts.iter().skip(first) {
        let mut reader = BufReader::new(File::open(segment_path(dir, *start))?);
        let mut offset = *start;
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
                break;
            }
            if offset >= from {
                match decode(&line) {
                    Some(json) => out.push((offset, json.to_vec())),
                    None => tracing::warn!(offset, "skipping a corrupt event log record"),
                }
                if out.len() >= max {
                    return Ok(out);
                }
            }
            offset += 1;
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
}
