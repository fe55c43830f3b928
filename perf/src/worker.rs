//! A worker process (`ringbearer-perf worker`): holds up to ~9,000 client connections
//! (this host caps open files at 20,000 per process) on one single-threaded tokio runtime,
//! and runs the commands the coordinator sends on stdin (`proto::Cmd`), one reply per line
//! on stdout.
//!
//! Subscribers check, per connection, that ids on their channel arrive as `last + 1`
//! (a jump counts the skipped ids as gaps, a repeat counts a duplicate) and record the
//! one-way latency from the publisher's stamp. Publishers pace sends on a 1 ms tick and
//! read their `published` replies in a separate task.
//!
//! The worker stops by itself when its stdin closes or when `Init::deadline_secs` passes.

use crate::client::{self, Minter, Ws};
use crate::procfs::mono_ns;
use crate::proto::{self, Cmd, Init, Reply, WorkerStats};
use crate::stats::{self, HistWire, WorkerCounters};
use crate::wire::{self, Op};
use anyhow::{Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// How often waits poll the subscriber slots.
const POLL: Duration = Duration::from_millis(2);
/// Most publishes written in one 1 ms tick by one publisher.
const BURST_MAX: u64 = 4096;

pub fn run() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve())
}

async fn serve() -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(l) = line else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut worker: Option<Rc<Worker>> = None;
    while let Some(line) = rx.recv().await {
        let cmd: Cmd = serde_json::from_str(&line).context("bad command")?;
        let exit = matches!(cmd, Cmd::Exit);
        let reply = match (cmd, &worker) {
            (Cmd::Init(init), _) => {
                let deadline = Duration::from_secs(init.deadline_secs);
                std::thread::spawn(move || {
                    std::thread::sleep(deadline);
                    eprintln!("ringbearer-perf worker: deadline reached, exiting");
                    std::process::exit(4);
                });
                match Worker::new(init) {
                    Ok(w) => {
                        worker = Some(Rc::new(w));
                        Reply {
                            ok: true,
                            ..Default::default()
                        }
                    }
                    Err(e) => Reply {
                        error: Some(e),
                        ..Default::default()
                    },
                }
            }
            (Cmd::Exit, _) => Reply {
                ok: true,
                ..Default::default()
            },
            (cmd, Some(w)) => w.clone().handle(cmd).await,
            (_, None) => Reply {
                error: Some("no Init yet".into()),
                ..Default::default()
            },
        };
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &reply)?;
        out.write_all(b"\n")?;
        out.flush()?;
        if exit {
            break;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubState {
    Idle,
    Connecting,
    Subscribed,
    Failed,
    /// The server ended the connection.
    Closed,
}

struct Sub {
    index: u32,
    /// The channel it is subscribed to (or will be, on connect).
    channel: Cell<u32>,
    token: String,
    /// The last id seen on `channel`.
    last_id: Cell<u64>,
    state: Cell<SubState>,
    slow: Cell<bool>,
    task: RefCell<Option<JoinHandle<()>>>,
    /// S8: the other channel and the last id seen there (0: never there).
    alt_channel: Cell<u32>,
    alt_last: Cell<u64>,
    /// S8: a switch asked of its read loop (`Some(last_ids)` of the run), and the wake-up.
    switch_req: RefCell<Option<Rc<Vec<u64>>>>,
    wake: Notify,
    /// S8: a switch in progress: sent at, the id it must reach, `subscribed` not yet in.
    switching: Cell<Option<(Instant, u64)>>,
    awaiting_subscribed: Cell<bool>,
}

struct Pub {
    index: u32,
    channels: Vec<u32>,
    sink: RefCell<Option<SplitSink<Ws, Message>>>,
    reader: RefCell<Option<JoinHandle<()>>>,
    sent: Cell<u64>,
    /// Replies received (`published` or `error`).
    answered: Cell<u64>,
    seq: Cell<u64>,
    last_ids: RefCell<HashMap<u32, u64>>,
    /// The server ended the connection: what it owes will never come.
    closed: Cell<bool>,
}

struct Worker {
    init: Init,
    tls: Option<TlsConnector>,
    minter: Minter,
    subs: Vec<Sub>,
    pubs: Vec<Rc<Pub>>,
    counters: RefCell<WorkerCounters>,
    latency: RefCell<Histogram<u64>>,
    ack: RefCell<Histogram<u64>>,
    /// Connection establishment per subscriber connection, µs (`WorkerStats::connect`).
    connect_hist: RefCell<Histogram<u64>>,
    /// S8: channel switch latency, µs.
    switch_hist: RefCell<Histogram<u64>>,
    /// S8: the next subscriber to switch (switches go round the subscribers).
    switch_cursor: Cell<usize>,
    /// (publisher, seq) → latency to the slowest subscriber so far, µs.
    last: RefCell<HashMap<(u32, u64), u64>>,
    connect_slots: Semaphore,
    slow_released: Cell<bool>,
    slow_release: Notify,
    pad: String,
}

fn done(elapsed: Duration, incomplete: u64) -> Reply {
    Reply {
        ok: incomplete == 0,
        elapsed_ms: elapsed.as_millis() as u64,
        incomplete,
        ..Default::default()
    }
}

impl Worker {
    fn new(init: Init) -> Result<Worker, String> {
        let minter = Minter::new(&init.secret);
        let tls = init
            .tls_ca_pem
            .as_deref()
            .map(client::tls_connector)
            .transpose()?;
        let (a, b) = proto::subscriber_range(&init, init.worker);
        let subs = (a..b)
            .map(|i| {
                let channel = proto::channel_of(&init, i);
                let w = proto::wedding(channel);
                let (alt, token) = if init.switcher {
                    let alt = proto::alt_channel_of(&init, i);
                    let w2 = proto::wedding(alt);
                    let t = minter.token(&format!("u-{i}"), "guest", &[w.as_str(), w2.as_str()]);
                    (alt, t)
                } else {
                    (
                        channel,
                        minter.token(&format!("u-{i}"), "guest", &[w.as_str()]),
                    )
                };
                Sub {
                    index: i,
                    channel: Cell::new(channel),
                    token,
                    last_id: Cell::new(0),
                    state: Cell::new(SubState::Idle),
                    slow: Cell::new(false),
                    task: RefCell::new(None),
                    alt_channel: Cell::new(alt),
                    alt_last: Cell::new(0),
                    switch_req: RefCell::new(None),
                    wake: Notify::new(),
                    switching: Cell::new(None),
                    awaiting_subscribed: Cell::new(false),
                }
            })
            .collect();
        let pubs = (init.worker..init.publishers)
            .step_by(init.workers as usize)
            .map(|j| {
                Rc::new(Pub {
                    index: j,
                    channels: proto::publisher_channels(&init, j),
                    sink: RefCell::new(None),
                    reader: RefCell::new(None),
                    sent: Cell::new(0),
                    answered: Cell::new(0),
                    seq: Cell::new(0),
                    last_ids: RefCell::new(HashMap::new()),
                    closed: Cell::new(false),
                })
            })
            .collect();
        // The stamp and the rest of the request take ~150 bytes of the payload budget.
        let pad = "x".repeat(init.payload_bytes.saturating_sub(60));
        Ok(Worker {
            connect_slots: Semaphore::new(init.connect_concurrency.max(1)),
            tls,
            minter,
            subs,
            pubs,
            counters: RefCell::new(WorkerCounters::default()),
            latency: RefCell::new(stats::new_histogram()),
            ack: RefCell::new(stats::new_histogram()),
            connect_hist: RefCell::new(stats::new_histogram()),
            switch_hist: RefCell::new(stats::new_histogram()),
            switch_cursor: Cell::new(0),
            last: RefCell::new(HashMap::new()),
            slow_released: Cell::new(false),
            slow_release: Notify::new(),
            pad,
            init,
        })
    }

    async fn handle(self: Rc<Self>, cmd: Cmd) -> Reply {
        let start = Instant::now();
        match cmd {
            Cmd::Init(_) | Cmd::Exit => unreachable!("handled by the caller"),
            Cmd::CreateChannels { timeout_ms } => {
                match self
                    .create_channels(Duration::from_millis(timeout_ms))
                    .await
                {
                    Ok(missing) => done(start.elapsed(), missing),
                    Err(e) => Reply {
                        error: Some(e),
                        ..Default::default()
                    },
                }
            }
            Cmd::ConnectPublishers { timeout_ms } => {
                let deadline = start + Duration::from_millis(timeout_ms);
                let mut failed = 0;
                for p in &self.pubs {
                    if !self.clone().connect_publisher(p.clone(), deadline).await {
                        failed += 1;
                    }
                }
                done(start.elapsed(), failed)
            }
            Cmd::Connect {
                resume,
                jitter_ms,
                timeout_ms,
            } => {
                let deadline = start + Duration::from_millis(timeout_ms);
                for (k, s) in self.subs.iter().enumerate() {
                    if matches!(s.state.get(), SubState::Subscribed | SubState::Connecting) {
                        continue;
                    }
                    s.state.set(SubState::Connecting);
                    let delay = if jitter_ms > 0 {
                        Duration::from_millis(rand::thread_rng().gen_range(0..jitter_ms))
                    } else {
                        Duration::ZERO
                    };
                    let h = tokio::task::spawn_local(
                        self.clone().subscriber(k, resume, delay, deadline),
                    );
                    *s.task.borrow_mut() = Some(h);
                }
                loop {
                    let pending = self
                        .subs
                        .iter()
                        .filter(|s| s.state.get() == SubState::Connecting)
                        .count();
                    if pending == 0 || Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(POLL).await;
                }
                let not_ok = self
                    .subs
                    .iter()
                    .filter(|s| s.state.get() != SubState::Subscribed)
                    .count();
                done(start.elapsed(), not_ok as u64)
            }
            Cmd::Publish {
                rate,
                duration_ms,
                per_channel,
                window,
                timeout_ms,
            } => {
                self.publish(rate, duration_ms, per_channel, window, timeout_ms)
                    .await
            }
            Cmd::Switch {
                rate,
                duration_ms,
                last_ids,
                timeout_ms,
            } => {
                self.switch(rate, duration_ms, Rc::new(last_ids), timeout_ms)
                    .await
            }
            Cmd::WaitCaughtUp {
                last_ids,
                timeout_ms,
            } => {
                let deadline = start + Duration::from_millis(timeout_ms);
                loop {
                    let (lagging, missing) = self.lagging(&last_ids);
                    if lagging == 0 || Instant::now() > deadline {
                        let mut r = done(start.elapsed(), lagging);
                        r.missing = missing;
                        return r;
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            Cmd::DropAll => {
                let handles: Vec<JoinHandle<()>> = self
                    .subs
                    .iter()
                    .filter_map(|s| {
                        s.state.set(SubState::Idle);
                        s.task.borrow_mut().take()
                    })
                    .collect();
                for h in &handles {
                    h.abort();
                }
                for h in handles {
                    let _ = h.await;
                }
                done(start.elapsed(), 0)
            }
            Cmd::SetSlow { percent } => {
                let stride = (100.0 / percent.max(0.01)).round().max(1.0) as u32;
                let mut n = 0;
                for s in &self.subs {
                    if s.index % stride == stride / 2 {
                        s.slow.set(true);
                        n += 1;
                    }
                }
                self.slow_released.set(false);
                let mut r = done(start.elapsed(), 0);
                r.missing = n;
                r
            }
            Cmd::ReleaseSlow {
                last_ids,
                timeout_ms,
            } => {
                self.slow_released.set(true);
                self.slow_release.notify_waiters();
                let deadline = start + Duration::from_millis(timeout_ms);
                // Slow connections read what is left; wait until they end or time runs out.
                loop {
                    let open = self
                        .subs
                        .iter()
                        .filter(|s| {
                            s.slow.get()
                                && s.state.get() == SubState::Subscribed
                                && s.last_id.get()
                                    < last_ids.get(s.channel.get() as usize).copied().unwrap_or(0)
                        })
                        .count();
                    if open == 0 || Instant::now() > deadline {
                        return done(start.elapsed(), 0);
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            Cmd::Stats { reset } => {
                let stats = WorkerStats {
                    counters: self.counters.borrow().clone(),
                    latency: HistWire::from_hist(&self.latency.borrow()),
                    ack: HistWire::from_hist(&self.ack.borrow()),
                    connect: HistWire::from_hist(&self.connect_hist.borrow()),
                    switch: HistWire::from_hist(&self.switch_hist.borrow()),
                    last: self
                        .last
                        .borrow()
                        .iter()
                        .map(|(&(p, s), &us)| (p, s, us))
                        .collect(),
                };
                if reset {
                    *self.counters.borrow_mut() = WorkerCounters::default();
                    self.latency.borrow_mut().reset();
                    self.ack.borrow_mut().reset();
                    self.connect_hist.borrow_mut().reset();
                    self.switch_hist.borrow_mut().reset();
                    self.last.borrow_mut().clear();
                }
                Reply {
                    ok: true,
                    stats: Some(stats),
                    ..Default::default()
                }
            }
        }
    }

    /// `(subscribers behind their target, messages they still miss)`; slow subscribers are
    /// left out.
    fn lagging(&self, last_ids: &[u64]) -> (u64, u64) {
        let mut lagging = 0;
        let mut missing = 0;
        for s in &self.subs {
            if s.slow.get() {
                continue;
            }
            let want = last_ids.get(s.channel.get() as usize).copied().unwrap_or(0);
            let have = s.last_id.get();
            if have < want {
                lagging += 1;
                missing += want - have;
            }
        }
        (lagging, missing)
    }

    fn source(&self, i: u32) -> Option<std::net::Ipv4Addr> {
        let src = &self.init.sources;
        (!src.is_empty()).then(|| src[i as usize % src.len()])
    }

    async fn create_channels(&self, timeout: Duration) -> Result<u64, String> {
        let mine: Vec<u32> = (self.init.worker..self.init.channels)
            .step_by(self.init.workers as usize)
            .collect();
        if mine.is_empty() {
            return Ok(0);
        }
        let token = self
            .minter
            .token(&format!("setup-{}", self.init.worker), "service", &["*"]);
        let mut ws = client::connect(
            self.init.addr,
            self.source(0),
            &token,
            64 << 10,
            self.tls.as_ref(),
        )
        .await?;
        let fut = async {
            for &c in &mine {
                ws.feed(Message::Text(
                    wire::create(c, &self.init.channel_type).into(),
                ))
                .await
                .map_err(|e| e.to_string())?;
            }
            ws.flush().await.map_err(|e| e.to_string())?;
            let mut answered = 0;
            while answered < mine.len() {
                let Some(m) = ws.next().await else {
                    return Err("setup connection ended".to_string());
                };
                if let Message::Text(t) = m.map_err(|e| e.to_string())? {
                    match wire::op(&t) {
                        Op::Created => answered += 1,
                        Op::Error => {
                            answered += 1;
                            let e: wire::ErrorFrame =
                                serde_json::from_str(&t).map_err(|e| e.to_string())?;
                            self.counters
                                .borrow_mut()
                                .error(&e.code, || format!("create: {}", e.message));
                        }
                        _ => {}
                    }
                }
            }
            Ok::<_, String>(())
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r?,
            Err(_) => return Err("creating channels timed out".into()),
        }
        let _ = ws.close(None).await;
        Ok(0)
    }

    async fn connect_publisher(self: Rc<Self>, p: Rc<Pub>, deadline: Instant) -> bool {
        let token = self
            .minter
            .token(&format!("p-{}", p.index), "service", &["*"]);
        loop {
            match client::connect(
                self.init.addr,
                self.source(p.index),
                &token,
                256 << 10,
                self.tls.as_ref(),
            )
            .await
            {
                Ok(ws) => {
                    let (sink, stream) = ws.split();
                    *p.sink.borrow_mut() = Some(sink);
                    let h =
                        tokio::task::spawn_local(self.clone().publisher_reader(p.clone(), stream));
                    *p.reader.borrow_mut() = Some(h);
                    return true;
                }
                Err(e) => {
                    let mut c = self.counters.borrow_mut();
                    c.connect_errors += 1;
                    c.error("PUBLISHER_CONNECT", || format!("publisher connect: {e}"));
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn publisher_reader(self: Rc<Self>, p: Rc<Pub>, stream: SplitStream<Ws>) {
        self.read_replies(&p, stream).await;
        p.closed.set(true);
    }

    async fn read_replies(&self, p: &Pub, mut stream: SplitStream<Ws>) {
        while let Some(m) = stream.next().await {
            let t = match m {
                Ok(Message::Text(t)) => t,
                Ok(Message::Close(f)) => {
                    let code = f.map(|f| u16::from(f.code).to_string());
                    self.counters.borrow_mut().error("PUBLISHER_CLOSED", || {
                        format!("publisher {} closed by server: {code:?}", p.index)
                    });
                    return;
                }
                Ok(_) => continue,
                Err(e) => {
                    self.counters
                        .borrow_mut()
                        .error("PUBLISHER_CLOSED", || format!("publisher read: {e}"));
                    return;
                }
            };
            match wire::op(&t) {
                Op::Published => {
                    p.answered.set(p.answered.get() + 1);
                    let Ok(f) = serde_json::from_str::<wire::PublishedFrame>(&t) else {
                        continue;
                    };
                    self.counters.borrow_mut().acked += 1;
                    if let Some((sent_ns, c)) = f.r#ref.and_then(wire::parse_publish_ref) {
                        let us = mono_ns().saturating_sub(sent_ns) / 1000;
                        stats::record(&mut self.ack.borrow_mut(), us);
                        let mut l = p.last_ids.borrow_mut();
                        let e = l.entry(c).or_insert(0);
                        *e = (*e).max(f.id);
                    }
                }
                Op::Error => {
                    p.answered.set(p.answered.get() + 1);
                    let e: wire::ErrorFrame =
                        serde_json::from_str(&t).unwrap_or(wire::ErrorFrame {
                            r#ref: None,
                            code: "UNPARSED".into(),
                            message: t.to_string(),
                        });
                    self.counters.borrow_mut().error(&e.code, || {
                        format!("publish: {} ({:?})", e.message, e.r#ref)
                    });
                }
                _ => {}
            }
        }
    }

    async fn publish(
        self: Rc<Self>,
        rate: f64,
        duration_ms: u64,
        per_channel: u32,
        window: u32,
        timeout_ms: u64,
    ) -> Reply {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(timeout_ms);
        let per_pub = if self.init.publishers > 0 {
            rate / self.init.publishers as f64
        } else {
            0.0
        };
        let mut tasks = Vec::new();
        for p in &self.pubs {
            tasks.push(tokio::task::spawn_local(self.clone().publish_one(
                p.clone(),
                per_pub,
                Duration::from_millis(duration_ms),
                per_channel,
                window as u64,
                deadline,
            )));
        }
        for t in tasks {
            let _ = t.await;
        }
        // Wait for every reply.
        let mut unanswered;
        loop {
            unanswered = self
                .pubs
                .iter()
                .map(|p| p.sent.get().saturating_sub(p.answered.get()))
                .sum::<u64>();
            let waiting = self
                .pubs
                .iter()
                .any(|p| !p.closed.get() && p.sent.get() > p.answered.get());
            if !waiting || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let mut r = done(start.elapsed(), unanswered);
        for p in &self.pubs {
            r.last_ids
                .extend(p.last_ids.borrow().iter().map(|(&c, &id)| (c, id)));
        }
        r
    }

    async fn publish_one(
        self: Rc<Self>,
        p: Rc<Pub>,
        rate: f64,
        duration: Duration,
        per_channel: u32,
        window: u64,
        deadline: Instant,
    ) {
        let Some(mut sink) = p.sink.borrow_mut().take() else {
            return;
        };
        if p.channels.is_empty() {
            *p.sink.borrow_mut() = Some(sink);
            return;
        }
        let total = if per_channel > 0 {
            per_channel as u64 * p.channels.len() as u64
        } else {
            u64::MAX
        };
        let start = Instant::now();
        let mut sent_here = 0u64;
        let mut rr = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let elapsed = start.elapsed();
            if (per_channel == 0 && elapsed >= duration)
                || sent_here >= total
                || p.closed.get()
                || Instant::now() > deadline
            {
                break;
            }
            let due = if rate > 0.0 {
                (rate * elapsed.as_secs_f64()) as u64
            } else {
                u64::MAX
            };
            let mut n = due.saturating_sub(sent_here).min(total - sent_here);
            let in_flight = p.sent.get().saturating_sub(p.answered.get());
            let room = window.saturating_sub(in_flight);
            if n > room {
                if rate > 0.0 {
                    self.counters.borrow_mut().window_stalls += 1;
                }
                n = room;
            }
            n = n.min(BURST_MAX);
            if n == 0 {
                continue;
            }
            let mut failed = false;
            for _ in 0..n {
                let c = p.channels[rr % p.channels.len()];
                rr += 1;
                let seq = p.seq.get() + 1;
                p.seq.set(seq);
                let text = wire::publish(c, p.index, seq, mono_ns(), &self.pad);
                if sink.feed(Message::Text(text.into())).await.is_err() {
                    failed = true;
                    break;
                }
                p.sent.set(p.sent.get() + 1);
                sent_here += 1;
            }
            self.counters.borrow_mut().published += n;
            if failed || sink.flush().await.is_err() {
                self.counters
                    .borrow_mut()
                    .error("PUBLISHER_WRITE", || "publisher write failed".into());
                break;
            }
        }
        *p.sink.borrow_mut() = Some(sink);
    }

    /// One subscriber: connect, upgrade, subscribe (retrying failed attempts until
    /// `deadline`), then read until the server ends the connection or the task is aborted.
    async fn subscriber(
        self: Rc<Self>,
        k: usize,
        resume: bool,
        delay: Duration,
        deadline: Instant,
    ) {
        tokio::time::sleep(delay).await;
        let s = &self.subs[k];
        let mut first_attempt = None;
        let ws = loop {
            let permit = self.connect_slots.acquire().await;
            let started = *first_attempt.get_or_insert_with(Instant::now);
            match self.attach(s, resume).await {
                Ok(ws) => {
                    drop(permit);
                    let us = started.elapsed().as_micros() as u64;
                    stats::record(&mut self.connect_hist.borrow_mut(), us);
                    break ws;
                }
                Err(Attach::Refused) => {
                    s.state.set(SubState::Failed);
                    return;
                }
                Err(Attach::Failed(e)) => {
                    drop(permit);
                    let mut c = self.counters.borrow_mut();
                    c.connect_errors += 1;
                    if c.error_samples.len() < 8 {
                        c.error_samples.push(format!("subscriber {}: {e}", s.index));
                    }
                }
            }
            if Instant::now() > deadline {
                s.state.set(SubState::Failed);
                return;
            }
            let backoff = rand::thread_rng().gen_range(100..300);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        };
        s.state.set(SubState::Subscribed);
        if self.init.switcher {
            self.switch_loop(s, ws).await;
        } else {
            self.read_loop(s, ws).await;
        }
    }

    async fn attach(&self, s: &Sub, resume: bool) -> Result<Ws, Attach> {
        let mut ws = client::connect(
            self.init.addr,
            self.source(s.index),
            &s.token,
            0,
            self.tls.as_ref(),
        )
        .await
        .map_err(Attach::Failed)?;
        let last_seen = resume.then(|| s.last_id.get());
        ws.send(Message::Text(
            wire::subscribe(s.channel.get(), last_seen).into(),
        ))
        .await
        .map_err(|e| Attach::Failed(format!("send subscribe: {e}")))?;
        let fut = async {
            while let Some(m) = ws.next().await {
                let t = match m {
                    Ok(Message::Text(t)) => t,
                    Ok(Message::Close(f)) => {
                        return Err(Attach::Failed(format!("closed before subscribed: {f:?}")))
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(Attach::Failed(format!("read: {e}"))),
                };
                match wire::op(&t) {
                    Op::Subscribed => {
                        let f: wire::SubscribedFrame = serde_json::from_str(&t)
                            .map_err(|e| Attach::Failed(format!("subscribed: {e}")))?;
                        let mut c = self.counters.borrow_mut();
                        c.subscribed += 1;
                        if matches!(ws.get_ref(), client::Stream::Tls(_)) {
                            c.tls_subscribed += 1;
                        }
                        if !f.recovered {
                            c.not_recovered += 1;
                        }
                        drop(c);
                        for m in &f.messages {
                            self.on_message(s, m, false);
                        }
                        return Ok(());
                    }
                    Op::Error => {
                        let e: wire::ErrorFrame =
                            serde_json::from_str(&t).unwrap_or(wire::ErrorFrame {
                                r#ref: None,
                                code: "UNPARSED".into(),
                                message: t.to_string(),
                            });
                        let mut c = self.counters.borrow_mut();
                        c.subscribe_errors += 1;
                        c.error(&e.code, || format!("subscribe: {}", e.message));
                        return Err(Attach::Refused);
                    }
                    _ => {}
                }
            }
            Err(Attach::Failed("ended before subscribed".into()))
        };
        match tokio::time::timeout(client::CONNECT_TIMEOUT, fut).await {
            Ok(Ok(())) => Ok(ws),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Attach::Failed("no subscribed reply in time".into())),
        }
    }

    async fn read_loop(&self, s: &Sub, mut ws: Ws) {
        let mut slow_seen = false;
        let code = loop {
            if s.slow.get() && !self.slow_released.get() {
                slow_seen = true;
                loop {
                    let n = self.slow_release.notified();
                    if self.slow_released.get() {
                        break;
                    }
                    n.await;
                }
            }
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    if slow_seen {
                        // Released: no accounting, only how far it got.
                        if let Ok(m) = serde_json::from_str::<wire::MessageFrame>(&t) {
                            s.last_id.set(s.last_id.get().max(m.id));
                        }
                        continue;
                    }
                    match wire::op(&t) {
                        Op::Message => match serde_json::from_str::<wire::MessageFrame>(&t) {
                            Ok(m) => self.on_message(s, &m, true),
                            Err(e) => self
                                .counters
                                .borrow_mut()
                                .error("UNPARSED", || format!("message: {e}")),
                        },
                        Op::Error => {
                            let e: wire::ErrorFrame =
                                serde_json::from_str(&t).unwrap_or(wire::ErrorFrame {
                                    r#ref: None,
                                    code: "UNPARSED".into(),
                                    message: t.to_string(),
                                });
                            self.counters
                                .borrow_mut()
                                .error(&e.code, || format!("subscriber: {}", e.message));
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    break f
                        .map(|f| u16::from(f.code).to_string())
                        .unwrap_or_else(|| "none".into())
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break "eof".to_string(),
            }
        };
        s.state.set(SubState::Closed);
        let key = if slow_seen {
            format!("slow:{code}")
        } else {
            code
        };
        *self.counters.borrow_mut().closed.entry(key).or_default() += 1;
    }

    /// S8: asks subscribers, round the worker's subscribers from where the last command
    /// stopped, to switch channel at this worker's share of `rate` (all at once when 0), each
    /// at most once; then waits for every switch asked (see `Cmd::Switch`).
    async fn switch(
        self: Rc<Self>,
        rate: f64,
        duration_ms: u64,
        last_ids: Rc<Vec<u64>>,
        timeout_ms: u64,
    ) -> Reply {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(timeout_ms);
        if !self.init.switcher {
            return Reply {
                error: Some("switch: this run's subscribers have no second channel".into()),
                ..Default::default()
            };
        }
        let n_subs = self.subs.len();
        if n_subs == 0 {
            return done(start.elapsed(), 0);
        }
        let per_worker = rate / self.init.workers as f64;
        let count = if per_worker > 0.0 {
            ((per_worker * duration_ms as f64 / 1000.0).round() as usize).min(n_subs)
        } else {
            n_subs
        };
        let cursor = self.switch_cursor.get();
        self.switch_cursor.set((cursor + count) % n_subs);
        let mut asked = Vec::with_capacity(count);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut k = 0;
        while k < count {
            let due = if per_worker > 0.0 {
                tick.tick().await;
                ((per_worker * start.elapsed().as_secs_f64()) as usize).min(count)
            } else {
                count
            };
            while k < due {
                let i = (cursor + k) % n_subs;
                k += 1;
                let s = &self.subs[i];
                if s.state.get() != SubState::Subscribed || s.switching.get().is_some() {
                    continue;
                }
                *s.switch_req.borrow_mut() = Some(last_ids.clone());
                s.wake.notify_one();
                asked.push(i);
            }
        }
        loop {
            let pending = |s: &Sub| s.switch_req.borrow().is_some() || s.switching.get().is_some();
            let open = asked.iter().filter(|&&i| pending(&self.subs[i])).count();
            if open == 0 || Instant::now() > deadline {
                let mut missing = 0;
                for &i in &asked {
                    let s = &self.subs[i];
                    if s.switch_req.borrow().is_some() {
                        let want = last_ids.get(s.alt_channel.get() as usize).copied();
                        missing += want.unwrap_or(0).saturating_sub(s.alt_last.get());
                    } else if let Some((_, target)) = s.switching.get() {
                        missing += target.saturating_sub(s.last_id.get());
                    }
                }
                let mut r = done(start.elapsed(), open as u64);
                r.missing = missing;
                return r;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// S8's read loop: `read_loop`'s accounting (no slow consumers here), plus the channel
    /// switches asked through `Sub::switch_req`, and `subscribed` replies read as recovery.
    async fn switch_loop(&self, s: &Sub, mut ws: Ws) {
        enum Ev {
            Switch,
            Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
        }
        let code = loop {
            let ev = tokio::select! {
                biased;
                _ = s.wake.notified() => Ev::Switch,
                m = ws.next() => Ev::Frame(m),
            };
            let m = match ev {
                Ev::Switch => {
                    let Some(last_ids) = s.switch_req.borrow_mut().take() else {
                        continue;
                    };
                    if let Err(e) = self.start_switch(s, &mut ws, &last_ids).await {
                        s.switching.set(None);
                        self.counters
                            .borrow_mut()
                            .error("SWITCH_WRITE", || format!("switch: {e}"));
                        break "eof".to_string();
                    }
                    continue;
                }
                Ev::Frame(m) => m,
            };
            match m {
                Some(Ok(Message::Text(t))) => match wire::op(&t) {
                    Op::Message => match serde_json::from_str::<wire::MessageFrame>(&t) {
                        Ok(m) => {
                            self.on_message(s, &m, true);
                            self.switch_progress(s);
                        }
                        Err(e) => self
                            .counters
                            .borrow_mut()
                            .error("UNPARSED", || format!("message: {e}")),
                    },
                    Op::Subscribed => {
                        let Ok(f) = serde_json::from_str::<wire::SubscribedFrame>(&t) else {
                            self.counters
                                .borrow_mut()
                                .error("UNPARSED", || "subscribed".to_string());
                            continue;
                        };
                        if proto::channel_index(f.channel) != Some(s.channel.get()) {
                            continue;
                        }
                        let mut c = self.counters.borrow_mut();
                        c.subscribed += 1;
                        if !f.recovered {
                            c.not_recovered += 1;
                        }
                        drop(c);
                        for m in &f.messages {
                            self.on_message(s, m, false);
                        }
                        s.awaiting_subscribed.set(false);
                        self.switch_progress(s);
                    }
                    Op::Error => {
                        let e: wire::ErrorFrame =
                            serde_json::from_str(&t).unwrap_or(wire::ErrorFrame {
                                r#ref: None,
                                code: "UNPARSED".into(),
                                message: t.to_string(),
                            });
                        let mut c = self.counters.borrow_mut();
                        if s.switching.get().is_some() {
                            // The switch's unsubscribe or subscribe was refused: it ends here,
                            // unfinished (counted, and its latency not recorded).
                            c.subscribe_errors += 1;
                            s.switching.set(None);
                            s.awaiting_subscribed.set(false);
                        }
                        c.error(&e.code, || format!("switching subscriber: {}", e.message));
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(f))) => {
                    break f
                        .map(|f| u16::from(f.code).to_string())
                        .unwrap_or_else(|| "none".into())
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break "eof".to_string(),
            }
        };
        s.state.set(SubState::Closed);
        s.switching.set(None);
        *self.counters.borrow_mut().closed.entry(code).or_default() += 1;
    }

    /// Swaps the subscriber's current and other channel and sends `unsubscribe` for the old
    /// one and, pipelined, `subscribe` with its position on the new one; the clock starts
    /// before the first byte goes out.
    async fn start_switch(&self, s: &Sub, ws: &mut Ws, last_ids: &[u64]) -> Result<(), String> {
        let (old, new) = (s.channel.get(), s.alt_channel.get());
        let (old_last, new_last) = (s.last_id.get(), s.alt_last.get());
        s.channel.set(new);
        s.alt_channel.set(old);
        s.last_id.set(new_last);
        s.alt_last.set(old_last);
        let target = last_ids.get(new as usize).copied().unwrap_or(0);
        s.switching.set(Some((Instant::now(), target)));
        s.awaiting_subscribed.set(true);
        ws.feed(Message::Text(wire::unsubscribe(old).into()))
            .await
            .map_err(|e| e.to_string())?;
        ws.feed(Message::Text(wire::subscribe(new, Some(new_last)).into()))
            .await
            .map_err(|e| e.to_string())?;
        ws.flush().await.map_err(|e| e.to_string())
    }

    /// Ends a switch once its `subscribed` is in and every message up to its target too.
    fn switch_progress(&self, s: &Sub) {
        let Some((at, target)) = s.switching.get() else {
            return;
        };
        if !s.awaiting_subscribed.get() && s.last_id.get() >= target {
            s.switching.set(None);
            let us = at.elapsed().as_micros() as u64;
            stats::record(&mut self.switch_hist.borrow_mut(), us);
        }
    }

    fn on_message(&self, s: &Sub, m: &wire::MessageFrame, live: bool) {
        let mut c = self.counters.borrow_mut();
        if proto::channel_index(m.channel) != Some(s.channel.get()) {
            c.foreign += 1;
            return;
        }
        let last = s.last_id.get();
        if m.id <= last {
            c.duplicates += 1;
            return;
        }
        c.gaps += m.id - last - 1;
        s.last_id.set(m.id);
        if !live {
            c.replayed += 1;
            return;
        }
        c.deliveries += 1;
        drop(c);
        if let Some(st) = m.payload {
            let us = mono_ns().saturating_sub(st.t) / 1000;
            stats::record(&mut self.latency.borrow_mut(), us);
            if self.init.track_last {
                let mut l = self.last.borrow_mut();
                let e = l.entry((st.p, st.s)).or_insert(0);
                *e = (*e).max(us);
            }
        }
    }
}

enum Attach {
    /// The server refused the subscription: no retry.
    Refused,
    /// Connect, upgrade or reply failed: retry.
    Failed(String),
}
