//! The presence watchdog's decisions (SPEC §3 "Watchdog", docs/decisions.md §30), as a
//! deterministic state machine: each round it is given the calendar time, the weddings
//! that are today, and what every shard saw on those weddings' channels ([`Sightings`],
//! gathered by the owner op `Op::Watch`), and it answers which alerts to send
//! ([`Alert`]). It remembers one absence per (wedding, key role) and one low battery per
//! device, so each alert is sent once, and an alert counts as sent only when the runtime
//! confirms it ([`Watchdog::sent`]): a publish refused this round is tried again next.
//!
//! It does no I/O and reads no clock: the service that runs it each `check_interval_ms`,
//! publishes the alerts through the owner and queues their webhooks is
//! `runtime/tasks.rs` (`watchdog`). [`ActiveAlerts`] is the list health and the admin
//! page show.

use crate::config::WatchdogConfig;
use crate::weddings::Wedding;
use parking_lot::Mutex;
use ringbearer_core::{ChannelName, Role};
use std::collections::{BTreeSet, HashMap, HashSet};

/// One battery reading: the device (see [`device_key`]) and its percentage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatteryReading {
    pub wedding_id: String,
    /// `{org}/{user_id}/{device_id}`, or `{org}/{user_id}/{connection_id}` without one.
    pub device: String,
    pub org: String,
    pub user_id: String,
    pub role: &'static str,
    pub battery: u8,
}

/// What shards saw of the watched weddings: which roles have a connection present on a
/// wedding's channels (channels of the wedding's own organization naming it), and the
/// battery readings there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sightings {
    pub roles: HashMap<String, BTreeSet<&'static str>>,
    pub batteries: Vec<BatteryReading>,
}

impl Sightings {
    /// Adds another shard's sightings.
    pub fn merge(&mut self, other: Sightings) {
        for (w, roles) in other.roles {
            self.roles.entry(w).or_default().extend(roles);
        }
        self.batteries.extend(other.batteries);
    }
}

/// The device a presence entry stands for: its meta `device_id` if it gives one, else its
/// connection; scoped by the user (`org/user_id`) so two users never share a device.
pub fn device_key(org: &str, user_id: &str, device_id: Option<&str>, connection: &str) -> String {
    format!("{org}/{user_id}/{}", device_id.unwrap_or(connection))
}

/// One alert to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alert {
    /// `watchdog:absent`: no connection of `role` for `grace_seconds`.
    Absent {
        wedding_id: String,
        org: String,
        channel: ChannelName,
        role: Role,
        since_ms: u64,
        ceremony_ms: u64,
    },
    /// `watchdog:back`: the role is present again after an `Absent`.
    Back {
        wedding_id: String,
        org: String,
        channel: ChannelName,
        role: Role,
        since_ms: u64,
        ceremony_ms: u64,
    },
    /// `battery:low`: a device under `battery_threshold_percent`; `episode` counts this
    /// device's alerts (1 for the first), so each drop has its own idempotency key.
    BatteryLow {
        wedding_id: String,
        org: String,
        channel: ChannelName,
        reading: BatteryReading,
        episode: u32,
    },
}

impl Alert {
    /// The message's `event` and the webhook's `kind`.
    pub fn names(&self) -> (&'static str, &'static str) {
        match self {
            Alert::Absent { .. } => ("watchdog:absent", "watchdog_absent"),
            Alert::Back { .. } => ("watchdog:back", "watchdog_back"),
            Alert::BatteryLow { .. } => ("battery:low", "battery_low"),
        }
    }

    pub fn org(&self) -> &str {
        match self {
            Alert::Absent { org, .. } | Alert::Back { org, .. } | Alert::BatteryLow { org, .. } => {
                org
            }
        }
    }

    pub fn channel(&self) -> &ChannelName {
        match self {
            Alert::Absent { channel, .. }
            | Alert::Back { channel, .. }
            | Alert::BatteryLow { channel, .. } => channel,
        }
    }

    /// The message payload and webhook body (times as RFC 3339).
    pub fn payload(&self) -> serde_json::Value {
        let t = ringbearer_core::time::rfc3339_ms;
        match self {
            Alert::Absent {
                wedding_id,
                role,
                since_ms,
                ceremony_ms,
                ..
            }
            | Alert::Back {
                wedding_id,
                role,
                since_ms,
                ceremony_ms,
                ..
            } => serde_json::json!({
                "wedding_id": wedding_id,
                "role": role.as_str(),
                "absent_since": t(*since_ms),
                "ceremony_at": t(*ceremony_ms),
            }),
            Alert::BatteryLow {
                wedding_id,
                reading,
                ..
            } => serde_json::json!({
                "wedding_id": wedding_id,
                "device": reading.device,
                "user_id": reading.user_id,
                "org": reading.org,
                "role": reading.role,
                "battery": reading.battery,
            }),
        }
    }

    /// A key that is the same for a resend of this alert and differs for any other (the
    /// publish's idempotency key, fixed-length whatever the ids): a retried publish after
    /// a lost answer stores nothing new. `life` tells this server's lives apart (its
    /// memory starts empty after a restart).
    pub fn idempotency_key(&self, life: u64) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match self {
            Alert::Absent {
                wedding_id,
                role,
                since_ms,
                ..
            } => ("absent", wedding_id, role.as_str(), *since_ms).hash(&mut h),
            Alert::Back {
                wedding_id,
                role,
                since_ms,
                ..
            } => ("back", wedding_id, role.as_str(), *since_ms).hash(&mut h),
            Alert::BatteryLow {
                wedding_id,
                reading,
                episode,
                ..
            } => ("battery", wedding_id, &reading.device, *episode).hash(&mut h),
        }
        format!("watchdog-{life:x}-{:016x}", h.finish())
    }
}

/// One alert in health and on the admin page.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ActiveAlert {
    /// `watchdog_absent` or `battery_low`.
    pub kind: &'static str,
    pub org: String,
    pub wedding_id: String,
    pub message: String,
    pub since_ms: u64,
}

/// The alerts in force, written by the watchdog service each round (shared by every
/// shard's REST handler through `Shared`).
#[derive(Debug, Default)]
pub struct ActiveAlerts(Mutex<Vec<ActiveAlert>>);

impl ActiveAlerts {
    pub fn set(&self, v: Vec<ActiveAlert>) {
        *self.0.lock() = v;
    }

    /// The alerts of organization `org` (every organization's when `None`).
    pub fn list(&self, org: Option<&str>) -> Vec<ActiveAlert> {
        self.0
            .lock()
            .iter()
            .filter(|a| org.is_none_or(|o| o == a.org))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
struct Absence {
    since_ms: u64,
    /// The `Absent` alert was sent (so a `Back` is owed when the role returns).
    alerted: bool,
}

/// The watchdog's memory. Lost on restart: a role still missing after a restart is
/// alerted again once its grace period has passed (docs/decisions.md §30).
pub struct Watchdog {
    cfg: WatchdogConfig,
    absences: HashMap<(String, Role), Absence>,
    /// Devices whose low battery was alerted, with the reading, by device key.
    low: HashMap<String, (String, BatteryReading, u64)>,
    /// How many low-battery alerts each device had today: `(wedding_id, count)`.
    episodes: HashMap<String, (String, u32)>,
}

impl Watchdog {
    pub fn new(cfg: WatchdogConfig) -> Watchdog {
        Watchdog {
            cfg,
            absences: HashMap::new(),
            low: HashMap::new(),
            episodes: HashMap::new(),
        }
    }

    /// Whether `w` has its key roles watched at calendar time `now_ms`: it is its day, it
    /// has a ceremony time and key roles, and `now_ms` is past `lead_minutes` before the
    /// ceremony (until the end of the wedding day).
    pub fn watching(&self, w: &Wedding, now_ms: u64) -> Option<u64> {
        let ceremony = w.ceremony_ms()?;
        if w.watch.key_roles.is_empty() || !w.is_wedding_day(now_ms) {
            return None;
        }
        let from = ceremony.saturating_sub(self.cfg.lead_minutes * 60_000);
        (now_ms >= from).then_some(ceremony)
    }

    /// One round at calendar time `now_ms`: `today` are the weddings that are today,
    /// `seen` what every shard saw. Returns the alerts to send now.
    pub fn step(&mut self, now_ms: u64, today: &[Wedding], seen: &Sightings) -> Vec<Alert> {
        let mut out = Vec::new();
        let grace_ms = self.cfg.grace_seconds.saturating_mul(1000);
        let mut watched: HashSet<(String, Role)> = HashSet::new();
        for w in today {
            let Some(channel) = w.watch.coordination_channel.clone() else {
                continue;
            };
            let Some(ceremony_ms) = self.watching(w, now_ms) else {
                continue;
            };
            let present = seen.roles.get(&w.id);
            for &role in &w.watch.key_roles {
                let key = (w.id.clone(), role);
                watched.insert(key.clone());
                let here = present.is_some_and(|p| p.contains(role.as_str()));
                match (here, self.absences.get_mut(&key)) {
                    (true, None) => {}
                    (true, Some(a)) => {
                        if a.alerted {
                            out.push(Alert::Back {
                                wedding_id: w.id.clone(),
                                org: w.organization_id.clone(),
                                channel: channel.clone(),
                                role,
                                since_ms: a.since_ms,
                                ceremony_ms,
                            });
                        } else {
                            self.absences.remove(&key);
                        }
                    }
                    (false, None) => {
                        self.absences.insert(
                            key,
                            Absence {
                                since_ms: now_ms,
                                alerted: false,
                            },
                        );
                    }
                    (false, Some(a)) => {
                        if !a.alerted && now_ms.saturating_sub(a.since_ms) >= grace_ms {
                            out.push(Alert::Absent {
                                wedding_id: w.id.clone(),
                                org: w.organization_id.clone(),
                                channel: channel.clone(),
                                role,
                                since_ms: a.since_ms,
                                ceremony_ms,
                            });
                        }
                    }
                }
            }
        }
        // Outside a watch window (another day, a changed plan): forgotten, no `Back`.
        self.absences.retain(|k, _| watched.contains(k));
        self.step_batteries(&mut out, today, seen);
        out
    }

    fn step_batteries(&mut self, out: &mut Vec<Alert>, today: &[Wedding], seen: &Sightings) {
        let threshold = self.cfg.battery_threshold_percent;
        let by_id: HashMap<&str, &Wedding> = today.iter().map(|w| (w.id.as_str(), w)).collect();
        let mut asked: HashSet<&str> = HashSet::new();
        for r in &seen.batteries {
            let Some(w) = by_id.get(r.wedding_id.as_str()) else {
                continue;
            };
            if r.battery >= threshold {
                // Risen back to the threshold: the next drop alerts again.
                self.low.remove(&r.device);
                continue;
            }
            let Some(channel) = w.watch.coordination_channel.clone() else {
                continue;
            };
            if self.low.contains_key(&r.device) || !asked.insert(r.device.as_str()) {
                continue;
            }
            let episode = self.episodes.get(&r.device).map_or(0, |e| e.1) + 1;
            out.push(Alert::BatteryLow {
                wedding_id: w.id.clone(),
                org: w.organization_id.clone(),
                channel,
                reading: r.clone(),
                episode,
            });
        }
        // A wedding day over: its devices are forgotten.
        self.low
            .retain(|_, (wedding, _, _)| by_id.contains_key(wedding.as_str()));
        self.episodes
            .retain(|_, (wedding, _)| by_id.contains_key(wedding.as_str()));
    }

    /// The runtime sent `a` (its message is stored): remember it.
    pub fn sent(&mut self, a: &Alert, now_ms: u64) {
        match a {
            Alert::Absent {
                wedding_id, role, ..
            } => {
                if let Some(x) = self.absences.get_mut(&(wedding_id.clone(), *role)) {
                    x.alerted = true;
                }
            }
            Alert::Back {
                wedding_id, role, ..
            } => {
                self.absences.remove(&(wedding_id.clone(), *role));
            }
            Alert::BatteryLow {
                wedding_id,
                reading,
                episode,
                ..
            } => {
                self.episodes
                    .insert(reading.device.clone(), (wedding_id.clone(), *episode));
                self.low.insert(
                    reading.device.clone(),
                    (wedding_id.clone(), reading.clone(), now_ms),
                );
            }
        }
    }

    /// The alerts in force, newest first, at most `max_listed_alerts`.
    pub fn active(&self, today: &[Wedding]) -> Vec<ActiveAlert> {
        let org_of: HashMap<&str, &str> = today
            .iter()
            .map(|w| (w.id.as_str(), w.organization_id.as_str()))
            .collect();
        let mut v: Vec<ActiveAlert> = Vec::new();
        for ((wedding, role), a) in &self.absences {
            if !a.alerted {
                continue;
            }
            let Some(org) = org_of.get(wedding.as_str()) else {
                continue;
            };
            v.push(ActiveAlert {
                kind: "watchdog_absent",
                org: (*org).to_owned(),
                wedding_id: wedding.clone(),
                message: format!(
                    "wedding {wedding}: no {} present since {}",
                    role.as_str(),
                    ringbearer_core::time::rfc3339_ms(a.since_ms)
                ),
                since_ms: a.since_ms,
            });
        }
        for (wedding, r, at) in self.low.values() {
            let Some(org) = org_of.get(wedding.as_str()) else {
                continue;
            };
            v.push(ActiveAlert {
                kind: "battery_low",
                org: (*org).to_owned(),
                wedding_id: wedding.clone(),
                message: format!(
                    "wedding {wedding}: device {} ({}) battery at {}%",
                    r.device, r.role, r.battery
                ),
                since_ms: *at,
            });
        }
        v.sort_by(|a, b| {
            b.since_ms
                .cmp(&a.since_ms)
                .then_with(|| a.message.cmp(&b.message))
        });
        v.truncate(self.cfg.max_listed_alerts);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbearer_core::calendar::parse_instant_ms;

    fn ms(s: &str) -> u64 {
        parse_instant_ms(s).unwrap()
    }

    fn wedding() -> Wedding {
        Wedding::new("w-1", "org-1", "2026-06-13", "UTC")
            .unwrap()
            .with_watch(Some("14:00"), &["photographer".into()], None)
            .unwrap()
    }

    fn cfg() -> WatchdogConfig {
        WatchdogConfig {
            grace_seconds: 60,
            ..WatchdogConfig::default()
        }
    }

    fn seen(roles: &[&'static str]) -> Sightings {
        let mut s = Sightings::default();
        s.roles
            .insert("w-1".into(), roles.iter().copied().collect::<BTreeSet<_>>());
        s
    }

    #[test]
    fn an_absence_alerts_once_after_the_grace_and_is_answered_by_back() {
        let mut d = Watchdog::new(cfg());
        let w = [wedding()];
        // Before the lead time: nothing, and nothing remembered.
        assert!(d
            .step(ms("2026-06-13T13:20:00Z"), &w, &seen(&[]))
            .is_empty());
        assert!(d.absences.is_empty());
        // From 13:30: absent; the alert comes after the grace.
        assert!(d
            .step(ms("2026-06-13T13:30:00Z"), &w, &seen(&[]))
            .is_empty());
        assert!(d
            .step(ms("2026-06-13T13:30:59Z"), &w, &seen(&[]))
            .is_empty());
        let a = d.step(ms("2026-06-13T13:31:00Z"), &w, &seen(&[]));
        assert!(
            matches!(&a[..], [Alert::Absent { since_ms, .. }] if *since_ms == ms("2026-06-13T13:30:00Z"))
        );
        // Not confirmed: offered again; confirmed: not again.
        assert_eq!(d.step(ms("2026-06-13T13:31:05Z"), &w, &seen(&[])), a);
        d.sent(&a[0], 0);
        assert!(d
            .step(ms("2026-06-13T13:32:00Z"), &w, &seen(&[]))
            .is_empty());
        assert_eq!(d.active(&w).len(), 1);
        let b = d.step(ms("2026-06-13T13:33:00Z"), &w, &seen(&["photographer"]));
        assert!(matches!(&b[..], [Alert::Back { .. }]));
        d.sent(&b[0], 0);
        assert!(d.active(&w).is_empty());
        assert!(d
            .step(ms("2026-06-13T13:34:00Z"), &w, &seen(&["photographer"]))
            .is_empty());
    }

    #[test]
    fn a_short_absence_and_another_day_raise_nothing() {
        let mut d = Watchdog::new(cfg());
        let w = [wedding()];
        assert!(d
            .step(ms("2026-06-13T13:40:00Z"), &w, &seen(&[]))
            .is_empty());
        assert!(d
            .step(ms("2026-06-13T13:40:30Z"), &w, &seen(&["photographer"]))
            .is_empty());
        assert!(d
            .step(ms("2026-06-13T13:41:00Z"), &w, &seen(&[]))
            .is_empty());
        assert!(d
            .step(ms("2026-06-13T13:41:59Z"), &w, &seen(&[]))
            .is_empty());
        let mut d = Watchdog::new(cfg());
        for t in ["2026-06-14T13:40:00Z", "2026-06-14T13:50:00Z"] {
            assert!(d.step(ms(t), &w, &seen(&[])).is_empty());
        }
    }

    #[test]
    fn a_low_battery_alerts_once_per_device_until_it_recovers() {
        let mut d = Watchdog::new(cfg());
        let w = [wedding()];
        let reading = |device: &str, battery| BatteryReading {
            wedding_id: "w-1".into(),
            device: device.into(),
            org: "org-1".into(),
            user_id: "u-1".into(),
            role: "couple",
            battery,
        };
        let with = |v: Vec<BatteryReading>| Sightings {
            batteries: v,
            ..Sightings::default()
        };
        let now = ms("2026-06-13T10:00:00Z");
        let a = d.step(now, &w, &with(vec![reading("p", 5), reading("p", 5)]));
        assert_eq!(a.len(), 1);
        d.sent(&a[0], now);
        assert!(d.step(now, &w, &with(vec![reading("p", 4)])).is_empty());
        let q = d.step(now, &w, &with(vec![reading("q", 3)]));
        assert_eq!(q.len(), 1);
        d.sent(&q[0], now);
        // Both stay in force while neither has recovered, seen or not.
        assert_eq!(d.active(&w).len(), 2, "{:?}", d.active(&w));
        assert!(d.step(now, &w, &with(vec![reading("p", 15)])).is_empty());
        let again = d.step(now, &w, &with(vec![reading("p", 14)]));
        assert!(matches!(&again[..], [Alert::BatteryLow { episode: 2, .. }]));
        // Its own message: another idempotency key than the first drop's.
        assert_ne!(again[0].idempotency_key(1), a[0].idempotency_key(1));
        assert_eq!(a[0].idempotency_key(1), a[0].clone().idempotency_key(1));
        assert_ne!(a[0].idempotency_key(1), a[0].idempotency_key(2));
    }
}
