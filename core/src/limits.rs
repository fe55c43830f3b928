//! Every protocol and domain bound in one place: its default and the reason beside it.
//! The runtime's own bounds (buffers, queues, timeouts) are in `ringbearer_io::IoConfig`,
//! which embeds this struct. Both load from the `[limits]`/`[io]` tables of the config file.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest `payload` of a publish, as sent (SPEC §2: 64 KiB default).
    pub max_payload_bytes: usize,
    /// Largest request frame answered with `WS_PAYLOAD_TOO_LARGE` while the connection
    /// stays open; payload plus envelope room. Must be ≥ `max_payload_bytes`.
    pub max_request_bytes: usize,
    /// Hard frame limit: a WebSocket message over this closes the connection with 1009,
    /// refused from the frame header before the body is buffered.
    pub max_frame_bytes: usize,
    /// Messages kept per channel for resume (SPEC §2.2: newest 100).
    pub max_queued: usize,
    /// Age limit of kept messages (SPEC §2.2: 24 h).
    pub message_retention_hours: u64,
    /// Subscribed users per channel; the next gets `WS_CHANNEL_FULL` (SPEC §1: 100).
    pub max_subscribers: usize,
    /// How long an `idempotency_key` is remembered (SPEC §2.4: 10 min).
    pub idempotency_window_ms: u64,
    /// Idempotency keys remembered per channel; the oldest are forgotten first. Bounds
    /// memory against a client that sends a fresh key with every publish.
    pub idempotency_max_keys_per_channel: usize,
    /// Largest presence `meta` object.
    pub max_presence_meta_bytes: usize,
    /// Largest `ref`, `event`, `idempotency_key`, `target_user_id`.
    pub max_field_bytes: usize,
    /// Largest `wedding_context` object.
    pub max_wedding_context_bytes: usize,
    /// Channels per shard. Bounds memory against a client creating names in a loop until
    /// the policy issue's per-organization tier limits land.
    pub max_channels_per_shard: usize,
    /// Channels one connection may be subscribed to at once.
    pub max_subscriptions_per_connection: usize,
    /// Named members of a private channel.
    pub max_members_per_channel: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 64 * 1024,
            max_request_bytes: 80 * 1024,
            max_frame_bytes: 1024 * 1024,
            max_queued: 100,
            message_retention_hours: 24,
            max_subscribers: 100,
            idempotency_window_ms: 10 * 60 * 1000,
            idempotency_max_keys_per_channel: 4096,
            max_presence_meta_bytes: 1024,
            max_field_bytes: 128,
            max_wedding_context_bytes: 1024,
            max_channels_per_shard: 100_000,
            max_subscriptions_per_connection: 256,
            max_members_per_channel: 256,
        }
    }
}

impl Limits {
    pub fn retention_ms(&self) -> u64 {
        self.message_retention_hours.saturating_mul(3_600_000)
    }

    /// How the bounds must relate. The error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_payload_bytes", self.max_payload_bytes),
            ("max_queued", self.max_queued),
            ("max_subscribers", self.max_subscribers),
            ("max_field_bytes", self.max_field_bytes),
            ("max_channels_per_shard", self.max_channels_per_shard),
            (
                "max_subscriptions_per_connection",
                self.max_subscriptions_per_connection,
            ),
            (
                "idempotency_max_keys_per_channel",
                self.idempotency_max_keys_per_channel,
            ),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("limits.{name} must be greater than 0"));
            }
        }
        if self.message_retention_hours == 0 {
            return Err("limits.message_retention_hours must be greater than 0".into());
        }
        if self.max_request_bytes < self.max_payload_bytes {
            return Err(
                "limits.max_request_bytes must be at least limits.max_payload_bytes".into(),
            );
        }
        if self.max_frame_bytes < self.max_request_bytes {
            return Err("limits.max_frame_bytes must be at least limits.max_request_bytes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let l = Limits::default();
        l.validate().unwrap();
        assert_eq!(l.max_payload_bytes, 65_536);
        assert_eq!(l.max_queued, 100);
        assert_eq!(l.max_subscribers, 100);
        assert_eq!(l.retention_ms(), 86_400_000);
    }

    #[test]
    fn validate_names_the_field() {
        let l = Limits {
            max_frame_bytes: 10,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().contains("max_frame_bytes"));
        let l = Limits {
            max_queued: 0,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().contains("max_queued"));
    }
}
