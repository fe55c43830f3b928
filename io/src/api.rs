//! The REST door (SPEC §4): plain HTTP/1.1 requests on the shared port, kept alive between
//! requests, with bounded bodies and idle time. Routing and the JSON shapes belong to the
//! binary (`server/src/rest.rs` implements [`HttpHandler`]); this module reads requests,
//! writes responses, and gives the handler an [`Api`]: the same owner-shard operations the
//! WebSocket ops use (one implementation of each rule, two doors). A REST call travels to
//! the channel's owner as the same [`ShardMsg`] a connection would send, from a call id on
//! this shard instead of a connection, and its answer comes back as the same JSON reply.
//!
//! It does not route paths, check API keys or render the REST shapes.

use crate::http::{self, RequestHead};
use crate::journal::LocalBoxFuture;
use crate::metrics::{ShardMetrics, Totals};
use crate::shard::{CallSlot, ShardCtx, ShardMsg};
use bytes::Bytes;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::protocol::{CreateReq, PublishReq, SubscribeReq};
use ringbearer_core::{shard_for, ChannelName, Claims, UserKey};
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

fn parse_reply(b: &[u8]) -> Result<serde_json::Value, Refusal> {
    let v: serde_json::Value = serde_json::from_slice(b)
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("unreadable reply: {e}")))?;
    if v["op"] == "error" {
        let code = v["code"]
            .as_str()
            .and_then(ErrorCode::parse)
            .unwrap_or(ErrorCode::Internal);
        let mut r = Refusal::new(code, v["message"].as_str().unwrap_or(""));
        r.retry_after = v["retry_after"].as_u64();
        return Err(r);
    }
    Ok(v)
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

    /// Records an audit event through this shard's catalog (the REST door's own refusals).
    pub fn audit_unauthorized(&self, door: &str, peer: Option<std::net::SocketAddr>, e: &Refusal) {
        crate::shard::audit_unauthorized(&self.ctx.state.borrow().catalog, door, peer, e);
    }

    /// Sends one message per shard in `owners` from a fresh call id and waits for as many
    /// replies (bounded by `rest_call_timeout_ms`).
    async fn call(
        &self,
        owners: &[u32],
        make: impl Fn(ConnRef) -> ShardMsg,
    ) -> Result<Vec<Bytes>, Refusal> {
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
            let id = st.next_conn | ConnRef::CALL_BIT;
            st.next_conn += 1;
            st.calls.insert(id, slot.clone());
            ConnRef {
                shard: st.id,
                conn: id,
            }
        };
        for o in owners {
            self.ctx.router.route(*o, make(from));
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
        Ok(slot.replies.take())
    }

    async fn call_one(
        &self,
        channel: &str,
        make: impl Fn(ConnRef) -> ShardMsg,
    ) -> Result<serde_json::Value, Refusal> {
        let owner = shard_for(channel, self.ctx.state.borrow().shards) as u32;
        let replies = self.call(&[owner], make).await?;
        parse_reply(replies.first().map(|b| &b[..]).unwrap_or(b"null"))
    }

    /// The `create` op (answers the `created` reply).
    pub async fn create(
        &self,
        claims: Arc<Claims>,
        req: CreateReq,
    ) -> Result<serde_json::Value, Refusal> {
        let name = req.name.as_str().to_owned();
        self.call_one(&name, |from| ShardMsg::Create {
            from,
            r#ref: None,
            claims: claims.clone(),
            req: req.clone(),
        })
        .await
    }

    /// The channel a `channel_id` names (the id carries its owner shard).
    pub async fn resolve(&self, id: &str) -> Result<ChannelName, Refusal> {
        let not_found = || {
            Refusal::new(
                ErrorCode::ChannelNotFound,
                format!("no channel has id {}", id.escape_default()),
            )
        };
        // `ch_` + 12 hex digits of boot + 2 of shard + 6 of sequence (see `Shard::on_create`).
        let shard = id
            .strip_prefix("ch_")
            .filter(|r| r.len() == 20 && r.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|r| u32::from_str_radix(&r[12..14], 16).ok())
            .ok_or_else(not_found)?;
        if shard as usize >= self.ctx.state.borrow().shards {
            return Err(not_found());
        }
        let id = id.to_owned();
        let replies = self
            .call(&[shard], |from| ShardMsg::Resolve {
                from,
                id: id.clone(),
            })
            .await?;
        let v = parse_reply(replies.first().map(|b| &b[..]).unwrap_or(b"null"))?;
        v["channel"]
            .as_str()
            .and_then(|n| ChannelName::parse(n).ok())
            .ok_or_else(not_found)
    }

    /// Subscribes `user` — a user id of the caller's own organization, never another's
    /// (SPEC §1) — without a connection (answers `enrolled`).
    pub async fn enroll(
        &self,
        claims: Arc<Claims>,
        user: String,
        req: SubscribeReq,
    ) -> Result<serde_json::Value, Refusal> {
        let name = req.channel.as_str().to_owned();
        self.call_one(&name, |from| ShardMsg::Enroll {
            from,
            claims: claims.clone(),
            user: UserKey::new(claims.org.clone(), user.clone()),
            req: req.clone(),
        })
        .await
    }

    /// The `publish` op (answers `published`).
    pub async fn publish(
        &self,
        claims: Arc<Claims>,
        req: PublishReq,
    ) -> Result<serde_json::Value, Refusal> {
        let name = req.channel.as_str().to_owned();
        self.call_one(&name, |from| ShardMsg::Publish {
            from,
            r#ref: None,
            claims: claims.clone(),
            req: req.clone(),
        })
        .await
    }

    /// Ends the subscription of `user`, a user id of the caller's own organization
    /// (answers `withdrawn`).
    pub async fn withdraw(
        &self,
        claims: Arc<Claims>,
        user: String,
        channel: ChannelName,
    ) -> Result<serde_json::Value, Refusal> {
        let name = channel.as_str().to_owned();
        self.call_one(&name, |from| ShardMsg::Withdraw {
            from,
            claims: claims.clone(),
            user: UserKey::new(claims.org.clone(), user.clone()),
            channel: channel.clone(),
        })
        .await
    }

    /// Every channel `user` (of the caller's organization) is subscribed to that `claims`
    /// may read, from every shard.
    pub async fn list(
        &self,
        claims: Arc<Claims>,
        user: String,
    ) -> Result<Vec<serde_json::Value>, Refusal> {
        let shards: Vec<u32> = (0..self.ctx.state.borrow().shards as u32).collect();
        let replies = self
            .call(&shards, |from| ShardMsg::ListFor {
                from,
                claims: claims.clone(),
                user: UserKey::new(claims.org.clone(), user.clone()),
            })
            .await?;
        let mut all = Vec::new();
        for r in replies {
            if let serde_json::Value::Array(v) = parse_reply(&r)?["channels"].take() {
                all.extend(v);
            }
        }
        Ok(all)
    }

    /// The admin page's view of one channel (answers `detail`): admin and service roles of
    /// the channel's organization only; `subscribers[offset..offset + limit]`.
    pub async fn detail(
        &self,
        claims: Arc<Claims>,
        channel: ChannelName,
        offset: usize,
        limit: usize,
    ) -> Result<serde_json::Value, Refusal> {
        let name = channel.as_str().to_owned();
        self.call_one(&name, |from| ShardMsg::Inspect {
            from,
            claims: claims.clone(),
            channel: channel.clone(),
            offset,
            limit,
        })
        .await
    }

    /// Every channel of the caller's organization, from every shard, sorted by name:
    /// `[offset..offset + limit]` of them and how many there are in all.
    pub async fn list_org(
        &self,
        claims: Arc<Claims>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<serde_json::Value>, u64), Refusal> {
        let shards: Vec<u32> = (0..self.ctx.state.borrow().shards as u32).collect();
        let take = offset.saturating_add(limit);
        let replies = self
            .call(&shards, |from| ShardMsg::ListOrg {
                from,
                claims: claims.clone(),
                take,
            })
            .await?;
        let mut all = Vec::new();
        let mut total = 0;
        for r in replies {
            let mut v = parse_reply(&r)?;
            total += v["total"].as_u64().unwrap_or(0);
            if let serde_json::Value::Array(c) = v["channels"].take() {
                all.extend(c);
            }
        }
        all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let page = all.into_iter().skip(offset).take(limit).collect();
        Ok((page, total))
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

/// Reads until `buf` holds a whole request head (the rest stays in `buf`); `Ok(None)` when
/// the peer closed or went idle before sending anything.
async fn next_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max_head: usize,
    idle: Duration,
) -> Result<Option<RequestHead>, (u16, Refusal)> {
    loop {
        match http::parse_head(buf) {
            Ok(Some((head, used))) => {
                buf.drain(..used);
                return Ok(Some(head));
            }
            Ok(None) if buf.len() >= max_head => {
                return Err((
                    431,
                    Refusal::new(ErrorCode::BadRequest, "request head too large"),
                ))
            }
            Ok(None) => {}
            Err(e) => return Err((400, e)),
        }
        if !read_more(stream, buf, idle).await {
            return Ok(None);
        }
    }
}

/// Bytes asked of the socket per read of a REST request: a typical head and JSON body fit
/// in one read, and a larger body (up to `max_http_body_bytes`) takes a few more.
const READ_CHUNK_BYTES: usize = 4096;

/// One read into `buf`, bounded by `idle`; `false` on EOF, error or timeout.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    idle: Duration,
) -> bool {
    // On the heap: this future's state is kept while a kept-alive connection idles.
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let n = future::or(
        async { stream.read(&mut chunk).await.unwrap_or(0) },
        async {
            glommio::timer::sleep(idle).await;
            0
        },
    )
    .await;
    buf.extend_from_slice(&chunk[..n]);
    n > 0
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> bool {
    stream.write_all(bytes).await.is_ok() && stream.flush().await.is_ok()
}

/// Serves REST requests on one connection until it closes, goes idle or asks to close.
/// `head` is the first request's, already read; `buf` holds what followed it.
/// `debug`: one line per REST call (method, path, status, duration).
fn log_call(method: &str, path: &str, status: u16, started: std::time::Instant) {
    tracing::debug!(
        method,
        path,
        status,
        duration_us = started.elapsed().as_micros() as u64,
        "REST call"
    );
}

/// Writes a streamed response: the head (no `Content-Length`, `Connection: close`), then
/// each piece until the stream ends, a write fails or takes over `http_idle_timeout_ms`, or
/// the server shuts down; then closes.
async fn serve_stream<S: AsyncWrite + Unpin>(
    ctx: &ShardCtx,
    stream: &mut S,
    resp: &HttpResponse,
    mut body: Box<dyn BodyStream>,
) {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\n{}\r\n",
        resp.status,
        http::reason(resp.status),
        resp.content_type,
        resp.headers,
    );
    if send(stream, head.as_bytes()).await {
        let stopping = async {
            ctx.shared.shutdown.wait().await;
            None
        };
        let mut stopping = std::pin::pin!(stopping);
        // A client that does not take a piece within the idle timeout is gone (its stream
        // would otherwise hold a slot for as long as it stays connected without reading).
        let idle = Duration::from_millis(ctx.cfg.http_idle_timeout_ms);
        loop {
            let Some(piece) = future::or(body.next_chunk(), stopping.as_mut()).await else {
                break;
            };
            let wrote = future::or(send(stream, &piece), async {
                glommio::timer::sleep(idle).await;
                false
            })
            .await;
            if !wrote {
                break;
            }
        }
    }
    drop(body);
    let _ = stream.close().await;
}

pub(crate) async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: Rc<ShardCtx>,
    stream: &mut S,
    first: RequestHead,
    mut buf: Vec<u8>,
    peer: Option<SocketAddr>,
) {
    let cfg = ctx.cfg.clone();
    let idle = Duration::from_millis(cfg.http_idle_timeout_ms);
    let body_time = Duration::from_millis(cfg.handshake_timeout_ms);
    let mut head = first;
    let mut served = 0usize;
    loop {
        served += 1;
        let started = std::time::Instant::now();
        crate::metrics::with(|m| {
            m.http_requests.fetch_add(1, Ordering::Relaxed);
        });
        let refuse = |status: u16, e: Refusal| http::error_response(status, &e);
        if head.chunked {
            let e = Refusal::new(
                ErrorCode::BadRequest,
                "chunked request bodies are not accepted; send Content-Length",
            );
            log_call(&head.method, &head.path, 411, started);
            send(stream, &refuse(411, e)).await;
            return;
        }
        let len = head.content_length.unwrap_or(0);
        if len > cfg.max_http_body_bytes {
            let e = Refusal::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body of {len} bytes is over max_http_body_bytes ({})",
                    cfg.max_http_body_bytes
                ),
            );
            // The body is not read: the connection closes after the answer.
            log_call(&head.method, &head.path, 413, started);
            send(stream, &refuse(413, e)).await;
            return;
        }
        while buf.len() < len {
            if !read_more(stream, &mut buf, body_time).await {
                let e = Refusal::new(ErrorCode::BadRequest, "request body incomplete");
                log_call(&head.method, &head.path, 408, started);
                send(stream, &refuse(408, e)).await;
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        // At shutdown the connection ends after this answer (`Connection: close`).
        let keep = head.keep_alive
            && served < cfg.http_max_requests_per_connection
            && !ctx.shared.shutdown.is_set();
        let handler = ctx.shared.http.clone();
        let upgrade_path = head.path == "/ws" || (head.path == "/echo" && cfg.echo_endpoint);
        // Kept for the `debug` line only when it is on (the head moves into the call).
        let call = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (head.method.clone(), head.path.clone()));
        let mut resp = match (&handler, head.path.as_str()) {
            _ if upgrade_path => HttpResponse::refusal_with(
                400,
                &Refusal::new(
                    ErrorCode::BadRequest,
                    "a WebSocket upgrade must be the first request on its connection",
                ),
            ),
            (Some(h), _) => {
                let req = HttpRequest { head, body, peer };
                h.handle(Api::new(ctx.clone()), req).await
            }
            (None, path) => HttpResponse::refusal_with(
                404,
                &Refusal::new(
                    ErrorCode::BadRequest,
                    format!("no endpoint at {}", path.escape_default()),
                ),
            ),
        };
        if let Some((method, path)) = &call {
            log_call(method, path, resp.status, started);
        }
        if let Some(body) = resp.stream.take() {
            serve_stream(&ctx, stream, &resp, body).await;
            return;
        }
        let bytes = http::response(
            resp.status,
            resp.content_type,
            &resp.body,
            keep,
            &resp.headers,
        );
        if !send(stream, &bytes).await || !keep {
            let _ = stream.close().await;
            return;
        }
        // Waiting for the next request ends at shutdown too (the server stops waiting for
        // this socket to end, `runtime/mod.rs` step 2).
        let next = future::or(
            next_head(stream, &mut buf, cfg.max_handshake_bytes, idle),
            async {
                ctx.shared.shutdown.wait().await;
                Ok(None)
            },
        );
        head = match next.await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err((status, e)) => {
                send(stream, &refuse(status, e)).await;
                return;
            }
        };
    }
}
