//! Every protocol and domain bound in one place: its default and the reason beside it.
//! The runtime's own bounds (buffers, queues, timeouts) are in `ringbearer_io::IoConfig`,
//! which embeds this struct. Both load from the `[limits]`/`[io]` tables of the config file.

use crate::access::Tier;
use serde::{Deserialize, Serialize};

/// One tier's limits (SPEC §1). Every field must be given when a tier is configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    /// Publishes per user per `rate_window_ms`; the next gets `WS_RATE_LIMITED`.
    pub messages_per_min: u32,
    /// Open connections per user; the next upgrade gets HTTP 429 `WS_TIER_LIMIT`.
    pub connections_per_user: u32,
    /// Channels an organization may create; the next gets `WS_TIER_LIMIT`.
    pub channels_per_org: u32,
    /// Channels a user may be subscribed to at once, over all its connections.
    pub subscriptions_per_user: u32,
}

impl TierLimits {
    const fn new(m: u32, c: u32, ch: u32, s: u32) -> Self {
        TierLimits {
            messages_per_min: m,
            connections_per_user: c,
            channels_per_org: ch,
            subscriptions_per_user: s,
        }
    }
}

/// The tier table; tiers left out of the config keep the SPEC §1 defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tiers {
    pub free: TierLimits,
    pub starter: TierLimits,
    pub professional: TierLimits,
    pub scale: TierLimits,
    pub enterprise: TierLimits,
}

impl Default for Tiers {
    fn default() -> Self {
        Tiers {
            free: TierLimits::new(10, 2, 3, 3),
            starter: TierLimits::new(20, 5, 10, 5),
            professional: TierLimits::new(100, 20, 50, 20),
            scale: TierLimits::new(500, 50, 200, 50),
            enterprise: TierLimits::new(1000, 100, 500, 100),
        }
    }
}

impl Tiers {
    pub fn get(&self, t: Tier) -> &TierLimits {
        match t {
            Tier::Free => &self.free,
            Tier::Starter => &self.starter,
            Tier::Professional => &self.professional,
            Tier::Scale => &self.scale,
            Tier::Enterprise => &self.enterprise,
        }
    }
}

/// Highest `state_max_bytes_per_channel` accepted: a channel's checkpoint record (its
/// metadata and every document) must stay under the write-ahead log's 1 MiB record body
/// (`ringbearer_persist::format::BODY_MAX_BYTES`), with room for the metadata (named
/// members included) and each document's name, version and writer.
pub const STATE_BYTES_PER_CHANNEL_CEILING: usize = 640 * 1024;

/// Highest `max_json_depth` accepted: below serde_json's recursion limit (128), so the
/// setting, not the parser, decides and words the refusal.
pub const MAX_JSON_DEPTH_CEILING: usize = 100;

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
    /// Most presence entries in one frame (SPEC §3): `subscribed` lists the first this many
    /// connections in join order, with `presence_total`; diffs describe that window. The
    /// default equals `max_subscribers`, so a default channel always lists everyone.
    pub presence_list_max: usize,
    /// Largest `ref`, `event`, `idempotency_key`, `target_user_id`.
    pub max_field_bytes: usize,
    /// Largest `wedding_context` object.
    pub max_wedding_context_bytes: usize,
    /// Deepest nesting of arrays and objects in a request's JSON (the request object itself
    /// is depth 1), on both doors (`/ws` frames and REST bodies): deeper is refused with
    /// `WS_BAD_REQUEST` before it is parsed. Bounds the work (and the stack) one request
    /// costs every subscriber's decoder.
    pub max_json_depth: usize,
    /// Channels per shard. Bounds memory against a client creating names in a loop until
    /// the policy issue's per-organization tier limits land.
    pub max_channels_per_shard: usize,
    /// Channels one connection may be subscribed to at once.
    pub max_subscriptions_per_connection: usize,
    /// Named members of a private channel.
    pub max_members_per_channel: usize,
    /// Publishes per channel per `rate_window_ms` (SPEC §1: 100 a minute); the next gets
    /// `WS_RATE_LIMITED` with `retry_after`.
    pub channel_messages_per_min: u32,
    /// The "minute" of every per-minute rate. Bursts up to the full rate are allowed; the
    /// bucket refills continuously.
    pub rate_window_ms: u64,
    /// On a wedding's day (its `event_date` in its time zone), its channels get this many
    /// times the per-channel publish rate, and publishes to them this many times the user's
    /// `messages_per_min` (SPEC §1 "Wedding day": 3×).
    pub wedding_day_rate_multiplier: u32,
    /// The abuse ceiling of `critical` publishes on a wedding-day channel, per user per
    /// `rate_window_ms`: they skip the user and channel rates (SPEC §1) but not this; the
    /// next gets `WS_RATE_LIMITED` with `retry_after`.
    pub critical_messages_per_min: u32,
    /// The abuse ceiling of `emergency` publishes, per user per `rate_window_ms`, on any
    /// day: they skip every other rate (SPEC §2) but not this; the next gets
    /// `WS_RATE_LIMITED` with `retry_after`.
    pub emergency_messages_per_min: u32,
    /// Roles that may publish `emergency` on any channel they may write to, besides the
    /// roles of the channel's own `admin` list (and its organization's `admin`/`service`).
    /// Empty by default: the channel's admin list decides.
    pub emergency_roles: Vec<crate::access::Role>,
    /// Shared-state documents per channel (docs/decisions.md §31); a write creating one
    /// more is refused with `WS_BAD_REQUEST`.
    pub state_docs_per_channel: usize,
    /// Largest value of one shared-state document, as JSON (after a patch is applied too);
    /// over it: `WS_PAYLOAD_TOO_LARGE`. At most `max_payload_bytes` (a change is stored and
    /// delivered as a message).
    pub state_max_value_bytes: usize,
    /// All of one channel's shared-state documents' values together, as JSON; a write past
    /// it: `WS_PAYLOAD_TOO_LARGE`. They are logged in one checkpoint record, so at most
    /// [`STATE_BYTES_PER_CHANNEL_CEILING`] (below the log's 1 MiB record body).
    pub state_max_bytes_per_channel: usize,
    pub tiers: Tiers,
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
            presence_list_max: 100,
            max_field_bytes: 128,
            max_wedding_context_bytes: 1024,
            max_json_depth: 64,
            max_channels_per_shard: 100_000,
            max_subscriptions_per_connection: 256,
            max_members_per_channel: 256,
            channel_messages_per_min: 100,
            rate_window_ms: 60_000,
            wedding_day_rate_multiplier: 3,
            critical_messages_per_min: 60,
            emergency_messages_per_min: 30,
            emergency_roles: Vec::new(),
            state_docs_per_channel: 64,
            state_max_value_bytes: 60 * 1024,
            state_max_bytes_per_channel: 512 * 1024,
            tiers: Tiers::default(),
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
            ("presence_list_max", self.presence_list_max),
            ("max_field_bytes", self.max_field_bytes),
            ("max_json_depth", self.max_json_depth),
            ("state_docs_per_channel", self.state_docs_per_channel),
            ("state_max_value_bytes", self.state_max_value_bytes),
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
        if self.wedding_day_rate_multiplier == 0 {
            return Err("limits.wedding_day_rate_multiplier must be at least 1".into());
        }
        if self.critical_messages_per_min == 0 {
            return Err("limits.critical_messages_per_min must be greater than 0".into());
        }
        if self.emergency_messages_per_min == 0 {
            return Err("limits.emergency_messages_per_min must be greater than 0".into());
        }
        if self.rate_window_ms == 0 {
            return Err("limits.rate_window_ms must be greater than 0".into());
        }
        if self.message_retention_hours == 0 {
            return Err("limits.message_retention_hours must be greater than 0".into());
        }
        if self.max_json_depth > MAX_JSON_DEPTH_CEILING {
            return Err(format!(
                "limits.max_json_depth must be at most {MAX_JSON_DEPTH_CEILING} (the JSON parser's own recursion limit is 128)"
            ));
        }
        if self.max_request_bytes < self.max_payload_bytes {
            return Err(
                "limits.max_request_bytes must be at least limits.max_payload_bytes".into(),
            );
        }
        if self.state_max_value_bytes > self.max_payload_bytes {
            return Err(
                "limits.state_max_value_bytes must be at most limits.max_payload_bytes".into(),
            );
        }
        if self.state_max_bytes_per_channel < self.state_max_value_bytes
            || self.state_max_bytes_per_channel > STATE_BYTES_PER_CHANNEL_CEILING
        {
            return Err(format!(
                "limits.state_max_bytes_per_channel must be between limits.state_max_value_bytes and {STATE_BYTES_PER_CHANNEL_CEILING} (a channel's checkpoint is one log record)"
            ));
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
        assert_eq!(l.channel_messages_per_min, 100);
        assert_eq!(l.wedding_day_rate_multiplier, 3);
        let t = l.tiers.get(Tier::Starter);
        assert_eq!(
            (
                t.messages_per_min,
                t.connections_per_user,
                t.channels_per_org,
                t.subscriptions_per_user
            ),
            (20, 5, 10, 5)
        );
        assert_eq!(l.tiers.get(Tier::Enterprise).messages_per_min, 1000);
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
        // A channel's documents must fit one checkpoint record, and a value one payload.
        let l = Limits {
            state_max_bytes_per_channel: 1 << 20,
            ..Limits::default()
        };
        assert!(l
            .validate()
            .unwrap_err()
            .contains("state_max_bytes_per_channel"));
        let l = Limits {
            state_max_value_bytes: 70_000,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().contains("state_max_value_bytes"));
    }
}
