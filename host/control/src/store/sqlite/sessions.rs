//! Web console sessions' rows (`migrations/0015_console_sessions.sql`).

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, db_err};
use crate::Result;
use crate::audit::{self, NewEntry};
use crate::store::{ConsoleSession, SESSIONS_PER_TOKEN};

pub(super) fn open(store: &SqliteStore, s: &ConsoleSession, entry: NewEntry<'_>) -> Result<()> {
    store.transaction("console session", |tx| {
        tx.execute(
            "DELETE FROM console_sessions WHERE expires <= ?1",
            [s.created],
        )
        .map_err(db_err("deleting ended sessions"))?;
        tx.execute(
            "DELETE FROM console_sessions WHERE token_id = ?1 AND id_sha256 NOT IN \
             (SELECT id_sha256 FROM console_sessions WHERE token_id = ?1 ORDER BY created DESC LIMIT ?2)",
            params![s.token_id, SESSIONS_PER_TOKEN - 1],
        )
        .map_err(db_err("ending a token's oldest sessions"))?;
        tx.execute(
            "INSERT INTO console_sessions (id_sha256, token_id, csrf, created, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.id_sha256, s.token_id, s.csrf, s.created, s.expires],
        )
        .map_err(db_err("opening a session"))?;
        audit::append(tx, entry)?;
        Ok(())
    })
}

pub(super) fn get(conn: &Connection, id_sha256: &str) -> Result<Option<ConsoleSession>> {
    conn.prepare_cached(
        "SELECT id_sha256, token_id, csrf, created, expires FROM console_sessions WHERE id_sha256 = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([id_sha256], |r| {
            Ok(ConsoleSession {
                id_sha256: r.get(0)?,
                token_id: r.get(1)?,
                csrf: r.get(2)?,
                created: r.get(3)?,
                expires: r.get(4)?,
            })
        })
        .optional()
    })
    .map_err(db_err("reading a session"))
}

pub(super) fn close(
    store: &SqliteStore,
    id_sha256: &str,
    entry: Option<NewEntry<'_>>,
) -> Result<()> {
    store.transaction("console session", |tx| {
        tx.execute(
            "DELETE FROM console_sessions WHERE id_sha256 = ?1",
            [id_sha256],
        )
        .map_err(db_err("closing a session"))?;
        if let Some(entry) = entry {
            audit::append(tx, entry)?;
        }
        Ok(())
    })
}

pub(super) fn close_token(store: &SqliteStore, token_id: &str) -> Result<()> {
    store.transaction("console session", |tx| {
        tx.execute(
            "DELETE FROM console_sessions WHERE token_id = ?1",
            [token_id],
        )
        .map_err(db_err("closing a token's sessions"))?;
        Ok(())
    })
}
