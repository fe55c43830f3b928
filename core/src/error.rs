//! The SPEC §4 error codes, and whether a client should retry each.

use std::fmt;

/// Every refusal the server gives a client carries one of these (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    InvalidChannel,
    ChannelNotFound,
    SubscriptionFailed,
    RateLimited,
    ChannelFull,
    TierLimit,
    PayloadTooLarge,
    BadRequest,
    InvalidWeddingContext,
    WeddingIsolationViolation,
    Overloaded,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::InvalidChannel,
        ErrorCode::ChannelNotFound,
        ErrorCode::SubscriptionFailed,
        ErrorCode::RateLimited,
        ErrorCode::ChannelFull,
        ErrorCode::TierLimit,
        ErrorCode::PayloadTooLarge,
        ErrorCode::BadRequest,
        ErrorCode::InvalidWeddingContext,
        ErrorCode::WeddingIsolationViolation,
        ErrorCode::Overloaded,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "WS_UNAUTHORIZED",
            ErrorCode::Forbidden => "WS_FORBIDDEN",
            ErrorCode::InvalidChannel => "WS_INVALID_CHANNEL",
            ErrorCode::ChannelNotFound => "WS_CHANNEL_NOT_FOUND",
            ErrorCode::SubscriptionFailed => "WS_SUBSCRIPTION_FAILED",
            ErrorCode::RateLimited => "WS_RATE_LIMITED",
            ErrorCode::ChannelFull => "WS_CHANNEL_FULL",
            ErrorCode::TierLimit => "WS_TIER_LIMIT",
            ErrorCode::PayloadTooLarge => "WS_PAYLOAD_TOO_LARGE",
            ErrorCode::BadRequest => "WS_BAD_REQUEST",
            ErrorCode::InvalidWeddingContext => "WS_INVALID_WEDDING_CONTEXT",
            ErrorCode::WeddingIsolationViolation => "WS_WEDDING_ISOLATION_VIOLATION",
            ErrorCode::Overloaded => "WS_OVERLOADED",
            ErrorCode::Internal => "WS_INTERNAL",
        }
    }

    /// The code named `s` (`"WS_RATE_LIMITED"` → `RateLimited`).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// Whether repeating the same request later can succeed without changing it.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Overloaded | ErrorCode::Internal
        )
    }

    /// The HTTP status that fits this code (for the upgrade refusal and the REST API).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::WeddingIsolationViolation => 403,
            ErrorCode::ChannelNotFound => 404,
            ErrorCode::ChannelFull | ErrorCode::SubscriptionFailed => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::TierLimit => 429,
            ErrorCode::InvalidChannel
            | ErrorCode::BadRequest
            | ErrorCode::InvalidWeddingContext => 400,
            ErrorCode::Overloaded => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the code plus a human sentence. Expected conditions, not bugs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, with `RateLimited`.
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(c.as_str().starts_with("WS_"));
            assert!(seen.insert(c.as_str()));
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert!(ErrorCode::Overloaded.retryable());
        assert!(!ErrorCode::BadRequest.retryable());
    }
}
