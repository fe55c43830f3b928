//! The channel endpoints: `channels/create`, `subscribe`, `unsubscribe`, `broadcast`,
//! `list` (the caller's, or the organization's page of them) and `detail`, each a typed
//! call to the owner shard through `Api`, and the JSON they answer with (`messages`,
//! `detail_json`, also used by the event stream).
//!
//! It does not decide access, names or limits (the owner shard does, with the WebSocket
//! door's rules), and does not route or authenticate (that is `rest/mod.rs`).

use super::{bad, no_more_fields, now_ms, query, take_bool, ws_request, Reply, Rest};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::message::{access_frame, render_message_json, FrameBytes};
use ringbearer_core::protocol::{Request, SubscribeReq};
use ringbearer_core::{ChannelName, Claims, Role, UserKey};
use ringbearer_io::owner::ChannelDetail;
use ringbearer_io::{Api, HttpRequest};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// `limit` of an admin page list when none is given.
const ADMIN_PAGE_DEFAULT: usize = 50;

impl Rest {
    pub(super) async fn create(
        &self,
        api: &Api,
        claims: &Arc<Claims>,
        mut body: Map<String, Value>,
    ) -> Reply {
        if let Some(org) = body.remove("organization_id") {
            if org.as_str() != Some(claims.org.as_str()) {
                let e = Refusal::new(
                    ErrorCode::Forbidden,
                    "organization_id must be the caller's organization",
                );
                // A try at another organization is a denial like any other: audited, and
                // visible to the organization it named.
                let named = org.as_str().filter(|o| !o.is_empty() && o.len() <= 128);
                self.audit_denied(claims, "create", body.get("name"), named, &e);
                return Err(e);
            }
        }
        if let Some(d) = body.remove("description") {
            match d.as_str() {
                Some(s) if s.len() <= self.cfg.max_description_bytes => {}
                _ => {
                    return Err(bad(format!(
                        "`description` must be a string of at most {} bytes",
                        self.cfg.max_description_bytes
                    )))
                }
            }
        }
        // The same fields as the WebSocket door's `create` (one rule for both doors).
        let req = ws_request(api, "create", body, create_fields())?;
        let Request::Create(req) = req else {
            unreachable!("op create parses to Create")
        };
        let wedding = req.wedding_id.clone();
        let c = api.create(claims.clone(), req).await?;
        let mut data = json!({
            "channel_id": c.channel_id,
            "channel_name": c.name.as_str(),
            "created_at": ringbearer_core::time::rfc3339_ms(c.created_at_ms),
        });
        if let Some(w) = wedding {
            data["wedding_context"] = Self::wedding_context(api, &w);
        }
        Ok(data)
    }

    /// The channel named by `channel_name` or `channel_id`.
    pub(super) async fn channel(
        &self,
        api: &Api,
        claims: &Arc<Claims>,
        body: &mut Map<String, Value>,
    ) -> Result<ChannelName, Refusal> {
        let name = body.remove("channel_name");
        let id = body.remove("channel_id");
        match (name, id) {
            (Some(Value::String(n)), None) => ChannelName::parse(&n),
            (None, Some(Value::String(id))) => api.resolve(claims, &id).await,
            (Some(_), Some(_)) => Err(bad("give channel_name or channel_id, not both")),
            (None, None) => Err(bad("needs `channel_name` or `channel_id`")),
            _ => Err(bad("`channel_name` and `channel_id` are strings")),
        }
    }

    /// Whose subscription: the caller's own, or (for `service`) `user_id`'s.
    fn subject(claims: &Claims, body: &mut Map<String, Value>) -> Result<String, Refusal> {
        match body.remove("user_id") {
            None => Ok(claims.sub.clone()),
            Some(Value::String(u)) if u == claims.sub => Ok(u),
            Some(Value::String(u)) if claims.role == Role::Service => {
                if u.is_empty() || u.len() > ringbearer_core::access::CLAIM_ID_MAX_BYTES {
                    return Err(bad("`user_id` must be 1 to 128 bytes"));
                }
                Ok(u)
            }
            Some(Value::String(_)) => Err(Refusal::new(
                ErrorCode::Forbidden,
                "only a service (API key) may act for another user_id",
            )),
            Some(_) => Err(bad("`user_id` is a string")),
        }
    }

    pub(super) async fn subscribe(
        &self,
        api: &Api,
        claims: &Arc<Claims>,
        mut body: Map<String, Value>,
    ) -> Reply {
        let channel = self.channel(api, claims, &mut body).await?;
        let user = Self::subject(claims, &mut body)?;
        let include_history = take_bool(&mut body, "include_history")?.unwrap_or(false);
        no_more_fields(&body)?;
        let req = SubscribeReq {
            channel: channel.clone(),
            last_seen_id: None,
            epoch: None,
            include_history,
        };
        let en = api.enroll(claims.clone(), user.clone(), req).await?;
        let mut data = json!({
            "subscription_id": format!("{}/{}", en.channel_id, user),
            "channel_id": en.channel_id,
            "channel_name": channel.as_str(),
            "user_id": user,
            "subscribed_at": ringbearer_core::time::rfc3339_ms(now_ms()),
            "cursor": en.cursor,
        });
        if let Some(w) = en.wedding_id.as_deref() {
            let shared = api.shared();
            data["wedding_day_priority"] = shared
                .weddings
                .is_wedding_day(w, shared.calendar_now_ms())
                .into();
        }
        if include_history {
            data["historical_messages"] = messages(&en.messages);
            data["recovered"] = en.recovered.into();
        }
        Ok(data)
    }

    pub(super) async fn broadcast(
        &self,
        api: &Api,
        claims: &Arc<Claims>,
        mut body: Map<String, Value>,
    ) -> Reply {
        let channel = self.channel(api, claims, &mut body).await?;
        let content = body
            .remove("content")
            .ok_or_else(|| bad("broadcast needs `content`"))?;
        body.insert("payload".into(), content);
        body.insert("channel".into(), Value::String(channel.as_str().into()));
        let req = ws_request(api, "publish", body, publish_fields())?;
        let Request::Publish(req) = req else {
            unreachable!("op publish parses to Publish")
        };
        let p = api.publish(claims.clone(), req).await?;
        // Users of the channel's organization by their id, others as `org/id`.
        let to = p.recipients.unwrap_or_default();
        let org = &to.channel_org;
        let shown = |v: Vec<UserKey>| -> Vec<String> {
            v.into_iter()
                .map(|u| if &u.org == org { u.sub } else { u.to_string() })
                .collect()
        };
        Ok(json!({
            "message_id": p.id,
            "channel_name": channel.as_str(),
            "delivered_count": p.delivered,
            "queued_count": p.queued,
            "delivery_guarantees": {
                "immediate_delivery": shown(to.online),
                "queued_delivery": shown(to.queued),
                "failed_delivery": [],
            },
        }))
    }

    pub(super) async fn unsubscribe(
        &self,
        api: &Api,
        claims: &Arc<Claims>,
        mut body: Map<String, Value>,
    ) -> Reply {
        let channel = self.channel(api, claims, &mut body).await?;
        let user = Self::subject(claims, &mut body)?;
        // Checked, not needed: the queue goes with the subscription either way (below).
        take_bool(&mut body, "cleanup_queues")?;
        no_more_fields(&body)?;
        let removed = api
            .withdraw(claims.clone(), user.clone(), channel.clone())
            .await?;
        // The queue is a position in the channel's shared log (not a copy per user), so
        // ending the subscription frees the position and cursor whether or not
        // `cleanup_queues` is set.
        let cleaned: Vec<&str> = if removed {
            vec!["subscription", "cursor", "queue_position"]
        } else {
            vec![]
        };
        Ok(json!({
            "channel_name": channel.as_str(),
            "user_id": user,
            "unsubscribed_at": ringbearer_core::time::rfc3339_ms(now_ms()),
            "cleaned_resources": cleaned,
        }))
    }

    pub(super) async fn list(&self, api: &Api, claims: &Arc<Claims>, req: &HttpRequest) -> Reply {
        let q = query(req);
        match q
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str())
        {
            None | Some("user") => {}
            Some("organization") => return self.list_org(api, claims, &q).await,
            Some(other) => {
                return Err(bad(format!(
                    "unknown scope `{}`; use user or organization",
                    other.escape_default()
                )))
            }
        }
        let mut body = Map::new();
        if let Some(u) = q.iter().find(|(k, _)| k == "user_id") {
            body.insert("user_id".into(), Value::String(u.1.clone()));
        }
        let user = Self::subject(claims, &mut body)?;
        let channels: Vec<Value> = api
            .list(claims.clone(), user.clone())
            .await?
            .iter()
            .map(|c| {
                json!({
                    "name": c.name.as_str(),
                    "type": c.kind,
                    "active_users": c.active_users,
                    "last_activity": ringbearer_core::time::rfc3339_ms(c.last_activity_ms),
                    "unread_count": c.unread.unwrap_or(0),
                })
            })
            .collect();
        Ok(json!({"user_id": user, "channels": channels}))
    }

    /// `channels/list?scope=organization`: every channel of the caller's organization, on
    /// every shard, sorted by name, one page of them (admin and service roles only).
    async fn list_org(&self, api: &Api, claims: &Arc<Claims>, q: &[(String, String)]) -> Reply {
        if !claims.role.is_org_wide() {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "the organization's channel list needs the admin or service role",
            ));
        }
        let (offset, limit) = self.page(q)?;
        let (channels, total) = api.list_org(claims.clone(), offset, limit).await?;
        let channels: Vec<Value> = channels
            .iter()
            .map(|c| {
                json!({
                    "name": c.name.as_str(),
                    "type": c.kind,
                    "wedding_id": c.wedding_id,
                    "active_users": c.active_users,
                    "members": c.members,
                    "last_activity": ringbearer_core::time::rfc3339_ms(c.last_activity_ms),
                })
            })
            .collect();
        Ok(json!({
            "organization_id": claims.org,
            "total": total,
            "offset": offset,
            "limit": limit,
            "channels": channels,
        }))
    }

    /// `offset` (default 0) and `limit` (default 50, at most `rest.admin_page_max`) of a
    /// query.
    pub(super) fn page(&self, q: &[(String, String)]) -> Result<(usize, usize), Refusal> {
        let max = self.cfg.admin_page_max as usize;
        let mut offset = 0;
        let mut limit = ADMIN_PAGE_DEFAULT.min(max);
        for (k, v) in q {
            match k.as_str() {
                "offset" => {
                    offset = v
                        .parse::<u32>()
                        .map_err(|_| bad("`offset` must be a whole number"))?
                        as usize
                }
                "limit" => {
                    limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=max).contains(n))
                        .ok_or_else(|| {
                            bad(format!("`limit` must be 1 to {max} (rest.admin_page_max)"))
                        })?
                }
                _ => {}
            }
        }
        Ok((offset, limit))
    }

    /// `channels/detail`: one channel as the admin page shows it (subscribers with cursors
    /// and unread counts, presence, recent messages), for the admin and service roles of
    /// the channel's organization; the owner shard decides and audits a refusal.
    pub(super) async fn detail(&self, api: &Api, claims: &Arc<Claims>, req: &HttpRequest) -> Reply {
        let q = query(req);
        let mut body = channel_query(&q)?;
        let (offset, limit) = self.page(&q)?;
        let channel = self.channel(api, claims, &mut body).await?;
        let d = api.detail(claims.clone(), channel, offset, limit).await?;
        Ok(detail_json(&d))
    }
}

/// The channel named by a detail or events query (`channel_name` or `channel_id`), as a
/// body for `Rest::channel`; `offset` and `limit` are read by `Rest::page`; anything else
/// is refused by name.
pub(super) fn channel_query(q: &[(String, String)]) -> Result<Map<String, Value>, Refusal> {
    let mut body = Map::new();
    for (k, v) in q {
        match k.as_str() {
            "channel_name" | "channel_id" => {
                body.insert(k.clone(), Value::String(v.clone()));
            }
            "offset" | "limit" => {}
            other => {
                return Err(bad(format!(
                    "unknown parameter `{}`; use channel_name or channel_id, offset, limit",
                    other.escape_default()
                )))
            }
        }
    }
    Ok(body)
}

fn create_fields() -> &'static [&'static str] {
    ringbearer_core::protocol::fields_of("create").expect("create is an op")
}

fn publish_fields() -> &'static [&'static str] {
    ringbearer_core::protocol::fields_of("publish").expect("publish is an op")
}

/// Stored messages as a JSON array of `message` objects (the `/ws` shape).
fn messages(frames: &[Arc<FrameBytes>]) -> Value {
    Value::Array(
        frames
            .iter()
            .filter_map(|f| {
                let mut buf = Vec::new();
                render_message_json(access_frame(f).ok()?, &mut buf);
                serde_json::from_slice(&buf).ok()
            })
            .collect(),
    )
}

/// `channels/detail`'s `data`: one channel as the admin page shows it.
pub(super) fn detail_json(d: &ChannelDetail) -> Value {
    let subscribers: Vec<Value> = d
        .subscribers
        .iter()
        .map(|s| {
            json!({
                "org": s.user.org,
                "user_id": s.user.sub,
                "online_connections": s.online_connections,
                "cursor": s.cursor,
                "unread": s.unread,
            })
        })
        .collect();
    json!({
        "name": d.name.as_str(),
        "channel_id": d.channel_id,
        "type": d.kind,
        "wedding_id": d.wedding_id,
        "created_at": ringbearer_core::time::rfc3339_ms(d.created_at_ms),
        "last_id": d.last_id,
        "durable_id": d.durable_id,
        "last_activity": ringbearer_core::time::rfc3339_ms(d.last_activity_ms),
        "members": d.members,
        "active_users": d.active_users,
        "online_connections": d.online_connections,
        "offset": d.offset,
        "limit": d.limit,
        "subscribers": subscribers,
        "presence": d.presence,
        "presence_total": d.presence_total,
        "recent_messages": messages(&d.recent),
    })
}
