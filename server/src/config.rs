//! The config file (`ringbearer serve --config FILE`): one TOML document with every bound.
//! Unknown fields are refused, and so is any value that breaks a relation between bounds,
//! naming the offending field. Every field is documented in `docs/operations.md`.

use anyhow::{bail, Context, Result};
use ringbearer_core::Limits;
use ringbearer_io::auth::KeyAlg;
use ringbearer_io::{
    ClockConfig, EscalationConfig, IoConfig, SaturdayConfig, TlsConfig, TokenVerifier,
    WatchdogConfig,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HS256 secret, inline. Prefer `hs256_secret_file`.
    pub hs256_secret: Option<String>,
    /// A file holding the HS256 secret (trailing whitespace ignored).
    pub hs256_secret_file: Option<PathBuf>,
    /// Public keys for RS256/ES256 tokens (`[[auth.public_keys]]`), each pinned to its
    /// algorithm; `kid` picks among several.
    pub public_keys: Vec<PublicKeyConfig>,
}

/// One `[[auth.public_keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// `RS256` or `ES256`: the only algorithm this key verifies.
    pub alg: PublicKeyAlg,
    /// PEM file: `PUBLIC KEY` (SPKI), or `RSA PUBLIC KEY` for RS256.
    pub file: PathBuf,
    /// Matched against the token header's `kid`; keys without one are tried for tokens
    /// whose `kid` no key names.
    #[serde(default)]
    pub kid: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum PublicKeyAlg {
    RS256,
    ES256,
}

/// `[log]`: how `serve` writes its log to stderr (the level is `RUST_LOG`, `info` by
/// default). `serve --log-format` overrides `format`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `text`: one line per event, coloured only when stderr is a terminal. `json`: one JSON
/// object per line (`timestamp`, `level`, `target`, `message` and the event's fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the server keeps its state (the development secret today; the log and the
    /// registry with the durability issue).
    pub data_dir: PathBuf,
    pub auth: AuthConfig,
    pub storage: crate::store::StorageConfig,
    pub io: IoConfig,
    pub limits: Limits,
    pub rest: crate::rest::RestConfig,
    /// Saturday mode (SPEC §1).
    pub saturday: SaturdayConfig,
    /// The calendar clock: for tests and rehearsals only.
    pub clock: ClockConfig,
    /// The presence watchdog (docs/decisions.md §30).
    pub watchdog: WatchdogConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
    /// Message types to roles (SPEC §2 `target_roles`).
    pub routing: ringbearer_io::RoutingConfig,
    /// Parking of unacknowledged wedding-day messages (docs/decisions.md §32).
    pub escalation: EscalationConfig,
    /// Signed webhooks per organization (parking, watchdog alerts).
    pub webhooks: crate::webhooks::WebhooksConfig,
    /// Cluster mode through NATS JetStream (docs/cluster.md); off by default.
    pub cluster: ringbearer_io::cluster::ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            auth: AuthConfig::default(),
            storage: crate::store::StorageConfig::default(),
            io: IoConfig::default(),
            limits: Limits::default(),
            rest: crate::rest::RestConfig::default(),
            saturday: SaturdayConfig::default(),
            clock: ClockConfig::default(),
            watchdog: WatchdogConfig::default(),
            tls: TlsConfig::default(),
            log: LogConfig::default(),
            routing: ringbearer_io::RoutingConfig::default(),
            escalation: EscalationConfig::default(),
            webhooks: crate::webhooks::WebhooksConfig::default(),
            cluster: ringbearer_io::cluster::ClusterConfig::default(),
        }
    }
}

/// Smallest accepted configured secret, in bytes.
pub const SECRET_MIN_BYTES: usize = 32;
/// Name of the development secret inside the data directory.
pub const DEV_SECRET_FILE: &str = "dev-secret";

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let cfg: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// The runtime config with the limits put in place, validated.
    pub fn io_config(&self) -> Result<IoConfig> {
        let mut io = self.io.clone();
        io.limits = self.limits.clone();
        io.saturday = self.saturday.clone();
        io.clock = self.clock.clone();
        io.watchdog = self.watchdog.clone();
        io.tls = self.tls.clone();
        io.routing = self.routing.clone();
        io.escalation = self.escalation.clone();
        if let Err(e) = io.validate().and_then(|_| self.cluster.validate()) {
            bail!("invalid config: {e}");
        }
        if let Some(ca) = self
            .cluster
            .ca_file
            .as_ref()
            .filter(|_| self.cluster.enabled)
        {
            std::fs::metadata(ca)
                .with_context(|| format!("invalid config: cluster.ca_file {}", ca.display()))?;
        }
        Ok(io)
    }

    /// The configured secret, if any.
    pub fn configured_secret(&self) -> Result<Option<Vec<u8>>> {
        let s = match (&self.auth.hs256_secret, &self.auth.hs256_secret_file) {
            (Some(_), Some(_)) => {
                bail!("invalid config: set auth.hs256_secret or auth.hs256_secret_file, not both")
            }
            (Some(s), None) => s.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .with_context(|| format!("reading auth.hs256_secret_file {}", f.display()))?
                .trim_end()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        if s.len() < SECRET_MIN_BYTES {
            bail!("invalid config: auth.hs256_secret must be at least {SECRET_MIN_BYTES} bytes");
        }
        Ok(Some(s.into_bytes()))
    }
}

impl Config {
    /// The token verifier: the HS256 `secret` (configured or the development one) if any,
    /// and every configured public key. A key file that is missing or holds no key of its
    /// `alg` stops the start, naming the entry.
    pub fn verifier(&self, secret: Option<&[u8]>, leeway_secs: u64) -> Result<TokenVerifier> {
        let mut v = match secret {
            Some(s) => TokenVerifier::hs256(s, leeway_secs),
            None => TokenVerifier::public_keys_only(leeway_secs),
        };
        for (i, k) in self.auth.public_keys.iter().enumerate() {
            let pem = std::fs::read(&k.file).with_context(|| {
                format!("reading auth.public_keys[{i}].file {}", k.file.display())
            })?;
            let alg = match k.alg {
                PublicKeyAlg::RS256 => KeyAlg::Rs256,
                PublicKeyAlg::ES256 => KeyAlg::Es256,
            };
            v.add_public_key(alg, k.kid.clone(), &pem).map_err(|e| {
                anyhow::anyhow!(
                    "invalid config: auth.public_keys[{i}] ({}): {e}",
                    k.file.display()
                )
            })?;
        }
        Ok(v)
    }
}

/// Reads the development secret from the data directory, creating it (0600) on first use.
pub fn dev_secret(data_dir: &Path) -> Result<(Vec<u8>, PathBuf, bool)> {
    let path = data_dir.join(DEV_SECRET_FILE);
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim_end().to_owned();
        if s.len() >= SECRET_MIN_BYTES {
            return Ok((s.into_bytes(), path, false));
        }
        bail!(
            "{} is shorter than {SECRET_MIN_BYTES} bytes; delete it to make a new one",
            path.display()
        );
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    Ok((secret.into_bytes(), path, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_bad_relations_are_named() {
        let e = toml::from_str::<Config>("[io]\nheartbeat_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("heartbeat_ms"), "{e}");
        let c: Config = toml::from_str("[limits]\nmax_payload_bytes = 1000000\n").unwrap();
        let e = c.io_config().unwrap_err().to_string();
        assert!(e.contains("max_request_bytes"), "{e}");
        let c: Config = toml::from_str("[io]\nheartbeat_interval_ms = 0\n").unwrap();
        assert!(c
            .io_config()
            .unwrap_err()
            .to_string()
            .contains("heartbeat_interval_ms"));
        let c: Config = toml::from_str("[auth]\nhs256_secret = \"short\"\n").unwrap();
        assert!(c.configured_secret().is_err());
        let c: Config = toml::from_str("[tls]\ncert_file = \"c.pem\"\n").unwrap();
        assert!(c
            .io_config()
            .unwrap_err()
            .to_string()
            .contains("tls.key_file"));
        let e = toml::from_str::<Config>("[[auth.public_keys]]\nalg = \"HS256\"\nfile = \"k\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("RS256"), "{e}");
        let c: Config = toml::from_str(
            "[[auth.public_keys]]\nalg = \"RS256\"\nfile = \"/nonexistent/k.pem\"\n",
        )
        .unwrap();
        let e = format!("{:#}", c.verifier(None, 5).err().unwrap());
        assert!(e.contains("auth.public_keys[0].file"), "{e}");
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let c: Config = toml::from_str(&format!(
            "[[auth.public_keys]]\nalg = \"ES256\"\nfile = \"{fixtures}/rs256.pub.pem\"\n"
        ))
        .unwrap();
        let e = format!("{:#}", c.verifier(None, 5).err().unwrap());
        assert!(e.contains("auth.public_keys[0]"), "{e}");
    }

    /// The complete example in docs/operations.md parses and equals the defaults, so the
    /// documentation cannot drift from the code.
    #[test]
    fn documented_example_is_the_defaults() {
        let doc = include_str!("../../docs/operations.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("closed block");
        let cfg: Config = toml::from_str(&doc[start..end]).expect("the documented example parses");
        let d = Config::default();
        assert_eq!(cfg.data_dir, d.data_dir);
        assert_eq!(cfg.io, d.io);
        assert_eq!(cfg.storage, d.storage);
        assert_eq!(cfg.limits, d.limits);
        assert_eq!(cfg.rest, d.rest);
        assert_eq!(cfg.saturday, d.saturday);
        assert_eq!(cfg.clock, d.clock);
        assert_eq!(cfg.watchdog, d.watchdog);
        assert_eq!(cfg.tls, d.tls);
        assert_eq!(cfg.log, d.log);
        assert_eq!(cfg.routing, d.routing);
        assert_eq!(cfg.escalation, d.escalation);
        assert_eq!(cfg.webhooks, d.webhooks);
        assert_eq!(cfg.cluster, d.cluster);
        assert!(cfg.auth.public_keys.is_empty());
        cfg.io_config().unwrap();
    }

    #[test]
    fn dev_secret_is_created_once() {
        let dir = std::env::temp_dir().join(format!("rb-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (a, _, created) = dev_secret(&dir).unwrap();
        assert!(created);
        let (b, _, created) = dev_secret(&dir).unwrap();
        assert!(!created);
        assert_eq!(a, b);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
