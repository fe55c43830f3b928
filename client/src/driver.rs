//! The background task: owns the socket, writes requests, reads frames into the
//! [`Session`], hands events to the app, and reconnects with backoff when the connection is
//! lost.
//!
//! One task per client. Its life:
//!
//! 1. **Connected** ([`Driver::serve`]): one `select!` over the command queue (writes are
//!    batched: one flush per burst), the socket (paused while the event outbox is over
//!    [`OUTBOX_PAUSE`], which is the back-pressure, unless requests wait for replies, then
//!    up to [`OUTBOX_MAX_WHILE_WAITING`]), free space in the event queue, and the idle timer. Pings are answered by tungstenite; the read loop flushes the pong at once
//!    (RFC 6455 §5.5.2).
//! 2. **Lost**: calls in flight fail with `Disconnected`, `Event::Disconnected` is queued.
//! 3. **Reconnecting** ([`Driver::reconnect`]): in rounds, forever: a backoff sleep, then
//!    one connect attempt per server URL, starting after the URL just lost (round robin). Meanwhile commands are refused with `NotConnected` and events keep flowing.
//!    The backoff attempt count resets only after a connection that stayed up for at least
//!    `backoff.max`, so a server that accepts and drops at once is not hammered.
//! 4. **Reconnected**: `Event::Reconnected`, then every remembered channel is resubscribed
//!    as the first writes of the new connection; back to 1.
//! 5. **Shutdown**, on `close()` or when the last [`crate::Client`] is dropped: a close
//!    frame (1000), a bounded wait for the server's close, calls in flight fail with
//!    `Closed`, the event queue is closed.
//!
//! What it does not do: parse or encode frames (`wire.rs`), keep protocol state
//! (`session.rs`), or compute delays (`backoff.rs`).

use crate::config::{ClientConfig, TokenSource};
use crate::error::{DisconnectReason, Error};
use crate::session::{ReplySender, Session, Waiter};
use crate::types::{Event, SubscribeOptions};
use crate::wire::{self, RefText};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request as HttpRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

/// The byte stream under the WebSocket: plain TCP (`ws://`) or rustls over it (`wss://`).
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

pub(crate) type Ws = WebSocketStream<Box<dyn Io>>;

/// Socket reads pause while this many events wait in the outbox (on top of the full event
/// queue). One `subscribed` reply may push up to `max_queued` messages at once past it.
pub(crate) const OUTBOX_PAUSE: usize = 256;

/// While requests wait for their replies, reads go on up to this many waiting events: the
/// reply is on the socket behind the events, and an app that awaits a call (an `ack`, say)
/// inside its event loop would otherwise stall until the request timeout. Bounded so that an
/// app that never reads events but keeps calling cannot grow the outbox without limit
/// (4096 events of at most 64 KiB payload each).
pub(crate) const OUTBOX_MAX_WHILE_WAITING: usize = 4096;

/// Commands written before one flush, so a burst of requests costs one syscall.
const WRITE_BATCH: usize = 64;

/// How long a shutdown waits for the server to answer the close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the [`crate::Client`] handles ask of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// An encoded request. `forget` is the channel of an `unsubscribe`.
    Request {
        r: u64,
        frame: String,
        waiter: Waiter,
        forget: Option<String>,
    },
    /// A `subscribe`, encoded by the driver, which knows the remembered position.
    Subscribe {
        r: u64,
        channel: String,
        opts: SubscribeOptions,
        reply: ReplySender,
    },
    /// Shut down; `done` fires when the task has finished.
    Close { done: oneshot::Sender<()> },
}

impl Command {
    /// Answers the command with `error` without sending it.
    fn refuse(self, error: Error) {
        match self {
            Command::Request { waiter, .. } => waiter.answer(Err(error)),
            Command::Subscribe { reply, .. } => drop(reply.send(Err(error))),
            Command::Close { done } => {
                let _ = done.send(());
            }
        }
    }
}

/// How a connected phase ended.
enum End {
    /// Close requested (`done` to fire) or every handle dropped (`None`).
    Shutdown(Option<oneshot::Sender<()>>),
    Lost(DisconnectReason),
}

/// The upgrade request to `url` with `cfg`'s `Authorization: Bearer <token>`.
pub(crate) fn upgrade_request(cfg: &ClientConfig, url: &str) -> Result<HttpRequest, Error> {
    let mut req = url
        .into_client_request()
        .map_err(|e| Error::InvalidConfig(format!("url {url:?}: {e}")))?;
    let mut value = HeaderValue::try_from(format!("Bearer {}", cfg.token.current()))
        .map_err(|_| Error::InvalidConfig("the token is not a valid header value".into()))?;
    value.set_sensitive(true);
    req.headers_mut().insert(header::AUTHORIZATION, value);
    Ok(req)
}

/// One connect attempt: TCP, TLS for `wss://` (with `tls`, built once from the config),
/// then the upgrade, all bounded by `limit`. Owns its inputs so it can run while the driver
/// answers commands.
pub(crate) async fn open(
    req: HttpRequest,
    ws_config: WebSocketConfig,
    limit: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Ws, Error> {
    let attempt = async move {
        let uri = req.uri().clone();
        let secure = uri.scheme_str() == Some("wss");
        let host = uri
            .host()
            .ok_or_else(|| Error::InvalidConfig(format!("url {uri}: no host")))?;
        // An IPv6 literal comes bracketed in the URL.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| Error::Connect(format!("{host}:{port}: {e}")))?;
        // Nagle off: frames are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if secure {
            let cfg = tls
                .ok_or_else(|| Error::InvalidConfig("wss:// without a TLS configuration".into()))?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| Error::InvalidConfig(format!("TLS server name {host:?}: {e}")))?;
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| Error::Connect(format!("TLS handshake with {host}:{port}: {e}")))?;
            Box::new(s)
        } else {
            Box::new(tcp)
        };
        tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config))
            .await
            .map(|(ws, _response)| ws)
            .map_err(handshake_error)
    };
    match tokio::time::timeout(limit, attempt).await {
        Err(_) => Err(Error::Connect(format!("no connection within {limit:?}"))),
        Ok(r) => r,
    }
}

fn handshake_error(e: WsError) -> Error {
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            let message = resp
                .body()
                .as_deref()
                .and_then(wire::http_error_message)
                .unwrap_or_else(|| format!("HTTP {status}"));
            if status == 401 {
                Error::Unauthorized { message }
            } else {
                Error::Http { status, message }
            }
        }
        WsError::Url(u) => Error::InvalidConfig(u.to_string()),
        other => Error::Connect(other.to_string()),
    }
}

pub(crate) struct Driver {
    cfg: ClientConfig,
    ws_config: WebSocketConfig,
    /// For `wss://` (built once, at `Client::connect`).
    tls: Option<Arc<rustls::ClientConfig>>,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// The app dropped its `Events`: events are discarded from then on.
    events_closed: bool,
    session: Session,
    refs: Arc<AtomicU64>,
    rng: StdRng,
    /// Backoff attempt number of the next reconnect round.
    attempt: u32,
    /// The config's server URLs, in order ([`ClientConfig::urls`]).
    urls: Vec<String>,
    /// Index in `urls` of the current (or last) connection.
    index: usize,
    /// The URL of the current (or last) connection, shared with the [`crate::Client`].
    current: Arc<Mutex<String>>,
}

impl Driver {
    pub(crate) fn new(
        cfg: ClientConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        cmds: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        refs: Arc<AtomicU64>,
        index: usize,
        current: Arc<Mutex<String>>,
    ) -> Self {
        Driver {
            urls: cfg.urls(),
            index,
            current,
            ws_config: cfg.websocket_config(),
            tls,
            cfg,
            cmds,
            events,
            events_closed: false,
            session: Session::default(),
            refs,
            rng: StdRng::from_entropy(),
            attempt: 0,
        }
    }

    /// The task's body, from the first (already open) connection to shutdown.
    pub(crate) async fn run(mut self, mut ws: Ws) {
        let mut first_writes = Vec::new();
        loop {
            let up_since = Instant::now();
            let reason = match self.serve(&mut ws, first_writes).await {
                End::Shutdown(done) => {
                    self.close_socket(&mut ws).await;
                    self.finish(done);
                    return;
                }
                End::Lost(reason) => reason,
            };
            drop(ws);
            info!(%reason, "connection lost; reconnecting");
            if up_since.elapsed() >= self.cfg.backoff.max {
                self.attempt = 0;
            }
            self.session.on_disconnect();
            self.session.push_event(Event::Disconnected { reason });
            ws = match self.reconnect().await {
                Ok(ws) => ws,
                Err(done) => {
                    self.finish(done);
                    return;
                }
            };
            self.session.push_event(Event::Reconnected);
            let refs = &self.refs;
            first_writes = self
                .session
                .resubscribe(|| refs.fetch_add(1, Ordering::Relaxed));
        }
    }

    /// The connected phase. `first_writes` (resubscribes) go out before anything else.
    async fn serve(&mut self, ws: &mut Ws, first_writes: Vec<String>) -> End {
        for frame in first_writes {
            if let Err(e) = ws.feed(WsMessage::text(frame)).await {
                return lost(e);
            }
        }
        if let Err(e) = ws.flush().await {
            return lost(e);
        }

        let idle = self.cfg.idle_timeout;
        let mut last_rx = Instant::now();
        // With no idle timeout the branch is disabled; the deadline is never looked at.
        let idle_timer = tokio::time::sleep(idle.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(idle_timer);

        loop {
            self.pump_events();
            let queued = self.session.events_len();
            let reading = queued < OUTBOX_PAUSE
                || (self.session.has_pending() && queued < OUTBOX_MAX_WHILE_WAITING);
            if !reading {
                // Silence while we are not reading is ours, not the server's.
                last_rx = Instant::now();
            }
            let waiting_events = !self.events_closed && self.session.events_len() > 0;
            tokio::select! {
                cmd = self.cmds.recv() => {
                    if let Some(end) = self.write_commands(ws, cmd).await {
                        return end;
                    }
                }
                frame = ws.next(), if reading => {
                    last_rx = Instant::now();
                    match frame {
                        None => return End::Lost(DisconnectReason::Transport(
                            "connection ended without a close frame".into(),
                        )),
                        Some(Err(e)) => return lost(e),
                        Some(Ok(msg)) => {
                            if let Some(end) = self.on_frame(ws, msg).await {
                                return end;
                            }
                        }
                    }
                }
                room = wait_for_room(&self.events), if waiting_events => {
                    self.on_room(room);
                }
                () = &mut idle_timer, if idle.is_some() => {
                    let limit = idle.unwrap_or_default();
                    if last_rx.elapsed() >= limit {
                        return End::Lost(DisconnectReason::IdleTimeout);
                    }
                    idle_timer.as_mut().reset(last_rx + limit);
                }
            }
        }
    }

    /// Writes `first` and what else is queued, up to [`WRITE_BATCH`] commands, then flushes
    /// once. `Some` when the phase ends (a close, or every handle dropped, or a write error).
    async fn write_commands(&mut self, ws: &mut Ws, first: Option<Command>) -> Option<End> {
        let mut cmd = first;
        let mut written = 0;
        let end = loop {
            let frame = match cmd {
                None => break Some(End::Shutdown(None)),
                Some(Command::Close { done }) => break Some(End::Shutdown(Some(done))),
                Some(Command::Request {
                    r,
                    frame,
                    waiter,
                    forget,
                }) => {
                    if let Some(channel) = forget {
                        self.session.forget(&channel);
                    }
                    self.session.wait(r, waiter);
                    frame
                }
                Some(Command::Subscribe {
                    r,
                    channel,
                    opts,
                    reply,
                }) => {
                    let frame =
                        self.session
                            .subscribe_request(RefText::new(r).as_str(), &channel, &opts);
                    self.session.wait(r, Waiter::Caller(reply));
                    frame
                }
            };
            // Registered before writing: if the write fails, the waiter fails with
            // `Disconnected` like every other call in flight.
            if let Err(e) = ws.feed(WsMessage::text(frame)).await {
                return Some(lost(e));
            }
            written += 1;
            if written == WRITE_BATCH {
                // The rest waits for the next round of the select, after reads.
                break None;
            }
            cmd = match self.cmds.try_recv() {
                Ok(next) => Some(next),
                Err(TryRecvError::Empty) => break None,
                Err(TryRecvError::Disconnected) => None,
            };
        };
        if let Err(e) = ws.flush().await {
            return Some(lost(e));
        }
        end
    }

    /// One frame from the server. `Some` when the phase ends.
    async fn on_frame(&mut self, ws: &mut Ws, msg: WsMessage) -> Option<End> {
        match msg {
            WsMessage::Text(text) => {
                self.session.on_text(text.as_str());
                if let Some(token) = self.session.take_adopted_token() {
                    if let TokenSource::Fixed(t) = &mut self.cfg.token {
                        *t = token;
                    }
                }
                None
            }
            WsMessage::Ping(_) => {
                // tungstenite queued the pong; send it now rather than at the next read.
                ws.flush().await.err().map(lost)
            }
            WsMessage::Close(frame) => {
                let (code, reason) = match frame {
                    Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                    None => (u16::from(CloseCode::Status), String::new()),
                };
                // Sends tungstenite's queued close reply; the socket is dropped right after.
                let _ = ws.flush().await;
                Some(End::Lost(DisconnectReason::Closed { code, reason }))
            }
            WsMessage::Binary(b) => {
                warn!(len = b.len(), "binary frame from server ignored");
                None
            }
            WsMessage::Pong(_) | WsMessage::Frame(_) => None,
        }
    }

    /// Reconnects until a connection opens (`Ok`) or the client is shut down (`Err`, with
    /// the `close()` call to answer, if any).
    ///
    /// In rounds: each round waits the backoff delay of its number (jittered), then tries
    /// every URL once, one after the other, starting with the one after the URL just lost
    /// (with one URL: that URL, exactly as before failover existed).
    async fn reconnect(&mut self) -> Result<Ws, Option<oneshot::Sender<()>>> {
        let mut tries: u32 = 0;
        loop {
            let delay = self.cfg.backoff.delay(self.attempt, &mut self.rng);
            self.attempt = self.attempt.saturating_add(1);
            debug!(?delay, attempt = self.attempt, "reconnect backoff");
            self.while_disconnected(tokio::time::sleep(delay)).await?;

            for _ in 0..self.urls.len() {
                self.index = (self.index + 1) % self.urls.len();
                let url = self.urls[self.index].clone();
                tries = tries.saturating_add(1);
                let result = match upgrade_request(&self.cfg, &url) {
                    Ok(req) => {
                        let attempt = open(
                            req,
                            self.ws_config,
                            self.cfg.connect_timeout,
                            self.tls.clone(),
                        );
                        self.while_disconnected(attempt).await?
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(ws) => {
                        info!(tries, %url, "reconnected");
                        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = url;
                        return Ok(ws);
                    }
                    Err(error) => {
                        debug!(%error, tries, %url, "reconnect attempt failed");
                        self.session.push_event(Event::ReconnectFailed {
                            attempt: tries,
                            url,
                            error,
                        });
                    }
                }
            }
        }
    }

    /// Runs `fut` while refusing commands with `NotConnected` and delivering events.
    async fn while_disconnected<F: Future>(
        &mut self,
        fut: F,
    ) -> Result<F::Output, Option<oneshot::Sender<()>>> {
        tokio::pin!(fut);
        loop {
            self.pump_events();
            let waiting_events = !self.events_closed && self.session.events_len() > 0;
            tokio::select! {
                out = &mut fut => return Ok(out),
                cmd = self.cmds.recv() => match cmd {
                    None => return Err(None),
                    Some(Command::Close { done }) => return Err(Some(done)),
                    Some(other) => other.refuse(Error::NotConnected),
                },
                room = wait_for_room(&self.events), if waiting_events => {
                    self.on_room(room);
                }
            }
        }
    }

    /// The app's event queue has room again (the top of the loop fills it), or is gone.
    fn on_room(&mut self, room: Result<(), mpsc::error::SendError<()>>) {
        if room.is_err() {
            self.events_closed = true;
            self.session.clear_events();
        }
    }

    /// Moves events from the outbox into the app's queue while there is room.
    fn pump_events(&mut self) {
        if self.events_closed {
            self.session.clear_events();
            return;
        }
        while let Some(ev) = self.session.pop_event() {
            match self.events.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(ev)) => {
                    self.session.unpop_event(ev);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    self.events_closed = true;
                    self.session.clear_events();
                    return;
                }
            }
        }
    }

    /// Sends a normal close and waits, bounded, for the server's answer.
    async fn close_socket(&mut self, ws: &mut Ws) {
        let handshake = async {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            ws.close(Some(frame)).await?;
            // Replies to requests written just before the close still reach their callers.
            while let Some(frame) = ws.next().await {
                if let WsMessage::Text(text) = frame? {
                    self.session.on_text(text.as_str());
                }
            }
            Ok::<(), WsError>(())
        };
        match tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(())) | Ok(Err(WsError::ConnectionClosed)) => {}
            Ok(Err(e)) => debug!(error = %e, "close handshake failed"),
            Err(_) => debug!("server did not answer the close frame in time"),
        }
    }

    /// Last steps of a shutdown: fail calls in flight, hand over what events fit, answer
    /// `close()`. Dropping `self` then closes the event queue.
    fn finish(&mut self, done: Option<oneshot::Sender<()>>) {
        self.session.on_close();
        // Commands still queued fail with Closed when the receiver is dropped with `self`.
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            cmd.refuse(Error::Closed);
        }
        self.pump_events();
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// Resolves when the event queue has a free slot. The slot is released at once: the driver
/// is the only sender, so it is still free when `pump_events` runs next. (Holding the
/// `Permit` across the `select!` would borrow the whole driver.)
async fn wait_for_room(events: &mpsc::Sender<Event>) -> Result<(), mpsc::error::SendError<()>> {
    events.reserve().await.map(drop)
}

fn lost(e: WsError) -> End {
    End::Lost(DisconnectReason::Transport(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_request_carries_the_bearer_token() {
        let cfg = ClientConfig::new("ws://127.0.0.1:9/ws", "abc.def.ghi");
        let req = upgrade_request(&cfg, &cfg.url).unwrap();
        assert_eq!(req.uri(), "ws://127.0.0.1:9/ws");
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer abc.def.ghi");
        assert!(req.headers()[header::AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn upgrade_request_asks_a_dynamic_token_each_time() {
        let n = Arc::new(AtomicU64::new(0));
        let counter = n.clone();
        let cfg = ClientConfig::new(
            "ws://127.0.0.1:9/ws",
            TokenSource::from_fn(move || format!("t{}", counter.fetch_add(1, Ordering::Relaxed))),
        );
        assert_eq!(
            upgrade_request(&cfg, &cfg.url).unwrap().headers()[header::AUTHORIZATION],
            "Bearer t0"
        );
        assert_eq!(
            upgrade_request(&cfg, &cfg.url).unwrap().headers()[header::AUTHORIZATION],
            "Bearer t1"
        );
    }

    #[test]
    fn bad_token_or_url_is_a_config_error() {
        let cfg = ClientConfig::new("ws://127.0.0.1:9/ws", "bad\ntoken");
        assert!(matches!(
            upgrade_request(&cfg, &cfg.url),
            Err(Error::InvalidConfig(_))
        ));
        let cfg = ClientConfig::new("ws://", "t");
        assert!(matches!(
            upgrade_request(&cfg, &cfg.url),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn http_refusals_map_to_errors() {
        use tokio_tungstenite::tungstenite::http::Response;
        let body = br#"{"success":false,"error":{"code":"WS_UNAUTHORIZED","message":"token expired","retryable":false}}"#;
        let resp = Response::builder()
            .status(401)
            .body(Some(body.to_vec()))
            .unwrap();
        assert_eq!(
            handshake_error(WsError::Http(Box::new(resp))),
            Error::Unauthorized {
                message: "token expired".into()
            }
        );
        let resp = Response::builder().status(401).body(None).unwrap();
        assert_eq!(
            handshake_error(WsError::Http(Box::new(resp))),
            Error::Unauthorized {
                message: "HTTP 401".into()
            }
        );
        let resp = Response::builder()
            .status(503)
            .body(Some(b"busy".to_vec()))
            .unwrap();
        assert_eq!(
            handshake_error(WsError::Http(Box::new(resp))),
            Error::Http {
                status: 503,
                message: "HTTP 503".into()
            }
        );
        assert!(matches!(
            handshake_error(WsError::ConnectionClosed),
            Error::Connect(_)
        ));
    }
}
