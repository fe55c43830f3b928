//! A `/ws` connection's life: the upgrade answer, then two halves joined in one task — a
//! reader that feeds our frame reader (`wsframe.rs`: a few words of state, no buffer while
//! idle) and hands each complete text message to `requests.rs`, and a
//! writer that coalesces everything pending for the connection into one socket write per
//! wake-up (glommio's socket writes are plain `send(2)`: batching has to come from here).

use super::requests::handle_text;
use super::{refuse, DisplayPeer};
use crate::host::close_code;
use crate::host::phoenix::{Session, Vsn};
use crate::host::{Conn, ShardCtx};
use crate::http::{self};
use crate::outbox::{encode_frame, Opcode, OutFrame};
use crate::stream::Stream;
use crate::wsframe::{Event, Fail};
use bytes::Bytes;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::protocol::{self};
use ringbearer_core::Claims;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an idle connection's reader holds: enough for a typical request frame.
const SMALL_READ_BYTES: usize = 256;
/// The socket write buffer, when larger than this, is released once empty instead of kept
/// between uses (the frame reader's input follows `io.ws_read_buffer_bytes`). Small enough that an idle connection does
/// not keep the capacity of its largest reply (a `subscribed` with its presence list),
/// large enough that one ~450-byte message per wake-up reuses it.
const RETAINED_BUFFER_BYTES: usize = 512;

/// Bytes per read while discarding what a client sends after our close frame
/// (`close_linger_ms`): nothing of it is kept, so one modest buffer serves.
const LINGER_READ_BYTES: usize = 4096;

/// Longest close reason we send: RFC 6455 §5.5 caps a control frame's payload at 125
/// bytes, 2 of which are the close code.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// `reason` cut to [`MAX_CLOSE_REASON_BYTES`] at a character boundary (RFC 6455 §7.4: the
/// reason is UTF-8, and a client fails a connection whose close reason is not).
fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The reader's state and what it owes the client outside the outbox (pongs, the close
/// reply), which the writer sends first.
struct Ws {
    reader: crate::wsframe::Reader,
    rx: crate::wsframe::Rx,
    auto_tx: Vec<u8>,
}

/// Counts a connection against `max_connections` and the user's `connections_per_user`
/// for as long as it lives.
struct Admission<'a> {
    shared: &'a crate::shared::Shared,
    /// The claims it was counted under (`None` for the echo endpoint).
    user: Option<(Arc<Claims>, &'a ringbearer_core::Limits)>,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some((c, l)) = &self.user {
            let g = crate::metrics::RoleGroup::of(c.role);
            crate::metrics::with(|m| m.supplier_delta(g, false));
            self.shared
                .policy
                .close_connection(c, l, crate::clock::now_ms());
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_ws(
    ctx: Rc<ShardCtx>,
    mut stream: Stream,
    key: &str,
    protocol: Option<&str>,
    claims: Arc<Claims>,
    leftover: Vec<u8>,
    echo: bool,
    phoenix: Option<Vsn>,
    peer: Option<SocketAddr>,
    deflate: Option<crate::deflate::Negotiated>,
) {
    let cfg = ctx.cfg.clone();
    let shared = ctx.shared.clone();
    let path = path_of(echo, phoenix);
    // SPEC §1 Saturday mode: the cap doubles while it is on.
    let max = shared.max_connections(shared.calendar_now_ms());
    if shared.connections.fetch_add(1, Ordering::Relaxed) >= max {
        shared.connections.fetch_sub(1, Ordering::Relaxed);
        let e = Refusal {
            code: ErrorCode::Overloaded,
            message: format!("server at capacity ({max} connections); retry later"),
            retry_after: Some(cfg.overloaded_retry_after_secs),
        };
        return refuse(&mut stream, 503, &e, peer, path).await;
    }
    let mut admission = Admission {
        shared: &shared,
        user: None,
    };
    if !echo {
        if let Err(e) = shared
            .policy
            .open_connection(&claims, &cfg.limits, crate::clock::now_ms())
        {
            return refuse(&mut stream, 429, &e, peer, path).await;
        }
        admission.user = Some((claims.clone(), &cfg.limits));
        let g = crate::metrics::RoleGroup::of(claims.role);
        crate::metrics::with(|m| {
            m.connections_opened.fetch_add(1, Ordering::Relaxed);
            m.supplier_delta(g, true);
        });
    }
    if stream
        .write_all(&http::switching_protocols(
            key,
            protocol,
            deflate.map(|n| n.response()).as_deref(),
        ))
        .await
        .is_err()
        || stream.flush().await.is_err()
    {
        return;
    }
    let conn = {
        let mut st = ctx.state.borrow_mut();
        let id = st.next_conn;
        st.next_conn += 1;
        let cref = ConnRef {
            shard: st.id,
            conn: id,
        };
        let mut conn = Conn::new(id, cref, claims, &cfg, shared.policy.clone());
        if let Some(n) = &deflate {
            let d = crate::deflate::Deflater::new(&cfg.permessage_deflate, n);
            conn.outbox.borrow_mut().set_deflate(d);
        }
        conn.phoenix = phoenix.map(|v| Rc::new(Session::new(v, cfg.outbox_max_messages)));
        let conn = Rc::new(conn);
        st.conns.insert(id, conn.clone());
        conn
    };
    // Upgraded after its shard told every connection to go (`runtime/mod.rs` step 2).
    if shared.shutdown.is_set() {
        conn.close(close_code::GOING_AWAY, crate::host::SHUTDOWN_REASON);
    }
    let opened = Instant::now();
    log_opened(&conn, peer, path);
    let mut rx = crate::wsframe::Rx::default();
    rx.extend(&leftover);
    drop(leftover);
    let inflate = deflate.map(|n| crate::wsframe::InflateParams {
        client_context_takeover: !n.client_no_context_takeover,
    });
    let ws = RefCell::new(Ws {
        reader: crate::wsframe::Reader::new(
            cfg.limits.max_frame_bytes,
            cfg.ws_read_buffer_bytes,
            inflate,
        ),
        rx,
        auto_tx: Vec::new(),
    });
    // Direct writes from the fan-out (host/cork.rs) go to a plaintext socket only.
    if cfg.direct_writes {
        if let Stream::Plain(s) = &stream {
            conn.fd.set(Some(std::os::fd::AsRawFd::as_raw_fd(s)));
        }
    }
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let reader = async {
        // Anything already buffered after the head is handled before the first read.
        process(&ctx, &conn, &ws, echo);
        // An idle connection holds only `small`; a read that fills it switches to a
        // `socket_read_bytes` buffer until reads come back short again (memory per idle
        // connection is what 20,000 phones cost; see docs/performance.md S1).
        let mut small = [0u8; SMALL_READ_BYTES];
        let mut big: Option<Vec<u8>> = None;
        let mut paused = false;
        while conn.is_open() {
            // Back-pressure (`Conn::reads_paused`): read nothing more while the client's
            // requests are with owners or its answers wait unread; what is buffered is
            // handled when reads resume.
            if let Some(why) = conn.read_pause() {
                if !paused {
                    why.count();
                    paused = true;
                }
                conn.resume_reads.wait().await;
                process(&ctx, &conn, &ws, echo);
                continue;
            }
            paused = false;
            let buf: &mut [u8] = match &mut big {
                Some(b) => b,
                None => &mut small,
            };
            let cap = buf.len();
            let n = match rd.read(buf).await {
                Ok(0) | Err(_) => {
                    if conn.is_open() {
                        conn.peer_lost.set(true);
                    }
                    conn.close(close_code::NORMAL, "");
                    break;
                }
                Ok(n) => n,
            };
            conn.last_seen.set(Instant::now());
            let data = match &big {
                Some(b) => &b[..n],
                None => &small[..n],
            };
            ws.borrow_mut().rx.extend(data);
            // Whole messages before invalid bytes are still handled, in order; text that
            // cannot become UTF-8 fails at once, even inside a frame that has not ended
            // (RFC 6455 §8.1).
            process(&ctx, &conn, &ws, echo);
            if n == cap && big.is_none() {
                big = Some(vec![0u8; cfg.socket_read_bytes.max(SMALL_READ_BYTES)]);
            } else if n < cap && big.is_some() {
                big = None;
            }
        }
    };
    let writer = async {
        let mut tx: Vec<u8> = Vec::new();
        loop {
            conn.writer_idle.set(true);
            conn.wake_writer.wait().await;
            conn.writer_idle.set(false);
            // What a direct write left unsent is the start of a frame on the wire: it goes
            // before anything else.
            tx.append(&mut conn.unsent.borrow_mut());
            let closing = conn.closing.borrow().clone();
            {
                let mut w = ws.borrow_mut();
                if !w.auto_tx.is_empty() {
                    tx.extend_from_slice(&w.auto_tx);
                    w.auto_tx = Vec::new();
                }
            }
            if let Some((code, reason)) = closing {
                // A slow or dead consumer gets nothing more (not even the pongs the reader
                // queued); any other close first sends the replies still queued (e.g. the
                // error that explains a 1009).
                let cut_off = !conn.peer_closed.get()
                    && (code == close_code::SLOW_CONSUMER || code == close_code::HEARTBEAT_TIMEOUT);
                if cut_off {
                    tx.clear();
                } else {
                    conn.outbox
                        .borrow_mut()
                        .drain_control_into(&mut tx, cfg.write_batch_bytes);
                }
                conn.outbox.borrow_mut().clear();
                if conn.write_failed.get() {
                    break;
                }
                if !conn.peer_closed.get() {
                    let mut payload = code.to_be_bytes().to_vec();
                    payload.extend_from_slice(close_reason(&reason).as_bytes());
                    tx.push(0x88);
                    tx.push(payload.len() as u8);
                    tx.extend_from_slice(&payload);
                }
                let _ = wr.write_all(&tx).await;
                let _ = wr.flush().await;
                let _ = wr.close().await;
                break;
            }
            if conn.ping_due.replace(false) {
                encode_frame(&mut tx, Opcode::Ping, b"");
            }
            loop {
                conn.outbox
                    .borrow_mut()
                    .drain_into(&mut tx, cfg.write_batch_bytes);
                if tx.is_empty() {
                    break;
                }
                // `flush` pushes out a TLS record rustls held back on a full socket; it
                // costs nothing on plaintext.
                if wr.write_all(&tx).await.is_err() || wr.flush().await.is_err() {
                    conn.write_failed.set(true);
                    conn.close(close_code::INTERNAL, "write failed or timed out");
                    break;
                }
                tx.clear();
                // Room again: a reader paused on the outbox may go on.
                conn.resume_reads.notify();
                if conn.outbox.borrow().is_empty() || !conn.is_open() {
                    break;
                }
            }
            // With direct writes the fan-out writes the deliveries (host/cork.rs) and the
            // writer runs for replies and pings: it keeps no buffer between wake-ups, so
            // an idle connection holds none (docs/performance.md, the byte budget).
            // Without, a small one is kept and a large one given back.
            if cfg.direct_writes || tx.capacity() > RETAINED_BUFFER_BYTES {
                tx = Vec::new();
            }
            if !conn.is_open() {
                conn.wake_writer.notify();
            }
        }
        conn.done.notify();
    };
    future::zip(future::or(reader, conn.done.wait_sticky()), writer).await;
    // No direct write may reach this socket (or a later one with its number) from now on.
    conn.fd.set(None);
    // After our close frame, keep reading (and discarding) briefly: closing a socket with
    // unread input sends a reset, which can destroy the close frame before the client
    // reads it (RFC 6455 §7.1.1 has the server wait for the client's close).
    if !conn.peer_closed.get() && !conn.write_failed.get() {
        let linger = Duration::from_millis(cfg.close_linger_ms);
        // On the heap: an array here would be part of every connection's future for its
        // whole life (futures are as large as their largest state), ~4 KiB each.
        let mut sink = vec![0u8; LINGER_READ_BYTES];
        future::or(
            async {
                while let Ok(n) = rd.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            },
            glommio::timer::sleep(linger),
        )
        .await;
    }
    log_closed(&conn, peer, opened);
    let out = ctx.state.borrow_mut().forget_conn(&conn);
    ctx.route_all(out);
}

/// The path a connection came in at, for logs.
fn path_of(echo: bool, phoenix: Option<Vsn>) -> &'static str {
    match (echo, phoenix) {
        (true, _) => "/echo",
        (false, Some(_)) => "/realtime/v1/websocket",
        (false, None) => "/ws",
    }
}

/// `info`: one line per WebSocket connection opened (docs/operations.md "Logging").
fn log_opened(conn: &Conn, peer: Option<SocketAddr>, path: &str) {
    let c = conn.claims();
    tracing::info!(
        conn = %format_args!("c-{}-{}", conn.cref.shard, conn.cref.conn),
        peer = %DisplayPeer(peer),
        org = %c.org,
        sub = %c.sub,
        role = c.role.as_str(),
        path,
        "connection opened"
    );
}

/// `info`: one line per WebSocket connection closed, with who closed it, the close code
/// and reason (4000 heartbeat timeout and 4001 slow consumer among them), and how long it
/// lived.
fn log_closed(conn: &Conn, peer: Option<SocketAddr>, opened: Instant) {
    let (code, reason) = conn
        .closing
        .borrow()
        .clone()
        .unwrap_or((close_code::NORMAL, String::new()));
    let (by, code, reason) = if conn.peer_lost.get() {
        (
            "peer",
            close_code::ABNORMAL,
            "connection lost without a close frame".to_owned(),
        )
    } else if conn.peer_closed.get() {
        ("peer", code, reason)
    } else {
        ("server", code, reason)
    };
    let c = conn.claims();
    tracing::info!(
        conn = %format_args!("c-{}-{}", conn.cref.shard, conn.cref.conn),
        peer = %DisplayPeer(peer),
        org = %c.org,
        sub = %c.sub,
        by,
        code,
        reason = %reason,
        duration_ms = opened.elapsed().as_millis() as u64,
        "connection closed"
    );
}

/// Runs the frame reader over whatever bytes have arrived and handles each complete
/// message and control frame.
fn process(ctx: &Rc<ShardCtx>, conn: &Rc<Conn>, ws: &RefCell<Ws>, echo: bool) {
    loop {
        if !conn.is_open() || conn.reads_paused() {
            return;
        }
        let mut w = ws.borrow_mut();
        let Ws {
            reader,
            rx,
            auto_tx,
        } = &mut *w;
        match reader.next(rx) {
            Ok(None) => return,
            Ok(Some(Event::Text(t))) => {
                if echo {
                    conn.send_control(Bytes::copy_from_slice(t.as_bytes()));
                } else if let Some(p) = &conn.phoenix {
                    super::phoenix::handle_text(ctx, conn, p, t);
                } else {
                    handle_text(ctx, conn, t);
                }
            }
            Ok(Some(Event::Binary(b))) => {
                if echo {
                    conn.push(|o| {
                        o.push_control(OutFrame {
                            opcode: Opcode::Binary,
                            channel: 0,
                            data: Bytes::copy_from_slice(b),
                        })
                    });
                } else if let Some(p) = &conn.phoenix {
                    super::phoenix::handle_binary(ctx, conn, p, b);
                } else {
                    let e = Refusal::new(
                        ErrorCode::BadRequest,
                        "binary frames are not accepted; send JSON text",
                    );
                    conn.send_control(protocol::reply_error(None, &e).into());
                }
            }
            Ok(Some(Event::Ping(p))) => {
                // RFC 6455 §5.5.3: a pong with the same payload, sent by the writer ahead of
                // the outbox; counted against `outbox_max_bytes` with it.
                auto_tx.push(0x8a);
                auto_tx.push(p.len() as u8);
                auto_tx.extend_from_slice(p);
                conn.check_auto_replies(auto_tx.len());
                conn.wake_writer.notify();
            }
            Ok(Some(Event::Pong)) => {}
            Ok(Some(Event::Close(frame))) => {
                // RFC 6455 §5.5.1: the reply echoes the client's code and reason.
                let (code, reason) = frame.unwrap_or((close_code::NO_STATUS, ""));
                auto_tx.push(0x88);
                if let Some((code, reason)) = frame {
                    let reason = close_reason(reason);
                    auto_tx.push(2 + reason.len() as u8);
                    auto_tx.extend_from_slice(&code.to_be_bytes());
                    auto_tx.extend_from_slice(reason.as_bytes());
                } else {
                    auto_tx.push(0);
                }
                if conn.is_open() {
                    conn.peer_closed.set(true);
                }
                // (1005 when it carried no code: never sent on the wire, RFC 6455 §7.1.5.)
                conn.close(code, reason);
                return;
            }
            Err(Fail::TooBig) => {
                let r = Refusal::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "message over {} bytes; the limit is max_frame_bytes",
                        ctx.cfg.limits.max_frame_bytes
                    ),
                );
                if conn.phoenix.is_none() {
                    conn.send_control(protocol::reply_error(None, &r).into());
                }
                conn.close(close_code::TOO_BIG, "frame over max_frame_bytes");
                return;
            }
            Err(Fail::InvalidData(why)) => {
                conn.close(close_code::INVALID_DATA, why);
                return;
            }
            Err(Fail::Protocol(why)) => {
                conn.close(close_code::PROTOCOL_ERROR, why);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SHUTDOWN_REASON;

    /// RFC 6455 §5.5 and §7.4: a close reason fits the control frame with its code, and is
    /// never cut inside a UTF-8 character.
    #[test]
    fn close_reasons_fit_the_frame_and_stay_utf8() {
        assert_eq!(close_reason(SHUTDOWN_REASON), SHUTDOWN_REASON);
        let long = "x".repeat(200);
        assert_eq!(close_reason(&long).len(), MAX_CLOSE_REASON_BYTES);
        // 122 ASCII bytes then a 3-byte character across the limit.
        let split = format!("{}€€", "y".repeat(122));
        let cut = close_reason(&split);
        assert_eq!(cut.len(), 122);
        assert!(2 + close_reason(&"é".repeat(100)).len() <= 125);
    }
}
