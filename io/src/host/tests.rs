//! The host's side of fan-out and subscriptions, without sockets: connections are the
//! shard's `Conn` state, their outboxes read directly.

use super::*;
use crate::owner::{ChannelEvent, Op, Request};
use crate::weddings::Weddings;
use ringbearer_core::error::ErrorCode;
use ringbearer_core::protocol::SubscribeReq;
use ringbearer_core::{Claims, Role, Tier, UserKey};

fn claims(sub: &str) -> Arc<Claims> {
    Arc::new(Claims {
        sub: sub.into(),
        org: "o".into(),
        role: Role::Couple,
        tier: Tier::Free,
        weddings: vec![],
        exp: u64::MAX,
        nbf: None,
    })
}

fn shard(id: u32, shards: usize) -> Shard {
    let cfg = Rc::new(IoConfig::default());
    let owner = Owner::new(
        id,
        shards,
        cfg.clone(),
        0,
        None,
        Arc::default(),
        Weddings::default(),
    );
    Shard::new(owner, cfg)
}

/// Regression: connection ids are per shard, so "everyone but the sender" must compare
/// the shard too — connection 1 of shard 1 is not connection 1 of shard 0.
#[test]
fn event_except_compares_shard_and_connection() {
    let mut shard = shard(1, 2);
    let cfg = shard.cfg.clone();
    let mine = ConnRef { shard: 1, conn: 1 };
    let conn = Rc::new(Conn::new(1, mine, claims("u"), &cfg, Arc::default()));
    shard.conns.insert(1, conn.clone());
    let ch = ChannelName::parse("venue:hall:v1").unwrap();
    let owner = ringbearer_core::shard_for(ch.as_str(), 2) as u32;
    let out = shard.handle(ShardMsg::Reply {
        to: mine,
        r#ref: None,
        reply: Reply::Subscribed {
            channel: ch.clone(),
            epoch: "e".into(),
            recovered: false,
            messages: vec![],
            presence: vec![],
            presence_total: 0,
            org: "o".into(),
        },
    });
    assert!(
        out.is_empty(),
        "subscribed locally, nothing to route (owner {owner})"
    );
    assert_eq!(conn.outbox.borrow().len(), 1);
    let typing = || {
        Arc::new(ChannelEvent::Typing {
            user: UserKey::new("o", "x"),
            role: Role::Couple,
        })
    };
    let other_shard_same_id = ConnRef { shard: 0, conn: 1 };
    shard.handle(ShardMsg::Event {
        channel: ch.clone(),
        event: typing(),
        except: vec![other_shard_same_id],
    });
    assert_eq!(conn.outbox.borrow().len(), 2, "not the sender: delivered");
    shard.handle(ShardMsg::Event {
        channel: ch,
        event: typing(),
        except: vec![mine],
    });
    assert_eq!(conn.outbox.borrow().len(), 2, "the sender itself: skipped");
}

/// Regression: a `state_overridden` notice is sent unasked (to the overridden writer's
/// connections), so it answers none of the connection's requests: the in-flight count
/// that pauses its reads (docs/decisions.md §33) stays as it was.
#[test]
fn an_override_notice_answers_no_request() {
    let mut shard = shard(0, 1);
    let cfg = shard.cfg.clone();
    let me = ConnRef { shard: 0, conn: 1 };
    let conn = Rc::new(Conn::new(1, me, claims("u"), &cfg, Arc::default()));
    shard.conns.insert(1, conn.clone());
    conn.request_sent();
    conn.request_sent();
    let by = ringbearer_core::state_doc::Writer {
        user_id: "w".into(),
        org: "o".into(),
        role: Role::Couple,
    };
    shard.handle(ShardMsg::Reply {
        to: me,
        r#ref: None,
        reply: Reply::StateOverridden {
            channel: ChannelName::parse("venue:hall:v1").unwrap(),
            doc: "plan".into(),
            version: 2,
            yours: 1,
            by,
        },
    });
    assert_eq!(conn.inflight.get(), 2, "two requests still owed an answer");
    shard.handle(ShardMsg::Reply {
        to: me,
        r#ref: Some("r1".into()),
        reply: Reply::Ok,
    });
    assert_eq!(conn.inflight.get(), 1);
}

/// Regression: a refused subscribe gives its reservation back (free tier: 3
/// subscriptions per user; five refusals in a row must not use them up).
#[test]
fn refused_subscribes_give_their_reservation_back() {
    let mut shard = shard(0, 1);
    let cfg = shard.cfg.clone();
    let me = ConnRef { shard: 0, conn: 1 };
    let policy = Arc::new(crate::policy::Policy::default());
    let conn = Rc::new(Conn::new(1, me, claims("u"), &cfg, policy));
    shard.conns.insert(1, conn.clone());
    for i in 0..5 {
        let channel = ChannelName::parse(&format!("venue:hall:nope-{i}")).unwrap();
        assert!(conn.reserve(channel.as_str()).unwrap());
        let req = SubscribeReq {
            channel,
            last_seen_id: None,
            epoch: None,
            include_history: false,
        };
        let out = shard.handle(ShardMsg::Request(Request {
            from: me,
            r#ref: None,
            claims: claims("u"),
            op: Op::Subscribe(req),
        }));
        for (_, m) in out {
            shard.handle(m);
        }
    }
    assert_eq!(
        conn.outbox.borrow().len(),
        5,
        "five WS_CHANNEL_NOT_FOUND replies"
    );
    for i in 0..3 {
        assert!(
            conn.reserve(&format!("venue:hall:ok-{i}")).unwrap(),
            "reservation {i} available"
        );
    }
    assert_eq!(
        conn.reserve("venue:hall:ok-3").unwrap_err().code,
        ErrorCode::TierLimit
    );
}
