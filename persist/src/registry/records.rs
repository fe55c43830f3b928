//! The rows the registry stores, as Rust values, and the checks they pass before they are
//! queued. Channels are `ringbearer_core::channel_state::ChannelMeta` itself (one definition of
//! what a channel's metadata is); the other tables have their record types here.
//!
//! Times are milliseconds since the Unix epoch as `u64`, like everywhere in `core`; SQLite
//! stores them as INTEGER (i64), so values past `i64::MAX` are refused as `Invalid`.

use super::error::RegistryError;
use std::fmt;

/// Longest identifier the registry stores (user, organization, wedding, idempotency key,
/// epoch, channel id). The protocol's own bounds are far lower (128 bytes for claims); this
/// is the registry's backstop so no call can write an unbounded row.
pub const ID_MAX_BYTES: usize = 1024;
/// Longest audit `detail`, as serialized JSON.
pub const AUDIT_DETAIL_MAX_BYTES: usize = 16 * 1024;
/// Most records one `query_audit` returns.
pub const AUDIT_QUERY_LIMIT_MAX: u32 = 1000;
/// Longest IANA time zone name accepted (the longest in tzdata is 32 bytes).
pub const TIME_ZONE_MAX_BYTES: usize = 64;

/// A wedding's calendar facts: the day of the event in its own time zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeddingRecord {
    pub wedding_id: String,
    pub organization_id: String,
    pub event_date: EventDate,
    /// IANA time zone name, e.g. `Europe/London`. Only its shape is checked here; the
    /// registry does not carry a time zone database.
    pub time_zone: String,
    pub updated_at_ms: u64,
    /// The presence watchdog's plan (schema version 5): the ceremony's local time
    /// `HH:MM`, the key roles, and the coordination channel when one was named. Checked
    /// for shape only (the server validates them before storing).
    pub ceremony_time: Option<String>,
    pub key_roles: Vec<String>,
    pub coordination_channel: Option<String>,
}

/// A calendar date, stored as `YYYY-MM-DD` text (proleptic Gregorian, years 1–9999).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventDate {
    year: u16,
    month: u8,
    day: u8,
}

impl EventDate {
    /// A valid calendar date, or `None` (31 April and 29 February 2027 are `None`).
    pub fn new(year: u16, month: u8, day: u8) -> Option<EventDate> {
        let leap =
            (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        ((1..=9999).contains(&year) && (1..=days).contains(&day)).then_some(EventDate {
            year,
            month,
            day,
        })
    }

    /// Exactly `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<EventDate> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u16> {
            let part = &s[r];
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())
                .flatten()
        };
        EventDate::new(num(0..4)?, num(5..7)? as u8, num(8..10)? as u8)
    }

    pub fn year(self) -> u16 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    pub fn day(self) -> u8 {
        self.day
    }
}

impl fmt::Display for EventDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Whether `tz` looks like an IANA time zone name (`UTC`, `Europe/London`,
/// `America/Argentina/Buenos_Aires`, `Etc/GMT+5`): 1–64 bytes of `A-Z a-z 0-9 / _ - +`,
/// no empty segment, no `.`.
pub fn is_time_zone_name(tz: &str) -> bool {
    !tz.is_empty()
        && tz.len() <= TIME_ZONE_MAX_BYTES
        && tz
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'))
        && tz.split('/').all(|seg| !seg.is_empty())
}

/// A user's subscription to a channel: it outlives connections (SPEC §2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub channel: String,
    /// The user's organization: a user is (`org`, `user_id`) (SPEC §1 identity).
    pub org: String,
    pub user_id: String,
    /// Last acknowledged message id (SPEC §2.3). Never moves backwards in the registry.
    pub cursor: u64,
    pub subscribed_at_ms: u64,
    /// The role the user's last subscribed connection held (`None`: not known — enrolled
    /// by a service, or a row from before schema version 3). An upsert without a role keeps
    /// the stored one.
    pub role: Option<String>,
}

/// One cumulative ack, for [`Registry::advance_cursors`](super::Registry::advance_cursors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorAck {
    pub channel: String,
    pub org: String,
    pub user_id: String,
    pub cursor: u64,
}

/// The id a publish with `key` got, remembered so a repeat returns it (SPEC §2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub channel: String,
    pub key: String,
    pub message_id: u64,
    pub created_at_ms: u64,
}

/// What an audit record is about. Stored as its lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A channel was created.
    Create,
    /// A channel was deleted.
    Delete,
    Subscribe,
    Unsubscribe,
    /// An action was refused by the access rule (tenant boundary, role, membership).
    Denied,
    /// An administrative change (permissions, members, limits).
    Admin,
    /// A credential was refused before any identity could be trusted (HTTP 401).
    Unauthorized,
    /// A connection refreshed its token in band (`op: token`).
    TokenRefresh,
    /// An `emergency` message was published (SPEC §2: always audited).
    Emergency,
}

impl AuditAction {
    pub const ALL: [AuditAction; 9] = [
        AuditAction::Create,
        AuditAction::Delete,
        AuditAction::Subscribe,
        AuditAction::Unsubscribe,
        AuditAction::Denied,
        AuditAction::Admin,
        AuditAction::Unauthorized,
        AuditAction::TokenRefresh,
        AuditAction::Emergency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Delete => "delete",
            AuditAction::Subscribe => "subscribe",
            AuditAction::Unsubscribe => "unsubscribe",
            AuditAction::Denied => "denied",
            AuditAction::Admin => "admin",
            AuditAction::Unauthorized => "unauthorized",
            AuditAction::TokenRefresh => "token_refresh",
            AuditAction::Emergency => "emergency",
        }
    }

    pub fn parse(s: &str) -> Option<AuditAction> {
        AuditAction::ALL.iter().copied().find(|a| a.as_str() == s)
    }
}

/// One audit event, as written.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub actor_user_id: String,
    pub actor_org: String,
    pub action: AuditAction,
    pub channel: Option<String>,
    /// The organization owning `channel` (or the wedding a refused create named): it sees
    /// the record as well as the actor's organization does.
    pub channel_org: Option<String>,
    /// Free-form JSON (at most [`AUDIT_DETAIL_MAX_BYTES`] serialized).
    pub detail: serde_json::Value,
}

/// One audit event, as read back: the entry and the id the registry gave it.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub entry: AuditEntry,
}

/// Which audit records to read: every given filter applies; newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records this organization may see: its own actors', and those on its channels.
    /// Applied before `limit`, so `limit` counts visible records.
    pub org: Option<String>,
    pub channel: Option<String>,
    pub actor_user_id: Option<String>,
    /// Inclusive lower bound on `at_ms`.
    pub from_ms: Option<u64>,
    /// Exclusive upper bound on `at_ms`.
    pub to_ms: Option<u64>,
    /// 1 to [`AUDIT_QUERY_LIMIT_MAX`].
    pub limit: u32,
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery {
            org: None,
            channel: None,
            actor_user_id: None,
            from_ms: None,
            to_ms: None,
            limit: 100,
        }
    }
}

/// Rows read from a table, with the rows that could not be read skipped and reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded<T> {
    pub rows: Vec<T>,
    pub warnings: Vec<RowWarning>,
}

/// A stored row that does not hold what this binary writes; it was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowWarning {
    pub table: &'static str,
    /// The row's key, as far as it could be read.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for RowWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "registry table {} row {}: skipped: {}",
            self.table, self.key, self.problem
        )
    }
}

// ---- checks made on the caller's side, before anything is queued ----

pub(crate) fn check_id(field: &str, v: &str) -> Result<(), RegistryError> {
    if v.is_empty() || v.len() > ID_MAX_BYTES {
        return Err(RegistryError::Invalid(format!(
            "{field} must be 1 to {ID_MAX_BYTES} bytes (got {})",
            v.len()
        )));
    }
    Ok(())
}

pub(crate) fn to_i64(field: &str, v: u64) -> Result<i64, RegistryError> {
    i64::try_from(v).map_err(|_| {
        RegistryError::Invalid(format!(
            "{field} {v} is past the registry's range (at most {})",
            i64::MAX
        ))
    })
}

pub(crate) fn check_wedding(w: &WeddingRecord) -> Result<(), RegistryError> {
    check_id("wedding_id", &w.wedding_id)?;
    check_id("organization_id", &w.organization_id)?;
    if !is_time_zone_name(&w.time_zone) {
        return Err(RegistryError::Invalid(format!(
            "time_zone {:?} is not an IANA time zone name",
            w.time_zone
        )));
    }
    to_i64("updated_at_ms", w.updated_at_ms)?;
    if let Some(t) = &w.ceremony_time {
        check_id("ceremony_time", t)?;
    }
    if let Some(c) = &w.coordination_channel {
        check_id("coordination_channel", c)?;
    }
    if w.key_roles.len() > KEY_ROLES_MAX {
        return Err(RegistryError::Invalid(format!(
            "key_roles: at most {KEY_ROLES_MAX} roles"
        )));
    }
    for r in &w.key_roles {
        check_id("key_roles", r)?;
    }
    Ok(())
}

/// Most key roles a stored wedding lists (the server bounds it far lower).
pub const KEY_ROLES_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_dates_are_real_calendar_days() {
        let d = EventDate::parse("2028-02-29").unwrap();
        assert_eq!((d.year(), d.month(), d.day()), (2028, 2, 29));
        assert_eq!(d.to_string(), "2028-02-29");
        for bad in [
            "2027-02-29",
            "1900-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "0000-01-01",
            "2026-1-01",
            "2026/01/01",
            "+026-01-01",
            "2026-01-0a",
            "",
        ] {
            assert_eq!(EventDate::parse(bad), None, "{bad}");
        }
        assert!(EventDate::parse("2000-02-29").is_some());
    }

    #[test]
    fn time_zone_names_are_shape_checked() {
        for ok in [
            "UTC",
            "Europe/London",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
        ] {
            assert!(is_time_zone_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Europe/",
            "/UTC",
            "Europe//London",
            "../etc",
            "UTC;DROP",
            "Ä",
        ] {
            assert!(!is_time_zone_name(bad), "{bad}");
        }
    }

    #[test]
    fn audit_actions_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(a));
        }
        assert_eq!(AuditAction::parse("publish"), None);
    }
}
