//! Placeholder with the audit API; replaced by the real module.
#![allow(dead_code, unused_variables)]
use std::path::Path;

pub const MIGRATION: &str = "CREATE TABLE audit (seq INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL, digest TEXT, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);";

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub digest: Option<String>,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}
pub struct NewEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub digest: Option<&'a str>,
    pub detail: serde_json::Value,
}
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
}
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub intact: bool,
    pub entries: i64,
    pub problem: Option<Problem>,
    pub note: Option<String>,
}
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub seq: i64,
    pub kind: ProblemKind,
    pub message: String,
}
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    Altered,
    Deleted,
    Reordered,
    TruncatedTail,
    AnchorMismatch,
    Malformed,
}
pub fn append(tx: &rusqlite::Transaction<'_>, entry: NewEntry<'_>) -> Result<Entry, AuditError> {
    let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq),0)+1 FROM audit", [], |r| r.get(0))?;
    tx.execute(
        "INSERT INTO audit VALUES (?1, '', ?2, ?3, ?4, ?5, ?6, '', '')",
        rusqlite::params![
            seq,
            entry.actor,
            entry.action,
            entry.subject,
            entry.digest,
            entry.detail.to_string()
        ],
    )?;
    Ok(Entry {
        seq,
        at: String::new(),
        actor: entry.actor.into(),
        action: entry.action.into(),
        subject: entry.subject.into(),
        digest: entry.digest.map(Into::into),
        detail: entry.detail,
        prev_hash: String::new(),
        hash: String::new(),
    })
}
pub fn list(
    conn: &rusqlite::Connection,
    after_seq: i64,
    since: Option<&str>,
) -> Result<Vec<Entry>, AuditError> {
    Ok(Vec::new())
}
pub fn read_anchor(path: &Path) -> Result<Option<Anchor>, AuditError> {
    Ok(None)
}
pub fn write_anchor(path: &Path, anchor: &Anchor) -> Result<(), AuditError> {
    Ok(())
}
pub fn head(conn: &rusqlite::Connection) -> Result<Option<Anchor>, AuditError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok(Anchor {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            },
        )
        .optional()?)
}
pub fn verify(
    conn: &rusqlite::Connection,
    anchor: Option<&Anchor>,
) -> Result<Verification, AuditError> {
    Ok(Verification {
        intact: true,
        entries: 0,
        problem: None,
        note: None,
    })
}
