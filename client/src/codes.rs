//! The server's error codes (docs/protocol.md "Errors"), as constants to compare
//! [`crate::Error::code`] against. Only names; what each means is in the protocol doc.

pub const UNAUTHORIZED: &str = "WS_UNAUTHORIZED";
pub const FORBIDDEN: &str = "WS_FORBIDDEN";
pub const INVALID_CHANNEL: &str = "WS_INVALID_CHANNEL";
pub const CHANNEL_NOT_FOUND: &str = "WS_CHANNEL_NOT_FOUND";
pub const SUBSCRIPTION_FAILED: &str = "WS_SUBSCRIPTION_FAILED";
pub const RATE_LIMITED: &str = "WS_RATE_LIMITED";
pub const CHANNEL_FULL: &str = "WS_CHANNEL_FULL";
pub const TIER_LIMIT: &str = "WS_TIER_LIMIT";
pub const PAYLOAD_TOO_LARGE: &str = "WS_PAYLOAD_TOO_LARGE";
pub const BAD_REQUEST: &str = "WS_BAD_REQUEST";
pub const INVALID_WEDDING_CONTEXT: &str = "WS_INVALID_WEDDING_CONTEXT";
pub const WEDDING_ISOLATION_VIOLATION: &str = "WS_WEDDING_ISOLATION_VIOLATION";
pub const OVERLOADED: &str = "WS_OVERLOADED";
pub const INTERNAL: &str = "WS_INTERNAL";
