//! A `/ws` request frame to an answer: parsed by `ringbearer_core::protocol`, answered here
//! when the connection can (ping, token refresh, a channel it is not subscribed to), or
//! sent as one typed `owner::Request` to the channel's owner shard.

use crate::host::{Conn, ShardCtx};
use crate::mesh::ShardMsg;
use crate::owner::{self, Op};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::protocol::{self, parse_request, Request};
use ringbearer_core::{shard_for, ChannelName};
use std::rc::Rc;
use std::sync::Arc;

pub(super) fn send_refusal(conn: &Conn, r#ref: Option<&str>, e: &Refusal) {
    crate::metrics::with(|m| m.refused(e.code));
    conn.send_control(protocol::reply_error(r#ref, e).into());
}

/// A fresh token for `conn` (`op: token` on `/ws`, `access_token` on the Phoenix door):
/// verified, the same `sub` and `org`, audited; then every owner of a channel the
/// connection holds re-checks it under the new claims (what they no longer allow ends
/// now, SPEC §4).
pub(super) fn refresh_token(
    ctx: &Rc<ShardCtx>,
    conn: &Rc<Conn>,
    token: &str,
) -> Result<(), Refusal> {
    let from = conn.cref;
    let shards = ctx.state.borrow().shards;
    let c = match ctx.shared.verifier.verify(token) {
        Ok(c) => c,
        Err(e) => {
            let c = conn.claims();
            let now = crate::clock::now_ms();
            let a = owner::audit::refused_refresh(now, &c, from, &e);
            ctx.state.borrow().audit(a);
            return Err(e);
        }
    };
    let cur = conn.claims();
    if c.sub != cur.sub || c.org != cur.org {
        let e = Refusal::new(
            ErrorCode::Unauthorized,
            "a refreshed token must name the same sub and org",
        );
        let now = crate::clock::now_ms();
        let a = owner::audit::refused_refresh(now, &cur, from, &e);
        ctx.state.borrow().audit(a);
        return Err(e);
    }
    let claims = Arc::new(c);
    *conn.claims.borrow_mut() = claims.clone();
    // A fresh token gets its own warning before it expires (and may expire sooner): the
    // heartbeat sweep looks at it again in its next round.
    conn.expiry_warned.set(false);
    ctx.state.borrow_mut().heartbeat_recheck.push(conn.id);
    let now = crate::clock::now_ms();
    ctx.state
        .borrow()
        .audit(owner::audit::token_refresh(now, &claims, from));
    // Sent on the same ordered path as subscribes, so one still in flight is re-checked
    // after it lands.
    let mut by_owner: std::collections::HashMap<u32, Vec<ChannelName>> = Default::default();
    for c in conn.channels_held() {
        if let Ok(name) = ChannelName::parse(&c) {
            by_owner
                .entry(shard_for(&c, shards) as u32)
                .or_default()
                .push(name);
        }
    }
    for (owner, channels) in by_owner {
        let req = owner::Request {
            from,
            r#ref: None,
            claims: claims.clone(),
            op: Op::Recheck { channels },
        };
        ctx.router.route(owner, ShardMsg::Request(req));
    }
    Ok(())
}

/// Handles one request frame of a `/ws` connection.
pub(super) fn handle_text(ctx: &Rc<ShardCtx>, conn: &Rc<Conn>, text: &str) {
    let cfg = &ctx.cfg;
    let env = match parse_request(text, &cfg.limits) {
        Ok(e) => e,
        Err(e) => return send_refusal(conn, e.r#ref.as_deref(), &e.refusal),
    };
    let r#ref = env.r#ref;
    let from = conn.cref;
    let shards = ctx.state.borrow().shards;
    let subscribed = |c: &ringbearer_core::ChannelName| conn.channels.borrow().contains(c.as_str());
    let not_subscribed = || {
        Refusal::new(
            ErrorCode::SubscriptionFailed,
            "not subscribed to this channel",
        )
    };
    let (owner, op) = match env.req {
        Request::Ping => return conn.send_control(protocol::reply_pong(r#ref.as_deref()).into()),
        Request::Token { token } => {
            match refresh_token(ctx, conn, &token) {
                Ok(()) => {
                    if let Some(r) = &r#ref {
                        conn.send_control(protocol::reply_ok(r).into());
                    }
                }
                Err(e) => send_refusal(conn, r#ref.as_deref(), &e),
            }
            return;
        }
        Request::Create(req) => (shard_for(req.name.as_str(), shards), Op::Create(req)),
        Request::Subscribe(req) => {
            if let Err(e) = conn.reserve(req.channel.as_str()) {
                return send_refusal(conn, r#ref.as_deref(), &e);
            }
            (shard_for(req.channel.as_str(), shards), Op::Subscribe(req))
        }
        Request::Unsubscribe { channel } => (
            shard_for(channel.as_str(), shards),
            Op::Unsubscribe(channel),
        ),
        // The user's rate is taken by the owner, which knows whether the channel's wedding
        // is today (SPEC §1: 3× and `critical`).
        Request::Publish(req) => (
            shard_for(req.channel.as_str(), shards),
            Op::Publish {
                req,
                recipients: false,
            },
        ),
        Request::Ack { channel, id } => {
            if !subscribed(&channel) {
                return send_refusal(conn, r#ref.as_deref(), &not_subscribed());
            }
            (shard_for(channel.as_str(), shards), Op::Ack { channel, id })
        }
        Request::Presence { channel, meta } => {
            if !subscribed(&channel) {
                return send_refusal(conn, r#ref.as_deref(), &not_subscribed());
            }
            (
                shard_for(channel.as_str(), shards),
                Op::Presence { channel, meta },
            )
        }
        Request::Typing { channel } => {
            if !subscribed(&channel) {
                return send_refusal(conn, r#ref.as_deref(), &not_subscribed());
            }
            (shard_for(channel.as_str(), shards), Op::Typing { channel })
        }
        // Shared state needs access to the channel, not a subscription (§31).
        Request::StateGet { channel, doc } => (
            shard_for(channel.as_str(), shards),
            Op::StateGet { channel, doc },
        ),
        Request::StateWrite(req) => (shard_for(req.channel.as_str(), shards), Op::StateWrite(req)),
    };
    let owner = owner as u32;
    if ctx.router.backlog(owner) >= cfg.mesh_backlog_max {
        if let Op::Subscribe(req) = &op {
            conn.refused(req.channel.as_str());
        }
        let e = Refusal::new(
            ErrorCode::Overloaded,
            "the channel's shard is saturated; retry",
        );
        return send_refusal(conn, r#ref.as_deref(), &e);
    }
    let req = owner::Request {
        from,
        r#ref,
        claims: conn.claims(),
        op,
    };
    conn.request_sent();
    ctx.router.route(owner, ShardMsg::Request(req));
}
