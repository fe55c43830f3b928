//! What travels between shards, and the router that carries it. Requests go to a channel's
//! owner as one typed envelope (`owner::Request`); answers come back as typed replies
//! (`owner::Reply`), rendered only at the door that asked; a stored message travels as one
//! shared rkyv frame per subscribing shard, and presence and typing as one shared event.

pub mod router;

use crate::owner::{ChannelEvent, Reply, Request};
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::message::FrameBytes;
use ringbearer_core::ChannelName;
use std::sync::Arc;

pub use router::Router;

pub enum ShardMsg {
    /// A request for the channel's owner.
    Request(Request),
    /// A connection of the sending shard ended: its subscriptions to these channels (all
    /// owned by the receiving shard) go offline.
    Disconnect {
        conn: ConnRef,
        channels: Vec<ChannelName>,
    },
    /// The owner's answer to a connection or a REST call of the receiving shard.
    Reply {
        to: ConnRef,
        r#ref: Option<String>,
        reply: Reply,
    },
    /// A stored message for the receiving shard's subscribers of its channel.
    Deliver { frame: Arc<FrameBytes> },
    /// A presence change or typing for the receiving shard's subscribers of `channel`,
    /// except `except`.
    Event {
        channel: ChannelName,
        event: Arc<ChannelEvent>,
        except: Vec<ConnRef>,
    },
}
