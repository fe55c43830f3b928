//! `POST /api/broadcast` (and `/realtime/v1/api/broadcast`, where realtime-js sends it):
//! Supabase Realtime's REST broadcast, `{messages: [{topic, event, payload, private?}]}`,
//! each message one publish of type `broadcast` through the same `Api::publish` as
//! `channels/broadcast` (docs/realtime-js.md). Answered 202 with each message's id.

use super::{bad, ws_request, Reply, Rest};
use ringbearer_core::error::Refusal;
use ringbearer_core::protocol::Request;
use ringbearer_core::Claims;
use ringbearer_io::Api;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Where realtime-js (`httpEndpointURL`) and Supabase's own clients post broadcasts.
pub(super) const BROADCAST_PATHS: [&str; 2] = ["/api/broadcast", "/realtime/v1/api/broadcast"];

/// The fields one message may carry; `idempotency_key` and `priority` are Ringbearer's.
const MESSAGE_FIELDS: [&str; 6] = [
    "topic",
    "event",
    "payload",
    "private",
    "idempotency_key",
    "priority",
];

impl Rest {
    /// Publishes each message in order; the first refusal ends the request with its code
    /// (the messages before it are stored: their ids are in the refusal's message).
    pub(super) async fn realtime_broadcast(
        &self,
        api: &Api,
        claims: &Arc<Claims>,
        mut body: Map<String, Value>,
    ) -> Reply {
        let Some(Value::Array(messages)) = body.remove("messages") else {
            return Err(bad("the body is {\"messages\": [{topic, event, payload}]}"));
        };
        if let Some(k) = body.keys().next() {
            return Err(bad(format!("unknown field `{}`", k.escape_default())));
        }
        let mut out = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            let stored = |e: Refusal, out: &Vec<Value>| Refusal {
                message: format!("messages[{i}]: {} (stored before it: {out:?})", e.message),
                ..e
            };
            let Value::Object(mut m) = m else {
                return Err(stored(bad("each message is an object"), &out));
            };
            if let Some(k) = m.keys().find(|k| !MESSAGE_FIELDS.contains(&k.as_str())) {
                let e = bad(format!("unknown field `{}`", k.escape_default()));
                return Err(stored(e, &out));
            }
            let topic = match m.remove("topic") {
                Some(Value::String(t)) => t,
                _ => return Err(stored(bad("a message needs `topic`"), &out)),
            };
            // Supabase's topics are the channel's name; `realtime:` is accepted too.
            let channel = topic.strip_prefix("realtime:").unwrap_or(&topic).to_owned();
            m.remove("private");
            m.insert("channel".into(), Value::String(channel.clone()));
            m.insert("type".into(), Value::String("broadcast".into()));
            m.entry("payload").or_insert(Value::Null);
            let req =
                ws_request(api, "publish", m, &PUBLISH_FIELDS).map_err(|e| stored(e, &out))?;
            let Request::Publish(req) = req else {
                unreachable!("op publish parses to Publish")
            };
            let p = api
                .publish(claims.clone(), req)
                .await
                .map_err(|e| stored(e, &out))?;
            out.push(json!({"topic": topic, "message_id": p.id}));
        }
        Ok(json!({ "messages": out }))
    }
}

const PUBLISH_FIELDS: [&str; 6] = [
    "channel",
    "type",
    "event",
    "payload",
    "idempotency_key",
    "priority",
];
