//! The weddings the server knows (SPEC §1 "Weddings", "Wedding day", "Saturday mode"): a
//! server-wide, read-mostly table of `{id, organization_id, event_date, time_zone}`, and the
//! calendar clock every wedding-day and Saturday decision reads.
//!
//! The table is shared by every shard (an `Arc` behind a `parking_lot::RwLock`): the owner
//! shard asks it on each publish whether the channel's wedding is today, the heartbeat sweep
//! asks once per round which weddings are. Writes come from `POST /api/websocket/weddings`
//! (and the registry at start); the caller persists them through the `Catalog`. The
//! calendar rules themselves are pure functions in `ringbearer_core::calendar`.
//!
//! The calendar clock is the wall clock, shifted when the config's `[clock] start` is set
//! (tests and rehearsals only: "it is Saturday 13 June now"). It never drives rate windows,
//! heartbeats or token expiry, which keep the real clocks.

use parking_lot::RwLock;
use ringbearer_core::calendar::{self, LocalTime, Weekday, Zone};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::{ChannelName, Claims, Role};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One registered wedding, validated: `event_date` is a real `YYYY-MM-DD` day and
/// `time_zone` a known IANA zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Wedding {
    pub id: String,
    pub organization_id: String,
    /// `YYYY-MM-DD`, the day in the wedding's own time zone.
    pub event_date: String,
    /// IANA name, e.g. `Europe/London`.
    pub time_zone: String,
    /// `[start, end)` of the event day in Unix ms (23 or 25 hours across a DST change).
    day_ms: (u64, u64),
    /// What the presence watchdog watches (SPEC §3; docs/decisions.md §30).
    pub watch: Watch,
}

/// A wedding's watchdog plan: when the ceremony is, which roles must be present from the
/// lead time before it, and where alerts go. Empty (no ceremony time or no key roles):
/// the watchdog does not watch the wedding's roles (battery alerts still go to the
/// coordination channel on the wedding day).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Watch {
    /// Local time in the wedding's `time_zone` on its `event_date`.
    pub ceremony_time: Option<LocalTime>,
    /// The ceremony as an instant (Unix ms), from `ceremony_time`.
    pub ceremony_ms: Option<u64>,
    /// Roles of which at least one connection must be present, in the order given.
    pub key_roles: Vec<Role>,
    /// Where alerts are published: as registered, else `wedding:coordination:{wedding_id}`.
    pub coordination_channel: Option<ChannelName>,
    /// Whether `coordination_channel` was named at registration (else it is the default).
    pub coordination_named: bool,
}

/// Most key roles a wedding lists (every role once).
pub const KEY_ROLES_MAX: usize = Role::ALL.len();

/// The coordination channel of wedding `id` when none is named, if `id` fits a channel id.
pub fn default_coordination_channel(id: &str) -> Option<ChannelName> {
    ChannelName::parse(&format!("wedding:coordination:{id}")).ok()
}

/// Longest `id`/`organization_id` accepted (the protocol's field bound).
const ID_MAX_BYTES: usize = 128;

fn check_id(field: &str, v: &str) -> Result<(), Refusal> {
    if v.is_empty() || v.len() > ID_MAX_BYTES || v.chars().any(|c| c.is_control()) {
        return Err(Refusal::new(
            ErrorCode::InvalidWeddingContext,
            format!("{field} must be 1 to {ID_MAX_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

impl Wedding {
    /// Validates and builds a wedding. Refusals are `WS_INVALID_WEDDING_CONTEXT` and name
    /// the field (`wedding_id`, `organization_id`, `event_date`, `time_zone`).
    pub fn new(
        id: &str,
        organization_id: &str,
        event_date: &str,
        time_zone: &str,
    ) -> Result<Wedding, Refusal> {
        check_id("wedding_id", id)?;
        if id == "*" {
            return Err(Refusal::new(
                ErrorCode::InvalidWeddingContext,
                "wedding_id `*` is reserved for tokens",
            ));
        }
        check_id("organization_id", organization_id)?;
        let date = calendar::parse_date(event_date)?;
        let zone = Zone::parse(time_zone)?;
        Ok(Wedding {
            id: id.to_owned(),
            organization_id: organization_id.to_owned(),
            event_date: event_date.to_owned(),
            time_zone: zone.name().to_owned(),
            day_ms: zone.day_span_ms(date),
            watch: Watch {
                coordination_channel: default_coordination_channel(id),
                ..Watch::default()
            },
        })
    }

    /// The wedding with its watchdog plan (docs/decisions.md §30): `ceremony_time` as
    /// `HH:MM`, `key_roles` as role names (each once), `coordination_channel` a channel
    /// name (default `wedding:coordination:{wedding_id}`, which must then be a valid
    /// name). Refusals are `WS_INVALID_WEDDING_CONTEXT` naming the field.
    pub fn with_watch(
        mut self,
        ceremony_time: Option<&str>,
        key_roles: &[String],
        coordination_channel: Option<&str>,
    ) -> Result<Wedding, Refusal> {
        let bad = |m: String| Refusal::new(ErrorCode::InvalidWeddingContext, m);
        let mut w = Watch::default();
        if let Some(t) = ceremony_time {
            let t = calendar::parse_local_time(t)?;
            let date = calendar::parse_date(&self.event_date)?;
            let zone = Zone::parse(&self.time_zone)?;
            w.ceremony_time = Some(t);
            w.ceremony_ms = Some(zone.local_time_ms(date, t));
        }
        if key_roles.len() > KEY_ROLES_MAX {
            return Err(bad(format!(
                "key_roles lists at most {KEY_ROLES_MAX} roles"
            )));
        }
        for r in key_roles {
            let role = Role::parse(r).ok_or_else(|| {
                bad(format!(
                    "key_roles: `{}` is not a role",
                    r.chars().take(32).collect::<String>().escape_default()
                ))
            })?;
            if w.key_roles.contains(&role) {
                return Err(bad(format!("key_roles lists `{r}` twice")));
            }
            w.key_roles.push(role);
        }
        match coordination_channel {
            Some(c) => {
                let name = ChannelName::parse(c)
                    .map_err(|e| bad(format!("coordination_channel: {}", e.message)))?;
                w.coordination_channel = Some(name);
                w.coordination_named = true;
            }
            None => {
                w.coordination_channel = default_coordination_channel(&self.id);
                if w.coordination_channel.is_none() && !w.key_roles.is_empty() {
                    return Err(bad(format!(
                        "coordination_channel: wedding:coordination:{} is not a channel name; name one",
                        self.id.escape_default()
                    )));
                }
            }
        }
        self.watch = w;
        Ok(self)
    }

    /// This wedding (new facts) with `old`'s watchdog plan, re-anchored on the new date
    /// and zone: a create that moves a wedding's date keeps its ceremony time and roles.
    pub fn keeping_watch_of(self, old: &Wedding) -> Wedding {
        let (time, roles, channel) = old.watch_fields();
        self.clone()
            .with_watch(time.as_deref(), &roles, channel.as_deref())
            .unwrap_or(self)
    }

    /// The plan as registered: `ceremony_time`, `key_roles`, and `coordination_channel`
    /// when one was named.
    pub fn watch_fields(&self) -> (Option<String>, Vec<String>, Option<String>) {
        (
            self.watch.ceremony_time.map(|t| t.to_string()),
            self.watch
                .key_roles
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            self.watch
                .coordination_channel
                .as_ref()
                .filter(|_| self.watch.coordination_named)
                .map(|c| c.as_str().to_owned()),
        )
    }

    /// The ceremony instant (Unix ms), if a ceremony time is set.
    pub fn ceremony_ms(&self) -> Option<u64> {
        self.watch.ceremony_ms
    }

    /// Whether `now_ms` (calendar clock) falls on the event day in the wedding's zone.
    pub fn is_wedding_day(&self, now_ms: u64) -> bool {
        calendar::in_span(self.day_ms, now_ms)
    }

    /// `[start, end)` of the event day, Unix ms.
    pub fn day_span_ms(&self) -> (u64, u64) {
        self.day_ms
    }
}

/// The weddings table; clones share it.
///
/// Ownership (SPEC §1): a wedding id belongs to the organization that registered it first
/// or created the first channel naming it. Registered weddings carry their owner
/// (`organization_id`); a wedding only named by channels is in `claims`, with the creation
/// time of its first channel, so a restart (which replays channels shard by shard, in no
/// particular order) gives it to the same organization again.
#[derive(Clone, Default)]
pub struct Weddings {
    inner: Arc<RwLock<HashMap<String, Wedding>>>,
    claims: Arc<RwLock<HashMap<String, Claim>>>,
    /// Most weddings kept (`io.max_weddings`); 0 until set by the server (no bound).
    max: usize,
}

/// Which weddings are today, taken once per heartbeat round.
#[derive(Debug, Default, PartialEq)]
pub struct Today {
    ids: HashSet<String>,
    orgs: HashSet<String>,
}

impl Today {
    /// Whether a token reaches a wedding that is today: listed by id, or `*` (org-wide
    /// roles) with a wedding of its own organization today (the rule of
    /// `Claims::reaches_wedding`).
    pub fn reaches(&self, c: &Claims) -> bool {
        c.weddings.iter().any(|w| {
            if w == "*" {
                c.role.is_org_wide() && self.orgs.contains(&c.org)
            } else {
                self.ids.contains(w)
            }
        })
    }
}

/// Who owns a wedding only named by channels: the organization of its earliest channel,
/// and how many of that organization's channels name it.
#[derive(Clone, Debug)]
struct Claim {
    org: String,
    at_ms: u64,
    channels: u32,
}

impl Weddings {
    /// An empty table holding at most `max` weddings.
    pub fn with_capacity(max: usize) -> Weddings {
        Weddings {
            inner: Arc::default(),
            claims: Arc::default(),
            max,
        }
    }

    /// The organization owning wedding `id`, if any does.
    pub fn owner(&self, id: &str) -> Option<String> {
        if let Some(w) = self.inner.read().get(id) {
            return Some(w.organization_id.clone());
        }
        self.claims.read().get(id).map(|c| c.org.clone())
    }

    /// A channel of `org` naming wedding `id` was created at `at_ms`: if nobody owns the
    /// wedding, the earliest such channel's organization does. Returns the owner. Each
    /// claim by the owning organization is counted, so [`Weddings::unclaim`] of a channel
    /// that was never stored gives the wedding up only when no other channel holds it.
    pub fn claim(&self, id: &str, org: &str, at_ms: u64) -> String {
        if let Some(w) = self.inner.read().get(id) {
            return w.organization_id.clone();
        }
        let mut claims = self.claims.write();
        let e = claims.entry(id.to_owned()).or_insert_with(|| Claim {
            org: org.to_owned(),
            at_ms,
            channels: 0,
        });
        if e.org == org {
            e.channels += 1;
            e.at_ms = e.at_ms.min(at_ms);
        } else if at_ms < e.at_ms {
            // An earlier channel of another organization (restore order): it owns it.
            *e = Claim {
                org: org.to_owned(),
                at_ms,
                channels: 1,
            };
        }
        e.org.clone()
    }

    /// A channel of `org` that claimed wedding `id` was never stored (its create was
    /// refused by the log, or the log failed): its claim is given back, and the wedding is
    /// nobody's again if no other channel of `org` holds it.
    pub fn unclaim(&self, id: &str, org: &str) {
        let mut claims = self.claims.write();
        if let Some(e) = claims.get_mut(id).filter(|e| e.org == org) {
            e.channels = e.channels.saturating_sub(1);
            if e.channels == 0 {
                claims.remove(id);
            }
        }
    }

    /// `org` is about to register wedding `id` (REST, before its awaited registry write):
    /// `WS_FORBIDDEN` if another organization owns it (registered or claimed); else, if not
    /// registered yet, a claim is taken (`Ok(true)`; [`Weddings::unclaim`] it once stored or
    /// failed), so a second organization registering it meanwhile stores nothing. Dated 0:
    /// no channel created meanwhile displaces it as "earlier", whatever its clock read.
    pub fn reserve(&self, id: &str, org: &str) -> Result<bool, Refusal> {
        const WHY: &str = "that wedding belongs to another organization";
        // The table's lock first, as in `upsert`: no registration slips in between.
        let inner = self.inner.read();
        let mut claims = self.claims.write();
        let owner = inner.get(id).map(|w| &w.organization_id);
        let owner = owner.or_else(|| claims.get(id).map(|c| &c.org));
        if owner.is_some_and(|o| o != org) {
            return Err(Refusal::new(ErrorCode::Forbidden, WHY));
        }
        if inner.contains_key(id) {
            return Ok(false);
        }
        let (org, at_ms, channels) = (org.to_owned(), 0, 0);
        let e = claims.entry(id.to_owned()).or_insert(Claim {
            org,
            at_ms,
            channels,
        });
        e.channels += 1;
        e.at_ms = 0;
        Ok(true)
    }

    /// Inserts or replaces a wedding; returns it as stored. A wedding keeps its owner:
    /// registering one that another organization owns (registered, or named by its first
    /// channel) is `WS_FORBIDDEN`. Past `io.max_weddings` a new one is `WS_OVERLOADED`.
    pub fn upsert(&self, w: Wedding) -> Result<Wedding, Refusal> {
        let mut map = self.inner.write();
        let claimed = self.claims.read().get(&w.id).map(|c| c.org.clone());
        let owner = map
            .get(&w.id)
            .map(|old| old.organization_id.clone())
            .or(claimed);
        if owner.is_some_and(|o| o != w.organization_id) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "this wedding belongs to another organization: only its owner changes its date or zone",
            ));
        }
        match map.get(&w.id) {
            None if self.max > 0 && map.len() >= self.max => {
                return Err(Refusal::new(
                    ErrorCode::Overloaded,
                    format!("at most {} weddings (io.max_weddings)", self.max),
                ));
            }
            _ => {}
        }
        map.insert(w.id.clone(), w.clone());
        Ok(w)
    }

    pub fn get(&self, id: &str) -> Option<Wedding> {
        self.inner.read().get(id).cloned()
    }

    /// Whether wedding `id` is known and today at `now_ms` (calendar clock).
    pub fn is_wedding_day(&self, id: &str, now_ms: u64) -> bool {
        self.inner
            .read()
            .get(id)
            .is_some_and(|w| w.is_wedding_day(now_ms))
    }

    /// How many weddings are today at `now_ms` (calendar clock).
    pub fn active_today(&self, now_ms: u64) -> usize {
        self.inner
            .read()
            .values()
            .filter(|w| w.is_wedding_day(now_ms))
            .count()
    }

    /// The weddings that are today, or `None` when there are none (the common case: the
    /// heartbeat round then looks at no claims).
    pub fn today(&self, now_ms: u64) -> Option<Today> {
        let map = self.inner.read();
        let mut t = Today::default();
        for w in map.values().filter(|w| w.is_wedding_day(now_ms)) {
            t.ids.insert(w.id.clone());
            t.orgs.insert(w.organization_id.clone());
        }
        (!t.ids.is_empty()).then_some(t)
    }

    /// The weddings that are today at `now_ms` (calendar clock), by id.
    pub fn list_today(&self, now_ms: u64) -> Vec<Wedding> {
        let mut v: Vec<Wedding> = self
            .inner
            .read()
            .values()
            .filter(|w| w.is_wedding_day(now_ms))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Every wedding, by id.
    pub fn list(&self) -> Vec<Wedding> {
        let mut v: Vec<Wedding> = self.inner.read().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn len(&self) -> usize {
        self.inner.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The clock of calendar decisions: the wall clock plus a fixed offset (0 unless the
/// config's `[clock] start` set one). Copy it freely.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CalendarClock {
    offset_ms: i64,
}

impl CalendarClock {
    /// The real wall clock.
    pub fn real() -> CalendarClock {
        CalendarClock::default()
    }

    /// A clock that reads `start_ms` at `real_now_ms` and advances in real time from there.
    pub fn starting_at(start_ms: u64, real_now_ms: u64) -> CalendarClock {
        CalendarClock {
            offset_ms: (start_ms as i128 - real_now_ms as i128)
                .clamp(i64::MIN as i128, i64::MAX as i128) as i64,
        }
    }

    /// Calendar now, Unix ms.
    pub fn now_ms(&self) -> u64 {
        self.at(crate::clock::now_ms())
    }

    /// The calendar time for wall-clock `real_ms`.
    pub fn at(&self, real_ms: u64) -> u64 {
        (real_ms as i128 + self.offset_ms as i128).clamp(0, u64::MAX as i128) as u64
    }
}

/// `[saturday] mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaturdaySetting {
    /// On the configured `days` in the configured `time_zone`.
    #[default]
    Auto,
    /// Forced on (e.g. a big Friday).
    On,
    /// Forced off.
    Off,
}

/// Saturday mode (SPEC §1), resolved from the config: when it is active, every connection's
/// heartbeat is `wedding_day_heartbeat_interval_ms` and `max_connections` is multiplied.
#[derive(Clone, Debug)]
pub struct SaturdayMode {
    pub setting: SaturdaySetting,
    pub days: Vec<Weekday>,
    pub zone: Zone,
    pub capacity_multiplier: u32,
}

impl Default for SaturdayMode {
    fn default() -> Self {
        SaturdayMode {
            setting: SaturdaySetting::Auto,
            days: vec![Weekday::Saturday],
            zone: Zone::utc(),
            capacity_multiplier: 2,
        }
    }
}

impl SaturdayMode {
    /// Whether Saturday mode is on at calendar time `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        match self.setting {
            SaturdaySetting::On => true,
            SaturdaySetting::Off => false,
            SaturdaySetting::Auto => calendar::is_mode_day(&self.days, &self.zone, now_ms),
        }
    }

    /// `max_connections` at calendar time `now_ms`.
    pub fn max_connections(&self, base: usize, now_ms: u64) -> usize {
        if self.is_active(now_ms) {
            base.saturating_mul(self.capacity_multiplier as usize)
        } else {
            base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbearer_core::{Role, Tier};

    fn ms(s: &str) -> u64 {
        calendar::parse_instant_ms(s).unwrap()
    }

    #[test]
    fn weddings_are_validated_naming_the_field() {
        let w = Wedding::new("w-1", "org", "2026-06-13", "Europe/London").unwrap();
        assert_eq!(w.time_zone, "Europe/London");
        for (args, field) in [
            (("w-1", "org", "2026-02-30", "UTC"), "event_date"),
            (("w-1", "org", "13/06/2026", "UTC"), "event_date"),
            (("w-1", "org", "2026-06-13", "Mars/Base"), "time_zone"),
            (("", "org", "2026-06-13", "UTC"), "wedding_id"),
            (("*", "org", "2026-06-13", "UTC"), "wedding_id"),
            (("w-1", "", "2026-06-13", "UTC"), "organization_id"),
        ] {
            let e = Wedding::new(args.0, args.1, args.2, args.3).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidWeddingContext);
            assert!(e.message.contains(field), "{field}: {}", e.message);
        }
    }

    #[test]
    fn the_watch_plan_is_validated_naming_the_field() {
        let w = Wedding::new("w-1", "org", "2026-06-13", "Europe/London").unwrap();
        assert_eq!(
            w.watch.coordination_channel.as_ref().map(|c| c.as_str()),
            Some("wedding:coordination:w-1")
        );
        let roles = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = w
            .clone()
            .with_watch(
                Some("14:00"),
                &roles(&["photographer", "coordinator"]),
                None,
            )
            .unwrap();
        assert_eq!(p.ceremony_ms(), Some(ms("2026-06-13T13:00:00Z")));
        assert_eq!(p.watch.key_roles, [Role::Photographer, Role::Coordinator]);
        assert!(!p.watch.coordination_named);
        for (t, r, c, field) in [
            (Some("25:00"), roles(&[]), None, "ceremony_time"),
            (None, roles(&["dj"]), None, "key_roles"),
            (None, roles(&["venue", "venue"]), None, "key_roles"),
            (None, roles(&[]), Some("nope"), "coordination_channel"),
        ] {
            let e = w.clone().with_watch(t, &r, c).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidWeddingContext);
            assert!(e.message.contains(field), "{field}: {}", e.message);
        }
        // A wedding id that is no channel id needs a named coordination channel.
        let odd = Wedding::new("w.1", "org", "2026-06-13", "UTC").unwrap();
        assert!(odd.watch.coordination_channel.is_none());
        let e = odd
            .clone()
            .with_watch(None, &roles(&["venue"]), None)
            .unwrap_err();
        assert!(e.message.contains("coordination_channel"));
        odd.with_watch(None, &roles(&["venue"]), Some("wedding:ops:w1"))
            .unwrap();
        // A create moving the date keeps the plan, re-anchored on the new day.
        let moved = Wedding::new("w-1", "org", "2026-06-20", "Europe/London")
            .unwrap()
            .keeping_watch_of(&p);
        assert_eq!(moved.ceremony_ms(), Some(ms("2026-06-20T13:00:00Z")));
        assert_eq!(moved.watch.key_roles, p.watch.key_roles);
        assert_eq!(moved.watch_fields(), p.watch_fields());
    }

    #[test]
    fn the_table_answers_by_the_weddings_own_day() {
        let t = Weddings::with_capacity(2);
        t.upsert(Wedding::new("a", "o1", "2026-06-13", "Europe/London").unwrap())
            .unwrap();
        t.upsert(Wedding::new("b", "o2", "2026-06-14", "UTC").unwrap())
            .unwrap();
        let now = ms("2026-06-13T10:00:00Z");
        assert!(t.is_wedding_day("a", now));
        assert!(!t.is_wedding_day("b", now));
        assert!(!t.is_wedding_day("nope", now));
        assert_eq!(t.active_today(now), 1);
        assert_eq!(t.active_today(ms("2026-06-14T10:00:00Z")), 1);
        assert_eq!(t.active_today(ms("2026-06-15T10:00:00Z")), 0);
        assert!(t.today(ms("2026-06-15T10:00:00Z")).is_none());
        // Moving a wedding's date is an upsert; another organization may not take it.
        t.upsert(Wedding::new("a", "o1", "2026-06-14", "Europe/London").unwrap())
            .unwrap();
        assert!(!t.is_wedding_day("a", now));
        let e = t
            .upsert(Wedding::new("a", "evil", "2026-06-14", "UTC").unwrap())
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        // Bounded.
        let e = t
            .upsert(Wedding::new("c", "o1", "2026-06-14", "UTC").unwrap())
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert_eq!(
            t.list().iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn a_registration_in_flight_holds_the_wedding_for_its_organization() {
        let t = Weddings::with_capacity(10);
        assert_eq!(t.reserve("w", "o1"), Ok(true));
        // Another organization, while o1's write is in flight: refused, and a channel of
        // it, even one its shard's clock dates earlier, does not take the wedding.
        assert_eq!(t.reserve("w", "o2").unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(t.claim("w", "o2", 1), "o1");
        t.upsert(Wedding::new("w", "o1", "2026-06-13", "UTC").unwrap())
            .unwrap();
        t.unclaim("w", "o1");
        assert_eq!(
            t.reserve("w", "o1"),
            Ok(false),
            "registered: no claim taken"
        );
        assert_eq!(t.reserve("w", "o2").unwrap_err().code, ErrorCode::Forbidden);
        // A write that failed gives the claim back: the wedding is nobody's again.
        assert_eq!(t.reserve("v", "o2"), Ok(true));
        t.unclaim("v", "o2");
        assert_eq!(t.owner("v"), None);
        assert_eq!(t.reserve("v", "o1"), Ok(true));
    }

    #[test]
    fn today_is_reached_by_listed_ids_and_org_wide_stars() {
        let t = Weddings::default();
        t.upsert(Wedding::new("a", "o1", "2026-06-13", "UTC").unwrap())
            .unwrap();
        let today = t.today(ms("2026-06-13T10:00:00Z")).unwrap();
        let claims = |role, org: &str, w: &[&str]| Claims {
            sub: "u".into(),
            org: org.into(),
            role,
            tier: Tier::Free,
            weddings: w.iter().map(|s| s.to_string()).collect(),
            exp: 0,
            nbf: None,
        };
        assert!(today.reaches(&claims(Role::Photographer, "x", &["z", "a"])));
        assert!(!today.reaches(&claims(Role::Photographer, "x", &["z"])));
        assert!(today.reaches(&claims(Role::Admin, "o1", &["*"])));
        assert!(!today.reaches(&claims(Role::Admin, "o2", &["*"])));
    }

    #[test]
    fn the_calendar_clock_can_start_elsewhere() {
        let c = CalendarClock::starting_at(ms("2026-06-13T10:00:00Z"), 1_000_000);
        assert_eq!(c.at(1_000_000), ms("2026-06-13T10:00:00Z"));
        assert_eq!(c.at(1_060_000), ms("2026-06-13T10:01:00Z"));
        assert_eq!(CalendarClock::real().at(42), 42);
        let sat = SaturdayMode::default();
        assert!(sat.is_active(ms("2026-06-13T10:00:00Z")));
        assert!(!sat.is_active(ms("2026-06-16T10:00:00Z")));
        assert_eq!(
            sat.max_connections(10_000, ms("2026-06-13T10:00:00Z")),
            20_000
        );
        assert_eq!(
            sat.max_connections(10_000, ms("2026-06-16T10:00:00Z")),
            10_000
        );
        let off = SaturdayMode {
            setting: SaturdaySetting::Off,
            ..SaturdayMode::default()
        };
        assert!(!off.is_active(ms("2026-06-13T10:00:00Z")));
    }
}
