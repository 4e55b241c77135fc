//! The key table at scale: 1,000,000 virtual keys in memory, and what a request pays to find
//! its caller and the accounts and limits it is charged to.
//!
//! Run: `cargo bench --bench keys -- --warm-up-time 1 --measurement-time 3`
//!
//! Prints the resident memory the table takes (VmRSS before and after loading it), then:
//! - `identify/*`: `auth::Auth::identify` from the request headers: SHA-256 of the presented
//!   key and the table lookup (a virtual key, the master key, an unknown key);
//! - `admission/charges_and_limits`: `budget::Charges::of` + `limits::limits_of` for a key with
//!   a team, a user, a budget and limits (what a virtual-key request adds before routing).

use std::hint::black_box;
use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use criterion::{criterion_group, criterion_main, Criterion};
use jiff::Timestamp;

use switchyard::auth::entity::{Entity, KeyRecord, Limits};
use switchyard::auth::{key, Auth, MasterKey, Table};
use switchyard::budget::{Charges, Identity};
use switchyard::limits::limits_of;

const KEYS: usize = 1_000_000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The raw key of key number `i` (deterministic, so the benchmark can present one).
fn raw(i: usize) -> String {
    format!("sk-bench-{i:012}")
}

fn table() -> Arc<Table> {
    let table = Arc::new(Table::default());
    let now = Timestamp::now();
    let before = rss_kib();
    for i in 0..KEYS {
        let raw = raw(i);
        let mut k = KeyRecord::new(key::hash(&raw), key::key_name(&raw), now);
        k.key_alias = Some(format!("app-{i}"));
        k.team_id = Some(format!("team-{}", i % 1000));
        k.user_id = Some(format!("user-{}", i % 10_000));
        k.models = vec!["gpt-4o".into(), "gpt-4o-mini".into()];
        k.limits =
            Limits { max_budget: Some(100.0), rpm_limit: Some(1000), tpm_limit: Some(100_000), ..Limits::default() };
        let entity = Entity::Key(k);
        table.apply(&entity.id(), Some(entity));
    }
    let after = rss_kib();
    println!(
        "key table: {KEYS} keys, RSS {:.0} MiB -> {:.0} MiB: {:.0} bytes per key",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before) * 1024) as f64 / KEYS as f64
    );
    table
}

fn bearer(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static("authorization"), HeaderValue::from_str(&format!("Bearer {key}")).unwrap());
    headers
}

fn bench_keys(c: &mut Criterion) {
    let auth = Auth { master: Some(MasterKey::new("sk-master")), table: table() };
    let virtual_key = bearer(&raw(KEYS / 2));
    let master = bearer("sk-master");
    let unknown = bearer("sk-not-in-the-table");
    let mut group = c.benchmark_group("identify");
    group.bench_function("virtual_key", |b| b.iter(|| black_box(auth.identify(black_box(&virtual_key)).is_ok())));
    group.bench_function("master_key", |b| b.iter(|| black_box(auth.identify(black_box(&master)).is_ok())));
    group.bench_function("unknown_key", |b| b.iter(|| black_box(auth.identify(black_box(&unknown)).is_err())));
    group.finish();

    let caller = auth.identify(&virtual_key).unwrap();
    let k = caller.key.clone().unwrap();
    c.bench_function("admission/charges_and_limits", |b| {
        b.iter(|| {
            let who = Identity {
                key_hash: Some(&k.token),
                team_id: k.team_id.as_deref(),
                user_id: k.user_id.as_deref(),
                end_user: None,
                model_group: Some("gpt-4o"),
            };
            black_box((Charges::of(&auth.table, &who).0.len(), limits_of(&auth.table, &who).len()))
        })
    });
}

criterion_group!(benches, bench_keys);
criterion_main!(benches);
