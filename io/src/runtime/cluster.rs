//! A shard's side of cluster mode (a service of the runtime, so `cluster` never imports the
//! host): every `cluster.poll_interval_ms` it takes what the
//! bridge queued for it — channels created on other nodes ([`Owner::adopt`]), the stream's
//! messages of the channels it owns ([`Owner::cluster_message`]) and the answers to its
//! publishes ([`Owner::cluster_acked`], [`Owner::cluster_refused`]) — all typed owner
//! operations, their effects applied and routed as any other's. Polling, because the
//! bridge's thread cannot wake a glommio executor cheaply; it runs only in cluster mode.
//!
//! [`Owner::adopt`]: crate::owner::Owner::adopt
//! [`Owner::cluster_message`]: crate::owner::Owner::cluster_message
//! [`Owner::cluster_acked`]: crate::owner::Owner::cluster_acked
//! [`Owner::cluster_refused`]: crate::owner::Owner::cluster_refused

use crate::cluster::{Inbound, Link};
use crate::host::ShardCtx;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn run_inbound(ctx: Rc<ShardCtx>, link: Arc<Link>, me: usize) {
    let interval = Duration::from_millis(link.poll_interval_ms);
    let Some(q) = link.inbound.get(me) else {
        return;
    };
    loop {
        glommio::timer::sleep(interval).await;
        while let Some(item) = q.pop() {
            let out = {
                let mut s = ctx.state.borrow_mut();
                let now = s.now();
                let fx = match item {
                    Inbound::Channel(cp) => {
                        let name = cp.meta.name.as_str().to_owned();
                        let Some(fx) = s.owner.adopt(*cp, now) else {
                            continue;
                        };
                        link.adopted.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(shard = me, channel = %name, "cluster: adopted a channel created on another node");
                        fx
                    }
                    Inbound::Message { channel, id, frame } => {
                        match s.owner.cluster_message(now, &channel, id, &frame) {
                            Some(fx) => fx,
                            None => {
                                tracing::error!(shard = me, %channel, id, "cluster: a message of a channel this node does not know; skipped");
                                continue;
                            }
                        }
                    }
                    Inbound::Acked { token, id } => s.owner.cluster_acked(token, id),
                    Inbound::Refused { token, reason } => s.owner.cluster_refused(token, reason),
                };
                s.apply(fx)
            };
            ctx.route_all(out);
        }
    }
}
