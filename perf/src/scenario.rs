//! The scenarios S1–S8 of the performance issues, as sequences of worker commands, and the
//! measurement around each measured step (a [`Phase`]): server CPU time (utime + stime)
//! and RSS before and after (RSS also sampled every 100 ms for its peak), the kernel's
//! listen-queue counters, the workers' counters and merged histograms.
//!
//! Every wait is bounded (`--step-timeout-secs`), and the run as a whole by `--max-secs`.

use crate::coord::{ServerKind, ServerProc, ServerSpec, Workers};
use crate::opts::{Common, Params, Scenario};
use crate::procfs::{self, ListenCounters};
use crate::proto::{Cmd, Init, Reply, WorkerStats};
use crate::stats::{self, LatencySummary, WorkerCounters};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One measured step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    pub name: String,
    /// Target publish rate of the step, messages/s (0: none or as fast as possible).
    pub rate: f64,
    pub wall_s: f64,
    pub server_cpu_s: f64,
    /// Server CPU over the step, percent of one core.
    pub server_cpu_pct: f64,
    pub generator_cpu_s: f64,
    pub server_rss_start_bytes: u64,
    pub server_rss_end_bytes: u64,
    pub server_rss_peak_bytes: u64,
    pub server_fds_end: u64,
    /// Connections the step is about (for memory per connection).
    pub connections: u64,
    /// (RSS end − RSS start) / connections, when the step opened them.
    pub rss_per_connection_bytes: Option<f64>,
    /// Messages delivered to subscribers: live ones plus those replayed on resume
    /// (`counters.replayed`). Latency is measured on live ones only.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub publishes_per_s: f64,
    /// Server CPU time per delivered message (the primary figure), ns.
    pub server_cpu_ns_per_delivery: Option<f64>,
    /// Server CPU time per acknowledged publish, ns.
    pub server_cpu_ns_per_publish: Option<f64>,
    pub latency: LatencySummary,
    pub ack_latency: LatencySummary,
    /// Per message, the latency to its slowest subscriber (S2).
    pub last_subscriber_latency: Option<LatencySummary>,
    /// Per subscriber connection that came up in the step: connection establishment (TCP
    /// connect, TLS with `--tls`, upgrade, `subscribe`, up to `subscribed`; see
    /// `proto::WorkerStats::connect`).
    pub connect_latency: Option<LatencySummary>,
    /// S8: per channel switch, `unsubscribe` sent → last recovered message in.
    pub switch_latency: Option<LatencySummary>,
    pub listen_overflows: u64,
    pub listen_drops: u64,
    /// Items not finished within the step's timeout (see the step's notes).
    pub incomplete: u64,
    /// Messages still missing at the end (loss at the tail), summed over subscribers.
    pub missing: u64,
    pub counters: WorkerCounters,
    pub notes: Vec<String>,
}

impl Phase {
    pub fn errors(&self) -> u64 {
        self.counters.total_errors()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// The scenario's name, with `-tls` for `--tls` runs.
    pub scenario: String,
    pub server: ServerKind,
    /// Every connection spoke TLS (`--tls`).
    pub tls: bool,
    pub command_line: String,
    pub started_unix_s: u64,
    pub host: Host,
    pub params: Params,
    /// The server's `storage.durability` for this run (ringbearer only).
    pub durability: String,
    /// Where the server's data directory was (its filesystem decides what a sync costs).
    pub data_dir_fs: String,
    pub phases: Vec<Phase>,
    /// The targets, each with the measured value and whether it is met.
    pub targets: Vec<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub cpus: usize,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub kernel: String,
}

struct Snap {
    at: Instant,
    server_cpu_ns: u64,
    server_rss: u64,
    gen_cpu_ns: u64,
    listen: ListenCounters,
}

/// A run in progress: server, workers and the layout they share.
pub struct Env {
    // Field order is drop order: workers close their connections before the server stops.
    workers: Workers,
    server: ServerProc,
    pub params: Params,
    pub opts: Common,
    pub kind: ServerKind,
    step: Duration,
    deadline: Instant,
    /// Highest id per channel published so far.
    pub last_ids: Vec<u64>,
    watch: Arc<Watch>,
}

/// The server's RSS, sampled every 100 ms for the whole run: the peak of the current step,
/// and a guard that kills the server when it, or the workers together, pass
/// `--max-server-rss-mib` / `--max-generator-rss-mib` (a quadratic path must not take the
/// shared host's memory; with the server gone every step fails at once).
struct Watch {
    peak: AtomicU64,
    /// Why the server was killed, if it was.
    killed: std::sync::Mutex<Option<String>>,
    stop: AtomicBool,
}

impl Watch {
    fn start(server: u32, workers: Vec<u32>, server_max: u64, workers_max: u64) -> Arc<Watch> {
        let w = Arc::new(Watch {
            peak: AtomicU64::new(0),
            killed: std::sync::Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let w2 = w.clone();
        std::thread::spawn(move || {
            while !w2.stop.load(Ordering::Relaxed) {
                let rss = procfs::rss_bytes(server).unwrap_or(0);
                w2.peak.fetch_max(rss, Ordering::Relaxed);
                let gen: u64 = workers
                    .iter()
                    .map(|&p| procfs::rss_bytes(p).unwrap_or(0))
                    .sum();
                let why = if rss > server_max {
                    Some(format!(
                        "the server's RSS reached {} MiB (--max-server-rss-mib {})",
                        rss >> 20,
                        server_max >> 20
                    ))
                } else if gen > workers_max {
                    Some(format!(
                        "the workers' RSS reached {} MiB together (--max-generator-rss-mib {})",
                        gen >> 20,
                        workers_max >> 20
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    let mut k = w2.killed.lock().expect("not poisoned");
                    if k.is_none() {
                        eprintln!("{why}: killing the server");
                        *k = Some(why);
                        // SAFETY: signalling the server we started, by pid.
                        unsafe { libc::kill(server as i32, libc::SIGKILL) };
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        w
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.watch.stop.store(true, Ordering::Relaxed);
    }
}

impl Env {
    pub fn start(
        opts: &Common,
        kind: ServerKind,
        params: Params,
        scenario: Scenario,
    ) -> Result<Env> {
        std::fs::create_dir_all(&opts.out)?;
        let server = ServerProc::start(&ServerSpec {
            kind,
            bin: &opts.server_bin,
            shards: opts.shards,
            heartbeat_ms: opts.heartbeat_ms,
            durability: opts.durability.clone(),
            tls: opts.tls,
            log: opts.out.join(format!(
                "{}-{}.server.log",
                scenario.stem(opts.tls),
                kind.name()
            )),
        })?;
        let mut workers = Workers::spawn(params.workers)?;
        let init = Init {
            addr: server.addr,
            secret: server.secret.clone(),
            sources: opts.sources()?,
            worker: 0,
            workers: params.workers,
            subscribers: params.connections,
            channels: params.channels,
            publishers: params.publishers,
            channel_type: params.channel_type.to_owned(),
            payload_bytes: opts.payload_bytes,
            connect_concurrency: opts.connect_concurrency,
            track_last: scenario == Scenario::S2,
            deadline_secs: opts.max_secs + 60,
            tls_ca_pem: server.ca_pem.clone(),
            switcher: scenario == Scenario::S8,
        };
        workers.call(
            |w| {
                Cmd::Init(Init {
                    worker: w,
                    ..init.clone()
                })
            },
            Duration::from_secs(120),
        )?;
        let watch = Watch::start(
            server.pid,
            workers.pids(),
            opts.max_server_rss_mib << 20,
            opts.max_generator_rss_mib << 20,
        );
        Ok(Env {
            watch,
            workers,
            server,
            last_ids: vec![0; params.channels as usize],
            params,
            opts: opts.clone(),
            kind,
            step: Duration::from_secs(opts.step_timeout_secs),
            deadline: Instant::now() + Duration::from_secs(opts.max_secs),
        })
    }

    fn snap(&self) -> Result<Snap> {
        Ok(Snap {
            at: Instant::now(),
            server_cpu_ns: procfs::cpu_ns(self.server.pid)?,
            server_rss: procfs::rss_bytes(self.server.pid)?,
            gen_cpu_ns: self
                .workers
                .pids()
                .iter()
                .map(|&p| procfs::cpu_ns(p).unwrap_or(0))
                .sum(),
            listen: procfs::listen_counters()?,
        })
    }

    /// Sends `cmd` to every worker, within the step timeout (and the run's deadline).
    pub fn call(&mut self, cmd: impl Fn(u32) -> Cmd) -> Result<Vec<Reply>> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("the run passed --max-secs ({} s)", self.opts.max_secs);
        }
        self.check_watch()?;
        if !self.server.is_running() {
            bail!("the server exited");
        }
        self.workers
            .call(cmd, (self.step + Duration::from_secs(30)).min(left))
    }

    fn check_watch(&self) -> Result<()> {
        if let Some(why) = self.watch.killed.lock().expect("not poisoned").as_ref() {
            bail!("{why}: the server was killed");
        }
        Ok(())
    }

    fn step_ms(&self) -> u64 {
        self.step.as_millis() as u64
    }

    pub fn create_channels(&mut self) -> Result<()> {
        let t = self.step_ms();
        self.call(|_| Cmd::CreateChannels { timeout_ms: t })?;
        let t = self.step_ms();
        let r = self.call(|_| Cmd::ConnectPublishers { timeout_ms: t })?;
        let failed: u64 = r.iter().map(|r| r.incomplete).sum();
        if failed > 0 {
            bail!("{failed} publishers could not connect");
        }
        Ok(())
    }

    /// Connect (or reconnect with resume) every subscriber; `(incomplete, wall)`.
    pub fn connect(&mut self, resume: bool, jitter_ms: u64) -> Result<(u64, Duration)> {
        let t = self.step_ms();
        let start = Instant::now();
        let r = self.call(|_| Cmd::Connect {
            resume,
            jitter_ms,
            timeout_ms: t,
        })?;
        Ok((r.iter().map(|r| r.incomplete).sum(), start.elapsed()))
    }

    /// Publish and record the ids the server assigned. `(unanswered, wall)`.
    pub fn publish(
        &mut self,
        rate: f64,
        duration: Duration,
        per_channel: u32,
    ) -> Result<(u64, Duration)> {
        let t = self.step_ms() + duration.as_millis() as u64;
        let window = self.opts.window;
        let start = Instant::now();
        let r = self.call(|_| Cmd::Publish {
            rate,
            duration_ms: duration.as_millis() as u64,
            per_channel,
            window,
            timeout_ms: t,
        })?;
        for reply in &r {
            for &(c, id) in &reply.last_ids {
                if let Some(l) = self.last_ids.get_mut(c as usize) {
                    *l = (*l).max(id);
                }
            }
        }
        Ok((r.iter().map(|r| r.incomplete).sum(), start.elapsed()))
    }

    /// Wait until every live subscriber saw the last published id of its channel.
    /// `(lagging subscribers, missing messages, wall)`.
    pub fn wait_caught_up(&mut self, timeout: Duration) -> Result<(u64, u64, Duration)> {
        let last_ids = self.last_ids.clone();
        let start = Instant::now();
        let r = self.call(|_| Cmd::WaitCaughtUp {
            last_ids: last_ids.clone(),
            timeout_ms: timeout.as_millis() as u64,
        })?;
        Ok((
            r.iter().map(|r| r.incomplete).sum(),
            r.iter().map(|r| r.missing).sum(),
            start.elapsed(),
        ))
    }

    pub fn drop_all(&mut self) -> Result<()> {
        self.call(|_| Cmd::DropAll)?;
        Ok(())
    }

    fn stats(&mut self) -> Result<Vec<WorkerStats>> {
        Ok(self
            .call(|_| Cmd::Stats { reset: true })?
            .into_iter()
            .filter_map(|r| r.stats)
            .collect())
    }

    /// Runs `body` as one measured step named `name`.
    pub fn phase(
        &mut self,
        name: &str,
        rate: f64,
        body: impl FnOnce(&mut Env, &mut Phase) -> Result<()>,
    ) -> Result<Phase> {
        self.stats()?; // reset
        let before = self.snap()?;
        self.watch.peak.store(before.server_rss, Ordering::Relaxed);
        let mut p = Phase {
            name: name.to_owned(),
            rate,
            ..Default::default()
        };
        let outcome = body(self, &mut p);
        self.check_watch()?;
        outcome?;
        let after = self.snap()?;
        let ws = self.stats()?;
        let mut lat = stats::new_histogram();
        let mut ack = stats::new_histogram();
        let mut connect = stats::new_histogram();
        let mut switch = stats::new_histogram();
        let mut last: HashMap<(u32, u64), u64> = HashMap::new();
        for s in &ws {
            p.counters.merge(&s.counters);
            s.latency.add_to(&mut lat);
            s.ack.add_to(&mut ack);
            s.connect.add_to(&mut connect);
            s.switch.add_to(&mut switch);
            for &(pb, seq, us) in &s.last {
                let e = last.entry((pb, seq)).or_insert(0);
                *e = (*e).max(us);
            }
        }
        let wall = after.at - before.at;
        p.wall_s = wall.as_secs_f64();
        p.server_cpu_s = (after.server_cpu_ns - before.server_cpu_ns) as f64 / 1e9;
        p.server_cpu_pct = 100.0 * p.server_cpu_s / p.wall_s.max(1e-9);
        p.generator_cpu_s = after.gen_cpu_ns.saturating_sub(before.gen_cpu_ns) as f64 / 1e9;
        p.server_rss_start_bytes = before.server_rss;
        p.server_rss_end_bytes = after.server_rss;
        p.server_rss_peak_bytes = self
            .watch
            .peak
            .load(Ordering::Relaxed)
            .max(after.server_rss);
        p.server_fds_end = procfs::open_fds(self.server.pid);
        // Live deliveries plus those replayed on resume (S4, S5): every message handed over.
        p.deliveries = p.counters.deliveries + p.counters.replayed;
        p.deliveries_per_s = p.deliveries as f64 / p.wall_s.max(1e-9);
        p.publishes_per_s = p.counters.acked as f64 / p.wall_s.max(1e-9);
        let cpu_ns = (after.server_cpu_ns - before.server_cpu_ns) as f64;
        if p.deliveries > 0 {
            p.server_cpu_ns_per_delivery = Some(cpu_ns / p.deliveries as f64);
        }
        if p.counters.acked > 0 {
            p.server_cpu_ns_per_publish = Some(cpu_ns / p.counters.acked as f64);
        }
        p.latency = LatencySummary::of(&lat);
        p.ack_latency = LatencySummary::of(&ack);
        p.connect_latency = (!connect.is_empty()).then(|| LatencySummary::of(&connect));
        p.switch_latency = (!switch.is_empty()).then(|| LatencySummary::of(&switch));
        if !last.is_empty() {
            let mut h = stats::new_histogram();
            for &us in last.values() {
                stats::record(&mut h, us);
            }
            p.last_subscriber_latency = Some(LatencySummary::of(&h));
        }
        p.listen_overflows = after
            .listen
            .overflows
            .saturating_sub(before.listen.overflows);
        p.listen_drops = after.listen.drops.saturating_sub(before.listen.drops);
        eprintln!("{}", crate::report::phase_line(&p));
        Ok(p)
    }
}

/// Runs one scenario against one server; the result holds what was measured even when a
/// step failed (`error`).
pub fn run(
    opts: &Common,
    scenario: Scenario,
    kind: ServerKind,
    command_line: &str,
) -> Result<RunResult> {
    let params = opts.params(scenario)?;
    let mut result = RunResult {
        scenario: scenario.stem(opts.tls),
        server: kind,
        tls: opts.tls,
        command_line: command_line.to_owned(),
        started_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        host: Host {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            loadavg_start: procfs::loadavg(),
            loadavg_end: String::new(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        },
        params: params.clone(),
        durability: match kind {
            ServerKind::Baseline => "none (baseline keeps everything in memory)".into(),
            ServerKind::Ringbearer => opts
                .durability
                .clone()
                .unwrap_or_else(|| "server default (fsync)".into()),
        },
        data_dir_fs: procfs::fs_of(&std::env::temp_dir()),
        phases: Vec::new(),
        targets: Vec::new(),
        error: None,
    };
    eprintln!(
        "== {} against {} ({} connections, {} channels, {} publishers, {} workers)",
        scenario.stem(opts.tls),
        kind.name(),
        params.connections,
        params.channels,
        params.publishers,
        params.workers
    );
    let outcome = Env::start(opts, kind, params, scenario).and_then(|mut env| {
        let r = match scenario {
            Scenario::S1 => s1(&mut env, &mut result.phases),
            Scenario::S2 | Scenario::S3 | Scenario::S6 => {
                sweep(&mut env, scenario, &mut result.phases)
            }
            Scenario::S4 => s4(&mut env, &mut result.phases),
            Scenario::S5 => s5(&mut env, &mut result.phases),
            Scenario::S7 => s7(&mut env, &mut result.phases),
            Scenario::S8 => s8(&mut env, &mut result.phases),
        };
        drop(env); // workers, then the server
        r
    });
    if let Err(e) = outcome {
        eprintln!("{} against {}: {e:#}", scenario.stem(opts.tls), kind.name());
        result.error = Some(format!("{e:#}"));
    }
    result.host.loadavg_end = procfs::loadavg();
    result.targets = crate::report::targets(scenario, &result);
    Ok(result)
}

fn connect_phase(env: &mut Env, name: &str, resume: bool, jitter_ms: u64) -> Result<Phase> {
    let n = env.params.connections as u64;
    env.phase(name, 0.0, |env, p| {
        let (incomplete, wall) = env.connect(resume, jitter_ms)?;
        p.connections = n;
        p.incomplete = incomplete;
        p.notes.push(format!(
            "{} of {n} subscribed in {:.3} s",
            n - incomplete,
            wall.as_secs_f64()
        ));
        Ok(())
    })
    .map(|mut p| {
        if !resume {
            p.rss_per_connection_bytes = Some(
                (p.server_rss_end_bytes as f64 - p.server_rss_start_bytes as f64) / n.max(1) as f64,
            );
        }
        p
    })
}

fn s1(env: &mut Env, phases: &mut Vec<Phase>) -> Result<()> {
    env.create_channels()?;
    phases.push(connect_phase(env, "connect", false, 0)?);
    let hold = Duration::from_secs_f64(env.params.duration_secs);
    let n = env.params.connections as u64;
    phases.push(env.phase("idle-hold", 0.0, |env, p| {
        std::thread::sleep(hold);
        p.connections = n;
        let (lagging, _, _) = env.wait_caught_up(Duration::from_millis(1))?;
        p.notes.push(format!(
            "held {} connections for {:.0} s with heartbeats every {} ms; {lagging} not caught up",
            n,
            hold.as_secs_f64(),
            env.opts.heartbeat_ms
        ));
        Ok(())
    })?);
    Ok(())
}

/// S2, S3, S6: connect everyone, then one step per rate. S3 stops once p99 passes the
/// limit.
fn sweep(env: &mut Env, scenario: Scenario, phases: &mut Vec<Phase>) -> Result<()> {
    env.create_channels()?;
    phases.push(connect_phase(env, "connect", false, 0)?);
    let dur = Duration::from_secs_f64(env.params.duration_secs);
    for rate in env.params.rates.clone() {
        let p = publish_step(env, &format!("rate-{rate}"), rate, dur)?;
        let over = p.latency.p99_us as f64 > env.opts.p99_limit_ms * 1000.0;
        phases.push(p);
        if scenario == Scenario::S3 && over {
            eprintln!("p99 passed {} ms: sweep stops", env.opts.p99_limit_ms);
            break;
        }
    }
    Ok(())
}

fn publish_step(env: &mut Env, name: &str, rate: f64, dur: Duration) -> Result<Phase> {
    env.phase(name, rate, |env, p| {
        let (unanswered, pub_wall) = env.publish(rate, dur, 0)?;
        let (lagging, missing, drain) = env.wait_caught_up(Duration::from_secs(10))?;
        p.connections = env.params.connections as u64;
        p.incomplete = unanswered + lagging;
        p.missing = missing;
        p.notes.push(format!(
            "published for {:.2} s, drained in {:.3} s; {unanswered} publishes unanswered, {lagging} subscribers behind",
            pub_wall.as_secs_f64(),
            drain.as_secs_f64()
        ));
        Ok(())
    })
}

fn s4(env: &mut Env, phases: &mut Vec<Phase>) -> Result<()> {
    env.create_channels()?;
    phases.push(connect_phase(env, "cold-connect", false, 0)?);
    // One message per channel so every subscriber has a position, then everyone drops and
    // two more go out while they are away.
    env.publish(0.0, Duration::ZERO, 1)?;
    let (lagging, _, _) = env.wait_caught_up(env.step)?;
    if lagging > 0 {
        bail!("{lagging} subscribers did not get the first message");
    }
    env.drop_all()?;
    env.publish(0.0, Duration::ZERO, 2)?;
    let jitter = env.opts.jitter_ms;
    let n = env.params.connections as u64;
    let step = env.step;
    phases.push(env.phase("reconnect-storm", 0.0, |env, p| {
        let start = Instant::now();
        let (incomplete, connect_wall) = env.connect(true, jitter)?;
        let (lagging, missing, _) = env.wait_caught_up(step)?;
        p.connections = n;
        p.incomplete = incomplete + lagging;
        p.missing = missing;
        p.notes.push(format!(
            "reconnect with 0..{jitter} ms jitter + resume: all subscribed in {:.3} s, fully recovered in {:.3} s",
            connect_wall.as_secs_f64(),
            start.elapsed().as_secs_f64()
        ));
        Ok(())
    })?);
    Ok(())
}

fn s5(env: &mut Env, phases: &mut Vec<Phase>) -> Result<()> {
    env.create_channels()?;
    phases.push(connect_phase(env, "connect", false, 0)?);
    env.drop_all()?;
    let per = env.opts.per_channel(Scenario::S5);
    phases.push(env.phase("queue-while-away", 0.0, |env, p| {
        let (unanswered, wall) = env.publish(0.0, Duration::ZERO, per)?;
        p.incomplete = unanswered;
        p.notes.push(format!(
            "{per} messages to each of {} channels while every subscriber was away, in {:.3} s",
            env.params.channels,
            wall.as_secs_f64()
        ));
        Ok(())
    })?);
    let n = env.params.connections as u64;
    let step = env.step;
    phases.push(env.phase("everyone-returns", 0.0, |env, p| {
        let start = Instant::now();
        let (incomplete, connect_wall) = env.connect(true, 0)?;
        let (lagging, missing, _) = env.wait_caught_up(step)?;
        p.connections = n;
        p.incomplete = incomplete + lagging;
        p.missing = missing;
        p.notes.push(format!(
            "{} queued deliveries expected; all resubscribed in {:.3} s, all caught up in {:.3} s",
            n * per as u64,
            connect_wall.as_secs_f64(),
            start.elapsed().as_secs_f64()
        ));
        Ok(())
    })?);
    Ok(())
}

fn s7(env: &mut Env, phases: &mut Vec<Phase>) -> Result<()> {
    env.create_channels()?;
    phases.push(connect_phase(env, "connect", false, 0)?);
    let rate = env.params.rates.first().copied().unwrap_or(8000.0);
    let dur = Duration::from_secs_f64(env.params.duration_secs);
    phases.push(publish_step(env, "all-reading", rate, dur)?);
    let pct = env.opts.slow_percent;
    let marked: u64 = env
        .call(|_| Cmd::SetSlow { percent: pct })?
        .iter()
        .map(|r| r.missing)
        .sum();
    let mut p = publish_step(env, "slow-consumers", rate, dur)?;
    p.notes.push(format!(
        "{marked} subscribers ({pct} %) stopped reading for the whole step; latency, gaps and catch-up above are the others'"
    ));
    let t = env.step_ms().min(10_000);
    let last_ids = env.last_ids.clone();
    env.call(|_| Cmd::ReleaseSlow {
        last_ids: last_ids.clone(),
        timeout_ms: t,
    })?;
    let closes = env.stats_peek()?;
    p.notes.push(format!(
        "after the step the slow ones read again; how their connections had ended: {closes}"
    ));
    phases.push(p);
    Ok(())
}

/// S8: everyone connects and subscribes (channels of 8); then per rate, `--per-channel`
/// messages go to every channel (so every subscriber's other channel has them waiting) and
/// subscribers switch channel at that many switches/s for `--duration-secs` — each sends
/// `unsubscribe` and, pipelined, `subscribe` with its last seen id on the other channel (0
/// the first time: everything kept) — each at most once per step, round the subscribers.
fn s8(env: &mut Env, phases: &mut Vec<Phase>) -> Result<()> {
    env.create_channels()?;
    phases.push(connect_phase(env, "connect", false, 0)?);
    let per = env.opts.per_channel(Scenario::S8);
    let dur = Duration::from_secs_f64(env.params.duration_secs);
    let n = env.params.connections as u64;
    let step = env.step;
    for rate in env.params.rates.clone() {
        // Messages waiting on every channel; those subscribed there now get them live.
        let (unanswered, _) = env.publish(0.0, Duration::ZERO, per)?;
        if unanswered > 0 {
            bail!("{unanswered} publishes unanswered before the switch step");
        }
        let (lagging, _, _) = env.wait_caught_up(step)?;
        if lagging > 0 {
            bail!("{lagging} subscribers did not get the live messages before the switch step");
        }
        let planned = if rate > 0.0 {
            ((rate * dur.as_secs_f64()).round() as u64).min(n)
        } else {
            n
        };
        phases.push(env.phase(&format!("switch-{rate}"), rate, |env, p| {
            let last_ids = env.last_ids.clone();
            let t = env.step_ms() + dur.as_millis() as u64;
            let start = Instant::now();
            let r = env.call(|_| Cmd::Switch {
                rate,
                duration_ms: dur.as_millis() as u64,
                last_ids: last_ids.clone(),
                timeout_ms: t,
            })?;
            p.connections = n;
            p.incomplete = r.iter().map(|r| r.incomplete).sum();
            p.missing = r.iter().map(|r| r.missing).sum();
            let done = p.incomplete;
            p.notes.push(format!(
                "{planned} switches planned at {rate}/s (each subscriber at most once a step), {per} messages waiting per channel; all asked and answered in {:.3} s; {done} unfinished",
                start.elapsed().as_secs_f64()
            ));
            Ok(())
        })?);
        let last = phases.last_mut().expect("just pushed");
        if let Some(l) = &last.switch_latency {
            if l.count > 0 {
                last.notes.push(format!(
                    "server CPU over the step per switch (the idle connections' own cost included): {:.0} µs",
                    last.server_cpu_s * 1e6 / l.count as f64
                ));
            }
        }
    }
    Ok(())
}

impl Env {
    /// The `slow:*` close counts, without resetting the counters.
    fn stats_peek(&mut self) -> Result<String> {
        let mut c = WorkerCounters::default();
        for r in self.call(|_| Cmd::Stats { reset: false })? {
            if let Some(s) = r.stats {
                c.merge(&s.counters);
            }
        }
        let slow: Vec<String> = c
            .closed
            .iter()
            .filter(|(k, _)| k.starts_with("slow:"))
            .map(|(k, v)| format!("{v} × close {}", &k[5..]))
            .collect();
        Ok(if slow.is_empty() {
            "still open (not closed by the server)".into()
        } else {
            slow.join(", ")
        })
    }
}
