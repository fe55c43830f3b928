//! The per-shard services: the heartbeat sweep, the presence flush, parking, retention,
//! the health sampler and the presence watchdog (shard 0 only, `watchdog.rs`) and the commit pump. [`Services::start`] is the one place they
//! are started; [`Services::stop`] stops them one at a time in the order of the table in
//! `runtime/mod.rs`, each given its own stop [`Signal`] and awaited to its end. A service
//! finishes the round it is in (a retention round is never cut between its checkpoint and
//! its reclaim); the commit pump stores and answers everything pending before it ends.
//!
//! It does not serve connections or own channel state: each service calls the shard's own
//! methods (`pending_upto`, `complete_pending`, `flush_presence`, `retention_snapshot`, the
//! journal) and routes what they return.

use crate::host::ShardCtx;
use crate::notify::Notify;
use crate::signal::Signal;
use futures_lite::future;
use glommio::Task;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The heartbeat sweep runs at least this often, and more often only if a ping interval is
/// shorter: token expiry is checked to the second, and a ping or close a second late is
/// within SPEC §3's 30 s / 10 s intervals.
pub const HEARTBEAT_ROUND_MAX: Duration = Duration::from_secs(1);

/// `Shared::samples` gets one snapshot of the totals this often: health's messages/s and
/// latency are differences across `health_window_ms`, so a window of 10 s keeps 10.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The running services of one shard, in stop order.
pub struct Services {
    running: Vec<Service>,
}

struct Service {
    name: &'static str,
    stop: Rc<Signal>,
    task: Task<()>,
}

impl Services {
    /// Starts every service of shard `me`. `commit_ready` is the shard's "something is
    /// pending" flag.
    pub fn start(ctx: &Rc<ShardCtx>, me: usize, commit_ready: Rc<Notify>) -> Services {
        let mut s = Services {
            running: Vec::new(),
        };
        // Stop order: the order of the table in `runtime/mod.rs`, steps 4 and 5.
        s.spawn("heartbeat", |stop| heartbeat(ctx.clone(), stop));
        s.spawn("presence flush", |stop| presence_flush(ctx.clone(), stop));
        s.spawn("parking", |stop| parking(ctx.clone(), stop));
        s.spawn("retention", |stop| retention(ctx.clone(), stop));
        if me == 0 {
            s.spawn("sample totals", |stop| sample_totals(ctx.clone(), stop));
            s.spawn("watchdog", |stop| super::watchdog::run(ctx.clone(), stop));
        }
        s.spawn("commit pump", |stop| {
            commit_pump(ctx.clone(), commit_ready, stop)
        });
        s
    }

    fn spawn<F: std::future::Future<Output = ()> + 'static>(
        &mut self,
        name: &'static str,
        run: impl FnOnce(Rc<Signal>) -> F,
    ) {
        let stop = Rc::new(Signal::new());
        let task = glommio::spawn_local(run(stop.clone()));
        self.running.push(Service { name, stop, task });
    }

    /// Stops each service in turn and waits for it to end.
    pub async fn stop(self) {
        for Service { name, stop, task } in self.running {
            stop.set();
            task.await;
            tracing::trace!(service = name, "stopped");
        }
    }
}

/// Sleeps `d`; `false` when `stop` came first.
pub(super) async fn pause(stop: &Signal, d: Duration) -> bool {
    future::or(
        async {
            glommio::timer::sleep(d).await;
            true
        },
        async {
            stop.wait().await;
            false
        },
    )
    .await
}

/// Waits for the journal to store what is pending, then lets the shard deliver and answer
/// it, in log order. One `durable` wait covers every publish appended before it (group
/// commit); publishes appended meanwhile go in the next round. Once stopped, it stores and
/// answers what is still pending, then ends.
async fn commit_pump(ctx: Rc<ShardCtx>, ready: Rc<Notify>, stop: Rc<Signal>) {
    loop {
        let stopping = future::or(
            async {
                ready.wait().await;
                false
            },
            async {
                stop.wait().await;
                true
            },
        )
        .await;
        loop {
            let Some((journal, upto)) = ctx.state.borrow().pending_upto() else {
                break;
            };
            let result = journal.durable(upto).await;
            let out = ctx.state.borrow_mut().complete_pending(upto, result);
            ctx.route_all(out);
        }
        if stopping {
            return;
        }
    }
}

/// Retention (SPEC §2.2: the newest `max_queued` messages, not older than the retention):
/// every `reclaim_interval_ms`, when the log has more than one segment, log a checkpoint
/// of every channel (metadata and last id), wait until it is stored, then delete the
/// oldest segments holding only dead records — messages below their channel's first kept
/// id, and checkpoints older than this round's. Channels unknown to the snapshot (created
/// meanwhile) count as live, and so does anything logged during this round.
async fn retention(ctx: Rc<ShardCtx>, stop: Rc<Signal>) {
    let interval = Duration::from_millis(ctx.cfg.reclaim_interval_ms);
    loop {
        if !pause(&stop, interval).await {
            return;
        }
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
///
/// The flushes keep to one grid of ticks (`interval` apart from the service's start), but
/// a tick is only slept for when something changed (`Shard::presence_ready`, set by
/// `Shard::apply`): a change is announced at the first tick after it, as when every tick
/// woke the shard, and an idle shard takes no timer at all (20 wake-ups a second per shard
/// at the default 50 ms were most of an idle server's CPU, `docs/performance.md`).
async fn presence_flush(ctx: Rc<ShardCtx>, stop: Rc<Signal>) {
    let interval = Duration::from_millis(ctx.cfg.presence_flush_interval_ms);
    let ready = ctx.state.borrow().presence_ready.clone();
    let start = Instant::now();
    loop {
        let changed = future::or(
            async {
                ready.wait().await;
                true
            },
            async {
                stop.wait().await;
                false
            },
        )
        .await;
        if !changed {
            return;
        }
        let now = Instant::now();
        if !pause(&stop, next_tick(start, interval, now) - now).await {
            return;
        }
        let out = ctx
            .state
            .borrow_mut()
            .flush_presence(crate::clock::now_ms());
        ctx.route_all(out);
    }
}

/// The first tick of the grid `start`, `start + interval`, … strictly after `now`.
fn next_tick(start: Instant, interval: Duration, now: Instant) -> Instant {
    let step = interval.as_nanos().max(1);
    let ticks = now.saturating_duration_since(start).as_nanos() / step + 1;
    start + Duration::from_nanos((ticks * step).min(u64::MAX as u128) as u64)
}

/// Every `escalation.sweep_interval_ms`, parks this shard's wedding-day messages a member
/// has not acknowledged within `escalation.park_after_ms` (see `owner/park.rs`). Off when
/// `park_after_ms` is 0.
async fn parking(ctx: Rc<ShardCtx>, stop: Rc<Signal>) {
    let esc = ctx.cfg.escalation.clone();
    if esc.park_after_ms == 0 {
        stop.wait().await;
        return;
    }
    let interval = Duration::from_millis(esc.sweep_interval_ms);
    while pause(&stop, interval).await {
        let out = ctx
            .state
            .borrow_mut()
            .park_due(crate::clock::now_ms(), esc.park_after_ms);
        ctx.route_all(out);
    }
}

/// Keeps `Shared::samples`: one snapshot of the totals every [`SAMPLE_INTERVAL`], spanning
/// `health_window_ms` (health's messages/s and latency are differences across it).
async fn sample_totals(ctx: Rc<ShardCtx>, stop: Rc<Signal>) {
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
        if !pause(&stop, SAMPLE_INTERVAL).await {
            return;
        }
    }
}

/// One sweep per shard, every [`HEARTBEAT_ROUND_MAX`] at most (never a timer per
/// connection: 20,000 of them on a Saturday). Each round, for every connection that could
/// have something due (`sweep.rs` keeps that schedule; the others are not touched):
/// - token expiry (SPEC §4 Tokens): `token_expiry_warning_secs` before `exp` it is told
///   `token_expiring` once per token; past `exp` + `token_leeway_secs` it gets
///   `WS_UNAUTHORIZED` and close 4002, unless a `token` refresh came first;
/// - heartbeats (SPEC §3, §1): a ping every `heartbeat_interval_ms`, or every
///   `wedding_day_heartbeat_interval_ms` when Saturday mode is on or its token reaches a
///   wedding that is today; two unanswered pings and two silent intervals close it with 4000.
async fn heartbeat(ctx: Rc<ShardCtx>, stop: Rc<Signal>) {
    let slow = Duration::from_millis(ctx.cfg.heartbeat_interval_ms);
    let fast = Duration::from_millis(ctx.cfg.wedding_day_heartbeat_interval_ms);
    let round = HEARTBEAT_ROUND_MAX.min(slow).min(fast);
    let leeway = ctx.cfg.token_leeway_secs;
    let warning = ctx.cfg.token_expiry_warning_secs;
    let mut schedule = super::sweep::Schedule::new(Instant::now());
    let cork = ctx.state.borrow().cork.clone();
    while pause(&stop, round).await {
        let now = Instant::now();
        let wall_ms = crate::clock::now_ms();
        let now_s = wall_ms / 1000;
        let calendar_now = ctx.shared.calendar_now_ms();
        let all_fast = ctx.shared.saturday_mode(calendar_now);
        let today = if all_fast {
            None
        } else {
            ctx.shared.weddings.today(calendar_now)
        };
        let all = schedule.must_revisit_all(now, wall_ms, all_fast, today);
        let conns = {
            let mut st = ctx.state.borrow_mut();
            let recheck = std::mem::take(&mut st.heartbeat_recheck);
            schedule.take(now, all, &st.conns, st.next_conn, recheck)
        };
        for c in conns {
            if !c.is_open() {
                continue;
            }
            let claims = c.claims();
            if !c.check_token_expiry(&claims, now_s, leeway, warning) {
                continue;
            }
            let wedding_day = all_fast || schedule.today().is_some_and(|t| t.reaches(&claims));
            let interval = if wedding_day { fast } else { slow };
            if c.heartbeat(now, interval) {
                cork.ping(&c);
            }
            schedule.put(&c, now, wall_ms, interval, leeway, warning);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_tick;
    use std::time::{Duration, Instant};

    /// A change is flushed at the first tick of the service's grid after it: the same
    /// instant a flush on every tick would have announced it.
    #[test]
    fn next_tick_is_the_first_grid_point_after_now() {
        let start = Instant::now();
        let i = Duration::from_millis(50);
        let ms = Duration::from_millis;
        assert_eq!(next_tick(start, i, start), start + ms(50));
        assert_eq!(next_tick(start, i, start + ms(1)), start + ms(50));
        assert_eq!(next_tick(start, i, start + ms(49)), start + ms(50));
        assert_eq!(next_tick(start, i, start + ms(50)), start + ms(100));
        assert_eq!(next_tick(start, i, start + ms(1234)), start + ms(1250));
        // A clock reading before the start (it cannot go back, but the guard is cheap).
        assert_eq!(next_tick(start + ms(10), i, start), start + ms(60));
    }
}
