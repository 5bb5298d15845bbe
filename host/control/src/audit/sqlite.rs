//! The audit chain in SQLite: the `audit` table of the embedded store
//! (`migrations/0002_audit.sql`), appended inside the caller's transaction.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{
    Anchor, AuditError, ChainRows, Entry, NewEntry, Page, Record, RowRead, Unreadable,
    Verification, Writers, next_link, parse_since, timestamp, verify_rows,
};

/// The columns of an entry, in the order [`read_record`] expects them.
pub(super) const COLUMNS: &str = "seq, at, actor, action, subject, digest, detail, prev_hash, hash";

fn sql(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> AuditError {
    let context = context.into();
    move |source| AuditError::Sqlite { context, source }
}

/// Append an entry inside the caller's transaction, so the audited change and
/// its entry commit together.
///
/// `seq` is the last entry's + 1 (1 for the first), `prev_hash` the last
/// entry's `hash` (64 `0`s for the first), `at` the current UTC time, and
/// `hash` covers both and the fields (see the module docs). `detail` is stored
/// as canonical JSON; the returned entry carries it as given.
///
/// Two writers cannot fork the chain: `seq` is the primary key, so the second
/// to commit fails instead. Open the transaction with
/// [`rusqlite::TransactionBehavior::Immediate`] to have it wait instead of
/// failing with "database is locked".
pub fn append(tx: &Transaction<'_>, entry: NewEntry<'_>) -> Result<Entry, AuditError> {
    let link = next_link(head(tx)?.as_ref(), &entry)?;
    tx.prepare_cached(
        "INSERT INTO audit (seq, at, actor, action, subject, digest, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            link.seq,
            link.at,
            link.actor,
            link.action,
            link.subject,
            link.digest,
            link.detail,
            link.prev_hash,
            link.hash
        ])
    })
    .map_err(sql(format!("appending entry {}", link.seq)))?;
    Ok(Entry {
        seq: link.seq,
        at: link.at,
        actor: link.actor,
        action: link.action,
        subject: link.subject,
        digest: link.digest,
        detail: entry.detail,
        prev_hash: link.prev_hash,
        hash: link.hash,
    })
}

/// Entries with `seq > after_seq` (0 = all), optionally only those at or after
/// `since`, in `seq` order.
///
/// `since` is an RFC 3339 time (`2025-01-31T09:00:00Z`, with an offset such
/// as `+01:00`, or a bare date meaning its midnight UTC) or a duration meaning
/// that long ago (`90m`, `1h`, `7days`, `1h 30m`). Listing does not check the
/// chain; use [`verify`] for that.
pub fn list(
    conn: &Connection,
    after_seq: i64,
    since: Option<&str>,
) -> Result<Vec<Entry>, AuditError> {
    let since = since
        .map(|s| parse_since(s, std::time::SystemTime::now()).and_then(timestamp))
        .transpose()?;
    // `at` always has the same fixed-width UTC form, so comparing the text
    // compares the times.
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM audit WHERE seq > ?1 AND (?2 IS NULL OR at >= ?2) ORDER BY seq"
        ))
        .map_err(sql("listing entries"))?;
    let rows = stmt
        .query(params![after_seq, since])
        .map_err(sql("listing entries"))?;
    entries(rows, "listing entries")
}

/// The entries of `rows` (in [`COLUMNS`] order).
fn entries(mut rows: rusqlite::Rows<'_>, doing: &str) -> Result<Vec<Entry>, AuditError> {
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(sql(doing))? {
        let record =
            read_record(row)
                .map_err(|e| sql(doing)(e))?
                .map_err(|u| AuditError::Malformed {
                    seq: u.seq,
                    message: u.message,
                })?;
        entries.push(record.into_entry()?);
    }
    Ok(entries)
}

/// One page of the log, newest first (see [`Page`]).
pub fn page(conn: &Connection, page: &Page<'_>) -> Result<Vec<Entry>, AuditError> {
    let limit = page.limit.clamp(1, super::PAGE_MAX) as i64;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit WHERE (?1 IS NULL OR seq < ?1) \
             AND (?2 IS NULL OR action = ?2) \
             AND (?3 IS NULL OR substr(subject, 1, length(?3)) = ?3) \
             AND (?4 IS NULL OR instr(actor, ?4) > 0) \
             ORDER BY seq DESC LIMIT ?5"
        ))
        .map_err(sql("paging entries"))?;
    let rows = stmt
        .query(params![
            page.before,
            page.action,
            page.subject,
            page.actor,
            limit
        ])
        .map_err(sql("paging entries"))?;
    entries(rows, "paging entries")
}

/// The last entry's `seq` and `hash`: what [`super::write_anchor`] should
/// record after a commit that appended entries. `None` for an empty log.
pub fn head(conn: &Connection) -> Result<Option<Anchor>, AuditError> {
    conn.prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .and_then(|mut stmt| {
            stmt.query_row([], |row| {
                Ok(Anchor {
                    seq: row.get(0)?,
                    hash: row.get(1)?,
                    pending: 0,
                })
            })
            .optional()
        })
        .map_err(sql("reading the head of the chain"))
}

/// Check the whole chain and, when given, that it leads to `anchor`: the
/// single-host form of [`verify_rows`], whose anchor follows every commit.
pub fn verify(conn: &Connection, anchor: Option<&Anchor>) -> Result<Verification, AuditError> {
    verify_rows(&mut SqliteRows(conn), anchor, Writers::One)
}

/// The `audit` table of a connection, read for verification.
struct SqliteRows<'c>(&'c Connection);

impl SqliteRows<'_> {
    fn read(
        &self,
        context: &str,
        sql_text: &str,
        arg: &dyn rusqlite::ToSql,
        limit: Option<i64>,
    ) -> Result<Vec<RowRead>, AuditError> {
        let mut stmt = self.0.prepare_cached(sql_text).map_err(sql(context))?;
        let mut rows = match limit {
            Some(n) => stmt.query(params![arg, n]),
            None => stmt.query([arg]),
        }
        .map_err(sql(context))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql(context))? {
            out.push(read_record(row).map_err(sql(context))?);
        }
        Ok(out)
    }
}

impl ChainRows for SqliteRows<'_> {
    fn after(&mut self, after: i64, limit: usize) -> Result<Vec<RowRead>, AuditError> {
        self.read(
            "verifying the chain",
            &format!("SELECT {COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            &after,
            Some(i64::try_from(limit).unwrap_or(i64::MAX)),
        )
    }

    fn chained_onto(&mut self, prev_hash: &str) -> Result<Vec<RowRead>, AuditError> {
        self.read(
            "looking for a renumbered entry",
            &format!("SELECT {COLUMNS} FROM audit WHERE prev_hash = ?1"),
            &prev_hash,
            None,
        )
    }
}

/// Read a row selected as [`COLUMNS`]. A column that is not text (or not
/// UTF-8) makes the row [`Unreadable`], not an SQLite error: it means
/// someone wrote the row by hand.
pub(super) fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<RowRead> {
    let seq: i64 = row.get(0)?;
    let malformed = |message: String| Unreadable { seq, message };
    let text = |idx: usize, name: &str| -> rusqlite::Result<Result<Option<String>, Unreadable>> {
        Ok(match row.get_ref(idx)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => Ok(Some(s.to_owned())),
                Err(_) => Err(malformed(format!("`{name}` is not valid UTF-8"))),
            },
            ValueRef::Integer(_) => Err(malformed(format!("`{name}` holds an integer, not text"))),
            ValueRef::Real(_) => Err(malformed(format!("`{name}` holds a real, not text"))),
            ValueRef::Blob(_) => Err(malformed(format!("`{name}` holds a blob, not text"))),
        })
    };
    let required = |idx: usize, name: &str| -> rusqlite::Result<Result<String, Unreadable>> {
        Ok(text(idx, name)?.and_then(|v| v.ok_or_else(|| malformed(format!("`{name}` is NULL")))))
    };
    let record = (|| -> rusqlite::Result<Result<Record, Unreadable>> {
        macro_rules! get {
            ($e:expr) => {
                match $e? {
                    Ok(v) => v,
                    Err(u) => return Ok(Err(u)),
                }
            };
        }
        Ok(Ok(Record {
            seq,
            at: get!(required(1, "at")),
            actor: get!(required(2, "actor")),
            action: get!(required(3, "action")),
            subject: get!(required(4, "subject")),
            digest: get!(text(5, "digest")),
            detail: get!(required(6, "detail")),
            prev_hash: get!(required(7, "prev_hash")),
            hash: get!(required(8, "hash")),
        }))
    })()?;
    Ok(record)
}
