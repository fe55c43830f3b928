//! Ringbearer's runtime: one glommio executor per shard, SO_REUSEPORT listeners, the
//! WebSocket upgrade and protocol handling, the cross-shard mesh, fan-out to connections,
//! outgoing backlogs in priority order, and heartbeats.
//!
//! It does not persist anything (that is `ringbearer-persist`, composed by `server/`) and
//! holds no domain rules of its own: those are `ringbearer-core`'s.

pub mod api;
pub mod auth;
pub mod clock;
pub mod cluster;
mod config;
pub mod conn;
pub mod deflate;
pub mod fds;
pub mod host;
pub mod http;
pub mod journal;
pub mod mesh;
pub mod metrics;
mod notify;
pub mod outbox;
pub mod owner;
pub mod policy;
pub mod runtime;
pub mod shared;
pub mod signal;
pub mod stream;
pub mod tls;
pub mod watchdog;
pub mod weddings;
pub mod wire;
pub mod wsframe;

pub use api::{Api, HttpHandler, HttpRequest, HttpResponse};
pub use auth::TokenVerifier;
pub use config::{
    ClockConfig, DeflateConfig, EscalationConfig, IoConfig, RoutingConfig, SaturdayConfig,
    TlsConfig, WatchdogConfig,
};
pub use runtime::{start, start_with, ServerHandle, Store};
