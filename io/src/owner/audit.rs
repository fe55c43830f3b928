//! The audit events the owner writes (SPEC §5): who did what to which channel, and the
//! refusals of the access rule, where the channel's own organization sees them. Pure
//! constructors; the host hands them to the registry.

use crate::journal::AuditEvent;
use ringbearer_core::channel_state::{ChannelMeta, ConnRef};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::Claims;

/// `claims` did `action` (on `channel`, owned by `channel_org`).
pub fn event(
    at_ms: u64,
    claims: &Claims,
    action: &'static str,
    channel: Option<(&str, &str)>,
    detail: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        at_ms,
        actor_user_id: claims.sub.clone(),
        actor_org: claims.org.clone(),
        action,
        channel: channel.map(|(name, _)| name.to_owned()),
        channel_org: channel.map(|(_, org)| org.to_owned()),
        detail,
    }
}

/// A refusal of the access rule (SPEC §1: a refused attempt is written to the audit log,
/// where the channel's own organization `owner` sees it); `None` for other refusals
/// (limits, bad input), which are only counted.
pub fn denied(
    at_ms: u64,
    claims: &Claims,
    op: &str,
    channel: &str,
    owner: Option<&str>,
    e: &Refusal,
) -> Option<AuditEvent> {
    matches!(
        e.code,
        ErrorCode::Forbidden | ErrorCode::WeddingIsolationViolation | ErrorCode::Unauthorized
    )
    .then(|| AuditEvent {
        at_ms,
        actor_user_id: claims.sub.clone(),
        actor_org: claims.org.clone(),
        action: "denied",
        channel: Some(channel.to_owned()),
        channel_org: owner.map(str::to_owned),
        detail: serde_json::json!({"op": op, "code": e.code.as_str(), "message": e.message}),
    })
}

/// A stored channel creation; the actor is its creator.
pub fn created(at_ms: u64, meta: &ChannelMeta) -> AuditEvent {
    AuditEvent {
        at_ms,
        actor_user_id: meta.access.creator.clone(),
        actor_org: meta.access.org.clone(),
        action: "create",
        channel: Some(meta.name.as_str().to_owned()),
        channel_org: Some(meta.access.org.clone()),
        detail: serde_json::json!({
            "channel_id": meta.id,
            "type": meta.access.kind.as_str(),
            "wedding_id": meta.access.wedding_id,
        }),
    }
}

/// A refused credential (SPEC §5: denied access). The token could not be verified, so
/// nothing in it is trusted: the record has no actor or organization (an operator reads it
/// in the registry), with the door, the peer address and the reason.
pub fn unauthorized(
    at_ms: u64,
    door: &str,
    peer: Option<std::net::SocketAddr>,
    e: &Refusal,
) -> AuditEvent {
    AuditEvent {
        at_ms,
        actor_user_id: String::new(),
        actor_org: String::new(),
        action: "unauthorized",
        channel: None,
        channel_org: None,
        detail: serde_json::json!({
            "door": door,
            "address": peer.map(|p| p.to_string()),
            "code": e.code.as_str(),
            "message": e.message,
        }),
    }
}

/// An accepted in-band token refresh (`op: token`).
pub fn token_refresh(at_ms: u64, claims: &Claims, conn: ConnRef) -> AuditEvent {
    event(
        at_ms,
        claims,
        "token_refresh",
        None,
        serde_json::json!({
            "connection_id": conn.public_id(),
            "weddings": claims.weddings,
            "exp": claims.exp,
        }),
    )
}

/// A refused in-band token refresh, under the connection's current (verified) identity.
pub fn refused_refresh(at_ms: u64, claims: &Claims, conn: ConnRef, e: &Refusal) -> AuditEvent {
    event(
        at_ms,
        claims,
        "denied",
        None,
        serde_json::json!({
            "op": "token",
            "connection_id": conn.public_id(),
            "code": e.code.as_str(),
            "message": e.message,
        }),
    )
}
