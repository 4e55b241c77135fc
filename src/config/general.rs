//! `general_settings`: the master key, the server's own limits, and alerting (`alerting`).

use std::time::Duration;

use secrecy::SecretString;

use super::alerting::{AlertingConfig, RawAlerting};
use super::raw::RawGeneralSettings;
use super::Validator;

#[derive(Debug, Clone)]
pub struct GeneralSettings {
    pub master_key: Option<SecretString>,
    pub max_request_size_bytes: usize,
    pub store_prompts_in_spend_logs: bool,
    pub background_health_checks: bool,
    pub health_check_interval: Duration,
    /// `alerting`, `alerting_threshold`, `alert_types`, `alert_to_webhook_url`, `alerting_args`.
    pub alerting: AlertingConfig,
}

impl Default for GeneralSettings {
    fn default() -> Self {
        Self {
            master_key: None,
            max_request_size_bytes: default_max_request_size_bytes(),
            store_prompts_in_spend_logs: false,
            background_health_checks: false,
            health_check_interval: Duration::from_secs(300),
            alerting: AlertingConfig::default(),
        }
    }
}

fn default_max_request_size_bytes() -> usize {
    32 * 1024 * 1024
}

/// The largest `max_request_size_mb`: request bodies are held in memory, so a larger limit
/// is a mistake rather than a need.
const MAX_REQUEST_SIZE_MB: f64 = 1024.0;

impl Validator<'_> {
    pub(super) fn general(&mut self, mut g: RawGeneralSettings) -> GeneralSettings {
        if g.extra.remove("database_url").is_some() {
            self.warn(
                "general_settings.database_url: Switchyard keeps keys, teams, users and spend on its event log, not in a database; ignored",
            );
        }
        self.unsupported("general_settings", "general_settings", &g.extra);
        let alerting = self.alerting(RawAlerting {
            alerting: g.alerting,
            alerting_threshold: g.alerting_threshold,
            alert_types: g.alert_types,
            alert_to_webhook_url: g.alert_to_webhook_url,
            alerting_args: g.alerting_args,
        });
        let master_key = g.master_key.or_else(|| (self.env)("LITELLM_MASTER_KEY")).filter(|k| !k.is_empty());
        let max_request_size_bytes = match g.max_request_size_mb {
            None => default_max_request_size_bytes(),
            Some(mb) => match request_size_bytes(mb) {
                Some(bytes) => bytes,
                None => {
                    self.problem(
                        "general_settings.max_request_size_mb",
                        format!("must be more than 0 and at most {MAX_REQUEST_SIZE_MB}, got {mb}"),
                    );
                    default_max_request_size_bytes()
                }
            },
        };
        GeneralSettings {
            master_key: master_key.map(SecretString::from),
            max_request_size_bytes,
            store_prompts_in_spend_logs: g.store_prompts_in_spend_logs.unwrap_or(false),
            background_health_checks: g.background_health_checks.unwrap_or(false),
            health_check_interval: g.health_check_interval.unwrap_or(Duration::from_secs(300)),
            alerting,
        }
    }
}

/// Megabytes (MiB) as bytes, when `mb` is in (0, [`MAX_REQUEST_SIZE_MB`]].
fn request_size_bytes(mb: f64) -> Option<usize> {
    if !(mb > 0.0 && mb <= MAX_REQUEST_SIZE_MB) {
        return None;
    }
    // At most 2^30 bytes: exact in f64 and within usize on every supported target.
    usize::try_from((mb * 1024.0 * 1024.0).round() as u64).ok().filter(|b| *b > 0)
}
