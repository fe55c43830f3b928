//! A shard's side of cluster mode: every `cluster.poll_interval_ms` it takes the channels
//! other nodes created (checkpoints the bridge read from the `rb_channels` bucket, routed
//! to the owning shard by `shard_for`) and hands each to its owner ([`Owner::adopt`], a
//! typed operation). Polling, because the bridge's thread cannot wake a glommio executor
//! cheaply; it runs only in cluster mode.
//!
//! [`Owner::adopt`]: crate::owner::Owner::adopt

use super::Link;
use crate::host::ShardCtx;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub async fn adopt_channels(ctx: Rc<ShardCtx>, link: Arc<Link>, me: usize) {
    let interval = Duration::from_millis(link.poll_interval_ms);
    loop {
        glommio::timer::sleep(interval).await;
        let Some(q) = link.inbound.get(me) else {
            return;
        };
        while let Some(cp) = q.pop() {
            let name = cp.meta.name.as_str().to_owned();
            let out = {
                let mut s = ctx.state.borrow_mut();
                let now = s.now();
                if !s.owner.adopt(cp, now) {
                    continue;
                }
                s.apply(crate::owner::Effects::default())
            };
            link.adopted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(shard = me, channel = %name, "cluster: adopted a channel created on another node");
            ctx.route_all(out);
        }
    }
}
