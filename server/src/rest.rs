//! The REST API of SPEC §4 (for backends, tools and the admin page): routes, auth (bearer
//! JWT or a configured API key for the `service` role), the `{"success", "data" | "error"}`
//! shapes, health, Prometheus metrics and the audit query.
//!
//! Every channel operation goes through `ringbearer_io::Api` to the channel's owner shard
//! as the same request a WebSocket op sends, and its rules (names, access, limits, sizes)
//! are checked there by the same code: this file only translates shapes. Bodies are
//! turned into the WebSocket request JSON and parsed by `ringbearer_core::protocol`.
//!
//! It does not read sockets (that is `ringbearer_io::api`).

use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::message::{access_frame, render_message_json, FrameBytes};
use ringbearer_core::protocol::{parse_request, Request, SubscribeReq};
use ringbearer_core::{ChannelName, Claims, Role, Tier, UserKey};
use ringbearer_io::metrics::{LatencyWindow, Totals, LATENCY_BUCKETS_US};
use ringbearer_io::owner::ChannelDetail;
use ringbearer_io::{Api, HttpHandler, HttpRequest, HttpResponse};
use ringbearer_persist::registry::{AuditQuery, EventDate, Registry, WeddingRecord};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// `[rest]` in the config file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RestConfig {
    /// Keys for backends (`service` role), each bound to one organization.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Whether `GET /api/websocket/health` and `/metrics` need a token or key. Off: load
    /// balancers and Prometheus scrape them without one (they show counts, never
    /// content); put the port behind your firewall or turn this on.
    pub observability_requires_auth: bool,
    /// Largest `limit` of one audit query.
    pub audit_query_max: u32,
    /// Longest `description` accepted on create.
    pub max_description_bytes: usize,
    /// Largest `limit` of one page of the admin page's lists (`channels/detail`
    /// subscribers, `channels/list?scope=organization`).
    pub admin_page_max: u32,
    /// How often `GET /api/websocket/events` sends an event (ms).
    pub events_interval_ms: u64,
    /// Open `GET /api/websocket/events` streams per shard; over it: 503 `WS_OVERLOADED`.
    pub events_max_streams_per_shard: usize,
    pub health: HealthConfig,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            api_keys: Vec::new(),
            observability_requires_auth: false,
            audit_query_max: 1000,
            max_description_bytes: 1024,
            admin_page_max: 200,
            events_interval_ms: 2000,
            events_max_streams_per_shard: 16,
            health: HealthConfig::default(),
        }
    }
}

/// One API key. The key is secret: prefer `key_file`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who the key is (audit records name it as `service:<name>`).
    pub name: String,
    pub organization_id: String,
    pub key: Option<String>,
    pub key_file: Option<PathBuf>,
    /// The tier whose limits the key's requests count against.
    #[serde(default = "enterprise")]
    pub tier: String,
}

fn enterprise() -> String {
    "enterprise".into()
}

/// `[rest.health]`: the thresholds that make health `degraded` or `overloaded`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// p99 delivery latency over the health window above this: `degraded`.
    pub degraded_p99_ms: f64,
    /// ... above this: `overloaded`.
    pub overloaded_p99_ms: f64,
    /// Connections as a share of `max_connections` (percent) above this: `degraded`.
    pub degraded_connections_percent: f64,
    /// ... above this: `overloaded`.
    pub overloaded_connections_percent: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            degraded_p99_ms: 100.0,
            overloaded_p99_ms: 1000.0,
            degraded_connections_percent: 80.0,
            overloaded_connections_percent: 95.0,
        }
    }
}

/// Shortest accepted API key, in bytes.
pub const API_KEY_MIN_BYTES: usize = 24;

impl RestConfig {
    /// Checks the section and reads key files; errors name the field.
    pub fn keys(&self) -> anyhow::Result<Vec<(Vec<u8>, Claims)>> {
        let mut out = Vec::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let field = format!("rest.api_keys[{i}]");
            let key = match (&k.key, &k.key_file) {
                (Some(s), None) => s.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("{field}.key_file {}: {e}", f.display()))?
                    .trim_end()
                    .to_owned(),
                _ => anyhow::bail!("invalid config: {field} needs one of key or key_file"),
            };
            if key.len() < API_KEY_MIN_BYTES {
                anyhow::bail!(
                    "invalid config: {field}.key must be at least {API_KEY_MIN_BYTES} bytes"
                );
            }
            let tier = Tier::parse(&k.tier).ok_or_else(|| {
                anyhow::anyhow!("invalid config: {field}.tier `{}` is not a tier", k.tier)
            })?;
            let claims = Claims {
                sub: format!("service:{}", k.name),
                org: k.organization_id.clone(),
                role: Role::Service,
                tier,
                weddings: vec!["*".into()],
                exp: u64::MAX,
                nbf: None,
            };
            claims
                .validate()
                .map_err(|e| anyhow::anyhow!("invalid config: {field}: {}", e.message))?;
            out.push((key.into_bytes(), claims));
        }
        let h = &self.health;
        if !(h.degraded_p99_ms > 0.0 && h.degraded_p99_ms <= h.overloaded_p99_ms) {
            anyhow::bail!(
                "invalid config: rest.health.degraded_p99_ms must be > 0 and <= overloaded_p99_ms"
            );
        }
        if !(h.degraded_connections_percent > 0.0
            && h.degraded_connections_percent <= h.overloaded_connections_percent
            && h.overloaded_connections_percent <= 100.0)
        {
            anyhow::bail!("invalid config: rest.health.degraded_connections_percent must be > 0 and <= overloaded_connections_percent <= 100");
        }
        if self.audit_query_max == 0 {
            anyhow::bail!("invalid config: rest.audit_query_max must be greater than 0");
        }
        if self.admin_page_max == 0 {
            anyhow::bail!("invalid config: rest.admin_page_max must be greater than 0");
        }
        if self.events_interval_ms == 0 {
            anyhow::bail!("invalid config: rest.events_interval_ms must be greater than 0");
        }
        if self.events_max_streams_per_shard == 0 {
            anyhow::bail!(
                "invalid config: rest.events_max_streams_per_shard must be greater than 0"
            );
        }
        Ok(out)
    }
}

/// The routes, shared by every shard.
pub struct Rest {
    keys: Vec<(Vec<u8>, Arc<Claims>)>,
    registry: Option<Registry>,
    cfg: RestConfig,
}

impl Rest {
    pub fn new(cfg: RestConfig, registry: Option<Registry>) -> anyhow::Result<Rest> {
        let keys = cfg
            .keys()?
            .into_iter()
            .map(|(k, c)| (k, Arc::new(c)))
            .collect();
        Ok(Rest {
            keys,
            registry,
            cfg,
        })
    }
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn ok(data: Value) -> HttpResponse {
    HttpResponse::json(
        200,
        serde_json::to_vec(&json!({"success": true, "data": data})).expect("json"),
    )
}

/// `limit` of an admin page list when none is given.
const ADMIN_PAGE_DEFAULT: usize = 50;

fn bad(m: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, m)
}

fn now_ms() -> u64 {
    ringbearer_io::clock::now_ms()
}

type Reply = Result<Value, Refusal>;

impl Rest {
    /// The caller: a configured API key (`X-API-Key`, or as the bearer) or a JWT.
    fn caller(&self, api: &Api, req: &HttpRequest) -> Result<Arc<Claims>, Refusal> {
        let bearer = req
            .head
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer ").map(str::trim));
        if let Some(k) = req.head.api_key.as_deref().or(bearer) {
            if let Some((_, c)) = self
                .keys
                .iter()
                .find(|(key, _)| same_key(key, k.as_bytes()))
            {
                return Ok(c.clone());
            }
            if req.head.api_key.is_some() {
                return Err(Refusal::new(ErrorCode::Unauthorized, "unknown API key"));
            }
        }
        match bearer {
            Some(t) => api.verify_token(t).map(Arc::new),
            None => Err(Refusal::new(
                ErrorCode::Unauthorized,
                "no credentials: send Authorization: Bearer <token or API key> or X-API-Key",
            )),
        }
    }

    async fn route(self: Arc<Self>, api: Api, req: HttpRequest) -> HttpResponse {
        if let Some(r) = crate::assets::serve(&req) {
            return r;
        }
        const ROUTES: [(&str, &str); 11] = [
            ("POST", "/api/websocket/channels/create"),
            ("POST", "/api/websocket/channels/subscribe"),
            ("POST", "/api/websocket/channels/broadcast"),
            ("POST", "/api/websocket/channels/unsubscribe"),
            ("POST", "/api/websocket/weddings"),
            ("GET", "/api/websocket/channels/list"),
            ("GET", "/api/websocket/channels/detail"),
            ("GET", "/api/websocket/health"),
            ("GET", "/api/websocket/metrics"),
            ("GET", "/api/websocket/audit"),
            ("GET", "/api/websocket/events"),
        ];
        let path = req.head.path.trim_end_matches('/');
        let Some((method, path)) = ROUTES.iter().find(|(_, p)| *p == path).copied() else {
            return HttpResponse::refusal_with(
                404,
                &bad(format!(
                    "no endpoint at {}; see docs/operations.md",
                    req.head.path.escape_default()
                )),
            );
        };
        if req.head.method != method {
            let mut r = HttpResponse::refusal_with(
                405,
                &bad(format!("{path} takes {method}, not {}", req.head.method)),
            );
            r.headers = format!("Allow: {method}\r\n");
            return r;
        }
        let open = !self.cfg.observability_requires_auth;
        match path {
            "/api/websocket/health" if open => return ok(self.health(&api)),
            "/api/websocket/metrics" if open => return self.metrics(&api),
            _ => {}
        }
        if method == "POST" {
            let ct = req.head.content_type.as_deref().unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim();
            if !mime.eq_ignore_ascii_case("application/json") {
                return HttpResponse::refusal_with(
                    415,
                    &bad(format!(
                        "Content-Type must be application/json, not `{}`",
                        ct.escape_default()
                    )),
                );
            }
        }
        let claims = match self.caller(&api, &req) {
            Ok(c) => c,
            Err(e) => {
                // SPEC §5: denied access is audited, 401s included (no identity trusted).
                api.audit_unauthorized(path, req.peer, &e);
                return HttpResponse::refusal(&e);
            }
        };
        let result = match path {
            "/api/websocket/events" => {
                return match self.events(&api, &claims, &req).await {
                    Ok(r) => r,
                    Err(e) => HttpResponse::refusal(&e),
                }
            }
            "/api/websocket/health" => Ok(self.health(&api)),
            "/api/websocket/metrics" => return self.metrics(&api),
            "/api/websocket/channels/list" => self.list(&api, &claims, &req).await,
            "/api/websocket/channels/detail" => self.detail(&api, &claims, &req).await,
            "/api/websocket/audit" => self.audit(&claims, &req).await,
            _ => match body_object(&req, &api.config().limits) {
                Err(e) => Err(e),
                Ok(body) => match path {
                    "/api/websocket/channels/create" => self.create(&api, &claims, body).await,
                    "/api/websocket/channels/subscribe" => {
                        self.subscribe(&api, &claims, body).await
                    }
                    "/api/websocket/channels/broadcast" => {
                        self.broadcast(&api, &claims, body).await
                    }
                    "/api/websocket/channels/unsubscribe" => {
                        self.unsubscribe(&api, &claims, body).await
                    }
                    "/api/websocket/weddings" => self.wedding(&api, &claims, body).await,
                    _ => unreachable!("every POST route is matched"),
                },
            },
        };
        match result {
            Ok(data) => ok(data),
            Err(e) => HttpResponse::refusal(&e),
        }
    }

    async fn create(&self, api: &Api, claims: &Arc<Claims>, mut body: Map<String, Value>) -> Reply {
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

    /// `{wedding_id, event_date, is_wedding_day}` as far as the weddings table knows it.
    fn wedding_context(api: &Api, wedding_id: &str) -> Value {
        let shared = api.shared();
        match shared.weddings.get(wedding_id) {
            Some(w) => json!({
                "wedding_id": w.id,
                "event_date": w.event_date,
                "is_wedding_day": w.is_wedding_day(shared.calendar_now_ms()),
            }),
            None => json!({"wedding_id": wedding_id, "event_date": null, "is_wedding_day": false}),
        }
    }

    /// The channel named by `channel_name` or `channel_id`.
    async fn channel(
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

    async fn subscribe(
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

    async fn broadcast(
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

    async fn unsubscribe(
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

    async fn wedding(
        &self,
        api: &Api,
        claims: &Arc<Claims>,
        mut body: Map<String, Value>,
    ) -> Reply {
        if !matches!(claims.role, Role::Admin | Role::Service) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "registering a wedding needs the admin or service role",
            ));
        }
        let field = |body: &mut Map<String, Value>, k: &str| match body.remove(k) {
            Some(Value::String(s)) => Ok(Some(s)),
            None => Ok(None),
            Some(_) => Err(bad(format!("`{k}` is a string"))),
        };
        let id = field(&mut body, "wedding_id")?.ok_or_else(|| bad("needs `wedding_id`"))?;
        let org = field(&mut body, "organization_id")?.unwrap_or_else(|| claims.org.clone());
        let date = field(&mut body, "event_date")?.ok_or_else(|| bad("needs `event_date`"))?;
        let tz = field(&mut body, "time_zone")?.ok_or_else(|| bad("needs `time_zone`"))?;
        no_more_fields(&body)?;
        if org != claims.org {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "organization_id must be the caller's organization",
            ));
        }
        if id.is_empty() || id.len() > ringbearer_core::access::CLAIM_ID_MAX_BYTES {
            return Err(bad("`wedding_id` must be 1 to 128 bytes"));
        }
        let wedding = ringbearer_io::weddings::Wedding::new(&id, &org, &date, &tz)?;
        let shared = api.shared();
        // SPEC §1: a wedding belongs to the organization that registered it first or created
        // the first channel naming it; only that organization changes its facts.
        if shared
            .weddings
            .owner(&id)
            .is_some_and(|owner| owner != claims.org)
        {
            let e = Refusal::new(
                ErrorCode::Forbidden,
                "that wedding belongs to another organization",
            );
            let owner = shared.weddings.owner(&id);
            self.audit_denied(claims, "wedding_upsert", None, owner.as_deref(), &e);
            return Err(e);
        }
        // Stored first (awaited: the answer means it survives a restart), then live.
        if let Some(registry) = &self.registry {
            let event_date = EventDate::parse(&wedding.event_date)
                .ok_or_else(|| bad("`event_date` must be YYYY-MM-DD"))?;
            let rec = WeddingRecord {
                wedding_id: wedding.id.clone(),
                organization_id: wedding.organization_id.clone(),
                event_date,
                time_zone: wedding.time_zone.clone(),
                updated_at_ms: now_ms(),
            };
            registry.upsert_wedding(rec).await.map_err(internal)?;
        }
        let stored = shared.weddings.upsert(wedding)?;
        let is_day = stored.is_wedding_day(shared.calendar_now_ms());
        self.audit_admin(
            claims,
            "wedding_upsert",
            json!({"wedding_id": id, "event_date": date}),
        );
        Ok(json!({
            "wedding_id": stored.id,
            "organization_id": stored.organization_id,
            "event_date": stored.event_date,
            "time_zone": stored.time_zone,
            "is_wedding_day": is_day,
        }))
    }

    /// Audits a refusal of the REST door itself (the owner shard audits the rest), visible
    /// to the organization it concerned.
    fn audit_denied(
        &self,
        claims: &Claims,
        op: &str,
        channel: Option<&Value>,
        org: Option<&str>,
        e: &Refusal,
    ) {
        if let Some(r) = &self.registry {
            let channel = channel
                .and_then(Value::as_str)
                .filter(|c| ringbearer_core::ChannelName::parse(c).is_ok())
                .map(str::to_owned);
            drop(r.audit(ringbearer_persist::registry::AuditEntry {
                at_ms: now_ms(),
                actor_user_id: claims.sub.clone(),
                actor_org: claims.org.clone(),
                action: ringbearer_persist::registry::AuditAction::Denied,
                channel,
                channel_org: org.map(str::to_owned),
                detail: json!({"op": op, "code": e.code.as_str(), "message": e.message}),
            }));
        }
    }

    fn audit_admin(&self, claims: &Claims, what: &str, mut detail: Value) {
        if let Some(r) = &self.registry {
            detail["action"] = what.into();
            drop(r.audit(ringbearer_persist::registry::AuditEntry {
                at_ms: now_ms(),
                actor_user_id: claims.sub.clone(),
                actor_org: claims.org.clone(),
                action: ringbearer_persist::registry::AuditAction::Admin,
                channel: None,
                channel_org: None,
                detail,
            }));
        }
    }

    async fn list(&self, api: &Api, claims: &Arc<Claims>, req: &HttpRequest) -> Reply {
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
    fn page(&self, q: &[(String, String)]) -> Result<(usize, usize), Refusal> {
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
    async fn detail(&self, api: &Api, claims: &Arc<Claims>, req: &HttpRequest) -> Reply {
        let q = query(req);
        let mut body = channel_query(&q)?;
        let (offset, limit) = self.page(&q)?;
        let channel = self.channel(api, claims, &mut body).await?;
        let d = api.detail(claims.clone(), channel, offset, limit).await?;
        Ok(detail_json(&d))
    }

    /// `GET /api/websocket/events`: the admin page's live figures as server-sent events,
    /// for the admin and service roles: `health` (the health endpoint's `data`) every
    /// `rest.events_interval_ms` and, with `?channel_name=` (or `channel_id`, `offset`,
    /// `limit` as for `channels/detail`), that channel's `detail` after it. A refused detail
    /// is one `error` event (the REST error body), then the stream ends.
    async fn events(
        self: &Arc<Self>,
        api: &Api,
        claims: &Arc<Claims>,
        req: &HttpRequest,
    ) -> Result<HttpResponse, Refusal> {
        if !matches!(claims.role, Role::Admin | Role::Service) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "the event stream needs the admin or service role",
            ));
        }
        let q = query(req);
        let mut body = channel_query(&q)?;
        let (offset, limit) = self.page(&q)?;
        let channel = if body.is_empty() {
            None
        } else {
            Some((self.channel(api, claims, &mut body).await?, offset, limit))
        };
        let slot = StreamSlot::take(self.cfg.events_max_streams_per_shard).ok_or_else(|| {
            let mut e = Refusal::new(
                ErrorCode::Overloaded,
                format!(
                    "{} event streams are open on this shard (rest.events_max_streams_per_shard); retry",
                    self.cfg.events_max_streams_per_shard
                ),
            );
            e.retry_after = Some(self.cfg.events_interval_ms.div_ceil(1000).max(1));
            e
        })?;
        let events = Events {
            rest: self.clone(),
            api: api.clone(),
            claims: claims.clone(),
            channel,
            sent: 0,
            done: false,
            _slot: slot,
        };
        Ok(HttpResponse::streaming(
            200,
            "text/event-stream; charset=utf-8",
            Box::new(events),
        ))
    }

    async fn audit(&self, claims: &Arc<Claims>, req: &HttpRequest) -> Reply {
        if !matches!(claims.role, Role::Admin | Role::Service) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "the audit log needs the admin or service role",
            ));
        }
        let Some(registry) = &self.registry else {
            return Err(Refusal::new(
                ErrorCode::Internal,
                "the audit log needs the registry (storage durability other than memory)",
            ));
        };
        // An organization sees what its own people and services did, and every record about
        // its channels (refusals included) — filtered in the query, so `limit` counts them.
        let mut q = AuditQuery {
            org: Some(claims.org.clone()),
            limit: 100.min(self.cfg.audit_query_max),
            ..AuditQuery::default()
        };
        let num = |k: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("`{k}` must be unix milliseconds")))
        };
        for (k, v) in query(req) {
            match k.as_str() {
                "channel" => q.channel = Some(v),
                "user_id" => q.actor_user_id = Some(v),
                "from" => q.from_ms = Some(num("from", &v)?),
                "to" => q.to_ms = Some(num("to", &v)?),
                "limit" => {
                    let n = num("limit", &v)?;
                    if n == 0 || n > u64::from(self.cfg.audit_query_max) {
                        return Err(bad(format!(
                            "`limit` must be 1 to {} (rest.audit_query_max)",
                            self.cfg.audit_query_max
                        )));
                    }
                    q.limit = n as u32;
                }
                other => {
                    return Err(bad(format!(
                        "unknown filter `{}`; use channel, user_id, from, to, limit",
                        other.escape_default()
                    )))
                }
            }
        }
        let rows = registry.query_audit(q).await.map_err(internal)?;
        let records: Vec<Value> = rows
            .rows
            .into_iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "at": ringbearer_core::time::rfc3339_ms(r.entry.at_ms),
                    "at_ms": r.entry.at_ms,
                    "actor_user_id": r.entry.actor_user_id,
                    "actor_org": r.entry.actor_org,
                    "action": r.entry.action.as_str(),
                    "channel": r.entry.channel,
                    "channel_org": r.entry.channel_org,
                    "detail": r.entry.detail,
                })
            })
            .collect();
        Ok(json!({"records": records}))
    }

    fn health(&self, api: &Api) -> Value {
        let s = api.snapshot();
        let h = &self.cfg.health;
        let (rate, lat) = match &s.window {
            Some((older, secs)) if *secs > 0.0 => (
                s.totals.published.saturating_sub(older.published) as f64 / secs,
                LatencyWindow::between(older, &s.totals),
            ),
            _ => (0.0, LatencyWindow::default()),
        };
        let shared = api.shared();
        let calendar_now = shared.calendar_now_ms();
        let conn_pct = 100.0 * s.connections as f64 / s.max_connections.max(1) as f64;
        let mut alerts = Vec::new();
        let mut level = 0;
        let mut raise = |l: usize, m: String| {
            level = level.max(l);
            alerts
                .push(json!({"level": if l >= 2 { "critical" } else { "warning" }, "message": m}));
        };
        if lat.p99_ms > h.overloaded_p99_ms {
            raise(
                2,
                format!(
                    "p99 delivery latency {} ms is over {} ms",
                    lat.p99_ms, h.overloaded_p99_ms
                ),
            );
        } else if lat.p99_ms > h.degraded_p99_ms {
            raise(
                1,
                format!(
                    "p99 delivery latency {} ms is over {} ms",
                    lat.p99_ms, h.degraded_p99_ms
                ),
            );
        }
        if conn_pct > h.overloaded_connections_percent {
            raise(
                2,
                format!("connections at {conn_pct:.0}% of max_connections"),
            );
        } else if conn_pct > h.degraded_connections_percent {
            raise(
                1,
                format!("connections at {conn_pct:.0}% of max_connections"),
            );
        }
        if s.totals.storage_failures > 0 {
            raise(
                1,
                format!(
                    "storage failed {} time(s): publishes on the affected shard are refused; see the logs",
                    s.totals.storage_failures
                ),
            );
        }
        let status = ["healthy", "degraded", "overloaded"][level];
        // 100 at rest, falling with the nearer of the two limits.
        let pressure = (conn_pct / h.overloaded_connections_percent)
            .max(lat.p99_ms / h.overloaded_p99_ms)
            .clamp(0.0, 1.0);
        let score = ((1.0 - pressure) * 100.0).round();
        let sup = s.totals.suppliers;
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        json!({
            "status": status,
            "metrics": {
                "active_connections": s.connections,
                "total_channels": s.totals.channels,
                "messages_per_second": round2(rate),
                "average_latency_ms": round2(lat.average_ms),
                "p99_latency_ms": lat.p99_ms,
                "system_health_score": score,
                "wedding_day_mode": shared.wedding_day_mode(calendar_now),
                "saturday_mode": shared.saturday_mode(calendar_now),
                "total_messages": s.totals.published,
                "total_deliveries": s.totals.deliveries,
                "uptime_seconds": s.uptime_secs,
            },
            "wedding_analytics": {
                "active_weddings_today": shared.active_weddings_today(calendar_now),
                "supplier_activity": {
                    "photographers": sup[0],
                    "venues": sup[1],
                    "catering": sup[2],
                    "others": sup[3],
                },
            },
            "alerts": alerts,
        })
    }

    fn metrics(&self, api: &Api) -> HttpResponse {
        let s = api.snapshot();
        let mut body = String::with_capacity(4096);
        render_prometheus(
            &mut body,
            &s.totals,
            s.connections,
            s.max_connections,
            s.uptime_secs,
        );
        HttpResponse {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: body.into_bytes(),
            headers: String::new(),
            stream: None,
        }
    }
}

/// Prometheus text exposition (format 0.0.4) of the totals.
pub fn render_prometheus(
    out: &mut String,
    t: &Totals,
    connections: usize,
    max_connections: usize,
    uptime_secs: u64,
) {
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "ringbearer_connections",
        "gauge",
        "Open WebSocket connections.",
        connections as u64,
    );
    metric(
        "ringbearer_max_connections",
        "gauge",
        "The connection capacity now.",
        max_connections as u64,
    );
    metric(
        "ringbearer_channels",
        "gauge",
        "Channels owned by the shards.",
        t.channels,
    );
    metric(
        "ringbearer_messages_published_total",
        "counter",
        "Messages stored and announced.",
        t.published,
    );
    metric(
        "ringbearer_deliveries_total",
        "counter",
        "Message frames queued to subscriber connections.",
        t.deliveries,
    );
    metric(
        "ringbearer_connections_opened_total",
        "counter",
        "WebSocket connections accepted.",
        t.connections_opened,
    );
    metric(
        "ringbearer_slow_consumer_closes_total",
        "counter",
        "Connections closed for an outgoing backlog over its bound (4001).",
        t.slow_consumer_closes,
    );
    metric(
        "ringbearer_heartbeat_closes_total",
        "counter",
        "Connections closed after two silent heartbeat intervals (4000).",
        t.heartbeat_closes,
    );
    metric(
        "ringbearer_http_requests_total",
        "counter",
        "REST requests served.",
        t.http_requests,
    );
    metric(
        "ringbearer_storage_failures_total",
        "counter",
        "Journal writes or syncs that failed.",
        t.storage_failures,
    );
    metric(
        "ringbearer_uptime_seconds",
        "gauge",
        "Seconds since start.",
        uptime_secs,
    );
    let _ = writeln!(out, "# HELP ringbearer_refusals_total Refusals sent, by error code.\n# TYPE ringbearer_refusals_total counter");
    for (code, n) in &t.refusals {
        let _ = writeln!(
            out,
            "ringbearer_refusals_total{{code=\"{}\"}} {n}",
            code.as_str()
        );
    }
    let _ = writeln!(out, "# HELP ringbearer_delivery_latency_seconds Publish to queued-for-subscribers, per message and receiving shard.\n# TYPE ringbearer_delivery_latency_seconds histogram");
    let mut cum = 0;
    for (i, b) in LATENCY_BUCKETS_US.iter().enumerate() {
        cum += t.latency_buckets[i];
        let _ = writeln!(
            out,
            "ringbearer_delivery_latency_seconds_bucket{{le=\"{}\"}} {cum}",
            *b as f64 / 1e6
        );
    }
    cum += t.latency_buckets[LATENCY_BUCKETS_US.len()];
    let _ = writeln!(
        out,
        "ringbearer_delivery_latency_seconds_bucket{{le=\"+Inf\"}} {cum}"
    );
    let _ = writeln!(
        out,
        "ringbearer_delivery_latency_seconds_sum {}",
        t.latency_sum_us as f64 / 1e6
    );
    let _ = writeln!(out, "ringbearer_delivery_latency_seconds_count {cum}");
    let _ = writeln!(out, "# HELP ringbearer_connected_suppliers Connected users by supplier group.\n# TYPE ringbearer_connected_suppliers gauge");
    for (i, g) in ["photographers", "venues", "catering", "others"]
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            out,
            "ringbearer_connected_suppliers{{group=\"{g}\"}} {}",
            t.suppliers[i]
        );
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(ErrorCode::Internal, format!("registry: {e}"))
}

/// The request's JSON object body (SPEC §4: JSON in, JSON out), nested at most
/// `max_json_depth` deep (the WebSocket door's rule and wording).
fn body_object(
    req: &HttpRequest,
    limits: &ringbearer_core::Limits,
) -> Result<Map<String, Value>, Refusal> {
    ringbearer_core::protocol::check_json_depth(&req.body, limits)?;
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("malformed JSON body: {e}"))),
    }
}

/// Takes an optional boolean field out of `body`.
fn take_bool(body: &mut Map<String, Value>, k: &str) -> Result<Option<bool>, Refusal> {
    match body.remove(k) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(bad(format!("`{k}` is a boolean"))),
    }
}

fn no_more_fields(body: &Map<String, Value>) -> Result<(), Refusal> {
    match body.keys().next() {
        None => Ok(()),
        Some(k) => Err(bad(format!("unknown field `{}`", k.escape_default()))),
    }
}

/// Builds the WebSocket request for `op` from `body` (only `allowed` fields) and parses it
/// with the WebSocket door's parser: one set of validation rules for both doors.
/// The channel named by a detail or events query (`channel_name` or `channel_id`), as a
/// body for `Rest::channel`; `offset` and `limit` are read by `Rest::page`; anything else
/// is refused by name.
fn channel_query(q: &[(String, String)]) -> Result<Map<String, Value>, Refusal> {
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

fn ws_request(
    api: &Api,
    op: &str,
    mut body: Map<String, Value>,
    allowed: &[&str],
) -> Result<Request, Refusal> {
    if let Some(k) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!("unknown field `{}`", k.escape_default())));
    }
    body.insert("op".into(), Value::String(op.into()));
    let text = serde_json::to_string(&body).expect("json");
    parse_request(&text, &api.config().limits)
        .map(|e| e.req)
        .map_err(|e| e.refusal)
}

/// The query string's pairs, percent-decoded.
fn query(req: &HttpRequest) -> Vec<(String, String)> {
    req.head
        .query
        .as_deref()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

thread_local! {
    /// Open event streams on this shard (each shard is one thread).
    static OPEN_STREAMS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One open event stream counted against `rest.events_max_streams_per_shard`.
struct StreamSlot;

impl StreamSlot {
    fn take(max: usize) -> Option<StreamSlot> {
        OPEN_STREAMS.with(|n| {
            (n.get() < max).then(|| {
                n.set(n.get() + 1);
                StreamSlot
            })
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// The body of `GET /api/websocket/events`.
struct Events {
    rest: Arc<Rest>,
    api: Api,
    claims: Arc<Claims>,
    /// The channel whose detail follows each health event: name, offset, limit.
    channel: Option<(ChannelName, usize, usize)>,
    sent: u64,
    done: bool,
    _slot: StreamSlot,
}

/// One server-sent event (`data` is one line of JSON).
fn sse(out: &mut Vec<u8>, event: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

impl ringbearer_io::api::BodyStream for Events {
    fn next_chunk(&mut self) -> ringbearer_io::journal::LocalBoxFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            if self.done {
                return None;
            }
            if self.sent > 0 {
                let every = std::time::Duration::from_millis(self.rest.cfg.events_interval_ms);
                self.api.sleep(every).await;
            }
            self.sent += 1;
            let mut out = Vec::with_capacity(1024);
            let detail = match &self.channel {
                None => None,
                Some((name, offset, limit)) => {
                    let r = self
                        .api
                        .detail(self.claims.clone(), name.clone(), *offset, *limit)
                        .await;
                    match r {
                        Ok(d) => Some(detail_json(&d)),
                        Err(e) => {
                            ringbearer_io::metrics::with(|m| m.refused(e.code));
                            sse(&mut out, "error", &ringbearer_io::http::error_body(&e));
                            self.done = true;
                            return Some(out);
                        }
                    }
                }
            };
            let health = serde_json::to_vec(&self.rest.health(&self.api)).expect("json");
            sse(&mut out, "health", &health);
            if let Some(d) = detail {
                sse(&mut out, "detail", &serde_json::to_vec(&d).expect("json"));
            }
            Some(out)
        })
    }
}

/// The routes as the io layer holds them: the future owns its `Arc`.
pub struct Routes(pub Arc<Rest>);

impl HttpHandler for Routes {
    fn handle(
        &self,
        api: Api,
        req: HttpRequest,
    ) -> ringbearer_io::journal::LocalBoxFuture<'static, HttpResponse> {
        let rest = self.0.clone();
        Box::pin(async move { rest.route(api, req).await })
    }
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
fn detail_json(d: &ChannelDetail) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(toml_key: &str) -> anyhow::Result<Vec<(Vec<u8>, Claims)>> {
        let cfg: RestConfig = toml::from_str(&format!(
            "[[api_keys]]\nname = \"b\"\norganization_id = \"org-1\"\n{toml_key}\n"
        ))?;
        cfg.keys()
    }

    #[test]
    fn bad_keys_and_thresholds_are_refused_naming_the_field() {
        let (k, c) = with_key("key = \"0123456789abcdef01234567\"")
            .unwrap()
            .remove(0);
        assert_eq!(
            (k.len(), c.role, c.sub.as_str()),
            (24, Role::Service, "service:b")
        );
        for (bad, field) in [
            ("key = \"short\"", "rest.api_keys[0].key"),
            ("", "rest.api_keys[0] needs one of key or key_file"),
            (
                "key_file = \"/nonexistent/key\"",
                "rest.api_keys[0].key_file",
            ),
            (
                "key = \"0123456789abcdef01234567\"\ntier = \"gold\"",
                "rest.api_keys[0].tier",
            ),
        ] {
            let e = with_key(bad).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
        let cfg = RestConfig {
            health: HealthConfig {
                degraded_p99_ms: 2000.0,
                ..HealthConfig::default()
            },
            ..RestConfig::default()
        };
        assert!(cfg
            .keys()
            .unwrap_err()
            .to_string()
            .contains("degraded_p99_ms"));
        let cfg = RestConfig {
            audit_query_max: 0,
            ..RestConfig::default()
        };
        assert!(cfg
            .keys()
            .unwrap_err()
            .to_string()
            .contains("audit_query_max"));
        let cfg = RestConfig {
            admin_page_max: 0,
            ..RestConfig::default()
        };
        assert!(cfg
            .keys()
            .unwrap_err()
            .to_string()
            .contains("admin_page_max"));
        for (cfg, field) in [
            (
                RestConfig {
                    events_interval_ms: 0,
                    ..RestConfig::default()
                },
                "rest.events_interval_ms",
            ),
            (
                RestConfig {
                    events_max_streams_per_shard: 0,
                    ..RestConfig::default()
                },
                "rest.events_max_streams_per_shard",
            ),
        ] {
            let e = cfg.keys().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
