//! `event_log`: Switchyard's own section (unknown keys are errors), saying where events go.
//! The connection settings can come from the environment instead, so one file serves every
//! environment.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::EventLogSection;
use super::{parse_duration, scalar_string, Validator};

/// `event_log`, validated.
#[derive(Debug, Clone)]
pub struct EventLogConfig {
    /// False: events are not published at all.
    pub enabled: bool,
    pub kafka: Option<KafkaConfig>,
    /// The embedded log's directory; with Kafka, the spool lives in `<path>/spool`.
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    pub queue_capacity: usize,
    /// This instance's name in every event.
    pub gateway_id: String,
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Extra librdkafka properties, passed through.
    pub producer: Vec<(String, String)>,
}

impl KafkaConfig {
    pub fn events_topic(&self) -> String {
        format!("{}.events", self.topic_prefix)
    }

    pub fn deployments_topic(&self) -> String {
        format!("{}.deployments", self.topic_prefix)
    }
}

/// When appended records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch of appends.
    Always,
    /// At most this long after an append.
    Interval(Duration),
    /// When the operating system decides (still flushed to the OS after every batch).
    Never,
}

/// Where the embedded log lives unless the config says otherwise.
const DEFAULT_PATH: &str = "./data/events";
/// Segment size bounds, in MiB: a segment is one file, rolled when it reaches this size.
const MAX_SEGMENT_MB: f64 = 4096.0;
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Events queued between handlers and the publisher; each is a few KiB in memory.
const MAX_QUEUE_CAPACITY: u64 = 10_000_000;
const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

impl Validator<'_> {
    /// `event_log`, with `SWITCHYARD_KAFKA_BOOTSTRAP_SERVERS` and `SWITCHYARD_EVENT_LOG_PATH`
    /// overriding the file.
    pub(super) fn event_log(&mut self, section: EventLogSection) -> EventLogConfig {
        let kafka = self.kafka(section.kafka);
        let fsync = match section.fsync.as_deref().map(str::trim) {
            None => FsyncPolicy::Interval(Duration::from_secs(1)),
            Some("always") => FsyncPolicy::Always,
            Some("never") => FsyncPolicy::Never,
            Some(other) => match parse_duration(other) {
                Ok(every) => FsyncPolicy::Interval(every),
                Err(e) => {
                    self.problem("event_log.fsync", format!("expected always, never or an interval like \"1s\": {e}"));
                    FsyncPolicy::Interval(Duration::from_secs(1))
                }
            },
        };
        // The variable, when relative, is relative to the working directory (where the command
        // was started, as for any path given on a command line); the file's path, or the
        // default, to the file's directory.
        let path = match (self.env)("SWITCHYARD_EVENT_LOG_PATH").filter(|p| !p.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => self.file_path(section.path.as_deref().unwrap_or(DEFAULT_PATH)),
        };
        let gateway_id = section.gateway_id.or_else(|| (self.env)("SWITCHYARD_GATEWAY_ID")).unwrap_or_else(|| {
            format!(
                "{}-{}",
                hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "gateway".into()),
                std::process::id()
            )
        });
        let segment_bytes = match section.segment_mb {
            None => DEFAULT_SEGMENT_BYTES,
            Some(mb) => match segment_bytes(mb) {
                Some(bytes) => bytes,
                None => {
                    self.problem(
                        "event_log.segment_mb",
                        format!("must be more than 0 and at most {MAX_SEGMENT_MB}, got {mb}"),
                    );
                    DEFAULT_SEGMENT_BYTES
                }
            },
        };
        let queue_capacity = self
            .in_range("event_log.queue_capacity", section.queue_capacity, 1..=MAX_QUEUE_CAPACITY)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_QUEUE_CAPACITY);
        EventLogConfig {
            enabled: section.enabled.unwrap_or(true),
            kafka,
            path,
            fsync,
            segment_bytes,
            queue_capacity,
            gateway_id,
        }
    }

    fn kafka(&mut self, section: Option<super::raw::KafkaSection>) -> Option<KafkaConfig> {
        let bootstrap_env = (self.env)("SWITCHYARD_KAFKA_BOOTSTRAP_SERVERS").filter(|s| !s.is_empty());
        if section.is_none() && bootstrap_env.is_none() {
            return None;
        }
        let k = section.unwrap_or_default();
        let Some(bootstrap_servers) = bootstrap_env.or(k.bootstrap_servers).filter(|s| !s.is_empty()) else {
            self.problem("event_log.kafka.bootstrap_servers", "required (or set SWITCHYARD_KAFKA_BOOTSTRAP_SERVERS)");
            return None;
        };
        let mut producer = Vec::with_capacity(k.producer.len());
        for (key, value) in k.producer {
            match scalar_string(&value) {
                Some(v) => producer.push((key, v)),
                None => self.problem(format!("event_log.kafka.producer.{key}"), "must be a string, number or boolean"),
            }
        }
        let mut positive = |v: Option<u64>, field: &str, default: i32| {
            self.in_range(format!("event_log.kafka.{field}"), v, 1..=u64::from(i32::MAX.unsigned_abs()))
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(default)
        };
        Some(KafkaConfig {
            bootstrap_servers,
            topic_prefix: k.topic_prefix.filter(|p| !p.is_empty()).unwrap_or_else(|| "switchyard".into()),
            partitions: positive(k.partitions, "partitions", 3),
            replication_factor: positive(k.replication_factor, "replication_factor", 1),
            producer,
        })
    }
}

/// MiB as bytes, when `mb` is in (0, [`MAX_SEGMENT_MB`]].
fn segment_bytes(mb: f64) -> Option<u64> {
    // At most 2^42 bytes: exact in f64, far within u64.
    (mb > 0.0 && mb <= MAX_SEGMENT_MB).then(|| (mb * 1024.0 * 1024.0).round() as u64).filter(|b| *b > 0)
}
