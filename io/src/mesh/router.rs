//! Cross-shard routing: one FIFO per destination shard in front of glommio's mesh, so a
//! sender never blocks and messages from one shard to another keep their order (the
//! owner's `subscribed` reply always precedes the deliveries that follow it).
//!
//! Messages to the shard itself take the same path through a local queue, so handlers
//! never re-enter each other.

use super::ShardMsg;
use crate::notify::Notify;
use glommio::channels::channel_mesh::Senders;
use glommio::{GlommioError, ResourceType};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

pub struct Router {
    pub me: u32,
    senders: Senders<ShardMsg>,
    queues: Vec<Rc<PeerQueue>>,
}

#[derive(Default)]
pub struct PeerQueue {
    pub q: RefCell<VecDeque<ShardMsg>>,
    pub ready: Notify,
    /// The pump holds a message it is waiting to hand to the mesh: the fast path must not
    /// overtake it.
    busy: std::cell::Cell<bool>,
}

impl Router {
    pub fn new(senders: Senders<ShardMsg>, shards: usize) -> Self {
        let me = senders.peer_id() as u32;
        Router {
            me,
            senders,
            queues: (0..shards).map(|_| Rc::new(PeerQueue::default())).collect(),
        }
    }

    pub fn queue(&self, shard: u32) -> Rc<PeerQueue> {
        self.queues[shard as usize].clone()
    }

    /// Messages waiting for `shard` beyond what its mesh channel holds.
    pub fn backlog(&self, shard: u32) -> usize {
        self.queues[shard as usize].q.borrow().len()
    }

    pub fn route(&self, shard: u32, msg: ShardMsg) {
        let pq = &self.queues[shard as usize];
        if shard != self.me && !pq.busy.get() && pq.q.borrow().is_empty() {
            match self.senders.try_send_to(shard as usize, msg) {
                Ok(()) => return,
                Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                    pq.q.borrow_mut().push_back(msg)
                }
                // The peer shard has stopped (shutdown): nothing left to tell it.
                Err(_) => return,
            }
        } else {
            pq.q.borrow_mut().push_back(msg);
        }
        pq.ready.notify();
    }

    /// Drains the queue for a remote peer into the mesh, awaiting room. Runs until the
    /// mesh closes.
    pub async fn pump(self: Rc<Self>, shard: u32) {
        let pq = self.queue(shard);
        loop {
            pq.ready.wait().await;
            pq.busy.set(true);
            loop {
                let Some(msg) = pq.q.borrow_mut().pop_front() else {
                    break;
                };
                if self.senders.send_to(shard as usize, msg).await.is_err() {
                    return;
                }
            }
            pq.busy.set(false);
        }
    }
}
