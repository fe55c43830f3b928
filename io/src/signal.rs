//! A set-once signal that any number of tasks can await, on any shard, and that any thread
//! can set: the server's shutdown (set by `ServerHandle::shutdown` from the
//! thread that caught SIGTERM, awaited by every shard's accept loop and open event
//! streams), and each stop of a per-shard service (`runtime/tasks.rs`).
//!
//! Waiting costs nothing until it is set: no timer, no polling. The waiters' wakers are kept
//! by the `event-listener` crate and woken by [`Signal::set`]; a glommio task woken from
//! another thread is queued on its own executor, which wakes from sleep for it (glommio's
//! foreign-waker path). A waiter dropped before the signal (e.g. a stream that ended on its
//! own) takes its waker out of the list, so the list never grows with the server's age.
//!
//! It does not reset, count or carry a value: once set it stays set. For a wake-up flag
//! inside one shard with a single waiter, see `notify.rs`.

use event_listener::Event;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Default)]
pub struct Signal {
    set: AtomicBool,
    waiters: Event,
}

impl Signal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the signal and wakes every waiter, on whichever thread it waits. Idempotent.
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.waiters.notify(usize::MAX);
    }

    /// Whether it has been set (for synchronous checks, e.g. a connection that finished its
    /// upgrade after the shard already told the others to go).
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Completes once the signal is set (at once if it already is).
    pub async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            // IMPORTANT: listen first, then check again: a `set` between the first check and
            // `listen` would otherwise wake nobody and leave this waiter asleep for good.
            let listener = self.waiters.listen();
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn set_before_wait_completes_at_once() {
        let s = Signal::new();
        assert!(!s.is_set());
        s.set();
        s.set();
        assert!(s.is_set());
        futures_lite::future::block_on(s.wait());
    }

    /// Waiters on two glommio executors (threads of their own, asleep in io_uring) wake
    /// when a plain thread sets the signal: no timer or poll brings them round. A waiter
    /// dropped before the signal leaves nothing behind that the signal could trip on.
    #[test]
    fn wakes_glommio_executors_on_other_threads() {
        let s = Arc::new(Signal::new());
        let (listening_tx, listening) = std::sync::mpsc::channel();
        let (woken_tx, woken) = std::sync::mpsc::channel();
        let shards: Vec<_> = (0..2)
            .map(|_| {
                let (s, listening, woken) = (s.clone(), listening_tx.clone(), woken_tx.clone());
                glommio::LocalExecutorBuilder::default()
                    .io_memory(512 * 1024)
                    .spawn(move || async move {
                        let waiter =
                            |s: Arc<Signal>| glommio::spawn_local(async move { s.wait().await });
                        let dropped = waiter(s.clone());
                        let kept = waiter(s.clone());
                        // Let both run up to their first `Pending` (listening).
                        futures_lite::future::yield_now().await;
                        futures_lite::future::yield_now().await;
                        drop(dropped);
                        listening.send(()).unwrap();
                        kept.await;
                        woken.send(()).unwrap();
                    })
                    .unwrap()
            })
            .collect();
        let bound = Duration::from_secs(10);
        for _ in 0..2 {
            listening.recv_timeout(bound).unwrap();
        }
        assert!(!s.is_set());
        let at = Instant::now();
        s.set();
        for _ in 0..2 {
            woken.recv_timeout(bound).expect("a shard's waiter woke");
        }
        assert!(at.elapsed() < bound);
        for shard in shards {
            shard.join().unwrap();
        }
    }
}
