//! Starting and stopping the server: one glommio executor per shard, each with its own
//! listener on the shared port (`listener.rs`), the cross-shard mesh, the per-shard
//! services (`tasks.rs`), and a graceful stop (`shutdown.rs`).
//!
//! It does not handle connections (`conn.rs`, `api.rs`) or own channel state (`shard.rs`).
//!
//! ## Start
//! Every shard joins the mesh, opens its journal and restores its channels, starts the
//! mesh pumps and its services (`tasks::Services::start`, the one place), says it is
//! ready, and accepts until the shutdown signal. [`start_with`] returns once every shard is
//! ready, or fails with the first shard's reason.
//!
//! ## Stop
//! [`ServerHandle::shutdown`] sets `Shared::shutdown`, a [`Signal`] every shard awaits (it
//! wakes their executors from another thread; nothing polls it). Each shard then stops in
//! this order; the wait of steps 3a and 3b together is bounded by `io.shutdown_drain_ms`:
//!
//! | step | what | waits for |
//! |------|------|-----------|
//! | 1 | stop accepting: the accept loop ends, the listener closes | — |
//! | 2 | every WebSocket connection gets close 1001 "going away"; one whose upgrade finishes later gets it at once; kept-alive REST connections close after their request in flight; event streams end | — |
//! | 3a | drain this shard | its last socket to end (a `Notify`, `notify.rs`, fired when the count reaches zero) |
//! | 3b | drain the server | every shard past 3a: meanwhile this shard keeps answering its mesh, so another shard's leaving clients can still publish to its channels |
//! | 4 | stop the services, one after the other: heartbeat, presence flush, parking, retention, sample totals (shard 0), watchdog (shard 0) | each to finish its round (the watchdog's round is cut: nothing of it is half-applied) |
//! | 5 | stop the commit pump | what is pending to be stored, delivered and answered |
//! | 6 | close the journal (SPEC §5: flushed and synced) | the sync |
//!
//! Then the shard's executor ends; [`ServerHandle::join`] returns when all have.

mod cluster;
mod listener;
mod shutdown;
mod sweep;
mod tasks;
mod watchdog;

pub use tasks::{HEARTBEAT_ROUND_MAX, SAMPLE_INTERVAL};
pub use watchdog::SYSTEM_USER;

use crate::auth::TokenVerifier;
use crate::host::{Shard, ShardCtx};
use crate::journal::{Catalog, JournalFactory};
use crate::mesh::{Router, ShardMsg};
use crate::shared::Shared;
use crate::signal::Signal;
use crate::weddings::Weddings;
use crate::IoConfig;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement, PoolThreadHandles};
use listener::{bind_socket, check_sole_listener};
use parking_lot::Mutex;
use shutdown::{AllDrained, Arrival, OpenSockets};
use socket2::Socket;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where a server stores what it must not lose; the default keeps everything in memory.
#[derive(Clone, Default)]
pub struct Store {
    pub journal: Option<Arc<dyn JournalFactory>>,
    pub catalog: Option<Arc<dyn Catalog>>,
    /// Cluster mode (docs/cluster.md): the bridge's link; each shard adopts the channels
    /// other nodes created from it. `None` on a single node.
    pub cluster: Option<Arc<crate::cluster::Link>>,
    /// The weddings stored before this start (the registry's), loaded into the table.
    pub weddings: Vec<crate::weddings::Wedding>,
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
    /// Asks every shard to stop, in the order of this module's table: listeners close,
    /// connections get close code 1001 ("going away": reconnect later or elsewhere), and so
    /// on. Callable from any thread; returns at once ([`ServerHandle::join`] waits).
    pub fn shutdown(&self) {
        self.shared.shutdown.set();
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
        shutdown: Signal::new(),
        policy: Arc::default(),
        metrics: (0..n)
            .map(|_| crate::metrics::ShardMetrics::default())
            .collect(),
        samples: Mutex::new(std::collections::VecDeque::new()),
        started: Instant::now(),
        weddings,
        clock,
        saturday,
        base_max_connections: cfg.max_connections,
        ips: Arc::default(),
        tls,
        open_files_limit,
        watch_alerts: Default::default(),
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
    let all_drained = Arc::new(AllDrained::new(n));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let ready_tx = Arc::new(Mutex::new(ready_tx));
    let threads = LocalExecutorPoolBuilder::new(placement)
        .name("rb-shard")
        .io_memory(cfg.io_memory_bytes)
        .ring_depth(cfg.ring_depth)
        .on_all_shards(move || {
            let cfg = cfg.clone();
            let shared = shared2.clone();
            let mesh = mesh.clone();
            let sockets = sockets.clone();
            let store = store.clone();
            let http = http.clone();
            let ready = ready_tx.lock().clone();
            let arrival = Arrival::new(all_drained.clone());
            async move {
                let start = ShardStart {
                    cfg,
                    shared,
                    mesh,
                    sockets,
                    boot,
                    store,
                    http,
                    ready,
                };
                run_shard(start, arrival).await
            }
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

/// What one shard starts from.
struct ShardStart {
    cfg: IoConfig,
    shared: Arc<Shared>,
    mesh: MeshBuilder<ShardMsg, Full>,
    /// One listening socket per shard; each takes its own.
    sockets: Arc<Mutex<Vec<Option<Socket>>>>,
    boot: u64,
    store: Store,
    /// The REST routes (`None`: only `/ws` is served).
    http: Option<Arc<dyn crate::api::HttpHandler>>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
}

/// One shard's life: start, accept until the shutdown signal, stop in order. `arrival`
/// counts this shard at step 3b, also when it returns early.
async fn run_shard(start: ShardStart, arrival: Arrival) {
    let ShardStart {
        cfg,
        shared,
        mesh,
        sockets,
        boot,
        store,
        http,
        ready,
    } = start;
    let Store {
        journal,
        catalog,
        cluster,
        ..
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
    if let Some(link) = &cluster {
        owner.set_cluster(link.clone());
    }
    if let Some(mut restored) = restored {
        if cluster.is_some() {
            // Clustered channels' messages and ids come from the stream, replayed from its
            // start by the bridge: numbering restarts from what it holds.
            for rc in &mut restored {
                rc.last_id = 0;
                rc.messages.clear();
            }
        }
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
    // Corked delivery: one flush per batch of deliveries (host/cork.rs).
    let cork = ctx.state.borrow().cork.clone();
    glommio::spawn_local(cork.run()).detach();
    for (_peer, rx) in receivers.streams() {
        let c = ctx.clone();
        glommio::spawn_local(async move {
            while let Some(m) = rx.recv().await {
                c.dispatch(m);
            }
        })
        .detach();
    }
    if let Some(link) = cluster {
        glommio::spawn_local(cluster::run_inbound(ctx.clone(), link, me)).detach();
    }
    let services = tasks::Services::start(&ctx, me, commit_ready);
    tracing::debug!(shard = me, "shard running");
    let _ = ready.send(Ok(()));

    let open = Rc::new(OpenSockets::default());
    listener::accept_until(
        ctx.clone(),
        Rc::new(crate::conn::Doors { http }),
        listener,
        listener_fd,
        me,
        open.clone(),
        shared.shutdown.wait(),
    )
    .await;
    shutdown::stop_shard(&ctx, me, &open, arrival, services).await;
    tracing::debug!(shard = me, "shard stopped");
}
