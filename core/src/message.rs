//! The message envelope (SPEC §2), its priorities, and its rkyv frame: the bytes that travel
//! from a channel's owner shard to every subscribing shard (and, with the durability issue,
//! into the log). A receiving shard reads the frame in place and renders the client's JSON
//! once ([`render_message_json`]); those bytes are then shared by every local subscriber.

use crate::access::Role;
use rkyv::rancor;
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low = 0,
    #[default]
    Normal = 1,
    High = 2,
    Critical = 3,
    /// Above `critical` (SPEC §2): only for roles a channel's `admin` list names (or
    /// `limits.emergency_roles`), exempt from every rate but its own abuse ceiling
    /// (`emergency_messages_per_min`), always audited.
    Emergency = 4,
}

impl Priority {
    /// Highest first: the order a connection's backlog is drained in (SPEC §2.6).
    pub const DRAIN_ORDER: [Priority; 5] = [
        Priority::Emergency,
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            "critical" => Some(Priority::Critical),
            "emergency" => Some(Priority::Emergency),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
            Priority::Emergency => "emergency",
        }
    }

    pub fn from_code(c: u8) -> Priority {
        match c {
            0 => Priority::Low,
            2 => Priority::High,
            3 => Priority::Critical,
            4 => Priority::Emergency,
            _ => Priority::Normal,
        }
    }
}

/// One published message as a frame. Strings holding JSON (`payload`, `wedding_context`)
/// were validated as JSON at ingress and are copied verbatim into the client's JSON.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MessageFrame {
    pub id: u64,
    pub ts_ms: u64,
    pub channel: String,
    pub msg_type: String,
    pub event: Option<String>,
    /// `Priority as u8`.
    pub priority: u8,
    /// Raw JSON.
    pub payload: String,
    pub sender_user_id: String,
    /// The sender's organization: with `sender_user_id`, who sent it (SPEC §1 identity).
    pub sender_org: String,
    /// `Role::code()`.
    pub sender_role: u8,
    pub target_user_id: Option<String>,
    /// The organization of `target_user_id` (set whenever it is): a target is one user of
    /// one organization, never every organization's user with that id.
    pub target_org: Option<String>,
    /// Raw JSON object.
    pub wedding_context: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Frame bytes, 16-byte aligned as rkyv wants them.
pub type FrameBytes = rkyv::util::AlignedVec<16>;

impl MessageFrame {
    pub fn encode(&self) -> FrameBytes {
        rkyv::to_bytes::<rancor::Error>(self).expect("a MessageFrame always serializes")
    }
}

/// Reads a frame in place, checking its structure (bytecheck). Frames from our own shards
/// always pass; the check guards the log's recovery path against corrupt bytes.
pub fn access_frame(bytes: &[u8]) -> Result<&ArchivedMessageFrame, rancor::Error> {
    rkyv::access::<ArchivedMessageFrame, rancor::Error>(bytes)
}

impl ArchivedMessageFrame {
    pub fn id(&self) -> u64 {
        self.id.to_native()
    }
    pub fn priority(&self) -> Priority {
        Priority::from_code(self.priority)
    }
    /// The target as (`org`, `sub`), for [`crate::identity::may_see`].
    pub fn target(&self) -> Option<(&str, &str)> {
        let sub = self.target_user_id.as_ref()?;
        let org = self.target_org.as_ref().map(|o| o.as_str()).unwrap_or("");
        Some((org, sub.as_str()))
    }

    /// Whether `viewer` (already allowed on the channel) may see this message: the one rule
    /// of every route (live, resume, history, REST, counts).
    pub fn visible_to(&self, viewer: &crate::identity::UserKey) -> bool {
        crate::identity::may_see(self.target(), viewer)
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// Renders the `message` op the client receives, into `out`.
pub fn render_message_json(f: &ArchivedMessageFrame, out: &mut Vec<u8>) {
    out.reserve(128 + f.payload.len());
    out.extend_from_slice(b"{\"op\":\"message\",\"channel\":");
    push_json_str(out, f.channel.as_str());
    out.extend_from_slice(b",\"id\":");
    out.extend_from_slice(itoa(f.id()).as_bytes());
    out.extend_from_slice(b",\"type\":");
    push_json_str(out, f.msg_type.as_str());
    if let Some(e) = f.event.as_ref() {
        out.extend_from_slice(b",\"event\":");
        push_json_str(out, e.as_str());
    }
    out.extend_from_slice(b",\"priority\":\"");
    out.extend_from_slice(f.priority().as_str().as_bytes());
    out.extend_from_slice(b"\",\"payload\":");
    out.extend_from_slice(f.payload.as_bytes());
    out.extend_from_slice(b",\"sender\":{\"user_id\":");
    push_json_str(out, f.sender_user_id.as_str());
    out.extend_from_slice(b",\"org\":");
    push_json_str(out, f.sender_org.as_str());
    out.extend_from_slice(b",\"role\":\"");
    out.extend_from_slice(
        Role::from_code(f.sender_role)
            .map(Role::as_str)
            .unwrap_or("supplier")
            .as_bytes(),
    );
    out.extend_from_slice(b"\"},\"ts\":");
    out.extend_from_slice(itoa(f.ts_ms.to_native()).as_bytes());
    if let Some(t) = f.target_user_id.as_ref() {
        out.extend_from_slice(b",\"target_user_id\":");
        push_json_str(out, t.as_str());
        if let Some(o) = f.target_org.as_ref() {
            out.extend_from_slice(b",\"target_org\":");
            push_json_str(out, o.as_str());
        }
    }
    if let Some(w) = f.wedding_context.as_ref() {
        out.extend_from_slice(b",\"wedding_context\":");
        out.extend_from_slice(w.as_bytes());
    }
    if let Some(k) = f.idempotency_key.as_ref() {
        out.extend_from_slice(b",\"idempotency_key\":");
        push_json_str(out, k.as_str());
    }
    out.push(b'}');
}

fn itoa(v: u64) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MessageFrame {
        MessageFrame {
            id: 42,
            ts_ms: 1_795_341_600_000,
            channel: "wedding:main:w-1".into(),
            msg_type: "timeline_change".into(),
            event: Some("timeline:cake\"moved".into()),
            priority: Priority::High as u8,
            payload: r#"{"at":"21:15","n":[1,2]}"#.into(),
            sender_user_id: "u-1".into(),
            sender_org: "org-a".into(),
            sender_role: Role::Coordinator.code(),
            target_user_id: None,
            target_org: None,
            wedding_context: Some(r#"{"wedding_id":"w-1"}"#.into()),
            idempotency_key: Some("k1".into()),
        }
    }

    #[test]
    fn frame_round_trips_and_renders_valid_json() {
        let f = sample();
        let bytes = f.encode();
        let a = access_frame(&bytes).unwrap();
        assert_eq!(a.id(), 42);
        assert_eq!(a.priority(), Priority::High);
        let back: MessageFrame = rkyv::deserialize::<MessageFrame, rancor::Error>(a).unwrap();
        assert_eq!(back, f);
        let mut out = Vec::new();
        render_message_json(a, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["op"], "message");
        assert_eq!(v["id"], 42);
        assert_eq!(v["event"], "timeline:cake\"moved");
        assert_eq!(v["payload"]["n"][1], 2);
        assert_eq!(v["sender"]["role"], "coordinator");
        assert_eq!(v["wedding_context"]["wedding_id"], "w-1");
        assert_eq!(v["priority"], "high");
        assert!(v.get("target_user_id").is_none());
    }

    #[test]
    fn corrupt_frames_are_refused_not_trusted() {
        let bytes = sample().encode();
        let mut bad = FrameBytes::new();
        bad.extend_from_slice(&bytes[..bytes.len() / 2]);
        assert!(access_frame(&bad).is_err());
    }

    #[test]
    fn drain_order_is_highest_first() {
        let mut v = Priority::DRAIN_ORDER.to_vec();
        v.sort();
        v.reverse();
        assert_eq!(v, Priority::DRAIN_ORDER);
    }
}
