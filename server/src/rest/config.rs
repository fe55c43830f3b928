//! The `[rest]` config section: API keys, the observability switch, the admin page's and
//! audit query's limits, the event stream's pace and the health thresholds, with their
//! defaults and the start-up check of them (`RestConfig::keys`).
//!
//! It does not serve requests (that is `rest/mod.rs` and its siblings).

use ringbearer_core::{Claims, Role, Tier};
use serde::Deserialize;
use std::path::PathBuf;

/// `[rest]` in the config file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RestConfig {
    /// Keys for backends (`service` role), each bound to one organization.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Whether `GET /api/websocket/health` and `/metrics` need a token or key. Off: load
    /// balancers and Prometheus scrape them without one (they show counts, never
    /// content); put the port behind your firewall or turn this on.
    pub observability_requires_auth: bool,
    /// Largest `limit` of one audit query.
    pub audit_query_max: u32,
    /// Longest `description` accepted on create.
    pub max_description_bytes: usize,
    /// Largest `limit` of one page of the admin page's lists (`channels/detail`
    /// subscribers, `channels/list?scope=organization`).
    pub admin_page_max: u32,
    /// How often `GET /api/websocket/events` sends an event (ms).
    pub events_interval_ms: u64,
    /// Open `GET /api/websocket/events` streams per shard; over it: 503 `WS_OVERLOADED`.
    pub events_max_streams_per_shard: usize,
    pub health: HealthConfig,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            api_keys: Vec::new(),
            observability_requires_auth: false,
            audit_query_max: 1000,
            max_description_bytes: 1024,
            admin_page_max: 200,
            events_interval_ms: 2000,
            events_max_streams_per_shard: 16,
            health: HealthConfig::default(),
        }
    }
}

/// One API key. The key is secret: prefer `key_file`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who the key is (audit records name it as `service:<name>`).
    pub name: String,
    pub organization_id: String,
    pub key: Option<String>,
    pub key_file: Option<PathBuf>,
    /// The tier whose limits the key's requests count against.
    #[serde(default = "enterprise")]
    pub tier: String,
}

fn enterprise() -> String {
    "enterprise".into()
}

/// `[rest.health]`: the thresholds that make health `degraded` or `overloaded`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// p99 delivery latency over the health window above this: `degraded`.
    pub degraded_p99_ms: f64,
    /// ... above this: `overloaded`.
    pub overloaded_p99_ms: f64,
    /// Connections as a share of `max_connections` (percent) above this: `degraded`.
    pub degraded_connections_percent: f64,
    /// ... above this: `overloaded`.
    pub overloaded_connections_percent: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            degraded_p99_ms: 100.0,
            overloaded_p99_ms: 1000.0,
            degraded_connections_percent: 80.0,
            overloaded_connections_percent: 95.0,
        }
    }
}

/// Shortest accepted API key, in bytes.
pub const API_KEY_MIN_BYTES: usize = 24;

impl RestConfig {
    /// Checks the section and reads key files; errors name the field.
    pub fn keys(&self) -> anyhow::Result<Vec<(Vec<u8>, Claims)>> {
        let mut out = Vec::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let field = format!("rest.api_keys[{i}]");
            let key = match (&k.key, &k.key_file) {
                (Some(s), None) => s.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("{field}.key_file {}: {e}", f.display()))?
                    .trim_end()
                    .to_owned(),
                _ => anyhow::bail!("invalid config: {field} needs one of key or key_file"),
            };
            if key.len() < API_KEY_MIN_BYTES {
                anyhow::bail!(
                    "invalid config: {field}.key must be at least {API_KEY_MIN_BYTES} bytes"
                );
            }
            let tier = Tier::parse(&k.tier).ok_or_else(|| {
                anyhow::anyhow!("invalid config: {field}.tier `{}` is not a tier", k.tier)
            })?;
            let claims = Claims {
                sub: format!("service:{}", k.name),
                org: k.organization_id.clone(),
                role: Role::Service,
                tier,
                weddings: vec!["*".into()],
                exp: u64::MAX,
                nbf: None,
            };
            claims
                .validate()
                .map_err(|e| anyhow::anyhow!("invalid config: {field}: {}", e.message))?;
            out.push((key.into_bytes(), claims));
        }
        let h = &self.health;
        if !(h.degraded_p99_ms > 0.0 && h.degraded_p99_ms <= h.overloaded_p99_ms) {
            anyhow::bail!(
                "invalid config: rest.health.degraded_p99_ms must be > 0 and <= overloaded_p99_ms"
            );
        }
        if !(h.degraded_connections_percent > 0.0
            && h.degraded_connections_percent <= h.overloaded_connections_percent
            && h.overloaded_connections_percent <= 100.0)
        {
            anyhow::bail!("invalid config: rest.health.degraded_connections_percent must be > 0 and <= overloaded_connections_percent <= 100");
        }
        if self.audit_query_max == 0 {
            anyhow::bail!("invalid config: rest.audit_query_max must be greater than 0");
        }
        if self.admin_page_max == 0 {
            anyhow::bail!("invalid config: rest.admin_page_max must be greater than 0");
        }
        if self.events_interval_ms == 0 {
            anyhow::bail!("invalid config: rest.events_interval_ms must be greater than 0");
        }
        if self.events_max_streams_per_shard == 0 {
            anyhow::bail!(
                "invalid config: rest.events_max_streams_per_shard must be greater than 0"
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(toml_key: &str) -> anyhow::Result<Vec<(Vec<u8>, Claims)>> {
        let cfg: RestConfig = toml::from_str(&format!(
            "[[api_keys]]\nname = \"b\"\norganization_id = \"org-1\"\n{toml_key}\n"
        ))?;
        cfg.keys()
    }

    #[test]
    fn bad_keys_and_thresholds_are_refused_naming_the_field() {
        let (k, c) = with_key("key = \"0123456789abcdef01234567\"")
            .unwrap()
            .remove(0);
        assert_eq!(
            (k.len(), c.role, c.sub.as_str()),
            (24, Role::Service, "service:b")
        );
        for (bad, field) in [
            ("key = \"short\"", "rest.api_keys[0].key"),
            ("", "rest.api_keys[0] needs one of key or key_file"),
            (
                "key_file = \"/nonexistent/key\"",
                "rest.api_keys[0].key_file",
            ),
            (
                "key = \"0123456789abcdef01234567\"\ntier = \"gold\"",
                "rest.api_keys[0].tier",
            ),
        ] {
            let e = with_key(bad).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
        let cfg = RestConfig {
            health: HealthConfig {
                degraded_p99_ms: 2000.0,
                ..HealthConfig::default()
            },
            ..RestConfig::default()
        };
        assert!(cfg
            .keys()
            .unwrap_err()
            .to_string()
            .contains("degraded_p99_ms"));
        let cfg = RestConfig {
            audit_query_max: 0,
            ..RestConfig::default()
        };
        assert!(cfg
            .keys()
            .unwrap_err()
            .to_string()
            .contains("audit_query_max"));
        let cfg = RestConfig {
            admin_page_max: 0,
            ..RestConfig::default()
        };
        assert!(cfg
            .keys()
            .unwrap_err()
            .to_string()
            .contains("admin_page_max"));
        for (cfg, field) in [
            (
                RestConfig {
                    events_interval_ms: 0,
                    ..RestConfig::default()
                },
                "rest.events_interval_ms",
            ),
            (
                RestConfig {
                    events_max_streams_per_shard: 0,
                    ..RestConfig::default()
                },
                "rest.events_max_streams_per_shard",
            ),
        ] {
            let e = cfg.keys().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
