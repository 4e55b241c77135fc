//! Micro-benchmarks of the per-request hot paths of the library API.
//!
//! Run: `cargo bench --bench hot_paths -- --warm-up-time 1 --measurement-time 2`
//!
//! - `select/*`: `router::strategy::select` over 8 candidates, once per `config::Strategy`
//!   (every request runs it once, more on retries and fallbacks).
//! - `sse/*`: `openai::sse::EventSplitter` over a realistic 30-chunk OpenAI chat stream (role
//!   chunk, 27 word chunks, finish chunk, usage chunk, then `[DONE]`), fed one event per read
//!   and in 128-byte reads; plus `event_data` per event, as the relay does.
//! - `response/*`: `openai::ResponseView::parse` + `.usage()` on a typical chat completion and
//!   on a long (~4 KB) one (every non-stream answer is parsed once for usage).
//! - `cost/*`: `cost::Price::cost` (every successful call).
//! - `prompt_len/*`: `openai::prompt_len` on a 6-message chat request (pre-call estimates).
//! - `event/*`: reading a response event back (whole, or only its spend facts) and building its
//!   spend row, and the alert rules on it: what the in-process consumers pay per call on the
//!   embedded log.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;

use switchyard::config::Strategy;
use switchyard::cost::Price;
use switchyard::openai::mock;
use switchyard::openai::request::RequestBody;
use switchyard::openai::sse::{self, EventSplitter};
use switchyard::openai::{prompt_len, ResponseView, TokenUsage};
use switchyard::router::strategy::{select, Candidate, Need};

/// Eight deployments of one model group with the state a busy gateway would have: all in one
/// `order`, with weights, limits, usage this minute, in-flight counts, latencies and prices.
fn candidates() -> Vec<Candidate> {
    (0..8)
        .map(|i| Candidate {
            index: i,
            order: None,
            weight: Some(1.0 + (i % 3) as f64),
            rpm: Some(10_000),
            tpm: Some(2_000_000),
            in_flight: (i as u32 * 7) % 5,
            requests_this_minute: 100 + i as u64 * 13,
            tokens_this_minute: 50_000 + i as u64 * 1_700,
            latency: Some(0.010 + i as f64 * 0.0007),
            ttft: Some(0.200 + i as f64 * 0.011),
            price: Some(1.5e-7 + (i % 4) as f64 * 1e-8),
        })
        .collect()
}

fn bench_select(c: &mut Criterion) {
    let cands = candidates();
    let need = Need { stream: false, input_tokens: 120, enforce_limits: false };
    let mut group = c.benchmark_group("select/8_candidates");
    for (name, strategy) in [
        ("simple-shuffle", Strategy::SimpleShuffle),
        ("least-busy", Strategy::LeastBusy),
        ("usage-based", Strategy::UsageBased),
        ("latency-based", Strategy::LatencyBased),
        ("cost-based", Strategy::CostBased),
    ] {
        let mut rng = StdRng::seed_from_u64(7);
        group.bench_function(name, |b| b.iter(|| select(strategy, black_box(&cands), black_box(&need), 0.1, &mut rng)));
    }
    group.finish();
}

/// The raw bytes of a 30-chunk chat stream followed by `data: [DONE]`.
fn stream_bytes() -> (Vec<u8>, usize) {
    let content = (1..=27).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ");
    let usage = switchyard::openai::TokenUsage::new(24, 27);
    let payloads = mock::chat_stream_payloads(
        "chatcmpl-0123456789abcdef0123456789abcdef",
        "gpt-4o-mini-2024-07-18",
        &content,
        Some(&usage),
    );
    assert_eq!(payloads.len(), 30, "role + 27 words + finish + usage");
    let mut out = Vec::new();
    for p in &payloads {
        out.extend_from_slice(&sse::data_event(p.as_bytes()));
    }
    out.extend_from_slice(sse::DONE);
    (out, payloads.len() + 1)
}

fn split_all(reads: &[&[u8]], expected: usize) -> usize {
    let mut s = EventSplitter::default();
    let mut n = 0;
    for r in reads {
        s.push(r);
        while let Some(e) = s.next_event() {
            black_box(&e);
            n += 1;
        }
    }
    debug_assert_eq!(n, expected);
    n
}

fn bench_sse(c: &mut Criterion) {
    let (bytes, events) = stream_bytes();
    // One event per read (upstreams flush each event), and fixed 128-byte reads.
    let per_event: Vec<&[u8]> = {
        let mut v = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let end = rest.windows(2).position(|w| w == b"\n\n").map_or(rest.len(), |i| i + 2);
            v.push(&rest[..end]);
            rest = &rest[end..];
        }
        v
    };
    assert_eq!(per_event.len(), events);
    let small: Vec<&[u8]> = bytes.chunks(128).collect();

    let mut group = c.benchmark_group("sse/30_chunk_stream");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("split/one_event_per_read", |b| b.iter(|| split_all(black_box(&per_event), events)));
    group.bench_function("split/128_byte_reads", |b| b.iter(|| split_all(black_box(&small), events)));
    group.bench_function("split+event_data/one_event_per_read", |b| {
        b.iter(|| {
            let mut s = EventSplitter::default();
            let mut total = 0;
            for r in black_box(&per_event) {
                s.push(r);
                while let Some(e) = s.next_event() {
                    total += sse::event_data(&e).map_or(0, |d| d.len());
                }
            }
            total
        })
    });
    group.finish();
}

fn bench_response(c: &mut Criterion) {
    let usage = TokenUsage { prompt_tokens: 24, completion_tokens: 60, total_tokens: 84, ..TokenUsage::default() };
    let typical = mock::chat_completion(
        "chatcmpl-0123456789abcdef0123456789abcdef",
        "gpt-4o-mini-2024-07-18",
        &"The quick brown fox jumps over the lazy dog. ".repeat(7),
        &usage,
    )
    .to_string();
    let long = mock::chat_completion(
        "chatcmpl-0123456789abcdef0123456789abcdef",
        "gpt-4o-mini-2024-07-18",
        &"The quick brown fox jumps over the \"lazy\" dog.\n".repeat(90),
        &usage,
    )
    .to_string();
    let mut group = c.benchmark_group("response/parse+usage");
    for (name, body) in [("typical", &typical), ("long", &long)] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new(name, body.len()), body, |b, body| {
            b.iter(|| ResponseView::parse(black_box(body.as_bytes())).ok().and_then(ResponseView::usage))
        });
    }
    group.finish();
}

fn bench_cost(c: &mut Criterion) {
    let plain = Price { input: 1.5e-7, output: 6e-7, ..Price::default() };
    let full = Price {
        input: 1.1e-6,
        output: 4.4e-6,
        cache_read: Some(2.75e-7),
        cache_write: Some(1.375e-6),
        reasoning: Some(4.4e-6),
        ..Price::default()
    };
    let u = TokenUsage {
        prompt_tokens: 1200,
        completion_tokens: 350,
        total_tokens: 1550,
        cache_read_input_tokens: 800,
        cache_creation_input_tokens: 100,
        reasoning_tokens: 200,
    };
    let mut group = c.benchmark_group("cost");
    group.bench_function("plain", |b| b.iter(|| black_box(&plain).cost(black_box(&u))));
    group.bench_function("cache+reasoning", |b| b.iter(|| black_box(&full).cost(black_box(&u))));
    group.finish();
}

fn bench_prompt_len(c: &mut Criterion) {
    let text: &'static [u8] = br#"{"model":"bench","temperature":0.2,"messages":[
            {"role":"system","content":"You are a helpful assistant that answers briefly."},
            {"role":"user","content":"What is the capital of France?"},
            {"role":"assistant","content":"Paris."},
            {"role":"user","content":[{"type":"text","text":"And of Italy? Answer in one word."}]},
            {"role":"assistant","content":"Rome."},
            {"role":"user","content":"Thanks. Now list three rivers in each country."}]}"#;
    let Ok(body) = RequestBody::parse(bytes::Bytes::from_static(text)) else { return };
    c.bench_function("prompt_len/6_messages", |b| b.iter(|| prompt_len(black_box(&body))));
    // What the request path does with every body: read its top level, write the upstream body.
    c.bench_function("request_body/parse+encode", |b| {
        b.iter(|| {
            RequestBody::parse(bytes::Bytes::from_static(black_box(text)))
                .and_then(|body| Ok(body.encode("gpt-4o-mini", &[])?))
                .map(|out| out.len())
        })
    });
}

/// What an in-process consumer pays per call on the embedded log: reading a response event
/// back from its JSON (the spend consumer, once asked), or only its spend facts (the budgets
/// consumer, always), and the spend row and rollup keys the spend consumer builds.
fn bench_event_read(c: &mut Criterion) {
    let json = br#"{"schema_version":1,"event_id":"0b3c8f8e-6a53-4d3e-9c3a-2f4b5b6c7d8e","type":"response","request_id":"5b0c8f8e-6a53-4d3e-9c3a-2f4b5b6c7d8e","gateway_id":"vm-1234","timestamp":"2026-11-28T10:00:01.000Z","call_type":"acompletion","requested_model":"gpt-4o-mini","model_group":"gpt-4o-mini","api_key_hash":"88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b","key_alias":"search-app","user":"ann","team_id":"team-1","end_user":null,"tags":["nightly"],"metadata":{"tags":["nightly"]},"deployment_id":"mini-1","provider":"openai","upstream_model":"gpt-4o-mini","api_base":"http://127.0.0.1:4010/v1","status":"success","http_status":200,"error_type":null,"error_message":null,"attempts":1,"retries":0,"fallbacks":0,"stream":false,"completed":true,"start_time":"2026-11-28T10:00:00.990Z","end_time":"2026-11-28T10:00:01.000Z","first_token_time":null,"duration_ms":10.0,"overhead_ms":0.5,"prompt_tokens":12,"completion_tokens":9,"total_tokens":21,"cache_read_input_tokens":0,"cache_creation_input_tokens":0,"reasoning_tokens":0,"cost":7.2e-06,"tokens_estimated":false,"cache_hit":false,"finish_reason":"stop","response":null}"#;
    c.bench_function("event/read_response", |b| {
        b.iter(|| switchyard::events::Event::from_json(black_box(json)).is_ok())
    });
    c.bench_function("event/read_spend_facts", |b| {
        b.iter(|| switchyard::budget::follow::SpendFacts::of(black_box(json)).is_some())
    });
    let Ok(switchyard::events::Event::Response(event)) = switchyard::events::Event::from_json(json) else { return };
    c.bench_function("event/spend_row_and_rollup_keys", |b| {
        b.iter(|| {
            let row = switchyard::clickhouse::rows::SpendLogRow::of(black_box(&event));
            switchyard::clickhouse::rows::rollup_keys(&row).len()
        })
    });
    // The alerts consumer, with LiteLLM's default alert types: every event goes through the rules.
    use switchyard::consumers::alerts::rules::{CallFacts, Rules};
    let mut rules = Rules::new(&switchyard::config::AlertingConfig::default());
    let mut out = Vec::new();
    c.bench_function("event/alert_rules", |b| {
        b.iter(|| {
            if let Some(facts) = CallFacts::of(black_box(json)) {
                rules.call(&facts, &mut out);
            }
            out.len()
        })
    });
}

criterion_group!(benches, bench_select, bench_sse, bench_response, bench_cost, bench_prompt_len, bench_event_read);
criterion_main!(benches);
