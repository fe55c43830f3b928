//! Channel names (`{scope}:{entity}:{id}`, SPEC §1), channel types and their default
//! permissions, and which shard owns a channel.
//!
//! A name is validated byte by byte before it is used for anything — hashing, lookup,
//! logging — so an injection attempt never reaches a map or a log line unescaped.

use crate::access::Role;
use crate::error::{ErrorCode, Refusal};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The whole name is at most this many bytes (SPEC §1).
pub const CHANNEL_NAME_MAX_BYTES: usize = 128;
/// `[a-z0-9_-]{1,32}` (SPEC §1).
pub const ENTITY_MAX_BYTES: usize = 32;
/// `[A-Za-z0-9_-]{1,64}` (SPEC §1).
pub const ID_MAX_BYTES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Wedding,
    Supplier,
    Couple,
    Collaboration,
    Venue,
    Form,
    Journey,
    Guest,
    Notifications,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "wedding" => Scope::Wedding,
            "supplier" => Scope::Supplier,
            "couple" => Scope::Couple,
            "collaboration" => Scope::Collaboration,
            "venue" => Scope::Venue,
            "form" => Scope::Form,
            "journey" => Scope::Journey,
            "guest" => Scope::Guest,
            "notifications" => Scope::Notifications,
            _ => return None,
        })
    }
}

/// A validated channel name. The only way to get one is [`ChannelName::parse`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    /// Validates `{scope}:{entity}:{id}`; anything else is `WS_INVALID_CHANNEL`.
    pub fn parse(s: &str) -> Result<ChannelName, Refusal> {
        Self::check(s).map_err(|why| {
            Refusal::new(
                ErrorCode::InvalidChannel,
                format!("invalid channel name: {why}; expected {{scope}}:{{entity}}:{{id}}"),
            )
        })?;
        Ok(ChannelName(s.to_owned()))
    }

    fn check(s: &str) -> Result<(), &'static str> {
        if s.is_empty() {
            return Err("empty");
        }
        if s.len() > CHANNEL_NAME_MAX_BYTES {
            return Err("longer than 128 bytes");
        }
        let mut parts = s.split(':');
        let scope = parts.next().ok_or("no scope")?;
        let entity = parts.next().ok_or("no entity")?;
        let id = parts.next().ok_or("no id")?;
        if parts.next().is_some() {
            return Err("more than three segments");
        }
        Scope::parse(scope).ok_or("unknown scope")?;
        if entity.is_empty() || entity.len() > ENTITY_MAX_BYTES {
            return Err("entity must be 1 to 32 bytes");
        }
        if !entity
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err("entity may hold only a-z 0-9 _ -");
        }
        if id.is_empty() || id.len() > ID_MAX_BYTES {
            return Err("id must be 1 to 64 bytes");
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("id may hold only A-Z a-z 0-9 _ -");
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn scope(&self) -> Scope {
        // Validated at construction.
        Scope::parse(self.0.split(':').next().unwrap_or_default()).expect("validated scope")
    }
}

impl Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Deserializing validates, like `parse`: a stored name is never trusted blindly.
impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChannelName::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which shard owns a channel: FNV-1a over the name's bytes, modulo the shard count.
/// Stable across restarts and builds (the write-ahead log relies on it), unlike `std`'s
/// randomly seeded hasher.
pub fn shard_for(name: &str, shards: usize) -> usize {
    assert!(shards > 0, "at least one shard");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

/// The access pattern of a channel (SPEC §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    /// Its creator and named members.
    Private,
    /// Everyone with access to its wedding whose role may read it.
    #[default]
    Shared,
    /// Everyone with access reads; only roles with write or admin publish.
    Broadcast,
}

impl ChannelType {
    pub fn parse(s: &str) -> Option<ChannelType> {
        match s {
            "private" => Some(ChannelType::Private),
            "shared" => Some(ChannelType::Shared),
            "broadcast" => Some(ChannelType::Broadcast),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Private => "private",
            ChannelType::Shared => "shared",
            ChannelType::Broadcast => "broadcast",
        }
    }
}

/// Role lists of a channel. `admin`/`service` of the channel's organization pass every
/// check regardless of these lists (see `access`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub read: Vec<Role>,
    pub write: Vec<Role>,
    pub admin: Vec<Role>,
}

impl Permissions {
    /// The defaults of each type. Shared: everyone reads, everyone but guests writes.
    /// Broadcast: everyone reads; coordinators and venues announce. Private: membership is
    /// the gate, so every role reads and writes. Channel admins: coordinators (and the
    /// organization's `admin`/`service`, implicitly).
    pub fn default_for(kind: ChannelType) -> Permissions {
        let all = Role::ALL.to_vec();
        let no_guest: Vec<Role> = Role::ALL
            .iter()
            .copied()
            .filter(|r| *r != Role::Guest)
            .collect();
        let coordinators = vec![Role::Coordinator, Role::Admin, Role::Service];
        match kind {
            ChannelType::Shared => Permissions {
                read: all,
                write: no_guest,
                admin: coordinators,
            },
            ChannelType::Broadcast => Permissions {
                read: all,
                write: vec![Role::Coordinator, Role::Venue, Role::Admin, Role::Service],
                admin: coordinators,
            },
            ChannelType::Private => Permissions {
                read: all.clone(),
                write: all,
                admin: vec![Role::Admin, Role::Service],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_spec_examples() {
        for ok in [
            "wedding:main:w-12345",
            "supplier:dashboard:4f7a0c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
            "collaboration:sup-1:couple-9",
            "form:guest-details:w-12345",
            "journey:milestone:c_1",
            "venue:ballroom:V1",
            "notifications:all:u-1",
            "guest:rsvp:g1",
            "couple:timeline:c1",
        ] {
            let n = ChannelName::parse(ok).unwrap();
            assert_eq!(n.as_str(), ok);
        }
    }

    #[test]
    fn refuses_injection_and_malformed_names() {
        let long_id = format!("wedding:main:{}", "a".repeat(65));
        let long_name = format!("collaboration:{}:{}", "e".repeat(32), "i".repeat(64));
        assert!(!long_name.is_empty());
        for bad in [
            "",
            "wedding",
            "wedding:main",
            "wedding:main:",
            "wedding::w-1",
            ":main:w-1",
            "Wedding:main:w-1",
            "weddings:main:w-1",
            "wedding:Main:w-1",
            "wedding:main:w-1:extra",
            "wedding:main:w-1;DROP TABLE channels",
            "wedding:*:w-1",
            "wedding:main:*",
            "wedding:main:w 1",
            "wedding:main:w-1\u{0}",
            "wedding:main:w-1\n",
            "../../etc/passwd",
            "wedding:main:w-é",
            "wedding:main:w-1%00",
            "wedding:main:' OR 1=1 --",
            long_id.as_str(),
        ] {
            let e = ChannelName::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidChannel, "{bad:?}");
        }
        // 13 + 1 + 32 + 1 + 64 = 111 bytes: fine.
        ChannelName::parse(&long_name).unwrap();
    }

    #[test]
    fn shard_for_is_stable() {
        // Pinned values: changing the hash would move channels between shards' logs.
        assert_eq!(shard_for("wedding:main:w-1", 1), 0);
        let a = shard_for("wedding:main:w-1", 2);
        assert_eq!(a, shard_for("wedding:main:w-1", 2));
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| shard_for(&format!("wedding:main:w-{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }

    proptest! {
        #[test]
        fn valid_names_round_trip(scope in prop::sample::select(vec!["wedding","supplier","couple","collaboration","venue","form","journey","guest","notifications"]),
                                  entity in "[a-z0-9_-]{1,32}", id in "[A-Za-z0-9_-]{1,64}") {
            let s = format!("{scope}:{entity}:{id}");
            let n = ChannelName::parse(&s).unwrap();
            prop_assert_eq!(n.as_str(), s.as_str());
        }

        #[test]
        fn arbitrary_strings_never_panic_and_valid_ones_match_the_grammar(s in ".{0,160}") {
            if let Ok(n) = ChannelName::parse(&s) {
                prop_assert!(n.as_str().is_ascii());
                prop_assert!(n.as_str().len() <= CHANNEL_NAME_MAX_BYTES);
                prop_assert_eq!(n.as_str().split(':').count(), 3);
            }
        }

        #[test]
        fn shard_is_in_range(s in "[a-z:0-9-]{1,60}", n in 1usize..64) {
            prop_assert!(shard_for(&s, n) < n);
        }
    }
}
