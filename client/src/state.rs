//! Shared state (docs/protocol.md "Shared state"): a channel's versioned documents, read
//! with [`crate::Client::state_get`] and written with [`crate::Client::state_set`] /
//! [`crate::Client::state_patch`], compare-and-set on a version. A stale write comes back
//! as [`StateWrite::Conflict`] with the current document (re-base on its `version` and
//! retry), unless the writer's role outranks the last writer's; a writer overridden that
//! way hears [`crate::Event::StateOverridden`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who wrote a document's version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateWriter {
    pub user_id: String,
    pub org: String,
    pub role: String,
}

/// A document as stored: `version` 0, `value` null and no `writer` when never written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct StateDoc {
    pub channel: String,
    pub doc: String,
    pub version: u64,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub writer: Option<StateWriter>,
}

/// The writer (and its version) a winning stale write replaced.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Overrode {
    pub user_id: String,
    pub org: String,
    pub role: String,
    pub version: u64,
}

/// The outcome of a write.
#[derive(Clone, Debug, PartialEq)]
pub enum StateWrite {
    /// Stored: the document's new `version`, and the id of the `state` message that
    /// carries the change.
    Applied {
        version: u64,
        id: u64,
        overrode: Option<Overrode>,
    },
    /// Refused (nothing applied): the write was based on `your_version`; the document is
    /// now `current`.
    Conflict {
        current: StateDoc,
        your_version: u64,
    },
}

#[derive(Deserialize)]
pub(crate) struct StateOkWire {
    pub version: u64,
    pub id: u64,
    #[serde(default)]
    pub overrode: Option<Overrode>,
}

#[derive(Deserialize)]
pub(crate) struct YourVersionWire {
    pub your_version: u64,
}

#[derive(Deserialize)]
pub(crate) struct StateOverriddenWire {
    pub channel: String,
    pub doc: String,
    pub version: u64,
    pub your_version: u64,
    pub by: StateWriter,
}
