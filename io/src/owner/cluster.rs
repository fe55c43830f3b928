//! Cluster mode's publish (docs/cluster.md): the stream, not this owner, orders a clustered
//! channel's messages and gives their ids. A publish that passes every rule here (access,
//! wedding context, idempotency, rates, targets — the same code as on one node, in
//! `publish.rs`) is handed to the bridge without an id ([`Owner::publish_clustered`]); the
//! bridge appends it to JetStream with the next id of the channel and answers with that
//! id ([`Owner::cluster_acked`]) or a refusal ([`Owner::cluster_refused`]). Every node —
//! this one included — applies the stream's messages in stream order
//! ([`Owner::cluster_message`]), which is when they are kept and delivered to this node's
//! subscribers through the ordinary fan-out. The publisher is answered once both its
//! acknowledgement and its message are in, with this node's delivery counts.

use super::commit::deliver_and_reply;
use super::effects::{Caller, Effects};
use super::{Now, Owner};
use crate::cluster::Outbound;
use crate::journal::JournalError;
use ringbearer_core::error::Refusal;
use ringbearer_core::identity::{idempotency_scope, Target};
use ringbearer_core::message::{access_frame, upgrade_frame, FrameBytes, MessageFrame};
use ringbearer_core::ChannelName;
use std::sync::Arc;

/// A publish handed to the bridge, waiting for its answer.
pub(super) struct ClusterWait {
    from: Caller,
    r#ref: Option<String>,
    channel: ChannelName,
    target: Target,
    recipients: bool,
}

impl Owner {
    /// Hands a publish that passed every rule to the bridge; refused `WS_OVERLOADED`
    /// (retryable) when the cluster is not ready or the queue to it is full.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_clustered(
        &mut self,
        fx: &mut Effects,
        from: Caller,
        r#ref: Option<&str>,
        channel: &ChannelName,
        frame: MessageFrame,
        target: Target,
        msg_id: Option<String>,
        recipients: bool,
    ) {
        let link = self.cluster.clone().expect("clustered");
        let unavailable = |reason: String| {
            super::commit::refusal(&JournalError::Unavailable {
                reason,
                retry_after_secs: link.retry_after_secs,
            })
        };
        if !link.ready() {
            link.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let why = format!("the cluster is not ready ({}); retry", link.state().problem);
            return fx.refuse(from, r#ref, unavailable(why));
        }
        self.cluster_next += 1;
        let token = self.cluster_next;
        let sent = link.send(Outbound::Publish {
            shard: self.id,
            token,
            channel: channel.as_str().to_owned(),
            frame: Box::new(frame),
            msg_id,
        });
        if !sent {
            link.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let why = "the queue to the cluster is full (cluster.queue_capacity); retry".into();
            return fx.refuse(from, r#ref, unavailable(why));
        }
        self.cluster_waiting.insert(
            token,
            ClusterWait {
                from,
                r#ref: r#ref.map(str::to_owned),
                channel: channel.clone(),
                target,
                recipients,
            },
        );
    }

    /// JetStream stored publish `token` as message `id` of its channel: answered now if
    /// this node already applied that message, else when it does.
    pub fn cluster_acked(&mut self, token: u64, id: u64) -> Effects {
        let mut fx = Effects::default();
        let Some(w) = self.cluster_waiting.remove(&token) else {
            return fx;
        };
        match self.channels.get(w.channel.as_str()) {
            Some(ch) if ch.last_id() >= id => {
                self.answer(&mut fx, w, id);
            }
            Some(_) => {
                self.cluster_by_id
                    .insert((w.channel.as_str().to_owned(), id), w);
            }
            None => {}
        }
        fx
    }

    fn answer(&self, fx: &mut Effects, w: ClusterWait, id: u64) {
        let Some(ch) = self.channels.get(w.channel.as_str()) else {
            return;
        };
        let mut o = ch.outcome(id, &w.target);
        // Delivered already when the message was applied: the answer counts, it does not
        // deliver again.
        o.shards.clear();
        let frame = Arc::new(FrameBytes::new());
        deliver_and_reply(
            fx,
            ch,
            o,
            &w.target,
            &frame,
            w.from,
            w.r#ref.as_deref(),
            w.recipients,
        );
        fx.tally.published -= 1;
    }

    /// The bridge could not store publish `token`.
    pub fn cluster_refused(&mut self, token: u64, reason: String) -> Effects {
        let mut fx = Effects::default();
        if let Some(w) = self.cluster_waiting.remove(&token) {
            let retry_after_secs = self.cluster.as_ref().map_or(1, |l| l.retry_after_secs);
            let e: Refusal = super::commit::refusal(&JournalError::Unavailable {
                reason,
                retry_after_secs,
            });
            fx.refuse(w.from, w.r#ref.as_deref(), e);
        }
        fx
    }

    /// Message `id` of `channel` as the stream holds it (every node's, in stream order):
    /// kept and delivered to this node's subscribers. `None`: the channel is not known
    /// here (the caller adopts it first). An id already applied is skipped; a gap is
    /// reported and skipped (the stream keeps every message of a channel, so it only
    /// happens if that changes).
    pub fn cluster_message(
        &mut self,
        now: Now,
        channel: &str,
        id: u64,
        frame: &[u8],
    ) -> Option<Effects> {
        let mut fx = Effects::default();
        let ch = self.channels.get_mut(channel)?;
        if id <= ch.last_id() {
            return Some(fx);
        }
        if id != ch.last_id() + 1 {
            tracing::error!(
                channel,
                id,
                last = ch.last_id(),
                "cluster: a gap in the channel's ids; message skipped"
            );
            return Some(fx);
        }
        let bytes = upgrade_frame(frame).unwrap_or_else(|| {
            let mut f = FrameBytes::with_capacity(frame.len());
            f.extend_from_slice(frame);
            f
        });
        let Ok(a) = access_frame(&bytes) else {
            tracing::error!(channel, id, "cluster: unreadable frame; message skipped");
            return Some(fx);
        };
        let target = a.target_of();
        let ts = a.ts_ms.to_native();
        let key = a.idempotency_key.as_ref().map(|k| {
            idempotency_scope(a.sender_org.as_str(), a.sender_user_id.as_str(), k.as_str())
        });
        let bytes = Arc::new(bytes);
        let o = ch.publish(bytes.clone(), ts, &target, key.as_deref(), now.ms);
        // Delivered here; the publisher (when it is on this node) is answered below.
        fx.tally.published += 1;
        for s in o.shards {
            fx.list.push(super::Effect::Deliver {
                shard: s,
                frame: bytes.clone(),
            });
        }
        if let Some(w) = self.cluster_by_id.remove(&(channel.to_owned(), id)) {
            self.answer(&mut fx, w, id);
        }
        Some(fx)
    }
}
