//! Who a user is: the pair (`org`, `sub`) (SPEC §1 "Identity"). Two organizations may both
//! have a user `u-1`; they never share a subscription, cursor, targeted message, presence
//! entry or count, because everything that names a user names it with this type.
//!
//! Also the one visibility rule for a message's target ([`may_see`]): used by live
//! delivery, resume, history, REST and every count alike.

use crate::access::{Role, RoleSet};
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

/// Who a message is for: everyone allowed on its channel, one user, or the subscribers
/// holding one of some roles (SPEC §2 `target_user_id`, `target_roles`, or an
/// organization's routing table). A publish names at most one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub user: Option<UserKey>,
    pub roles: RoleSet,
}

impl Target {
    pub fn user(u: UserKey) -> Target {
        Target {
            user: Some(u),
            roles: RoleSet::EMPTY,
        }
    }

    pub fn roles(roles: RoleSet) -> Target {
        Target { user: None, roles }
    }

    pub fn is_everyone(&self) -> bool {
        self.user.is_none() && self.roles.is_empty()
    }

    /// [`may_see`] for this target.
    pub fn admits(&self, viewer: &UserKey, role: Option<Role>) -> bool {
        may_see(
            self.user.as_ref().map(|t| (t.org.as_str(), t.sub.as_str())),
            self.roles,
            viewer,
            role,
        )
    }
}

/// Whether a subscriber `viewer`, holding `role` (`None`: not known, e.g. a member enrolled
/// by a service and never connected), may see a message targeted at user `user` (`None`:
/// not at a user) and at `roles` (empty: not at roles). Channel access is checked before a
/// subscriber exists; this is the rest of the rule, and the only place it is written
/// (docs/protocol.md "Who sees what"). A role target admits only viewers whose role is
/// known and listed.
pub fn may_see(
    user: Option<(&str, &str)>,
    roles: RoleSet,
    viewer: &UserKey,
    role: Option<Role>,
) -> bool {
    if let Some((org, sub)) = user {
        if !viewer.is(org, sub) {
            return false;
        }
    }
    roles.is_empty() || role.is_some_and(|r| roles.contains(r))
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
        let (e, r) = (RoleSet::EMPTY, Some(Role::Guest));
        assert!(may_see(None, e, &a, r) && may_see(None, e, &b, None));
        assert!(may_see(Some(("org-a", "u-1")), e, &a, r));
        assert!(!may_see(Some(("org-a", "u-1")), e, &b, r));
        assert!(!may_see(Some(("org-a", "u-2")), e, &a, r));
        assert_ne!(a, b);
    }

    #[test]
    fn a_role_target_admits_only_listed_known_roles() {
        let a = UserKey::new("org-a", "u-1");
        let couple = RoleSet::of([Role::Couple, Role::Coordinator]);
        assert!(may_see(None, couple, &a, Some(Role::Couple)));
        assert!(may_see(None, couple, &a, Some(Role::Coordinator)));
        assert!(!may_see(None, couple, &a, Some(Role::Photographer)));
        // Admins are not implied: a routing rule names them when they should see it.
        assert!(!may_see(None, couple, &a, Some(Role::Admin)));
        assert!(!may_see(None, couple, &a, None));
        let t = Target::roles(couple);
        assert!(t.admits(&a, Some(Role::Couple)) && !t.admits(&a, None));
        assert!(Target::default().admits(&a, None));
    }
}
