//! Presence of one channel (SPEC §3): who is connected, with which role and meta, and what
//! changed since subscribers were last told. Nothing here does I/O or reads the clock.
//!
//! **Coalesced.** Changes are not announced one by one: joins, leaves and meta updates mark
//! the connection as *touched*, and the owner shard takes one [`PresenceDiff`] per channel
//! per `presence_flush_interval_ms` ([`Presence::take_diff`]). Announcing each change to
//! every subscriber cost n joins × n recipients (measured: 5,000 subscribers took 7 s of
//! server CPU to connect; 19,900 did not finish).
//!
//! **Capped.** Subscribers see the *window*: the first `max` connections in join order
//! (`Limits::presence_list_max`), plus `total`, the count of all. New joins append at the
//! end, so once the window is full a join changes only `total`; a leave inside the window
//! lets the next connection in (a join in the diff). No frame carries more than `max`
//! entries however large the channel: a diff that would is replaced by the window itself
//! (`presence_state`, see `ChannelState::take_presence`).
//!
//! **Consistent.** A subscriber's window from `subscribed`, with every later diff applied
//! (leaves removed, then joins inserted, keyed by `connection_id`), equals the window now.
//! For each connection, at a flush:
//!
//! | in the window at the last flush | touched | in the window now | in the diff |
//! |---|---|---|---|
//! | no | – | yes | join (it joined, or moved up when others left) |
//! | yes | no | yes | nothing (unchanged) |
//! | yes | yes | yes, equal, not handed out meanwhile | nothing (changes cancelled out) |
//! | yes | yes | yes, different | leave (as announced) + join (current): an update |
//! | yes | yes | yes, equal, handed out meanwhile | join (current entry) |
//! | yes | – | no | leave (the entry as announced) |
//! | no | yes, and handed out in a `subscribed` list meanwhile | no | leave |
//! | no | yes, never handed out | no | nothing (joined and left, or joined past the window) |
//!
//! A connection that joins and leaves within one interval is therefore announced to nobody,
//! except as a leave to those who were handed it in their `subscribed` list.

use hashbrown::HashMap;
use serde::Serialize;
use std::collections::BTreeMap;

/// One connection's presence. `meta` is a raw JSON object (validated at ingress).
#[derive(Clone, Debug, Serialize)]
pub struct PresenceEntry {
    pub user_id: String,
    pub connection_id: String,
    pub role: &'static str,
    pub meta: Box<serde_json::value::RawValue>,
}

impl PartialEq for PresenceEntry {
    fn eq(&self, o: &Self) -> bool {
        self.user_id == o.user_id
            && self.connection_id == o.connection_id
            && self.role == o.role
            && self.meta.get() == o.meta.get()
    }
}
impl Eq for PresenceEntry {}

impl PresenceEntry {
    pub fn new(user_id: String, connection_id: String, role: &'static str) -> Self {
        PresenceEntry {
            user_id,
            connection_id,
            role,
            meta: empty_meta(),
        }
    }
}

pub fn empty_meta() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string("{}".to_owned()).expect("valid JSON")
}

/// A change to broadcast: leaves, then joins, keyed by `connection_id` (a join of a
/// connection already listed replaces its entry), and the channel's presence count after
/// it. A meta update is a leave of the old entry and a join of the new one (Phoenix's
/// convention).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PresenceDiff {
    pub joins: Vec<PresenceEntry>,
    pub leaves: Vec<PresenceEntry>,
    pub total: usize,
}

impl PresenceDiff {
    /// No entry to add or remove (`total` may still have changed).
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    /// Entries carried (joins plus leaves).
    pub fn len(&self) -> usize {
        self.joins.len() + self.leaves.len()
    }
}

/// An entry and whether it was in the window at the last flush.
#[derive(Clone, Debug)]
struct Slot {
    entry: PresenceEntry,
    announced: bool,
}

/// What subscribers were told about a touched connection before this interval.
#[derive(Clone, Debug)]
struct Touched {
    /// Order of first touch in this interval (leaves are listed in this order).
    order: u64,
    /// The entry as announced at the last flush; `None` when it was not in the window.
    announced: Option<PresenceEntry>,
    /// Some incarnation of it was handed out in a `subscribed` list this interval.
    handed_out: bool,
    /// Its entry when it last left.
    departed: Option<PresenceEntry>,
}

/// Entries keyed by connection id, iterated in join order, plus what is not announced yet.
/// Join, leave and update are O(log n); a flush or a snapshot is O(window).
#[derive(Clone, Debug, Default)]
pub struct Presence {
    /// Join sequence → entry.
    slots: BTreeMap<u64, Slot>,
    /// Connection id → join sequence.
    index: HashMap<String, u64>,
    next_seq: u64,
    /// Connections changed since the last [`take_diff`](Self::take_diff).
    touched: HashMap<String, Touched>,
    /// `total` as of the last flush.
    announced_total: usize,
}

impl Presence {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every entry, in join order.
    pub fn iter(&self) -> impl Iterator<Item = &PresenceEntry> {
        self.slots.values().map(|s| &s.entry)
    }

    pub fn get(&self, connection_id: &str) -> Option<&PresenceEntry> {
        self.index
            .get(connection_id)
            .and_then(|s| self.slots.get(s))
            .map(|s| &s.entry)
    }

    /// The window now: the first `max` entries in join order, as handed to a subscriber
    /// (so the next diff also covers what it was handed).
    pub fn snapshot(&mut self, max: usize) -> Vec<PresenceEntry> {
        let mut out = Vec::with_capacity(max.min(self.slots.len()));
        for s in self.slots.values().take(max) {
            out.push(s.entry.clone());
            let id = &s.entry.connection_id;
            if let Some(t) = self.touched.get_mut(id) {
                t.handed_out = true;
            } else if !s.announced {
                // Moved up into the window since the last flush: the next diff must cover
                // it for this subscriber too, should it leave before then.
                let order = self.touched.len() as u64;
                self.touched.insert(
                    id.clone(),
                    Touched {
                        order,
                        announced: None,
                        handed_out: true,
                        departed: None,
                    },
                );
            }
        }
        out
    }

    /// Whether anything changed since the last flush (`total` included).
    pub fn has_changes(&self) -> bool {
        !self.touched.is_empty() || self.announced_total != self.slots.len()
    }

    /// Remembers what was announced about `connection_id` before its first change in this
    /// interval.
    fn touch(&mut self, connection_id: &str) {
        if self.touched.contains_key(connection_id) {
            return;
        }
        let announced = self
            .index
            .get(connection_id)
            .and_then(|s| self.slots.get(s))
            .filter(|s| s.announced)
            .map(|s| s.entry.clone());
        let order = self.touched.len() as u64;
        self.touched.insert(
            connection_id.to_owned(),
            Touched {
                order,
                announced,
                handed_out: false,
                departed: None,
            },
        );
    }

    /// Adds an entry; `false` (and nothing changes) for a connection already present.
    pub fn join(&mut self, e: PresenceEntry) -> bool {
        if self.index.contains_key(&e.connection_id) {
            return false;
        }
        self.touch(&e.connection_id);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.index.insert(e.connection_id.clone(), seq);
        self.slots.insert(
            seq,
            Slot {
                entry: e,
                announced: false,
            },
        );
        true
    }

    /// Removes a connection's entry; `false` if it was not present.
    pub fn leave(&mut self, connection_id: &str) -> bool {
        if !self.index.contains_key(connection_id) {
            return false;
        }
        self.touch(connection_id);
        let removed = self
            .index
            .remove(connection_id)
            .and_then(|seq| self.slots.remove(&seq));
        if let Some(t) = self.touched.get_mut(connection_id) {
            t.departed = removed.map(|s| s.entry);
        }
        true
    }

    /// Replaces the meta of a present connection; `false` if it is not present.
    pub fn update(&mut self, connection_id: &str, meta: Box<serde_json::value::RawValue>) -> bool {
        let Some(&seq) = self.index.get(connection_id) else {
            return false;
        };
        self.touch(connection_id);
        if let Some(s) = self.slots.get_mut(&seq) {
            s.entry.meta = meta;
        }
        true
    }

    /// The change of the window of `max` since the last call (see the module's table);
    /// afterwards the current window counts as announced. `None` when subscribers need
    /// not be told anything: no entry changed and neither did `total` — or only `total`
    /// did and `total_only` is false (then it stays pending for a later call).
    pub fn take_diff(&mut self, max: usize, total_only: bool) -> Option<PresenceDiff> {
        if !self.has_changes() {
            return None;
        }
        let mut touched = std::mem::take(&mut self.touched);
        let mut diff = PresenceDiff {
            total: self.slots.len(),
            ..PresenceDiff::default()
        };
        // The window now. An announced, untouched entry cannot have left it (entries only
        // move up: new ones join at the end), so only this part needs looking at.
        for slot in self.slots.values_mut().take(max) {
            let id = &slot.entry.connection_id;
            let send = match touched.remove(id) {
                None => !slot.announced,
                Some(t) => match t.announced {
                    Some(a) if a == slot.entry => t.handed_out,
                    Some(a) => {
                        // An update: the old entry leaves, the new one joins (Phoenix).
                        diff.leaves.push(a);
                        true
                    }
                    None => true,
                },
            };
            if send {
                diff.joins.push(slot.entry.clone());
            }
            slot.announced = true;
        }
        // Touched and not in the window now.
        let mut rest: Vec<Touched> = touched.into_values().collect();
        rest.sort_unstable_by_key(|t| t.order);
        for t in rest {
            match (t.announced, t.handed_out) {
                (Some(a), _) => diff.leaves.push(a),
                (None, true) => {
                    // Handed out, then left (or left and joined again past the window).
                    if let Some(d) = t.departed {
                        diff.leaves.push(d);
                    }
                }
                (None, false) => {}
            }
        }
        // A re-joined connection past the window that was announced has a slot whose flag
        // is still false: nothing to reset. `total` last.
        if diff.is_empty() && !(total_only && diff.total != self.announced_total) {
            return None;
        }
        self.announced_total = diff.total;
        Some(diff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: usize = usize::MAX;

    fn meta(s: &str) -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string(s.into()).unwrap()
    }

    fn entry(user: &str, conn: &str) -> PresenceEntry {
        PresenceEntry::new(user.into(), conn.into(), "photographer")
    }

    fn ids(v: &[PresenceEntry]) -> Vec<&str> {
        v.iter().map(|e| e.connection_id.as_str()).collect()
    }

    #[test]
    fn join_update_leave() {
        let mut p = Presence::default();
        assert!(p.join(entry("u1", "c-0-1")));
        assert!(!p.join(entry("u1", "c-0-1")), "already present");
        let d = p.take_diff(ALL, true).unwrap();
        assert_eq!(
            (ids(&d.joins), d.leaves.len(), d.total),
            (vec!["c-0-1"], 0, 1)
        );
        assert!(p.take_diff(ALL, true).is_none(), "announced once");
        p.join(PresenceEntry::new("u2".into(), "c-1-1".into(), "couple"));
        p.take_diff(ALL, true);
        assert!(p.update("c-0-1", meta(r#"{"activity":"ceremony"}"#)));
        let d = p.take_diff(ALL, true).unwrap();
        assert_eq!(
            d.leaves[0].meta.get(),
            "{}",
            "an update: the old entry leaves"
        );
        assert_eq!(d.joins[0].meta.get(), r#"{"activity":"ceremony"}"#);
        assert!(!p.update("nope", meta("{}")));
        assert!(p.leave("c-0-1"));
        assert!(!p.leave("c-0-1"));
        let d = p.take_diff(ALL, true).unwrap();
        assert_eq!(d.leaves[0].user_id, "u1");
        assert_eq!(d.leaves[0].meta.get(), r#"{"activity":"ceremony"}"#);
        assert_eq!(d.total, 1);
        let json = serde_json::to_string(&p.snapshot(10)).unwrap();
        assert_eq!(
            json,
            r#"[{"user_id":"u2","connection_id":"c-1-1","role":"couple","meta":{}}]"#
        );
    }

    #[test]
    fn many_joins_make_one_diff_in_join_order() {
        let mut p = Presence::default();
        for i in 0..500 {
            p.join(entry(&format!("u{i}"), &format!("c-0-{i}")));
        }
        let d = p.take_diff(ALL, true).unwrap();
        assert_eq!((d.joins.len(), d.leaves.len(), d.total), (500, 0, 500));
        assert_eq!(d.joins[0].connection_id, "c-0-0");
        assert_eq!(d.joins[499].connection_id, "c-0-499");
        assert!(!p.has_changes());
    }

    #[test]
    fn past_a_full_window_only_the_total_changes() {
        let mut p = Presence::default();
        for i in 0..3 {
            p.join(entry("u", &format!("c-0-{i}")));
        }
        assert_eq!(p.take_diff(3, true).unwrap().joins.len(), 3);
        for i in 3..100 {
            p.join(entry("u", &format!("c-0-{i}")));
        }
        let d = p.take_diff(3, true).unwrap();
        assert!(d.is_empty());
        assert_eq!(d.total, 100);
        // A leave inside the window lets the next one in.
        p.leave("c-0-1");
        let d = p.take_diff(3, true).unwrap();
        assert_eq!(
            (ids(&d.leaves), ids(&d.joins)),
            (vec!["c-0-1"], vec!["c-0-3"])
        );
        assert_eq!(d.total, 99);
        // A leave past the window: the total only.
        p.leave("c-0-50");
        let d = p.take_diff(3, true).unwrap();
        assert!(d.is_empty());
        assert_eq!(d.total, 98);
    }

    #[test]
    fn a_change_of_total_alone_can_wait() {
        let mut p = Presence::default();
        for i in 0..3 {
            p.join(entry("u", &format!("c-0-{i}")));
        }
        p.take_diff(2, false).unwrap();
        p.join(entry("u", "c-0-9"));
        assert_eq!(p.take_diff(2, false), None, "past the window: may wait");
        assert!(p.has_changes(), "still to announce");
        p.leave("c-0-0");
        let d = p.take_diff(2, false).unwrap();
        assert_eq!(
            (ids(&d.leaves), ids(&d.joins), d.total),
            (vec!["c-0-0"], vec!["c-0-2"], 3)
        );
        p.join(entry("u", "c-0-10"));
        assert_eq!(p.take_diff(2, false), None);
        assert_eq!(p.take_diff(2, true).unwrap().total, 4);
        assert!(!p.has_changes());
    }

    #[test]
    fn changes_that_cancel_out_are_not_announced() {
        let mut p = Presence::default();
        p.join(entry("u1", "c-0-1"));
        p.take_diff(ALL, true);
        p.update("c-0-1", meta(r#"{"a":1}"#));
        p.update("c-0-1", meta("{}"));
        assert!(p.has_changes());
        assert_eq!(p.take_diff(ALL, true), None);
        // Joined and left within one interval, handed to nobody: nothing at all.
        p.join(entry("u2", "c-0-2"));
        p.leave("c-0-2");
        assert_eq!(p.take_diff(ALL, true), None);
    }

    #[test]
    fn joined_and_left_after_being_handed_out_is_a_leave() {
        let mut p = Presence::default();
        p.join(entry("u1", "c-0-1"));
        assert_eq!(p.snapshot(ALL).len(), 1);
        p.update("c-0-1", meta(r#"{"a":1}"#));
        p.leave("c-0-1");
        let d = p.take_diff(ALL, true).unwrap();
        assert!(d.joins.is_empty());
        assert_eq!(ids(&d.leaves), vec!["c-0-1"]);
        assert_eq!(d.total, 0);
    }

    /// A model client: applies leaves, then joins, keyed by connection id.
    fn apply(state: &mut BTreeMap<String, PresenceEntry>, d: &PresenceDiff) {
        for l in &d.leaves {
            state.remove(&l.connection_id);
        }
        for j in &d.joins {
            state.insert(j.connection_id.clone(), j.clone());
        }
    }

    fn keyed(v: Vec<PresenceEntry>) -> BTreeMap<String, PresenceEntry> {
        v.into_iter()
            .map(|e| (e.connection_id.clone(), e))
            .collect()
    }

    /// Whenever a client takes its snapshot, snapshot + later diffs equal the window now,
    /// and the last total equals the count. A deterministic pseudo-random walk over joins,
    /// leaves, updates, snapshots and flushes, with and without a cut window.
    #[test]
    fn snapshot_plus_later_diffs_is_the_truth() {
        for max in [ALL, 5, 1] {
            let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let mut p = Presence::default();
            let mut clients: Vec<(BTreeMap<String, PresenceEntry>, usize)> = Vec::new();
            for step in 0..8_000 {
                let c = format!("c-0-{}", next(30));
                match next(12) {
                    0..=3 => {
                        p.join(entry("u", &c));
                    }
                    4..=6 => {
                        p.leave(&c);
                    }
                    7 | 8 => {
                        p.update(&c, meta(&format!(r#"{{"s":{}}}"#, step % 3)));
                    }
                    9 => {
                        let total = p.len();
                        clients.push((keyed(p.snapshot(max)), total));
                    }
                    _ => {
                        if let Some(d) = p.take_diff(max, next(2) == 0) {
                            // Leaves are not bounded by the window (several entries may be
                            // handed out and leave within one interval): `ChannelState`
                            // sends the state instead when a diff grows past the window.
                            assert!(d.joins.len() <= max, "joins are in the window");
                            for (s, total) in &mut clients {
                                apply(s, &d);
                                *total = d.total;
                            }
                        }
                    }
                }
            }
            if let Some(d) = p.take_diff(max, true) {
                for (s, total) in &mut clients {
                    apply(s, &d);
                    *total = d.total;
                }
            }
            let truth = keyed(p.snapshot(max));
            assert!(clients.len() > 300);
            for (s, total) in &clients {
                assert_eq!(*s, truth, "window of {max}");
                assert_eq!(*total, p.len());
            }
        }
    }
}
