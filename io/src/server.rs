//! Starting and stopping the server: one glommio executor per shard, each with its own
//! SO_REUSEPORT listener on the shared port (built with socket2 for a deep backlog), the
//! cross-shard mesh, heartbeats, and a graceful stop that tells clients to come back later.

use crate::auth::TokenVerifier;
use crate::conn::{self, close_code};
use crate::journal::{Catalog, JournalFactory};

/// Where a server stores what it must not lose; the default keeps everything in memory.
#[derive(Clone, Default)]
pub struct Store {
    pub journal: Option<Arc<dyn JournalFactory>>,
    pub catalog: Option<Arc<dyn Catalog>>,
    /// The weddings stored before this start (the registry's), loaded into the table.
    pub weddings: Vec<crate::weddings::Wedding>,
}
use crate::host::{Shard, ShardCtx};
use crate::mesh::{Router, ShardMsg};
use crate::weddings::{CalendarClock, SaturdayMode, Weddings};
use crate::IoConfig;
use futures_lite::future;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement, PoolThreadHandles};
use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// State shared by every shard (read-mostly).
pub struct Shared {
    pub verifier: TokenVerifier,
    /// Open WebSocket connections, server-wide (for `max_connections`).
    pub connections: AtomicUsize,
    pub shutdown: AtomicBool,
    /// Tier accounting across shards.
    pub policy: Arc<crate::policy::Policy>,
    /// Counters, one block per shard (`metrics.rs`).
    pub metrics: Arc<[crate::metrics::ShardMetrics]>,
    /// Totals sampled once a second over `health_window_ms`, oldest first.
    pub samples: Mutex<std::collections::VecDeque<(Instant, crate::metrics::Totals)>>,
    pub started: Instant,
    /// The REST routes (`None`: only `/ws` is served).
    pub http: Option<Arc<dyn crate::api::HttpHandler>>,
    /// Registered weddings (SPEC §1); persist an upsert through the `Catalog`.
    pub weddings: Weddings,
    /// The clock of calendar decisions (wedding day, Saturday mode); see `[clock]`.
    pub clock: CalendarClock,
    /// Saturday mode as configured.
    pub saturday: SaturdayMode,
    /// `io.max_connections` outside Saturday mode.
    pub base_max_connections: usize,
    /// Open connections per client address, across shards (`max_connections_per_ip`).
    pub ips: Arc<crate::policy::IpTable>,
    /// Set when `[tls]` is configured: every accepted connection speaks TLS.
    pub tls: Option<futures_rustls::TlsAcceptor>,
    /// The soft open-files limit in force (after raising it to the hard limit at start).
    pub open_files_limit: u64,
}

impl Shared {
    /// Calendar now (Unix ms): the wall clock unless `[clock] start` shifted it.
    pub fn calendar_now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether Saturday mode is on at calendar time `now_ms`.
    pub fn saturday_mode(&self, now_ms: u64) -> bool {
        self.saturday.is_active(now_ms)
    }

    /// SPEC §4 health `wedding_day_mode`: Saturday mode is on, or some wedding is today
    /// (calendar time `now_ms`, e.g. [`Shared::calendar_now_ms`]).
    pub fn wedding_day_mode(&self, now_ms: u64) -> bool {
        self.saturday_mode(now_ms) || self.active_weddings_today(now_ms) > 0
    }

    /// SPEC §4 health `wedding_analytics.active_weddings_today`.
    pub fn active_weddings_today(&self, now_ms: u64) -> usize {
        self.weddings.active_today(now_ms)
    }

    /// The connection cap at calendar time `now_ms` (doubled in Saturday mode).
    pub fn max_connections(&self, now_ms: u64) -> usize {
        self.saturday
            .max_connections(self.base_max_connections, now_ms)
    }
}

/// A running server. Dropping it does not stop it: call [`ServerHandle::shutdown`] and
/// [`ServerHandle::join`].
pub struct ServerHandle {
    pub local_addr: SocketAddr,
    pub shards: usize,
    shared: Arc<Shared>,
    threads: Option<PoolThreadHandles<()>>,
}

impl ServerHandle {
    /// Asks every shard to stop: listeners close, connections get close code 1001
    /// ("going away": reconnect later or elsewhere).
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Waits for every shard to finish.
    pub fn join(mut self) {
        if let Some(t) = self.threads.take() {
            for r in t.join_all() {
                if let Err(e) = r {
                    tracing::error!("shard ended with an error: {e}");
                }
            }
        }
    }
}

fn bind_socket(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into()).map_err(|e| in_use(addr, e))?;
    s.listen(backlog)?;
    Ok(s)
}

/// Names the address in a bind error (`EADDRINUSE` says only "Address already in use").
fn in_use(addr: SocketAddr, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        io::Error::new(
            e.kind(),
            format!("{addr}: address already in use (another process holds it)"),
        )
    } else {
        io::Error::new(e.kind(), format!("binding {addr}: {e}"))
    }
}

/// SO_REUSEPORT lets our shards share one port, but it would also let a second server of
/// the same user join the group silently: the kernel then splits clients between two
/// servers with different secrets and data. So once every shard's socket listens, the
/// kernel's table of TCP sockets (`/proc/net/tcp`, `/proc/net/tcp6`) must show no other
/// listening socket on the port whose address overlaps ours. Two servers starting at once
/// each see the other and both fail; neither can pass unseen, because each looks only after
/// its own sockets listen. (docs/decisions.md §20.)
fn check_sole_listener(addr: SocketAddr, ours: &[Socket]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut own = Vec::with_capacity(ours.len());
    for s in ours {
        own.push(socket_inode(s.as_raw_fd())?);
    }
    let mut others = Vec::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 in this kernel.
            Err(e) if e.kind() == io::ErrorKind::NotFound && v6 => continue,
            Err(e) => {
                return Err(io::Error::other(format!(
                    "reading {table} to check that no other process listens on {addr}: {e}"
                )))
            }
        };
        for (other, inode) in listening_sockets(&text, v6) {
            if !own.contains(&inode) && overlaps(addr, other) {
                others.push(other);
            }
        }
    }
    match others.first() {
        None => Ok(()),
        Some(other) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{addr}: address already in use (another process listens on {other} with SO_REUSEPORT; two servers on one port would split the clients between them)"
            ),
        )),
    }
}

/// The inode of socket `fd` (from `/proc/self/fd/FD` → `socket:[INODE]`).
fn socket_inode(fd: i32) -> io::Result<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
    link.to_str()
        .and_then(|l| l.strip_prefix("socket:["))
        .and_then(|l| l.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("fd {fd} is not a socket: {link:?}")))
}

/// `(local address, inode)` of every LISTEN socket in a `/proc/net/tcp{,6}` table.
fn listening_sockets(table: &str, v6: bool) -> Vec<(SocketAddr, u64)> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let (Some((ip, port)), Ok(inode)) = (f[1].split_once(':'), f[9].parse::<u64>()) else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        // The kernel prints each 32-bit word of the address as a native-endian number.
        let mut bytes = Vec::with_capacity(16);
        for i in (0..ip.len()).step_by(8) {
            match ip.get(i..i + 8).map(|w| u32::from_str_radix(w, 16)) {
                Some(Ok(w)) => bytes.extend_from_slice(&w.to_ne_bytes()),
                _ => break,
            }
        }
        let ip: std::net::IpAddr = match (v6, bytes.len()) {
            (false, 4) => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
            (true, 16) => {
                let b: [u8; 16] = bytes.try_into().expect("16 bytes");
                std::net::Ipv6Addr::from(b).into()
            }
            _ => continue,
        };
        out.push((SocketAddr::new(ip, port), inode));
    }
    out
}

/// Whether a socket listening on `b` takes connections meant for `a`: same port, and the
/// same address or either a wildcard. An IPv6 wildcard counts for IPv4 too (a dual-stack
/// socket; the table does not say whether it is `IPV6_V6ONLY`).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    use std::net::IpAddr;
    let norm = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if a.port() != b.port() {
        return false;
    }
    let (x, y) = (norm(a.ip()), norm(b.ip()));
    let v6_any = |ip: IpAddr| ip.is_ipv6() && ip.is_unspecified();
    if v6_any(x) || v6_any(y) {
        return true;
    }
    x.is_ipv4() == y.is_ipv4() && (x == y || x.is_unspecified() || y.is_unspecified())
}

/// Binds the listeners and starts the shards. Returns once every shard is ready (its
/// journal open, the mesh joined), so `local_addr` is connectable; a shard that cannot
/// start fails the whole start with its reason. `journal` is the store published messages
/// go to before anyone hears of them (`None` is the `memory` policy); `catalog` mirrors
/// channels, subscriptions and cursors.
pub fn start(cfg: IoConfig, verifier: TokenVerifier, store: Store) -> io::Result<ServerHandle> {
    start_with(cfg, verifier, store, None)
}

/// [`start`] with REST routes for every path other than `/ws` (and `/echo`).
pub fn start_with(
    cfg: IoConfig,
    verifier: TokenVerifier,
    mut store: Store,
    http: Option<Arc<dyn crate::api::HttpHandler>>,
) -> io::Result<ServerHandle> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let saturday = cfg.saturday.resolve().map_err(invalid)?;
    let clock = cfg.clock.resolve(crate::clock::now_ms()).map_err(invalid)?;
    if cfg.clock.start.is_some() {
        tracing::warn!(
            calendar_now = %ringbearer_core::time::rfc3339_ms(clock.now_ms()),
            "[clock] start is set: the calendar is shifted (tests and rehearsals only)"
        );
    }
    let weddings = Weddings::with_capacity(cfg.max_weddings);
    for w in std::mem::take(&mut store.weddings) {
        let id = w.id.clone();
        if let Err(e) = weddings.upsert(w) {
            tracing::warn!(wedding = %id, "stored wedding not loaded: {e}");
        }
    }
    let tls = crate::tls::acceptor(&cfg.tls)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let n = cfg.shard_count();
    // Saturday mode multiplies the cap (SPEC §1): the limit must hold the peak.
    let peak_connections = match saturday.setting {
        crate::weddings::SaturdaySetting::Off => cfg.max_connections,
        _ => cfg
            .max_connections
            .saturating_mul(saturday.capacity_multiplier as usize),
    };
    let open_files_limit = crate::fds::raise_limit(cfg.max_connections, peak_connections, n);
    let first = bind_socket(cfg.listen, cfg.listen_backlog)?;
    let local_addr = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no socket address"))?;
    let mut sockets = vec![first];
    for _ in 1..n {
        sockets.push(bind_socket(local_addr, cfg.listen_backlog)?);
    }
    check_sole_listener(local_addr, &sockets)?;
    let sockets = Arc::new(Mutex::new(
        sockets.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let shared = Arc::new(Shared {
        verifier,
        connections: AtomicUsize::new(0),
        shutdown: AtomicBool::new(false),
        policy: Arc::default(),
        metrics: (0..n)
            .map(|_| crate::metrics::ShardMetrics::default())
            .collect(),
        samples: Mutex::new(std::collections::VecDeque::new()),
        started: Instant::now(),
        http,
        weddings,
        clock,
        saturday,
        base_max_connections: cfg.max_connections,
        ips: Arc::default(),
        tls,
        open_files_limit,
    });
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mesh = MeshBuilder::<ShardMsg, _>::full(n, cfg.mesh_capacity);
    let placement = if cfg.pin_shards {
        PoolPlacement::MaxSpread(n, None)
    } else {
        PoolPlacement::Unbound(n)
    };
    let shared2 = shared.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let ready_tx = Arc::new(Mutex::new(ready_tx));
    let threads = LocalExecutorPoolBuilder::new(placement)
        .name("rb-shard")
        .io_memory(cfg.io_memory_bytes)
        .on_all_shards(move || {
            let cfg = cfg.clone();
            let shared = shared2.clone();
            let mesh = mesh.clone();
            let sockets = sockets.clone();
            let store = store.clone();
            let ready = ready_tx.lock().clone();
            async move { run_shard(cfg, shared, mesh, sockets, boot, store, ready).await }
        })
        .map_err(|e| io::Error::other(format!("starting shards: {e}")))?;
    let mut handle = ServerHandle {
        local_addr,
        shards: n,
        shared,
        threads: Some(threads),
    };
    for _ in 0..n {
        let r = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("a shard ended before it was ready".into()));
        if let Err(e) = r {
            handle.shutdown();
            if let Some(t) = handle.threads.take() {
                let _ = t.join_all();
            }
            return Err(io::Error::other(e));
        }
    }
    Ok(handle)
}

async fn run_shard(
    cfg: IoConfig,
    shared: Arc<Shared>,
    mesh: MeshBuilder<ShardMsg, glommio::channels::channel_mesh::Full>,
    sockets: Arc<Mutex<Vec<Option<Socket>>>>,
    boot: u64,
    store: Store,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let Store {
        journal, catalog, ..
    } = store;
    let n = cfg.shard_count();
    let (senders, mut receivers) = mesh.join().await.expect("mesh join");
    let me = senders.peer_id();
    let journal = match journal {
        None => None,
        Some(f) => match f.open(me as u32).await {
            Ok(j) => Some(j),
            Err(e) => {
                let _ = ready.send(Err(format!("shard {me}: opening its journal: {e}")));
                return;
            }
        },
    };
    let socket = sockets.lock()[me].take().expect("one listener per shard");
    let listener_fd = socket.into_raw_fd();
    // SAFETY: the fd is a bound, listening TCP socket that we own and hand over whole (the
    // number is kept only for the reserve's accept while the listener lives).
    let listener = unsafe { TcpListener::from_raw_fd(listener_fd) };
    let cfg = Rc::new(cfg);
    let router = Rc::new(Router::new(senders, n));
    crate::metrics::install(shared.metrics.clone(), me);
    // The shared tables first: restoring channels counts them into the policy and derives
    // wedding ownership into the weddings table.
    let (journal, restored) = match journal {
        Some((j, restored)) => (Some(j), Some(restored)),
        None => (None, None),
    };
    let mut owner = crate::owner::Owner::new(
        me as u32,
        n,
        cfg.clone(),
        boot,
        journal,
        shared.policy.clone(),
        shared.weddings.clone(),
    );
    let real_now = crate::clock::now_ms();
    let now = crate::owner::Now {
        ms: real_now,
        calendar_ms: shared.clock.at(real_now),
    };
    if let Some(restored) = restored {
        let count = restored.len();
        owner.restore(restored, now);
        tracing::info!(shard = me, channels = count, "restored");
    }
    let mut shard = Shard::new(owner, cfg.clone());
    shard.catalog = catalog;
    shard.clock = shared.clock;
    // The channel gauge, from what was restored.
    let _ = shard.apply(crate::owner::Effects::default());
    let commit_ready = shard.commit_ready.clone();
    let ctx = Rc::new(ShardCtx {
        state: RefCell::new(shard),
        router: router.clone(),
        cfg: cfg.clone(),
        shared: shared.clone(),
    });
    for peer in 0..n as u32 {
        if peer as usize != me {
            glommio::spawn_local(router.clone().pump(peer)).detach();
        }
    }
    // Messages to ourselves: same FIFO discipline, handled one at a time.
    let own = router.queue(me as u32);
    let c = ctx.clone();
    glommio::spawn_local(async move {
        loop {
            own.ready.wait().await;
            loop {
                let Some(m) = own.q.borrow_mut().pop_front() else {
                    break;
                };
                c.dispatch(m);
            }
        }
    })
    .detach();
    for (_peer, rx) in receivers.streams() {
        let c = ctx.clone();
        glommio::spawn_local(async move {
            while let Some(m) = rx.recv().await {
                c.dispatch(m);
            }
        })
        .detach();
    }
    glommio::spawn_local(heartbeat(ctx.clone())).detach();
    glommio::spawn_local(commit_pump(ctx.clone(), commit_ready)).detach();
    glommio::spawn_local(retention(ctx.clone())).detach();
    if me == 0 {
        glommio::spawn_local(sample_totals(ctx.clone())).detach();
    }
    glommio::spawn_local(presence_flush(ctx.clone())).detach();
    tracing::debug!(shard = me, "shard running");
    let _ = ready.send(Ok(()));

    let accept = async {
        let reserve = Rc::new(RefCell::new(crate::fds::Reserve::new()));
        let mut errors = crate::fds::AcceptErrors::default();
        loop {
            let e = match listener.accept().await {
                Ok(s) => {
                    glommio::spawn_local(conn::serve(ctx.clone(), s)).detach();
                    continue;
                }
                Err(e) => io::Error::from(e),
            };
            let mut answered = false;
            if crate::fds::out_of_descriptors(&e) {
                // A waiting client is accepted into the reserve's slot, answered 503 and
                // closed; then the slot is taken back.
                reserve.borrow_mut().restore();
                let fd = crate::fds::accept_into_reserve(&mut reserve.borrow_mut(), listener_fd);
                if let Some(fd) = fd {
                    answered = true;
                    // SAFETY: a connected TCP socket just accepted, owned from here on.
                    let s = unsafe { glommio::net::TcpStream::from_raw_fd(fd) };
                    let (ctx, reserve) = (ctx.clone(), reserve.clone());
                    glommio::spawn_local(async move {
                        conn::serve_overloaded(ctx, s).await;
                        reserve.borrow_mut().restore();
                    })
                    .detach();
                }
            }
            errors.record(me, &e, answered, shared.open_files_limit);
            glommio::timer::sleep(crate::fds::ACCEPT_RETRY_PAUSE).await;
        }
    };
    let stop = async {
        while !shared.shutdown.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    };
    future::or(accept, stop).await;
    drop(listener);
    let conns: Vec<_> = ctx.state.borrow().conns.values().cloned().collect();
    for c in &conns {
        c.close(
            close_code::GOING_AWAY,
            "server shutting down; reconnect later",
        );
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while !ctx.state.borrow().conns.is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // SPEC §5: flush the log before going (under `batch`, acknowledged records may still be
    // waiting for their sync).
    let journal = ctx.state.borrow().journal.clone();
    if let Some(j) = journal {
        if let Err(e) = j.close().await {
            tracing::error!(shard = me, "closing the log: {e:?}");
        }
    }
    tracing::debug!(shard = me, "shard stopped");
}

/// Waits for the journal to store what is pending, then lets the shard deliver and answer
/// it, in log order. One `durable` wait covers every publish appended before it (group
/// commit); publishes appended meanwhile go in the next round.
async fn commit_pump(ctx: Rc<ShardCtx>, ready: Rc<crate::notify::Notify>) {
    loop {
        ready.wait().await;
        loop {
            let Some((journal, upto)) = ctx.state.borrow().pending_upto() else {
                break;
            };
            let result = journal.durable(upto).await;
            let out = ctx.state.borrow_mut().complete_pending(upto, result);
            ctx.route_all(out);
        }
    }
}

/// Retention (SPEC §2.2: the newest `max_queued` messages, not older than the retention):
/// every `reclaim_interval_ms`, when the log has more than one segment, log a checkpoint
/// of every channel (metadata and last id), wait until it is stored, then delete the
/// oldest segments holding only dead records — messages below their channel's first kept
/// id, and checkpoints older than this round's. Channels unknown to the snapshot (created
/// meanwhile) count as live, and so does anything logged during this round.
async fn retention(ctx: Rc<ShardCtx>) {
    let interval = Duration::from_millis(ctx.cfg.reclaim_interval_ms);
    loop {
        glommio::timer::sleep(interval).await;
        let Some(journal) = ctx.state.borrow().journal.clone() else {
            return;
        };
        if journal.segments() <= 1 {
            continue;
        }
        let round_ms = crate::clock::now_ms();
        let crate::owner::RetentionRound {
            checkpoints,
            first_kept,
        } = ctx.state.borrow_mut().retention_snapshot(round_ms);
        let mut last = None;
        for (name, json) in &checkpoints {
            match journal.append(
                name,
                round_ms,
                crate::journal::Entry::Channel { meta_json: json },
            ) {
                Ok(pos) => last = Some(pos),
                Err(e) => {
                    tracing::warn!("retention: checkpoint not logged ({e:?}); skipping this round");
                    last = None;
                    break;
                }
            }
        }
        if !checkpoints.is_empty() {
            let Some(pos) = last else { continue };
            if let Err(e) = journal.durable(pos).await {
                tracing::warn!("retention: checkpoint not stored ({e:?}); skipping this round");
                continue;
            }
        }
        // IMPORTANT: `max_ts >= round_ms` keeps any segment holding something of this round
        // for the channel — its new checkpoint above all, which may have landed in a
        // segment that was then rotated out next to the channel's dead messages.
        let is_live = Box::new(move |channel: &str, max_id: u64, max_ts: u64| {
            match first_kept.get(channel) {
                None => true,
                Some(&first) => max_id >= first || max_ts >= round_ms,
            }
        });
        match journal.reclaim(is_live).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(segments = n, "retention: reclaimed log segments"),
            Err(e) => tracing::warn!("retention: reclaim failed: {e:?}"),
        }
    }
}

/// Every `presence_flush_interval_ms`, announces the presence changes of this shard's
/// channels: one coalesced diff per changed channel (SPEC §3; see `core/src/presence.rs`).
async fn presence_flush(ctx: Rc<ShardCtx>) {
    let interval = Duration::from_millis(ctx.cfg.presence_flush_interval_ms);
    loop {
        glommio::timer::sleep(interval).await;
        let out = ctx
            .state
            .borrow_mut()
            .flush_presence(crate::clock::now_ms());
        ctx.route_all(out);
    }
}

/// Keeps `Shared::samples`: one snapshot of the totals a second, spanning
/// `health_window_ms` (health's messages/s and latency are differences across it).
async fn sample_totals(ctx: Rc<ShardCtx>) {
    let keep = Duration::from_millis(ctx.cfg.health_window_ms);
    loop {
        let now = Instant::now();
        let t = crate::metrics::Totals::sum(&ctx.shared.metrics);
        {
            let mut s = ctx.shared.samples.lock();
            s.push_back((now, t));
            while s
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > keep)
            {
                s.pop_front();
            }
        }
        glommio::timer::sleep(Duration::from_secs(1)).await;
    }
}

/// One sweep per shard, every second at most (never a timer per connection: 20,000 of
/// them on a Saturday). Each round, for every connection:
/// - token expiry (SPEC §4 Tokens): `token_expiry_warning_secs` before `exp` it is told
///   `token_expiring` once per token; past `exp` + `token_leeway_secs` it gets
///   `WS_UNAUTHORIZED` and close 4002, unless a `token` refresh came first;
/// - heartbeats (SPEC §3, §1): a ping every `heartbeat_interval_ms`, or every
///   `wedding_day_heartbeat_interval_ms` when Saturday mode is on or its token reaches a
///   wedding that is today; two unanswered pings and two silent intervals close it with 4000.
async fn heartbeat(ctx: Rc<ShardCtx>) {
    let slow = Duration::from_millis(ctx.cfg.heartbeat_interval_ms);
    let fast = Duration::from_millis(ctx.cfg.wedding_day_heartbeat_interval_ms);
    let round = Duration::from_secs(1).min(slow).min(fast);
    let leeway = ctx.cfg.token_leeway_secs;
    let warning = ctx.cfg.token_expiry_warning_secs;
    loop {
        glommio::timer::sleep(round).await;
        let now = Instant::now();
        let now_s = crate::clock::now_ms() / 1000;
        let calendar_now = ctx.shared.calendar_now_ms();
        let all_fast = ctx.shared.saturday_mode(calendar_now);
        let today = if all_fast {
            None
        } else {
            ctx.shared.weddings.today(calendar_now)
        };
        let conns: Vec<_> = ctx.state.borrow().conns.values().cloned().collect();
        for c in conns {
            if !c.is_open() {
                continue;
            }
            let claims = c.claims();
            if !c.check_token_expiry(&claims, now_s, leeway, warning) {
                continue;
            }
            let wedding_day = all_fast || today.as_ref().is_some_and(|t| t.reaches(&claims));
            c.heartbeat(now, if wedding_day { fast } else { slow });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tables_are_read() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1292 1 000000004d9e34a5 100 0 0 10 0\n   1: 0100007F:AFAD 0100007F:A214 06 00000000:00000000 03:00000ED8 00000000     0        0 0 3 00000000f1f82f52\n   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n";
        assert_eq!(
            listening_sockets(v4, false),
            vec![
                ("0.0.0.0:2024".parse().unwrap(), 1292),
                ("127.0.0.1:8080".parse().unwrap(), 4242)
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0\n";
        assert_eq!(
            listening_sockets(v6, true),
            vec![("[::1]:8080".parse().unwrap(), 77)]
        );
    }

    #[test]
    fn overlapping_addresses() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("127.0.0.1:8080"), a("127.0.0.1:8080")));
        assert!(overlaps(a("127.0.0.1:8080"), a("0.0.0.0:8080")));
        assert!(overlaps(a("0.0.0.0:8080"), a("10.1.2.3:8080")));
        assert!(overlaps(a("127.0.0.1:8080"), a("[::]:8080")));
        assert!(overlaps(a("127.0.0.1:8080"), a("[::ffff:127.0.0.1]:8080")));
        assert!(!overlaps(a("127.0.0.1:8080"), a("127.0.0.1:8081")));
        assert!(!overlaps(a("127.0.0.1:8080"), a("127.0.0.2:8080")));
        assert!(!overlaps(a("127.0.0.1:8080"), a("[::1]:8080")));
    }

    /// A second group of SO_REUSEPORT sockets on our port is found; our own are not.
    #[test]
    fn another_reuseport_listener_is_found() {
        let ours = bind_socket("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = ours.local_addr().unwrap().as_socket().unwrap();
        check_sole_listener(addr, std::slice::from_ref(&ours)).unwrap();
        let intruder = bind_socket(addr, 16).unwrap();
        let e = check_sole_listener(addr, std::slice::from_ref(&ours)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(
            e.to_string()
                .contains(&format!("{addr}: address already in use")),
            "{e}"
        );
        drop(intruder);
        check_sole_listener(addr, std::slice::from_ref(&ours)).unwrap();
    }
}
