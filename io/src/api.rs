//! The REST door (SPEC §4): plain HTTP/1.1 requests on the shared port, kept alive between
//! requests, with bounded bodies and idle time. Routing and the JSON shapes belong to the
//! binary (`server/src/rest.rs` implements [`HttpHandler`]); this module reads requests,
//! writes responses, and gives the handler an [`Api`]: the same owner-shard operations the
//! WebSocket ops use (one implementation of each rule, two doors). A REST call travels to
//! the channel's owner as the same typed request a connection sends, from a call id on
//! this shard instead of a connection, and its typed answer comes back to the handler,
//! which renders the REST shapes.
//!
//! It does not route paths, check API keys or render the REST shapes.

use crate::host::{CallSlot, ShardCtx, CALL_BIT};
use crate::http::{self, RequestHead};
use crate::journal::LocalBoxFuture;
use crate::mesh::ShardMsg;
use crate::metrics::{ShardMetrics, Totals};
use crate::owner::{ChannelDetail, ChannelSummary, Op, Published, Reply, Request};
use futures_lite::future;
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::message::FrameBytes;
use ringbearer_core::protocol::{CreateReq, PublishReq, SubscribeReq};
use ringbearer_core::{shard_for, ChannelName, Claims};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// One REST request, head and whole body.
pub struct HttpRequest {
    pub head: RequestHead,
    pub body: Vec<u8>,
    pub peer: Option<SocketAddr>,
}

/// What the handler answers.
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra header lines, each ending in `\r\n`.
    pub headers: String,
    /// A streamed body (server-sent events) written after the head instead of `body`:
    /// no `Content-Length`, and the connection closes when the stream ends.
    pub stream: Option<Box<dyn BodyStream>>,
}

/// A response body produced piece by piece on the shard (e.g. `text/event-stream`). The
/// REST door writes each piece as it comes, and stops when it ends, when a write fails
/// (the client left) or when the server shuts down.
pub trait BodyStream {
    /// The next piece to write (it may wait, on a glommio timer, never blocking); `None`
    /// ends the body.
    fn next_chunk(&mut self) -> LocalBoxFuture<'_, Option<Vec<u8>>>;
}

impl HttpResponse {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        HttpResponse {
            status,
            content_type: "application/json",
            body,
            headers: String::new(),
            stream: None,
        }
    }

    /// A streamed response: the head now, then each piece `stream` yields.
    pub fn streaming(status: u16, content_type: &'static str, stream: Box<dyn BodyStream>) -> Self {
        HttpResponse {
            status,
            content_type,
            body: Vec::new(),
            headers: String::new(),
            stream: Some(stream),
        }
    }

    /// The SPEC §4 failure shape with the status that fits the code (and `Retry-After`).
    pub fn refusal(e: &Refusal) -> Self {
        Self::refusal_with(e.code.http_status(), e)
    }

    pub fn refusal_with(status: u16, e: &Refusal) -> Self {
        crate::metrics::with(|m| m.refused(e.code));
        let mut r = Self::json(status, http::error_body(e));
        if let Some(s) = e.retry_after {
            r.headers = format!("Retry-After: {s}\r\n");
        }
        r
    }
}

/// The REST routes, provided by the binary. Called on the shard that accepted the
/// connection; the future runs there.
pub trait HttpHandler: Send + Sync {
    fn handle(&self, api: Api, req: HttpRequest) -> LocalBoxFuture<'static, HttpResponse>;
}

/// Server-wide figures at one instant, for health and metrics.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub totals: Totals,
    /// Open WebSocket connections.
    pub connections: usize,
    pub max_connections: usize,
    pub shards: usize,
    pub uptime_secs: u64,
    /// The oldest sample still in the health window and how long ago it was taken.
    pub window: Option<(Totals, f64)>,
}

/// What a REST handler may do: the owner-shard operations, token checks, live figures.
#[derive(Clone)]
pub struct Api {
    ctx: Rc<ShardCtx>,
}

/// An answer of the wrong kind: a bug between the door and the owner, told as one.
fn unexpected(r: &Reply) -> Refusal {
    Refusal::new(
        ErrorCode::Internal,
        format!("unexpected answer from the owner: {r:?}"),
    )
}

/// The typed answers of the owner's operations, as the REST door gets them.
pub struct Created {
    pub channel_id: String,
    pub name: ChannelName,
    pub created_at_ms: u64,
}

pub struct Enrolled {
    pub channel_id: String,
    pub wedding_id: Option<String>,
    pub new: bool,
    pub cursor: u64,
    pub recovered: bool,
    pub messages: Vec<Arc<FrameBytes>>,
}

impl Api {
    pub(crate) fn new(ctx: Rc<ShardCtx>) -> Self {
        Api { ctx }
    }

    pub fn config(&self) -> &crate::IoConfig {
        &self.ctx.cfg
    }

    pub fn verify_token(&self, token: &str) -> Result<Claims, Refusal> {
        self.ctx.shared.verifier.verify(token)
    }

    pub fn shared(&self) -> &Arc<crate::shared::Shared> {
        &self.ctx.shared
    }

    /// Records a refused credential of the REST door in the audit log.
    pub fn audit_unauthorized(&self, door: &str, peer: Option<std::net::SocketAddr>, e: &Refusal) {
        let now = crate::clock::now_ms();
        let a = crate::owner::audit::unauthorized(now, door, peer, e);
        self.ctx.state.borrow().audit(a);
    }

    /// Sends `op` to each shard in `owners` from a fresh call id and waits for as many
    /// replies (bounded by `rest_call_timeout_ms`).
    async fn call(
        &self,
        owners: &[u32],
        claims: &Arc<Claims>,
        op: Op,
    ) -> Result<Vec<Reply>, Refusal> {
        let cfg = &self.ctx.cfg;
        for o in owners {
            if self.ctx.router.backlog(*o) >= cfg.mesh_backlog_max {
                return Err(Refusal::new(
                    ErrorCode::Overloaded,
                    "the channel's shard is saturated; retry",
                ));
            }
        }
        let slot = Rc::new(CallSlot::default());
        slot.expect.set(owners.len());
        let from = {
            let mut st = self.ctx.state.borrow_mut();
            let id = st.next_conn | CALL_BIT;
            st.next_conn += 1;
            st.calls.insert(id, slot.clone());
            ConnRef {
                shard: st.id,
                conn: id,
            }
        };
        for o in owners {
            let req = Request {
                from,
                r#ref: None,
                claims: claims.clone(),
                op: op.clone(),
            };
            self.ctx.router.route(*o, ShardMsg::Request(req));
        }
        let timeout = Duration::from_millis(cfg.rest_call_timeout_ms);
        let answered = future::or(
            async {
                slot.done.wait().await;
                true
            },
            async {
                glommio::timer::sleep(timeout).await;
                false
            },
        )
        .await;
        self.ctx.state.borrow_mut().calls.remove(&from.conn);
        if !answered {
            return Err(Refusal::new(
                ErrorCode::Overloaded,
                "the channel's shard did not answer in time (rest_call_timeout_ms); retry, with an idempotency_key for publishes",
            ));
        }
        let replies = slot.replies.take();
        if let Some(e) = replies.iter().find_map(|r| match r {
            Reply::Error(e) => Some(e.clone()),
            _ => None,
        }) {
            return Err(e);
        }
        Ok(replies)
    }

    /// One call to the owner of `channel`.
    async fn call_one(
        &self,
        channel: &str,
        claims: &Arc<Claims>,
        op: Op,
    ) -> Result<Reply, Refusal> {
        let owner = shard_for(channel, self.ctx.state.borrow().shards) as u32;
        let mut replies = self.call(&[owner], claims, op).await?;
        replies.pop().ok_or_else(|| unexpected(&Reply::Ok))
    }

    fn all_shards(&self) -> Vec<u32> {
        (0..self.ctx.state.borrow().shards as u32).collect()
    }

    /// The `create` op.
    pub async fn create(&self, claims: Arc<Claims>, req: CreateReq) -> Result<Created, Refusal> {
        let name = req.name.as_str().to_owned();
        match self.call_one(&name, &claims, Op::Create(req)).await? {
            Reply::Created {
                channel_id,
                name,
                created_at_ms,
            } => Ok(Created {
                channel_id,
                name,
                created_at_ms,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// The channel a `channel_id` names (the id carries its owner shard).
    pub async fn resolve(&self, claims: &Arc<Claims>, id: &str) -> Result<ChannelName, Refusal> {
        let not_found = || {
            Refusal::new(
                ErrorCode::ChannelNotFound,
                format!("no channel has id {}", id.escape_default()),
            )
        };
        let shard = crate::owner::shard_of_channel_id(id).ok_or_else(not_found)?;
        if shard as usize >= self.ctx.state.borrow().shards {
            return Err(not_found());
        }
        let op = Op::Resolve { id: id.to_owned() };
        match self.call(&[shard], claims, op).await?.pop() {
            Some(Reply::Resolved { channel }) => Ok(channel),
            Some(other) => Err(unexpected(&other)),
            None => Err(not_found()),
        }
    }

    /// Subscribes `user` — a user id of the caller's own organization, never another's
    /// (SPEC §1) — without a connection.
    pub async fn enroll(
        &self,
        claims: Arc<Claims>,
        user: String,
        req: SubscribeReq,
    ) -> Result<Enrolled, Refusal> {
        let name = req.channel.as_str().to_owned();
        match self
            .call_one(&name, &claims, Op::Enroll { user, req })
            .await?
        {
            Reply::Enrolled {
                channel_id,
                wedding_id,
                new,
                cursor,
                recovered,
                messages,
                ..
            } => Ok(Enrolled {
                channel_id,
                wedding_id,
                new,
                cursor,
                recovered,
                messages,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// The `publish` op, answered with who the message went to.
    pub async fn publish(
        &self,
        claims: Arc<Claims>,
        req: PublishReq,
    ) -> Result<Published, Refusal> {
        let name = req.channel.as_str().to_owned();
        let op = Op::Publish {
            req,
            recipients: true,
        };
        match self.call_one(&name, &claims, op).await? {
            Reply::Published(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    /// A shared-state document as stored (`state_get`).
    pub async fn state_get(
        &self,
        claims: Arc<Claims>,
        channel: ChannelName,
        doc: String,
    ) -> Result<crate::owner::StateView, Refusal> {
        let name = channel.as_str().to_owned();
        match self
            .call_one(&name, &claims, Op::StateGet { channel, doc })
            .await?
        {
            Reply::State(v) => Ok(*v),
            other => Err(unexpected(&other)),
        }
    }

    /// A shared-state write: `Reply::StateOk` once stored, or `Reply::StateConflict`.
    pub async fn state_write(
        &self,
        claims: Arc<Claims>,
        req: ringbearer_core::protocol::StateWriteReq,
    ) -> Result<Reply, Refusal> {
        let name = req.channel.as_str().to_owned();
        match self.call_one(&name, &claims, Op::StateWrite(req)).await? {
            r @ (Reply::StateOk(_) | Reply::StateConflict { .. }) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends the subscription of `user`, a user id of the caller's own organization;
    /// whether there was one.
    pub async fn withdraw(
        &self,
        claims: Arc<Claims>,
        user: String,
        channel: ChannelName,
    ) -> Result<bool, Refusal> {
        let name = channel.as_str().to_owned();
        match self
            .call_one(&name, &claims, Op::Withdraw { user, channel })
            .await?
        {
            Reply::Withdrawn { removed, .. } => Ok(removed),
            other => Err(unexpected(&other)),
        }
    }

    /// Every channel `user` (of the caller's organization) is subscribed to that `claims`
    /// may read, from every shard, sorted by name.
    pub async fn list(
        &self,
        claims: Arc<Claims>,
        user: String,
    ) -> Result<Vec<ChannelSummary>, Refusal> {
        let shards = self.all_shards();
        let mut all = Vec::new();
        for r in self.call(&shards, &claims, Op::ListFor { user }).await? {
            match r {
                Reply::Subscriptions(v) => all.extend(v),
                other => return Err(unexpected(&other)),
            }
        }
        all.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(all)
    }

    /// The admin page's view of one channel: admin and service roles of the channel's
    /// organization only; `subscribers[offset..offset + limit]`.
    pub async fn detail(
        &self,
        claims: Arc<Claims>,
        channel: ChannelName,
        offset: usize,
        limit: usize,
    ) -> Result<ChannelDetail, Refusal> {
        let name = channel.as_str().to_owned();
        let op = Op::Inspect {
            channel,
            offset,
            limit,
        };
        match self.call_one(&name, &claims, op).await? {
            Reply::Detail(d) => Ok(*d),
            other => Err(unexpected(&other)),
        }
    }

    /// Every channel of the caller's organization, from every shard, sorted by name:
    /// `[offset..offset + limit]` of them and how many there are in all.
    pub async fn list_org(
        &self,
        claims: Arc<Claims>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<ChannelSummary>, usize), Refusal> {
        let shards = self.all_shards();
        let take = offset.saturating_add(limit);
        let mut all = Vec::new();
        let mut total = 0;
        for r in self.call(&shards, &claims, Op::ListOrg { take }).await? {
            match r {
                Reply::OrgChannels { channels, total: t } => {
                    total += t;
                    all.extend(channels);
                }
                other => return Err(unexpected(&other)),
            }
        }
        all.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        let page = all.into_iter().skip(offset).take(limit).collect();
        Ok((page, total))
    }

    /// The presence watchdog's round: what every shard sees on the channels of these
    /// weddings (`(wedding_id, owning organization)`), merged. `claims` must be the
    /// server's service identity.
    pub(crate) async fn watch(
        &self,
        claims: &Arc<Claims>,
        weddings: Vec<(String, String)>,
    ) -> Result<crate::watchdog::Sightings, Refusal> {
        let shards = self.all_shards();
        let mut all = crate::watchdog::Sightings::default();
        for r in self.call(&shards, claims, Op::Watch { weddings }).await? {
            match r {
                Reply::Watched(s) => all.merge(*s),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(all)
    }

    /// Queues a webhook through the shard's catalog (dropped without a registry).
    pub(crate) fn webhook(&self, e: crate::journal::WebhookEvent) {
        let catalog = self.ctx.state.borrow().catalog.clone();
        if let Some(c) = catalog {
            c.webhook(e);
        }
    }

    /// Live figures, summed over shards.
    pub fn snapshot(&self) -> Snapshot {
        let shared = &self.ctx.shared;
        let window = shared.samples.lock().front().map(|(at, t)| {
            let secs = at.elapsed().as_secs_f64();
            (t.clone(), secs)
        });
        Snapshot {
            totals: Totals::sum(&shared.metrics),
            connections: shared.connections.load(Ordering::Relaxed),
            max_connections: shared.max_connections(shared.calendar_now_ms()),
            shards: shared.metrics.len(),
            uptime_secs: shared.started.elapsed().as_secs(),
            window,
        }
    }

    /// Waits `d` on this shard's timer (never blocks the shard).
    pub async fn sleep(&self, d: Duration) {
        glommio::timer::sleep(d).await;
    }

    /// This shard's counters (for the handler's own figures).
    pub fn with_metrics(&self, f: impl FnOnce(&ShardMetrics)) {
        crate::metrics::with(f)
    }
}
