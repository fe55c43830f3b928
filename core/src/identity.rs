//! Who a user is: the pair (`org`, `sub`) (SPEC §1 "Identity"). Two organizations may both
//! have a user `u-1`; they never share a subscription, cursor, targeted message, presence
//! entry or count, because everything that names a user names it with this type.
//!
//! Also the one visibility rule for a message's target ([`may_see`]): used by live
//! delivery, resume, history, REST and every count alike.

use serde::{Deserialize, Serialize};

/// A user: its organization and its id inside that organization.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserKey {
    pub org: String,
    pub sub: String,
}

impl UserKey {
    pub fn new(org: impl Into<String>, sub: impl Into<String>) -> UserKey {
        UserKey {
            org: org.into(),
            sub: sub.into(),
        }
    }

    pub fn is(&self, org: &str, sub: &str) -> bool {
        self.org == org && self.sub == sub
    }
}

impl std::fmt::Display for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.org, self.sub)
    }
}

/// Whether a subscriber `viewer` may see a message with target `target` (`None`: not
/// targeted). Channel access is checked before a subscriber exists; this is the rest of the
/// rule, and the only place it is written (docs/protocol.md "Who sees what").
pub fn may_see(target: Option<(&str, &str)>, viewer: &UserKey) -> bool {
    match target {
        None => true,
        Some((org, sub)) => viewer.is(org, sub),
    }
}

/// An idempotency key as a channel remembers it: scoped to its publisher (`org`, `sub`), so
/// a key answers only for a publish *repeated* by the same user (SPEC §2 promise 4), never
/// for another user's — of another organization above all — which would otherwise be
/// answered with the first message's id and never stored. Lengths keep the parts apart
/// whatever bytes the ids hold.
pub fn idempotency_scope(org: &str, sub: &str, key: &str) -> String {
    format!("{}:{org}{}:{sub}{key}", org.len(), sub.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_one_user_of_one_organization() {
        let a = UserKey::new("org-a", "u-1");
        let b = UserKey::new("org-b", "u-1");
        assert!(may_see(None, &a) && may_see(None, &b));
        assert!(may_see(Some(("org-a", "u-1")), &a));
        assert!(!may_see(Some(("org-a", "u-1")), &b));
        assert!(!may_see(Some(("org-a", "u-2")), &a));
        assert_ne!(a, b);
    }
}
