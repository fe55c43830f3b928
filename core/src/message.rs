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
    /// `RoleSet` bits: only subscribers holding one of these roles see it (0: no role
    /// target). Frame version 2.
    pub target_roles: u16,
    /// Raw JSON object.
    pub wedding_context: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Frame bytes, 16-byte aligned as rkyv wants them.
pub type FrameBytes = rkyv::util::AlignedVec<16>;

/// The frame version this code writes (docs/wal.md "Message frames").
pub const FRAME_VERSION: u8 = 2;

/// Length of the prefix every frame since version 2 starts with: keeps the archive after it
/// 16-byte aligned.
pub const FRAME_PREFIX_BYTES: usize = 16;

/// The prefix of a version-2 frame: `0xFF "RBF"`, the version, then `0xFF` bytes. A
/// version-1 frame (no prefix) can never start this way: its archive opens either with a
/// string's bytes (UTF-8, never `0xFF`) or, when every string is inline, with the root
/// struct, whose `ts_ms` would then read `u64::MAX` — a time no clock gives.
const FRAME_PREFIX: [u8; FRAME_PREFIX_BYTES] = [
    0xFF,
    b'R',
    b'B',
    b'F',
    FRAME_VERSION,
    0xFF,
    0xFF,
    0xFF,
    0xFF,
    0xFF,
    0xFF,
    0xFF,
    0xFF,
    0xFF,
    0xFF,
    0xFF,
];

impl MessageFrame {
    /// The frame as it travels and is logged: the version prefix, then the rkyv archive.
    pub fn encode(&self) -> FrameBytes {
        // Serialized straight after the prefix, in one buffer: rkyv's offsets are relative,
        // and the prefix keeps the archive's alignment, so the tail is the archive itself.
        let strings = self.channel.len()
            + self.msg_type.len()
            + self.payload.len()
            + self.sender_user_id.len()
            + self.sender_org.len()
            + self.event.as_ref().map_or(0, String::len)
            + self.target_user_id.as_ref().map_or(0, String::len)
            + self.target_org.as_ref().map_or(0, String::len)
            + self.wedding_context.as_ref().map_or(0, String::len)
            + self.idempotency_key.as_ref().map_or(0, String::len);
        let mut out = FrameBytes::with_capacity(FRAME_PREFIX_BYTES + 160 + strings);
        out.extend_from_slice(&FRAME_PREFIX);
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, out)
            .expect("a MessageFrame always serializes")
    }
}

/// Reads a current-version frame in place, checking its structure (bytecheck). Frames from
/// our own shards always pass; the check guards the log's recovery path against corrupt
/// bytes. Frames logged by an older version go through [`upgrade_frame`] first.
pub fn access_frame(bytes: &[u8]) -> Result<&ArchivedMessageFrame, rancor::Error> {
    let archive = match bytes.strip_prefix(&FRAME_PREFIX[..]) {
        Some(a) => a,
        None => {
            use rancor::Source;
            return Err(rancor::Error::new(NotCurrentFrame));
        }
    };
    rkyv::access::<ArchivedMessageFrame, rancor::Error>(archive)
}

#[derive(Debug)]
struct NotCurrentFrame;

impl std::fmt::Display for NotCurrentFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a version-{FRAME_VERSION} message frame")
    }
}

impl std::error::Error for NotCurrentFrame {}

/// A message frame as version 1 wrote it (no prefix, no `target_roles`): read only when a
/// log written before version 2 is recovered.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MessageFrameV1 {
    pub id: u64,
    pub ts_ms: u64,
    pub channel: String,
    pub msg_type: String,
    pub event: Option<String>,
    pub priority: u8,
    pub payload: String,
    pub sender_user_id: String,
    pub sender_org: String,
    pub sender_role: u8,
    pub target_user_id: Option<String>,
    pub target_org: Option<String>,
    pub wedding_context: Option<String>,
    pub idempotency_key: Option<String>,
}

impl MessageFrameV1 {
    pub fn encode(&self) -> FrameBytes {
        rkyv::to_bytes::<rancor::Error>(self).expect("a MessageFrameV1 always serializes")
    }
}

/// A logged frame in the current version: current frames as they are, version-1 frames
/// converted (no role target). `None` when the bytes are neither (corrupt).
pub fn upgrade_frame(bytes: &[u8]) -> Option<FrameBytes> {
    let mut aligned = FrameBytes::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    if access_frame(&aligned).is_ok() {
        return Some(aligned);
    }
    let old = rkyv::access::<ArchivedMessageFrameV1, rancor::Error>(&aligned).ok()?;
    let old: MessageFrameV1 = rkyv::deserialize::<MessageFrameV1, rancor::Error>(old).ok()?;
    let f = MessageFrame {
        id: old.id,
        ts_ms: old.ts_ms,
        channel: old.channel,
        msg_type: old.msg_type,
        event: old.event,
        priority: old.priority,
        payload: old.payload,
        sender_user_id: old.sender_user_id,
        sender_org: old.sender_org,
        sender_role: old.sender_role,
        target_user_id: old.target_user_id,
        target_org: old.target_org,
        target_roles: 0,
        wedding_context: old.wedding_context,
        idempotency_key: old.idempotency_key,
    };
    Some(f.encode())
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

    /// The roles it is for (empty: not targeted at roles).
    pub fn target_roles(&self) -> crate::access::RoleSet {
        crate::access::RoleSet::from_bits(self.target_roles.to_native())
    }

    /// Who it is for, as the kept window stores it.
    pub fn target_of(&self) -> crate::identity::Target {
        crate::identity::Target {
            user: self
                .target()
                .map(|(o, s)| crate::identity::UserKey::new(o, s)),
            roles: self.target_roles(),
        }
    }

    /// Whether `viewer` (already allowed on the channel) holding `role` may see this
    /// message: the one rule of every route (live, resume, history, REST, counts).
    pub fn visible_to(&self, viewer: &crate::identity::UserKey, role: Option<Role>) -> bool {
        crate::identity::may_see(self.target(), self.target_roles(), viewer, role)
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
    let roles = f.target_roles();
    if !roles.is_empty() {
        out.extend_from_slice(b",\"target_roles\":[");
        for (i, r) in roles.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(r.as_str().as_bytes());
            out.push(b'"');
        }
        out.push(b']');
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
            target_roles: 0,
            wedding_context: Some(r#"{"wedding_id":"w-1"}"#.into()),
            idempotency_key: Some("k1".into()),
        }
    }

    fn sample_v1() -> MessageFrameV1 {
        let f = sample();
        MessageFrameV1 {
            id: f.id,
            ts_ms: f.ts_ms,
            channel: f.channel,
            msg_type: f.msg_type,
            event: f.event,
            priority: f.priority,
            payload: f.payload,
            sender_user_id: f.sender_user_id,
            sender_org: f.sender_org,
            sender_role: f.sender_role,
            target_user_id: Some("u-9".into()),
            target_org: Some("org-a".into()),
            wedding_context: f.wedding_context,
            idempotency_key: f.idempotency_key,
        }
    }

    #[test]
    fn a_version_1_frame_is_upgraded_and_never_read_as_current() {
        let v1 = sample_v1().encode();
        assert!(access_frame(&v1).is_err(), "no prefix: not current");
        let up = upgrade_frame(&v1).expect("upgraded");
        let a = access_frame(&up).unwrap();
        assert_eq!(a.id(), 42);
        assert_eq!(a.target(), Some(("org-a", "u-9")));
        assert!(a.target_roles().is_empty());
        // A current frame passes through unchanged.
        let cur = sample().encode();
        assert_eq!(&upgrade_frame(&cur).unwrap()[..], &cur[..]);
        // Short strings (all inline) and an id whose low byte is 0xFF still are version 1.
        let mut tiny = sample_v1();
        tiny.id = 0xFF;
        tiny.channel = "form:a:b".into();
        tiny.msg_type = "t".into();
        tiny.event = None;
        tiny.payload = "1".into();
        tiny.sender_user_id = "u".into();
        tiny.sender_org = "o".into();
        tiny.target_user_id = None;
        tiny.target_org = None;
        tiny.wedding_context = None;
        tiny.idempotency_key = None;
        let b = tiny.encode();
        assert!(access_frame(&b).is_err());
        assert_eq!(
            access_frame(&upgrade_frame(&b).unwrap()).unwrap().id(),
            0xFF
        );
        assert!(upgrade_frame(b"garbage that is not a frame at all!").is_none());
    }

    #[test]
    fn role_targets_round_trip_and_render() {
        use crate::access::RoleSet;
        let mut f = sample();
        f.target_roles = RoleSet::of([Role::Couple, Role::Coordinator]).bits();
        let bytes = f.encode();
        let a = access_frame(&bytes).unwrap();
        let viewer = crate::UserKey::new("org-a", "u-5");
        assert!(a.visible_to(&viewer, Some(Role::Couple)));
        assert!(!a.visible_to(&viewer, Some(Role::Photographer)));
        let mut out = Vec::new();
        render_message_json(a, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["target_roles"],
            serde_json::json!(["couple", "coordinator"])
        );
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
    fn the_frame_is_the_prefix_then_the_plain_archive() {
        let f = sample();
        let plain = rkyv::to_bytes::<rancor::Error>(&f).unwrap();
        let framed = f.encode();
        assert_eq!(&framed[..FRAME_PREFIX_BYTES], &FRAME_PREFIX[..]);
        assert_eq!(&framed[FRAME_PREFIX_BYTES..], &plain[..]);
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
