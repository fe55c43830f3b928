//! The REST API of SPEC §4 (for backends, tools and the admin page): the `Rest` handler,
//! its routing table, auth (bearer JWT or a configured API key for the `service` role),
//! the `{"success", "data" | "error"}` envelope and the helpers every endpoint shares
//! (query strings, JSON bodies, the WebSocket request a body becomes).
//!
//! Every channel operation goes through `ringbearer_io::Api` to the channel's owner shard
//! as the same request a WebSocket op sends, and its rules (names, access, limits, sizes)
//! are checked there by the same code: this door only translates shapes. Bodies are
//! turned into the WebSocket request JSON and parsed by `ringbearer_core::protocol`.
//! The endpoints live by concern: `channels` (create, subscribe, unsubscribe, broadcast,
//! lists, detail), `weddings`, `audit`, `parked` (the dead-letter list), `observability`
//! (health, metrics, event stream);
//! `config` is the `[rest]` section.
//!
//! It does not read sockets (that is `ringbearer_io::api`).

mod audit;
mod channels;
mod config;
mod observability;
mod parked;
mod realtime;
mod state;
mod weddings;

pub use config::RestConfig;

use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::protocol::{parse_request, Request};
use ringbearer_core::Claims;
use ringbearer_io::{Api, HttpHandler, HttpRequest, HttpResponse};
use ringbearer_persist::registry::Registry;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The shared state's read (GET) and write (POST), docs/decisions.md §31.
const STATE_PATH: &str = "/api/websocket/channels/state";

/// The routes, shared by every shard.
pub struct Rest {
    keys: Vec<(Vec<u8>, Arc<Claims>)>,
    registry: Option<Registry>,
    cfg: RestConfig,
    /// The webhook sender's counters and outbox state (health alerts, metrics).
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// Cluster mode's state (health, metrics); `None` on a single node.
    cluster: Option<Arc<ringbearer_io::cluster::Link>>,
}

impl Rest {
    pub fn new(
        cfg: RestConfig,
        registry: Option<Registry>,
        webhooks: Option<Arc<crate::webhooks::Webhooks>>,
        cluster: Option<Arc<ringbearer_io::cluster::Link>>,
    ) -> anyhow::Result<Rest> {
        let keys = cfg
            .keys()?
            .into_iter()
            .map(|(k, c)| (k, Arc::new(c)))
            .collect();
        Ok(Rest {
            keys,
            registry,
            cfg,
            webhooks,
            cluster,
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

fn bad(m: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, m)
}

fn now_ms() -> u64 {
    ringbearer_io::clock::now_ms()
}

type Reply = Result<Value, Refusal>;

impl Rest {
    /// The caller: a configured API key (`X-API-Key`, or as the bearer) or a JWT.
    /// `apikey_header`: the `apikey` header counts as a bearer too (realtime-js's REST
    /// broadcast sends its key there).
    fn caller(
        &self,
        api: &Api,
        req: &HttpRequest,
        apikey_header: bool,
    ) -> Result<Arc<Claims>, Refusal> {
        let bearer = req
            .head
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer ").map(str::trim))
            .or_else(|| req.head.apikey.as_deref().filter(|_| apikey_header));
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
        const ROUTES: [(&str, &str); 17] = [
            ("POST", realtime::BROADCAST_PATHS[0]),
            ("POST", realtime::BROADCAST_PATHS[1]),
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
            ("GET", "/api/websocket/parked"),
            ("GET", "/api/websocket/events"),
            ("GET", "/api/websocket/routing"),
            ("GET", STATE_PATH),
            ("POST", STATE_PATH),
        ];
        let path = req.head.path.trim_end_matches('/');
        // One path, two methods (the shared state's read and write).
        let found = ROUTES
            .iter()
            .find(|(m, p)| *p == path && (path != STATE_PATH || *m == req.head.method))
            .or_else(|| ROUTES.iter().find(|(_, p)| *p == path));
        let Some((method, path)) = found.copied() else {
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
            "/api/websocket/health" if open => {
                // Open to all; a caller who shows a credential also sees its
                // organization's watchdog alerts in detail.
                let viewer = self.caller(&api, &req, false).ok();
                return ok(self.health(&api, viewer.as_deref()));
            }
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
        let realtime = realtime::BROADCAST_PATHS.contains(&path);
        let claims = match self.caller(&api, &req, realtime) {
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
            "/api/websocket/health" => Ok(self.health(&api, Some(&claims))),
            "/api/websocket/metrics" => return self.metrics(&api),
            "/api/websocket/channels/list" => self.list(&api, &claims, &req).await,
            "/api/websocket/channels/detail" => self.detail(&api, &claims, &req).await,
            "/api/websocket/audit" => self.audit(&claims, &req).await,
            // The caller organization's routing table (SPEC §2 `target_roles`).
            "/api/websocket/routing" => Ok(serde_json::json!({
                "organization_id": claims.org,
                "routing": api.config().routing.table_for(&claims.org),
            })),
            STATE_PATH if method == "GET" => self.state_get(&api, &claims, &req).await,
            "/api/websocket/parked" => self.parked(&claims, &req).await,
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
                    STATE_PATH => self.state_post(&api, &claims, body).await,
                    p if realtime::BROADCAST_PATHS.contains(&p) => {
                        return match self.realtime_broadcast(&api, &claims, body).await {
                            Ok(data) => HttpResponse::json(
                                202,
                                serde_json::to_vec(&json!({"success": true, "data": data}))
                                    .expect("json"),
                            ),
                            Err(e) => HttpResponse::refusal(&e),
                        };
                    }
                    _ => unreachable!("every POST route is matched"),
                },
            },
        };
        match result {
            Ok(data) => ok(data),
            Err(e) => HttpResponse::refusal(&e),
        }
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
