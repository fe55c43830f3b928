//! The app's side: [`Client`], a cheap-to-clone handle whose methods send one request each
//! and await its reply, and [`Events`], the stream of what the server pushes.
//!
//! A call encodes its request in the caller's task (so a large payload is serialized off
//! the background task), takes a fresh `ref` from a shared counter, queues the frame for the
//! driver, and waits for the reply with that `ref`, bounded by `request_timeout` (the wait
//! for room in the command queue included). It does not touch the socket; the driver does.

use crate::config::ClientConfig;
use crate::driver::{self, Command, Driver};
use crate::error::Error;
use crate::session::{unexpected, Reply, Waiter};
use crate::state::{StateDoc, StateWrite};
use crate::types::{
    CreateChannel, Created, Event, Publish, Published, SubscribeOptions, Subscribed,
};
use crate::wire::{RefText, Request};
use serde_json::Value;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Capacity of the queue from the handles to the background task. A full queue makes
/// calls wait (within their timeout): back-pressure on a client that outruns its socket.
const COMMAND_QUEUE: usize = 256;

/// A connection to a Ringbearer server that reconnects by itself.
///
/// Cheap to clone: every clone talks to the same connection. The background task stops on
/// [`Client::close`], or when the last clone is dropped. Must be used inside a tokio
/// runtime. Every method fails fast with [`Error::NotConnected`] while the client is
/// reconnecting, and with [`Error::Closed`] once it is closed.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cmds: mpsc::Sender<Command>,
    /// The `ref` counter, shared with the driver (which numbers its resubscribes from it).
    refs: Arc<AtomicU64>,
    request_timeout: Duration,
    max_request_bytes: usize,
    /// The URL of the current (or last) connection; the driver updates it.
    current: Arc<Mutex<String>>,
}

impl Client {
    /// Connects once and starts the background task.
    ///
    /// With [`ClientConfig::failover_urls`], tries each server of the list once, in order
    /// (from `url`, or from a random one with [`ClientConfig::random_start`]), without
    /// delay between them, and keeps the first connection that opens.
    ///
    /// Fails if this first connection fails (on every server): [`Error::Unauthorized`] for
    /// HTTP 401 (with the server's message), [`Error::Http`] for another refusal,
    /// [`Error::Connect`] when no server can be reached, [`Error::InvalidConfig`] for a bad
    /// config. With several servers, the error is the first refusal (401 or other HTTP
    /// status) any of them gave, else the last server's. Later losses are reconnected
    /// automatically and reported through [`Events`].
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), Error> {
        config.validate().map_err(Error::InvalidConfig)?;
        let urls = config.urls();
        let tls = if urls.iter().any(|u| u.starts_with("wss://")) {
            Some(
                crate::tls::client_config(config.ca_file.as_deref())
                    .map_err(Error::InvalidConfig)?,
            )
        } else {
            None
        };
        let start = if config.random_start {
            rand::Rng::gen_range(&mut rand::thread_rng(), 0..urls.len())
        } else {
            0
        };
        let mut refusal = None;
        let mut last = None;
        let mut opened = None;
        for index in (0..urls.len()).map(|i| (start + i) % urls.len()) {
            let req = driver::upgrade_request(&config, &urls[index])?;
            match driver::open(
                req,
                config.websocket_config(),
                config.connect_timeout,
                tls.clone(),
            )
            .await
            {
                Ok(ws) => {
                    opened = Some((index, ws));
                    break;
                }
                Err(e @ Error::InvalidConfig(_)) => return Err(e),
                Err(e @ (Error::Unauthorized { .. } | Error::Http { .. })) => {
                    refusal.get_or_insert(e);
                }
                Err(e) => last = Some(e),
            }
        }
        let Some((index, ws)) = opened else {
            return Err(refusal
                .or(last)
                .unwrap_or_else(|| Error::Connect("no server url".into())));
        };

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(config.event_buffer);
        let refs = Arc::new(AtomicU64::new(1));
        let current = Arc::new(Mutex::new(urls[index].clone()));
        let inner = Inner {
            cmds: cmd_tx,
            refs: refs.clone(),
            request_timeout: config.request_timeout,
            max_request_bytes: config.max_request_bytes,
            current: current.clone(),
        };
        tokio::spawn(Driver::new(config, tls, cmd_rx, ev_tx, refs, index, current).run(ws));
        Ok((
            Client {
                inner: Arc::new(inner),
            },
            Events { rx: ev_rx },
        ))
    }

    /// The URL of the server this client is connected to, or, while it reconnects, was
    /// last connected to. With one server, always [`ClientConfig::url`].
    pub fn server_url(&self) -> String {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `create`: creates a channel, or returns the existing one of that name.
    pub async fn create(&self, req: &CreateChannel) -> Result<Created, Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::Create {
            r: Some(rt.as_str()),
            name: &req.name,
            channel_type: req.channel_type.as_deref(),
            wedding_id: req.wedding_id.as_deref(),
            permissions: req.permissions.as_ref(),
            members: &req.members,
            max_subscribers: req.max_subscribers,
            message_retention_hours: req.message_retention_hours,
        }
        .encode();
        match self.call(r, frame, None).await? {
            Reply::Created(c) => Ok(c),
            other => Err(unexpected("created", other.op())),
        }
    }

    /// `subscribe`: subscribes this connection to `channel`, and remembers the channel so it
    /// is resubscribed after every reconnect (until [`Client::unsubscribe`]).
    ///
    /// Sends `opts.last_seen_id`, or, when `None` and this client has seen the channel, the
    /// highest id it delivered; and the remembered `epoch` when known.
    ///
    /// The reply's messages are returned whole in [`Subscribed::messages`] AND the ones not
    /// seen before are emitted as [`Event::Message`], in order, before this returns. Apps
    /// that consume [`Events`] should take messages from there only.
    pub async fn subscribe(
        &self,
        channel: &str,
        opts: SubscribeOptions,
    ) -> Result<Subscribed, Error> {
        let (r, _) = self.next_ref();
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Subscribe {
            r,
            channel: channel.to_owned(),
            opts,
            reply: tx,
        };
        match self.exchange(cmd, rx).await? {
            Reply::Subscribed(s) => Ok(s),
            other => Err(unexpected("subscribed", other.op())),
        }
    }

    /// `unsubscribe`: ends the subscription (and the user's stored cursor). The client stops
    /// resubscribing the channel as soon as the request is sent.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::Unsubscribe {
            r: Some(rt.as_str()),
            channel,
        }
        .encode();
        match self.call(r, frame, Some(channel.to_owned())).await? {
            Reply::Unsubscribed => Ok(()),
            other => Err(unexpected("unsubscribed", other.op())),
        }
    }

    /// `publish`. Needs no subscription. After [`Error::Disconnected`] or
    /// [`Error::Timeout`] it is unknown whether the message was stored; set
    /// `idempotency_key` to make a repeat safe.
    pub async fn publish(&self, msg: &Publish) -> Result<Published, Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::Publish {
            r: Some(rt.as_str()),
            channel: &msg.channel,
            msg_type: &msg.msg_type,
            event: msg.event.as_deref(),
            priority: msg.priority,
            payload: &msg.payload,
            target_user_id: msg.target_user_id.as_deref(),
            target_roles: &msg.target_roles,
            idempotency_key: msg.idempotency_key.as_deref(),
            wedding_context: msg.wedding_context.as_ref(),
        }
        .encode();
        match self.call(r, frame, None).await? {
            Reply::Published(p) => Ok(p),
            other => Err(unexpected("published", other.op())),
        }
    }

    /// `state_get`: a shared-state document as stored (version 0 and a null value when
    /// never written). Needs read access to the channel, no subscription.
    pub async fn state_get(&self, channel: &str, doc: &str) -> Result<StateDoc, Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::StateGet {
            r: Some(rt.as_str()),
            channel,
            doc,
        }
        .encode();
        match self.call(r, frame, None).await? {
            Reply::State(d) => Ok(d),
            other => Err(unexpected("state", other.op())),
        }
    }

    /// `state_set`: replaces a document's value (a JSON object), based on `version` (0 to
    /// create). A stale write is [`StateWrite::Conflict`], not an error.
    pub async fn state_set(
        &self,
        channel: &str,
        doc: &str,
        version: u64,
        value: &Value,
    ) -> Result<StateWrite, Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::StateSet {
            r: Some(rt.as_str()),
            channel,
            doc,
            version,
            value,
        }
        .encode();
        self.state_write(r, frame).await
    }

    /// `state_patch`: replaces the top-level `fields` of a document (a `null` removes one),
    /// all or none, based on `version`.
    pub async fn state_patch(
        &self,
        channel: &str,
        doc: &str,
        version: u64,
        fields: &Value,
    ) -> Result<StateWrite, Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::StatePatch {
            r: Some(rt.as_str()),
            channel,
            doc,
            version,
            fields,
        }
        .encode();
        self.state_write(r, frame).await
    }

    async fn state_write(&self, r: u64, frame: String) -> Result<StateWrite, Error> {
        match self.call(r, frame, None).await? {
            Reply::StateWrite(w) => Ok(w),
            other => Err(unexpected("state_ok", other.op())),
        }
    }

    /// `ack`: everything up to `id` on `channel` counts as delivered to this user
    /// (cumulative; never moves backwards). Sent with a `ref`; returns on `ok`.
    pub async fn ack(&self, channel: &str, id: u64) -> Result<(), Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::Ack {
            r: Some(rt.as_str()),
            channel,
            id,
        }
        .encode();
        self.expect_ok(r, frame).await
    }

    /// `presence`: sets this connection's presence meta (a JSON object) on a subscribed
    /// channel. Every subscriber, this one included, then gets an [`Event::PresenceDiff`].
    pub async fn presence(&self, channel: &str, meta: &Value) -> Result<(), Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::Presence {
            r: Some(rt.as_str()),
            channel,
            meta,
        }
        .encode();
        self.expect_ok(r, frame).await
    }

    /// `typing`: relayed to the channel's other subscribers as [`Event::Typing`].
    pub async fn typing(&self, channel: &str) -> Result<(), Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::Typing {
            r: Some(rt.as_str()),
            channel,
        }
        .encode();
        self.expect_ok(r, frame).await
    }

    /// `token`: replaces the connection's token (same `sub` and `org`). When the config's
    /// token is [`crate::TokenSource::Fixed`], an accepted token is also used for later
    /// reconnects.
    pub async fn refresh_token(&self, token: &str) -> Result<(), Error> {
        let (r, rt) = self.next_ref();
        let frame = Request::Token {
            r: Some(rt.as_str()),
            token,
        }
        .encode();
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::Token(tx, token.to_owned());
        self.check_size(&frame)?;
        match self
            .exchange(
                Command::Request {
                    r,
                    frame,
                    waiter,
                    forget: None,
                },
                rx,
            )
            .await?
        {
            Reply::Ok => Ok(()),
            other => Err(unexpected("ok", other.op())),
        }
    }

    /// `ping`: an application-level round trip. Returns the time it took.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let started = tokio::time::Instant::now();
        let (r, rt) = self.next_ref();
        let frame = Request::Ping {
            r: Some(rt.as_str()),
        }
        .encode();
        match self.call(r, frame, None).await? {
            Reply::Pong => Ok(started.elapsed()),
            other => Err(unexpected("pong", other.op())),
        }
    }

    /// Closes the connection cleanly (close code 1000) and stops the background task;
    /// returns when it has stopped. Calls in flight fail with [`Error::Closed`], later calls
    /// on any clone too, and [`Events`] ends after the events already queued. Calling it
    /// again, or on a client already stopped, returns at once.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .cmds
            .send(Command::Close { done: tx })
            .await
            .is_ok()
        {
            // An error means the task ended another way: closed all the same.
            let _ = rx.await;
        }
    }

    /// True once the background task has stopped (after [`Client::close`]).
    pub fn is_closed(&self) -> bool {
        self.inner.cmds.is_closed()
    }

    fn next_ref(&self) -> (u64, RefText) {
        let r = self.inner.refs.fetch_add(1, Ordering::Relaxed);
        (r, RefText::new(r))
    }

    fn check_size(&self, frame: &str) -> Result<(), Error> {
        let limit = self.inner.max_request_bytes;
        if frame.len() > limit {
            return Err(Error::RequestTooLarge {
                bytes: frame.len(),
                limit,
            });
        }
        Ok(())
    }

    async fn expect_ok(&self, r: u64, frame: String) -> Result<(), Error> {
        match self.call(r, frame, None).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected("ok", other.op())),
        }
    }

    async fn call(&self, r: u64, frame: String, forget: Option<String>) -> Result<Reply, Error> {
        self.check_size(&frame)?;
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Request {
            r,
            frame,
            waiter: Waiter::Caller(tx),
            forget,
        };
        self.exchange(cmd, rx).await
    }

    /// Queues `cmd` and waits for its reply, both within the request timeout.
    async fn exchange(
        &self,
        cmd: Command,
        rx: oneshot::Receiver<Result<Reply, Error>>,
    ) -> Result<Reply, Error> {
        let round_trip = async {
            self.inner.cmds.send(cmd).await.map_err(|_| Error::Closed)?;
            // A dropped sender means the task ended without answering: it was closed.
            rx.await.map_err(|_| Error::Closed)?
        };
        tokio::time::timeout(self.inner.request_timeout, round_trip)
            .await
            .unwrap_or(Err(Error::Timeout))
    }
}

/// What the server pushes, and what happens to the connection, in order. See [`Event`].
///
/// Ends (`None`) when the client is closed or its last handle dropped. IMPORTANT: read it
/// steadily. When the app stops reading, the client stops reading the socket once
/// [`ClientConfig::event_buffer`] and a small internal queue are full (back-pressure: the
/// server eventually drops the connection as a slow consumer, and the client resumes).
/// While a request waits for its reply the client reads on (up to a few thousand buffered
/// events), so awaiting a call such as `ack` inside the event loop is fine. Dropping
/// `Events` is fine too: events are then discarded.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client has stopped and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready now.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
