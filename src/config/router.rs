//! `router_settings`, and the router keys LiteLLM also accepts in `litellm_settings`
//! (`router_settings` wins): strategy, retries, cooldowns, fallbacks and aliases.
//!
//! Fallbacks and aliases must name model groups the config has. A group whose deployments were
//! all skipped (a provider this build does not serve) only loses its edges, with a warning; a
//! name no entry ever had is a problem, since that fallback would silently never apply.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::raw::{AliasTarget, RawLitellmSettings, RawRouterSettings, RouterKeys};
use super::Validator;
use crate::failure::ClassMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    SimpleShuffle,
    LeastBusy,
    UsageBased,
    LatencyBased,
    CostBased,
}

impl Strategy {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "simple-shuffle" => Self::SimpleShuffle,
            "least-busy" => Self::LeastBusy,
            "usage-based-routing" | "usage-based-routing-v2" => Self::UsageBased,
            "latency-based-routing" => Self::LatencyBased,
            "cost-based-routing" => Self::CostBased,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub strategy: Strategy,
    /// Latency entries older than this are forgotten.
    pub latency_ttl: Duration,
    pub lowest_latency_buffer: f64,
    pub max_latency_list_size: usize,
    pub num_retries: u32,
    pub timeout: Duration,
    pub stream_timeout: Option<Duration>,
    pub retry_after: Duration,
    pub max_fallbacks: usize,
    pub allowed_fails: Option<u32>,
    pub cooldown_time: Duration,
    pub disable_cooldowns: bool,
    pub fallbacks: HashMap<String, Vec<String>>,
    pub context_window_fallbacks: HashMap<String, Vec<String>>,
    pub content_policy_fallbacks: HashMap<String, Vec<String>>,
    pub default_fallbacks: Vec<String>,
    pub retry_policy: ClassMap,
    pub allowed_fails_policy: ClassMap,
    pub enable_pre_call_checks: bool,
    /// alias → (model group, hidden from `/models`)
    pub model_group_alias: HashMap<String, (String, bool)>,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            strategy: Strategy::SimpleShuffle,
            latency_ttl: Duration::from_secs(3600),
            lowest_latency_buffer: 0.0,
            max_latency_list_size: 10,
            num_retries: 2,
            timeout: Duration::from_secs(600),
            stream_timeout: None,
            retry_after: Duration::ZERO,
            max_fallbacks: 5,
            allowed_fails: None,
            cooldown_time: Duration::from_secs(5),
            disable_cooldowns: false,
            fallbacks: HashMap::new(),
            context_window_fallbacks: HashMap::new(),
            content_policy_fallbacks: HashMap::new(),
            default_fallbacks: Vec::new(),
            retry_policy: ClassMap::default(),
            allowed_fails_policy: ClassMap::default(),
            enable_pre_call_checks: false,
            model_group_alias: HashMap::new(),
        }
    }
}

/// The most retries of one request within a model group (`num_retries`, `retry_policy`).
const MAX_RETRIES: u32 = 20;
/// The most latency samples kept per deployment.
const MAX_LATENCY_LIST_SIZE: u32 = 10_000;

/// Whether `model` is one of the names a `model_name` pattern serves: `*` stands for any run of
/// characters (`*` serves every model, `openai/*` every `openai/…` model), as in LiteLLM's
/// wildcard routing. A pattern without `*` serves only its own name.
pub fn wildcard_matches(pattern: &str, model: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = model.strip_prefix(first) else { return false };
    let mut parts = parts.peekable();
    if parts.peek().is_none() {
        return rest.is_empty();
    }
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The model a wildcard deployment sends upstream for `requested`: its `litellm_params.model`
/// with `*` replaced by what the `model_name` pattern's `*` matched (`model_name: "openai/*"`,
/// `model: "openai/*"`: `openai/gpt-4o` is sent as `gpt-4o`; `model_name: "*"`: the whole name).
/// A deployment whose model has no `*` always sends its own.
pub fn wildcard_upstream_model<'a>(pattern: &str, upstream: &'a str, requested: &str) -> std::borrow::Cow<'a, str> {
    if !upstream.contains('*') {
        return upstream.into();
    }
    let captured = match pattern.split_once('*') {
        Some((prefix, suffix)) if !suffix.contains('*') => {
            requested.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(suffix)).unwrap_or(requested)
        }
        _ => requested,
    };
    upstream.replacen('*', captured, 1).into()
}

/// The group names `model_list` produced, for checking fallbacks and aliases.
#[derive(Debug, Default)]
pub(super) struct GroupNames {
    /// Served by at least one deployment.
    pub served: BTreeSet<String>,
    /// Named in `model_list`, but none of its deployments is served (each with a warning).
    pub skipped: BTreeSet<String>,
    /// Named by an entry with problems of its own: not reported as unknown on top of them.
    pub broken: BTreeSet<String>,
}

/// What a name in a fallback list or alias refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reference {
    Known,
    /// A group (or wildcard pattern) whose deployments were all skipped.
    Unserved,
    Unknown,
}

impl GroupNames {
    fn classify(&self, name: &str) -> Reference {
        let pattern_matches =
            |patterns: &BTreeSet<String>| patterns.iter().any(|p| p.contains('*') && wildcard_matches(p, name));
        if self.served.contains(name) || self.broken.contains(name) {
            Reference::Known
        } else if self.skipped.contains(name) {
            Reference::Unserved
        } else if pattern_matches(&self.served) {
            Reference::Known
        } else if pattern_matches(&self.skipped) {
            Reference::Unserved
        } else {
            Reference::Unknown
        }
    }
}

/// The outcome of checking one reference that is not simply known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Finding {
    /// The edge or alias was dropped: it names a group this build does not serve.
    Dropped { path: String, message: String },
    /// It names a group no `model_list` entry has.
    Unknown { path: String, message: String },
}

/// Where each reference field was set (`router_settings` unless `litellm_settings` set it and
/// `router_settings` did not), for paths in messages.
#[derive(Debug, Default)]
pub(super) struct ReferenceSections(BTreeMap<&'static str, &'static str>);

impl ReferenceSections {
    fn of(&self, field: &str) -> &'static str {
        self.0.get(field).copied().unwrap_or("router_settings")
    }
}

/// Checks every alias and fallback against `groups`, dropping the ones that name groups whose
/// deployments were skipped. Returns what it dropped and what it could not find.
pub(super) fn check_group_references(
    r: &mut RouterSettings,
    groups: &GroupNames,
    sections: &ReferenceSections,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let alias_section = sections.of("model_group_alias");
    let mut unserved_aliases = BTreeSet::new();
    let mut aliases: Vec<String> = r.model_group_alias.keys().cloned().collect();
    aliases.sort();
    for alias in aliases {
        let Some((target, _)) = r.model_group_alias.get(&alias) else { continue };
        let path = format!("{alias_section}.model_group_alias.{alias}");
        match groups.classify(target) {
            Reference::Known => continue,
            Reference::Unserved => findings.push(Finding::Dropped {
                path,
                message: format!(
                    "model group {target:?} is not served by this build (its deployments were skipped); alias dropped"
                ),
            }),
            Reference::Unknown => {
                findings.push(Finding::Unknown { path, message: format!("unknown model group {target:?}") })
            }
        }
        r.model_group_alias.remove(&alias);
        unserved_aliases.insert(alias);
    }
    let classify = |name: &str| {
        if r.model_group_alias.contains_key(name) {
            Reference::Known
        } else if unserved_aliases.contains(name) {
            Reference::Unserved
        } else {
            groups.classify(name)
        }
    };

    let mut checked: Vec<(&str, HashMap<String, Vec<String>>)> = Vec::new();
    for (field, map) in [
        ("fallbacks", &r.fallbacks),
        ("context_window_fallbacks", &r.context_window_fallbacks),
        ("content_policy_fallbacks", &r.content_policy_fallbacks),
    ] {
        let section = sections.of(field);
        let mut sources: Vec<&String> = map.keys().collect();
        sources.sort();
        let mut kept = HashMap::new();
        for group in sources {
            let path = format!("{section}.{field}.{group}");
            // A source of "*" applies to every group, as in LiteLLM.
            let source = if group == "*" { Reference::Known } else { classify(group) };
            match source {
                Reference::Known => {}
                Reference::Unserved => {
                    findings.push(Finding::Dropped {
                        path,
                        message: format!("model group {group:?} is not served by this build (its deployments were skipped); its fallbacks are dropped"),
                    });
                    continue;
                }
                Reference::Unknown => {
                    findings.push(Finding::Unknown { path, message: format!("unknown model group {group:?}") });
                    continue;
                }
            }
            let targets = map.get(group).map(Vec::as_slice).unwrap_or_default();
            let list = check_targets(targets, &path, "fallback model group", &classify, &mut findings);
            if !list.is_empty() {
                kept.insert(group.clone(), list);
            }
        }
        checked.push((field, kept));
    }
    for (field, kept) in checked {
        match field {
            "fallbacks" => r.fallbacks = kept,
            "context_window_fallbacks" => r.context_window_fallbacks = kept,
            _ => r.content_policy_fallbacks = kept,
        }
    }
    let path = format!("{}.default_fallbacks", sections.of("default_fallbacks"));
    r.default_fallbacks = check_targets(&r.default_fallbacks, &path, "model group", &classify, &mut findings);
    findings
}

/// The targets that are known; a finding for each of the others.
fn check_targets(
    targets: &[String],
    path: &str,
    what: &str,
    classify: &dyn Fn(&str) -> Reference,
    findings: &mut Vec<Finding>,
) -> Vec<String> {
    let mut kept = Vec::with_capacity(targets.len());
    for t in targets {
        match classify(t) {
            Reference::Known => kept.push(t.clone()),
            Reference::Unserved => findings.push(Finding::Dropped {
                path: path.to_string(),
                message: format!(
                    "{what} {t:?} is not served by this build (its deployments were skipped); dropped from the list"
                ),
            }),
            Reference::Unknown => {
                findings.push(Finding::Unknown { path: path.to_string(), message: format!("unknown {what} {t:?}") })
            }
        }
    }
    kept
}

impl Validator<'_> {
    /// The router settings, `litellm_settings` first and `router_settings` over it, with every
    /// fallback and alias checked against `groups`.
    pub(super) fn router_settings(
        &mut self,
        litellm: RawLitellmSettings,
        router: RawRouterSettings,
        groups: &GroupNames,
    ) -> RouterSettings {
        self.unsupported("litellm_settings", "litellm_settings", &litellm.extra);
        self.unsupported("router_settings", "router_settings", &router.extra);
        let mut r = RouterSettings::default();
        if let Some(t) = litellm.request_timeout {
            r.timeout = t;
        }
        let mut sections = ReferenceSections::default();
        self.apply_router_keys(&mut r, litellm.keys, "litellm_settings", &mut sections);
        self.apply_router_keys(&mut r, router.keys, "router_settings", &mut sections);
        for finding in check_group_references(&mut r, groups, &sections) {
            match finding {
                Finding::Dropped { path, message } => self.warn(format!("{path}: {message}")),
                Finding::Unknown { path, message } => self.problem(path, message),
            }
        }
        r
    }

    fn apply_router_keys(
        &mut self,
        r: &mut RouterSettings,
        k: RouterKeys,
        section: &'static str,
        sections: &mut ReferenceSections,
    ) {
        let at = |field: &str| format!("{section}.{field}");
        if let Some(s) = k.routing_strategy {
            match Strategy::parse(&s) {
                Some(strategy) => r.strategy = strategy,
                None => self.problem(at("routing_strategy"), format!("unknown strategy {s:?} (simple-shuffle, least-busy, usage-based-routing, usage-based-routing-v2, latency-based-routing, cost-based-routing)")),
            }
        }
        if let Some(args) = k.routing_strategy_args {
            self.unsupported(&at("routing_strategy_args"), &at("routing_strategy_args"), &args.extra);
            set(&mut r.latency_ttl, args.ttl);
            match args.lowest_latency_buffer {
                Some(b) if b < 0.0 => self.problem(
                    at("routing_strategy_args.lowest_latency_buffer"),
                    format!("must not be negative, got {b}"),
                ),
                b => set(&mut r.lowest_latency_buffer, b),
            }
            let size_path = at("routing_strategy_args.max_latency_list_size");
            if let Some(n) = self.in_range(&size_path, args.max_latency_list_size, 1..=u64::MAX) {
                let n = self.capped(&size_path, n, MAX_LATENCY_LIST_SIZE);
                r.max_latency_list_size = usize::try_from(n).unwrap_or(usize::MAX);
            }
        }
        if let Some(n) = k.num_retries {
            r.num_retries = self.capped(&at("num_retries"), n, MAX_RETRIES);
        }
        set(&mut r.timeout, k.timeout);
        if k.stream_timeout.is_some() {
            r.stream_timeout = k.stream_timeout;
        }
        set(&mut r.retry_after, k.retry_after);
        if let Some(n) = k.max_fallbacks {
            match usize::try_from(n) {
                Ok(n) => r.max_fallbacks = n,
                Err(_) => self.problem(at("max_fallbacks"), format!("must be at most {}, got {n}", usize::MAX)),
            }
        }
        if let Some(n) = self.in_range(at("allowed_fails"), k.allowed_fails, 0..=u64::from(u32::MAX)) {
            r.allowed_fails = u32::try_from(n).ok();
        }
        set(&mut r.cooldown_time, k.cooldown_time);
        set(&mut r.disable_cooldowns, k.disable_cooldowns);
        set(&mut r.enable_pre_call_checks, k.enable_pre_call_checks);
        let mut reference = |field: &'static str| {
            sections.0.insert(field, section);
        };
        if let Some(f) = k.fallbacks {
            r.fallbacks = flatten_fallbacks(f);
            reference("fallbacks");
        }
        if let Some(f) = k.context_window_fallbacks {
            r.context_window_fallbacks = flatten_fallbacks(f);
            reference("context_window_fallbacks");
        }
        if let Some(f) = k.content_policy_fallbacks {
            r.content_policy_fallbacks = flatten_fallbacks(f);
            reference("content_policy_fallbacks");
        }
        if let Some(f) = k.default_fallbacks {
            r.default_fallbacks = f;
            reference("default_fallbacks");
        }
        if let Some(aliases) = k.model_group_alias {
            r.model_group_alias = aliases
                .into_iter()
                .map(|(alias, target)| match target {
                    AliasTarget::Name(group) => (alias, (group, false)),
                    AliasTarget::Detailed { model, hidden } => (alias, (model, hidden)),
                })
                .collect();
            reference("model_group_alias");
        }
        if let Some(p) = k.retry_policy {
            let field = at("retry_policy");
            let p: BTreeMap<String, u64> = p
                .into_iter()
                .map(|(class, n)| {
                    let n = self.capped(&format!("{field}.{class}"), n, MAX_RETRIES);
                    (class, u64::from(n))
                })
                .collect();
            r.retry_policy = self.class_map(&field, &p, "Retries");
        }
        if let Some(p) = k.allowed_fails_policy {
            let field = at("allowed_fails_policy");
            let p: BTreeMap<String, u64> = p
                .into_iter()
                .filter_map(|(class, n)| {
                    let n = self.in_range(format!("{field}.{class}"), Some(n), 0..=u64::from(u32::MAX))?;
                    Some((class, n))
                })
                .collect();
            r.allowed_fails_policy = self.class_map(&field, &p, "AllowedFails");
        }
    }

    /// LiteLLM's `{"<Class>Error<suffix>": n}` map, with a warning per unknown class.
    fn class_map(&mut self, field: &str, map: &BTreeMap<String, u64>, suffix: &str) -> ClassMap {
        let (policy, unknown) = ClassMap::from_litellm(map, suffix);
        for key in unknown {
            self.warn(format!("{field}.{key}: unknown error class; ignored"));
        }
        policy
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// LiteLLM writes fallbacks as a list of one-key maps: `[{"gpt-4o": ["claude"]}]`.
fn flatten_fallbacks(list: Vec<BTreeMap<String, Vec<String>>>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for map in list {
        for (group, targets) in map {
            out.entry(group).or_default().extend(targets);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_any_run_of_characters() {
        assert_eq!(wildcard_upstream_model("*", "*", "gpt-4o"), "gpt-4o");
        assert_eq!(wildcard_upstream_model("openai/*", "*", "openai/gpt-4o"), "gpt-4o");
        assert_eq!(wildcard_upstream_model("openai/*", "ft:*", "openai/gpt-4o"), "ft:gpt-4o");
        assert_eq!(wildcard_upstream_model("*", "gpt-4o-mini", "anything"), "gpt-4o-mini");
        assert!(wildcard_matches("*", "gpt-4o"));
        assert!(wildcard_matches("*", ""));
        assert!(wildcard_matches("openai/*", "openai/gpt-4o"));
        assert!(!wildcard_matches("openai/*", "groq/llama"));
        assert!(!wildcard_matches("openai/*", "openai"));
        assert!(wildcard_matches("gpt-*-mini", "gpt-4o-mini"));
        assert!(!wildcard_matches("gpt-*-mini", "gpt-4o"));
        assert!(wildcard_matches("a*b*c", "a-b-b-c"));
        assert!(!wildcard_matches("a*b*c", "a-c-b"));
        assert!(wildcard_matches("gpt-4o", "gpt-4o"));
        assert!(!wildcard_matches("gpt-4o", "gpt-4o-mini"));
    }

    fn names(served: &[&str], skipped: &[&str]) -> GroupNames {
        GroupNames {
            served: served.iter().map(|s| s.to_string()).collect(),
            skipped: skipped.iter().map(|s| s.to_string()).collect(),
            broken: BTreeSet::new(),
        }
    }

    fn fallbacks(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs.iter().map(|(g, t)| (g.to_string(), t.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn references_to_skipped_groups_are_dropped_and_unknown_names_reported() {
        let mut r = RouterSettings {
            fallbacks: fallbacks(&[("served", &["azure-only", "served-2", "typo"]), ("azure-only", &["served"])]),
            default_fallbacks: vec!["azure-only".into(), "served".into()],
            model_group_alias: [("old".to_string(), ("azure-only".to_string(), false))].into_iter().collect(),
            context_window_fallbacks: fallbacks(&[("served", &["old"])]),
            ..RouterSettings::default()
        };
        let groups = names(&["served", "served-2"], &["azure-only"]);
        let mut sections = ReferenceSections::default();
        sections.0.insert("fallbacks", "litellm_settings");
        let findings = check_group_references(&mut r, &groups, &sections);
        let dropped: Vec<&str> = findings.iter().filter(|f| matches!(f, Finding::Dropped { .. })).map(path).collect();
        assert_eq!(
            dropped,
            [
                "router_settings.model_group_alias.old",
                "litellm_settings.fallbacks.azure-only",
                "litellm_settings.fallbacks.served",
                "router_settings.context_window_fallbacks.served",
                "router_settings.default_fallbacks",
            ]
        );
        assert_eq!(
            findings.iter().filter(|f| matches!(f, Finding::Unknown { .. })).cloned().collect::<Vec<_>>(),
            [Finding::Unknown {
                path: "litellm_settings.fallbacks.served".into(),
                message: "unknown fallback model group \"typo\"".into()
            }]
        );
        assert_eq!(r.fallbacks, fallbacks(&[("served", &["served-2"])]));
        assert!(r.context_window_fallbacks.is_empty() && r.model_group_alias.is_empty());
        assert_eq!(r.default_fallbacks, ["served"]);
    }

    fn path(f: &Finding) -> &str {
        match f {
            Finding::Dropped { path, .. } | Finding::Unknown { path, .. } => path,
        }
    }

    #[test]
    fn names_a_wildcard_group_routes_are_known() {
        let mut r = RouterSettings {
            context_window_fallbacks: fallbacks(&[("gpt-5-mini", &["gpt-5.5"]), ("claude-x", &["gpt-5-mini"])]),
            ..RouterSettings::default()
        };
        let findings = check_group_references(&mut r, &names(&["*"], &["anthropic/*"]), &ReferenceSections::default());
        assert!(findings.is_empty(), "{findings:?}");
        let mut r = RouterSettings {
            fallbacks: fallbacks(&[("openai/gpt-4o", &["anthropic/claude"])]),
            ..RouterSettings::default()
        };
        let findings =
            check_group_references(&mut r, &names(&["openai/*"], &["anthropic/*"]), &ReferenceSections::default());
        assert!(matches!(&findings[..], [Finding::Dropped { .. }]), "{findings:?}");
        assert!(r.fallbacks.is_empty());
    }
}
