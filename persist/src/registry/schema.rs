//! The registry's schema as an ordered list of migrations, and the code that brings a
//! database file up to date. It does not open files or set connection pragmas (`mod.rs`
//! does).
//!
//! The schema version is SQLite's `PRAGMA user_version` (a field of the file header, written
//! in the same transaction as the migration's tables). `PRAGMA application_id` marks the file
//! as a Ringbearer registry so a wrong path is refused instead of written into.
//!
//! Rules for adding a migration:
//! - append it with the next version; never edit or reorder a released one;
//! - each runs in its own transaction, with the version bump, so a crash leaves the file at
//!   the old version or the new, never between;
//! - IMPORTANT: SQLite's `ALTER TABLE` is limited; to change a column, create a new table,
//!   copy, drop, rename — inside the migration (<https://sqlite.org/lang_altertable.html>, §7).

use super::error::{from_sqlite, RegistryError};
use rusqlite::{Connection, TransactionBehavior};

/// `PRAGMA application_id` of a registry: "RBRG" in ASCII.
pub const APPLICATION_ID: i32 = 0x5242_5247;

/// One step of the schema.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order; `version` strictly increases (numbers are reserved per change).
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "channels, weddings, subscriptions, idempotency keys, audit log",
        sql: V1,
    },
    Migration {
        version: 2,
        name: "a user is (organization, user id); audit records name the channel's organization",
        sql: V2,
    },
    Migration {
        version: 3,
        name: "a subscription records the role its user last subscribed with",
        sql: V3,
    },
    Migration {
        version: 4,
        name: "parked wedding-day messages and the webhook outbox",
        sql: V4,
    },
    Migration {
        version: 5,
        name: "a wedding's watchdog plan: ceremony time, key roles, coordination channel",
        sql: V5,
    },
];

/// The schema version this binary writes and reads: the last migration's.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// STRICT tables: SQLite enforces the declared column types, so a row holds what the
/// binary wrote or the write fails. Text keys are WITHOUT ROWID (the key is the b-tree).
///
/// IMPORTANT: rows referencing `channels` cascade on delete; write channels with
/// `INSERT … ON CONFLICT DO UPDATE`, never `INSERT OR REPLACE`, which deletes the old row
/// first and so would silently drop the channel's subscriptions and idempotency keys.
const V1: &str = "
CREATE TABLE channels (
    name            TEXT    NOT NULL PRIMARY KEY,
    channel_id      TEXT    NOT NULL,
    organization_id TEXT    NOT NULL,
    wedding_id      TEXT,
    type            TEXT    NOT NULL,
    permissions     TEXT    NOT NULL CHECK (json_valid(permissions)),
    creator         TEXT    NOT NULL,
    members         TEXT    NOT NULL CHECK (json_valid(members)),
    max_subscribers INTEGER NOT NULL CHECK (max_subscribers >= 0),
    retention_ms    INTEGER NOT NULL CHECK (retention_ms >= 0),
    created_at_ms   INTEGER NOT NULL CHECK (created_at_ms >= 0),
    epoch           TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE weddings (
    wedding_id      TEXT    NOT NULL PRIMARY KEY,
    organization_id TEXT    NOT NULL,
    event_date      TEXT    NOT NULL,
    time_zone       TEXT    NOT NULL,
    updated_at_ms   INTEGER NOT NULL CHECK (updated_at_ms >= 0)
) STRICT, WITHOUT ROWID;
CREATE INDEX weddings_by_organization ON weddings (organization_id, event_date);

CREATE TABLE subscriptions (
    channel          TEXT    NOT NULL REFERENCES channels (name) ON DELETE CASCADE,
    user_id          TEXT    NOT NULL,
    cursor           INTEGER NOT NULL CHECK (cursor >= 0),
    subscribed_at_ms INTEGER NOT NULL CHECK (subscribed_at_ms >= 0),
    PRIMARY KEY (channel, user_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    channel       TEXT    NOT NULL REFERENCES channels (name) ON DELETE CASCADE,
    key           TEXT    NOT NULL,
    message_id    INTEGER NOT NULL CHECK (message_id >= 0),
    created_at_ms INTEGER NOT NULL CHECK (created_at_ms >= 0),
    PRIMARY KEY (channel, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_at_ms);

CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms         INTEGER NOT NULL CHECK (at_ms >= 0),
    actor_user_id TEXT    NOT NULL,
    actor_org     TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    channel       TEXT,
    detail        TEXT    NOT NULL CHECK (json_valid(detail))
) STRICT;
CREATE INDEX audit_log_by_channel ON audit_log (channel, at_ms);
CREATE INDEX audit_log_by_actor ON audit_log (actor_user_id, at_ms);
CREATE INDEX audit_log_by_time ON audit_log (at_ms);
";

/// SPEC §1 identity: subscriptions are keyed by (channel, organization, user); rows of
/// version 1 (keyed by user id alone) belong to the channel's organization, the only
/// reading they had that kept tenants apart. Audit records gain `channel_org` (who owns the
/// channel the record is about), filled for old rows from the channels table.
const V2: &str = "
CREATE TABLE subscriptions_v2 (
    channel          TEXT    NOT NULL REFERENCES channels (name) ON DELETE CASCADE,
    organization_id  TEXT    NOT NULL,
    user_id          TEXT    NOT NULL,
    cursor           INTEGER NOT NULL CHECK (cursor >= 0),
    subscribed_at_ms INTEGER NOT NULL CHECK (subscribed_at_ms >= 0),
    PRIMARY KEY (channel, organization_id, user_id)
) STRICT, WITHOUT ROWID;
INSERT INTO subscriptions_v2 (channel, organization_id, user_id, cursor, subscribed_at_ms)
    SELECT s.channel, c.organization_id, s.user_id, s.cursor, s.subscribed_at_ms
    FROM subscriptions s JOIN channels c ON c.name = s.channel;
DROP TABLE subscriptions;
ALTER TABLE subscriptions_v2 RENAME TO subscriptions;

ALTER TABLE audit_log ADD COLUMN channel_org TEXT;
UPDATE audit_log SET channel_org =
    (SELECT organization_id FROM channels WHERE channels.name = audit_log.channel)
    WHERE channel IS NOT NULL;
CREATE INDEX audit_log_by_actor_org ON audit_log (actor_org, at_ms);
CREATE INDEX audit_log_by_channel_org ON audit_log (channel_org, at_ms);
";

/// SPEC §2 `target_roles`: a subscription remembers the role its user's last connection
/// held, so a restarted server counts role-targeted messages for offline members. Rows
/// from before have none (NULL) until their user subscribes again.
const V3: &str = "
ALTER TABLE subscriptions ADD COLUMN role TEXT;
";

/// Issue 16 item 5 (docs/decisions.md §32). `parked`: one dead-letter entry per (channel,
/// message, member) — a wedding-day `critical`/`emergency` message that member had not
/// acknowledged in time — written once (the primary key), resolved (`acked_at_ms`) when
/// the member's cursor later passes it. `webhook_outbox`: every webhook, stored before it is
/// sent; a delivered row is deleted, a row past its max age is kept as `dead`.
const V4: &str = "
CREATE TABLE parked (
    channel         TEXT    NOT NULL,
    message_id      INTEGER NOT NULL CHECK (message_id >= 1),
    organization_id TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    channel_org     TEXT    NOT NULL,
    wedding_id      TEXT,
    priority        TEXT    NOT NULL,
    msg_type        TEXT    NOT NULL,
    published_at_ms INTEGER NOT NULL CHECK (published_at_ms >= 0),
    parked_at_ms    INTEGER NOT NULL CHECK (parked_at_ms >= 0),
    acked_at_ms     INTEGER CHECK (acked_at_ms >= 0),
    PRIMARY KEY (channel, organization_id, user_id, message_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX parked_by_org ON parked (channel_org, parked_at_ms);

CREATE TABLE webhook_outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    organization_id TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    body            TEXT    NOT NULL CHECK (json_valid(body)),
    created_at_ms   INTEGER NOT NULL CHECK (created_at_ms >= 0),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_at_ms      INTEGER NOT NULL CHECK (next_at_ms >= 0),
    failing_since_ms INTEGER CHECK (failing_since_ms >= 0),
    last_error      TEXT,
    dead            INTEGER NOT NULL DEFAULT 0 CHECK (dead IN (0, 1))
) STRICT;
CREATE INDEX webhook_outbox_due ON webhook_outbox (dead, next_at_ms);
CREATE INDEX webhook_outbox_by_org ON webhook_outbox (organization_id, dead);
";

/// The presence watchdog (docs/decisions.md §30): a wedding's ceremony time (`HH:MM`,
/// local to its `time_zone`), its key roles (a JSON list of role names) and its
/// coordination channel when one was named. Old rows get no ceremony and no roles.
const V5: &str = "
ALTER TABLE weddings ADD COLUMN ceremony_time TEXT;
ALTER TABLE weddings ADD COLUMN key_roles TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(key_roles));
ALTER TABLE weddings ADD COLUMN coordination_channel TEXT;
";

fn header(conn: &Connection) -> Result<(i32, i64), RegistryError> {
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(from_sqlite)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(from_sqlite)?;
    Ok((app, version))
}

/// Brings the database up to [`SCHEMA_VERSION`]; returns the version it found. Refuses a
/// newer schema ([`RegistryError::TooNew`]) and a file that is some other application's
/// database ([`RegistryError::Invalid`]) without changing either.
pub(crate) fn migrate(conn: &mut Connection) -> Result<i64, RegistryError> {
    let (app, found) = header(conn)?;
    if app != 0 && app != APPLICATION_ID {
        return Err(RegistryError::Invalid(format!(
            "the file is not a Ringbearer registry (application_id {app:#x})"
        )));
    }
    if found > SCHEMA_VERSION {
        return Err(RegistryError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(from_sqlite)?;
        if objects > 0 {
            return Err(RegistryError::Invalid(format!(
                "the file is an SQLite database with {objects} objects but no registry \
                 schema version: not a Ringbearer registry"
            )));
        }
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(from_sqlite)?;
        // Another process may have migrated between our read and our write lock.
        let (_, now) = header(&tx)?;
        if now >= m.version {
            continue;
        }
        tx.execute_batch(m.sql).map_err(|e| {
            let e = from_sqlite(e);
            RegistryError::Storage(format!("migration {} ({}) failed: {e}", m.version, m.name))
        })?;
        tx.pragma_update(None, "user_version", m.version)
            .map_err(from_sqlite)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(from_sqlite)?;
        tx.commit().map_err(from_sqlite)?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_from_one() {
        // Contiguous from 1: a database at version N runs every migration above N, so a
        // gap merged later would be skipped by databases already past it.
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut c).unwrap(), 0);
        assert_eq!(migrate(&mut c).unwrap(), SCHEMA_VERSION);
        assert_eq!(header(&c).unwrap(), (APPLICATION_ID, SCHEMA_VERSION));
    }
}
