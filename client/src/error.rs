//! The crate's one error enum, split by what the caller should do about it, and the reason
//! a connection was lost.
//!
//! Every variant holds plain data (strings and numbers), so [`Error`] is `Clone` and can
//! travel inside [`crate::Event`]s. This module does not decide when an error happens; the
//! client and the driver do.

use std::time::Duration;

/// Everything a [`crate::Client`] call or [`crate::Client::connect`] can fail with.
///
/// [`Error::is_retryable`] says whether the same call may succeed later unchanged.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The [`crate::ClientConfig`] is unusable (bad URL, zero buffer, …). Fix the config.
    #[error("invalid client config: {0}")]
    InvalidConfig(String),

    /// The server refused the upgrade with HTTP 401 (missing, malformed, expired or wrongly
    /// signed token). `message` is the server's `error.message` from the JSON body.
    #[error("unauthorized: {message}")]
    Unauthorized { message: String },

    /// The server refused the upgrade with another HTTP status (e.g. 503 at capacity).
    #[error("upgrade refused with HTTP {status}: {message}")]
    Http { status: u16, message: String },

    /// The TCP connection or the WebSocket handshake failed or timed out.
    #[error("connect failed: {0}")]
    Connect(String),

    /// The request was issued while the client is disconnected and reconnecting.
    /// Retryable: wait for [`crate::Event::Reconnected`].
    #[error("not connected (reconnecting)")]
    NotConnected,

    /// The connection was lost while the request was waiting for its reply. The server may
    /// or may not have processed it (a `publish` with an `idempotency_key` is safe to repeat).
    #[error("connection lost before the reply arrived")]
    Disconnected,

    /// No reply within [`crate::ClientConfig::request_timeout`].
    #[error("no reply within the request timeout")]
    Timeout,

    /// The client was closed ([`crate::Client::close`]) or its background task has ended.
    #[error("client closed")]
    Closed,

    /// The server answered the request with an `error` op (docs/protocol.md "Errors").
    #[error("server error {code}: {message}")]
    Server {
        /// `WS_FORBIDDEN`, `WS_RATE_LIMITED`, … (see [`crate::codes`]).
        code: String,
        message: String,
        retryable: bool,
        /// From `retry_after` (seconds); sent with `WS_RATE_LIMITED`.
        retry_after: Option<Duration>,
    },

    /// The encoded request is larger than [`crate::ClientConfig::max_request_bytes`]; it was
    /// not sent (the server would refuse it, or close the connection for an oversized frame).
    #[error("request is {bytes} bytes; the limit is {limit}")]
    RequestTooLarge { bytes: usize, limit: usize },

    /// The server sent something this client does not understand as the reply to a request
    /// (e.g. `pong` to a `publish`). A bug on one side.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// True when repeating the same call later may succeed: transport trouble, timeouts,
    /// 5xx/429 upgrade refusals, and server errors marked `retryable`.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotConnected | Error::Disconnected | Error::Timeout | Error::Connect(_) => true,
            Error::Http { status, .. } => *status == 429 || *status >= 500,
            Error::Server { retryable, .. } => *retryable,
            Error::InvalidConfig(_)
            | Error::Unauthorized { .. }
            | Error::Closed
            | Error::RequestTooLarge { .. }
            | Error::Protocol(_) => false,
        }
    }

    /// The server's error code (`WS_…`), when this is a [`Error::Server`], or
    /// `WS_UNAUTHORIZED` for [`Error::Unauthorized`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            Error::Unauthorized { .. } => Some(crate::codes::UNAUTHORIZED),
            _ => None,
        }
    }
}

/// Why a connection ended, carried by [`crate::Event::Disconnected`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server sent a close frame. `code` is 1005 when the frame had no code.
    /// Ringbearer's codes: 1000/1001 shutdown, 1007 bad UTF-8, 1008 token expired,
    /// 1009 frame too large, 1011 internal, 4000 heartbeat timeout, 4001 slow consumer.
    Closed { code: u16, reason: String },
    /// The socket ended without a close frame, or a read or write failed.
    Transport(String),
    /// Nothing (not even a ping) arrived for [`crate::ClientConfig::idle_timeout`].
    IdleTimeout,
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::Closed { code, reason } => {
                write!(f, "closed by server ({code}: {reason})")
            }
            DisconnectReason::Transport(e) => write!(f, "transport: {e}"),
            DisconnectReason::IdleTimeout => f.write_str("idle timeout"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_split() {
        assert!(Error::NotConnected.is_retryable());
        assert!(Error::Disconnected.is_retryable());
        assert!(Error::Timeout.is_retryable());
        assert!(Error::Http {
            status: 503,
            message: String::new()
        }
        .is_retryable());
        assert!(Error::Http {
            status: 429,
            message: String::new()
        }
        .is_retryable());
        assert!(!Error::Http {
            status: 400,
            message: String::new()
        }
        .is_retryable());
        assert!(!Error::Unauthorized {
            message: "x".into()
        }
        .is_retryable());
        assert!(!Error::Closed.is_retryable());
        let rate = Error::Server {
            code: "WS_RATE_LIMITED".into(),
            message: String::new(),
            retryable: true,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(rate.is_retryable());
        assert_eq!(rate.code(), Some("WS_RATE_LIMITED"));
        assert_eq!(
            Error::Unauthorized {
                message: String::new()
            }
            .code(),
            Some("WS_UNAUTHORIZED")
        );
    }
}
