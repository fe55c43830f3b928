//! File descriptors: every connection is one, and running out used to fail silently
//! (clients hung unanswered, the log got ~170 `accept failed` lines a second).
//!
//! - At start the soft `RLIMIT_NOFILE` is raised to the hard limit, with a warning naming
//!   the numbers when even that is below what `io.max_connections` (times the Saturday
//!   multiplier) needs.
//! - Past the limit, each shard answers the waiting clients `503 WS_OVERLOADED` through one
//!   descriptor it holds in reserve (the libev/nginx trick: close the reserve, accept into
//!   its slot, answer, close, take the slot back), pauses accepting between tries, and logs
//!   at most one line per [`ACCEPT_ERROR_LOG_INTERVAL`].

use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Descriptors the process needs besides its connections, fixed part: stdio, the registry
/// (database, `-wal`, `-shm`), and room for REST calls, handshakes in flight and log
/// rotation. Measured: 23 open descriptors for 2 idle shards right after start.
pub const HEADROOM_FIXED: u64 = 64;
/// The per-shard part: its io_uring rings (3), eventfds, its listener, its open log
/// segments and its reserve descriptor.
pub const HEADROOM_PER_SHARD: u64 = 16;
/// While out of descriptors, each shard tries `accept` again this often. A failed accept
/// is one cheap syscall, and each try answers one waiting client (when the reserve is
/// free), so 20 tries a second keeps refusals prompt without spinning.
pub const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// At most one log line per shard this often about failing accepts (with the counts since
/// the previous line): enough to see the trouble, never a flood.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// After running out of descriptors, a shard accepts only through [`accept_locked`] until
/// this many tries in a row found no client waiting (then it goes back to io_uring
/// accepts): an accept outside the lock could take the slot another shard freed for its
/// reserve (see [`accept_into_reserve`]).
pub const LOCKED_ACCEPT_IDLE_TRIES: u32 = 20;
/// How long a client answered from the reserve descriptor has to send its request head:
/// one client at a time goes through the reserve, so a slow one must not hold it long.
pub const RESERVE_HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// Descriptors a server with `max_connections` (at its Saturday peak) and `shards` needs.
pub fn needed(max_connections: u64, shards: u64) -> u64 {
    max_connections
        .saturating_add(HEADROOM_FIXED)
        .saturating_add(HEADROOM_PER_SHARD.saturating_mul(shards))
}

/// Raises the soft open-files limit to the hard one and warns when the result is below
/// `needed` (for `max_connections` connections at most, `peak_connections` in Saturday
/// mode). Returns the soft limit now in force.
// `rlim_t` is `u64` here but not on every target: the casts stay.
#[allow(clippy::unnecessary_cast)]
pub fn raise_limit(max_connections: usize, peak_connections: usize, shards: usize) -> u64 {
    let needed = needed(peak_connections as u64, shards as u64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(
            "reading the open files limit: {}",
            io::Error::last_os_error()
        );
        return 0;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
            tracing::info!(
                from = before,
                to = lim.rlim_cur,
                "raised the open files limit (RLIMIT_NOFILE) to its hard limit"
            );
        } else {
            tracing::warn!(
                "raising the open files limit from {before} to {}: {}",
                lim.rlim_max,
                io::Error::last_os_error()
            );
        }
    }
    let soft = lim.rlim_cur as u64;
    if soft < needed {
        tracing::warn!(
            limit = soft,
            hard_limit = lim.rlim_max as u64,
            needed,
            max_connections,
            peak_connections,
            "the open files limit is {soft} (hard limit {}), below the ~{needed} descriptors that io.max_connections = {max_connections} ({peak_connections} in Saturday mode) needs: raise LimitNOFILE (systemd) or `ulimit -n`; past the limit new connections get HTTP 503 WS_OVERLOADED",
            lim.rlim_max as u64
        );
    }
    soft
}

/// Whether an accept failed for lack of descriptors (the process's or the system's).
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// One descriptor held so that a client can still be answered when none is left: an open
/// `/dev/null`, or the socket of the client it last answered (kept, shut down, so its
/// slot never goes free between answering one client and the next).
pub struct Reserve(Option<Box<dyn std::any::Any>>);

impl std::fmt::Debug for Reserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Reserve").field(&self.0.is_some()).finish()
    }
}

impl Reserve {
    pub fn new() -> Self {
        let mut r = Reserve(None);
        r.restore();
        r
    }

    /// Frees the reserve's slot for one `accept`; `false` if it is not held (in use, or it
    /// could not be taken back yet).
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes the slot back (after the answered client's socket is closed), if possible.
    pub fn restore(&mut self) {
        let _one_at_a_time = RESERVE_LOCK.lock();
        self.restore_locked();
    }

    fn restore_locked(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null")
                .ok()
                .map(|f| Box::new(f) as Box<dyn std::any::Any>);
        }
    }

    /// Keeps `slot` (the answered client's socket, already shut down) as the reserve, or
    /// drops it if the reserve is held again: closing the socket and reopening `/dev/null`
    /// would leave its slot free for a moment, long enough for another shard's accept to
    /// take it — and then this shard could answer nobody until a descriptor frees up.
    pub fn hold(&mut self, slot: Box<dyn std::any::Any>) {
        let _one_at_a_time = RESERVE_LOCK.lock();
        if self.0.is_none() {
            self.0 = Some(slot);
        }
    }
}

impl Default for Reserve {
    fn default() -> Self {
        Self::new()
    }
}

/// The libev/nginx trick: when a client waits on `listener` and the reserve is held, free
/// the reserve's slot and accept the client into it. Returns the accepted socket; `None`
/// when no client waits (Linux fails `accept` with `EMFILE` before looking at the queue, so
/// every shard sees the error, not only the one with a client), the reserve is not held, or
/// another thread took the freed slot first (that thread then serves a client normally; the
/// reserve is taken back when a descriptor frees up).
pub fn accept_into_reserve(reserve: &mut Reserve, listener: RawFd) -> Option<RawFd> {
    // Every shard has a reserve: without this lock, another shard taking its own reserve
    // back (opening /dev/null) between our close and our accept takes the slot we freed,
    // our accept fails, and this shard has no reserve until a descriptor frees up — its
    // waiting clients then get no answer at all. Held for a few syscalls, only when out of
    // descriptors.
    let _one_at_a_time = RESERVE_LOCK.lock();
    let mut p = libc::pollfd {
        fd: listener,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own; a zero timeout never blocks.
    if unsafe { libc::poll(&mut p, 1, 0) } != 1 || p.revents & libc::POLLIN == 0 {
        return None;
    }
    if !reserve.release() {
        return None;
    }
    // Non-blocking for this one call (glommio keeps the listener blocking for io_uring, and
    // its own synchronous accept attempt does the same): a client that reset meanwhile
    // must not block the shard.
    // SAFETY: fcntl and accept4 on a listening socket we own; no pointers are passed.
    let fd = unsafe {
        let flags = libc::fcntl(listener, libc::F_GETFL);
        libc::fcntl(listener, libc::F_SETFL, flags | libc::O_NONBLOCK);
        let fd = libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        );
        libc::fcntl(listener, libc::F_SETFL, flags);
        fd
    };
    if fd < 0 {
        reserve.restore_locked();
        return None;
    }
    Some(fd)
}

/// What [`accept_locked`] did.
pub enum LockedAccept {
    /// A client accepted normally (a descriptor was free).
    Normal(RawFd),
    /// Out of descriptors: a client accepted into the reserve's slot, to be answered 503.
    Reserve(RawFd),
    /// Out of descriptors and the reserve is in use (or was lost): the client waits.
    Refused,
    /// Nobody is waiting.
    Idle,
}

/// One accept while out of descriptors, under the lock every shard's reserve dance takes,
/// so no shard's accept can take the slot another shard freed for its reserve.
pub fn accept_locked(reserve: &mut Reserve, listener: RawFd) -> LockedAccept {
    let _one_at_a_time = RESERVE_LOCK.lock();
    let mut p = libc::pollfd {
        fd: listener,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own; a zero timeout never blocks.
    if unsafe { libc::poll(&mut p, 1, 0) } != 1 || p.revents & libc::POLLIN == 0 {
        return LockedAccept::Idle;
    }
    let try_accept = || {
        // SAFETY: fcntl and accept4 on a listening socket we own; no pointers are passed.
        unsafe {
            let flags = libc::fcntl(listener, libc::F_GETFL);
            libc::fcntl(listener, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let fd = libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            );
            let err = io::Error::last_os_error();
            libc::fcntl(listener, libc::F_SETFL, flags);
            if fd >= 0 {
                Ok(fd)
            } else {
                Err(err)
            }
        }
    };
    match try_accept() {
        Ok(fd) => LockedAccept::Normal(fd),
        Err(e) if out_of_descriptors(&e) => {
            reserve.restore_locked();
            if !reserve.release() {
                return LockedAccept::Refused;
            }
            match try_accept() {
                Ok(fd) => LockedAccept::Reserve(fd),
                Err(_) => {
                    reserve.restore_locked();
                    LockedAccept::Refused
                }
            }
        }
        // The client went away meanwhile (or another shard took it).
        Err(_) => LockedAccept::Idle,
    }
}

/// Serializes the reserve dance of every shard's listener (see [`accept_into_reserve`]).
static RESERVE_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Counts failing accepts and logs them at a bounded rate.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    last_line: Option<Instant>,
    failed: u64,
    answered: u64,
}

impl AcceptErrors {
    /// One failed accept (`answered`: the waiting client was answered 503 from the reserve).
    pub fn record(&mut self, shard: usize, e: &io::Error, answered: bool, limit: u64) {
        self.failed += 1;
        self.answered += u64::from(answered);
        let now = Instant::now();
        if self
            .last_line
            .is_some_and(|t| now.duration_since(t) < ACCEPT_ERROR_LOG_INTERVAL)
        {
            return;
        }
        if out_of_descriptors(e) {
            tracing::warn!(
                shard,
                failed = self.failed,
                answered_503 = self.answered,
                open_files_limit = limit,
                "out of file descriptors ({e}): new connections are answered HTTP 503 WS_OVERLOADED one at a time; raise LimitNOFILE or lower io.max_connections (at most one such line per {}s per shard)",
                ACCEPT_ERROR_LOG_INTERVAL.as_secs()
            );
        } else {
            tracing::warn!(
                shard,
                failed = self.failed,
                "accept failed: {e} (at most one such line per {}s per shard)",
                ACCEPT_ERROR_LOG_INTERVAL.as_secs()
            );
        }
        self.last_line = Some(now);
        self.failed = 0;
        self.answered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_frees_and_retakes_one_slot() {
        let mut r = Reserve::new();
        assert!(r.release());
        assert!(!r.release(), "released once until restored");
        r.restore();
        assert!(r.release());
    }

    #[test]
    fn needed_counts_headroom_per_shard() {
        assert_eq!(needed(20_000, 2), 20_000 + 64 + 32);
        assert_eq!(needed(u64::MAX, 2), u64::MAX);
    }

    #[test]
    fn emfile_and_enfile_are_out_of_descriptors() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
