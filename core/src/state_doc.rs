//! Shared state (SPEC §3 "Shared state", docs/decisions.md §31): a channel's versioned
//! documents and the rule that decides a write. Plain data and pure functions; the owner
//! (`io/src/owner/state.rs`) applies them, logs every change as a message of the reserved
//! type [`STATE_TYPE`] and rebuilds the documents from those messages after a restart.
//!
//! A document is a JSON object with a `version` (the first write makes 1) and the `writer`
//! of its last write. A write names the version it was based on (0 to create):
//! - the current version: applied, the version goes up by one;
//! - an older one (stale): refused with the current document ([`Decision::Conflict`]),
//!   unless the writer's role ranks above the last writer's ([`rank`]: couple >
//!   coordinator = admin = service > vendors > guest), in which case it wins and names the
//!   writer it overrode;
//! - a newer one than exists: always refused (it was based on nothing the server has).

use crate::access::Role;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The message `type` every change is stored and delivered as; clients may not publish it.
pub const STATE_TYPE: &str = "state";

/// Who wrote a document's current version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    pub user_id: String,
    pub org: String,
    pub role: Role,
}

/// One document as its channel holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    pub version: u64,
    pub value: Map<String, Value>,
    pub writer: Writer,
}

/// The writer a winning stale write overrode, and the version it had written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrode {
    pub user_id: String,
    pub org: String,
    pub role: Role,
    pub version: u64,
}

/// A write's content: a whole new value, or top-level fields (`null` removes a field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Set(Map<String, Value>),
    Patch(Map<String, Value>),
}

/// What the rule decides for a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Applied as this new document; `overrode` names a writer whose version was replaced
    /// by a stale write that outranked it.
    Apply {
        doc: Doc,
        overrode: Option<Overrode>,
    },
    /// Refused: the base version is not the current one and the writer does not outrank
    /// the last writer. The client re-reads (the reply carries the current document),
    /// merges and writes again on the current version.
    Conflict,
}

/// `[a-z0-9_-]{1,64}`.
pub fn valid_doc_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The precedence of a role when a stale write meets a newer version (WS-295: couple >
/// coordinator > vendor > guest). An organization's `admin` and a `service` back end rank
/// with the coordinator: they outrank vendors' and guests' edits but never the couple's.
pub fn rank(role: Role) -> u8 {
    match role {
        Role::Couple => 4,
        Role::Coordinator | Role::Admin | Role::Service => 3,
        Role::Photographer
        | Role::Videographer
        | Role::Venue
        | Role::Caterer
        | Role::Florist
        | Role::Supplier => 2,
        Role::Guest => 1,
    }
}

/// Decides a write by `writer`, based on version `base`, to a document that is `current`
/// (`None`: never written).
pub fn decide(current: Option<&Doc>, base: u64, writer: &Writer, change: Change) -> Decision {
    let now = current.map_or(0, |d| d.version);
    let overrode = if base == now {
        None
    } else if base > now {
        return Decision::Conflict;
    } else {
        // Stale (base < now, so a current document exists).
        let cur = current.expect("a newer version exists");
        if rank(writer.role) <= rank(cur.writer.role) {
            return Decision::Conflict;
        }
        Some(Overrode {
            user_id: cur.writer.user_id.clone(),
            org: cur.writer.org.clone(),
            role: cur.writer.role,
            version: cur.version,
        })
    };
    let value = match change {
        Change::Set(v) => v,
        Change::Patch(fields) => {
            let mut v = current.map(|d| d.value.clone()).unwrap_or_default();
            patch(&mut v, fields);
            v
        }
    };
    Decision::Apply {
        doc: Doc {
            version: now + 1,
            value,
            writer: writer.clone(),
        },
        overrode,
    }
}

/// Replaces top-level `fields` of `value`; a `null` removes the field.
pub fn patch(value: &mut Map<String, Value>, fields: Map<String, Value>) {
    for (k, v) in fields {
        if v.is_null() {
            value.remove(&k);
        } else {
            value.insert(k, v);
        }
    }
}

/// The payload of a stored change (the message of type [`STATE_TYPE`], event
/// `state:{doc}`): the whole new value, so the newest change of a document alone rebuilds
/// it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePayload {
    pub doc: String,
    pub version: u64,
    pub value: Map<String, Value>,
    pub writer: Writer,
    /// The fields a patch named (absent for a whole-value write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrode: Option<Overrode>,
}

impl ChangePayload {
    /// The document this change leaves.
    pub fn into_doc(self) -> (String, Doc) {
        (
            self.doc,
            Doc {
                version: self.version,
                value: self.value,
                writer: self.writer,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn w(user: &str, role: Role) -> Writer {
        Writer {
            user_id: user.into(),
            org: "org-1".into(),
            role,
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn applied(d: Decision) -> (Doc, Option<Overrode>) {
        match d {
            Decision::Apply { doc, overrode } => (doc, overrode),
            Decision::Conflict => panic!("conflict"),
        }
    }

    #[test]
    fn doc_names() {
        assert!(valid_doc_name("timeline"));
        assert!(valid_doc_name("seating-plan_2"));
        assert!(valid_doc_name(&"a".repeat(64)));
        for bad in ["", "Timeline", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!valid_doc_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn create_then_compare_and_set() {
        let c = w("u-1", Role::Guest);
        let (d1, o) = applied(decide(None, 0, &c, Change::Set(obj(json!({"a": 1})))));
        assert_eq!((d1.version, o), (1, None));
        // Based on 1: applied. Based on 0 again (a second create) by an equal rank: refused.
        let (d2, _) = applied(decide(Some(&d1), 1, &c, Change::Set(obj(json!({"a": 2})))));
        assert_eq!(d2.version, 2);
        assert_eq!(
            decide(Some(&d2), 0, &c, Change::Set(Map::new())),
            Decision::Conflict
        );
        // A version from the future is refused whoever writes.
        let couple = w("u-9", Role::Couple);
        assert_eq!(
            decide(Some(&d2), 3, &couple, Change::Set(Map::new())),
            Decision::Conflict
        );
        assert_eq!(
            decide(None, 1, &couple, Change::Set(Map::new())),
            Decision::Conflict
        );
    }

    #[test]
    fn a_stale_write_wins_only_by_rank() {
        let vendor = w("u-2", Role::Photographer);
        let (d1, _) = applied(decide(None, 0, &vendor, Change::Set(obj(json!({"t": 1})))));
        let couple = w("u-1", Role::Couple);
        let (d2, o) = applied(decide(
            Some(&d1),
            0,
            &couple,
            Change::Set(obj(json!({"t": 2}))),
        ));
        assert_eq!(d2.version, 2);
        assert_eq!(
            o,
            Some(Overrode {
                user_id: "u-2".into(),
                org: "org-1".into(),
                role: Role::Photographer,
                version: 1
            })
        );
        // The vendor, the guest and another couple member (equal rank) are refused on 1.
        for r in [Role::Venue, Role::Guest, Role::Couple] {
            assert_eq!(
                decide(Some(&d2), 1, &w("u-3", r), Change::Set(Map::new())),
                Decision::Conflict,
                "{r:?}"
            );
        }
        assert!(rank(Role::Coordinator) > rank(Role::Florist));
        assert_eq!(rank(Role::Admin), rank(Role::Coordinator));
        assert!(rank(Role::Service) < rank(Role::Couple));
    }

    #[test]
    fn a_patch_replaces_top_level_fields_and_null_removes() {
        let c = w("u-1", Role::Coordinator);
        let (d1, _) = applied(decide(
            None,
            0,
            &c,
            Change::Set(obj(json!({"a": 1, "b": {"x": 1}, "c": 3}))),
        ));
        let (d2, _) = applied(decide(
            Some(&d1),
            1,
            &c,
            Change::Patch(obj(json!({"b": {"y": 2}, "c": null, "d": 4}))),
        ));
        assert_eq!(
            Value::Object(d2.value),
            json!({"a": 1, "b": {"y": 2}, "d": 4})
        );
        // A patch creates a document never written.
        let (d, _) = applied(decide(
            None,
            0,
            &c,
            Change::Patch(obj(json!({"a": 1, "z": null}))),
        ));
        assert_eq!(Value::Object(d.value), json!({"a": 1}));
    }

    #[test]
    fn the_payload_round_trips_to_a_doc() {
        let p = ChangePayload {
            doc: "timeline".into(),
            version: 3,
            value: obj(json!({"a": 1})),
            writer: w("u-1", Role::Couple),
            fields: None,
            overrode: None,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("overrode"));
        let back: ChangePayload = serde_json::from_str(&text).unwrap();
        assert_eq!(back.into_doc().1.version, 3);
    }
}
