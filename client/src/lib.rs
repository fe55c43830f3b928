//! Rust client for Ringbearer's WebSocket protocol (docs/protocol.md): connect with a bearer
//! token, create channels, subscribe, publish, ack, presence, typing, token refresh, ping,
//! and shared state ([`Client::state_get`], [`Client::state_set`], [`Client::state_patch`]:
//! compare-and-set on a version; [`Event::StateOverridden`] when a higher role's stale write
//! replaced this user's version).
//!
//! What it does for the app:
//! - **One background task per client** owns the socket; [`Client`] is a cheap-to-clone
//!   handle whose methods each send one request with a fresh `ref` and await the reply with
//!   that `ref` (an `error` reply becomes [`Error::Server`]), bounded by
//!   [`ClientConfig::request_timeout`].
//! - **Automatic reconnect**: when the connection is lost (not after [`Client::close`]) it
//!   emits [`Event::Disconnected`], reconnects forever with exponential [`Backoff`] and full
//!   jitter (to the next server of its list, with several; see "Several servers" below),
//!   emits [`Event::Reconnected`], and resubscribes every channel it was subscribed
//!   to with the highest id it saw and the channel's `epoch`, emitting
//!   [`Event::Resubscribed`] and then the recovered messages. While disconnected, calls fail
//!   fast with [`Error::NotConnected`]; calls in flight at the loss fail with
//!   [`Error::Disconnected`].
//! - **De-duplication by id** (the server is at-least-once): a message is handed to the app
//!   once, whether it came live or inside a `subscribed` reply.
//! - WebSocket pings are answered at once; a connection silent for
//!   [`ClientConfig::idle_timeout`] is treated as lost.
//!
//! - `wss://` with rustls: it trusts the PEM certificates of [`ClientConfig::ca_file`]
//!   (e.g. the `cert.pem` of `ringbearer dev-cert`), else the system's CA bundle.
//!
//! # Several servers (failover)
//!
//! [`ClientConfig::failover_urls`] (or [`ClientConfig::with_failover`]) lists further
//! servers after [`ClientConfig::url`] — a standby, the other half of a load-balancer pair,
//! the nodes of a cluster. At most [`MAX_SERVER_URLS`] (16) URLs in all, no repeats.
//!
//! - **Order**: the given order. [`Client::connect`] starts at `url` (or, with
//!   [`ClientConfig::random_start`], at a random server, to spread clients over equal
//!   servers) and tries each server once, without delay, keeping the first that opens.
//! - **Moving on**: every failed attempt and every lost connection moves to the next
//!   server of the list, wrapping around (round robin). Reconnecting goes in rounds: a
//!   round waits the [`Backoff`] delay of its number (full jitter, growing per round,
//!   capped at `backoff.max`), then tries each server once, back to back, starting with
//!   the one after the server just lost; each attempt is bounded by
//!   [`ClientConfig::connect_timeout`]. The round count resets, as before, after a
//!   connection that stayed up for `backoff.max`. With one URL this is exactly the plain
//!   reconnect.
//! - **Going back to the first server**: never by itself. A working connection is kept;
//!   the first server gets its turn again only when the current one fails. (A move costs
//!   a reconnect, a resubscribe and a presence leave and join; servers sharing the logs
//!   are equally good.) To return to a primary, close the client and connect a new one.
//! - **Tokens**: the same [`TokenSource`] for every server, asked before every attempt; a
//!   token accepted by [`Client::refresh_token`] is used for later attempts on every
//!   server. So the servers must accept the same tokens (one secret or key set). A 401 from
//!   one server is reported and the next server is tried, like any failure.
//! - **What the app sees**: [`Event::ReconnectFailed`] names the server (`url`) of each
//!   failed attempt; [`Client::server_url`] is the server of the current (or last)
//!   connection, so after [`Event::Reconnected`] it says where the client landed. When
//!   every server refuses the first connection, [`Client::connect`] returns the first
//!   refusal (401 or other HTTP status), else the last server's error.
//! - **Resume**: every channel is resubscribed with its last seen id and epoch, exactly as
//!   after a reconnect to the same server. A server that has the channel's log (the same
//!   data directory, or a cluster) answers `recovered: true` with what was missed: nothing
//!   missing, nothing twice. A server with a log of its own has another epoch: the reply
//!   is `recovered: false` with that server's kept messages, and de-duplication starts
//!   over for the new epoch; a server without the channel makes it a
//!   [`Event::ResubscribeFailed`]. Idempotency keys hold across servers only when they
//!   share the log.
//!
//! What it does not do: persist anything across processes (keep the
//! last id yourself and pass it as [`SubscribeOptions::last_seen_id`]), or acknowledge
//! messages by itself (call [`Client::ack`]).
//!
//! # Example
//!
//! ```no_run
//! use ringbearer_client::{
//!     Client, ClientConfig, CreateChannel, Event, Priority, Publish, SubscribeOptions,
//! };
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), ringbearer_client::Error> {
//! let config = ClientConfig::new("ws://127.0.0.1:8080/ws", "<jwt>");
//! let (client, mut events) = Client::connect(config).await?;
//!
//! let channel = "wedding:main:w-12345";
//! client
//!     .create(&CreateChannel {
//!         channel_type: Some("shared".into()),
//!         wedding_id: Some("w-12345".into()),
//!         ..CreateChannel::new(channel)
//!     })
//!     .await?;
//!
//! // Messages kept since the last visit come back in `sub.messages` and, de-duplicated,
//! // as `Event::Message`s: consume one or the other, not both.
//! let sub = client.subscribe(channel, SubscribeOptions::default()).await?;
//! println!("epoch {} recovered {}", sub.epoch, sub.recovered);
//!
//! let published = client
//!     .publish(&Publish {
//!         event: Some("timeline:cake_cutting:moved".into()),
//!         priority: Priority::High,
//!         idempotency_key: Some("cake-1".into()),
//!         ..Publish::new(channel, "timeline_change", json!({"at": "21:15"}))
//!     })
//!     .await?;
//! println!("published id {}", published.id);
//!
//! // Read events steadily (here, in another task).
//! let acker = client.clone();
//! tokio::spawn(async move {
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::Message(m) => {
//!                 println!("{} #{}: {}", m.channel, m.id, m.payload);
//!                 let _ = acker.ack(&m.channel, m.id).await;
//!             }
//!             Event::Resubscribed { channel, recovered: false } => {
//!                 println!("{channel}: messages were lost while away; reload state");
//!             }
//!             other => println!("{other:?}"),
//!         }
//!     }
//! });
//!
//! client.close().await;
//! # Ok(())
//! # }
//! ```

mod backoff;
mod client;
pub mod codes;
mod config;
mod dedup;
mod driver;
mod error;
mod session;
mod state;
mod tls;
mod types;
mod wire;

pub use backoff::{Backoff, Jitter};
pub use client::{Client, Events};
pub use config::{
    ClientConfig, TokenSource, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EVENT_BUFFER, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_REQUEST_TIMEOUT, MAX_SERVER_URLS,
    MIN_MAX_MESSAGE_BYTES,
};
pub use error::{DisconnectReason, Error};
pub use state::{Overrode, StateDoc, StateWrite, StateWriter};
pub use types::{
    CreateChannel, Created, Event, Message, PresenceEntry, Priority, Publish, Published,
    SenderInfo, SubscribeOptions, Subscribed, WeddingContext,
};
