//! Presence of one channel (SPEC §3): who is connected, with which role and meta, as
//! `presence_state` snapshots and `presence_diff` joins/leaves.

use serde::Serialize;

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

/// A change to broadcast. An update is a leave of the old entry plus a join of the new one
/// (Phoenix's convention).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PresenceDiff {
    pub joins: Vec<PresenceEntry>,
    pub leaves: Vec<PresenceEntry>,
}

impl PresenceDiff {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// Entries keyed by connection id, in join order.
#[derive(Clone, Debug, Default)]
pub struct Presence {
    entries: Vec<PresenceEntry>,
}

impl Presence {
    pub fn snapshot(&self) -> &[PresenceEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds (or, for a connection already present, keeps) an entry.
    pub fn join(&mut self, e: PresenceEntry) -> PresenceDiff {
        if self
            .entries
            .iter()
            .any(|x| x.connection_id == e.connection_id)
        {
            return PresenceDiff::default();
        }
        self.entries.push(e.clone());
        PresenceDiff {
            joins: vec![e],
            leaves: vec![],
        }
    }

    pub fn leave(&mut self, connection_id: &str) -> PresenceDiff {
        match self
            .entries
            .iter()
            .position(|x| x.connection_id == connection_id)
        {
            Some(i) => PresenceDiff {
                joins: vec![],
                leaves: vec![self.entries.remove(i)],
            },
            None => PresenceDiff::default(),
        }
    }

    /// Replaces the meta of a present connection; `None` if it is not present.
    pub fn update(
        &mut self,
        connection_id: &str,
        meta: Box<serde_json::value::RawValue>,
    ) -> Option<PresenceDiff> {
        let e = self
            .entries
            .iter_mut()
            .find(|x| x.connection_id == connection_id)?;
        let old = e.clone();
        e.meta = meta;
        Some(PresenceDiff {
            joins: vec![e.clone()],
            leaves: vec![old],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(s: &str) -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string(s.into()).unwrap()
    }

    #[test]
    fn join_update_leave() {
        let mut p = Presence::default();
        let d = p.join(PresenceEntry::new(
            "u1".into(),
            "c-0-1".into(),
            "photographer",
        ));
        assert_eq!(d.joins.len(), 1);
        assert!(p
            .join(PresenceEntry::new(
                "u1".into(),
                "c-0-1".into(),
                "photographer"
            ))
            .is_empty());
        p.join(PresenceEntry::new("u2".into(), "c-1-1".into(), "couple"));
        let d = p
            .update("c-0-1", meta(r#"{"activity":"ceremony"}"#))
            .unwrap();
        assert_eq!(d.leaves[0].meta.get(), "{}");
        assert_eq!(d.joins[0].meta.get(), r#"{"activity":"ceremony"}"#);
        assert!(p.update("nope", meta("{}")).is_none());
        let d = p.leave("c-0-1");
        assert_eq!(d.leaves[0].user_id, "u1");
        assert!(p.leave("c-0-1").is_empty());
        assert_eq!(p.len(), 1);
        let json = serde_json::to_string(p.snapshot()).unwrap();
        assert_eq!(
            json,
            r#"[{"user_id":"u2","connection_id":"c-1-1","role":"couple","meta":{}}]"#
        );
    }
}
