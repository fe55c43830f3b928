//! The client protocol of `GET /ws` (SPEC §4, `docs/protocol.md`): parsing requests into
//! typed values with the SPEC's error codes, and rendering replies.
//!
//! Requests are parsed in one pass into a flat struct of optional fields and then checked per
//! `op`. (serde's internally tagged enums buffer their content and cannot carry borrowed raw
//! JSON, which we want for `payload`; the flat struct also lets an error echo `ref` whenever
//! the JSON itself is readable.)

use crate::access::{MemberRef, Role};
use crate::channel::{ChannelName, ChannelType, Permissions, Scope};
use crate::error::{ErrorCode, Refusal};
use crate::limits::Limits;
use crate::message::{push_json_str, Priority};
use crate::presence::{PresenceDiff, PresenceEntry};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateReq {
    pub name: ChannelName,
    pub kind: ChannelType,
    pub wedding_id: Option<String>,
    /// `wedding_context {event_date, time_zone}`: registers the wedding (SPEC §1) when the
    /// creator's organization owns it or nobody does yet.
    pub wedding_facts: Option<WeddingFacts>,
    pub permissions: Option<Permissions>,
    pub members: Vec<MemberRef>,
    pub max_subscribers: Option<usize>,
    pub message_retention_hours: Option<u64>,
}

/// A wedding's calendar facts as a create names them (validated by the owner: a real date,
/// a known zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeddingFacts {
    pub event_date: String,
    pub time_zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeReq {
    pub channel: ChannelName,
    pub last_seen_id: Option<u64>,
    pub epoch: Option<String>,
    pub include_history: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReq {
    pub channel: ChannelName,
    pub msg_type: String,
    pub event: Option<String>,
    pub priority: Priority,
    /// Raw JSON, at most `max_payload_bytes`.
    pub payload: String,
    pub target_user_id: Option<String>,
    /// The organization of `target_user_id`; the publisher's own when not given.
    pub target_org: Option<String>,
    /// Only subscribers holding one of these roles see it (never with `target_user_id`).
    /// `None`: the organization's routing table may choose roles by `msg_type`.
    pub target_roles: Option<crate::access::RoleSet>,
    pub idempotency_key: Option<String>,
    /// Raw JSON object.
    pub wedding_context: Option<String>,
    /// `wedding_context.wedding_id`, if given: checked against the channel's wedding.
    pub context_wedding_id: Option<String>,
}

/// A shared-state write (`state_set` / `state_patch`, docs/decisions.md §31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWriteReq {
    pub channel: ChannelName,
    pub doc: String,
    /// The version the write is based on (0: the document is new to the writer).
    pub version: u64,
    pub change: crate::state_doc::Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create(CreateReq),
    Subscribe(SubscribeReq),
    Unsubscribe { channel: ChannelName },
    Publish(PublishReq),
    Ack { channel: ChannelName, id: u64 },
    Presence { channel: ChannelName, meta: String },
    Typing { channel: ChannelName },
    Token { token: String },
    Ping,
    StateGet { channel: ChannelName, doc: String },
    StateWrite(StateWriteReq),
}

impl Request {
    pub fn op(&self) -> &'static str {
        match self {
            Request::Create(_) => "create",
            Request::Subscribe(_) => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::Publish(_) => "publish",
            Request::Ack { .. } => "ack",
            Request::Presence { .. } => "presence",
            Request::Typing { .. } => "typing",
            Request::Token { .. } => "token",
            Request::Ping => "ping",
            Request::StateGet { .. } => "state_get",
            Request::StateWrite(w) => match w.change {
                crate::state_doc::Change::Set(_) => "state_set",
                crate::state_doc::Change::Patch(_) => "state_patch",
            },
        }
    }
}

/// A parsed request with its `ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub r#ref: Option<String>,
    pub req: Request,
}

/// A request that could not be parsed: the refusal, and the `ref` if it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub r#ref: Option<String>,
    pub refusal: Refusal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    read: Option<Vec<String>>,
    write: Option<Vec<String>>,
    admin: Option<Vec<String>>,
}

/// Every field any `op` takes; a field outside this set fails the parse (named), and a
/// field of another `op` is refused by [`fields_of`] (one rule with REST, docs/protocol.md
/// "Unknown fields").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest<'a> {
    op: Option<String>,
    #[serde(rename = "ref")]
    r#ref: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    wedding_id: Option<String>,
    permissions: Option<RawPermissions>,
    members: Option<Vec<MemberRef>>,
    max_subscribers: Option<usize>,
    message_retention_hours: Option<u64>,
    channel: Option<String>,
    last_seen_id: Option<u64>,
    epoch: Option<String>,
    include_history: Option<bool>,
    event: Option<String>,
    priority: Option<String>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    target_user_id: Option<String>,
    target_org: Option<String>,
    target_roles: Option<Vec<String>>,
    idempotency_key: Option<String>,
    #[serde(borrow)]
    wedding_context: Option<&'a RawValue>,
    id: Option<u64>,
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
    token: Option<String>,
    doc: Option<String>,
    version: Option<u64>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    #[serde(borrow)]
    fields: Option<&'a RawValue>,
}

impl RawRequest<'_> {
    /// The names of the fields present (not null), besides `op` and `ref`.
    fn present(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("name", self.name.is_some()),
            ("type", self.kind.is_some()),
            ("wedding_id", self.wedding_id.is_some()),
            ("permissions", self.permissions.is_some()),
            ("members", self.members.is_some()),
            ("max_subscribers", self.max_subscribers.is_some()),
            (
                "message_retention_hours",
                self.message_retention_hours.is_some(),
            ),
            ("channel", self.channel.is_some()),
            ("last_seen_id", self.last_seen_id.is_some()),
            ("epoch", self.epoch.is_some()),
            ("include_history", self.include_history.is_some()),
            ("event", self.event.is_some()),
            ("priority", self.priority.is_some()),
            ("payload", self.payload.is_some()),
            ("target_user_id", self.target_user_id.is_some()),
            ("target_org", self.target_org.is_some()),
            ("target_roles", self.target_roles.is_some()),
            ("idempotency_key", self.idempotency_key.is_some()),
            ("wedding_context", self.wedding_context.is_some()),
            ("id", self.id.is_some()),
            ("meta", self.meta.is_some()),
            ("token", self.token.is_some()),
            ("doc", self.doc.is_some()),
            ("version", self.version.is_some()),
            ("value", self.value.is_some()),
            ("fields", self.fields.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| name)
    }
}

/// `target_roles`: one or more known role names (`WS_BAD_REQUEST` otherwise).
pub fn parse_target_roles<S: AsRef<str>>(names: &[S]) -> Result<crate::access::RoleSet, Refusal> {
    let bad = |m: String| Refusal::new(ErrorCode::BadRequest, m);
    if names.is_empty() {
        return Err(bad("`target_roles` must name at least one role".into()));
    }
    crate::access::RoleSet::parse(names.iter().map(|n| n.as_ref())).map_err(|n| {
        bad(format!(
            "`target_roles`: unknown role `{}`",
            n.chars().take(32).collect::<String>()
        ))
    })
}

/// The fields each `op` takes besides `op` and `ref` (docs/protocol.md); `None` for an
/// unknown op.
pub fn fields_of(op: &str) -> Option<&'static [&'static str]> {
    Some(match op {
        "create" => &[
            "name",
            "type",
            "wedding_id",
            "wedding_context",
            "permissions",
            "members",
            "max_subscribers",
            "message_retention_hours",
        ],
        "subscribe" => &["channel", "last_seen_id", "epoch", "include_history"],
        "unsubscribe" | "typing" => &["channel"],
        "publish" => &[
            "channel",
            "type",
            "event",
            "priority",
            "payload",
            "target_user_id",
            "target_org",
            "target_roles",
            "idempotency_key",
            "wedding_context",
        ],
        "ack" => &["channel", "id"],
        "presence" => &["channel", "meta"],
        "token" => &["token"],
        "ping" => &[],
        "state_get" => &["channel", "doc"],
        "state_set" => &["channel", "doc", "version", "value"],
        "state_patch" => &["channel", "doc", "version", "fields"],
        _ => return None,
    })
}

/// Whether `text` nests arrays and objects deeper than `max` (the outermost value is depth
/// 1). One pass over the bytes, strings skipped, no allocation; it does not validate JSON
/// (the parser does that next). Both doors call it before parsing (`max_json_depth`).
pub fn json_too_deep(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The refusal for JSON nested deeper than `limits.max_json_depth`, worded the same on both
/// doors.
pub fn check_json_depth(text: &[u8], limits: &Limits) -> Result<(), Refusal> {
    if json_too_deep(text, limits.max_json_depth) {
        return Err(bad(format!(
            "JSON nested deeper than {} levels (max_json_depth)",
            limits.max_json_depth
        )));
    }
    Ok(())
}

/// serde's "unknown field `x`, expected one of …" shortened to the field, the way both
/// doors word it.
fn malformed(e: &serde_json::Error) -> Refusal {
    let m = e.to_string();
    if let Some(rest) = m.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            let field: String = rest[..end].chars().take(64).collect();
            return bad(format!("unknown field `{}`", field.escape_default()));
        }
    }
    bad(format!("malformed request: {m}"))
}

#[derive(Deserialize)]
struct RefOnly {
    #[serde(rename = "ref")]
    r#ref: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWeddingContext {
    wedding_id: Option<String>,
    event_date: Option<String>,
    time_zone: Option<String>,
}

#[derive(Deserialize)]
struct WeddingContext {
    wedding_id: Option<String>,
    event_date: Option<String>,
    vendor_type: Option<String>,
    requires_immediate_action: Option<bool>,
}

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, msg)
}

fn need<T>(v: Option<T>, field: &str, op: &str) -> Result<T, Refusal> {
    v.ok_or_else(|| bad(format!("{op} needs `{field}`")))
}

fn bounded(v: Option<String>, field: &str, limits: &Limits) -> Result<Option<String>, Refusal> {
    match v {
        Some(s) if s.is_empty() || s.len() > limits.max_field_bytes => Err(bad(format!(
            "`{field}` must be 1 to {} bytes",
            limits.max_field_bytes
        ))),
        other => Ok(other),
    }
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

fn roles(list: Option<Vec<String>>, default: &[Role]) -> Result<Vec<Role>, Refusal> {
    match list {
        None => Ok(default.to_vec()),
        Some(v) => v
            .iter()
            .map(|r| {
                Role::parse(r).ok_or_else(|| bad(format!("unknown role `{r}` in permissions")))
            })
            .collect(),
    }
}

/// `[a-z0-9_]{1,32}`: the built-in types and app-defined words alike.
fn valid_type(t: &str) -> bool {
    (1..=32).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Parses one text frame. Refusals carry the SPEC code; `ref` is echoed when readable.
pub fn parse_request(text: &str, limits: &Limits) -> Result<Envelope, RequestError> {
    if text.len() > limits.max_request_bytes {
        return Err(RequestError {
            r#ref: None,
            refusal: Refusal::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request is {} bytes; the limit is {} (max_request_bytes)",
                    text.len(),
                    limits.max_request_bytes
                ),
            ),
        });
    }
    if let Err(refusal) = check_json_depth(text.as_bytes(), limits) {
        return Err(RequestError {
            r#ref: None,
            refusal,
        });
    }
    let raw: RawRequest<'_> = serde_json::from_str(text).map_err(|e| RequestError {
        // A field of the wrong type (or an unknown one) fails the whole parse; when the
        // JSON itself is valid a second, minimal pass still finds the `ref` to echo (error
        // path only).
        r#ref: serde_json::from_str::<RefOnly>(text)
            .ok()
            .and_then(|r| r.r#ref)
            .filter(|r| r.len() <= limits.max_field_bytes),
        refusal: malformed(&e),
    })?;
    let r#ref = raw.r#ref.clone();
    if r#ref
        .as_ref()
        .is_some_and(|r| r.len() > limits.max_field_bytes)
    {
        return Err(RequestError {
            r#ref: None,
            refusal: bad("`ref` is too long"),
        });
    }
    match typed(raw, limits) {
        Ok(req) => Ok(Envelope { r#ref, req }),
        Err(refusal) => Err(RequestError { r#ref, refusal }),
    }
}

fn typed(raw: RawRequest<'_>, limits: &Limits) -> Result<Request, Refusal> {
    let op = raw.op.as_deref().ok_or_else(|| bad("request needs `op`"))?;
    if let Some(allowed) = fields_of(op) {
        if let Some(f) = raw.present().find(|f| !allowed.contains(f)) {
            return Err(bad(format!("unknown field `{f}` for op `{op}`")));
        }
    }
    let channel = |c: Option<String>| -> Result<ChannelName, Refusal> {
        ChannelName::parse(&need(c, "channel", op)?)
    };
    Ok(match op {
        "create" => {
            let name = ChannelName::parse(&need(raw.name, "name", op)?)?;
            let kind = match raw.kind.as_deref() {
                None => ChannelType::Shared,
                Some(t) => ChannelType::parse(t)
                    .ok_or_else(|| bad(format!("unknown channel type `{t}`")))?,
            };
            let permissions = match raw.permissions {
                None => None,
                Some(p) => {
                    let d = Permissions::default_for(kind);
                    Some(Permissions {
                        read: roles(p.read, &d.read)?,
                        write: roles(p.write, &d.write)?,
                        admin: roles(p.admin, &d.admin)?,
                    })
                }
            };
            let members = raw.members.unwrap_or_default();
            if members.len() > limits.max_members_per_channel {
                return Err(bad(format!(
                    "at most {} members (max_members_per_channel)",
                    limits.max_members_per_channel
                )));
            }
            for id in members.iter().flat_map(MemberRef::ids) {
                bounded(Some(id.to_owned()), "members[]", limits)?;
            }
            if let Some(m) = raw.max_subscribers {
                if m == 0 || m > limits.max_subscribers {
                    return Err(bad(format!(
                        "max_subscribers must be 1 to {}",
                        limits.max_subscribers
                    )));
                }
            }
            if let Some(h) = raw.message_retention_hours {
                if h == 0 || h > limits.message_retention_hours {
                    return Err(bad(format!(
                        "message_retention_hours must be 1 to {}",
                        limits.message_retention_hours
                    )));
                }
            }
            let invalid = |m: String| Refusal::new(ErrorCode::InvalidWeddingContext, m);
            let mut wedding_id = bounded(raw.wedding_id, "wedding_id", limits)?;
            let mut wedding_facts = None;
            if let Some(w) = raw.wedding_context {
                if w.get().len() > limits.max_wedding_context_bytes || !is_object(w) {
                    return Err(invalid(
                        "wedding_context must be a small JSON object".into(),
                    ));
                }
                let c: CreateWeddingContext = serde_json::from_str(w.get())
                    .map_err(|e| invalid(format!("wedding_context: {e}")))?;
                match (
                    &wedding_id,
                    bounded(c.wedding_id, "wedding_context.wedding_id", limits)?,
                ) {
                    (Some(a), Some(b)) if *a != b => {
                        return Err(invalid(
                            "wedding_context.wedding_id differs from wedding_id".into(),
                        ))
                    }
                    (None, Some(b)) => wedding_id = Some(b),
                    _ => {}
                }
                wedding_facts = match (c.event_date, c.time_zone) {
                    (None, None) => None,
                    (Some(event_date), Some(time_zone)) => Some(WeddingFacts {
                        event_date,
                        time_zone,
                    }),
                    _ => {
                        return Err(invalid(
                            "wedding_context needs both event_date and time_zone".into(),
                        ))
                    }
                };
                if wedding_facts.is_some() && wedding_id.is_none() {
                    return Err(invalid("wedding_context needs a wedding_id".into()));
                }
            }
            if let Some(w) = &wedding_id {
                // `*` is a token's word for "every wedding of my organization", never a
                // wedding: a channel of wedding `*` would be reached by every organization's
                // `*` (SPEC §1).
                if w == "*" || w.chars().any(char::is_control) {
                    return Err(invalid(
                        "wedding_id must be a wedding's id (not `*`, no control characters)".into(),
                    ));
                }
            }
            if name.scope() == Scope::Wedding && wedding_id.is_none() {
                return Err(invalid(
                    "a `wedding:` channel needs its `wedding_id` (SPEC §1)".into(),
                ));
            }
            Request::Create(CreateReq {
                name,
                kind,
                wedding_id,
                wedding_facts,
                permissions,
                members,
                max_subscribers: raw.max_subscribers,
                message_retention_hours: raw.message_retention_hours,
            })
        }
        "subscribe" => Request::Subscribe(SubscribeReq {
            channel: channel(raw.channel)?,
            last_seen_id: raw.last_seen_id,
            epoch: bounded(raw.epoch, "epoch", limits)?,
            include_history: raw.include_history.unwrap_or(false),
        }),
        "unsubscribe" => Request::Unsubscribe {
            channel: channel(raw.channel)?,
        },
        "publish" => {
            let channel = channel(raw.channel)?;
            let msg_type = need(raw.kind, "type", op)?;
            if !valid_type(&msg_type) {
                return Err(bad("`type` must match [a-z0-9_]{1,32}"));
            }
            let payload = need(raw.payload, "payload", op)?;
            if payload.get().len() > limits.max_payload_bytes {
                return Err(Refusal::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "payload is {} bytes; the limit is {} (max_payload_bytes)",
                        payload.get().len(),
                        limits.max_payload_bytes
                    ),
                ));
            }
            let priority = match raw.priority.as_deref() {
                None => Priority::Normal,
                Some(p) => {
                    Priority::parse(p).ok_or_else(|| bad(format!("unknown priority `{p}`")))?
                }
            };
            let (wedding_context, context_wedding_id) = match raw.wedding_context {
                None => (None, None),
                Some(w) => {
                    let invalid = |m: &str| Refusal::new(ErrorCode::InvalidWeddingContext, m);
                    if w.get().len() > limits.max_wedding_context_bytes || !is_object(w) {
                        return Err(invalid("wedding_context must be a small JSON object"));
                    }
                    let c: WeddingContext = serde_json::from_str(w.get())
                        .map_err(|e| invalid(&format!("wedding_context: {e}")))?;
                    if let Some(d) = &c.event_date {
                        if !valid_date(d) {
                            return Err(invalid("wedding_context.event_date must be YYYY-MM-DD"));
                        }
                    }
                    let _ = (&c.vendor_type, c.requires_immediate_action);
                    (Some(w.get().to_owned()), c.wedding_id)
                }
            };
            Request::Publish(PublishReq {
                channel,
                msg_type,
                event: bounded(raw.event, "event", limits)?,
                priority,
                payload: payload.get().to_owned(),
                target_org: match (&raw.target_user_id, raw.target_org) {
                    (None, Some(_)) => return Err(bad("`target_org` needs `target_user_id`")),
                    (_, o) => bounded(o, "target_org", limits)?,
                },
                target_roles: match raw.target_roles {
                    None => None,
                    Some(_) if raw.target_user_id.is_some() => {
                        return Err(bad("name `target_user_id` or `target_roles`, not both"))
                    }
                    Some(names) => Some(parse_target_roles(&names)?),
                },
                target_user_id: bounded(raw.target_user_id, "target_user_id", limits)?,
                idempotency_key: bounded(raw.idempotency_key, "idempotency_key", limits)?,
                wedding_context,
                context_wedding_id,
            })
        }
        "ack" => Request::Ack {
            channel: channel(raw.channel)?,
            id: need(raw.id, "id", op)?,
        },
        "presence" => {
            let channel = channel(raw.channel)?;
            let meta = need(raw.meta, "meta", op)?;
            if !is_object(meta) {
                return Err(bad("presence `meta` must be a JSON object"));
            }
            if meta.get().len() > limits.max_presence_meta_bytes {
                return Err(Refusal::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "presence meta over {} bytes",
                        limits.max_presence_meta_bytes
                    ),
                ));
            }
            crate::presence_meta::check_json(meta.get())?;
            Request::Presence {
                channel,
                meta: meta.get().to_owned(),
            }
        }
        "typing" => Request::Typing {
            channel: channel(raw.channel)?,
        },
        "token" => Request::Token {
            token: need(raw.token, "token", op)?,
        },
        "ping" => Request::Ping,
        "state_get" => Request::StateGet {
            channel: channel(raw.channel)?,
            doc: state_doc_name(raw.doc, op)?,
        },
        "state_set" | "state_patch" => {
            let channel = channel(raw.channel)?;
            let doc = state_doc_name(raw.doc, op)?;
            let version = need(raw.version, "version", op)?;
            let change = if op == "state_set" {
                crate::state_doc::Change::Set(state_object(raw.value, "value", op, limits)?)
            } else {
                crate::state_doc::Change::Patch(state_object(raw.fields, "fields", op, limits)?)
            };
            Request::StateWrite(StateWriteReq {
                channel,
                doc,
                version,
                change,
            })
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(bad(format!("unknown op `{}`", shown.escape_default())));
        }
    })
}

/// A shared-state document name (`[a-z0-9_-]{1,64}`).
pub fn state_doc_name(doc: Option<String>, op: &str) -> Result<String, Refusal> {
    let doc = need(doc, "doc", op)?;
    if !crate::state_doc::valid_doc_name(&doc) {
        return Err(bad("`doc` must match [a-z0-9_-]{1,64}"));
    }
    Ok(doc)
}

/// A shared-state `value` or `fields`: a JSON object of at most `state_max_value_bytes`.
pub fn state_object(
    raw: Option<&RawValue>,
    field: &str,
    op: &str,
    limits: &Limits,
) -> Result<serde_json::Map<String, serde_json::Value>, Refusal> {
    let raw = need(raw, field, op)?;
    if raw.get().len() > limits.state_max_value_bytes {
        return Err(Refusal::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "`{field}` is {} bytes; the limit is {} (state_max_value_bytes)",
                raw.get().len(),
                limits.state_max_value_bytes
            ),
        ));
    }
    if !is_object(raw) {
        return Err(bad(format!("`{field}` must be a JSON object")));
    }
    serde_json::from_str(raw.get()).map_err(|e| bad(format!("`{field}`: {e}")))
}

/// `YYYY-MM-DD` with a plausible month and day.
pub fn valid_date(d: &str) -> bool {
    let b = d.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let m: u32 = d[5..7].parse().unwrap_or(0);
    let day: u32 = d[8..10].parse().unwrap_or(0);
    (1..=12).contains(&m) && (1..=31).contains(&day)
}

// ---- replies ----------------------------------------------------------------------------

fn open(op: &str, r#ref: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(op.as_bytes());
    out.push(b'"');
    if let Some(r) = r#ref {
        out.extend_from_slice(b",\"ref\":");
        push_json_str(&mut out, r);
    }
    out
}

fn field_str(out: &mut Vec<u8>, k: &str, v: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
    push_json_str(out, v);
}

fn field_num(out: &mut Vec<u8>, k: &str, v: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(v.to_string().as_bytes());
}

pub fn reply_error(r#ref: Option<&str>, e: &Refusal) -> Vec<u8> {
    let mut out = open("error", r#ref);
    field_str(&mut out, "code", e.code.as_str());
    field_str(&mut out, "message", &e.message);
    out.extend_from_slice(if e.code.retryable() {
        b",\"retryable\":true"
    } else {
        b",\"retryable\":false"
    });
    if let Some(s) = e.retry_after {
        field_num(&mut out, "retry_after", s);
    }
    out.push(b'}');
    out
}

pub fn reply_created(r#ref: Option<&str>, id: &str, name: &str, created_at_ms: u64) -> Vec<u8> {
    let mut out = open("created", r#ref);
    field_str(&mut out, "channel_id", id);
    field_str(&mut out, "channel_name", name);
    field_str(
        &mut out,
        "created_at",
        &crate::time::rfc3339_ms(created_at_ms),
    );
    out.push(b'}');
    out
}

/// `messages` are rendered `message` objects (see `message::render_message_json`);
/// `presence` is the channel's presence window (at most `presence_list_max` entries) and
/// `presence_total` the count of all its entries.
pub fn reply_subscribed<'m>(
    r#ref: Option<&str>,
    channel: &str,
    epoch: &str,
    recovered: bool,
    messages: impl Iterator<Item = &'m [u8]>,
    presence: &[PresenceEntry],
    presence_total: usize,
) -> Vec<u8> {
    let mut out = open("subscribed", r#ref);
    field_str(&mut out, "channel", channel);
    field_str(&mut out, "epoch", epoch);
    out.extend_from_slice(if recovered {
        b",\"recovered\":true,\"messages\":["
    } else {
        b",\"recovered\":false,\"messages\":["
    });
    for (i, m) in messages.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.extend_from_slice(b"],\"presence\":");
    serde_json::to_writer(&mut out, presence).expect("Vec write");
    field_num(&mut out, "presence_total", presence_total as u64);
    out.push(b'}');
    out
}

pub fn reply_unsubscribed(r#ref: Option<&str>, channel: &str) -> Vec<u8> {
    let mut out = open("unsubscribed", r#ref);
    field_str(&mut out, "channel", channel);
    out.push(b'}');
    out
}

/// An `unsubscribed` the client did not ask for: the server ended the subscription, with
/// the refusal that ended it (a refreshed token no longer reaching the channel).
pub fn unsubscribed_because(channel: &str, why: &Refusal) -> Vec<u8> {
    let mut out = open("unsubscribed", None);
    field_str(&mut out, "channel", channel);
    field_str(&mut out, "code", why.code.as_str());
    field_str(&mut out, "reason", &why.message);
    out.push(b'}');
    out
}

pub fn reply_published(
    r#ref: Option<&str>,
    channel: &str,
    id: u64,
    delivered: usize,
    queued: usize,
) -> Vec<u8> {
    let mut out = open("published", r#ref);
    field_str(&mut out, "channel", channel);
    field_num(&mut out, "id", id);
    field_num(&mut out, "delivered_count", delivered as u64);
    field_num(&mut out, "queued_count", queued as u64);
    out.push(b'}');
    out
}

pub fn reply_pong(r#ref: Option<&str>) -> Vec<u8> {
    let mut out = open("pong", r#ref);
    out.push(b'}');
    out
}

/// `{"op":"token_expiring","expires_at":<unix secs>}`: the connection's token expires soon;
/// send a fresh one with `op: token` or be closed with 4002 (SPEC §4 Tokens).
pub fn token_expiring(expires_at: u64) -> Vec<u8> {
    let mut out = open("token_expiring", None);
    field_num(&mut out, "expires_at", expires_at);
    out.push(b'}');
    out
}

pub fn reply_ok(r#ref: &str) -> Vec<u8> {
    let mut out = open("ok", Some(r#ref));
    out.push(b'}');
    out
}

pub fn presence_diff(channel: &str, diff: &PresenceDiff) -> Vec<u8> {
    let mut out = open("presence_diff", None);
    field_str(&mut out, "channel", channel);
    out.extend_from_slice(b",\"joins\":");
    serde_json::to_writer(&mut out, &diff.joins).expect("Vec write");
    out.extend_from_slice(b",\"leaves\":");
    serde_json::to_writer(&mut out, &diff.leaves).expect("Vec write");
    field_num(&mut out, "total", diff.total as u64);
    out.push(b'}');
    out
}

/// The channel's presence window, replacing what the client holds (sent instead of a
/// `presence_diff` that would carry more than `presence_list_max` entries).
pub fn presence_state(channel: &str, presence: &[PresenceEntry], total: usize) -> Vec<u8> {
    let mut out = open("presence_state", None);
    field_str(&mut out, "channel", channel);
    out.extend_from_slice(b",\"presence\":");
    serde_json::to_writer(&mut out, presence).expect("Vec write");
    field_num(&mut out, "total", total as u64);
    out.push(b'}');
    out
}

pub fn typing(channel: &str, user_id: &str, org: &str, role: Role) -> Vec<u8> {
    let mut out = open("typing", None);
    field_str(&mut out, "channel", channel);
    field_str(&mut out, "user_id", user_id);
    field_str(&mut out, "org", org);
    field_str(&mut out, "role", role.as_str());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(s: &str) -> Result<Envelope, RequestError> {
        parse_request(s, &Limits::default())
    }

    fn code(s: &str) -> ErrorCode {
        parse(s).unwrap_err().refusal.code
    }

    fn message(s: &str) -> String {
        parse(s).unwrap_err().refusal.message
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        // Unknown to every op: refused, the `ref` still echoed.
        let e =
            parse(r#"{"op":"subscribe","ref":"r1","channel":"wedding:main:w-1","last_seen":3}"#)
                .unwrap_err();
        assert_eq!(e.refusal.code, ErrorCode::BadRequest);
        assert_eq!(e.refusal.message, "unknown field `last_seen`");
        assert_eq!(e.r#ref.as_deref(), Some("r1"));
        // Known to another op only.
        assert_eq!(
            message(r#"{"op":"ping","channel":"wedding:main:w-1"}"#),
            "unknown field `channel` for op `ping`"
        );
        assert_eq!(
            message(
                r#"{"op":"create","name":"wedding:main:w-1","wedding_id":"w-1","target_user_id":"u-1"}"#
            ),
            "unknown field `target_user_id` for op `create`"
        );
        // Inside `permissions` too; `payload`, `meta` and `wedding_context` are the app's.
        assert_eq!(
            message(
                r#"{"op":"create","name":"wedding:main:w-1","permissions":{"raed":["venue"]}}"#
            ),
            "unknown field `raed`"
        );
        assert!(parse(r#"{"op":"publish","channel":"wedding:main:w-1","type":"general","payload":{"anything":1}}"#).is_ok());
        // A null field is as good as absent.
        assert!(parse(r#"{"op":"ping","channel":null}"#).is_ok());
        // Every op's own fields are accepted (the table is the parser's).
        for op in [
            "create",
            "subscribe",
            "unsubscribe",
            "publish",
            "ack",
            "presence",
            "typing",
            "token",
            "ping",
        ] {
            assert!(fields_of(op).is_some(), "{op}");
        }
        assert!(fields_of("nope").is_none());
    }

    #[test]
    fn nesting_deeper_than_max_json_depth_is_refused() {
        let l = Limits::default();
        let deep = |n: usize| {
            format!(
                r#"{{"op":"publish","channel":"wedding:main:w-1","type":"general","payload":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        // The request object is depth 1: a payload of 63 arrays reaches 64.
        assert!(parse_request(&deep(l.max_json_depth - 1), &l).is_ok());
        let e = parse_request(&deep(l.max_json_depth), &l).unwrap_err();
        assert_eq!(e.refusal.code, ErrorCode::BadRequest);
        assert!(
            e.refusal.message.contains("max_json_depth"),
            "{}",
            e.refusal.message
        );
        assert_eq!(
            parse_request(&deep(20_000), &l).unwrap_err().refusal.code,
            ErrorCode::BadRequest
        );
        // Brackets inside strings (escaped quotes too) do not count.
        let s = format!(
            r#"{{"op":"publish","channel":"wedding:main:w-1","type":"general","payload":"\"{}"}}"#,
            "[".repeat(500)
        );
        assert!(parse_request(&s, &l).is_ok());
        assert!(!json_too_deep(br#"{"a":"\\["}"#, 1));
        assert!(json_too_deep(br#"{"a":"\\","b":[]}"#, 1));
    }

    #[test]
    fn parses_every_op() {
        let e = parse(r#"{"op":"create","ref":"1","name":"wedding:main:w-1","type":"broadcast","wedding_id":"w-1","permissions":{"write":["venue"]},"max_subscribers":50}"#).unwrap();
        assert_eq!(e.r#ref.as_deref(), Some("1"));
        let Request::Create(c) = e.req else { panic!() };
        assert_eq!(c.kind, ChannelType::Broadcast);
        assert_eq!(c.permissions.unwrap().write, vec![Role::Venue]);
        let e = parse(r#"{"op":"subscribe","channel":"wedding:main:w-1","last_seen_id":7,"include_history":true}"#).unwrap();
        assert!(matches!(
            e.req,
            Request::Subscribe(SubscribeReq {
                last_seen_id: Some(7),
                include_history: true,
                ..
            })
        ));
        let e = parse(r#"{"op":"publish","channel":"wedding:main:w-1","type":"urgent","priority":"critical","payload":{"a": [1, 2]},"wedding_context":{"wedding_id":"w-1","event_date":"2026-06-20"}}"#).unwrap();
        let Request::Publish(p) = e.req else { panic!() };
        assert_eq!(p.payload, r#"{"a": [1, 2]}"#);
        assert_eq!(p.priority, Priority::Critical);
        assert_eq!(p.context_wedding_id.as_deref(), Some("w-1"));
        for s in [
            r#"{"op":"unsubscribe","channel":"venue:hall:v1"}"#,
            r#"{"op":"ack","channel":"venue:hall:v1","id":3}"#,
            r#"{"op":"presence","channel":"venue:hall:v1","meta":{"activity":"setup"}}"#,
            r#"{"op":"typing","channel":"venue:hall:v1"}"#,
            r#"{"op":"token","token":"x.y.z"}"#,
            r#"{"op":"ping","ref":"p"}"#,
        ] {
            parse(s).unwrap();
        }
    }

    #[test]
    fn refusals_carry_spec_codes_and_ref() {
        assert_eq!(code("{not json"), ErrorCode::BadRequest);
        assert_eq!(code("[]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"ref":"1"}"#), ErrorCode::BadRequest);
        let e = parse(r#"{"op":"explode","ref":"r9"}"#).unwrap_err();
        assert_eq!(
            (e.refusal.code, e.r#ref.as_deref()),
            (ErrorCode::BadRequest, Some("r9"))
        );
        assert_eq!(
            code(r#"{"op":"subscribe","channel":"wedding:main:w-1;DROP"}"#),
            ErrorCode::InvalidChannel
        );
        assert_eq!(code(r#"{"op":"subscribe"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"op":"subscribe","channel":5}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"op":"publish","channel":"wedding:main:w-1","type":"general"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"op":"publish","channel":"wedding:main:w-1","type":"Bad Type","payload":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(
                r#"{"op":"publish","channel":"wedding:main:w-1","type":"general","payload":1,"priority":"max"}"#
            ),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(
                r#"{"op":"publish","channel":"wedding:main:w-1","type":"general","payload":1,"wedding_context":"w-1"}"#
            ),
            ErrorCode::InvalidWeddingContext
        );
        assert_eq!(
            code(
                r#"{"op":"publish","channel":"wedding:main:w-1","type":"general","payload":1,"wedding_context":{"event_date":"June"}}"#
            ),
            ErrorCode::InvalidWeddingContext
        );
        assert_eq!(
            code(r#"{"op":"presence","channel":"wedding:main:w-1","meta":[1]}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"op":"create","name":"wedding:main:w-1","permissions":{"read":["king"]}}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"op":"create","name":"wedding:main:w-1","max_subscribers":100000}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"op":"ack","channel":"wedding:main:w-1","id":-1}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn payload_limits() {
        let l = Limits::default();
        let big = format!(
            r#"{{"op":"publish","ref":"big","channel":"wedding:main:w-1","type":"general","payload":"{}"}}"#,
            "x".repeat(l.max_payload_bytes)
        );
        let e = parse(&big).unwrap_err();
        assert_eq!(e.refusal.code, ErrorCode::PayloadTooLarge);
        assert_eq!(e.r#ref.as_deref(), Some("big"));
        let ok = format!(
            r#"{{"op":"publish","channel":"wedding:main:w-1","type":"general","payload":"{}"}}"#,
            "x".repeat(l.max_payload_bytes - 2)
        );
        parse(&ok).unwrap();
        let huge = "x".repeat(l.max_request_bytes + 1);
        assert_eq!(code(&huge), ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn replies_are_valid_json() {
        let e = Refusal {
            code: ErrorCode::RateLimited,
            message: "slow \"down\"".into(),
            retry_after: Some(3),
        };
        let v: Value = serde_json::from_slice(&reply_error(Some("r"), &e)).unwrap();
        assert_eq!(v["code"], "WS_RATE_LIMITED");
        assert_eq!(v["retryable"], true);
        assert_eq!(v["retry_after"], 3);
        assert_eq!(v["ref"], "r");
        let v: Value =
            serde_json::from_slice(&reply_created(None, "ch_1", "venue:a:b", 0)).unwrap();
        assert!(v.get("ref").is_none());
        assert_eq!(v["created_at"], "1970-01-01T00:00:00.000Z");
        let msgs: Vec<&[u8]> = vec![br#"{"op":"message","id":1}"#, br#"{"op":"message","id":2}"#];
        let p = vec![PresenceEntry::new(
            "u".into(),
            "o".into(),
            crate::channel_state::ConnRef { shard: 0, conn: 1 },
            "couple",
        )];
        let v: Value = serde_json::from_slice(&reply_subscribed(
            Some("s"),
            "venue:a:b",
            "e",
            false,
            msgs.into_iter(),
            &p,
            7,
        ))
        .unwrap();
        assert_eq!(v["messages"][1]["id"], 2);
        assert_eq!(v["presence"][0]["user_id"], "u");
        assert_eq!(v["presence_total"], 7);
        assert_eq!(v["recovered"], false);
        let v: Value =
            serde_json::from_slice(&reply_published(None, "venue:a:b", 4, 2, 1)).unwrap();
        assert_eq!(
            (
                v["id"].as_u64(),
                v["delivered_count"].as_u64(),
                v["queued_count"].as_u64()
            ),
            (Some(4), Some(2), Some(1))
        );
        let v: Value =
            serde_json::from_slice(&typing("venue:a:b", "u\n", "o", Role::Venue)).unwrap();
        assert_eq!(v["user_id"], "u\n");
        let v: Value =
            serde_json::from_slice(&presence_diff("venue:a:b", &PresenceDiff::default())).unwrap();
        assert_eq!(v["joins"], serde_json::json!([]));
        assert_eq!(v["total"], 0);
        let v: Value = serde_json::from_slice(&presence_state("venue:a:b", &p, 3)).unwrap();
        assert_eq!(
            (v["op"].as_str(), v["presence"][0]["connection_id"].as_str()),
            (Some("presence_state"), Some("c-0-1"))
        );
        assert_eq!(v["total"], 3);
    }

    #[test]
    fn dates() {
        assert!(valid_date("2026-06-20"));
        assert!(!valid_date("2026-13-01"));
        assert!(!valid_date("20260620"));
    }
}
