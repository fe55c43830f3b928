//! The publish gate: in cluster mode every shard's journal is wrapped so that a store asked
//! for while the cluster is not ready ([`Link::ready`] false: NATS unreachable, JetStream
//! without quorum) is refused `WS_OVERLOADED` with `retry_after` before anything is
//! appended. The owner turns that into the refusal of the publish (or create); nothing is
//! acknowledged that the cluster could not keep, and the shard never waits on NATS (one
//! atomic load per store).
//!
//! Without a journal (`storage.durability = "memory"`) the gate stands in for one that is
//! durable on append, so the owner's behaviour is that of the memory policy plus the gate.

use super::{Link, Outbound};
use crate::journal::{
    Entry, IsLive, Journal, JournalError, JournalFactory, LocalBoxFuture, Opened,
};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Wraps each shard's journal (or none) with the gate.
pub struct GatedFactory {
    pub inner: Option<Arc<dyn JournalFactory>>,
    pub link: Arc<Link>,
}

impl JournalFactory for GatedFactory {
    fn open(&self, shard: u32) -> LocalBoxFuture<'static, Result<Opened, String>> {
        let link = self.link.clone();
        let inner = self.inner.as_ref().map(|f| f.open(shard));
        Box::pin(async move {
            let (inner, restored) = match inner {
                Some(f) => {
                    let (j, r) = f.await?;
                    (Some(j), r)
                }
                None => (None, Vec::new()),
            };
            let j: Rc<dyn Journal> = Rc::new(Gated {
                inner,
                link,
                pos: Cell::new(0),
                shared: RefCell::new(HashSet::new()),
            });
            Ok((j, restored))
        })
    }
}

struct Gated {
    inner: Option<Rc<dyn Journal>>,
    link: Arc<Link>,
    /// Positions handed out when there is no inner journal.
    pos: Cell<u64>,
    /// Channels whose checkpoint went to the bridge (the first one, logged at create; the
    /// retention rounds' later checkpoints are not sent again).
    shared: RefCell<HashSet<String>>,
}

impl Journal for Gated {
    fn append(&self, channel: &str, ts_ms: u64, entry: Entry<'_>) -> Result<u64, JournalError> {
        if !self.link.ready() {
            self.link.refused.fetch_add(1, Ordering::Relaxed);
            return Err(JournalError::Unavailable {
                reason: format!(
                    "the cluster is not ready ({}); retry",
                    self.link.state().problem
                ),
                retry_after_secs: self.link.retry_after_secs,
            });
        }
        if let Entry::Channel { meta_json } = entry {
            if !self.shared.borrow().contains(channel) {
                let sent = self.link.send(Outbound::ChannelCreated {
                    name: channel.to_owned(),
                    checkpoint: meta_json.to_vec(),
                });
                if !sent {
                    self.link.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(JournalError::Unavailable {
                        reason: "the queue to the cluster is full (cluster.queue_capacity)".into(),
                        retry_after_secs: self.link.retry_after_secs,
                    });
                }
                self.shared.borrow_mut().insert(channel.to_owned());
            }
        }
        match &self.inner {
            Some(j) => j.append(channel, ts_ms, entry),
            None => {
                self.pos.set(self.pos.get() + 1);
                Ok(self.pos.get())
            }
        }
    }

    fn durable(&self, pos: u64) -> LocalBoxFuture<'_, Result<(), JournalError>> {
        match &self.inner {
            Some(j) => j.durable(pos),
            None => Box::pin(async { Ok(()) }),
        }
    }

    fn segments(&self) -> usize {
        self.inner.as_ref().map_or(0, |j| j.segments())
    }

    fn close(&self) -> LocalBoxFuture<'_, Result<(), JournalError>> {
        match &self.inner {
            Some(j) => j.close(),
            None => Box::pin(async { Ok(()) }),
        }
    }

    fn reclaim(&self, is_live: IsLive) -> LocalBoxFuture<'_, Result<usize, JournalError>> {
        match &self.inner {
            Some(j) => j.reclaim(is_live),
            None => Box::pin(async { Ok(0) }),
        }
    }
}
