//! One shard's ordered stop, steps 2 to 6 of the table in `runtime/mod.rs`: tell every
//! WebSocket connection 1001, wait for this shard's sockets to end and for every other
//! shard to get that far (together bounded by `io.shutdown_drain_ms`), stop the services
//! in order, close the journal. Every wait is on an event, never a poll loop.
//!
//! It does not decide when to stop (the server's [`Signal`] in `Shared::shutdown` does),
//! stop accepting (`listener.rs`) or know what a service does (`tasks.rs`).

use super::tasks::Services;
use crate::host::ShardCtx;
use crate::host::{close_code, SHUTDOWN_REASON};
use crate::notify::Notify;
use crate::signal::Signal;
use futures_lite::future;
use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sockets one shard is serving, from accept to the end of their task: WebSocket
/// connections, REST requests and event streams, handshakes in flight, and 503 answers
/// from the descriptor reserve. Its [`Notify`] fires when the count drops to zero.
#[derive(Default)]
pub struct OpenSockets {
    count: Cell<usize>,
    none_left: Notify,
}

/// One socket counted in [`OpenSockets`] until dropped.
pub struct Counted(Rc<OpenSockets>);

impl OpenSockets {
    pub fn enter(self: &Rc<Self>) -> Counted {
        self.count.set(self.count.get() + 1);
        Counted(self.clone())
    }

    pub fn count(&self) -> usize {
        self.count.get()
    }

    /// Completes when no socket is open (at once if none is).
    pub async fn none_left(&self) {
        while self.count.get() > 0 {
            self.none_left.wait().await;
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let left = self.0.count.get() - 1;
        self.0.count.set(left);
        if left == 0 {
            self.0.none_left.notify();
        }
    }
}

/// Counts shards down to "every shard has drained" (step 3b). A shard keeps answering its
/// mesh while it waits here, so a client of another shard that is still leaving can still
/// publish to this shard's channels and be answered, from a log that is still open.
pub struct AllDrained {
    left: AtomicUsize,
    done: Signal,
}

impl AllDrained {
    pub fn new(shards: usize) -> Self {
        let done = Signal::new();
        if shards == 0 {
            done.set();
        }
        AllDrained {
            left: AtomicUsize::new(shards),
            done,
        }
    }

    fn arrive(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.set();
        }
    }
}

/// One shard's arrival at [`AllDrained`]: explicit in step 3b, or when dropped, so a shard
/// that fails to start (or panics) never holds the others until their deadline.
pub struct Arrival(Option<Arc<AllDrained>>);

impl Arrival {
    pub fn new(all: Arc<AllDrained>) -> Self {
        Arrival(Some(all))
    }

    /// Arrives (once) and returns what to wait on for the others.
    fn arrive(&mut self) -> Option<Arc<AllDrained>> {
        let all = self.0.take()?;
        all.arrive();
        Some(all)
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.arrive();
    }
}

/// `f` if it completes by `deadline`: `false` when the deadline came first.
async fn by(deadline: Instant, f: impl Future<Output = ()>) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    future::or(
        async {
            f.await;
            true
        },
        async {
            glommio::timer::sleep(left).await;
            false
        },
    )
    .await
}

/// Steps 2 to 6 of the ordered stop (step 1, accepting no more, is done by the caller).
pub async fn stop_shard(
    ctx: &ShardCtx,
    me: usize,
    open: &OpenSockets,
    mut arrival: Arrival,
    services: Services,
) {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(ctx.cfg.shutdown_drain_ms);
    // 2. Every WebSocket connection is told to go; one that finishes its upgrade after this
    // sees `Shared::shutdown` set and is told the same (`conn.rs`, `run_ws`). REST
    // connections end after their request in flight; event streams end on the signal.
    let conns: Vec<_> = ctx.state.borrow().conns.values().cloned().collect();
    for c in &conns {
        c.close(close_code::GOING_AWAY, SHUTDOWN_REASON);
    }
    // 3a. This shard's sockets end (their close handshakes included).
    if !by(deadline, open.none_left()).await {
        tracing::warn!(
            shard = me,
            open = open.count(),
            "shutdown: sockets still open after io.shutdown_drain_ms; closing anyway"
        );
    }
    // 3b. ... and every other shard's, within the same deadline.
    if let Some(all) = arrival.arrive() {
        if !by(deadline, all.done.wait()).await {
            tracing::warn!(
                shard = me,
                "shutdown: another shard still draining after io.shutdown_drain_ms; going on"
            );
        }
    }
    tracing::debug!(
        shard = me,
        drained_ms = started.elapsed().as_millis() as u64,
        "shutdown: drained"
    );
    // 4, 5. The services stop in order; the commit pump last, once what is pending is stored.
    services.stop().await;
    // 6. SPEC §5: flush the log before going (under `batch`, acknowledged records may still
    // be waiting for their sync).
    let journal = ctx.state.borrow().journal.clone();
    if let Some(j) = journal {
        if let Err(e) = j.close().await {
            tracing::error!(shard = me, "closing the log: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sockets_count_down_to_none() {
        let open = Rc::new(OpenSockets::default());
        futures_lite::future::block_on(open.none_left());
        let a = open.enter();
        let b = open.enter();
        assert_eq!(open.count(), 2);
        drop(a);
        assert!(!open.none_left.is_set());
        drop(b);
        assert_eq!(open.count(), 0);
        futures_lite::future::block_on(open.none_left());
    }

    #[test]
    fn every_shard_arrives_once_even_when_dropped() {
        let all = Arc::new(AllDrained::new(3));
        let mut a = Arrival::new(all.clone());
        let b = Arrival::new(all.clone());
        let mut c = Arrival::new(all.clone());
        assert!(a.arrive().is_some());
        assert!(a.arrive().is_none());
        drop(a);
        drop(b);
        assert!(!all.done.is_set());
        c.arrive();
        assert!(all.done.is_set());
        drop(c);
        assert!(AllDrained::new(0).done.is_set());
    }
}
