//! The SQL of every registry call, run on the registry thread against its connection, and the
//! conversion of rows back into records. It does not queue, wait or open files (`mod.rs`,
//! `worker.rs`).
//!
//! Reading never panics on a bad row: `load_*` skip it and report a [`RowWarning`]; calls
//! that return one row return [`RegistryError::Corrupt`] naming it. Statements are cached
//! per connection (`prepare_cached`).

use super::error::{from_sqlite, is_foreign_key, RegistryError};
use super::records::{
    AuditAction, AuditEntry, AuditQuery, AuditRecord, CursorAck, EventDate, IdempotencyRecord,
    Loaded, RowWarning, SubscriptionRecord, WeddingRecord,
};
use ringbearer_core::access::ChannelAccess;
use ringbearer_core::channel_state::ChannelMeta;
use ringbearer_core::{ChannelName, ChannelType, Permissions};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

type Result<T> = std::result::Result<T, RegistryError>;

/// Reads `sql`'s rows with `parse`; a row `parse` refuses is skipped and reported under
/// `key` (its first `key_columns` columns, as text).
fn load<T>(
    conn: &Connection,
    table: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
    key_columns: usize,
    parse: impl Fn(&Row<'_>) -> std::result::Result<T, String>,
) -> Result<Loaded<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(from_sqlite)?;
    let mut rows = stmt.query(params).map_err(from_sqlite)?;
    let mut out = Loaded {
        rows: Vec::new(),
        warnings: Vec::new(),
    };
    while let Some(row) = rows.next().map_err(from_sqlite)? {
        match parse(row) {
            Ok(v) => out.rows.push(v),
            Err(problem) => out.warnings.push(RowWarning {
                table,
                key: row_key(row, key_columns),
                problem,
            }),
        }
    }
    Ok(out)
}

fn row_key(row: &Row<'_>, columns: usize) -> String {
    (0..columns)
        .map(|i| match row.get_ref(i) {
            Ok(ValueRef::Text(t)) => format!("{:?}", String::from_utf8_lossy(t)),
            Ok(ValueRef::Integer(n)) => n.to_string(),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("<{e}>"),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn col<T: rusqlite::types::FromSql>(
    row: &Row<'_>,
    i: usize,
    name: &str,
) -> std::result::Result<T, String> {
    row.get(i).map_err(|e| format!("column {name}: {e}"))
}

fn col_u64(row: &Row<'_>, i: usize, name: &str) -> std::result::Result<u64, String> {
    let v: i64 = col(row, i, name)?;
    u64::try_from(v).map_err(|_| format!("column {name}: negative value {v}"))
}

/// Parses a JSON text column into `$t`.
macro_rules! col_json {
    ($row:expr, $i:expr, $name:expr, $t:ty) => {{
        let text: String = col($row, $i, $name)?;
        serde_json::from_str::<$t>(&text).map_err(|e| format!("column {}: {e}", $name))
    }};
}

/// A referencing row named a channel the registry does not hold.
fn no_channel(what: &str, channel: &str) -> impl FnOnce(rusqlite::Error) -> RegistryError {
    let msg = format!("{what}: channel {channel:?} is not in the registry");
    move |e| {
        if is_foreign_key(&e) {
            RegistryError::Invalid(msg)
        } else {
            from_sqlite(e)
        }
    }
}

// ---- channels ----

/// A channel as stored: the caller's `ChannelMeta` checked and serialized before queueing.
pub(crate) struct ChannelRow {
    pub name: String,
    pub channel_id: String,
    pub organization_id: String,
    pub wedding_id: Option<String>,
    pub kind: &'static str,
    pub permissions: String,
    pub creator: String,
    pub members: String,
    pub max_subscribers: i64,
    pub retention_ms: i64,
    pub created_at_ms: i64,
    pub epoch: String,
}

pub(crate) fn upsert_channel(conn: &Connection, c: &ChannelRow) -> Result<()> {
    // Another channel of this name (another `channel_id`: one whose creation never reached
    // the log, say) goes first, with its subscriptions and keys: a new channel never
    // inherits them.
    conn.prepare_cached("DELETE FROM channels WHERE name = ?1 AND channel_id <> ?2")
        .and_then(|mut s| s.execute(params![c.name, c.channel_id]))
        .map_err(from_sqlite)?;
    conn.prepare_cached(
        "INSERT INTO channels (name, channel_id, organization_id, wedding_id, type, permissions,
                               creator, members, max_subscribers, retention_ms, created_at_ms, epoch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (name) DO UPDATE SET
             channel_id = excluded.channel_id, organization_id = excluded.organization_id,
             wedding_id = excluded.wedding_id, type = excluded.type,
             permissions = excluded.permissions, creator = excluded.creator,
             members = excluded.members, max_subscribers = excluded.max_subscribers,
             retention_ms = excluded.retention_ms, created_at_ms = excluded.created_at_ms,
             epoch = excluded.epoch",
    )
    .and_then(|mut s| {
        s.execute(params![
            c.name,
            c.channel_id,
            c.organization_id,
            c.wedding_id,
            c.kind,
            c.permissions,
            c.creator,
            c.members,
            c.max_subscribers,
            c.retention_ms,
            c.created_at_ms,
            c.epoch
        ])
    })
    .map_err(from_sqlite)?;
    Ok(())
}

fn channel_from_row(row: &Row<'_>) -> std::result::Result<ChannelMeta, String> {
    let name: String = col(row, 0, "name")?;
    let name = ChannelName::parse(&name).map_err(|r| format!("column name: {}", r.message))?;
    let kind: String = col(row, 4, "type")?;
    let kind = ChannelType::parse(&kind).ok_or(format!("column type: unknown type {kind:?}"))?;
    let permissions = col_json!(row, 5, "permissions", Permissions)?;
    let members = col_json!(row, 7, "members", Vec<ringbearer_core::access::MemberRef>)?;
    let max_subscribers = col_u64(row, 8, "max_subscribers")?;
    let max_subscribers = usize::try_from(max_subscribers)
        .map_err(|_| format!("column max_subscribers: {max_subscribers} too large"))?;
    Ok(ChannelMeta {
        id: col(row, 1, "channel_id")?,
        name,
        access: ChannelAccess {
            org: col(row, 2, "organization_id")?,
            wedding_id: col(row, 3, "wedding_id")?,
            kind,
            permissions,
            creator: col(row, 6, "creator")?,
            members,
        },
        max_subscribers,
        retention_ms: col_u64(row, 9, "retention_ms")?,
        created_at_ms: col_u64(row, 10, "created_at_ms")?,
        epoch: col(row, 11, "epoch")?,
    })
}

pub(crate) fn load_channels(conn: &Connection) -> Result<Loaded<ChannelMeta>> {
    load(
        conn,
        "channels",
        "SELECT name, channel_id, organization_id, wedding_id, type, permissions, creator,
                members, max_subscribers, retention_ms, created_at_ms, epoch
         FROM channels ORDER BY name",
        [],
        1,
        channel_from_row,
    )
}

pub(crate) fn delete_channel(conn: &Connection, name: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM channels WHERE name = ?1")
        .and_then(|mut s| s.execute([name]))
        .map_err(from_sqlite)?;
    Ok(n > 0)
}

// ---- weddings ----

pub(crate) fn upsert_wedding(conn: &Connection, w: &WeddingRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO weddings (wedding_id, organization_id, event_date, time_zone, updated_at_ms,
             ceremony_time, key_roles, coordination_channel)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (wedding_id) DO UPDATE SET
             organization_id = excluded.organization_id, event_date = excluded.event_date,
             time_zone = excluded.time_zone, updated_at_ms = excluded.updated_at_ms,
             ceremony_time = excluded.ceremony_time, key_roles = excluded.key_roles,
             coordination_channel = excluded.coordination_channel",
    )
    .and_then(|mut s| {
        let roles = serde_json::to_string(&w.key_roles).expect("strings serialize");
        s.execute(params![
            w.wedding_id,
            w.organization_id,
            w.event_date.to_string(),
            w.time_zone,
            w.updated_at_ms as i64,
            w.ceremony_time,
            roles,
            w.coordination_channel
        ])
    })
    .map_err(from_sqlite)?;
    Ok(())
}

const WEDDING_COLUMNS: &str = "SELECT wedding_id, organization_id, event_date, time_zone, \
     updated_at_ms, ceremony_time, key_roles, coordination_channel FROM weddings";

fn wedding_from_row(row: &Row<'_>) -> std::result::Result<WeddingRecord, String> {
    let date: String = col(row, 2, "event_date")?;
    Ok(WeddingRecord {
        wedding_id: col(row, 0, "wedding_id")?,
        organization_id: col(row, 1, "organization_id")?,
        event_date: EventDate::parse(&date)
            .ok_or(format!("column event_date: {date:?} is not YYYY-MM-DD"))?,
        time_zone: col(row, 3, "time_zone")?,
        updated_at_ms: col_u64(row, 4, "updated_at_ms")?,
        ceremony_time: col(row, 5, "ceremony_time")?,
        key_roles: {
            let roles: String = col(row, 6, "key_roles")?;
            serde_json::from_str(&roles)
                .map_err(|e| format!("column key_roles: {roles:?} is not a list of names: {e}"))?
        },
        coordination_channel: col(row, 7, "coordination_channel")?,
    })
}

pub(crate) fn get_wedding(conn: &Connection, wedding_id: &str) -> Result<Option<WeddingRecord>> {
    let sql = format!("{WEDDING_COLUMNS} WHERE wedding_id = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
    let row = stmt
        .query_row([wedding_id], |row| Ok(wedding_from_row(row)))
        .optional()
        .map_err(from_sqlite)?;
    match row {
        None => Ok(None),
        Some(Ok(w)) => Ok(Some(w)),
        Some(Err(problem)) => Err(RegistryError::Corrupt(format!(
            "registry table weddings row {wedding_id:?}: {problem}"
        ))),
    }
}

pub(crate) fn list_weddings(
    conn: &Connection,
    organization_id: Option<&str>,
) -> Result<Loaded<WeddingRecord>> {
    match organization_id {
        Some(org) => load(
            conn,
            "weddings",
            &format!(
                "{WEDDING_COLUMNS} WHERE organization_id = ?1 ORDER BY event_date, wedding_id"
            ),
            [org],
            1,
            wedding_from_row,
        ),
        None => load(
            conn,
            "weddings",
            &format!("{WEDDING_COLUMNS} ORDER BY organization_id, event_date, wedding_id"),
            [],
            1,
            wedding_from_row,
        ),
    }
}

pub(crate) fn delete_wedding(conn: &Connection, wedding_id: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM weddings WHERE wedding_id = ?1")
        .and_then(|mut s| s.execute([wedding_id]))
        .map_err(from_sqlite)?;
    Ok(n > 0)
}

// ---- subscriptions ----

/// Creates the subscription, or on an existing one keeps its `subscribed_at_ms` and moves
/// its cursor forward only.
pub(crate) fn upsert_subscription(conn: &Connection, s: &SubscriptionRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO subscriptions (channel, organization_id, user_id, cursor, subscribed_at_ms, role)
         VALUES (?1, ?5, ?2, ?3, ?4, ?6)
         ON CONFLICT (channel, organization_id, user_id)
         DO UPDATE SET cursor = MAX(cursor, excluded.cursor),
                       role = COALESCE(excluded.role, role)",
    )
    .and_then(|mut st| {
        st.execute(params![
            s.channel,
            s.user_id,
            s.cursor as i64,
            s.subscribed_at_ms as i64,
            s.org,
            s.role
        ])
    })
    .map_err(no_channel("subscription", &s.channel))?;
    Ok(())
}

pub(crate) fn delete_subscription(
    conn: &Connection,
    channel: &str,
    org: &str,
    user_id: &str,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "DELETE FROM subscriptions WHERE channel = ?1 AND organization_id = ?2 AND user_id = ?3",
        )
        .and_then(|mut s| s.execute([channel, org, user_id]))
        .map_err(from_sqlite)?;
    Ok(n > 0)
}

fn subscription_from_row(row: &Row<'_>) -> std::result::Result<SubscriptionRecord, String> {
    Ok(SubscriptionRecord {
        channel: col(row, 0, "channel")?,
        user_id: col(row, 1, "user_id")?,
        cursor: col_u64(row, 2, "cursor")?,
        subscribed_at_ms: col_u64(row, 3, "subscribed_at_ms")?,
        org: col(row, 4, "organization_id")?,
        role: col(row, 5, "role")?,
    })
}

pub(crate) fn load_subscriptions(
    conn: &Connection,
    channel: Option<&str>,
) -> Result<Loaded<SubscriptionRecord>> {
    const COLUMNS: &str =
        "SELECT channel, user_id, cursor, subscribed_at_ms, organization_id, role FROM subscriptions";
    match channel {
        Some(c) => load(
            conn,
            "subscriptions",
            &format!("{COLUMNS} WHERE channel = ?1 ORDER BY organization_id, user_id"),
            [c],
            2,
            subscription_from_row,
        ),
        None => load(
            conn,
            "subscriptions",
            &format!("{COLUMNS} ORDER BY channel, organization_id, user_id"),
            [],
            2,
            subscription_from_row,
        ),
    }
}

/// Moves each named cursor forward (never back); acks for subscriptions that are gone are
/// skipped. Runs inside the caller's transaction (one savepoint: all or nothing). Returns
/// how many subscriptions it matched.
pub(crate) fn advance_cursors(conn: &Connection, batch: &[CursorAck]) -> Result<usize> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE subscriptions SET cursor = MAX(cursor, ?3)
             WHERE channel = ?1 AND user_id = ?2 AND organization_id = ?4",
        )
        .map_err(from_sqlite)?;
    let mut matched = 0;
    for a in batch {
        matched += stmt
            .execute(params![a.channel, a.user_id, a.cursor as i64, a.org])
            .map_err(from_sqlite)?;
    }
    Ok(matched)
}

// ---- idempotency keys ----

pub(crate) fn put_idempotency(conn: &Connection, r: &IdempotencyRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (channel, key, message_id, created_at_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (channel, key) DO UPDATE SET
             message_id = excluded.message_id, created_at_ms = excluded.created_at_ms",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.channel,
            r.key,
            r.message_id as i64,
            r.created_at_ms as i64
        ])
    })
    .map_err(no_channel("idempotency key", &r.channel))?;
    Ok(())
}

pub(crate) fn load_idempotency(
    conn: &Connection,
    since_ms: i64,
) -> Result<Loaded<IdempotencyRecord>> {
    load(
        conn,
        "idempotency_keys",
        "SELECT channel, key, message_id, created_at_ms FROM idempotency_keys
         WHERE created_at_ms >= ?1 ORDER BY channel, created_at_ms, key",
        [since_ms],
        2,
        |row| {
            Ok(IdempotencyRecord {
                channel: col(row, 0, "channel")?,
                key: col(row, 1, "key")?,
                message_id: col_u64(row, 2, "message_id")?,
                created_at_ms: col_u64(row, 3, "created_at_ms")?,
            })
        },
    )
}

pub(crate) fn expire_idempotency(conn: &Connection, before_ms: i64) -> Result<u64> {
    let n = conn
        .prepare_cached("DELETE FROM idempotency_keys WHERE created_at_ms < ?1")
        .and_then(|mut s| s.execute([before_ms]))
        .map_err(from_sqlite)?;
    Ok(n as u64)
}

// ---- audit log ----

/// An audit entry checked and serialized before queueing.
pub(crate) struct AuditRow {
    pub at_ms: i64,
    pub actor_user_id: String,
    pub actor_org: String,
    pub action: &'static str,
    pub channel: Option<String>,
    pub channel_org: Option<String>,
    pub detail: String,
}

pub(crate) fn audit(conn: &Connection, rows: &[AuditRow]) -> Result<i64> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO audit_log (at_ms, actor_user_id, actor_org, action, channel, detail,
                                    channel_org)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(from_sqlite)?;
    for r in rows {
        stmt.execute(params![
            r.at_ms,
            r.actor_user_id,
            r.actor_org,
            r.action,
            r.channel,
            r.detail,
            r.channel_org
        ])
        .map_err(from_sqlite)?;
    }
    Ok(conn.last_insert_rowid())
}

/// The SQL and parameters of `q`. Only the filters given appear in the `WHERE`, so SQLite
/// can use `audit_log_by_channel` / `audit_log_by_actor` / `audit_log_by_time` (an
/// `(?1 IS NULL OR …)` form would defeat them).
pub(crate) fn audit_query_sql(q: &AuditQuery) -> (String, Vec<Value>) {
    let mut sql = String::from(
        "SELECT id, at_ms, actor_user_id, actor_org, action, channel, detail, channel_org
         FROM audit_log",
    );
    let mut args: Vec<Value> = Vec::new();
    let mut clauses: Vec<String> = Vec::new();
    if let Some(o) = &q.org {
        // Visibility first (SPEC §1: the tenant boundary), so `limit` counts visible rows.
        args.push(Value::Text(o.clone()));
        clauses.push("(actor_org = ?1 OR channel_org = ?1)".to_owned());
    }
    let mut arg = |clause: &str, v: Value, args: &mut Vec<Value>| {
        args.push(v);
        clauses.push(format!("{clause} ?{}", args.len()));
    };
    if let Some(c) = &q.channel {
        arg("channel =", Value::Text(c.clone()), &mut args);
    }
    if let Some(u) = &q.actor_user_id {
        arg("actor_user_id =", Value::Text(u.clone()), &mut args);
    }
    if let Some(t) = q.from_ms {
        arg("at_ms >=", Value::Integer(t as i64), &mut args);
    }
    if let Some(t) = q.to_ms {
        arg("at_ms <", Value::Integer(t as i64), &mut args);
    }
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    args.push(Value::Integer(i64::from(q.limit)));
    sql.push_str(&format!(
        " ORDER BY at_ms DESC, id DESC LIMIT ?{}",
        args.len()
    ));
    (sql, args)
}

fn audit_from_row(row: &Row<'_>) -> std::result::Result<AuditRecord, String> {
    let action: String = col(row, 4, "action")?;
    Ok(AuditRecord {
        id: col(row, 0, "id")?,
        entry: AuditEntry {
            at_ms: col_u64(row, 1, "at_ms")?,
            actor_user_id: col(row, 2, "actor_user_id")?,
            actor_org: col(row, 3, "actor_org")?,
            action: AuditAction::parse(&action)
                .ok_or(format!("column action: unknown action {action:?}"))?,
            channel: col(row, 5, "channel")?,
            channel_org: col(row, 7, "channel_org")?,
            detail: col_json!(row, 6, "detail", serde_json::Value)?,
        },
    })
}

pub(crate) fn query_audit(conn: &Connection, q: &AuditQuery) -> Result<Loaded<AuditRecord>> {
    let (sql, args) = audit_query_sql(q);
    load(
        conn,
        "audit_log",
        &sql,
        params_from_iter(args),
        1,
        audit_from_row,
    )
}

pub(crate) fn expire_audit(conn: &Connection, before_ms: i64) -> Result<u64> {
    let n = conn
        .prepare_cached("DELETE FROM audit_log WHERE at_ms < ?1")
        .and_then(|mut s| s.execute([before_ms]))
        .map_err(from_sqlite)?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::schema::migrate;

    fn plan(conn: &Connection, q: &AuditQuery) -> String {
        let (sql, args) = audit_query_sql(q);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn audit_queries_use_their_indexes_and_need_no_sort() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let by_channel = AuditQuery {
            channel: Some("wedding:main:w-1".into()),
            from_ms: Some(10),
            to_ms: Some(20),
            ..AuditQuery::default()
        };
        let p = plan(&conn, &by_channel);
        assert!(p.contains("audit_log_by_channel"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "{p}");
        let by_user = AuditQuery {
            actor_user_id: Some("u1".into()),
            ..AuditQuery::default()
        };
        let p = plan(&conn, &by_user);
        assert!(p.contains("audit_log_by_actor"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "{p}");
        let by_time = AuditQuery {
            from_ms: Some(5),
            ..AuditQuery::default()
        };
        let p = plan(&conn, &by_time);
        assert!(p.contains("audit_log_by_time"), "{p}");
    }
}
