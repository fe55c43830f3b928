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
//! except as a leave to those who were handed it in their `subscribed` list. Entries are
//! kept per join: a connection that leaves and subscribes again is a new entry (the rows
//! apply to each; clients applying leaves before joins end with the right one).

use crate::channel_state::ConnRef;
use hashbrown::HashMap;
use serde::Serialize;
use std::collections::BTreeMap;

/// One connection's presence. `meta` is a raw JSON object (validated at ingress); `None`
/// is `{}` (most connections never set one: no allocation for them). Serialized as
/// `{"user_id", "org", "connection_id", "role", "meta"}`: a user is (`org`, `user_id`).
#[derive(Clone, Debug)]
pub struct PresenceEntry {
    pub user_id: String,
    pub org: String,
    pub conn: ConnRef,
    pub role: &'static str,
    pub meta: Option<Box<serde_json::value::RawValue>>,
}

impl PartialEq for PresenceEntry {
    fn eq(&self, o: &Self) -> bool {
        self.user_id == o.user_id
            && self.org == o.org
            && self.conn == o.conn
            && self.role == o.role
            && self.meta_json() == o.meta_json()
    }
}
impl Eq for PresenceEntry {}

impl PresenceEntry {
    pub fn new(user_id: String, org: String, conn: ConnRef, role: &'static str) -> Self {
        PresenceEntry {
            user_id,
            org,
            conn,
            role,
            meta: None,
        }
    }

    /// The `connection_id` clients see.
    pub fn connection_id(&self) -> String {
        self.conn.public_id()
    }

    /// The meta as JSON text.
    pub fn meta_json(&self) -> &str {
        self.meta.as_deref().map_or("{}", |m| m.get())
    }
}

impl Serialize for PresenceEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("PresenceEntry", 5)?;
        st.serialize_field("user_id", &self.user_id)?;
        st.serialize_field("org", &self.org)?;
        st.serialize_field("connection_id", &self.connection_id())?;
        st.serialize_field("role", self.role)?;
        match &self.meta {
            Some(m) => st.serialize_field("meta", m)?,
            None => st.serialize_field("meta", &serde_json::Map::new())?,
        }
        st.end()
    }
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

/// Entries keyed by their join sequence (the caller keeps each connection's: see
/// `ChannelState`), iterated in join order, plus what is not announced yet. A connection
/// that leaves and joins again is a new entry. Join, leave and update are O(log n); a flush
/// or a snapshot is O(window).
#[derive(Clone, Debug, Default)]
pub struct Presence {
    /// Join sequence → entry.
    slots: BTreeMap<u64, Slot>,
    next_seq: u64,
    /// Entries changed since the last [`take_diff`](Self::take_diff), by join sequence.
    touched: HashMap<u64, Touched>,
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

    pub fn get(&self, seq: u64) -> Option<&PresenceEntry> {
        self.slots.get(&seq).map(|s| &s.entry)
    }

    /// The window now: the first `max` entries in join order, as handed to a subscriber
    /// (so the next diff also covers what it was handed).
    pub fn snapshot(&mut self, max: usize) -> Vec<PresenceEntry> {
        let mut out = Vec::with_capacity(max.min(self.slots.len()));
        for (&seq, s) in self.slots.iter().take(max) {
            out.push(s.entry.clone());
            if let Some(t) = self.touched.get_mut(&seq) {
                t.handed_out = true;
            } else if !s.announced {
                // Moved up into the window since the last flush: the next diff must cover
                // it for this subscriber too, should it leave before then.
                let order = self.touched.len() as u64;
                self.touched.insert(
                    seq,
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

    /// Remembers what was announced about entry `seq` before its first change in this
    /// interval.
    fn touch(&mut self, seq: u64) {
        if self.touched.contains_key(&seq) {
            return;
        }
        let announced = self
            .slots
            .get(&seq)
            .filter(|s| s.announced)
            .map(|s| s.entry.clone());
        let order = self.touched.len() as u64;
        self.touched.insert(
            seq,
            Touched {
                order,
                announced,
                handed_out: false,
                departed: None,
            },
        );
    }

    /// Adds an entry (the caller makes sure its connection has none yet); returns its
    /// sequence, the key of [`leave`](Self::leave) and [`update`](Self::update).
    pub fn join(&mut self, e: PresenceEntry) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.touch(seq);
        self.slots.insert(
            seq,
            Slot {
                entry: e,
                announced: false,
            },
        );
        seq
    }

    /// Removes an entry; `false` if it was not present.
    pub fn leave(&mut self, seq: u64) -> bool {
        if !self.slots.contains_key(&seq) {
            return false;
        }
        self.touch(seq);
        let removed = self.slots.remove(&seq);
        if let Some(t) = self.touched.get_mut(&seq) {
            t.departed = removed.map(|s| s.entry);
        }
        true
    }

    /// Replaces an entry's meta; `false` if it is not present.
    pub fn update(&mut self, seq: u64, meta: Box<serde_json::value::RawValue>) -> bool {
        if !self.slots.contains_key(&seq) {
            return false;
        }
        self.touch(seq);
        if let Some(s) = self.slots.get_mut(&seq) {
            s.entry.meta = Some(meta);
        }
        true
    }

    /// Replaces an entry's role (a refreshed token that holds another role); `false` if it
    /// is not present or already holds `role`.
    pub fn set_role(&mut self, seq: u64, role: &'static str) -> bool {
        if self.slots.get(&seq).is_none_or(|s| s.entry.role == role) {
            return false;
        }
        self.touch(seq);
        if let Some(s) = self.slots.get_mut(&seq) {
            s.entry.role = role;
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
        for (seq, slot) in self.slots.iter_mut().take(max) {
            let send = match touched.remove(seq) {
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

    fn conn(n: u64) -> ConnRef {
        ConnRef { shard: 0, conn: n }
    }

    /// Presence plus the connection → sequence map its owner keeps (as `ChannelState`).
    #[derive(Default)]
    struct P {
        p: Presence,
        seqs: HashMap<u64, u64>,
    }

    impl P {
        fn join(&mut self, user: &str, n: u64) -> bool {
            if self.seqs.contains_key(&n) {
                return false;
            }
            let seq = self.p.join(PresenceEntry::new(
                user.into(),
                "o".into(),
                conn(n),
                "photographer",
            ));
            self.seqs.insert(n, seq);
            true
        }
        fn leave(&mut self, n: u64) -> bool {
            self.seqs.remove(&n).is_some_and(|s| self.p.leave(s))
        }
        fn update(&mut self, n: u64, m: &str) -> bool {
            self.seqs
                .get(&n)
                .is_some_and(|&s| self.p.update(s, meta(m)))
        }
        fn take(&mut self, max: usize, total_only: bool) -> Option<PresenceDiff> {
            self.p.take_diff(max, total_only)
        }
    }

    fn ids(v: &[PresenceEntry]) -> Vec<u64> {
        v.iter().map(|e| e.conn.conn).collect()
    }

    #[test]
    fn join_update_leave() {
        let mut p = P::default();
        assert!(p.join("u1", 1));
        assert!(!p.join("u1", 1), "already present");
        let d = p.take(ALL, true).unwrap();
        assert_eq!((ids(&d.joins), d.leaves.len(), d.total), (vec![1], 0, 1));
        assert!(p.take(ALL, true).is_none(), "announced once");
        p.p.join(PresenceEntry::new(
            "u2".into(),
            "o".into(),
            ConnRef { shard: 1, conn: 1 },
            "couple",
        ));
        p.take(ALL, true);
        assert!(p.update(1, r#"{"activity":"ceremony"}"#));
        let d = p.take(ALL, true).unwrap();
        assert_eq!(
            d.leaves[0].meta_json(),
            "{}",
            "an update: the old entry leaves"
        );
        assert_eq!(d.joins[0].meta_json(), r#"{"activity":"ceremony"}"#);
        assert!(!p.update(9, "{}"));
        assert!(p.leave(1));
        assert!(!p.leave(1));
        let d = p.take(ALL, true).unwrap();
        assert_eq!(d.leaves[0].user_id, "u1");
        assert_eq!(d.leaves[0].meta_json(), r#"{"activity":"ceremony"}"#);
        assert_eq!(d.total, 1);
        let json = serde_json::to_string(&p.p.snapshot(10)).unwrap();
        assert_eq!(
            json,
            r#"[{"user_id":"u2","org":"o","connection_id":"c-1-1","role":"couple","meta":{}}]"#
        );
        p.update(9, "{}");
        let e = PresenceEntry {
            meta: Some(meta(r#"{"a":[1]}"#)),
            ..PresenceEntry::new("u".into(), "o".into(), conn(3), "guest")
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"user_id":"u","org":"o","connection_id":"c-0-3","role":"guest","meta":{"a":[1]}}"#
        );
    }

    #[test]
    fn many_joins_make_one_diff_in_join_order() {
        let mut p = P::default();
        for i in 0..500 {
            p.join(&format!("u{i}"), i);
        }
        let d = p.take(ALL, true).unwrap();
        assert_eq!((d.joins.len(), d.leaves.len(), d.total), (500, 0, 500));
        assert_eq!(d.joins[0].conn.conn, 0);
        assert_eq!(d.joins[499].conn.conn, 499);
        assert!(!p.p.has_changes());
    }

    #[test]
    fn past_a_full_window_only_the_total_changes() {
        let mut p = P::default();
        for i in 0..3 {
            p.join("u", i);
        }
        assert_eq!(p.take(3, true).unwrap().joins.len(), 3);
        for i in 3..100 {
            p.join("u", i);
        }
        let d = p.take(3, true).unwrap();
        assert!(d.is_empty());
        assert_eq!(d.total, 100);
        // A leave inside the window lets the next one in.
        p.leave(1);
        let d = p.take(3, true).unwrap();
        assert_eq!((ids(&d.leaves), ids(&d.joins)), (vec![1], vec![3]));
        assert_eq!(d.total, 99);
        // A leave past the window: the total only.
        p.leave(50);
        let d = p.take(3, true).unwrap();
        assert!(d.is_empty());
        assert_eq!(d.total, 98);
    }

    #[test]
    fn a_change_of_total_alone_can_wait() {
        let mut p = P::default();
        for i in 0..3 {
            p.join("u", i);
        }
        p.take(2, false).unwrap();
        p.join("u", 9);
        assert_eq!(p.take(2, false), None, "past the window: may wait");
        assert!(p.p.has_changes(), "still to announce");
        p.leave(0);
        let d = p.take(2, false).unwrap();
        assert_eq!(
            (ids(&d.leaves), ids(&d.joins), d.total),
            (vec![0], vec![2], 3)
        );
        p.join("u", 10);
        assert_eq!(p.take(2, false), None);
        assert_eq!(p.take(2, true).unwrap().total, 4);
        assert!(!p.p.has_changes());
    }

    #[test]
    fn changes_that_cancel_out_are_not_announced() {
        let mut p = P::default();
        p.join("u1", 1);
        p.take(ALL, true);
        p.update(1, r#"{"a":1}"#);
        p.update(1, "{}");
        assert!(p.p.has_changes());
        assert_eq!(p.take(ALL, true), None);
        // Joined and left within one interval, handed to nobody: nothing at all.
        p.join("u2", 2);
        p.leave(2);
        assert_eq!(p.take(ALL, true), None);
    }

    #[test]
    fn joined_and_left_after_being_handed_out_is_a_leave() {
        let mut p = P::default();
        p.join("u1", 1);
        assert_eq!(p.p.snapshot(ALL).len(), 1);
        p.update(1, r#"{"a":1}"#);
        p.leave(1);
        let d = p.take(ALL, true).unwrap();
        assert!(d.joins.is_empty());
        assert_eq!(ids(&d.leaves), vec![1]);
        assert_eq!(d.total, 0);
    }

    /// A model client: applies leaves, then joins, keyed by connection id.
    fn apply(state: &mut BTreeMap<String, PresenceEntry>, d: &PresenceDiff) {
        for l in &d.leaves {
            state.remove(&l.connection_id());
        }
        for j in &d.joins {
            state.insert(j.connection_id(), j.clone());
        }
    }

    fn keyed(v: Vec<PresenceEntry>) -> BTreeMap<String, PresenceEntry> {
        v.into_iter().map(|e| (e.connection_id(), e)).collect()
    }

    /// Whenever a client takes its snapshot, snapshot + later diffs equal the window now,
    /// and the last total equals the count. A deterministic pseudo-random walk over joins,
    /// leaves (and re-joins), updates, snapshots and flushes, with and without a cut window.
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
            let mut p = P::default();
            let mut clients: Vec<(BTreeMap<String, PresenceEntry>, usize)> = Vec::new();
            for step in 0..8_000 {
                let c = next(30);
                match next(12) {
                    0..=3 => {
                        p.join("u", c);
                    }
                    4..=6 => {
                        p.leave(c);
                    }
                    7 | 8 => {
                        p.update(c, &format!(r#"{{"s":{}}}"#, step % 3));
                    }
                    9 => {
                        let total = p.p.len();
                        clients.push((keyed(p.p.snapshot(max)), total));
                    }
                    _ => {
                        if let Some(d) = p.take(max, next(2) == 0) {
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
            if let Some(d) = p.take(max, true) {
                for (s, total) in &mut clients {
                    apply(s, &d);
                    *total = d.total;
                }
            }
            let truth = keyed(p.p.snapshot(max));
            assert!(clients.len() > 300);
            for (s, total) in &clients {
                assert_eq!(*s, truth, "window of {max}");
                assert_eq!(*total, p.p.len());
            }
        }
    }
}
