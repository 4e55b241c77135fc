//! Virtual keys, teams, users and end users through HTTP: the management endpoints, LiteLLM's
//! checks with their statuses, types and messages, budgets, rate limits, and the key table
//! rebuilt from the log.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{chat_body, error_of, header, start, Gateway, KEY};

/// `priced` costs 0.001 USD per token in and out: the mock's "hello there" (2 words in, 9 out)
/// costs 0.011. `other` costs nothing.
const CONFIG: &str = r#"
model_list:
  - model_name: priced
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{mock}", input_cost_per_token: 0.001, output_cost_per_token: 0.001}
  - model_name: other
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{mock}", input_cost_per_token: 0, output_cost_per_token: 0}
  - model_name: "openai/*"
    litellm_params: {model: "openai/*", api_base: "{mock}"}
router_settings: {num_retries: 0}
"#;

async fn post_as(gw: &Gateway, key: &str, path: &str, body: &Value) -> reqwest::Response {
    gw.http.post(gw.url(path)).bearer_auth(key).json(body).send().await.unwrap()
}

async fn get_as(gw: &Gateway, key: &str, path: &str) -> reqwest::Response {
    gw.http.get(gw.url(path)).bearer_auth(key).send().await.unwrap()
}

async fn ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// A new key with these fields; returns (raw key, answer).
async fn generate(gw: &Gateway, fields: Value) -> (String, Value) {
    let body = ok(gw.post("/key/generate", &fields).await).await;
    (body["key"].as_str().unwrap().to_string(), body)
}

async fn chat_as(gw: &Gateway, key: &str, model: &str) -> reqwest::Response {
    post_as(gw, key, "/v1/chat/completions", &chat_body(model)).await
}

#[actix_web::test]
async fn a_generated_key_calls_its_models_and_only_its_hash_is_kept() {
    let gw = start(CONFIG).await;
    let (key, created) =
        generate(&gw, json!({"key_alias": "app", "models": ["priced", "openai/*"], "metadata": {"team": "x"}})).await;
    assert!(key.starts_with("sk-") && key.len() >= 25, "{key}");
    let hash = created["token"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    assert_eq!(created["key_alias"], "app");
    assert_eq!(created["key_name"], format!("sk-...{}", &key[key.len() - 4..]));

    let resp = chat_as(&gw, &key, "priced").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-litellm-key-spend"), "0");
    let resp = chat_as(&gw, &key, "openai/gpt-4o").await;
    assert_eq!(resp.status(), 200, "a wildcard entry allows the models it matches");

    // The key may read its own info, and sees its spend.
    let info = ok(get_as(&gw, &key, "/key/info").await).await;
    assert_eq!(info["info"]["key_alias"], "app");
    assert!((info["info"]["spend"].as_f64().unwrap() - 0.011).abs() < 1e-9, "{info}");
    let models = ok(get_as(&gw, &key, "/v1/models").await).await;
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"priced") && !ids.contains(&"other"), "{ids:?}");

    // The events carry the hash and the alias; no file and no metric holds the raw key.
    let events = gw.events(4).await;
    let request = events.iter().find(|e| e["type"] == "request").unwrap();
    assert_eq!((request["api_key_hash"].as_str(), request["key_alias"].as_str()), (Some(hash.as_str()), Some("app")));
    let response = events.iter().find(|e| e["type"] == "response").unwrap();
    assert_eq!(response["api_key_hash"], hash.as_str());
    let dir = gw.events_dir.clone().unwrap();
    let mut found_hash = false;
    for file in walk(&dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!contains(&bytes, key.as_bytes()), "{} holds the raw key", file.display());
        found_hash |= contains(&bytes, hash.as_bytes());
    }
    assert!(found_hash, "the key log holds the key's hash");
    assert!(!gw.metrics().await.contains(&key));
    // LiteLLM's per-key series carry the key's hash and alias.
    gw.metrics_with(&["litellm_requests_metric_total", &format!("hashed_api_key=\"{hash}\""), "api_key_alias=\"app\""])
        .await;
    gw.stop().await;
}

/// The first `n` records of a topic of the gateway's embedded log (waits up to 5 s for them).
async fn records(gw: &Gateway, topic: &str, n: usize) -> Vec<Value> {
    use switchyard::events::topics::{Start, Topics};
    let dir = gw.events_dir.clone().unwrap();
    let config =
        switchyard::config::Config::from_yaml(&format!("event_log: {{path: {}}}", dir.display()), &|_| None).unwrap();
    let mut follower = Topics::open(&config.event_log).unwrap().follow(topic, Start::Beginning).unwrap();
    let mut out = Vec::new();
    for _ in 0..50 {
        for record in follower.next_batch(100, Duration::from_millis(100)).await.unwrap() {
            out.extend(record.value.map(|v| serde_json::from_slice::<Value>(&v).unwrap()));
        }
        if out.len() >= n {
            break;
        }
    }
    out
}

/// Every record of `<prefix>.keys` matches schemas/events/keys.json.
async fn assert_keys_records_match_their_schema(yaml: &str) {
    use switchyard::events::topics::{Start, Topics};
    let yaml = yaml.replace("{mock}", "http://127.0.0.1:9");
    let config = switchyard::config::Config::from_yaml(&yaml, &|_| None).unwrap();
    let topics = Topics::open(&config.event_log).unwrap();
    let mut follower = topics.follow("keys", Start::Beginning).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/events/keys.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut seen = 0;
    while !follower.caught_up() || seen == 0 {
        for record in follower.next_batch(100, Duration::from_millis(200)).await.unwrap() {
            let Some(value) = record.value else { continue };
            let json: Value = serde_json::from_slice(&value).unwrap();
            let errors: Vec<String> =
                validator.iter_errors(&json).map(|e| format!("{e} at {}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{} does not match keys.json: {errors:?}\n{json}", record.key);
            seen += 1;
        }
    }
    assert!(seen >= 4, "the key log holds the writes: {seen}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[actix_web::test]
async fn keys_are_checked_in_litellms_order_with_its_messages() {
    let gw = start(CONFIG).await;
    let err = error_of(chat_as(&gw, "sk-nope-nope", "priced").await, 401).await;
    assert_eq!(err["type"], "token_not_found_in_db");
    assert!(err["message"].as_str().unwrap().contains("Unable to find token in cache"), "{err}");
    let err = error_of(chat_as(&gw, "abcdefghijkl", "priced").await, 401).await;
    assert_eq!(
        err["message"],
        "Authentication Error, LiteLLM Virtual Key expected. Received=abcd****ijkl, expected to start with 'sk-'."
    );
    let resp = gw.http.post(gw.url("/v1/chat/completions")).json(&chat_body("priced")).send().await.unwrap();
    assert_eq!(error_of(resp, 401).await["message"], "Authentication Error, No api key passed in.");

    let (key, _) = generate(&gw, json!({"models": ["priced"]})).await;
    let err = error_of(chat_as(&gw, &key, "other").await, 401).await;
    assert_eq!(err["type"], "key_model_access_denied");
    assert_eq!(
        err["message"],
        "Authentication Error, key not allowed to access model. This key can only access models=['priced']. Tried to access other"
    );

    ok(gw.post("/key/block", &json!({"key": key})).await).await;
    let err = error_of(chat_as(&gw, &key, "priced").await, 401).await;
    assert_eq!(err["message"], "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin.");
    ok(gw.post("/key/unblock", &json!({"key": key})).await).await;
    assert_eq!(chat_as(&gw, &key, "priced").await.status(), 200);

    let (short, created) = generate(&gw, json!({"duration": "1s"})).await;
    assert!(created["expires"].is_string(), "{created}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = error_of(chat_as(&gw, &short, "priced").await, 401).await;
    assert_eq!(err["type"], "expired_key");
    assert!(err["message"].as_str().unwrap().starts_with("Authentication Error - Expired Key. Key Expiry time"));

    // A virtual key is not an admin.
    let err = error_of(post_as(&gw, &key, "/key/generate", &json!({})).await, 401).await;
    assert!(err["message"].as_str().unwrap().contains("proxy_admin"), "{err}");
    // A caller-chosen key must start with sk-; aliases are unique; budgets are not negative.
    let err = error_of(gw.post("/key/generate", &json!({"key": "abcdefghijkl"})).await, 400).await;
    assert_eq!(err["message"], "Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: abcd****ijkl");
    generate(&gw, json!({"key_alias": "dup"})).await;
    error_of(gw.post("/key/generate", &json!({"key_alias": "dup"})).await, 400).await;
    let err = error_of(gw.post("/key/generate", &json!({"max_budget": -1})).await, 400).await;
    assert_eq!(err["message"], "max_budget cannot be negative. Received: -1");
    let err = error_of(gw.post("/key/generate", &json!({"rpm_limit": "many"})).await, 400).await;
    assert_eq!(err["param"], "rpm_limit");
    gw.stop().await;
}

#[actix_web::test]
async fn a_key_over_its_budget_gets_429_budget_exceeded() {
    let gw = start(CONFIG).await;
    let (key, created) = generate(&gw, json!({"max_budget": 0.02, "soft_budget": 0.015})).await;
    for _ in 0..2 {
        let resp = chat_as(&gw, &key, "priced").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-litellm-key-max-budget"), "0.02");
    }
    let err = error_of(chat_as(&gw, &key, "priced").await, 429).await;
    assert_eq!(err["type"], "budget_exceeded");
    assert_eq!(err["message"], "Budget has been exceeded! Current cost: 0.022, Max budget: 0.02");
    // Crossing the soft budget and the budget is reported on the alerts topic.
    let alerts = records(&gw, "alerts", 2).await;
    let events: Vec<&str> = alerts.iter().map(|a| a["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["soft_budget_crossed", "budget_crossed"]);
    assert_eq!(alerts[0]["account"], format!("key:{}", created["token"].as_str().unwrap()));
    assert_eq!((alerts[0]["budget"].as_f64(), alerts[1]["spend"].as_f64()), (Some(0.015), Some(0.022)));
    // A model that costs nothing skips the budget, as in LiteLLM.
    assert_eq!(chat_as(&gw, &key, "other").await.status(), 200);
    // Resetting the spend lets the key call again.
    let hash = ok(get_as(&gw, &key, "/key/info").await).await["info"]["token"].as_str().unwrap().to_string();
    let reset = ok(gw.post(&format!("/key/{hash}/reset_spend"), &json!({"reset_to": 0.0})).await).await;
    assert_eq!(reset["spend"], 0.0);
    assert_eq!(chat_as(&gw, &key, "priced").await.status(), 200);
    gw.stop().await;
}

#[actix_web::test]
async fn a_key_over_its_rpm_limit_gets_litellms_429() {
    let gw = start(CONFIG).await;
    let (key, _) = generate(&gw, json!({"rpm_limit": 2, "tpm_limit": 1000})).await;
    let resp = chat_as(&gw, &key, "priced").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-api_key-limit-requests"), "2");
    assert_eq!(header(&resp, "x-ratelimit-api_key-remaining-requests"), "1");
    let second = chat_as(&gw, &key, "priced").await;
    if second.status() == 429 {
        // The minute turned between the calls; the limit is per UTC minute.
        return gw.stop().await;
    }
    let resp = chat_as(&gw, &key, "priced").await;
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(header(&resp, "rate_limit_type"), "requests");
    let err = error_of(resp, 429).await;
    let message = err["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit exceeded for api_key: ")
            && message.contains("Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: "),
        "{message}"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn teams_members_and_their_budgets() {
    let gw = start(CONFIG).await;
    let team = ok(gw.post("/team/new", &json!({"team_alias": "search", "models": ["priced"], "max_budget": 0.015, "members_with_roles": [{"role": "admin", "user_id": "ann"}]})).await).await;
    let team_id = team["team_id"].as_str().unwrap().to_string();
    let (key, _) = generate(&gw, json!({"team_id": team_id, "user_id": "ann"})).await;
    let err = error_of(chat_as(&gw, &key, "other").await, 401).await;
    assert_eq!(err["type"], "team_model_access_denied");
    assert_eq!(chat_as(&gw, &key, "priced").await.status(), 200);
    // 0.011 spent; the team is over only once spend > max.
    assert_eq!(chat_as(&gw, &key, "priced").await.status(), 200);
    let err = error_of(chat_as(&gw, &key, "priced").await, 429).await;
    assert_eq!(
        err["message"],
        format!("Budget has been exceeded! Team={team_id} Current cost: 0.022, Max budget: 0.015")
    );

    let info = ok(gw.get(&format!("/team/info?team_id={team_id}")).await).await;
    assert_eq!(info["team_info"]["team_alias"], "search");
    assert_eq!(info["keys"].as_array().unwrap().len(), 1);
    assert_eq!(info["team_memberships"][0]["user_id"], "ann");
    assert!((info["team_info"]["spend"].as_f64().unwrap() - 0.022).abs() < 1e-9);

    ok(gw.post("/team/update", &json!({"team_id": team_id, "max_budget": 10})).await).await;
    ok(gw
        .post(
            "/team/member_add",
            &json!({"team_id": team_id, "member": {"role": "user", "user_id": "bob"}, "max_budget_in_team": 0.001}),
        )
        .await)
    .await;
    error_of(gw.post("/team/member_add", &json!({"team_id": team_id, "member": {"user_id": "bob"}})).await, 400).await;
    let (bobs, _) = generate(&gw, json!({"team_id": team_id, "user_id": "bob"})).await;
    assert_eq!(chat_as(&gw, &bobs, "priced").await.status(), 200);
    let err = error_of(chat_as(&gw, &bobs, "priced").await, 429).await;
    assert_eq!(
        err["message"],
        format!("Budget has been exceeded! User=bob in Team={team_id} Current cost: 0.011, Max budget: 0.001")
    );
    ok(gw.post("/team/member_update", &json!({"team_id": team_id, "user_id": "bob", "max_budget_in_team": 1.0})).await)
        .await;
    assert_eq!(chat_as(&gw, &bobs, "priced").await.status(), 200);

    ok(gw.post("/team/block", &json!({"team_id": team_id})).await).await;
    let err = error_of(chat_as(&gw, &key, "priced").await, 401).await;
    assert_eq!(
        err["message"],
        format!("Authentication Error, Team={team_id} is blocked. Update via `/team/unblock` if you're an admin.")
    );
    ok(gw.post("/team/unblock", &json!({"team_id": team_id})).await).await;
    ok(gw.post("/team/member_delete", &json!({"team_id": team_id, "user_id": "bob"})).await).await;
    let list = ok(gw.get("/team/list").await).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let deleted = ok(gw.post("/team/delete", &json!({"team_ids": [team_id]})).await).await;
    assert_eq!(deleted["deleted_teams"][0], team_id.as_str());
    // The team's keys went with it.
    error_of(chat_as(&gw, &key, "priced").await, 401).await;
    gw.stop().await;
}

#[actix_web::test]
async fn users_get_a_key_and_admins_manage_through_theirs() {
    let gw = start(CONFIG).await;
    let user = ok(gw
        .post(
            "/user/new",
            &json!({"user_id": "ops", "user_role": "proxy_admin", "user_email": "ops@example.com", "max_budget": 5}),
        )
        .await)
    .await;
    let admin_key = user["key"].as_str().unwrap().to_string();
    assert_eq!(user["user_role"], "proxy_admin");
    // A proxy_admin's key manages keys.
    let made = ok(post_as(&gw, &admin_key, "/key/generate", &json!({"key_alias": "by-ops"})).await).await;
    assert!(made["key"].is_string());
    let plain = ok(gw.post("/user/new", &json!({"user_id": "dev", "max_budget": 0.001})).await).await;
    let dev_key = plain["key"].as_str().unwrap().to_string();
    assert_eq!(chat_as(&gw, &dev_key, "priced").await.status(), 200);
    let err = error_of(chat_as(&gw, &dev_key, "priced").await, 429).await;
    assert_eq!(err["message"], "ExceededBudget: User=dev over budget. Spend=0.011, Budget=0.001");
    // A user reads its own info, not another's.
    let info = ok(get_as(&gw, &dev_key, "/user/info").await).await;
    assert_eq!(info["user_id"], "dev");
    assert_eq!(info["keys"].as_array().unwrap().len(), 1);
    error_of(get_as(&gw, &dev_key, "/user/info?user_id=ops").await, 403).await;
    // A proxy_admin_viewer's key reads what admins manage, and changes nothing.
    let viewer =
        ok(gw.post("/user/new", &json!({"user_id": "auditor", "user_role": "proxy_admin_viewer"})).await).await;
    let viewer_key = viewer["key"].as_str().unwrap().to_string();
    assert_eq!(ok(get_as(&gw, &viewer_key, "/key/list").await).await["total_count"], 4);
    error_of(post_as(&gw, &viewer_key, "/key/generate", &json!({})).await, 401).await;
    ok(gw.post("/user/delete", &json!({"user_ids": ["auditor"]})).await).await;
    let no_key = ok(gw.post("/user/new", &json!({"user_id": "nokey", "auto_create_key": false})).await).await;
    assert!(no_key.get("key").is_none(), "{no_key}");
    let list = ok(gw.get("/user/list").await).await;
    assert_eq!(list["total"], 3);
    ok(gw.post("/user/update", &json!({"user_id": "dev", "max_budget": 100})).await).await;
    assert_eq!(chat_as(&gw, &dev_key, "priced").await.status(), 200);
    ok(gw.post("/user/delete", &json!({"user_ids": ["dev"]})).await).await;
    error_of(chat_as(&gw, &dev_key, "priced").await, 401).await;
    gw.stop().await;
}

#[actix_web::test]
async fn end_users_have_budgets_and_can_be_blocked() {
    let gw = start(CONFIG).await;
    let (key, _) = generate(&gw, json!({})).await;
    let err =
        error_of(gw.post("/customer/new", &json!({"user_id": "c1", "max_budget": 1, "budget_id": "b"})).await, 400)
            .await;
    assert_eq!(err["message"], "Set either 'max_budget' or 'budget_id', not both.");
    ok(gw.post("/customer/new", &json!({"user_id": "c1", "max_budget": 0.005})).await).await;
    let body = json!({"model": "priced", "user": "c1", "messages": [{"role": "user", "content": "hello there"}]});
    assert_eq!(post_as(&gw, &key, "/v1/chat/completions", &body).await.status(), 200);
    let err = error_of(post_as(&gw, &key, "/v1/chat/completions", &body).await, 429).await;
    assert_eq!(err["message"], "ExceededBudget: End User=c1 over budget. Spend=0.011, Budget=0.005");
    let info = ok(gw.get("/end_user/info?end_user_id=c1").await).await;
    assert_eq!(info["litellm_budget_table"]["max_budget"], 0.005);
    ok(gw.post("/customer/update", &json!({"user_id": "c1", "max_budget": 10})).await).await;
    ok(gw.post("/customer/block", &json!({"user_ids": ["c1"]})).await).await;
    let err = error_of(post_as(&gw, &key, "/v1/chat/completions", &body).await, 401).await;
    assert!(err["message"].as_str().unwrap().contains("End User=c1 is blocked"), "{err}");
    ok(gw.post("/customer/unblock", &json!({"user_ids": ["c1"]})).await).await;
    assert_eq!(post_as(&gw, &key, "/v1/chat/completions", &body).await.status(), 200);
    assert_eq!(ok(gw.get("/customer/list").await).await.as_array().unwrap().len(), 1);
    ok(gw.post("/customer/delete", &json!({"user_ids": ["c1"]})).await).await;
    error_of(gw.get("/customer/info?end_user_id=c1").await, 404).await;
    gw.stop().await;
}

#[actix_web::test]
async fn keys_are_listed_updated_regenerated_and_deleted() {
    let gw = start(CONFIG).await;
    for i in 0..5 {
        generate(&gw, json!({"key_alias": format!("k{i}"), "user_id": if i < 3 { "u1" } else { "u2" }})).await;
    }
    let page = ok(gw.get("/key/list?page=2&size=2").await).await;
    assert_eq!(
        (page["total_count"].as_u64(), page["current_page"].as_u64(), page["total_pages"].as_u64()),
        (Some(5), Some(2), Some(3))
    );
    assert_eq!(page["keys"].as_array().unwrap().len(), 2);
    let mine = ok(gw.get("/key/list?user_id=u2&return_full_object=true").await).await;
    assert_eq!(mine["total_count"], 2);
    assert_eq!(mine["keys"][0]["key_alias"], "k3");

    let (key, created) = generate(&gw, json!({"key_alias": "rotating", "max_budget": 3})).await;
    let updated = ok(gw.post("/key/update", &json!({"key": key, "max_budget": 4, "models": ["priced"]})).await).await;
    assert_eq!((updated["max_budget"].as_f64(), updated["key_alias"].as_str()), (Some(4.0), Some("rotating")));
    assert_eq!(chat_as(&gw, &key, "priced").await.status(), 200);

    let hash = created["token"].as_str().unwrap();
    let fresh = ok(gw.post(&format!("/key/{hash}/regenerate"), &json!({"grace_period": "1h"})).await).await;
    let new_key = fresh["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    assert_eq!((fresh["max_budget"].as_f64(), fresh["key_alias"].as_str()), (Some(4.0), Some("rotating")));
    assert!((fresh["spend"].as_f64().unwrap() - 0.011).abs() < 1e-9, "the spend carries over: {fresh}");
    // Both work during the grace period; the old one spends on the new one's budget.
    assert_eq!(chat_as(&gw, &new_key, "priced").await.status(), 200);
    assert_eq!(chat_as(&gw, &key, "priced").await.status(), 200);
    let info = ok(get_as(&gw, &new_key, "/key/info").await).await;
    assert!((info["info"]["spend"].as_f64().unwrap() - 0.033).abs() < 1e-9, "{info}");
    // Without a grace period the old key stops at once.
    let newest = ok(gw.post("/key/regenerate", &json!({"key": new_key})).await).await;
    error_of(chat_as(&gw, &new_key, "priced").await, 401).await;
    let newest_key = newest["key"].as_str().unwrap().to_string();
    assert_eq!(chat_as(&gw, &newest_key, "priced").await.status(), 200);

    let deleted = ok(gw.post("/key/delete", &json!({"key_aliases": ["k0", "k1"]})).await).await;
    assert_eq!(deleted["deleted_keys"], json!(["k0", "k1"]));
    error_of(gw.post("/key/delete", &json!({"keys": ["sk-not-a-key"]})).await, 404).await;
    let deleted = ok(gw.post("/key/delete", &json!({"keys": [newest_key]})).await).await;
    assert_eq!(deleted["deleted_keys"].as_array().unwrap().len(), 1);
    error_of(chat_as(&gw, &newest_key, "priced").await, 401).await;
    assert_eq!(ok(gw.get("/key/list").await).await["total_count"], 3);
    gw.stop().await;
}

#[actix_web::test]
async fn a_restarted_gateway_rebuilds_the_same_table_and_spend() {
    let dir = std::env::temp_dir().join(format!("switchyard-keys-{}", uuid::Uuid::new_v4()));
    let config = format!("{CONFIG}\nevent_log: {{path: {}}}\ngeneral_settings: {{master_key: {KEY}}}\n", dir.display());
    let gw = start(&config).await;
    let (key, _) = generate(&gw, json!({"key_alias": "durable", "max_budget": 1})).await;
    let team = ok(gw.post("/team/new", &json!({"team_id": "t-durable"})).await).await;
    assert_eq!(team["team_id"], "t-durable");
    assert_eq!(chat_as(&gw, &key, "priced").await.status(), 200);
    ok(gw.post("/key/block", &json!({"key": key})).await).await;
    ok(gw.post("/key/unblock", &json!({"key": key})).await).await;
    // Let the publisher write the call's events before stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop().await;
    assert_keys_records_match_their_schema(&config).await;

    let gw = start(&config).await;
    for _ in 0..100 {
        if gw.http.get(gw.url("/health/readiness")).send().await.unwrap().status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = ok(get_as(&gw, &key, "/key/info").await).await;
    assert_eq!((info["info"]["key_alias"].as_str(), info["info"]["blocked"].as_bool()), (Some("durable"), Some(false)));
    assert!((info["info"]["spend"].as_f64().unwrap() - 0.011).abs() < 1e-9, "spend is rebuilt from the events: {info}");
    assert_eq!(ok(gw.get("/team/info?team_id=t-durable").await).await["team_id"], "t-durable");
    assert_eq!(chat_as(&gw, &key, "priced").await.status(), 200);
    gw.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_web::test]
async fn routes_per_key_model_limits_and_parallel_limits() {
    let gw = start(CONFIG).await;
    let (chat_only, _) = generate(&gw, json!({"allowed_routes": ["/chat/completions"]})).await;
    assert_eq!(chat_as(&gw, &chat_only, "priced").await.status(), 200);
    let err = error_of(get_as(&gw, &chat_only, "/v1/models").await, 401).await;
    assert!(err["message"].as_str().unwrap().contains("Only allowed to call routes: ['/chat/completions']"), "{err}");

    let (per_model, _) = generate(&gw, json!({"model_rpm_limit": {"priced": 1}})).await;
    let first = chat_as(&gw, &per_model, "priced").await.status().as_u16();
    let second = chat_as(&gw, &per_model, "priced").await;
    if first == 200 && second.status() == 429 {
        let err = error_of(second, 429).await;
        assert!(err["message"].as_str().unwrap().starts_with("Rate limit exceeded for model_per_key: "), "{err}");
    } else {
        // The two calls straddled a minute: the second opened a new window.
        assert_eq!((first, second.status().as_u16()), (200, 200));
    }
    assert_eq!(chat_as(&gw, &per_model, "other").await.status(), 200, "other models are not limited");

    // One parallel request: of 6 concurrent slow calls, some are refused, none fails otherwise.
    let (single, _) = generate(&gw, json!({"max_parallel_requests": 1})).await;
    let body = json!({"model": "openai/slow-300ms", "messages": [{"role": "user", "content": "hi"}]});
    let calls = (0..6).map(|_| post_as(&gw, &single, "/v1/chat/completions", &body));
    let statuses: Vec<u16> = futures_util::future::join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    // The slots are given back.
    assert_eq!(post_as(&gw, &single, "/v1/chat/completions", &body).await.status(), 200);
    gw.stop().await;
}

#[actix_web::test]
async fn spend_endpoints_answer_from_the_in_process_rollups_and_users_see_their_own() {
    let gw = start(CONFIG).await;
    let mine = ok(gw.post("/user/new", &json!({"user_id": "ann"})).await).await["key"].as_str().unwrap().to_string();
    let (theirs, _) = generate(&gw, json!({"key_alias": "other-app"})).await;
    for key in [&mine, &theirs, &theirs] {
        let body = json!({"model": "priced", "messages": [{"role": "user", "content": "hello there"}], "metadata": {"tags": ["t1"]}});
        assert_eq!(post_as(&gw, key, "/v1/chat/completions", &body).await.status(), 200);
    }
    // The consumer follows the log: poll until it has all three calls.
    let mut global = json!(null);
    for _ in 0..100 {
        global = ok(gw.get("/global/spend").await).await;
        if (global["spend"].as_f64().unwrap() - 0.033).abs() < 1e-9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!((global["spend"].as_f64().unwrap() - 0.033).abs() < 1e-9, "{global}");
    let activity = ok(gw.get("/user/daily/activity").await).await;
    assert_eq!(activity["metadata"]["total_api_requests"], 3);
    let tags = ok(gw.get("/tag/daily/activity?tags=t1").await).await;
    assert_eq!(tags["metadata"]["total_api_requests"], 3);
    assert_eq!(ok(gw.get("/spend/logs").await).await.as_array().unwrap().len(), 3);
    // An internal user's key sees its own user's rows only.
    let own = ok(get_as(&gw, &mine, "/user/daily/activity").await).await;
    assert_eq!(own["metadata"]["total_api_requests"], 1);
    assert!((ok(get_as(&gw, &mine, "/global/spend").await).await["spend"].as_f64().unwrap() - 0.011).abs() < 1e-9);
    assert_eq!(ok(get_as(&gw, &mine, "/spend/logs").await).await.as_array().unwrap().len(), 1);
    gw.stop().await;
}
