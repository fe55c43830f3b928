//! The JSON of docs/protocol.md: requests encoded to text frames, server frames decoded.
//!
//! Pure: strings in, strings or values out; no sockets, no clock, no state. Encoding
//! borrows from the caller's request so a `publish` payload is serialized straight from
//! the app's `Value`, once. Decoding reads the `op` and `ref` first (skipping the rest
//! without building a tree), then parses the frame once more straight into its typed
//! struct, so a 64 KiB payload is not buffered into an intermediate value.

use crate::types::{
    Created, Message, PresenceEntry, Priority, Published, Subscribed, WeddingContext,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::time::Duration;

/// A request, borrowed from the caller. `r` is the `ref`: the client always sets it; tests
/// leave it out to compare with the protocol doc's examples verbatim.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request<'a> {
    Create {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        name: &'a str,
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        channel_type: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        wedding_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        permissions: Option<&'a Value>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        members: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        max_subscribers: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_retention_hours: Option<u32>,
    },
    Subscribe {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seen_id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "is_false")]
        include_history: bool,
    },
    Unsubscribe {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        channel: &'a str,
    },
    Publish {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        channel: &'a str,
        #[serde(rename = "type")]
        msg_type: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        event: Option<&'a str>,
        priority: Priority,
        payload: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        target_user_id: Option<&'a str>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        target_roles: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        wedding_context: Option<&'a WeddingContext>,
    },
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        channel: &'a str,
        id: u64,
    },
    Presence {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        channel: &'a str,
        meta: &'a Value,
    },
    Typing {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        channel: &'a str,
    },
    Token {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        token: &'a str,
    },
    Ping {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
    },
    StateGet {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        channel: &'a str,
        doc: &'a str,
    },
    StateSet {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        channel: &'a str,
        doc: &'a str,
        version: u64,
        value: &'a Value,
    },
    StatePatch {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r: Option<&'a str>,
        channel: &'a str,
        doc: &'a str,
        version: u64,
        fields: &'a Value,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Request<'_> {
    /// The frame's text.
    pub(crate) fn encode(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and no Serialize
        // impl here returns an error. A failure would be a bug in this file.
        serde_json::to_string(self).expect("a request always serializes")
    }
}

/// A `ref` rendered from the client's counter, on the stack (no allocation per request).
pub(crate) struct RefText {
    buf: [u8; 20],
    start: u8,
}

impl RefText {
    pub(crate) fn new(mut n: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        RefText {
            buf,
            start: i as u8,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(&self.buf[self.start as usize..]).expect("digits are UTF-8")
    }
}

/// A decoded server frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming {
    Message(Message),
    PresenceDiff {
        channel: String,
        joins: Vec<PresenceEntry>,
        leaves: Vec<PresenceEntry>,
        total: usize,
    },
    PresenceState {
        channel: String,
        presence: Vec<PresenceEntry>,
        total: usize,
    },
    Typing {
        channel: String,
        user_id: String,
        role: String,
    },
    /// A reply to a request. `r` is the `ref` when it is one of this client's (a decimal
    /// number); `None` when absent or foreign.
    Reply {
        r: Option<u64>,
        body: ReplyBody,
    },
    /// A stale write of another user outranked this user's version of a document.
    StateOverridden {
        channel: String,
        doc: String,
        version: u64,
        your_version: u64,
        by: crate::state::StateWriter,
    },
    /// An op this client does not know (e.g. a newer server's); ignored.
    Unknown {
        op: String,
    },
}

/// The reply ops.
#[derive(Debug, PartialEq)]
pub(crate) enum ReplyBody {
    Created(Created),
    Subscribed(Subscribed),
    Unsubscribed { channel: String },
    Published(Published),
    Ok,
    Pong,
    State(crate::state::StateDoc),
    StateWrite(crate::state::StateWrite),
    Error(ServerError),
}

/// The `error` op.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

impl From<ServerError> for crate::Error {
    fn from(e: ServerError) -> Self {
        crate::Error::Server {
            code: e.code,
            message: e.message,
            retryable: e.retryable,
            retry_after: e.retry_after,
        }
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(rename = "ref", default, borrow)]
    r: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PresenceDiffWire {
    channel: String,
    #[serde(default)]
    joins: Vec<PresenceEntry>,
    #[serde(default)]
    leaves: Vec<PresenceEntry>,
    #[serde(default)]
    total: usize,
}

#[derive(Deserialize)]
struct PresenceStateWire {
    channel: String,
    #[serde(default)]
    presence: Vec<PresenceEntry>,
    #[serde(default)]
    total: usize,
}

#[derive(Deserialize)]
struct TypingWire {
    channel: String,
    user_id: String,
    #[serde(default)]
    role: String,
}

#[derive(Deserialize)]
struct UnsubscribedWire {
    channel: String,
}

#[derive(Deserialize)]
struct ErrorWire {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    retryable: bool,
    /// Seconds; an integer in practice, a float accepted.
    #[serde(default)]
    retry_after: Option<f64>,
}

/// Decodes one text frame from the server.
pub(crate) fn decode(text: &str) -> Result<Incoming, serde_json::Error> {
    let head: Head<'_> = serde_json::from_str(text)?;
    let r = head.r.as_deref().and_then(|r| r.parse::<u64>().ok());
    let reply = |body| Ok(Incoming::Reply { r, body });
    match head.op.as_ref() {
        "message" => Ok(Incoming::Message(serde_json::from_str(text)?)),
        "presence_diff" => {
            let w: PresenceDiffWire = serde_json::from_str(text)?;
            Ok(Incoming::PresenceDiff {
                channel: w.channel,
                joins: w.joins,
                leaves: w.leaves,
                total: w.total,
            })
        }
        "presence_state" => {
            let w: PresenceStateWire = serde_json::from_str(text)?;
            Ok(Incoming::PresenceState {
                channel: w.channel,
                presence: w.presence,
                total: w.total,
            })
        }
        "typing" => {
            let w: TypingWire = serde_json::from_str(text)?;
            Ok(Incoming::Typing {
                channel: w.channel,
                user_id: w.user_id,
                role: w.role,
            })
        }
        "created" => reply(ReplyBody::Created(serde_json::from_str(text)?)),
        "subscribed" => reply(ReplyBody::Subscribed(serde_json::from_str(text)?)),
        "unsubscribed" => {
            let w: UnsubscribedWire = serde_json::from_str(text)?;
            reply(ReplyBody::Unsubscribed { channel: w.channel })
        }
        "published" => reply(ReplyBody::Published(serde_json::from_str(text)?)),
        "state" => reply(ReplyBody::State(serde_json::from_str(text)?)),
        "state_ok" => {
            let w: crate::state::StateOkWire = serde_json::from_str(text)?;
            reply(ReplyBody::StateWrite(crate::state::StateWrite::Applied {
                version: w.version,
                id: w.id,
                overrode: w.overrode,
            }))
        }
        "state_conflict" => {
            let y: crate::state::YourVersionWire = serde_json::from_str(text)?;
            reply(ReplyBody::StateWrite(crate::state::StateWrite::Conflict {
                current: serde_json::from_str(text)?,
                your_version: y.your_version,
            }))
        }
        "state_overridden" => {
            let w: crate::state::StateOverriddenWire = serde_json::from_str(text)?;
            Ok(Incoming::StateOverridden {
                channel: w.channel,
                doc: w.doc,
                version: w.version,
                your_version: w.your_version,
                by: w.by,
            })
        }
        "ok" => reply(ReplyBody::Ok),
        "pong" => reply(ReplyBody::Pong),
        "error" => {
            let w: ErrorWire = serde_json::from_str(text)?;
            let retry_after = w
                .retry_after
                .and_then(|s| Duration::try_from_secs_f64(s).ok());
            reply(ReplyBody::Error(ServerError {
                code: w.code,
                message: w.message,
                retryable: w.retryable,
                retry_after,
            }))
        }
        other => Ok(Incoming::Unknown {
            op: other.to_owned(),
        }),
    }
}

/// `epoch` as a string; a number is accepted too, rendered in decimal, so a server that
/// chose an integer epoch still round-trips (the client only compares and echoes it).
pub(crate) fn de_epoch<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Epoch {
        S(String),
        N(u64),
    }
    Ok(match Epoch::deserialize(d)? {
        Epoch::S(s) => s,
        Epoch::N(n) => n.to_string(),
    })
}

/// The message of an HTTP refusal body `{"success":false,"error":{"message":…}}`, if any.
pub(crate) fn http_error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    serde_json::from_slice::<Body>(body)
        .ok()
        .map(|b| b.error.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SenderInfo;
    use serde_json::json;

    /// Encodes, and checks the server's own parser knows every field sent (the server
    /// refuses unknown fields, docs/protocol.md "Unknown fields"); other refusals (a
    /// deliberately odd channel name) are not this check's business.
    fn enc(r: &Request<'_>) -> String {
        let s = r.encode();
        let limits = ringbearer_core::Limits::default();
        if let Err(e) = ringbearer_core::protocol::parse_request(&s, &limits) {
            assert!(
                !e.refusal.message.contains("unknown field"),
                "the server refuses {s}: {}",
                e.refusal.message
            );
        }
        s
    }

    // ---- requests: the exact JSON of each op, against docs/protocol.md ----

    #[test]
    fn create_matches_the_doc() {
        let got = enc(&Request::Create {
            r: Some("c1"),
            name: "wedding:main:w-12345",
            channel_type: Some("shared"),
            wedding_id: Some("w-12345"),
            permissions: None,
            members: &[],
            max_subscribers: None,
            message_retention_hours: None,
        });
        assert_eq!(
            got,
            r#"{"op":"create","ref":"c1","name":"wedding:main:w-12345","type":"shared","wedding_id":"w-12345"}"#
        );
    }

    #[test]
    fn create_with_every_field() {
        let perms = json!({"read":["guest"]});
        let members = ["u-1".to_owned(), "u-2".to_owned()];
        let got = enc(&Request::Create {
            r: Some("c2"),
            name: "couple:chat:c-1",
            channel_type: Some("private"),
            wedding_id: None,
            permissions: Some(&perms),
            members: &members,
            max_subscribers: Some(10),
            message_retention_hours: Some(48),
        });
        assert_eq!(
            got,
            r#"{"op":"create","ref":"c2","name":"couple:chat:c-1","type":"private","permissions":{"read":["guest"]},"members":["u-1","u-2"],"max_subscribers":10,"message_retention_hours":48}"#
        );
    }

    #[test]
    fn subscribe_matches_the_doc() {
        let got = enc(&Request::Subscribe {
            r: Some("s1"),
            channel: "wedding:main:w-12345",
            last_seen_id: Some(41),
            epoch: None,
            include_history: false,
        });
        assert_eq!(
            got,
            r#"{"op":"subscribe","ref":"s1","channel":"wedding:main:w-12345","last_seen_id":41}"#
        );
    }

    #[test]
    fn subscribe_with_epoch_and_history() {
        let got = enc(&Request::Subscribe {
            r: Some("s2"),
            channel: "wedding:main:w-1",
            last_seen_id: Some(7),
            epoch: Some("9c1e4d2a"),
            include_history: false,
        });
        assert_eq!(
            got,
            r#"{"op":"subscribe","ref":"s2","channel":"wedding:main:w-1","last_seen_id":7,"epoch":"9c1e4d2a"}"#
        );
        let got = enc(&Request::Subscribe {
            r: Some("s3"),
            channel: "wedding:main:w-1",
            last_seen_id: None,
            epoch: None,
            include_history: true,
        });
        assert_eq!(
            got,
            r#"{"op":"subscribe","ref":"s3","channel":"wedding:main:w-1","include_history":true}"#
        );
    }

    #[test]
    fn unsubscribe_matches_the_doc() {
        let got = enc(&Request::Unsubscribe {
            r: Some("u1"),
            channel: "wedding:main:w-12345",
        });
        assert_eq!(
            got,
            r#"{"op":"unsubscribe","ref":"u1","channel":"wedding:main:w-12345"}"#
        );
    }

    #[test]
    fn publish_matches_the_doc() {
        let payload = json!({"at":"21:15"});
        let got = enc(&Request::Publish {
            r: Some("p1"),
            channel: "wedding:main:w-12345",
            msg_type: "timeline_change",
            event: Some("timeline:cake_cutting:moved"),
            priority: Priority::High,
            payload: &payload,
            target_user_id: None,
            target_roles: &[],
            idempotency_key: Some("cake-1"),
            wedding_context: None,
        });
        assert_eq!(
            got,
            r#"{"op":"publish","ref":"p1","channel":"wedding:main:w-12345","type":"timeline_change","event":"timeline:cake_cutting:moved","priority":"high","payload":{"at":"21:15"},"idempotency_key":"cake-1"}"#
        );
    }

    #[test]
    fn publish_with_target_and_wedding_context() {
        let payload = json!([1, "two", null]);
        let ctx = WeddingContext {
            wedding_id: "w-1".into(),
            event_date: Some("2026-11-22".into()),
            vendor_type: Some("photographer".into()),
            requires_immediate_action: Some(true),
        };
        let got = enc(&Request::Publish {
            r: Some("9"),
            channel: "wedding:main:w-1",
            msg_type: "urgent",
            event: None,
            priority: Priority::Critical,
            payload: &payload,
            target_user_id: Some("u-7"),
            target_roles: &[],
            idempotency_key: None,
            wedding_context: Some(&ctx),
        });
        assert_eq!(
            got,
            r#"{"op":"publish","ref":"9","channel":"wedding:main:w-1","type":"urgent","priority":"critical","payload":[1,"two",null],"target_user_id":"u-7","wedding_context":{"wedding_id":"w-1","event_date":"2026-11-22","vendor_type":"photographer","requires_immediate_action":true}}"#
        );
    }

    #[test]
    fn ack_presence_typing_match_the_doc() {
        assert_eq!(
            enc(&Request::Ack {
                r: None,
                channel: "wedding:main:w-12345",
                id: 42
            }),
            r#"{"op":"ack","channel":"wedding:main:w-12345","id":42}"#
        );
        assert_eq!(
            enc(&Request::Ack {
                r: Some("a1"),
                channel: "wedding:main:w-12345",
                id: 42
            }),
            r#"{"op":"ack","ref":"a1","channel":"wedding:main:w-12345","id":42}"#
        );
        let meta = json!({"activity":"ceremony"});
        assert_eq!(
            enc(&Request::Presence {
                r: None,
                channel: "wedding:main:w-12345",
                meta: &meta
            }),
            r#"{"op":"presence","channel":"wedding:main:w-12345","meta":{"activity":"ceremony"}}"#
        );
        assert_eq!(
            enc(&Request::Typing {
                r: None,
                channel: "wedding:main:w-12345"
            }),
            r#"{"op":"typing","channel":"wedding:main:w-12345"}"#
        );
    }

    #[test]
    fn token_and_ping_match_the_doc() {
        assert_eq!(
            enc(&Request::Token {
                r: Some("t1"),
                token: "<fresh jwt>"
            }),
            r#"{"op":"token","ref":"t1","token":"<fresh jwt>"}"#
        );
        assert_eq!(
            enc(&Request::Ping { r: Some("x") }),
            r#"{"op":"ping","ref":"x"}"#
        );
    }

    #[test]
    fn strings_are_escaped() {
        let got = enc(&Request::Typing {
            r: Some("1"),
            channel: "a\"b\\c\u{1}",
        });
        assert_eq!(
            got,
            r#"{"op":"typing","ref":"1","channel":"a\"b\\c\u0001"}"#
        );
    }

    #[test]
    fn ref_text_renders_decimal() {
        for n in [0u64, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(RefText::new(n).as_str(), n.to_string());
        }
    }

    // ---- replies and pushes: every server op ----

    #[test]
    fn decodes_created() {
        let f = r#"{"op":"created","ref":"3","channel_id":"ch_5f1c","channel_name":"wedding:main:w-12345","created_at":"2026-11-22T10:00:00.000Z"}"#;
        assert_eq!(
            decode(f).unwrap(),
            Incoming::Reply {
                r: Some(3),
                body: ReplyBody::Created(Created {
                    channel_id: "ch_5f1c".into(),
                    channel_name: "wedding:main:w-12345".into(),
                    created_at: "2026-11-22T10:00:00.000Z".into(),
                })
            }
        );
    }

    fn doc_message() -> &'static str {
        r#"{"op":"message","channel":"wedding:main:w-12345","id":42,"type":"timeline_change","event":"timeline:cake_cutting:moved","priority":"high","payload":{"at":"21:15"},"sender":{"user_id":"u-1","role":"coordinator"},"ts":1795341600000}"#
    }

    fn doc_message_value() -> Message {
        Message {
            channel: "wedding:main:w-12345".into(),
            id: 42,
            msg_type: "timeline_change".into(),
            event: Some("timeline:cake_cutting:moved".into()),
            priority: Priority::High,
            payload: json!({"at":"21:15"}),
            sender: SenderInfo {
                user_id: "u-1".into(),
                role: "coordinator".into(),
            },
            ts: 1_795_341_600_000,
            target_user_id: None,
            target_roles: vec![],
            wedding_context: None,
            idempotency_key: None,
        }
    }

    #[test]
    fn decodes_message() {
        assert_eq!(
            decode(doc_message()).unwrap(),
            Incoming::Message(doc_message_value())
        );
    }

    #[test]
    fn decodes_message_with_optional_fields() {
        let f = r#"{"op":"message","channel":"wedding:main:w-1","id":7,"type":"urgent","priority":"critical","payload":"x","sender":{"user_id":"u-2","role":"planner"},"ts":5,"target_user_id":"u-9","wedding_context":{"wedding_id":"w-1","extra":1},"idempotency_key":"k1"}"#;
        let Incoming::Message(m) = decode(f).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(m.event, None);
        assert_eq!(m.priority, Priority::Critical);
        assert_eq!(m.payload, json!("x"));
        assert_eq!(m.target_user_id.as_deref(), Some("u-9"));
        assert_eq!(
            m.wedding_context,
            Some(json!({"wedding_id":"w-1","extra":1}))
        );
        assert_eq!(m.idempotency_key.as_deref(), Some("k1"));
    }

    #[test]
    fn message_without_priority_is_normal() {
        let f = r#"{"op":"message","channel":"c:a:b","id":1,"type":"general","payload":null,"sender":{"user_id":"u","role":"r"},"ts":0}"#;
        let Incoming::Message(m) = decode(f).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(m.priority, Priority::Normal);
    }

    #[test]
    fn decodes_subscribed() {
        let f = format!(
            r#"{{"op":"subscribed","ref":"11","channel":"wedding:main:w-12345","epoch":"9c1e4d2a","recovered":true,"messages":[{}],"presence":[{{"user_id":"u-7","connection_id":"c-1-3","role":"photographer","meta":{{"activity":"ceremony"}}}}],"presence_total":1}}"#,
            doc_message()
        );
        assert_eq!(
            decode(&f).unwrap(),
            Incoming::Reply {
                r: Some(11),
                body: ReplyBody::Subscribed(Subscribed {
                    channel: "wedding:main:w-12345".into(),
                    epoch: "9c1e4d2a".into(),
                    recovered: true,
                    messages: vec![doc_message_value()],
                    presence: vec![PresenceEntry {
                        user_id: "u-7".into(),
                        connection_id: "c-1-3".into(),
                        role: "photographer".into(),
                        meta: json!({"activity":"ceremony"}),
                    }],
                    presence_total: 1,
                })
            }
        );
    }

    #[test]
    fn subscribed_epoch_may_be_a_number_and_lists_may_be_absent() {
        let f = r#"{"op":"subscribed","ref":"1","channel":"c:a:b","epoch":77,"recovered":false}"#;
        let Incoming::Reply {
            body: ReplyBody::Subscribed(s),
            ..
        } = decode(f).unwrap()
        else {
            panic!("not subscribed")
        };
        assert_eq!(s.epoch, "77");
        assert!(!s.recovered);
        assert!(s.messages.is_empty() && s.presence.is_empty());
    }

    #[test]
    fn decodes_unsubscribed_published_ok_pong() {
        assert_eq!(
            decode(r#"{"op":"unsubscribed","ref":"4","channel":"wedding:main:w-12345"}"#).unwrap(),
            Incoming::Reply {
                r: Some(4),
                body: ReplyBody::Unsubscribed {
                    channel: "wedding:main:w-12345".into()
                }
            }
        );
        assert_eq!(
            decode(r#"{"op":"published","ref":"5","channel":"wedding:main:w-12345","id":42,"delivered_count":3,"queued_count":1}"#)
                .unwrap(),
            Incoming::Reply {
                r: Some(5),
                body: ReplyBody::Published(Published { id: 42, delivered_count: 3, queued_count: 1 })
            }
        );
        assert_eq!(
            decode(r#"{"op":"ok","ref":"6"}"#).unwrap(),
            Incoming::Reply {
                r: Some(6),
                body: ReplyBody::Ok
            }
        );
        assert_eq!(
            decode(r#"{"op":"pong","ref":"7"}"#).unwrap(),
            Incoming::Reply {
                r: Some(7),
                body: ReplyBody::Pong
            }
        );
    }

    #[test]
    fn foreign_or_missing_ref_is_none() {
        assert_eq!(
            decode(r#"{"op":"pong","ref":"x"}"#).unwrap(),
            Incoming::Reply {
                r: None,
                body: ReplyBody::Pong
            }
        );
        assert_eq!(
            decode(r#"{"op":"pong"}"#).unwrap(),
            Incoming::Reply {
                r: None,
                body: ReplyBody::Pong
            }
        );
    }

    #[test]
    fn decodes_error_with_and_without_retry_after() {
        let f = r#"{"op":"error","ref":"8","code":"WS_PAYLOAD_TOO_LARGE","message":"payload is 70000 bytes; the limit is 65536","retryable":false}"#;
        assert_eq!(
            decode(f).unwrap(),
            Incoming::Reply {
                r: Some(8),
                body: ReplyBody::Error(ServerError {
                    code: "WS_PAYLOAD_TOO_LARGE".into(),
                    message: "payload is 70000 bytes; the limit is 65536".into(),
                    retryable: false,
                    retry_after: None,
                })
            }
        );
        let f = r#"{"op":"error","ref":"9","code":"WS_RATE_LIMITED","message":"slow down","retryable":true,"retry_after":3}"#;
        let Incoming::Reply {
            body: ReplyBody::Error(e),
            ..
        } = decode(f).unwrap()
        else {
            panic!("not an error")
        };
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        let err: crate::Error = e.into();
        assert!(err.is_retryable());
        assert_eq!(err.code(), Some("WS_RATE_LIMITED"));

        let f = r#"{"op":"error","code":"WS_BAD_REQUEST","message":"x","retryable":false,"retry_after":1.5}"#;
        let Incoming::Reply {
            r,
            body: ReplyBody::Error(e),
        } = decode(f).unwrap()
        else {
            panic!("not an error")
        };
        assert_eq!(r, None);
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));

        // A nonsensical retry_after is dropped, not an error.
        let f = r#"{"op":"error","code":"WS_RATE_LIMITED","retry_after":-1}"#;
        let Incoming::Reply {
            body: ReplyBody::Error(e),
            ..
        } = decode(f).unwrap()
        else {
            panic!("not an error")
        };
        assert_eq!(e.retry_after, None);
        assert!(!e.retryable);
    }

    #[test]
    fn decodes_presence_diff_and_typing() {
        let f = r#"{"op":"presence_diff","channel":"wedding:main:w-12345","joins":[{"user_id":"u-7","connection_id":"c-1-3","role":"photographer","meta":{"activity":"ceremony"}}],"leaves":[],"total":4}"#;
        let Incoming::PresenceDiff {
            channel,
            joins,
            leaves,
            total,
        } = decode(f).unwrap()
        else {
            panic!("not a diff")
        };
        assert_eq!(channel, "wedding:main:w-12345");
        assert_eq!(joins.len(), 1);
        assert_eq!(joins[0].meta, json!({"activity":"ceremony"}));
        assert!(leaves.is_empty());
        assert_eq!(total, 4);

        let f = r#"{"op":"presence_state","channel":"c:a:b","presence":[{"user_id":"u","connection_id":"c-0-1","role":"guest","meta":{}}],"total":250}"#;
        let Incoming::PresenceState {
            presence, total, ..
        } = decode(f).unwrap()
        else {
            panic!("not a state")
        };
        assert_eq!((presence.len(), total), (1, 250));

        let f =
            r#"{"op":"typing","channel":"wedding:main:w-12345","user_id":"u-3","role":"couple"}"#;
        assert_eq!(
            decode(f).unwrap(),
            Incoming::Typing {
                channel: "wedding:main:w-12345".into(),
                user_id: "u-3".into(),
                role: "couple".into(),
            }
        );
    }

    #[test]
    fn encodes_and_decodes_shared_state() {
        let v = json!({"a": 1});
        let set = Request::StateSet {
            r: None,
            channel: "wedding:main:w-1",
            doc: "timeline",
            version: 3,
            value: &v,
        };
        assert_eq!(
            set.encode(),
            r#"{"op":"state_set","channel":"wedding:main:w-1","doc":"timeline","version":3,"value":{"a":1}}"#
        );
        let got = decode(r#"{"op":"state","ref":"4","channel":"c","doc":"d","version":0,"value":null,"writer":null}"#).unwrap();
        match got {
            Incoming::Reply {
                r: Some(4),
                body: ReplyBody::State(d),
            } => assert_eq!((d.version, d.value, d.writer), (0, Value::Null, None)),
            other => panic!("{other:?}"),
        }
        let got = decode(r#"{"op":"state_conflict","ref":"5","channel":"c","doc":"d","version":2,"value":{"a":1},"writer":{"user_id":"u","org":"o","role":"couple"},"your_version":1}"#).unwrap();
        match got {
            Incoming::Reply {
                body:
                    ReplyBody::StateWrite(crate::state::StateWrite::Conflict {
                        current,
                        your_version,
                    }),
                ..
            } => {
                assert_eq!((current.version, your_version), (2, 1));
                assert_eq!(current.writer.unwrap().role, "couple");
            }
            other => panic!("{other:?}"),
        }
        let got = decode(r#"{"op":"state_ok","ref":"6","channel":"c","doc":"d","version":2,"id":9,"overrode":{"user_id":"v","org":"o","role":"venue","version":1}}"#).unwrap();
        assert!(
            matches!(
                &got,
                Incoming::Reply {
                    body: ReplyBody::StateWrite(crate::state::StateWrite::Applied { version: 2, id: 9, overrode: Some(o) }),
                    ..
                } if o.user_id == "v"
            ),
            "{got:?}"
        );
        let got = decode(r#"{"op":"state_overridden","channel":"c","doc":"d","version":2,"your_version":1,"by":{"user_id":"u","org":"o","role":"couple"}}"#).unwrap();
        assert!(
            matches!(
                got,
                Incoming::StateOverridden {
                    version: 2,
                    your_version: 1,
                    ..
                }
            ),
            "{got:?}"
        );
    }

    #[test]
    fn unknown_op_and_bad_frames() {
        assert_eq!(
            decode(r#"{"op":"occupancy","channel":"c:a:b"}"#).unwrap(),
            Incoming::Unknown {
                op: "occupancy".into()
            }
        );
        assert!(decode("not json").is_err());
        assert!(decode(r#"{"ref":"1"}"#).is_err());
        assert!(decode(r#"{"op":"published","ref":"1","id":"x"}"#).is_err());
    }

    #[test]
    fn escaped_op_still_decodes() {
        // Cow falls back to an owned string when the text has escapes.
        assert_eq!(
            decode(r#"{"op":"p\u006fng","ref":"1"}"#).unwrap(),
            Incoming::Reply {
                r: Some(1),
                body: ReplyBody::Pong
            }
        );
    }

    #[test]
    fn http_error_body() {
        let body = br#"{"success":false,"error":{"code":"WS_UNAUTHORIZED","message":"token expired","retryable":false}}"#;
        assert_eq!(http_error_message(body).as_deref(), Some("token expired"));
        assert_eq!(http_error_message(b""), None);
        assert_eq!(http_error_message(b"<html>"), None);
    }
}
