//! What operators and the admin page watch: `GET /api/websocket/health` (status, figures,
//! alerts against `[rest.health]`), `/metrics` (Prometheus text) and `/events` (health and
//! one channel's detail as server-sent events, with `StreamSlot` bounding open streams per
//! shard).
//!
//! It does not count anything itself (the figures come from `ringbearer_io::metrics`
//! through `Api::snapshot`) and does not render a channel's detail (that is `channels`).

use super::channels::{channel_query, detail_json};
use super::{query, Rest};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::{ChannelName, Claims, Role};
use ringbearer_io::metrics::{LatencyWindow, Totals, LATENCY_BUCKETS_US};
use ringbearer_io::{Api, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::Arc;

impl Rest {
    /// `GET /api/websocket/events`: the admin page's live figures as server-sent events,
    /// for the admin and service roles: `health` (the health endpoint's `data`) every
    /// `rest.events_interval_ms` and, with `?channel_name=` (or `channel_id`, `offset`,
    /// `limit` as for `channels/detail`), that channel's `detail` after it. A refused detail
    /// is one `error` event (the REST error body), then the stream ends.
    pub(super) async fn events(
        self: &Arc<Self>,
        api: &Api,
        claims: &Arc<Claims>,
        req: &HttpRequest,
    ) -> Result<HttpResponse, Refusal> {
        if !matches!(claims.role, Role::Admin | Role::Service) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "the event stream needs the admin or service role",
            ));
        }
        let q = query(req);
        let mut body = channel_query(&q)?;
        let (offset, limit) = self.page(&q)?;
        let channel = if body.is_empty() {
            None
        } else {
            Some((self.channel(api, claims, &mut body).await?, offset, limit))
        };
        let slot = StreamSlot::take(self.cfg.events_max_streams_per_shard).ok_or_else(|| {
            let mut e = Refusal::new(
                ErrorCode::Overloaded,
                format!(
                    "{} event streams are open on this shard (rest.events_max_streams_per_shard); retry",
                    self.cfg.events_max_streams_per_shard
                ),
            );
            e.retry_after = Some(self.cfg.events_interval_ms.div_ceil(1000).max(1));
            e
        })?;
        let events = Events {
            rest: self.clone(),
            api: api.clone(),
            claims: claims.clone(),
            channel,
            sent: 0,
            done: false,
            _slot: slot,
        };
        Ok(HttpResponse::streaming(
            200,
            "text/event-stream; charset=utf-8",
            Box::new(events),
        ))
    }

    /// `viewer`: the caller, when authenticated. The presence watchdog's alerts are listed
    /// in detail for the viewer's own organization only; an unauthenticated health (open
    /// observability) tells how many are in force, not whose (docs/decisions.md §30).
    pub(super) fn health(&self, api: &Api, viewer: Option<&Claims>) -> Value {
        let s = api.snapshot();
        let h = &self.cfg.health;
        let (rate, lat) = match &s.window {
            Some((older, secs)) if *secs > 0.0 => (
                s.totals.published.saturating_sub(older.published) as f64 / secs,
                LatencyWindow::between(older, &s.totals),
            ),
            _ => (0.0, LatencyWindow::default()),
        };
        let shared = api.shared();
        let calendar_now = shared.calendar_now_ms();
        let conn_pct = 100.0 * s.connections as f64 / s.max_connections.max(1) as f64;
        let mut alerts = Vec::new();
        let mut level = 0;
        let mut raise = |l: usize, m: String| {
            level = level.max(l);
            alerts
                .push(json!({"level": if l >= 2 { "critical" } else { "warning" }, "message": m}));
        };
        if lat.p99_ms > h.overloaded_p99_ms {
            raise(
                2,
                format!(
                    "p99 delivery latency {} ms is over {} ms",
                    lat.p99_ms, h.overloaded_p99_ms
                ),
            );
        } else if lat.p99_ms > h.degraded_p99_ms {
            raise(
                1,
                format!(
                    "p99 delivery latency {} ms is over {} ms",
                    lat.p99_ms, h.degraded_p99_ms
                ),
            );
        }
        if conn_pct > h.overloaded_connections_percent {
            raise(
                2,
                format!("connections at {conn_pct:.0}% of max_connections"),
            );
        } else if conn_pct > h.degraded_connections_percent {
            raise(
                1,
                format!("connections at {conn_pct:.0}% of max_connections"),
            );
        }
        if s.totals.storage_failures > 0 {
            raise(
                1,
                format!(
                    "storage failed {} time(s): publishes on the affected shard are refused; see the logs",
                    s.totals.storage_failures
                ),
            );
        }
        if let Some(w) = &self.webhooks {
            // Webhooks failing for long, given up or not stored (issue 16 item 5).
            for m in w.stats.alerts(super::now_ms(), w.cfg.alert_failing_ms) {
                raise(1, m);
            }
        }
        let cluster = self.cluster.as_ref().map(|l| {
            let c = l.state();
            if !c.ready {
                raise(
                    1,
                    format!(
                        "cluster: not ready since {} ({}): publishes and creates are refused WS_OVERLOADED (retryable)",
                        ringbearer_core::time::rfc3339_ms(c.since_ms),
                        c.problem
                    ),
                );
            }
            json!({
                "node": c.node,
                "ready": c.ready,
                "connected": c.connected,
                "server": c.server,
                "stream_seq": c.stream_seq,
                "delivered_seq": c.delivered_seq,
                "lag": c.stream_seq.saturating_sub(c.delivered_seq),
                "since": ringbearer_core::time::rfc3339_ms(c.since_ms),
                "refused": c.refused,
            })
        });
        let watch_alerts = match viewer {
            Some(c) => shared.watch_alerts.list(Some(&c.org)),
            None => Vec::new(),
        };
        let in_force = shared.watch_alerts.len();
        // Wedding-day alerts are not the server's health: they leave `status` as it is.
        if viewer.is_none() && in_force > 0 {
            alerts.push(json!({
                "level": "critical",
                "kind": "watchdog",
                "message": format!("{in_force} wedding-day watchdog alert(s) in force (details for authenticated callers)"),
            }));
        }
        for a in &watch_alerts {
            alerts.push(json!({
                "level": "critical",
                "kind": a.kind,
                "wedding_id": a.wedding_id,
                "since": ringbearer_core::time::rfc3339_ms(a.since_ms),
                "message": a.message,
            }));
        }
        let status = ["healthy", "degraded", "overloaded"][level];
        // 100 at rest, falling with the nearer of the two limits.
        let pressure = (conn_pct / h.overloaded_connections_percent)
            .max(lat.p99_ms / h.overloaded_p99_ms)
            .clamp(0.0, 1.0);
        let score = ((1.0 - pressure) * 100.0).round();
        let sup = s.totals.suppliers;
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        let mut out = json!({
            "status": status,
            "metrics": {
                "active_connections": s.connections,
                "total_channels": s.totals.channels,
                "messages_per_second": round2(rate),
                "average_latency_ms": round2(lat.average_ms),
                "p99_latency_ms": lat.p99_ms,
                "system_health_score": score,
                "wedding_day_mode": shared.wedding_day_mode(calendar_now),
                "saturday_mode": shared.saturday_mode(calendar_now),
                "total_messages": s.totals.published,
                "total_deliveries": s.totals.deliveries,
                "uptime_seconds": s.uptime_secs,
            },
            "wedding_analytics": {
                "active_weddings_today": shared.active_weddings_today(calendar_now),
                "supplier_activity": {
                    "photographers": sup[0],
                    "venues": sup[1],
                    "catering": sup[2],
                    "others": sup[3],
                },
            },
            "alerts": alerts,
        });
        if let Some(c) = cluster {
            out["cluster"] = c;
        }
        out
    }

    pub(super) fn metrics(&self, api: &Api) -> HttpResponse {
        let s = api.snapshot();
        let mut body = String::with_capacity(4096);
        render_prometheus(
            &mut body,
            &s.totals,
            s.connections,
            s.max_connections,
            s.uptime_secs,
        );
        if let Some(w) = &self.webhooks {
            render_webhooks(&mut body, &w.stats);
        }
        if let Some(c) = &self.cluster {
            render_cluster(&mut body, &c.state());
        }
        HttpResponse {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: body.into_bytes(),
            headers: String::new(),
            stream: None,
        }
    }
}

/// Cluster mode's state and counters (docs/cluster.md).
fn render_cluster(out: &mut String, c: &ringbearer_io::cluster::LinkState) {
    for (name, kind, help, value) in [
        (
            "ringbearer_cluster_ready",
            "gauge",
            "1 while NATS is connected and JetStream set up (stores accepted).",
            c.ready as u64,
        ),
        (
            "ringbearer_cluster_connected",
            "gauge",
            "1 while the NATS connection is up.",
            c.connected as u64,
        ),
        (
            "ringbearer_cluster_stream_seq",
            "gauge",
            "The message stream's last sequence at the newest check.",
            c.stream_seq,
        ),
        (
            "ringbearer_cluster_delivered_seq",
            "gauge",
            "The stream sequence of the newest message this node's consumer took.",
            c.delivered_seq,
        ),
        (
            "ringbearer_cluster_refused_total",
            "counter",
            "Stores refused WS_OVERLOADED because the cluster was not ready.",
            c.refused,
        ),
        (
            "ringbearer_cluster_channels_put_total",
            "counter",
            "Channels created on this node and stored in the cluster's rb_channels bucket.",
            c.channels_put,
        ),
        (
            "ringbearer_cluster_channels_adopted_total",
            "counter",
            "Channels created on other nodes that this node's shards took on.",
            c.adopted,
        ),
        (
            "ringbearer_cluster_connects_total",
            "counter",
            "Times the NATS connection was established.",
            c.connects,
        ),
        (
            "ringbearer_cluster_disconnects_total",
            "counter",
            "Times the NATS connection was lost.",
            c.disconnects,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// The webhook sender's counters (issue 16 item 5).
fn render_webhooks(out: &mut String, w: &crate::webhooks::WebhookStats) {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, kind, help, value) in [
        (
            "ringbearer_webhooks_sent_total",
            "counter",
            "Webhooks a receiver accepted (2xx).",
            w.sent.load(Relaxed),
        ),
        (
            "ringbearer_webhooks_failed_total",
            "counter",
            "Webhook attempts that failed (each is retried with backoff).",
            w.failed.load(Relaxed),
        ),
        (
            "ringbearer_webhooks_given_up_total",
            "counter",
            "Webhooks given up after webhooks.max_age_ms.",
            w.given_up.load(Relaxed),
        ),
        (
            "ringbearer_webhooks_overflowed_total",
            "counter",
            "Webhooks not stored: the organization had webhooks.max_queued_per_org waiting.",
            w.overflowed.load(Relaxed),
        ),
        (
            "ringbearer_webhooks_queued",
            "gauge",
            "Webhooks waiting in the outbox.",
            w.queued(),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// Prometheus text exposition (format 0.0.4) of the totals.
pub fn render_prometheus(
    out: &mut String,
    t: &Totals,
    connections: usize,
    max_connections: usize,
    uptime_secs: u64,
) {
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "ringbearer_connections",
        "gauge",
        "Open WebSocket connections.",
        connections as u64,
    );
    metric(
        "ringbearer_max_connections",
        "gauge",
        "The connection capacity now.",
        max_connections as u64,
    );
    metric(
        "ringbearer_channels",
        "gauge",
        "Channels owned by the shards.",
        t.channels,
    );
    metric(
        "ringbearer_messages_published_total",
        "counter",
        "Messages stored and announced.",
        t.published,
    );
    metric(
        "ringbearer_deliveries_total",
        "counter",
        "Message frames queued to subscriber connections.",
        t.deliveries,
    );
    metric(
        "ringbearer_connections_opened_total",
        "counter",
        "WebSocket connections accepted.",
        t.connections_opened,
    );
    metric(
        "ringbearer_slow_consumer_closes_total",
        "counter",
        "Connections closed for an outgoing backlog over its bound (4001).",
        t.slow_consumer_closes,
    );
    metric(
        "ringbearer_read_pauses_inflight_total",
        "counter",
        "Times a connection's reads paused at io.max_inflight_requests unanswered requests.",
        t.read_pauses_inflight,
    );
    metric(
        "ringbearer_read_pauses_outbox_total",
        "counter",
        "Times a connection's reads paused while its unread answers held io.read_pause_outbox_percent of its outbox.",
        t.read_pauses_outbox,
    );
    metric(
        "ringbearer_writes_direct_total",
        "counter",
        "Socket writes made straight from the fan-out loop (io.direct_writes), each everything a connection was owed.",
        t.writes_direct,
    );
    metric(
        "ringbearer_writes_deferred_total",
        "counter",
        "Direct writes that found the socket full and left the rest to the connection's writer task.",
        t.writes_deferred,
    );
    metric(
        "ringbearer_heartbeat_closes_total",
        "counter",
        "Connections closed after two silent heartbeat intervals (4000).",
        t.heartbeat_closes,
    );
    metric(
        "ringbearer_http_requests_total",
        "counter",
        "REST requests served.",
        t.http_requests,
    );
    metric(
        "ringbearer_storage_failures_total",
        "counter",
        "Journal writes or syncs that failed.",
        t.storage_failures,
    );
    metric(
        "ringbearer_uptime_seconds",
        "gauge",
        "Seconds since start.",
        uptime_secs,
    );
    let _ = writeln!(out, "# HELP ringbearer_refusals_total Refusals sent, by error code.\n# TYPE ringbearer_refusals_total counter");
    for (code, n) in &t.refusals {
        let _ = writeln!(
            out,
            "ringbearer_refusals_total{{code=\"{}\"}} {n}",
            code.as_str()
        );
    }
    let _ = writeln!(out, "# HELP ringbearer_delivery_latency_seconds Publish to queued-for-subscribers, per message and receiving shard.\n# TYPE ringbearer_delivery_latency_seconds histogram");
    let mut cum = 0;
    for (i, b) in LATENCY_BUCKETS_US.iter().enumerate() {
        cum += t.latency_buckets[i];
        let _ = writeln!(
            out,
            "ringbearer_delivery_latency_seconds_bucket{{le=\"{}\"}} {cum}",
            *b as f64 / 1e6
        );
    }
    cum += t.latency_buckets[LATENCY_BUCKETS_US.len()];
    let _ = writeln!(
        out,
        "ringbearer_delivery_latency_seconds_bucket{{le=\"+Inf\"}} {cum}"
    );
    let _ = writeln!(
        out,
        "ringbearer_delivery_latency_seconds_sum {}",
        t.latency_sum_us as f64 / 1e6
    );
    let _ = writeln!(out, "ringbearer_delivery_latency_seconds_count {cum}");
    let _ = writeln!(out, "# HELP ringbearer_connected_suppliers Connected users by supplier group.\n# TYPE ringbearer_connected_suppliers gauge");
    for (i, g) in ["photographers", "venues", "catering", "others"]
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            out,
            "ringbearer_connected_suppliers{{group=\"{g}\"}} {}",
            t.suppliers[i]
        );
    }
}

thread_local! {
    /// Open event streams on this shard (each shard is one thread).
    static OPEN_STREAMS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One open event stream counted against `rest.events_max_streams_per_shard`.
struct StreamSlot;

impl StreamSlot {
    fn take(max: usize) -> Option<StreamSlot> {
        OPEN_STREAMS.with(|n| {
            (n.get() < max).then(|| {
                n.set(n.get() + 1);
                StreamSlot
            })
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// The body of `GET /api/websocket/events`.
struct Events {
    rest: Arc<Rest>,
    api: Api,
    claims: Arc<Claims>,
    /// The channel whose detail follows each health event: name, offset, limit.
    channel: Option<(ChannelName, usize, usize)>,
    sent: u64,
    done: bool,
    _slot: StreamSlot,
}

/// One server-sent event (`data` is one line of JSON).
fn sse(out: &mut Vec<u8>, event: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

impl ringbearer_io::api::BodyStream for Events {
    fn next_chunk(&mut self) -> ringbearer_io::journal::LocalBoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            if self.done {
                return None;
            }
            if self.sent > 0 {
                let every = std::time::Duration::from_millis(self.rest.cfg.events_interval_ms);
                self.api.sleep(every).await;
            }
            self.sent += 1;
            let mut out = Vec::with_capacity(1024);
            let detail = match &self.channel {
                None => None,
                Some((name, offset, limit)) => {
                    let r = self
                        .api
                        .detail(self.claims.clone(), name.clone(), *offset, *limit)
                        .await;
                    match r {
                        Ok(d) => Some(detail_json(&d)),
                        Err(e) => {
                            ringbearer_io::metrics::with(|m| m.refused(e.code));
                            sse(&mut out, "error", &ringbearer_io::http::error_body(&e));
                            self.done = true;
                            return Some(out);
                        }
                    }
                }
            };
            let health =
                serde_json::to_vec(&self.rest.health(&self.api, Some(&self.claims))).expect("json");
            sse(&mut out, "health", &health);
            if let Some(d) = detail {
                sse(&mut out, "detail", &serde_json::to_vec(&d).expect("json"));
            }
            Some(out)
        })
    }
}
