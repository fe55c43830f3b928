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
//!   jitter, emits [`Event::Reconnected`], and resubscribes every channel it was subscribed
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
