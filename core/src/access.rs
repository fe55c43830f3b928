//! Roles, tiers, token claims and the access rule: the tenant boundary of SPEC §1.
//!
//! Token signatures are verified in `io/`; this module decides, from verified claims and a
//! channel's metadata, whether an action is allowed — and which refusal to give if not.

use crate::channel::{ChannelType, Permissions};
use crate::error::{ErrorCode, Refusal};
use crate::identity::UserKey;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Couple,
    Coordinator,
    Photographer,
    Videographer,
    Venue,
    Caterer,
    Florist,
    Supplier,
    Guest,
    Admin,
    Service,
}

impl Role {
    pub const ALL: [Role; 11] = [
        Role::Couple,
        Role::Coordinator,
        Role::Photographer,
        Role::Videographer,
        Role::Venue,
        Role::Caterer,
        Role::Florist,
        Role::Supplier,
        Role::Guest,
        Role::Admin,
        Role::Service,
    ];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Couple => "couple",
            Role::Coordinator => "coordinator",
            Role::Photographer => "photographer",
            Role::Videographer => "videographer",
            Role::Venue => "venue",
            Role::Caterer => "caterer",
            Role::Florist => "florist",
            Role::Supplier => "supplier",
            Role::Guest => "guest",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    /// A stable one-byte code, used in rkyv frames.
    pub fn code(self) -> u8 {
        Role::ALL.iter().position(|r| *r == self).expect("in ALL") as u8
    }

    pub fn from_code(c: u8) -> Option<Role> {
        Role::ALL.get(c as usize).copied()
    }

    /// WS-295 precedence where a conflict needs one: couple > coordinator > vendor > guest.
    /// Higher is stronger. Organization admins and services sit above all.
    pub fn precedence(self) -> u8 {
        match self {
            Role::Admin | Role::Service => 5,
            Role::Couple => 4,
            Role::Coordinator => 3,
            Role::Guest => 1,
            _ => 2,
        }
    }

    /// Organization-wide roles: may hold `weddings: ["*"]` and manage their org's channels.
    pub fn is_org_wide(self) -> bool {
        matches!(self, Role::Admin | Role::Service)
    }
}

/// A set of roles (`target_roles`, a routing table row): one bit per [`Role::code`]. The
/// empty set means "no role target".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct RoleSet(u16);

impl RoleSet {
    pub const EMPTY: RoleSet = RoleSet(0);

    pub fn of(roles: impl IntoIterator<Item = Role>) -> RoleSet {
        let mut s = RoleSet::EMPTY;
        for r in roles {
            s.insert(r);
        }
        s
    }

    /// From the bits a frame carries; bits of no role are dropped.
    pub fn from_bits(bits: u16) -> RoleSet {
        RoleSet(bits & ((1 << Role::ALL.len()) - 1))
    }

    pub fn bits(self) -> u16 {
        self.0
    }

    pub fn insert(&mut self, r: Role) {
        self.0 |= 1 << r.code();
    }

    pub fn contains(self, r: Role) -> bool {
        self.0 & (1 << r.code()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// Parses role names; an unknown name is returned as the error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<RoleSet, &'a str> {
        let mut s = RoleSet::EMPTY;
        for n in names {
            s.insert(Role::parse(n).ok_or(n)?);
        }
        Ok(s)
    }
}

impl Serialize for RoleSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Role::as_str))
    }
}

impl<'de> Deserialize<'de> for RoleSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RoleSet, D::Error> {
        let roles = Vec::<Role>::deserialize(d)?;
        Ok(RoleSet::of(roles))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Free,
    Starter,
    Professional,
    Scale,
    Enterprise,
}

impl Tier {
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "free" => Some(Tier::Free),
            "starter" => Some(Tier::Starter),
            "professional" => Some(Tier::Professional),
            "scale" => Some(Tier::Scale),
            "enterprise" => Some(Tier::Enterprise),
            _ => None,
        }
    }
}

/// Verified token claims (SPEC §4 Tokens).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub org: String,
    pub role: Role,
    pub tier: Tier,
    #[serde(default)]
    pub weddings: Vec<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Longest `sub`, `org` or wedding id a token may carry.
pub const CLAIM_ID_MAX_BYTES: usize = 128;
/// Most weddings one token may list.
pub const CLAIM_WEDDINGS_MAX: usize = 1024;

impl Claims {
    /// Semantic checks a signature cannot make: non-empty bounded ids, and `*` only for
    /// organization-wide roles (SPEC §4).
    pub fn validate(&self) -> Result<(), Refusal> {
        let bad = |m: &str| Err(Refusal::new(ErrorCode::Unauthorized, m));
        let id_ok = |s: &str| !s.is_empty() && s.len() <= CLAIM_ID_MAX_BYTES;
        if !id_ok(&self.sub) || !id_ok(&self.org) {
            return bad("token claims sub and org must be 1 to 128 bytes");
        }
        if self.weddings.len() > CLAIM_WEDDINGS_MAX {
            return bad("token lists too many weddings");
        }
        for w in &self.weddings {
            if !id_ok(w) {
                return bad("token lists an empty or oversized wedding id");
            }
            if w == "*" && !self.role.is_org_wide() {
                return bad("weddings [\"*\"] is only for the admin and service roles");
            }
        }
        Ok(())
    }

    /// Whether the token reaches wedding `w` on a channel of `channel_org`: listed, or `*`
    /// for an org-wide role of the organization that owns the channel (never another's).
    pub fn reaches_wedding(&self, wedding: &str, channel_org: &str) -> bool {
        self.lists_wedding(wedding) || (self.has_star() && self.org == channel_org)
    }

    /// Whether the token may create a channel of its own organization naming wedding `w`,
    /// whose owner (SPEC §1: the organization that registered it first or created the first
    /// channel with it) is `owner`: listed by id, or `*` when the wedding is this
    /// organization's or nobody's yet. `*` never reaches another organization's wedding.
    pub fn may_create_in_wedding(&self, wedding: &str, owner: Option<&str>) -> bool {
        self.lists_wedding(wedding) || (self.has_star() && owner.is_none_or(|o| o == self.org))
    }

    /// The wedding is listed by id (`*` is not an id).
    pub fn lists_wedding(&self, wedding: &str) -> bool {
        wedding != "*" && self.weddings.iter().any(|x| x == wedding)
    }

    /// `weddings: ["*"]` on an organization-wide role.
    pub fn has_star(&self) -> bool {
        self.role.is_org_wide() && self.weddings.iter().any(|x| x == "*")
    }

    /// Who the token speaks for: (`org`, `sub`).
    pub fn user_key(&self) -> UserKey {
        UserKey::new(self.org.clone(), self.sub.clone())
    }

    pub fn is_user(&self, u: &UserKey) -> bool {
        u.is(&self.org, &self.sub)
    }
}

/// A named member of a private channel: a user id of the channel's own organization
/// (`"u-1"`), or a user of another organization (`{"org": "o", "user_id": "u-1"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MemberRef {
    Local(String),
    Qualified { org: String, user_id: String },
}

impl From<&str> for MemberRef {
    fn from(sub: &str) -> Self {
        MemberRef::Local(sub.to_owned())
    }
}

impl MemberRef {
    /// Whether `claims` is this member, on a channel of `channel_org`.
    pub fn matches(&self, claims: &Claims, channel_org: &str) -> bool {
        match self {
            MemberRef::Local(sub) => claims.org == channel_org && &claims.sub == sub,
            MemberRef::Qualified { org, user_id } => &claims.org == org && &claims.sub == user_id,
        }
    }

    /// Its ids, for length checks.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        match self {
            MemberRef::Local(sub) => [Some(sub.as_str()), None],
            MemberRef::Qualified { org, user_id } => [Some(org.as_str()), Some(user_id.as_str())],
        }
        .into_iter()
        .flatten()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    Admin,
}

/// What the access rule needs to know about a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAccess {
    pub org: String,
    pub wedding_id: Option<String>,
    pub kind: ChannelType,
    pub permissions: Permissions,
    /// The creating user's `sub`; the creator is of the channel's `org`.
    pub creator: String,
    pub members: Vec<MemberRef>,
}

/// The access rule of SPEC §1, in this order:
/// 1. tenant boundary: a wedding channel needs the wedding in the token
///    (`WS_WEDDING_ISOLATION_VIOLATION`); an org channel needs the same `org`
///    (`WS_FORBIDDEN`);
/// 2. the organization's `admin`/`service` may do anything past the boundary;
/// 3. private channels: creator (of the channel's organization) or named member — both
///    compared as (`org`, `sub`), never `sub` alone (`WS_FORBIDDEN`);
/// 4. the role must be in the channel's list for the action (`WS_FORBIDDEN`).
pub fn check(ch: &ChannelAccess, claims: &Claims, action: Action) -> Result<(), Refusal> {
    match &ch.wedding_id {
        Some(w) => {
            if !claims.reaches_wedding(w, &ch.org) {
                return Err(Refusal::new(
                    ErrorCode::WeddingIsolationViolation,
                    "this token does not give access to the channel's wedding",
                ));
            }
        }
        None => {
            if claims.org != ch.org {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "this channel belongs to another organization",
                ));
            }
        }
    }
    if claims.role.is_org_wide() && claims.org == ch.org {
        return Ok(());
    }
    if ch.kind == ChannelType::Private
        && !(claims.org == ch.org && claims.sub == ch.creator)
        && !ch.members.iter().any(|m| m.matches(claims, &ch.org))
    {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "private channel: not a member",
        ));
    }
    let list = match action {
        Action::Read => &ch.permissions.read,
        Action::Write => &ch.permissions.write,
        Action::Admin => &ch.permissions.admin,
    };
    if !list.contains(&claims.role) {
        let what = match action {
            Action::Read => "read",
            Action::Write => "publish on",
            Action::Admin => "administer",
        };
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            format!("role {} may not {what} this channel", claims.role.as_str()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(role: Role, org: &str, weddings: &[&str]) -> Claims {
        Claims {
            sub: "u1".into(),
            org: org.into(),
            role,
            tier: Tier::Professional,
            weddings: weddings.iter().map(|s| s.to_string()).collect(),
            exp: u64::MAX,
            nbf: None,
        }
    }

    fn chan(kind: ChannelType, wedding: Option<&str>) -> ChannelAccess {
        ChannelAccess {
            org: "org-a".into(),
            wedding_id: wedding.map(Into::into),
            kind,
            permissions: Permissions::default_for(kind),
            creator: "creator".into(),
            members: vec![
                MemberRef::Local("member".into()),
                MemberRef::Qualified {
                    org: "org-c".into(),
                    user_id: "guest-member".into(),
                },
            ],
        }
    }

    #[test]
    fn wedding_channels_need_the_wedding_from_any_org() {
        let ch = chan(ChannelType::Shared, Some("w-1"));
        // A photographer from another business with the wedding in the token: allowed.
        check(
            &ch,
            &claims(Role::Photographer, "org-b", &["w-1"]),
            Action::Read,
        )
        .unwrap();
        check(
            &ch,
            &claims(Role::Photographer, "org-b", &["w-1"]),
            Action::Write,
        )
        .unwrap();
        // Without it: isolation violation, whatever the org.
        for org in ["org-a", "org-b"] {
            let e = check(&ch, &claims(Role::Couple, org, &["w-2"]), Action::Read).unwrap_err();
            assert_eq!(e.code, ErrorCode::WeddingIsolationViolation);
        }
        // `*` reaches only the org-wide roles of the owning org.
        check(&ch, &claims(Role::Admin, "org-a", &["*"]), Action::Admin).unwrap();
        let e = check(&ch, &claims(Role::Admin, "org-b", &["*"]), Action::Read).unwrap_err();
        assert_eq!(e.code, ErrorCode::WeddingIsolationViolation);
        let e = check(&ch, &claims(Role::Couple, "org-a", &["*"]), Action::Read).unwrap_err();
        assert_eq!(e.code, ErrorCode::WeddingIsolationViolation);
    }

    #[test]
    fn org_channels_stay_inside_their_org() {
        let ch = chan(ChannelType::Shared, None);
        check(&ch, &claims(Role::Caterer, "org-a", &[]), Action::Read).unwrap();
        let e = check(&ch, &claims(Role::Caterer, "org-b", &[]), Action::Read).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
    }

    #[test]
    fn roles_and_types() {
        let b = chan(ChannelType::Broadcast, Some("w-1"));
        check(&b, &claims(Role::Guest, "x", &["w-1"]), Action::Read).unwrap();
        assert_eq!(
            check(
                &b,
                &claims(Role::Photographer, "x", &["w-1"]),
                Action::Write
            )
            .unwrap_err()
            .code,
            ErrorCode::Forbidden
        );
        check(&b, &claims(Role::Coordinator, "x", &["w-1"]), Action::Write).unwrap();
        let s = chan(ChannelType::Shared, Some("w-1"));
        assert_eq!(
            check(&s, &claims(Role::Guest, "x", &["w-1"]), Action::Write)
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        let p = chan(ChannelType::Private, Some("w-1"));
        assert_eq!(
            check(&p, &claims(Role::Couple, "x", &["w-1"]), Action::Read)
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        // Members and the creator are users of the channel's organization (org-a).
        let mut member = claims(Role::Couple, "org-a", &["w-1"]);
        member.sub = "member".into();
        check(&p, &member, Action::Write).unwrap();
        member.sub = "creator".into();
        check(&p, &member, Action::Read).unwrap();
    }

    #[test]
    fn private_membership_is_org_and_sub() {
        // chan() belongs to org-a; its creator is org-a's "creator".
        let p = chan(ChannelType::Private, Some("w-1"));
        let mut c = claims(Role::Couple, "org-b", &["w-1"]);
        for sub in ["creator", "member"] {
            c.sub = sub.into();
            let e = check(&p, &c, Action::Read).unwrap_err();
            assert_eq!(e.code, ErrorCode::Forbidden, "org-b's {sub}");
        }
        c.org = "org-c".into();
        c.sub = "guest-member".into();
        check(&p, &c, Action::Read).unwrap();
        c.org = "org-a".into();
        assert!(check(&p, &c, Action::Read).is_err());
        let m: Vec<MemberRef> =
            serde_json::from_str(r#"["u-1",{"org":"o","user_id":"u-2"}]"#).unwrap();
        assert_eq!(m[0], MemberRef::Local("u-1".into()));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"["u-1",{"org":"o","user_id":"u-2"}]"#
        );
    }

    #[test]
    fn star_never_reaches_another_organizations_wedding() {
        let admin_b = claims(Role::Admin, "org-b", &["*"]);
        assert!(admin_b.may_create_in_wedding("w-3", None));
        assert!(admin_b.may_create_in_wedding("w-3", Some("org-b")));
        assert!(!admin_b.may_create_in_wedding("w-3", Some("org-a")));
        assert!(!admin_b.may_create_in_wedding("*", Some("org-a")));
        // A wedding listed by id reaches it whoever owns it (suppliers of several
        // businesses work one wedding).
        let photo = claims(Role::Photographer, "org-b", &["w-3"]);
        assert!(photo.may_create_in_wedding("w-3", Some("org-a")));
        // A channel whose wedding is literally "*" is reached by nobody through `*`.
        let mut ch = chan(ChannelType::Shared, Some("*"));
        ch.org = "org-a".into();
        assert!(!admin_b.reaches_wedding("*", "org-a"));
        assert!(!photo.lists_wedding("*"));
    }

    #[test]
    fn star_is_only_for_org_wide_roles() {
        claims(Role::Service, "o", &["*"]).validate().unwrap();
        assert!(claims(Role::Coordinator, "o", &["*"]).validate().is_err());
        let mut c = claims(Role::Couple, "o", &[]);
        c.sub.clear();
        assert!(c.validate().is_err());
    }

    #[test]
    fn precedence_follows_ws_295() {
        assert!(Role::Couple.precedence() > Role::Coordinator.precedence());
        assert!(Role::Coordinator.precedence() > Role::Photographer.precedence());
        assert!(Role::Florist.precedence() > Role::Guest.precedence());
        for r in Role::ALL {
            assert_eq!(Role::from_code(r.code()), Some(r));
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
