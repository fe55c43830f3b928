//! Parking and escalation in the registry (issue 16 item 5, docs/decisions.md §32): the
//! dead-letter list of wedding-day messages a member did not acknowledge in time
//! (`parked`), and the durable webhook outbox (`webhook_outbox`) its sender thread drains.
//!
//! A parked entry and its webhook are written in one transaction and only when the entry is
//! new, so an entry found again (a sweep after a restart rescans the kept window) neither
//! duplicates the row nor sends a second webhook. The per-organization bound of the outbox
//! is enforced here, where the rows are counted.
//!
//! It does not read the clock (times come in), sign or send anything (the server's sender).

use super::error::from_sqlite;
use super::records::{check_id, to_i64, Loaded, RowWarning};
use super::{CursorAck, Registry, RegistryError, Reply};
use rusqlite::{params, Connection};

type Result<T> = std::result::Result<T, RegistryError>;

/// Most rows one parked-list query or one outbox batch returns.
pub const PARKED_QUERY_LIMIT_MAX: u32 = 1000;

/// One dead-letter entry: `member` had not acknowledged `message_id` of `channel` within
/// the park delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedRecord {
    pub channel: String,
    pub message_id: u64,
    /// The member (organization, user id).
    pub org: String,
    pub user_id: String,
    /// The organization owning the channel: it sees the entry and gets the webhook.
    pub channel_org: String,
    pub wedding_id: Option<String>,
    pub priority: String,
    pub msg_type: String,
    pub published_at_ms: u64,
    pub parked_at_ms: u64,
    /// When the member's cursor passed the message (it was read after all).
    pub acked_at_ms: Option<u64>,
}

/// A webhook to store in the outbox: `body` is the exact JSON the receiver gets (signed
/// when sent; resends are byte-identical).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub org: String,
    pub kind: String,
    pub body: String,
    pub created_at_ms: u64,
}

/// A stored webhook waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingWebhook {
    pub seq: i64,
    pub row: WebhookRow,
    pub attempts: u32,
    pub failing_since_ms: Option<u64>,
}

/// What storing a webhook did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    Stored,
    /// The organization already has `max_queued` rows waiting: not stored.
    Overflow,
    /// (parking) The entry existed already: nothing written, no webhook.
    Duplicate,
}

/// `GET /api/websocket/parked`'s filters: always one organization's entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParkedQuery {
    pub channel_org: String,
    pub wedding_id: Option<String>,
    pub channel: Option<String>,
    /// Only entries not acknowledged since.
    pub open_only: bool,
    /// Entries parked before this (paging backwards: the oldest `parked_at_ms` of the
    /// previous page).
    pub before_ms: Option<u64>,
    pub limit: u32,
}

/// An organization's outbox, for health: waiting rows and the oldest failure among them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxState {
    pub org: String,
    pub waiting: u64,
    pub dead: u64,
    pub failing_since_ms: Option<u64>,
}

fn check_webhook(w: &WebhookRow) -> Result<()> {
    check_id("webhook id", &w.id)?;
    check_id("organization_id", &w.org)?;
    to_i64("created_at_ms", w.created_at_ms)?;
    Ok(())
}

fn insert_webhook(conn: &Connection, w: &WebhookRow, max_queued: u64) -> Result<Enqueued> {
    let waiting: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM webhook_outbox WHERE organization_id = ?1 AND dead = 0",
        )
        .and_then(|mut s| s.query_row(params![w.org], |r| r.get(0)))
        .map_err(from_sqlite)?;
    if waiting as u64 >= max_queued {
        return Ok(Enqueued::Overflow);
    }
    conn.prepare_cached(
        "INSERT INTO webhook_outbox (id, organization_id, kind, body, created_at_ms, next_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )
    .and_then(|mut s| s.execute(params![w.id, w.org, w.kind, w.body, w.created_at_ms as i64]))
    .map_err(from_sqlite)?;
    Ok(Enqueued::Stored)
}

fn resolve(
    conn: &Connection,
    channel: &str,
    org: &str,
    user: &str,
    cursor: i64,
    at: i64,
) -> Result<usize> {
    conn.prepare_cached(
        "UPDATE parked SET acked_at_ms = ?5
         WHERE channel = ?1 AND organization_id = ?2 AND user_id = ?3
           AND message_id <= ?4 AND acked_at_ms IS NULL",
    )
    .and_then(|mut s| s.execute(params![channel, org, user, cursor, at]))
    .map_err(from_sqlite)
}

fn parked_from_row(r: &rusqlite::Row<'_>) -> std::result::Result<ParkedRecord, String> {
    let u = |i: usize| -> std::result::Result<u64, String> {
        let v: i64 = r.get(i).map_err(|e| e.to_string())?;
        u64::try_from(v).map_err(|_| format!("column {i} is negative"))
    };
    let s =
        |i: usize| -> std::result::Result<String, String> { r.get(i).map_err(|e| e.to_string()) };
    let acked: Option<i64> = r.get(10).map_err(|e| e.to_string())?;
    Ok(ParkedRecord {
        channel: s(0)?,
        message_id: u(1)?,
        org: s(2)?,
        user_id: s(3)?,
        channel_org: s(4)?,
        wedding_id: r.get(5).map_err(|e| e.to_string())?,
        priority: s(6)?,
        msg_type: s(7)?,
        published_at_ms: u(8)?,
        parked_at_ms: u(9)?,
        acked_at_ms: acked.map(|v| v.max(0) as u64),
    })
}

impl Registry {
    /// Marks `org/user_id`'s open entries of `channel` up to `cursor` acknowledged at
    /// `at_ms` (the primary key's prefix finds them).
    pub fn resolve_parked(
        &self,
        channel: &str,
        org: &str,
        user_id: &str,
        cursor: u64,
        at_ms: u64,
    ) -> Reply<usize> {
        let args = (channel.to_owned(), org.to_owned(), user_id.to_owned());
        let checked = to_i64("cursor", cursor).and_then(|c| Ok((args, c, to_i64("at_ms", at_ms)?)));
        self.submit_checked(checked, |conn, ((channel, org, user), cursor, at)| {
            resolve(conn, &channel, &org, &user, cursor, at)
        })
    }

    /// An ack (SPEC §2.3): moves the cursor as `advance_cursors` does and resolves the
    /// member's parked entries it passes, in one job (one queue slot, one transaction).
    pub fn ack_resolving(&self, ack: CursorAck, at_ms: u64) -> Reply<usize> {
        let checked =
            to_i64("cursor", ack.cursor).and_then(|c| Ok((ack, c, to_i64("at_ms", at_ms)?)));
        self.submit_checked(checked, |conn, (ack, cursor, at)| {
            let matched = super::store::advance_cursors(conn, std::slice::from_ref(&ack))?;
            resolve(conn, &ack.channel, &ack.org, &ack.user_id, cursor, at)?;
            Ok(matched)
        })
    }

    /// Parks `entry` and, if it is new, stores `webhook` with it (one transaction). A
    /// webhook over the organization's `max_queued` is not stored (`Overflow`); the entry
    /// is. `webhook` `None`: the organization has no webhook configured.
    pub fn park(
        &self,
        entry: ParkedRecord,
        webhook: Option<WebhookRow>,
        max_queued: u64,
    ) -> Reply<Enqueued> {
        let checked = (|| {
            check_id("channel", &entry.channel)?;
            check_id("organization_id", &entry.org)?;
            check_id("user_id", &entry.user_id)?;
            check_id("channel_org", &entry.channel_org)?;
            to_i64("message_id", entry.message_id)?;
            to_i64("published_at_ms", entry.published_at_ms)?;
            to_i64("parked_at_ms", entry.parked_at_ms)?;
            if let Some(w) = &webhook {
                check_webhook(w)?;
            }
            Ok((entry, webhook))
        })();
        self.submit_checked(checked, move |conn, (e, w)| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO parked (channel, message_id, organization_id, user_id,
                         channel_org, wedding_id, priority, msg_type, published_at_ms,
                         parked_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        e.channel,
                        e.message_id as i64,
                        e.org,
                        e.user_id,
                        e.channel_org,
                        e.wedding_id,
                        e.priority,
                        e.msg_type,
                        e.published_at_ms as i64,
                        e.parked_at_ms as i64
                    ])
                })
                .map_err(from_sqlite)?;
            if n == 0 {
                return Ok(Enqueued::Duplicate);
            }
            match w {
                Some(w) => insert_webhook(conn, &w, max_queued),
                None => Ok(Enqueued::Stored),
            }
        })
    }

    /// Stores a webhook (watchdog alerts and the like), unless the organization already
    /// has `max_queued` waiting.
    pub fn enqueue_webhook(&self, webhook: WebhookRow, max_queued: u64) -> Reply<Enqueued> {
        self.submit_checked(check_webhook(&webhook).map(|()| webhook), move |conn, w| {
            insert_webhook(conn, &w, max_queued)
        })
    }

    /// Up to `limit` live webhooks due at `now_ms`, oldest first.
    pub fn due_webhooks(&self, now_ms: u64, limit: u32) -> Reply<Loaded<PendingWebhook>> {
        let limit = limit.clamp(1, PARKED_QUERY_LIMIT_MAX);
        self.submit_checked(to_i64("now_ms", now_ms), move |conn, now| {
            let mut st = conn
                .prepare_cached(
                    "SELECT seq, id, organization_id, kind, body, created_at_ms, attempts,
                            failing_since_ms
                     FROM webhook_outbox WHERE dead = 0 AND next_at_ms <= ?1
                     ORDER BY next_at_ms, seq LIMIT ?2",
                )
                .map_err(from_sqlite)?;
            let mut rows = st.query(params![now, limit]).map_err(from_sqlite)?;
            let mut out = Loaded {
                rows: Vec::new(),
                warnings: Vec::new(),
            };
            while let Some(r) = rows.next().map_err(from_sqlite)? {
                let parsed = (|| -> rusqlite::Result<PendingWebhook> {
                    let since: Option<i64> = r.get(7)?;
                    Ok(PendingWebhook {
                        seq: r.get(0)?,
                        row: WebhookRow {
                            id: r.get(1)?,
                            org: r.get(2)?,
                            kind: r.get(3)?,
                            body: r.get(4)?,
                            created_at_ms: r.get::<_, i64>(5)?.max(0) as u64,
                        },
                        attempts: r.get::<_, i64>(6)?.clamp(0, u32::MAX as i64) as u32,
                        failing_since_ms: since.map(|v| v.max(0) as u64),
                    })
                })();
                match parsed {
                    Ok(p) => out.rows.push(p),
                    Err(e) => out.warnings.push(RowWarning {
                        table: "webhook_outbox",
                        key: format!("{:?}", r.get::<_, i64>(0).ok()),
                        problem: e.to_string(),
                    }),
                }
            }
            Ok(out)
        })
    }

    /// The receiver took it: the row goes.
    pub fn webhook_delivered(&self, seq: i64) -> Reply<()> {
        self.submit(move |conn| {
            conn.prepare_cached("DELETE FROM webhook_outbox WHERE seq = ?1")
                .and_then(|mut s| s.execute(params![seq]))
                .map_err(from_sqlite)?;
            Ok(())
        })
    }

    /// An attempt failed at `now_ms`: try again at `next_at_ms`, or give up (`dead`). The
    /// organization's other waiting rows are postponed to `next_at_ms` too (its receiver
    /// is failing: one attempt a backoff period, not one per row).
    pub fn webhook_failed(
        &self,
        seq: i64,
        now_ms: u64,
        next_at_ms: u64,
        error: String,
        dead: bool,
    ) -> Reply<()> {
        let checked =
            to_i64("now_ms", now_ms).and_then(|n| Ok((n, to_i64("next_at_ms", next_at_ms)?)));
        self.submit_checked(checked, move |conn, (now, next)| {
            conn.prepare_cached(
                "UPDATE webhook_outbox SET attempts = attempts + 1, next_at_ms = ?2,
                     failing_since_ms = COALESCE(failing_since_ms, ?3), last_error = ?4,
                     dead = ?5
                 WHERE seq = ?1",
            )
            .and_then(|mut s| s.execute(params![seq, next, now, error, i64::from(dead)]))
            .map_err(from_sqlite)?;
            conn.prepare_cached(
                "UPDATE webhook_outbox SET next_at_ms = MAX(next_at_ms, ?2)
                 WHERE dead = 0 AND organization_id =
                     (SELECT organization_id FROM webhook_outbox WHERE seq = ?1)",
            )
            .and_then(|mut s| s.execute(params![seq, next]))
            .map_err(from_sqlite)?;
            Ok(())
        })
    }

    /// Every organization with rows in the outbox (for health and metrics).
    pub fn outbox_state(&self) -> Reply<Vec<OutboxState>> {
        self.submit(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT organization_id, SUM(dead = 0), SUM(dead = 1),
                            MIN(CASE WHEN dead = 0 THEN failing_since_ms END)
                     FROM webhook_outbox GROUP BY organization_id ORDER BY organization_id",
                )
                .map_err(from_sqlite)?;
            let rows = st
                .query_map([], |r| {
                    let since: Option<i64> = r.get(3)?;
                    Ok(OutboxState {
                        org: r.get(0)?,
                        waiting: r.get::<_, i64>(1)?.max(0) as u64,
                        dead: r.get::<_, i64>(2)?.max(0) as u64,
                        failing_since_ms: since.map(|v| v.max(0) as u64),
                    })
                })
                .map_err(from_sqlite)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(from_sqlite)
        })
    }

    /// One organization's parked entries, newest first.
    pub fn query_parked(&self, q: ParkedQuery) -> Reply<Loaded<ParkedRecord>> {
        let checked = (|| {
            check_id("organization_id", &q.channel_org)?;
            if q.limit == 0 || q.limit > PARKED_QUERY_LIMIT_MAX {
                return Err(RegistryError::Invalid(format!(
                    "parked query limit must be 1 to {PARKED_QUERY_LIMIT_MAX} (got {})",
                    q.limit
                )));
            }
            if let Some(b) = q.before_ms {
                to_i64("before_ms", b)?;
            }
            Ok(q)
        })();
        self.submit_checked(checked, |conn, q| {
            let mut st = conn
                .prepare_cached(
                    "SELECT channel, message_id, organization_id, user_id, channel_org,
                            wedding_id, priority, msg_type, published_at_ms, parked_at_ms,
                            acked_at_ms
                     FROM parked
                     WHERE channel_org = ?1
                       AND (?2 IS NULL OR wedding_id = ?2)
                       AND (?3 IS NULL OR channel = ?3)
                       AND (?4 = 0 OR acked_at_ms IS NULL)
                       AND (?5 IS NULL OR parked_at_ms < ?5)
                     ORDER BY parked_at_ms DESC, channel, message_id, organization_id, user_id
                     LIMIT ?6",
                )
                .map_err(from_sqlite)?;
            let mut rows = st
                .query(params![
                    q.channel_org,
                    q.wedding_id,
                    q.channel,
                    i64::from(q.open_only),
                    q.before_ms.map(|b| b as i64),
                    q.limit
                ])
                .map_err(from_sqlite)?;
            let mut out = Loaded {
                rows: Vec::new(),
                warnings: Vec::new(),
            };
            while let Some(r) = rows.next().map_err(from_sqlite)? {
                match parked_from_row(r) {
                    Ok(p) => out.rows.push(p),
                    Err(problem) => out.warnings.push(RowWarning {
                        table: "parked",
                        key: format!("{:?}", r.get::<_, String>(0).ok()),
                        problem,
                    }),
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryConfig;
    use futures_lite::future::block_on;

    fn entry(user: &str, id: u64) -> ParkedRecord {
        ParkedRecord {
            channel: "wedding:w1:coord".into(),
            message_id: id,
            org: "org-1".into(),
            user_id: user.into(),
            channel_org: "org-1".into(),
            wedding_id: Some("w1".into()),
            priority: "critical".into(),
            msg_type: "alert".into(),
            published_at_ms: 10,
            parked_at_ms: 20,
            acked_at_ms: None,
        }
    }

    fn hook(id: &str) -> WebhookRow {
        WebhookRow {
            id: id.into(),
            org: "org-1".into(),
            kind: "message_parked".into(),
            body: "{}".into(),
            created_at_ms: 20,
        }
    }

    #[test]
    fn an_entry_is_parked_once_with_one_webhook_and_the_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(&dir.path().join("r.sqlite3"), RegistryConfig::default()).unwrap();
        assert_eq!(
            block_on(r.park(entry("u-1", 5), Some(hook("a")), 2)).unwrap(),
            Enqueued::Stored
        );
        assert_eq!(
            block_on(r.park(entry("u-1", 5), Some(hook("b")), 2)).unwrap(),
            Enqueued::Duplicate
        );
        assert_eq!(
            block_on(r.enqueue_webhook(hook("c"), 2)).unwrap(),
            Enqueued::Stored
        );
        assert_eq!(
            block_on(r.enqueue_webhook(hook("d"), 2)).unwrap(),
            Enqueued::Overflow
        );
        let due = block_on(r.due_webhooks(100, 10)).unwrap().rows;
        assert_eq!(
            due.iter().map(|p| p.row.id.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        block_on(r.webhook_failed(due[0].seq, 30, 1000, "refused".into(), false)).unwrap();
        // The organization's receiver is failing: its other row waits with it.
        assert!(block_on(r.due_webhooks(100, 10)).unwrap().rows.is_empty());
        assert_eq!(block_on(r.due_webhooks(1000, 10)).unwrap().rows.len(), 2);
        block_on(r.webhook_delivered(due[1].seq)).unwrap();
        let st = block_on(r.outbox_state()).unwrap();
        assert_eq!((st[0].waiting, st[0].failing_since_ms), (1, Some(30)));
        // An ack past the message resolves the entry.
        assert_eq!(
            block_on(r.resolve_parked("wedding:w1:coord", "org-2", "u-1", 5, 40)).unwrap(),
            0
        );
        assert_eq!(
            block_on(r.resolve_parked("wedding:w1:coord", "org-1", "u-1", 5, 40)).unwrap(),
            1
        );
        let q = ParkedQuery {
            channel_org: "org-1".into(),
            limit: 10,
            ..ParkedQuery::default()
        };
        let rows = block_on(r.query_parked(q.clone())).unwrap().rows;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].acked_at_ms, Some(40));
        // The ack path: cursor and resolution in one job (no subscription row here).
        block_on(r.park(entry("u-3", 7), None, 2)).unwrap();
        let ack = |cursor| CursorAck {
            channel: "wedding:w1:coord".into(),
            org: "org-1".into(),
            user_id: "u-3".into(),
            cursor,
        };
        block_on(r.ack_resolving(ack(6), 50)).unwrap();
        let open = ParkedQuery {
            open_only: true,
            ..q.clone()
        };
        assert_eq!(
            block_on(r.query_parked(open.clone())).unwrap().rows.len(),
            1
        );
        block_on(r.ack_resolving(ack(7), 50)).unwrap();
        assert!(block_on(r.query_parked(open)).unwrap().rows.is_empty());
        let other = ParkedQuery {
            channel_org: "org-2".into(),
            ..q
        };
        assert!(block_on(r.query_parked(other)).unwrap().rows.is_empty());
        r.close().unwrap();
    }
}
