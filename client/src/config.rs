//! [`ClientConfig`]: every setting and bound of a client, with its default and the reason
//! for it, and [`TokenSource`], where the bearer token comes from on each (re)connect.
//!
//! This module only describes; it opens nothing. [`ClientConfig::validate`] checks how
//! the bounds relate and is called by [`crate::Client::connect`].

use crate::backoff::Backoff;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Default [`ClientConfig::request_timeout`]: a reply that takes longer means the server is
/// in trouble; the caller should learn it rather than hang.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`ClientConfig::connect_timeout`] (TCP connect plus the HTTP upgrade).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`ClientConfig::event_buffer`]: well above one `subscribed` reply's worth of
/// messages (the server keeps at most `max_queued` = 100 per channel by default), so an app
/// that awaits `subscribe` before reading events does not stall the connection.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

/// Default [`ClientConfig::idle_timeout`]: the server pings every 30 s (10 s on wedding
/// days and in Saturday mode); 2.5 intervals of silence means the path is dead.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Default [`ClientConfig::max_message_bytes`]. A `message` is at most 64 KiB of payload
/// plus its envelope, but one `subscribed` reply carries up to `max_queued` (100 default)
/// of them in a single frame: 100 × (64 KiB + envelope) ≈ 6.6 MiB. 16 MiB leaves room for
/// JSON re-escaping and a server configured with a larger window.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Default [`ClientConfig::max_request_bytes`]: a 64 KiB payload JSON-encoded, plus the
/// envelope, with room to spare. A larger frame would be refused by the server (or close the
/// connection, past its `max_frame_bytes`), so it is refused here, before sending.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;

/// Smallest accepted [`ClientConfig::max_message_bytes`]: one full 64 KiB message and
/// its envelope must fit.
pub const MIN_MAX_MESSAGE_BYTES: usize = 128 << 10;

/// Most server URLs one client accepts ([`ClientConfig::url`] plus
/// [`ClientConfig::failover_urls`]). A failover list names a handful of servers (a primary
/// and a standby, a load-balancer pair, the nodes of a cluster); a longer one is almost
/// certainly a mistake, and one round of the list is bounded by this many connect timeouts.
pub const MAX_SERVER_URLS: usize = 16;

/// tungstenite's read buffer, allocated up front per connection. Its default (128 KiB)
/// is sized for throughput; test suites open thousands of clients, and larger messages
/// simply take several reads.
const READ_BUFFER_BYTES: usize = 16 << 10;

/// tungstenite's write buffer target; every send here ends with a flush anyway.
const WRITE_BUFFER_BYTES: usize = 16 << 10;

/// Where the bearer token comes from. Asked once per (re)connect, for the
/// `Authorization: Bearer` header of the upgrade request.
#[derive(Clone)]
pub enum TokenSource {
    /// The same token every time. A successful [`crate::Client::refresh_token`] replaces it,
    /// so reconnects use the refreshed token.
    Fixed(String),
    /// Called on every (re)connect; lets the app hand out a fresh JWT. Must not block for
    /// long: it runs on the client's background task. Not replaced by `refresh_token`.
    Dynamic(Arc<dyn Fn() -> String + Send + Sync>),
}

impl TokenSource {
    /// A fixed token.
    pub fn fixed(token: impl Into<String>) -> Self {
        TokenSource::Fixed(token.into())
    }

    /// A token minted by `f` on every (re)connect.
    pub fn from_fn(f: impl Fn() -> String + Send + Sync + 'static) -> Self {
        TokenSource::Dynamic(Arc::new(f))
    }

    /// The token to use now.
    pub fn current(&self) -> String {
        match self {
            TokenSource::Fixed(t) => t.clone(),
            TokenSource::Dynamic(f) => f(),
        }
    }
}

impl fmt::Debug for TokenSource {
    // Never print the token itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Fixed(_) => f.write_str("TokenSource::Fixed(<redacted>)"),
            TokenSource::Dynamic(_) => f.write_str("TokenSource::Dynamic(<fn>)"),
        }
    }
}

impl From<String> for TokenSource {
    fn from(t: String) -> Self {
        TokenSource::Fixed(t)
    }
}

impl From<&str> for TokenSource {
    fn from(t: &str) -> Self {
        TokenSource::Fixed(t.to_owned())
    }
}

/// Everything a [`crate::Client`] needs. Build with [`ClientConfig::new`] and change the
/// public fields, or use struct update syntax: `ClientConfig { request_timeout, ..ClientConfig::new(url, token) }`.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `ws://host:port/ws`, or `wss://host:port/ws` (TLS; see `ca_file`). With
    /// `failover_urls`, the first server of the list.
    pub url: String,
    /// Further servers, tried after `url` in this order when a connection fails or is lost
    /// (round robin; see the crate docs, "Several servers"). They must accept the same
    /// tokens and share the channels' logs (the same data directory, or a cluster) for a
    /// move to resume without gaps. At most [`MAX_SERVER_URLS`] URLs in all, no repeats.
    /// Default empty: one server.
    pub failover_urls: Vec<String>,
    /// With `failover_urls`: [`crate::Client::connect`] starts at a random server of the
    /// list instead of `url`, spreading clients over equal servers (a load-balancer pair,
    /// a cluster). Leave `false` for a primary and a standby. Default `false`.
    pub random_start: bool,
    /// For `wss://`: a PEM file with the certificate(s) to trust — the `cert.pem` that
    /// `ringbearer dev-cert` wrote, or your CA's. `None` trusts the system's CA bundle
    /// (`SSL_CERT_FILE`, else the distribution's usual path). Read once, at connect.
    /// Default `None`.
    pub ca_file: Option<std::path::PathBuf>,
    /// The bearer token, asked on every (re)connect.
    pub token: TokenSource,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// Bound on each request, from the call to its reply. Default 10 s.
    pub request_timeout: Duration,
    /// Bound on one connect attempt (TCP plus upgrade). Default 10 s.
    pub connect_timeout: Duration,
    /// Capacity of the [`crate::Events`] queue. IMPORTANT: when the app stops reading
    /// events, the client stops reading the socket once this and a small internal queue are
    /// full (back-pressure; the server then treats it as a slow consumer). See
    /// [`crate::Events`]. Default 1024.
    pub event_buffer: usize,
    /// A connection on which nothing arrives for this long (the server pings every 30 s)
    /// is treated as lost and reconnected. `None` disables the check. Default 75 s.
    pub idle_timeout: Option<Duration>,
    /// Largest incoming WebSocket message and frame (tungstenite's `max_message_size` and
    /// `max_frame_size`). Must hold a whole `subscribed` reply. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Largest outgoing request frame; larger requests fail with
    /// [`crate::Error::RequestTooLarge`] without being sent. Default 1 MiB.
    pub max_request_bytes: usize,
}

impl ClientConfig {
    /// A config with every default: backoff 100 ms → 5 s ×2 with full jitter, 10 s
    /// request and connect timeouts, 1024 buffered events, 75 s idle timeout.
    pub fn new(url: impl Into<String>, token: impl Into<TokenSource>) -> Self {
        ClientConfig {
            url: url.into(),
            failover_urls: Vec::new(),
            random_start: false,
            ca_file: None,
            token: token.into(),
            backoff: Backoff::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            event_buffer: DEFAULT_EVENT_BUFFER,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }

    /// This config with `urls` as its failover servers, tried after [`ClientConfig::url`]
    /// in the given order.
    pub fn with_failover<I, U>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.failover_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Every server URL in order: `url`, then `failover_urls`.
    pub fn urls(&self) -> Vec<String> {
        std::iter::once(&self.url)
            .chain(&self.failover_urls)
            .cloned()
            .collect()
    }

    /// Checks every bound and how they relate. Returns the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        let urls = self.urls();
        if urls.len() > MAX_SERVER_URLS {
            return Err(format!(
                "{} server urls; at most {MAX_SERVER_URLS}",
                urls.len()
            ));
        }
        for (i, url) in urls.iter().enumerate() {
            if !url.starts_with("ws://") && !url.starts_with("wss://") {
                return Err(format!("url {url:?} must start with ws:// or wss://"));
            }
            if urls[..i].contains(url) {
                return Err(format!("url {url:?} is listed twice"));
            }
        }
        self.backoff.validate()?;
        if self.request_timeout.is_zero() {
            return Err("request_timeout must be above zero".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("connect_timeout must be above zero".into());
        }
        if self.event_buffer == 0 {
            return Err("event_buffer must be at least 1".into());
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return Err("idle_timeout must be above zero (or None to disable it)".into());
        }
        if self.max_message_bytes < MIN_MAX_MESSAGE_BYTES {
            return Err(format!(
                "max_message_bytes {} is below {MIN_MAX_MESSAGE_BYTES}: a 64 KiB message would not fit",
                self.max_message_bytes
            ));
        }
        if self.max_request_bytes == 0 {
            return Err("max_request_bytes must be above zero".into());
        }
        Ok(())
    }

    /// tungstenite's settings for this config, every field set explicitly.
    pub(crate) fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WRITE_BUFFER_BYTES)
            // Only grows past write_buffer_size while writes fail; bounded by what one
            // request may be, a few times over.
            .max_write_buffer_size(WRITE_BUFFER_BYTES + 4 * self.max_request_bytes)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
            .accept_unmasked_frames(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = ClientConfig::new("ws://127.0.0.1:8080/ws", "t");
        assert!(c.validate().is_ok());
        let ws = c.websocket_config();
        assert_eq!(ws.max_message_size, Some(DEFAULT_MAX_MESSAGE_BYTES));
        assert_eq!(ws.max_frame_size, Some(DEFAULT_MAX_MESSAGE_BYTES));
        assert!(ws.max_write_buffer_size > ws.write_buffer_size);
    }

    #[test]
    fn validate_catches_each_bound() {
        let ok = ClientConfig::new("ws://h:1/ws", "t");
        let bad = [
            ClientConfig {
                url: "http://h/ws".into(),
                ..ok.clone()
            },
            ClientConfig {
                request_timeout: Duration::ZERO,
                ..ok.clone()
            },
            ClientConfig {
                connect_timeout: Duration::ZERO,
                ..ok.clone()
            },
            ClientConfig {
                event_buffer: 0,
                ..ok.clone()
            },
            ClientConfig {
                idle_timeout: Some(Duration::ZERO),
                ..ok.clone()
            },
            ClientConfig {
                max_message_bytes: 1000,
                ..ok.clone()
            },
            ClientConfig {
                max_request_bytes: 0,
                ..ok.clone()
            },
            ok.clone().with_failover(["http://h2/ws"]),
            ok.clone().with_failover(["ws://h:1/ws"]),
            ok.clone()
                .with_failover((0..MAX_SERVER_URLS).map(|n| format!("ws://h{n}/ws"))),
            ClientConfig {
                backoff: Backoff {
                    multiplier: 0.0,
                    ..Backoff::default()
                },
                ..ok.clone()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?} should be refused");
        }
        assert!(ClientConfig {
            url: "wss://h/ws".into(),
            ..ok.clone()
        }
        .validate()
        .is_ok());
        assert!(ClientConfig {
            idle_timeout: None,
            ..ok.clone()
        }
        .validate()
        .is_ok());
        let most = ok
            .clone()
            .with_failover((1..MAX_SERVER_URLS).map(|n| format!("wss://h{n}/ws")));
        assert!(most.validate().is_ok());
        assert_eq!(most.urls().len(), MAX_SERVER_URLS);
        assert_eq!(most.urls()[0], ok.url);
        assert_eq!(most.urls()[1], "wss://h1/ws");
    }

    #[test]
    fn token_sources() {
        assert_eq!(TokenSource::fixed("a").current(), "a");
        let n = std::sync::atomic::AtomicU32::new(0);
        let src = TokenSource::from_fn(move || {
            format!("t{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        });
        assert_eq!(src.current(), "t0");
        assert_eq!(src.current(), "t1");
        assert!(!format!("{:?}", TokenSource::fixed("secret")).contains("secret"));
    }
}
