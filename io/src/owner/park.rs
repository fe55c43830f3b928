//! Parking (issue 16 item 5, docs/decisions.md §32): finds the wedding-day `critical` and
//! `emergency` messages a member has not acknowledged `park_after_ms` after they were
//! published, and returns one [`Record::Parked`] per (channel, message, member). The
//! registry stores each entry once and sends its webhook (`journal::Catalog::parked`).
//!
//! Cheap by construction: channels without a wedding are skipped at once; each channel
//! remembers the last id looked at, so each kept message is looked at once, when it comes
//! due, and one sweep looks at most at `escalation.sweep_max_messages`; only `critical`/`emergency` messages published on their wedding's day go on to the
//! members' cursors. After a restart the kept window is looked at again and the registry's
//! primary key drops the entries already stored. No clock, no I/O: `now` comes in.

use super::{Effects, Now, Owner, Record};
use crate::journal::ParkedEvent;
use ringbearer_core::message::{access_frame, Priority};

impl Owner {
    /// Parks what is due at `now` (see the module comment), looking at most at
    /// `escalation.sweep_max_messages` messages. Run every `escalation.sweep_interval_ms`
    /// by the shard's parking service.
    pub fn park_due(&mut self, now: Now, park_after_ms: u64) -> Effects {
        let mut fx = Effects::default();
        if park_after_ms == 0 {
            return fx;
        }
        let mut budget = self.cfg.escalation.sweep_max_messages;
        let due_ms = now.ms.saturating_sub(park_after_ms);
        // The calendar clock may be shifted (`[clock] start`); a message's calendar time is
        // its timestamp shifted the same way.
        let shift = now.calendar_ms as i128 - now.ms as i128;
        let calendar = |ts: u64| (ts as i128 + shift).clamp(0, u64::MAX as i128) as u64;
        self.parked_upto
            .retain(|name, _| self.channels.contains_key(name));
        for (name, ch) in &self.channels {
            if budget == 0 {
                break;
            }
            let Some(wedding) = ch.meta.access.wedding_id.as_deref() else {
                continue;
            };
            let after = self.parked_upto.get(name).copied().unwrap_or(0);
            if ch.durable_id() <= after {
                continue;
            }
            let weddings = &self.weddings;
            let (upto, looked, found) = ch.unacked_due(after, due_ms, budget, |_, ts, frame| {
                access_frame(frame).is_ok_and(|f| {
                    matches!(f.priority(), Priority::Critical | Priority::Emergency)
                        && weddings.is_wedding_day(wedding, calendar(ts))
                })
            });
            for (id, frame, members) in found {
                let Ok(f) = access_frame(frame) else { continue };
                for member in members {
                    // The sender knows what it sent.
                    if member.is(f.sender_org.as_str(), f.sender_user_id.as_str()) {
                        continue;
                    }
                    fx.record(Record::Parked(Box::new(ParkedEvent {
                        channel: name.clone(),
                        channel_org: ch.meta.access.org.clone(),
                        wedding_id: Some(wedding.to_owned()),
                        message_id: id,
                        member,
                        priority: f.priority().as_str(),
                        msg_type: f.msg_type.as_str().to_owned(),
                        event: f.event.as_ref().map(|e| e.as_str().to_owned()),
                        payload: f.payload.as_str().to_owned(),
                        published_ms: f.ts_ms.to_native(),
                        parked_ms: now.ms,
                    })));
                }
            }
            budget = budget.saturating_sub(looked);
            if upto > after {
                self.parked_upto.insert(name.clone(), upto);
            }
        }
        fx
    }
}
