//! The shared-state endpoints (docs/decisions.md §31): `GET channels/state` reads a
//! document, `POST channels/state` writes one (`value`: the whole value, like `state_set`;
//! `fields`: a patch, like `state_patch`). The same typed operations as the `/ws` ops,
//! parsed by the WebSocket door's parser; the owner shard decides access and conflicts.
//!
//! A refused stale write is not a failure of the request: it answers `success: true` with
//! `applied: false` and the current document (like etcd's transaction `succeeded: false`),
//! so a client re-bases on `version` and retries. Errors keep their SPEC codes.

use super::channels::channel_query;
use super::{bad, query, ws_request, Reply, Rest};
use ringbearer_core::protocol::Request;
use ringbearer_core::Claims;
use ringbearer_io::owner::{Reply as OwnerReply, StateView};
use ringbearer_io::{Api, HttpRequest};
use serde_json::{json, Map, Value};
use std::sync::Arc;

fn view_json(v: &StateView) -> Value {
    json!({
        "channel_name": v.channel.as_str(),
        "doc": v.doc,
        "version": v.version,
        "value": v.value,
        "writer": v.writer,
    })
}

impl Rest {
    /// `GET /api/websocket/channels/state?channel_name=..|channel_id=..&doc=..`
    pub(super) async fn state_get(
        &self,
        api: &Api,
        claims: &Arc<Claims>,
        req: &HttpRequest,
    ) -> Reply {
        let q = query(req);
        let doc = q.iter().find(|(k, _)| k == "doc").map(|(_, v)| v.clone());
        let rest: Vec<(String, String)> = q.into_iter().filter(|(k, _)| k != "doc").collect();
        if rest.iter().any(|(k, _)| k == "offset" || k == "limit") {
            return Err(bad(
                "unknown parameter; use channel_name or channel_id, and doc",
            ));
        }
        let mut body = channel_query(&rest)?;
        let doc = ringbearer_core::protocol::state_doc_name(doc, "state_get")?;
        let channel = self.channel(api, claims, &mut body).await?;
        let v = api.state_get(claims.clone(), channel, doc).await?;
        Ok(view_json(&v))
    }

    /// `POST /api/websocket/channels/state` with `channel_name` or `channel_id`, `doc`,
    /// `version`, and `value` or `fields`.
    pub(super) async fn state_post(
        &self,
        api: &Api,
        claims: &Arc<Claims>,
        mut body: Map<String, Value>,
    ) -> Reply {
        let channel = self.channel(api, claims, &mut body).await?;
        let op = match (body.contains_key("value"), body.contains_key("fields")) {
            (true, false) => "state_set",
            (false, true) => "state_patch",
            (true, true) => return Err(bad("give `value` or `fields`, not both")),
            (false, false) => return Err(bad("a state write needs `value` or `fields`")),
        };
        body.insert("channel".into(), Value::String(channel.as_str().into()));
        let allowed = ringbearer_core::protocol::fields_of(op).expect("a state op");
        let Request::StateWrite(req) = ws_request(api, op, body, allowed)? else {
            unreachable!("state_set and state_patch parse to StateWrite")
        };
        match api.state_write(claims.clone(), req).await? {
            OwnerReply::StateOk(ok) => {
                let mut data = json!({
                    "applied": true,
                    "channel_name": ok.channel.as_str(),
                    "doc": ok.doc,
                    "version": ok.version,
                    "message_id": ok.id,
                });
                if let Some(o) = &ok.overrode {
                    data["overrode"] = json!(o);
                }
                Ok(data)
            }
            OwnerReply::StateConflict { current, yours } => {
                let mut data = view_json(&current);
                data["applied"] = false.into();
                data["your_version"] = yours.into();
                Ok(data)
            }
            _ => unreachable!("Api::state_write answers StateOk or StateConflict"),
        }
    }
}
