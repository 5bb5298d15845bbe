//! API tokens' rows: the id, role, scope and the sha256 of the secret.

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, db_err};
use crate::audit::{self, NewEntry};
use crate::store::{Role, Token, now};
use crate::{Error, Result};

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Token> {
    let role: String = r.get(2)?;
    Ok(Token {
        id: r.get(0)?,
        name: r.get(1)?,
        // An unknown role reads as the least privileged one.
        role: role.parse().unwrap_or(Role::Auditor),
        scope: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

pub(super) fn create(
    store: &SqliteStore,
    token: &Token,
    secret_sha256: &str,
    actor: &str,
) -> Result<()> {
    store.transaction("token", |tx| {
        tx.execute(
            "INSERT INTO tokens (id, name, secret_sha256, role, scope, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![token.id, token.name, secret_sha256, token.role.as_str(), token.scope, token.created_at],
        )
        .map_err(db_err("creating a token"))?;
        audit::append(
            tx,
            NewEntry {
                actor,
                action: "token-created",
                subject: &format!("token/{}", token.id),
                digest: None,
                detail: serde_json::json!({"name": token.name, "role": token.role, "scope": token.scope}),
            },
        )?;
        Ok(())
    })
}

pub(super) fn list(conn: &Connection) -> Result<Vec<Token>> {
    let mut stmt = conn
        .prepare(
            "SELECT id, name, role, scope, created_at, revoked_at FROM tokens ORDER BY created_at",
        )
        .map_err(db_err("listing tokens"))?;
    let rows = stmt
        .query_map([], from_row)
        .map_err(db_err("listing tokens"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("listing tokens"))
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<(Token, String)>> {
    conn.prepare_cached(
        "SELECT id, name, role, scope, created_at, revoked_at, secret_sha256 FROM tokens WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([id], |r| Ok((from_row(r)?, r.get(6)?)))
            .optional()
    })
    .map_err(db_err("checking a token"))
}

pub(super) fn revoke(store: &SqliteStore, id: &str, actor: &str) -> Result<()> {
    store.transaction("token", |tx| {
        let n = tx
            .execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now()],
            )
            .map_err(db_err("revoking a token"))?;
        if n == 0 {
            return Err(Error::NotFound(format!("no active token with id {id}")));
        }
        audit::append(
            tx,
            NewEntry {
                actor,
                action: "token-revoked",
                subject: &format!("token/{id}"),
                digest: None,
                detail: serde_json::json!({}),
            },
        )?;
        Ok(())
    })
}
