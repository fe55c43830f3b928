//! Ringbearer's domain, with no I/O: channel names and routing, tenants, roles and
//! permissions, token claims and the access rule, limits, the message envelope and its rkyv
//! frame, the client protocol, the per-channel kept window, cursors and presence.
//!
//! Nothing here opens a socket or a file or reads the clock: bytes and time come in as
//! arguments, so every rule is tested deterministically (STYLE.md, after quinn-proto).

pub mod access;
pub mod calendar;
pub mod channel;
pub mod channel_state;
pub mod error;
pub mod identity;
pub mod limits;
pub mod message;
pub mod presence;
pub mod presence_meta;
pub mod protocol;
pub mod rate;
pub mod state_doc;
pub mod time;
pub mod window;

pub use access::{Action, Claims, Role, Tier};
pub use channel::{shard_for, ChannelName, ChannelType, Permissions, Scope};
pub use error::ErrorCode;
pub use identity::UserKey;
pub use limits::Limits;
pub use message::{MessageFrame, Priority};
