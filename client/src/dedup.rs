//! Per-channel bookkeeping: which channels to resubscribe after a reconnect, with which
//! `epoch` and `last_seen_id`, and which message ids were already handed to the app.
//!
//! De-duplication (SPEC §2.3: at-least-once, "duplicates are recognisable by `id`"): a
//! message is new when its id is above the highest id delivered so far **in its priority
//! class**. One high-water mark per channel is not enough: when a connection's backlog
//! holds several messages the server sends `critical` first, then `high`, `normal`, `low`
//! (SPEC §2.6), so ids are increasing only within a class. With a single mark, a `normal`
//! id 10 sent after a `critical` id 11 would be dropped as a duplicate; per class it is
//! delivered, and every true repeat is still dropped (within a class a repeat is never above
//! the class's mark).
//!
//! The resume position sent on resubscribe is the highest id delivered in any class.
//!
//! Pure state: no I/O, no clock. What this does not do: decide what to send; `session.rs`
//! does.

use crate::types::Priority;
use std::collections::HashMap;

/// What the client knows of one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ChannelState {
    /// From the last `subscribed` reply.
    epoch: String,
    /// Highest id delivered to the app, per priority class (`Priority::index`).
    high: [Option<u64>; Priority::CLASSES],
}

impl ChannelState {
    fn last_seen(&self) -> Option<u64> {
        self.high.iter().flatten().copied().max()
    }
}

/// The per-channel bookkeeping of one client (across its connections). A channel is in
/// here from its first `subscribed` reply until the app unsubscribes (or a resubscribe is
/// refused for good).
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    channels: HashMap<String, ChannelState>,
}

impl Tracker {
    /// A `subscribed` reply for `channel` arrived with `epoch`. Remembers the channel for
    /// resubscription. A changed epoch means the ids are from a new life of the channel:
    /// the marks are reset so its messages are not taken for repeats.
    pub(crate) fn on_subscribed(&mut self, channel: &str, epoch: &str) {
        match self.channels.get_mut(channel) {
            Some(state) if state.epoch == epoch => {}
            Some(state) => {
                state.epoch = epoch.to_owned();
                state.high = [None; Priority::CLASSES];
            }
            None => {
                let state = ChannelState {
                    epoch: epoch.to_owned(),
                    high: [None; Priority::CLASSES],
                };
                self.channels.insert(channel.to_owned(), state);
            }
        }
    }

    /// Should message `id` of class `priority` on `channel` go to the app? If so it is
    /// recorded as delivered. Messages on channels never subscribed are passed through
    /// (nothing to compare with; the server only sends them on subscribed channels).
    pub(crate) fn accept(&mut self, channel: &str, id: u64, priority: Priority) -> bool {
        let Some(state) = self.channels.get_mut(channel) else {
            return true;
        };
        let mark = &mut state.high[priority.index()];
        match *mark {
            Some(high) if id <= high => false,
            _ => {
                *mark = Some(id);
                true
            }
        }
    }

    /// The app unsubscribed: do not resubscribe, and drop the channel's state.
    pub(crate) fn forget(&mut self, channel: &str) {
        self.channels.remove(channel);
    }

    /// `(last_seen_id, epoch)` to subscribe `channel` with: the highest id delivered in any
    /// class, and the remembered epoch.
    pub(crate) fn resume_position(&self, channel: &str) -> (Option<u64>, Option<&str>) {
        match self.channels.get(channel) {
            Some(s) => (s.last_seen(), Some(s.epoch.as_str())),
            None => (None, None),
        }
    }

    /// Channels to resubscribe after a reconnect, in no particular order.
    pub(crate) fn subscribed_channels(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    const CH: &str = "wedding:main:w-1";

    #[test]
    fn unknown_channel_passes_through() {
        let mut t = Tracker::default();
        assert!(t.accept(CH, 5, Normal));
        assert!(t.accept(CH, 5, Normal));
        assert_eq!(t.resume_position(CH), (None, None));
        assert_eq!(t.subscribed_channels().count(), 0);
    }

    #[test]
    fn drops_repeats_and_older_ids() {
        let mut t = Tracker::default();
        t.on_subscribed(CH, "e1");
        assert!(t.accept(CH, 1, Normal));
        assert!(t.accept(CH, 2, Normal));
        assert!(!t.accept(CH, 2, Normal));
        assert!(!t.accept(CH, 1, Normal));
        assert!(t.accept(CH, 5, Normal));
        assert!(!t.accept(CH, 4, Normal));
        assert_eq!(t.resume_position(CH), (Some(5), Some("e1")));
    }

    #[test]
    fn id_zero_is_delivered_once() {
        let mut t = Tracker::default();
        t.on_subscribed(CH, "e1");
        assert!(t.accept(CH, 0, Low));
        assert!(!t.accept(CH, 0, Low));
        assert_eq!(t.resume_position(CH).0, Some(0));
    }

    #[test]
    fn priority_overtaking_is_not_a_duplicate() {
        // Backlog drained critical first (SPEC §2.6): 11 (critical) before 10 (normal).
        let mut t = Tracker::default();
        t.on_subscribed(CH, "e1");
        assert!(t.accept(CH, 9, Normal));
        assert!(t.accept(CH, 11, Critical));
        assert!(t.accept(CH, 10, Normal));
        // Replayed after a resubscribe: all repeats.
        for (id, p) in [(9, Normal), (10, Normal), (11, Critical)] {
            assert!(!t.accept(CH, id, p), "{id} is a repeat");
        }
        assert_eq!(t.resume_position(CH).0, Some(11));
    }

    #[test]
    fn channels_are_independent() {
        let mut t = Tracker::default();
        t.on_subscribed("a:b:c", "e");
        t.on_subscribed("a:b:d", "e");
        assert!(t.accept("a:b:c", 3, High));
        assert!(t.accept("a:b:d", 3, High));
        assert!(!t.accept("a:b:c", 3, High));
    }

    #[test]
    fn same_epoch_keeps_marks_new_epoch_resets() {
        let mut t = Tracker::default();
        t.on_subscribed(CH, "e1");
        assert!(t.accept(CH, 40, Normal));
        t.on_subscribed(CH, "e1");
        assert!(!t.accept(CH, 40, Normal));
        assert_eq!(t.resume_position(CH), (Some(40), Some("e1")));

        // The channel was recreated: ids start over and must not be dropped.
        t.on_subscribed(CH, "e2");
        assert_eq!(t.resume_position(CH), (None, Some("e2")));
        assert!(t.accept(CH, 1, Normal));
        assert!(!t.accept(CH, 1, Normal));
    }

    #[test]
    fn forget_stops_resubscription_and_clears_marks() {
        let mut t = Tracker::default();
        t.on_subscribed(CH, "e1");
        t.on_subscribed("a:b:c", "e9");
        assert!(t.accept(CH, 3, Normal));
        let mut chans: Vec<_> = t.subscribed_channels().collect();
        chans.sort_unstable();
        assert_eq!(chans, ["a:b:c", CH]);
        t.forget(CH);
        assert_eq!(t.subscribed_channels().collect::<Vec<_>>(), ["a:b:c"]);
        assert_eq!(t.resume_position(CH), (None, None));
        assert!(t.accept(CH, 3, Normal));
    }
}
