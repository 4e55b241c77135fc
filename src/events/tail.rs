//! `switchyard tail`: print the event stream, one JSON event per line, from the embedded log or
//! from Kafka, so a user can watch traffic without Kafka tooling.

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

use super::{log, EventLogConfig};

/// How long `tail` without `--follow` waits for more Kafka messages before it stops.
const KAFKA_IDLE_END: Duration = Duration::from_secs(3);

/// Whether an event's JSON has the wanted `type`.
fn wanted(json: &[u8], kind: Option<&str>) -> bool {
    let Some(kind) = kind else { return true };
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
    }
    serde_json::from_slice::<Kind>(json).is_ok_and(|k| k.kind == kind)
}

fn print(out: &mut impl Write, json: &[u8]) -> io::Result<()> {
    out.write_all(json)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Prints the stream of the configured backend.
pub async fn tail(config: &EventLogConfig, follow: bool, kind: Option<&str>) -> Result<(), String> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match &config.kafka {
        None => tail_log(&config.path, follow, kind, &mut out)
            .map_err(|e| format!("cannot read the event log at {}: {e}", config.path.display())),
        Some(_) => tail_kafka(config, follow, kind, &mut out).await,
    }
}

/// Prints the embedded log from its first event; with `follow`, keeps printing new ones.
pub fn tail_log(dir: &Path, follow: bool, kind: Option<&str>, out: &mut impl Write) -> io::Result<()> {
    if !dir.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no event log here yet (has the gateway run with this config?)",
        ));
    }
    let mut reader = log::Reader::open(dir, 0)?;
    let mut payload = Vec::new();
    loop {
        match reader.next_record(&mut payload)? {
            Some(log::Record::Valid(_)) if wanted(&payload, kind) => print(out, &payload)?,
            Some(_) => {}
            None if follow => std::thread::sleep(Duration::from_millis(200)),
            None => return Ok(()),
        }
    }
}

async fn tail_kafka(
    config: &EventLogConfig,
    follow: bool,
    kind: Option<&str>,
    out: &mut impl Write,
) -> Result<(), String> {
    let Some(k) = &config.kafka else { return Ok(()) };
    let mut cfg = rdkafka::ClientConfig::new();
    cfg.set("bootstrap.servers", &k.bootstrap_servers)
        .set("group.id", format!("switchyard-tail-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cfg.create().map_err(|e| format!("cannot create a Kafka consumer: {e}"))?;
    let topics = match kind {
        Some("deployment") => vec![k.deployments_topic()],
        Some(_) => vec![k.events_topic()],
        None => vec![k.events_topic(), k.deployments_topic()],
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(|e| format!("cannot subscribe to {names:?}: {e}"))?;
    let mut stream = consumer.stream();
    let mut last = Instant::now();
    loop {
        let wait = if follow { Duration::from_secs(3600) } else { KAFKA_IDLE_END.saturating_sub(last.elapsed()) };
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(message))) => {
                last = Instant::now();
                if let Some(json) = message.payload() {
                    if wanted(json, kind) {
                        print(out, json).map_err(|e| e.to_string())?;
                    }
                }
            }
            Ok(Some(Err(e))) => tracing::warn!(error = %e, "Kafka consumer error"),
            Ok(None) => return Ok(()),
            Err(_) if follow => {}
            Err(_) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_type() {
        assert!(wanted(br#"{"type":"response","x":1}"#, Some("response")));
        assert!(!wanted(br#"{"type":"request"}"#, Some("response")));
        assert!(wanted(br#"{"type":"request"}"#, None));
    }
}
