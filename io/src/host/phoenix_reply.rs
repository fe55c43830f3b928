//! The owner's typed replies to a Phoenix connection (`phoenix.rs`), rendered on its
//! shard: a join's `phx_reply` with its `presence_state` and replayed messages, a leave,
//! an acknowledged broadcast, a tracked presence, refusals with their Ringbearer code.

use super::phoenix::{self, split_ref, Session};
use super::{channel_hash, Conn, Out, Shard};
use crate::mesh::ShardMsg;
use crate::owner::Reply;
use bytes::Bytes;
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::message::{access_frame, FrameBytes};
use ringbearer_core::ChannelName;
use std::rc::Rc;
use std::sync::Arc;

impl Shard {
    /// A reply for Phoenix connection `c` (open or not).
    pub(super) fn on_phoenix_reply(
        &mut self,
        c: Rc<Conn>,
        p: &Session,
        to: ConnRef,
        owner_ref: Option<&str>,
        reply: Reply,
    ) -> Out {
        let mut out = Out::new();
        let r = owner_ref.and_then(split_ref);
        let (join_ref, r#ref) = match &r {
            Some(r) => (r.join_ref, r.r#ref),
            None => (None, None),
        };
        let vsn = p.vsn;
        match reply {
            Reply::Subscribed {
                channel,
                messages,
                presence,
                org,
                ..
            } => {
                if !c.is_open() {
                    let owner = ringbearer_core::shard_for(channel.as_str(), self.shards) as u32;
                    let channels = vec![channel];
                    out.push((owner, ShardMsg::Disconnect { conn: to, channels }));
                    return out;
                }
                let topic = phoenix::topic(channel.as_str());
                let mut frames = vec![Bytes::from(phoenix::reply_ok(
                    vsn,
                    join_ref,
                    r#ref,
                    &topic,
                    b"{\"postgres_changes\":[]}",
                ))];
                frames.push(phoenix::presence_state(vsn, channel.as_str(), &presence, &org).into());
                frames.extend(replayed(p, &channel, &messages));
                self.confirm_local(&c, &channel);
                c.send_burst(frames);
            }
            Reply::SubscribeRefused { channel, error } => {
                crate::metrics::with(|m| m.refused(error.code));
                c.refused(channel.as_str());
                let mut topics = p.topics.borrow_mut();
                if topics
                    .get(channel.as_str())
                    .is_some_and(|j| j.join_ref.as_deref() == join_ref)
                {
                    topics.remove(channel.as_str());
                }
                drop(topics);
                let topic = phoenix::topic(channel.as_str());
                let f = phoenix::reply_error(vsn, join_ref, r#ref, &topic, &error);
                c.send_control(f.into());
            }
            Reply::Unsubscribed { channel, why } => {
                if c.unsubscribed(channel.as_str()) {
                    self.remove_local(channel.as_str(), to.conn);
                    c.outbox
                        .borrow_mut()
                        .forget_channel(channel_hash(channel.as_str()));
                }
                let joined = p.topics.borrow_mut().remove(channel.as_str());
                match why {
                    None => {
                        let topic = phoenix::topic(channel.as_str());
                        c.send_control(
                            phoenix::reply_ok(vsn, join_ref, r#ref, &topic, b"{}").into(),
                        );
                    }
                    Some(why) => {
                        let jr = joined.and_then(|j| j.join_ref);
                        for f in phoenix::closed_because(vsn, jr.as_deref(), channel.as_str(), &why)
                        {
                            c.send_control(f.into());
                        }
                    }
                }
            }
            Reply::Published(pb) => {
                let ack = p.published(pb.channel.as_str(), pb.id);
                if ack {
                    let topic = phoenix::topic(pb.channel.as_str());
                    let resp = format!("{{\"id\":{}}}", pb.id);
                    c.send_control(
                        phoenix::reply_ok(vsn, join_ref, r#ref, &topic, resp.as_bytes()).into(),
                    );
                }
            }
            Reply::Ok => {
                if let Some(r) = &r {
                    let topic = phoenix::topic(r.channel);
                    c.send_control(phoenix::reply_ok(vsn, join_ref, r#ref, &topic, b"{}").into());
                }
            }
            Reply::Error(e) => {
                crate::metrics::with(|m| m.refused(e.code));
                if let Some(r) = &r {
                    let topic = phoenix::topic(r.channel);
                    c.send_control(phoenix::reply_error(vsn, join_ref, r#ref, &topic, &e).into());
                }
            }
            _ => {
                if let Some(r) = &r {
                    let e = Refusal::new(ErrorCode::Internal, "an answer for another door");
                    let topic = phoenix::topic(r.channel);
                    c.send_control(phoenix::reply_error(vsn, join_ref, r#ref, &topic, &e).into());
                }
            }
        }
        out
    }
}

/// The messages a join hands over, as `broadcast`s marked `replayed`: those with `ts` ≥
/// the join's `replay.since`, at most its `limit` (oldest first). Without `replay`, what
/// the user's subscription missed while it had no connection (all of it).
fn replayed(p: &Session, channel: &ChannelName, messages: &[Arc<FrameBytes>]) -> Vec<Bytes> {
    let replay = p
        .topics
        .borrow()
        .get(channel.as_str())
        .and_then(|j| j.replay);
    let mut out = Vec::new();
    let mut last = 0;
    for m in messages {
        let Ok(f) = access_frame(m) else { continue };
        if let Some((since, limit)) = replay {
            if f.ts_ms.to_native() < since {
                continue;
            }
            if out.len() >= limit {
                break;
            }
        }
        last = f.id();
        out.push(Bytes::from(phoenix::message(p.vsn, f, true)));
    }
    if last > 0 {
        p.deliver(channel.as_str(), last);
    }
    out
}
