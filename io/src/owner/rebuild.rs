//! Channels rebuilt from what a shard logged, after a restart: the newest checkpoint of
//! each channel (its metadata and last id), its messages, and the members and cursors the
//! registry kept. A pure function over records, so every recovery rule below is a tested
//! row, not code in the binary.
//!
//! | what the log holds | what is rebuilt |
//! |---|---|
//! | several checkpoints of a channel | the newest (log order) wins |
//! | an unreadable checkpoint | skipped, reported; an older one stands |
//! | messages but no checkpoint | the messages are skipped, reported |
//! | a message id twice | kept once |
//! | a gap in a channel's ids | the contiguous run ending at the newest id is kept, reported |
//! | members of a channel the log does not have | dropped |
//! | shared-state documents | the checkpoint's, then each stored `state` change after its last id, in id order |
//! | an unreadable `state` change | skipped, reported; the document keeps its older version |

use crate::journal::{RestoredChannel, RestoredMessage};
use ringbearer_core::channel_state::ChannelCheckpoint;
use ringbearer_core::message::{access_frame, FrameBytes};
use ringbearer_core::state_doc::{ChangePayload, Doc, STATE_TYPE};
use ringbearer_core::{Role, UserKey};
use std::collections::{BTreeMap, HashMap};

/// One record as the log returns it: a checkpoint (`id` 0, JSON body) or a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub channel: String,
    pub id: u64,
    pub ts_ms: u64,
    pub body: Vec<u8>,
}

/// Something recovery left out, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    UnreadableCheckpoint {
        channel: String,
        error: String,
    },
    NoCheckpoint {
        channel: String,
        messages: usize,
    },
    /// Messages up to and including `through` were dropped.
    Gap {
        channel: String,
        through: u64,
    },
    UnreadableStateChange {
        channel: String,
        id: u64,
    },
}

/// Rebuilds channels from `records` (in log order) and `members` (`(channel, user,
/// cursor, role)`, from the registry), sorted by channel name.
pub fn rebuild(
    records: impl IntoIterator<Item = LogRecord>,
    members: impl IntoIterator<Item = (String, UserKey, u64, Option<Role>)>,
) -> (Vec<RestoredChannel>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut channels: BTreeMap<String, (Option<ChannelCheckpoint>, Vec<RestoredMessage>)> =
        BTreeMap::new();
    for r in records {
        let entry = channels.entry(r.channel.clone()).or_default();
        if r.id == 0 {
            match serde_json::from_slice::<ChannelCheckpoint>(&r.body) {
                Ok(cp) => entry.0 = Some(cp),
                Err(e) => skipped.push(Skipped::UnreadableCheckpoint {
                    channel: r.channel,
                    error: e.to_string(),
                }),
            }
        } else {
            entry.1.push(RestoredMessage {
                id: r.id,
                ts_ms: r.ts_ms,
                frame: r.body,
            });
        }
    }
    let mut by_channel: HashMap<String, Vec<(UserKey, u64, Option<Role>)>> = HashMap::new();
    for (channel, user, cursor, role) in members {
        by_channel
            .entry(channel)
            .or_default()
            .push((user, cursor, role));
    }
    let mut restored = Vec::new();
    for (name, (checkpoint, mut messages)) in channels {
        let Some(ChannelCheckpoint {
            meta,
            last_id,
            docs,
        }) = checkpoint
        else {
            skipped.push(Skipped::NoCheckpoint {
                channel: name,
                messages: messages.len(),
            });
            continue;
        };
        messages.sort_by_key(|m| m.id);
        messages.dedup_by_key(|m| m.id);
        let docs = state_docs(&name, docs, last_id, &messages, &mut skipped);
        // Keep the contiguous run that ends at the newest id: a gap would break the window's
        // "ids are contiguous" rule (it cannot happen with one writer per log, but recovery
        // does not trust it).
        if let Some(gap) = messages.windows(2).rposition(|w| w[1].id != w[0].id + 1) {
            skipped.push(Skipped::Gap {
                channel: name.clone(),
                through: messages[gap].id,
            });
            messages.drain(..=gap);
        }
        let members = by_channel.remove(&name).unwrap_or_default();
        restored.push(RestoredChannel {
            meta,
            last_id,
            messages,
            members,
            docs,
        });
    }
    (restored, skipped)
}

/// A channel's shared-state documents: the checkpoint's (as of `last_id`), with every
/// stored change after it applied in id order. A change carries the document's whole
/// value, so the newest change of a document rebuilds it.
fn state_docs(
    channel: &str,
    mut docs: BTreeMap<String, Doc>,
    last_id: u64,
    messages: &[RestoredMessage],
    skipped: &mut Vec<Skipped>,
) -> BTreeMap<String, Doc> {
    for m in messages.iter().filter(|m| m.id > last_id) {
        let mut f = FrameBytes::with_capacity(m.frame.len());
        f.extend_from_slice(&m.frame);
        let Ok(a) = access_frame(&f) else { continue };
        if a.msg_type.as_str() != STATE_TYPE {
            continue;
        }
        match serde_json::from_str::<ChangePayload>(a.payload.as_str()) {
            Ok(p) => {
                let (name, doc) = p.into_doc();
                docs.insert(name, doc);
            }
            Err(_) => skipped.push(Skipped::UnreadableStateChange {
                channel: channel.to_owned(),
                id: m.id,
            }),
        }
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbearer_core::access::ChannelAccess;
    use ringbearer_core::channel::{ChannelType, Permissions};
    use ringbearer_core::channel_state::ChannelMeta;
    use ringbearer_core::ChannelName;

    fn checkpoint(name: &str, last_id: u64, epoch: &str) -> LogRecord {
        let cp = ChannelCheckpoint {
            meta: ChannelMeta {
                id: format!("id-{name}"),
                name: ChannelName::parse(&format!("venue:hall:{name}")).unwrap(),
                access: ChannelAccess {
                    org: "org-a".into(),
                    wedding_id: None,
                    kind: ChannelType::Shared,
                    permissions: Permissions::default_for(ChannelType::Shared),
                    creator: "u-1".into(),
                    members: vec![],
                },
                max_subscribers: 10,
                retention_ms: 3_600_000,
                created_at_ms: 1,
                epoch: epoch.into(),
            },
            last_id,
            docs: Default::default(),
        };
        LogRecord {
            channel: name.into(),
            id: 0,
            ts_ms: 1,
            body: serde_json::to_vec(&cp).unwrap(),
        }
    }

    fn message(name: &str, id: u64) -> LogRecord {
        LogRecord {
            channel: name.into(),
            id,
            ts_ms: id,
            body: vec![id as u8],
        }
    }

    fn ids(c: &RestoredChannel) -> Vec<u64> {
        c.messages.iter().map(|m| m.id).collect()
    }

    #[test]
    fn the_newest_checkpoint_wins_and_members_are_attached() {
        let records = vec![
            checkpoint("a", 0, "e1"),
            message("a", 1),
            message("a", 2),
            checkpoint("a", 2, "e2"),
        ];
        let members = vec![
            (
                "a".to_owned(),
                UserKey::new("org-a", "u-1"),
                1,
                Some(Role::Couple),
            ),
            ("gone".to_owned(), UserKey::new("org-a", "u-1"), 1, None),
        ];
        let (r, skipped) = rebuild(records, members);
        assert!(skipped.is_empty());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].meta.epoch, "e2");
        assert_eq!(r[0].last_id, 2);
        assert_eq!(ids(&r[0]), [1, 2]);
        assert_eq!(
            r[0].members,
            [(UserKey::new("org-a", "u-1"), 1, Some(Role::Couple))]
        );
    }

    #[test]
    fn an_unreadable_checkpoint_leaves_the_older_one() {
        let mut bad = checkpoint("a", 5, "e9");
        bad.body = b"{not json".to_vec();
        let (r, skipped) = rebuild(vec![checkpoint("a", 0, "e1"), bad], []);
        assert_eq!(r[0].meta.epoch, "e1");
        assert!(
            matches!(&skipped[..], [Skipped::UnreadableCheckpoint { channel, .. }] if channel == "a")
        );
    }

    #[test]
    fn messages_without_a_checkpoint_are_skipped() {
        let (r, skipped) = rebuild(vec![message("x", 1), checkpoint("a", 0, "e")], []);
        assert_eq!(r.len(), 1);
        assert_eq!(
            skipped,
            [Skipped::NoCheckpoint {
                channel: "x".into(),
                messages: 1
            }]
        );
    }

    #[test]
    fn duplicates_are_kept_once_and_a_gap_keeps_the_newest_run() {
        let records = vec![
            checkpoint("a", 0, "e"),
            message("a", 1),
            message("a", 2),
            message("a", 2),
            message("a", 5),
            message("a", 6),
        ];
        let (r, skipped) = rebuild(records, []);
        assert_eq!(ids(&r[0]), [5, 6]);
        assert_eq!(
            skipped,
            [Skipped::Gap {
                channel: "a".into(),
                through: 2
            }]
        );
    }

    fn state_change(name: &str, id: u64, doc: &str, version: u64, n: i64) -> LogRecord {
        use ringbearer_core::state_doc::{ChangePayload, Writer};
        let payload = ChangePayload {
            doc: doc.into(),
            version,
            value: serde_json::json!({ "n": n }).as_object().unwrap().clone(),
            writer: Writer {
                user_id: "u-1".into(),
                org: "org-a".into(),
                role: ringbearer_core::Role::Couple,
            },
            fields: None,
            overrode: None,
        };
        let f = ringbearer_core::MessageFrame {
            id,
            ts_ms: id,
            channel: format!("venue:hall:{name}"),
            msg_type: STATE_TYPE.into(),
            event: None,
            priority: 1,
            payload: serde_json::to_string(&payload).unwrap(),
            sender_user_id: "u-1".into(),
            sender_org: "org-a".into(),
            sender_role: ringbearer_core::Role::Couple.code(),
            target_user_id: None,
            target_org: None,
            target_roles: 0,
            wedding_context: None,
            idempotency_key: None,
        };
        LogRecord {
            channel: name.into(),
            id,
            ts_ms: id,
            body: f.encode().to_vec(),
        }
    }

    #[test]
    fn documents_are_the_checkpoints_with_later_changes_applied() {
        let mut cp = checkpoint("a", 2, "e");
        let mut parsed: ChannelCheckpoint = serde_json::from_slice(&cp.body).unwrap();
        let old = state_change("a", 1, "kept", 1, 10);
        let doc = |r: &LogRecord| {
            let mut f = FrameBytes::new();
            f.extend_from_slice(&r.body);
            let a = access_frame(&f).unwrap();
            serde_json::from_str::<ChangePayload>(a.payload.as_str())
                .unwrap()
                .into_doc()
        };
        let (k, d) = doc(&old);
        parsed.docs.insert(k, d);
        cp.body = serde_json::to_vec(&parsed).unwrap();
        let mut bad = state_change("a", 5, "x", 1, 0);
        bad.body = ringbearer_core::MessageFrame {
            id: 5,
            ts_ms: 5,
            channel: "venue:hall:a".into(),
            msg_type: STATE_TYPE.into(),
            event: None,
            priority: 1,
            payload: "\"not a change\"".into(),
            sender_user_id: "u".into(),
            sender_org: "org-a".into(),
            sender_role: 0,
            target_user_id: None,
            target_org: None,
            target_roles: 0,
            wedding_context: None,
            idempotency_key: None,
        }
        .encode()
        .to_vec();
        let records = vec![
            old,
            state_change("a", 2, "kept", 2, 20),
            cp,
            // At or below the checkpoint's last id: already in its documents.
            state_change("a", 3, "later", 1, 30),
            state_change("a", 4, "later", 2, 40),
            bad,
        ];
        let (r, skipped) = rebuild(records, []);
        let docs = &r[0].docs;
        assert_eq!(
            docs["kept"].version, 1,
            "the checkpoint's, not id 2's replay"
        );
        assert_eq!(
            (docs["later"].version, &docs["later"].value["n"]),
            (2, &serde_json::json!(40))
        );
        assert!(!docs.contains_key("x"));
        assert_eq!(
            skipped,
            [Skipped::UnreadableStateChange {
                channel: "a".into(),
                id: 5
            }]
        );
    }
}
