//! The REST door's connection loop (SPEC §4): plain HTTP/1.1 requests on the shared port,
//! kept alive between requests, with bounded bodies and idle time; each request goes to the
//! binary's [`HttpHandler`] with an [`Api`], and a streamed answer (server-sent events) is
//! written piece by piece until it ends, the client leaves or the server shuts down.

use crate::api::{Api, BodyStream, HttpHandler, HttpRequest, HttpResponse};
use crate::host::ShardCtx;
use crate::http::{self, RequestHead};
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ringbearer_core::error::{ErrorCode, Refusal};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Bytes asked of the socket per read of a REST request body: a typical JSON body fits in
/// one read, and a larger one (up to `max_http_body_bytes`) takes a few more.
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

pub(super) async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: Rc<ShardCtx>,
    handler: Option<Arc<dyn HttpHandler>>,
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
        // The next request's head, whole within `http_idle_timeout_ms`; waiting for it ends
        // at shutdown too (the server stops waiting for this socket, `runtime/mod.rs` step 2).
        let next = future::or(
            http::read_head(stream, &mut buf, cfg.max_handshake_bytes),
            async {
                future::or(glommio::timer::sleep(idle), ctx.shared.shutdown.wait()).await;
                Ok(None)
            },
        )
        .await;
        head = match next {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err((status, e)) => {
                send(stream, &refuse(status, e)).await;
                return;
            }
        };
    }
}
