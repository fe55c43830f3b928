//! `GET /api/websocket/audit` (an organization's audit records, filtered in the query) and
//! the audit records the REST door writes itself: its own refusals (`audit_denied`) and
//! admin changes (`audit_admin`).
//!
//! It does not audit channel operations (the owner shard does) nor store records (that is
//! `ringbearer_persist::registry`).

use super::{bad, internal, now_ms, query, Reply, Rest};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::{Claims, Role};
use ringbearer_io::HttpRequest;
use ringbearer_persist::registry::AuditQuery;
use serde_json::{json, Value};
use std::sync::Arc;

impl Rest {
    /// Audits a refusal of the REST door itself (the owner shard audits the rest), visible
    /// to the organization it concerned.
    pub(super) fn audit_denied(
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

    pub(super) fn audit_admin(&self, claims: &Claims, what: &str, mut detail: Value) {
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

    pub(super) async fn audit(&self, claims: &Arc<Claims>, req: &HttpRequest) -> Reply {
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
}
