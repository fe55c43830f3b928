//! The heartbeat sweep's schedule: which connections a round must look at. A round still
//! runs every `HEARTBEAT_ROUND_MAX` (1 s) or faster, but visits only the connections that
//! could have something due — a ping, a heartbeat close, a token warning or expiry —
//! instead of every connection every second (at 10,000 connections per shard that walk,
//! one cache miss after another, was a third of an idle server's CPU;
//! `docs/performance.md`, "Quiet low rates").
//!
//! Each visit does exactly what the old per-round walk did for that connection, then
//! computes the earliest instant at which that walk could next have acted on it; the
//! connection is visited at the first round at or after that instant, which is the round
//! the walk would have acted in. A visit that finds nothing due only costs the visit, so
//! every estimate here errs early, never late:
//! - a ping is due `interval` after the last one; a heartbeat close, with two pings
//!   unanswered, once the peer has been silent for two intervals (reads only push that
//!   later);
//! - a token warning or expiry is due at a wall-clock second, converted to the monotonic
//!   clock a little early (0.1 % of the wait plus 100 ms: more than NTP's slew); a jump of
//!   the wall clock against the monotonic one by more than 100 ms between two rounds
//!   revisits everyone;
//! - the interval depends on Saturday mode and today's weddings: when either changes,
//!   everyone is revisited (the round is then the old walk);
//! - a token refresh (`conn/requests.rs`) queues its connection for the next round
//!   ([`Shard::heartbeat_recheck`](crate::host::Shard)): a new token may expire sooner, and
//!   gets its own warning.
//!
//! New connections are found by id (`Shard::next_conn` only grows) and visited in their
//! first round. A connection that is closing is dropped from the schedule (it never
//! reopens). Cost: one heap entry and one map entry per connection (~40 bytes). Every
//! due is at most one ping interval ahead (the next ping), so the entries of a connection
//! that left, or left stale by a refresh, are dropped within one interval.

use crate::host::connection::Conn;
use crate::weddings::Today;
use hashbrown::HashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A wall-clock step (against the monotonic clock) larger than this between two rounds
/// makes the next round visit everyone; token deadlines are also scheduled this much early.
const CLOCK_STEP_MS: u64 = 100;

/// Nanoseconds since the schedule's start: the heap's time.
type Ns = u64;

pub(super) struct Schedule {
    start: Instant,
    /// (due, connection id), earliest first; an entry whose due differs from `due`'s is
    /// stale (the connection was rescheduled or left) and is skipped.
    heap: BinaryHeap<Reverse<(Ns, u64)>>,
    /// Each scheduled connection's current due.
    due: HashMap<u64, Ns>,
    /// Connection ids below this have been seen.
    next_seen: u64,
    /// Saturday mode and today's weddings at the last round.
    mode: Option<(bool, Option<Today>)>,
    /// Wall clock minus monotonic clock at the last round, ms.
    skew_ms: Option<i128>,
}

impl Schedule {
    pub(super) fn new(start: Instant) -> Self {
        Schedule {
            start,
            heap: BinaryHeap::new(),
            due: HashMap::new(),
            next_seen: 1,
            mode: None,
            skew_ms: None,
        }
    }

    fn ns(&self, t: Instant) -> Ns {
        t.saturating_duration_since(self.start)
            .as_nanos()
            .min(Ns::MAX as u128) as Ns
    }

    /// Whether this round must visit everyone: the first round, a change of Saturday mode
    /// or of today's weddings, or a step of the wall clock. Records the round's mode.
    pub(super) fn must_revisit_all(
        &mut self,
        now: Instant,
        wall_ms: u64,
        all_fast: bool,
        today: Option<Today>,
    ) -> bool {
        let skew = wall_ms as i128 - self.ns(now) as i128 / 1_000_000;
        let stepped = self
            .skew_ms
            .is_none_or(|s| (skew - s).unsigned_abs() > CLOCK_STEP_MS as u128);
        self.skew_ms = Some(skew);
        let mode = (all_fast, today);
        let changed = self.mode.as_ref() != Some(&mode);
        self.mode = Some(mode);
        stepped || changed
    }

    /// Today's weddings as recorded by [`Schedule::must_revisit_all`].
    pub(super) fn today(&self) -> Option<&Today> {
        self.mode.as_ref().and_then(|(_, t)| t.as_ref())
    }

    /// The connections this round visits: every one in `conns` when `all`; otherwise the
    /// new ones, those in `recheck`, and those due by `now`. Each is taken off the schedule
    /// (a visit puts it back with [`Schedule::put`]).
    pub(super) fn take(
        &mut self,
        now: Instant,
        all: bool,
        conns: &hashbrown::HashMap<u64, Rc<Conn>>,
        next_conn: u64,
        recheck: Vec<u64>,
    ) -> Vec<Rc<Conn>> {
        self.next_seen = self.next_seen.max(1);
        if all {
            self.heap.clear();
            self.due.clear();
            self.next_seen = next_conn;
            return conns.values().cloned().collect();
        }
        let mut ids: Vec<u64> = (self.next_seen..next_conn)
            .filter(|id| conns.contains_key(id))
            .collect();
        self.next_seen = self.next_seen.max(next_conn);
        for id in recheck {
            self.due.remove(&id);
            ids.push(id);
        }
        let now = self.ns(now);
        while let Some(&Reverse((due, id))) = self.heap.peek() {
            if due > now {
                break;
            }
            self.heap.pop();
            if self.due.get(&id) == Some(&due) {
                self.due.remove(&id);
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| conns.get(&id).cloned())
            .collect()
    }

    /// Schedules `conn`, just visited at `now` (`wall_ms` on the wall clock) with ping
    /// interval `interval`, for the first instant anything could be due for it. A
    /// connection that is closing is not scheduled again.
    pub(super) fn put(
        &mut self,
        conn: &Conn,
        now: Instant,
        wall_ms: u64,
        interval: Duration,
        leeway_secs: u64,
        warning_secs: u64,
    ) {
        if !conn.is_open() {
            return;
        }
        // Heartbeats (`Conn::heartbeat`): the next ping, and the close once two pings are
        // unanswered and the peer has been silent for more than two intervals.
        let mut due = self.ns(conn.last_ping.get() + interval);
        if conn.unanswered_pings.get() >= 2 {
            let silent = self.ns(conn.last_seen.get() + interval * 2);
            due = due.min(silent.saturating_add(1));
        }
        // Token expiry (`Conn::check_token_expiry`): at second `s` when `now_s >= s`.
        let exp = conn.claims.borrow().exp;
        let expire_s = exp.saturating_add(leeway_secs).saturating_add(1);
        let token_s = if conn.expiry_warned.get() {
            expire_s
        } else {
            exp.saturating_sub(warning_secs).min(expire_s)
        };
        let wait_ms = token_s.saturating_mul(1000).saturating_sub(wall_ms);
        let early_ms = wait_ms / 1000 + CLOCK_STEP_MS;
        let token_due = self
            .ns(now)
            .saturating_add(wait_ms.saturating_sub(early_ms).saturating_mul(1_000_000));
        let due = due.min(token_due);
        self.due.insert(conn.id, due);
        self.heap.push(Reverse((due, conn.id)));
    }

    /// Connections on the schedule (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbearer_core::channel_state::ConnRef;
    use ringbearer_core::{Claims, Role, Tier};
    use std::sync::Arc;

    fn conn(id: u64, exp: u64, cfg: &Rc<crate::IoConfig>) -> Rc<Conn> {
        let claims = Claims {
            sub: format!("u{id}"),
            org: "o".into(),
            role: Role::Couple,
            tier: Tier::Free,
            weddings: vec![],
            exp,
            nbf: None,
        };
        Rc::new(Conn::new(
            id,
            ConnRef { shard: 0, conn: id },
            Arc::new(claims),
            cfg,
            Arc::default(),
        ))
    }

    /// A connection is visited when its ping is due, not before; its token is looked at
    /// (early) before its warning second; a refresh brings it back at once; a closing one
    /// leaves the schedule.
    #[test]
    fn visits_only_what_is_due() {
        let cfg = Rc::new(crate::IoConfig::default());
        let t0 = Instant::now();
        let wall = 1_000_000_000_000u64; // ms
        let mut s = Schedule::new(t0);
        let far = wall / 1000 + 86_400;
        let a = conn(1, far, &cfg);
        let b = conn(2, wall / 1000 + 120, &cfg);
        let conns: hashbrown::HashMap<u64, Rc<Conn>> =
            [(1, a.clone()), (2, b.clone())].into_iter().collect();
        assert!(s.must_revisit_all(t0, wall, false, None));
        assert_eq!(s.take(t0, true, &conns, 3, vec![]).len(), 2);
        let i = Duration::from_secs(30);
        a.last_ping.set(t0);
        b.last_ping.set(t0);
        for c in [&a, &b] {
            s.put(c, t0, wall, i, 5, 60);
        }
        assert_eq!(s.len(), 2);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let wall_at = |secs: u64| wall + secs * 1000;
        // Nothing due in the first 29 s; b's warning (at +60 s) is looked at by +30 s at
        // the latest as well, but a's ping first: both at +30 s.
        assert!(!s.must_revisit_all(at(29), wall_at(29), false, None));
        assert!(s.take(at(29), false, &conns, 3, vec![]).is_empty());
        let due = s.take(at(30), false, &conns, 3, vec![]);
        assert_eq!(due.len(), 2, "both pings are due at 30 s");
        // b is put back for its token warning (its second is 60 s after the start), a
        // little early; a for its next ping at 60 s.
        b.last_ping.set(at(30));
        s.put(&b, at(30), wall_at(30), i, 5, 60);
        a.last_ping.set(at(30));
        s.put(&a, at(30), wall_at(30), i, 5, 60);
        let almost = at(60) - Duration::from_millis(100);
        let early = s.take(almost, false, &conns, 3, vec![]);
        assert_eq!(early.len(), 1, "b's warning is looked at early, never late");
        assert_eq!(early[0].id, 2);
        // A refresh: back at the next round whatever its due.
        assert!(s.take(almost, false, &conns, 3, vec![]).is_empty());
        let again = s.take(almost, false, &conns, 3, vec![1]);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, 1);
        // A closing connection is not put back.
        a.close(1000, "bye");
        s.put(&a, almost, wall_at(59), i, 5, 60);
        assert_eq!(s.len(), 0, "b was taken and not put back; a is closing");
        // A new connection is visited in its first round; a step of the wall clock or a
        // new day's weddings revisits everyone.
        let c = conn(3, far, &cfg);
        let mut conns = conns;
        conns.insert(3, c);
        assert_eq!(s.take(at(61), false, &conns, 4, vec![]).len(), 1);
        assert!(s.must_revisit_all(at(62), wall_at(62) + 500, false, None));
        assert!(!s.must_revisit_all(at(63), wall_at(63) + 500, false, None));
        assert!(s.must_revisit_all(at(64), wall_at(64) + 500, true, None));
    }
}
