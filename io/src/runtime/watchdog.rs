//! The presence watchdog service (SPEC §3 "Watchdog", docs/decisions.md §30), on shard 0:
//! every `watchdog.check_interval_ms`, when some wedding is today (calendar clock), it
//! gathers from every shard who is present on the weddings' channels (`Op::Watch` through
//! the mesh), lets `crate::watchdog::Watchdog` decide, and sends each alert as a stored
//! system message published through the owner's normal publish path to the wedding's
//! coordination channel (created, owned by the wedding's organization, when it does not
//! exist), then queues its webhook. An alert whose publish fails is offered again next
//! round; the publish carries an idempotency key, so a retry stores nothing twice.
//!
//! The sender is the server itself: user `ringbearer`, role `service`, of the wedding's
//! organization, reaching only that organization's weddings (`weddings: ["*"]`).

use super::tasks::pause;
use crate::api::Api;
use crate::host::ShardCtx;
use crate::journal::WebhookEvent;
use crate::signal::Signal;
use crate::watchdog::{Alert, Watchdog};
use futures_lite::future;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::protocol::{parse_request, Request};
use ringbearer_core::{Claims, Role, Tier};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The user id of the server's own messages.
pub const SYSTEM_USER: &str = "ringbearer";

/// The server's identity in organization `org`.
fn system_claims(org: &str) -> Arc<Claims> {
    Arc::new(Claims {
        sub: SYSTEM_USER.into(),
        org: org.to_owned(),
        role: Role::Service,
        tier: Tier::Enterprise,
        weddings: vec!["*".into()],
        exp: u64::MAX,
        nbf: None,
    })
}

/// Runs until `stop`; a round in progress is abandoned at `stop` (nothing of it is
/// half-applied: an alert counts as sent only once its publish was answered).
pub(super) async fn run(ctx: Rc<ShardCtx>, stop: Rc<Signal>) {
    let cfg = ctx.cfg.watchdog.clone();
    if !cfg.enabled {
        return;
    }
    let interval = Duration::from_millis(cfg.check_interval_ms);
    let priority = cfg
        .priority()
        .unwrap_or(ringbearer_core::Priority::Critical);
    let mut dog = Watchdog::new(cfg);
    // This life of the server, in the alerts' idempotency keys.
    let life = crate::clock::now_ms();
    let api = Api::new(ctx.clone());
    while pause(&stop, interval).await {
        let round = round(&ctx, &api, &mut dog, priority, life);
        let finished = future::or(async { round.await.then_some(()) }, async {
            stop.wait().await;
            None
        })
        .await;
        if finished.is_none() && stop.is_set() {
            return;
        }
    }
}

/// One round; `true` when it ran to its end.
async fn round(
    ctx: &Rc<ShardCtx>,
    api: &Api,
    dog: &mut Watchdog,
    priority: ringbearer_core::Priority,
    life: u64,
) -> bool {
    let now = ctx.shared.calendar_now_ms();
    let today = ctx.shared.weddings.list_today(now);
    if today.is_empty() {
        dog.step(now, &today, &Default::default());
        ctx.shared.watch_alerts.set(Vec::new());
        return true;
    }
    let ids = today
        .iter()
        .map(|w| (w.id.clone(), w.organization_id.clone()))
        .collect();
    let seen = match api.watch(&system_claims("-"), ids).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("watchdog: presence not gathered this round: {e}");
            return true;
        }
    };
    for alert in dog.step(now, &today, &seen) {
        match send(api, &alert, priority, life).await {
            Ok(id) => {
                dog.sent(&alert, now);
                let (event, kind) = alert.names();
                let mut body = alert.payload();
                body["channel"] = alert.channel().as_str().into();
                body["message_id"] = id.into();
                body["event"] = event.into();
                api.webhook(WebhookEvent {
                    org: alert.org().to_owned(),
                    kind,
                    at_ms: crate::clock::now_ms(),
                    body,
                });
                tracing::info!(org = alert.org(), channel = %alert.channel(), event, "watchdog alert sent");
            }
            Err(e) => {
                tracing::warn!(org = alert.org(), channel = %alert.channel(), "watchdog alert not sent (retried next round): {e}");
            }
        }
    }
    ctx.shared.watch_alerts.set(dog.active(&today));
    true
}

/// Publishes `alert` to its coordination channel, creating the channel (of the wedding's
/// organization, naming the wedding) when it does not exist; the message's id.
async fn send(
    api: &Api,
    alert: &Alert,
    priority: ringbearer_core::Priority,
    life: u64,
) -> Result<u64, Refusal> {
    let claims = system_claims(alert.org());
    let (event, _) = alert.names();
    let channel = alert.channel().as_str();
    let publish = serde_json::json!({
        "op": "publish",
        "channel": channel,
        "type": "urgent",
        "event": event,
        "priority": priority.as_str(),
        "payload": alert.payload(),
        "idempotency_key": alert.idempotency_key(life),
    });
    let Request::Publish(req) = parse(api, &publish)? else {
        return Err(Refusal::new(ErrorCode::Internal, "not a publish"));
    };
    match api.publish(claims.clone(), req.clone()).await {
        Ok(p) => Ok(p.id),
        Err(e) if e.code == ErrorCode::ChannelNotFound => {
            let wedding = match alert {
                Alert::Absent { wedding_id, .. }
                | Alert::Back { wedding_id, .. }
                | Alert::BatteryLow { wedding_id, .. } => wedding_id,
            };
            let create = serde_json::json!({
                "op": "create", "name": channel, "wedding_id": wedding,
            });
            let Request::Create(c) = parse(api, &create)? else {
                return Err(Refusal::new(ErrorCode::Internal, "not a create"));
            };
            // Created meanwhile by the organization: the create answers with it.
            api.create(claims.clone(), c).await?;
            api.publish(claims, req).await.map(|p| p.id)
        }
        Err(e) => Err(e),
    }
}

/// The request as a client would send it, checked by the same parser (one set of rules).
fn parse(api: &Api, v: &serde_json::Value) -> Result<Request, Refusal> {
    parse_request(&v.to_string(), &api.config().limits)
        .map(|e| e.req)
        .map_err(|e| e.refusal)
}
