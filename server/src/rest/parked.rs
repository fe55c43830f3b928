//! `GET /api/websocket/parked`: the dead-letter list of one organization (issue 16 item 5,
//! docs/decisions.md §32) — wedding-day `critical`/`emergency` messages a member did not
//! acknowledge within `escalation.park_after_ms`, newest first, filtered and paged in the
//! query. An admin or service sees only entries about its own organization's channels.
//!
//! It does not park anything (the owner shards do) nor send webhooks (`webhooks.rs`).

use super::{bad, internal, query, Reply, Rest};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::{Claims, Role};
use ringbearer_io::HttpRequest;
use ringbearer_persist::registry::{ParkedQuery, PARKED_QUERY_LIMIT_MAX};
use serde_json::{json, Value};
use std::sync::Arc;

/// Entries in a page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 50;

impl Rest {
    pub(super) async fn parked(&self, claims: &Arc<Claims>, req: &HttpRequest) -> Reply {
        if !matches!(claims.role, Role::Admin | Role::Service) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "the parked list needs the admin or service role",
            ));
        }
        let Some(registry) = &self.registry else {
            return Err(Refusal::new(
                ErrorCode::Internal,
                "the parked list needs the registry (storage durability other than memory)",
            ));
        };
        let max = self.cfg.admin_page_max.min(PARKED_QUERY_LIMIT_MAX);
        let mut q = ParkedQuery {
            channel_org: claims.org.clone(),
            limit: DEFAULT_LIMIT.min(max),
            ..ParkedQuery::default()
        };
        for (k, v) in query(req) {
            match k.as_str() {
                "wedding_id" => q.wedding_id = Some(v),
                "channel" => q.channel = Some(v),
                "open" => {
                    q.open_only = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad("`open` must be true or false")),
                    }
                }
                "before" => {
                    q.before_ms = Some(
                        v.parse::<u64>()
                            .ok()
                            .filter(|b| *b <= i64::MAX as u64)
                            .ok_or_else(|| bad("`before` must be unix milliseconds"))?,
                    )
                }
                "limit" => {
                    q.limit = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=max).contains(n))
                        .ok_or_else(|| {
                            bad(format!("`limit` must be 1 to {max} (rest.admin_page_max)"))
                        })?
                }
                other => {
                    return Err(bad(format!(
                        "unknown filter `{}`; use wedding_id, channel, open, before, limit",
                        other.escape_default()
                    )))
                }
            }
        }
        let limit = q.limit;
        let rows = registry.query_parked(q).await.map_err(internal)?;
        let full = rows.rows.len() as u32 == limit;
        let next_before = rows.rows.last().filter(|_| full).map(|r| r.parked_at_ms);
        let entries: Vec<Value> = rows
            .rows
            .into_iter()
            .map(|r| {
                json!({
                    "channel": r.channel,
                    "message_id": r.message_id,
                    "wedding_id": r.wedding_id,
                    "user_id": r.user_id,
                    "user_org": r.org,
                    "priority": r.priority,
                    "type": r.msg_type,
                    "published_at_ms": r.published_at_ms,
                    "parked_at": ringbearer_core::time::rfc3339_ms(r.parked_at_ms),
                    "parked_at_ms": r.parked_at_ms,
                    "acked_at_ms": r.acked_at_ms,
                })
            })
            .collect();
        Ok(json!({"entries": entries, "next_before": next_before}))
    }
}
