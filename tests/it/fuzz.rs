//! Untrusted input, broadly: thousands of generated and mutated bodies at every endpoint. Whatever
//! arrives, the answer is never a 5xx the upstream did not cause, always the OpenAI error body
//! when it is an error, and the process's memory stays bounded. Generated with proptest from a
//! fixed seed, so a failure reproduces.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};

use crate::support::{start, KEY};

const CONFIG: &str = r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}"}}
  - {model_name: e, litellm_params: {model: openai/text-embedding-3-small, api_base: "{mock}"}, model_info: {mode: embedding}}
router_settings: {num_retries: 0}
"#;

const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/engines/g/chat/completions",
];

/// Numbers that have broken gateways: huge, tiny, negative, fractional where integers go.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite()).prop_map(Value::from),
        prop::sample::select(vec![0.0, -0.0, 1e300, -1e300, 1e19, 1.8e19, 4e9, 1e-300, 0.5, -1.0])
            .prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "\\PC{0,24}".prop_map(Value::String),
        prop::sample::select(vec!["g", "e", "", "1e300", "30s", "-5", "\u{0}", "user", "assistant"])
            .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body that is mostly right in shape, with any field possibly wrong in type or value.
fn body() -> impl Strategy<Value = Value> {
    let keys = vec![
        "model",
        "messages",
        "prompt",
        "input",
        "stream",
        "stream_options",
        "timeout",
        "stream_timeout",
        "max_tokens",
        "n",
        "temperature",
        "tools",
        "user",
        "metadata",
        "stop",
        "response_format",
    ];
    let good = json!({
        "model": "g",
        "messages": [{"role": "user", "content": "hi"}],
        "prompt": "hi",
        "input": ["hi"],
    });
    let value = prop_oneof![2 => any_json(), 1 => number()];
    (prop::collection::vec((prop::sample::select(keys), value), 0..6), any::<u8>()).prop_map(move |(fields, keep)| {
        let mut body: Map<String, Value> = good.as_object().cloned().unwrap_or_default();
        // Drop some of the good fields too (each one time in four).
        for (i, key) in ["model", "messages", "prompt", "input"].iter().enumerate() {
            if (keep >> (2 * i)) & 3 == 0 {
                body.remove(*key);
            }
        }
        for (key, value) in fields {
            body.insert(key.to_string(), value);
        }
        Value::Object(body)
    })
}

/// Raw bytes: a valid body with bytes flipped, cut, or duplicated.
fn mutated_bytes() -> impl Strategy<Value = Vec<u8>> {
    let base =
        br#"{"model":"g","messages":[{"role":"user","content":"hello"}],"stream":false,"max_tokens":5}"#.to_vec();
    (prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6), any::<prop::sample::Index>()).prop_map(
        move |(flips, cut)| {
            let mut bytes = base.clone();
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let end = cut.index(bytes.len() + 1).max(bytes.len() / 2);
            bytes.truncate(end);
            bytes
        },
    )
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Checks one answer: below 500, and an error answer carries the OpenAI error body.
async fn check(resp: reqwest::Response, what: &str) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert!(status < 500, "{what} → {status}: {text}");
    if status >= 400 {
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what} → {status}, not JSON: {text}"));
        let err = &body["error"];
        assert!(
            err["message"].is_string() && err.get("type").is_some() && err.get("param").is_some(),
            "{what}: {text}"
        );
        assert_eq!(err["code"], json!(status.to_string()), "{what}: {text}");
    }
}

#[actix_web::test]
async fn thousands_of_bad_bodies_never_get_a_5xx_or_a_panic() {
    let gw = start(CONFIG).await;
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let bodies = body();
    let raw = mutated_bytes();
    let warm_up_rss = {
        for _ in 0..200 {
            let _ = gw.chat("g").await;
        }
        rss_kib()
    };
    let mut sent = 0;
    for round in 0..2500 {
        let path = PATHS[round % PATHS.len()];
        let url = gw.url(path);
        if round % 3 == 0 {
            let bytes = raw.new_tree(&mut runner).unwrap().current();
            let resp = gw.http.post(&url).bearer_auth(KEY).body(bytes.clone()).send().await.unwrap();
            check(resp, &format!("POST {path} {}", String::from_utf8_lossy(&bytes))).await;
        } else {
            let body = bodies.new_tree(&mut runner).unwrap().current();
            let resp = gw.http.post(&url).bearer_auth(KEY).json(&body).send().await.unwrap();
            check(resp, &format!("POST {path} {body}")).await;
        }
        sent += 1;
    }
    // Random paths, methods and queries.
    let paths = "/[a-z/_.%0-9]{0,40}(\\?[a-z=&]{0,20})?";
    for round in 0..500 {
        let path = paths.new_tree(&mut runner).unwrap().current();
        let method = if round % 2 == 0 { reqwest::Method::GET } else { reqwest::Method::DELETE };
        let resp = gw.http.request(method, gw.url(&path)).bearer_auth(KEY).send().await.unwrap();
        check(resp, &path).await;
        sent += 1;
    }
    assert!(sent >= 3000);
    // Still serving, and memory did not grow with what was sent.
    assert_eq!(gw.chat("g").await.status(), 200);
    let grown = rss_kib().saturating_sub(warm_up_rss);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB over {sent} requests");
    gw.stop().await;
}

/// Management routes with bodies of every shape: whatever arrives, never a 5xx, and an error
/// is always the OpenAI error body (query strings and path parameters included).
#[actix_web::test]
async fn key_management_takes_any_body_without_a_5xx() {
    let gw = start(CONFIG).await;
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[9; 32]));
    let post_paths = [
        "/key/generate",
        "/key/update",
        "/key/delete",
        "/key/block",
        "/key/regenerate",
        "/key/sk-x/regenerate",
        "/key/sk-x/reset_spend",
        "/team/new",
        "/team/update",
        "/team/delete",
        "/team/member_add",
        "/team/member_update",
        "/team/member_delete",
        "/team/block",
        "/user/new",
        "/user/update",
        "/user/delete",
        "/customer/new",
        "/customer/update",
        "/end_user/block",
        "/customer/delete",
    ];
    let fields = vec![
        "key",
        "keys",
        "key_aliases",
        "key_alias",
        "team_id",
        "team_ids",
        "user_id",
        "user_ids",
        "member",
        "models",
        "max_budget",
        "soft_budget",
        "budget_duration",
        "duration",
        "rpm_limit",
        "tpm_limit",
        "metadata",
        "model_max_budget",
        "reset_to",
        "grace_period",
        "new_key",
        "user_role",
        "members_with_roles",
        "spend",
        "allowed_model_region",
        "budget_id",
        "max_budget_in_team",
        "blocked",
        "auto_create_key",
        "password",
    ];
    let bodies = (prop::collection::vec((prop::sample::select(fields), any_json()), 0..5))
        .prop_map(|f| Value::Object(f.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    for round in 0..1200 {
        let path = post_paths[round % post_paths.len()];
        let body = if round % 10 == 0 { json!([1, 2]) } else { bodies.new_tree(&mut runner).unwrap().current() };
        let resp = gw.http.post(gw.url(path)).bearer_auth(KEY).json(&body).send().await.unwrap();
        check(resp, &format!("POST {path} {body}")).await;
    }
    let queries = "[a-z_]{1,10}=[a-z0-9%-]{0,12}(&[a-z_]{1,10}=[-0-9a-z]{0,6}){0,3}";
    for round in 0..300 {
        let path = ["/key/info", "/key/list", "/team/info", "/team/list", "/user/info", "/user/list", "/customer/info"]
            [round % 7];
        let query = queries.new_tree(&mut runner).unwrap().current();
        let resp = gw.http.get(gw.url(&format!("{path}?{query}"))).bearer_auth(KEY).send().await.unwrap();
        check(resp, &format!("GET {path}?{query}")).await;
    }
    for query in ["page=abc", "size=-1", "page=99999999999999999999", "return_full_object=maybe"] {
        let resp = gw.http.get(gw.url(&format!("/key/list?{query}"))).bearer_auth(KEY).send().await.unwrap();
        check(resp, query).await;
    }
    let huge = vec![b'x'; 2 << 20];
    let resp = gw.http.post(gw.url("/key/generate")).bearer_auth(KEY).body(huge).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    check(resp, "a 2 MB body").await;
    gw.stop().await;
}
