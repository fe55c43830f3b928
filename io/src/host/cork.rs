//! Corked delivery (issue 15 item 2): the fan-out queues a message into each subscriber's
//! outbox without waking that connection's writer task, and remembers the connection
//! here. When the shard has handled the batch of messages in front of it, one flush task
//! writes everything each remembered connection is owed in one non-blocking `send(2)`,
//! straight from the shard's loop, as uWebSockets does with its corked sockets.
//!
//! The connection's writer task stays the fallback, and keeps every case that needs to
//! wait: a TLS stream (rustls owns the record layer), a socket whose buffer is full (the
//! bytes that did not fit go first when the writer runs), a ping or a close to send, and
//! a write of the writer's own still in flight. So a message costs, on the common path,
//! one queue push and a share of one `send` — no task wake-up, no future polled, no
//! io_uring submission and completion per subscriber.
//!
//! Order on the wire stays the outbox's (SPEC §2.1, §2.6): a direct write takes frames
//! only while nothing older is pending anywhere for that socket — the writer is parked,
//! nothing is left over from an earlier direct write — and drains the outbox in its
//! usual order.

use super::connection::{close_code, Conn};
use crate::notify::Notify;
use crate::outbox::{encode_frame, Opcode};
use bytes::Bytes;
use ringbearer_core::Priority;
use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

/// A write buffer kept between flushes up to this size; a larger one is given back.
const RETAINED_BUFFER_BYTES: usize = 64 * 1024;

/// One shard's corked connections.
pub struct Cork {
    /// Connections with frames queued since the last flush, each once.
    dirty: RefCell<Vec<Rc<Conn>>>,
    /// The list being flushed (kept to reuse its allocation).
    spare: RefCell<Vec<Rc<Conn>>>,
    ready: Notify,
    /// The one write buffer of the shard's direct writes.
    buf: RefCell<Vec<u8>>,
    write_batch_bytes: usize,
    enabled: bool,
}

impl Cork {
    pub fn new(cfg: &crate::IoConfig) -> Self {
        Cork {
            dirty: RefCell::default(),
            spare: RefCell::default(),
            ready: Notify::default(),
            buf: RefCell::default(),
            write_batch_bytes: cfg.write_batch_bytes,
            enabled: cfg.direct_writes,
        }
    }

    /// A fan-out frame for `conn`: queued, and written at the end of the batch (or, with
    /// direct writes off, handed to its writer at once).
    pub fn send(&self, conn: &Rc<Conn>, p: Priority, channel: u64, data: Bytes) {
        if !self.enabled {
            conn.send_message(p, channel, data);
        } else if conn.queue_message(p, channel, data) {
            self.add(conn);
        }
    }

    /// A heartbeat ping for `conn`: written with the rest of the batch — one `send` for
    /// every ping of a sweep round, no writer woken (or, with direct writes off or over
    /// TLS, by its writer).
    pub fn ping(&self, conn: &Rc<Conn>) {
        if self.enabled && conn.fd.get().is_some() {
            conn.ping_due.set(true);
            self.add(conn);
        } else {
            conn.ping();
        }
    }

    /// `conn` has frames queued for it: write them at the end of the batch.
    fn add(&self, conn: &Rc<Conn>) {
        if conn.corked.replace(true) {
            return;
        }
        let mut dirty = self.dirty.borrow_mut();
        if dirty.is_empty() {
            self.ready.notify();
        }
        dirty.push(conn.clone());
    }

    /// The shard's flush task: runs once per batch of deliveries, after the tasks that
    /// were ready with it (the mesh receivers handle every message already waiting
    /// before they yield).
    pub async fn run(self: Rc<Self>) {
        loop {
            self.ready.wait().await;
            self.flush();
        }
    }

    pub fn flush(&self) {
        let mut list = std::mem::take(&mut *self.spare.borrow_mut());
        std::mem::swap(&mut list, &mut *self.dirty.borrow_mut());
        let mut buf = self.buf.borrow_mut();
        for conn in list.drain(..) {
            conn.corked.set(false);
            write_direct(&conn, &mut buf, self.write_batch_bytes);
        }
        if buf.capacity() > RETAINED_BUFFER_BYTES {
            *buf = Vec::new();
        }
        *self.spare.borrow_mut() = list;
    }
}

/// What one non-blocking `send(2)` did.
enum Sent {
    All,
    Part(usize),
    Failed,
}

fn send_now(fd: RawFd, data: &[u8]) -> Sent {
    loop {
        // SAFETY: `fd` is the connection's open socket (see `Conn::direct_fd`: cleared
        // before the socket is dropped), `data` a live slice; MSG_DONTWAIT never blocks
        // the shard and MSG_NOSIGNAL turns a closed peer into EPIPE, not SIGPIPE.
        let n = unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            let n = n as usize;
            return if n == data.len() {
                Sent::All
            } else {
                Sent::Part(n)
            };
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Sent::Part(0),
            _ => return Sent::Failed,
        }
    }
}

/// Writes what `conn` is owed now if nothing else may be writing to its socket; else
/// hands the work to its writer task.
fn write_direct(conn: &Conn, buf: &mut Vec<u8>, batch: usize) {
    if !conn.is_open() {
        return;
    }
    let Some(fd) = conn.direct_fd() else {
        conn.wake_writer.notify();
        return;
    };
    let mut wrote = false;
    buf.clear();
    if conn.ping_due.replace(false) {
        encode_frame(buf, Opcode::Ping, b"");
    }
    loop {
        conn.outbox.borrow_mut().drain_into(buf, batch);
        if buf.is_empty() {
            break;
        }
        match send_now(fd, buf) {
            Sent::All => {
                wrote = true;
                buf.clear();
                crate::metrics::with(|m| {
                    m.writes_direct.fetch_add(1, Relaxed);
                });
            }
            Sent::Part(n) => {
                // The socket is full: the writer sends the rest when it can, before
                // anything else, and takes over the outbox until it is empty.
                wrote |= n > 0;
                conn.unsent.borrow_mut().extend_from_slice(&buf[n..]);
                conn.wake_writer.notify();
                crate::metrics::with(|m| {
                    m.writes_deferred.fetch_add(1, Relaxed);
                });
                break;
            }
            Sent::Failed => {
                conn.write_failed.set(true);
                conn.close(close_code::INTERNAL, "write failed or timed out");
                return;
            }
        }
    }
    if wrote {
        // Room again: a reader paused on the outbox may go on.
        conn.resume_reads.notify();
    }
}

/// The socket of a plaintext connection, for direct writes (see [`Conn::direct_fd`]).
#[derive(Default)]
pub struct DirectFd(Cell<Option<RawFd>>);

impl DirectFd {
    pub fn set(&self, fd: Option<RawFd>) {
        self.0.set(fd);
    }

    pub fn get(&self) -> Option<RawFd> {
        self.0.get()
    }
}
