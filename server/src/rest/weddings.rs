//! `POST /api/websocket/weddings`: registering or updating a wedding's date and time zone,
//! and its watchdog plan (`ceremony_time`, `key_roles`, `coordination_channel`; stored in
//! the registry first, then in the live weddings table), and the
//! `wedding_context` a create answers with.
//!
//! It does not decide which day is a wedding day (that is `ringbearer_io::weddings`).

use super::{bad, internal, no_more_fields, now_ms, Reply, Rest};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::{Claims, Role};
use ringbearer_io::Api;
use ringbearer_persist::registry::{EventDate, WeddingRecord};
use serde_json::{json, Map, Value};
use std::sync::Arc;

impl Rest {
    /// `{wedding_id, event_date, is_wedding_day}` as far as the weddings table knows it.
    pub(super) fn wedding_context(api: &Api, wedding_id: &str) -> Value {
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

    pub(super) async fn wedding(
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
        // The watchdog plan (docs/decisions.md §30): a field left out keeps what is
        // stored, `null` clears it.
        let plan = WatchInput::take(&mut body)?;
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
        let wedding = {
            let kept = shared
                .weddings
                .get(&id)
                .filter(|old| old.organization_id == org)
                .map(|old| old.watch_fields())
                .unwrap_or_default();
            let time = plan.ceremony_time.unwrap_or(kept.0);
            let roles = plan.key_roles.unwrap_or(kept.1);
            let channel = plan.coordination_channel.unwrap_or(kept.2);
            wedding.with_watch(time.as_deref(), &roles, channel.as_deref())?
        };
        // SPEC §1: a wedding belongs to the organization that registered it first or created
        // the first channel naming it; only that organization changes its facts. Decided
        // (and a new one claimed) before the registry write, so that of two organizations
        // registering one new wedding at once the refused one stores nothing.
        let held = match shared.weddings.reserve(&id, &claims.org) {
            Ok(c) => c,
            Err(e) => {
                let owner = shared.weddings.owner(&id);
                self.audit_denied(claims, "wedding_upsert", None, owner.as_deref(), &e);
                return Err(e);
            }
        };
        // Given back when the wedding is stored, or was not, or this request is dropped.
        let reservation = Reservation {
            weddings: &shared.weddings,
            id: &id,
            org: &claims.org,
            held,
        };
        let stored = self.store_wedding(shared, wedding).await;
        drop(reservation);
        let stored = stored?;
        let is_day = stored.is_wedding_day(shared.calendar_now_ms());
        self.audit_admin(
            claims,
            "wedding_upsert",
            json!({"wedding_id": id, "event_date": date}),
        );
        let (ceremony_time, key_roles, _) = stored.watch_fields();
        Ok(json!({
            "wedding_id": stored.id,
            "organization_id": stored.organization_id,
            "event_date": stored.event_date,
            "time_zone": stored.time_zone,
            "is_wedding_day": is_day,
            "ceremony_time": ceremony_time,
            "key_roles": key_roles,
            "coordination_channel": stored.watch.coordination_channel.as_ref().map(|c| c.as_str()),
        }))
    }

    /// Stores `wedding` in the registry (awaited: the answer means it survives a restart),
    /// then in the live table.
    async fn store_wedding(
        &self,
        shared: &ringbearer_io::shared::Shared,
        wedding: ringbearer_io::weddings::Wedding,
    ) -> Result<ringbearer_io::weddings::Wedding, Refusal> {
        if let Some(registry) = &self.registry {
            let event_date = EventDate::parse(&wedding.event_date)
                .ok_or_else(|| bad("`event_date` must be YYYY-MM-DD"))?;
            let (ceremony_time, key_roles, coordination_channel) = wedding.watch_fields();
            let rec = WeddingRecord {
                wedding_id: wedding.id.clone(),
                organization_id: wedding.organization_id.clone(),
                event_date,
                time_zone: wedding.time_zone.clone(),
                updated_at_ms: now_ms(),
                ceremony_time,
                key_roles,
                coordination_channel,
            };
            registry.upsert_wedding(rec).await.map_err(internal)?;
        }
        shared.weddings.upsert(wedding)
    }
}

/// A wedding claimed by [`ringbearer_io::weddings::Weddings::reserve`] while its
/// registration is stored: the claim is given back on drop.
struct Reservation<'a> {
    weddings: &'a ringbearer_io::weddings::Weddings,
    id: &'a str,
    org: &'a str,
    held: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.held {
            self.weddings.unclaim(self.id, self.org);
        }
    }
}

/// The watchdog fields of an upsert: `None` left out (keep what is stored),
/// `Some(None)`/`Some(vec![])` given as `null` (clear).
#[derive(Default)]
struct WatchInput {
    ceremony_time: Option<Option<String>>,
    key_roles: Option<Vec<String>>,
    coordination_channel: Option<Option<String>>,
}

impl WatchInput {
    fn take(body: &mut Map<String, Value>) -> Result<WatchInput, Refusal> {
        let invalid = |m: &str| Refusal::new(ErrorCode::InvalidWeddingContext, m.to_owned());
        let text = |body: &mut Map<String, Value>, k: &str| match body.remove(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s))),
            Some(_) => Err(invalid(&format!("`{k}` is a string or null"))),
        };
        let ceremony_time = text(body, "ceremony_time")?;
        let coordination_channel = text(body, "coordination_channel")?;
        let key_roles = match body.remove("key_roles") {
            None => None,
            Some(Value::Null) => Some(Vec::new()),
            Some(Value::Array(a)) => Some(
                a.into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(invalid("`key_roles` is a list of role names")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(invalid("`key_roles` is a list of role names")),
        };
        Ok(WatchInput {
            ceremony_time,
            key_roles,
            coordination_channel,
        })
    }
}
