//! The per-channel kept window: the newest messages, bounded by count and by age, from
//! which a returning subscriber is served (SPEC §2.2). Time comes in as an argument.
//!
//! Ids are assigned by the channel's owner, strictly increasing by one from 1, so the window
//! always holds a contiguous run `first..=last` and "has anything after position p been
//! dropped?" is a comparison, not a search.

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct Entry<T> {
    pub id: u64,
    pub ts_ms: u64,
    pub item: T,
}

/// The answer to "what follows position `p`?".
#[derive(Debug, PartialEq, Eq)]
pub struct Resume<'a, T> {
    /// `true` when every message after the position is still kept.
    pub recovered: bool,
    /// Kept messages after the position (all kept messages when `recovered` is false).
    pub entries: Vec<&'a Entry<T>>,
}

impl<T: PartialEq> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id && self.ts_ms == o.ts_ms && self.item == o.item
    }
}
impl<T: Eq> Eq for Entry<T> {}

#[derive(Clone, Debug)]
pub struct Window<T> {
    entries: VecDeque<Entry<T>>,
    /// The id of the newest message ever appended (0: none yet).
    last_id: u64,
    max_count: usize,
    max_age_ms: u64,
}

impl<T> Window<T> {
    pub fn new(max_count: usize, max_age_ms: u64) -> Self {
        assert!(max_count > 0);
        Window {
            entries: VecDeque::new(),
            last_id: 0,
            max_count,
            max_age_ms,
        }
    }

    /// Restarts numbering after `last_id` (recovery from a log).
    pub fn with_last_id(mut self, last_id: u64) -> Self {
        assert!(self.entries.is_empty());
        self.last_id = last_id;
        self
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    pub fn next_id(&self) -> u64 {
        self.last_id + 1
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest kept id, if any.
    pub fn first_id(&self) -> Option<u64> {
        self.entries.front().map(|e| e.id)
    }

    /// Appends the next message. `id` must be `next_id()`.
    pub fn push(&mut self, id: u64, ts_ms: u64, item: T, now_ms: u64) {
        assert_eq!(id, self.next_id(), "ids are contiguous");
        self.last_id = id;
        self.entries.push_back(Entry { id, ts_ms, item });
        while self.entries.len() > self.max_count {
            self.entries.pop_front();
        }
        self.expire(now_ms);
    }

    /// Appends the next message without dropping any for count: a message still being
    /// stored must not push a stored one out (it may yet be rolled back). The caller calls
    /// [`trim_stored`](Self::trim_stored) once it is stored. `id` must be `next_id()`.
    pub fn push_pending(&mut self, id: u64, ts_ms: u64, item: T, now_ms: u64) {
        assert_eq!(id, self.next_id(), "ids are contiguous");
        self.last_id = id;
        self.entries.push_back(Entry { id, ts_ms, item });
        self.expire(now_ms);
    }

    /// Keeps at most `max_count` entries up to `stored` (the last stored id), dropping the
    /// oldest; entries after it are not counted.
    pub fn trim_stored(&mut self, stored: u64) {
        while let Some(first) = self.entries.front().map(|e| e.id) {
            let stored_kept = (stored + 1).saturating_sub(first) as usize;
            if stored_kept <= self.max_count {
                break;
            }
            self.entries.pop_front();
        }
    }

    /// Drops messages older than the age limit.
    pub fn expire(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.max_age_ms);
        while self.entries.front().is_some_and(|e| e.ts_ms < cutoff) {
            self.entries.pop_front();
        }
    }

    /// What follows position `after` (the last id the subscriber has), among the messages
    /// up to `upto` (the last stored id: later ones are still being stored and arrive live).
    pub fn resume(&self, after: u64, upto: u64, now_ms: u64) -> Resume<'_, T> {
        let cutoff = now_ms.saturating_sub(self.max_age_ms);
        let upto = upto.min(self.last_id);
        let live = self
            .entries
            .iter()
            .filter(move |e| e.ts_ms >= cutoff && e.id <= upto);
        if after > upto {
            // A position from the future: ids of an earlier life of the channel.
            return Resume {
                recovered: false,
                entries: live.collect(),
            };
        }
        let first_live = self
            .entries
            .iter()
            .find(|e| e.ts_ms >= cutoff)
            .map(|e| e.id)
            .unwrap_or(self.last_id + 1);
        if after + 1 >= first_live {
            Resume {
                recovered: true,
                entries: live.filter(|e| e.id > after).collect(),
            }
        } else {
            Resume {
                recovered: false,
                entries: live.collect(),
            }
        }
    }

    /// Drops every message after `id` and restarts numbering there (a failed store).
    /// Returns how many were dropped.
    pub fn truncate_after(&mut self, id: u64) -> usize {
        let mut n = 0;
        while self.entries.back().is_some_and(|e| e.id > id) {
            self.entries.pop_back();
            n += 1;
        }
        self.last_id = self.last_id.min(id);
        n
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids<T>(r: &Resume<'_, T>) -> Vec<u64> {
        r.entries.iter().map(|e| e.id).collect()
    }

    #[test]
    fn resume_inside_and_outside_the_window() {
        let mut w = Window::new(3, 1000);
        for id in 1..=5 {
            w.push(id, 100, id, 100);
        }
        assert_eq!(w.first_id(), Some(3));
        let r = w.resume(2, 5, 100);
        assert!(r.recovered);
        assert_eq!(ids(&r), vec![3, 4, 5]);
        let r = w.resume(4, 5, 100);
        assert!(r.recovered);
        assert_eq!(ids(&r), vec![5]);
        let r = w.resume(5, 5, 100);
        assert!(r.recovered && r.entries.is_empty());
        let r = w.resume(1, 5, 100);
        assert!(!r.recovered);
        assert_eq!(ids(&r), vec![3, 4, 5]);
        let r = w.resume(9, 5, 100);
        assert!(!r.recovered);
    }

    #[test]
    fn age_expiry_counts_as_dropped() {
        let mut w = Window::new(10, 1000);
        w.push(1, 0, (), 0);
        w.push(2, 500, (), 500);
        w.push(3, 1200, (), 1200);
        // At 1200 the cutoff is 200: message 1 is gone.
        assert_eq!(w.first_id(), Some(2));
        assert!(w.resume(1, 3, 1200).recovered);
        assert!(!w.resume(0, 3, 1200).recovered);
        // Later, without a push, age still applies at resume time.
        let r = w.resume(1, 3, 1600);
        assert!(!r.recovered);
        assert_eq!(ids(&r), vec![3]);
        // Everything expired: a subscriber who had it all is still recovered.
        assert!(w.resume(3, 3, 10_000).recovered);
        assert!(!w.resume(2, 3, 10_000).recovered);
    }

    #[test]
    fn resume_stops_at_the_stored_end_and_truncation_restarts_ids() {
        let mut w = Window::new(10, 1000);
        for id in 1..=5 {
            w.push(id, 0, id, 0);
        }
        let r = w.resume(1, 3, 0);
        assert!(r.recovered);
        assert_eq!(ids(&r), vec![2, 3]);
        assert!(
            !w.resume(4, 3, 0).recovered,
            "a position past the stored end is not ours"
        );
        assert_eq!(w.truncate_after(3), 2);
        assert_eq!(w.next_id(), 4);
        w.push(4, 0, 40, 0);
        assert_eq!(w.iter().last().unwrap().item, 40);
    }

    #[test]
    fn empty_window_recovers_position_zero() {
        let w: Window<()> = Window::new(5, 10);
        assert!(w.resume(0, 0, 0).recovered);
        assert_eq!(w.next_id(), 1);
    }

    proptest! {
        #[test]
        fn resume_never_gaps(n in 0u64..60, cap in 1usize..20, after in 0u64..70) {
            let mut w = Window::new(cap, u64::MAX);
            for id in 1..=n { w.push(id, 0, id, 0); }
            let r = w.resume(after, n, 0);
            let got = ids(&r);
            // Always ascending and contiguous.
            for p in got.windows(2) { prop_assert_eq!(p[1], p[0] + 1); }
            if r.recovered {
                // Exactly the ids after the position.
                let want: Vec<u64> = (after + 1..=n).collect();
                prop_assert_eq!(got, want);
            } else {
                prop_assert!(after > n || after + 1 < w.first_id().unwrap_or(n + 1));
                prop_assert_eq!(got.len(), w.len());
            }
        }
    }
}
