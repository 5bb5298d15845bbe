//! The audit log: what ran, when, with which grants, kept so that editing the
//! record afterwards is detectable.
//!
//! Security reviewers must be able to prove after the fact what the host did.
//! A plain table cannot prove anything: whoever can write the database can
//! change a row and nobody would know. So every entry is a link in a hash
//! chain, stored in the `audit` table (`migrations/0002_audit.sql`): its `hash` covers its
//! own fields and the `hash` of the entry before it (`prev_hash`), so changing,
//! removing or moving any entry breaks the chain from that entry on. The head
//! of the chain (last `seq` and `hash`) is also kept outside the database in a
//! small anchor file ([`write_anchor`]), because a chain alone cannot show
//! that its newest entries were cut off.
//!
//! # What it guarantees
//!
//! The threat is someone with write access to the database (the file, or a
//! SQL connection) editing history. [`verify`] reads the chain once, in `seq`
//! order, and names the first bad entry:
//!
//! | tampering                                          | reported as                     |
//! |----------------------------------------------------|---------------------------------|
//! | any field of entry k changed                       | [`Altered`] at k                |
//! | entry k changed and its `hash` recomputed          | [`Altered`] at k (entry k+1's `prev_hash` still holds the original) |
//! | entry k deleted (a gap in `seq`)                   | [`Deleted`] at k                |
//! | entries swapped, or `seq` renumbered               | [`Reordered`] at the first moved position |
//! | newest entries deleted (log ends before the anchor)| [`TruncatedTail`] at the first missing `seq` |
//! | the entry at the anchor's `seq` has another hash   | [`AnchorMismatch`] at that `seq` |
//! | a row evos cannot have written (a column of the wrong type, `detail` not JSON, a hash not 64 lowercase hex digits) | [`Malformed`] at that row |
//!
//! # What it does not guarantee
//!
//! The chain proves that the log is consistent with itself and with the
//! anchor, not who wrote it. Someone who can write both the database and the
//! anchor file can rewrite history from any entry on, recompute every later
//! hash and write a matching anchor, and [`verify`] will call the result
//! intact. Only keeping the anchor out of that person's reach (another
//! account, append-only or remote storage, a copy sent to the reviewers)
//! closes that gap, and that is outside this module. Without an anchor,
//! deleting the newest entries, or changing the newest entry and recomputing
//! its hash, is not detectable at all. And an entry is only as true as what
//! the host chose to record.
//!
//! # Crashes
//!
//! [`append`] writes inside the caller's transaction, so the audited change
//! and its entry commit together or not at all, and SQLite's atomic commit
//! rules out a torn row (half an entry). The anchor file holds two slots
//! and each update rewrites the older one in place and syncs it (one data
//! sync); a torn slot fails its check, so the anchor read back after a crash
//! too is either the old anchor or the new one. The only crash window left
//! is between the commit and the anchor update: the log then holds the
//! entries of that one transaction past the anchor, correctly chained.
//! [`verify`] accepts one such entry as intact and says so in
//! [`Verification::note`]; writing the anchor again from [`head`] closes the
//! window. A transaction that appends several entries (a group commit of
//! concurrent writes) first rewrites the anchor with `pending` set to their
//! number, so [`verify`] accepts up to that many; more unanchored entries
//! than announced are reported as [`AnchorMismatch`].
//!
//! # Encoding, for re-implementing verification
//!
//! Entry `seq` n (1, 2, 3, ... without gaps) has `prev_hash` = the `hash` of
//! entry n-1, or 64 `0` characters for entry 1, and
//!
//! ```text
//! hash = lowercase hex of SHA-256( prev_hash ‖ canonical )
//! canonical = [seq,at,actor,action,subject,digest,detail]
//! ```
//!
//! where `‖` is concatenation of bytes (`prev_hash` is its 64 ASCII
//! characters) and `canonical` is UTF-8 text with no whitespace between its
//! parts: `seq` in decimal; `at`, `actor`, `action`, `subject` and `digest`
//! as JSON strings (`digest` is `null` when the column is NULL); `detail` is
//! the text of the `detail` column, verbatim. A JSON string is `"`, the
//! characters, `"`, where `"` and `\` are written `\"` and `\\`, the controls
//! U+0008, U+0009, U+000A, U+000C, U+000D are written `\b`, `\t`, `\n`, `\f`,
//! `\r`, the other characters below U+0020 are written `\u00xx` (lowercase
//! hex), and every other character, `/` and non-ASCII included, is written as
//! itself. This is Python's `json.dumps(s, ensure_ascii=False)`.
//!
//! [`append`] stores `detail` in canonical JSON: no whitespace, object keys
//! sorted by Unicode code point (byte order of their UTF-8), strings as
//! above, numbers as `serde_json` writes them. Verification hashes the stored
//! text and never re-encodes it, so a checker needs no JSON encoder of its
//! own for `detail`, and a change in how a library prints numbers can never
//! break an old chain.
//!
//! `at` is the UTC time of the append, RFC 3339 with microseconds
//! (`2025-01-31T09:00:00.123456Z`). The anchor file is two 256-byte slots,
//! each one line of JSON padded with spaces:
//! `{"generation":5,"seq":12,"hash":"<64 hex>","check":"<16 hex>"}`, with
//! `"pending":<n>` while a transaction appending n > 1 entries commits.
//! `check` is the first 8 bytes, in hex, of the sha256 of
//! `evos-anchor|<generation>|<seq>|<hash>|<pending>`; the valid slot with
//! the highest generation is the anchor. A file holding one plain JSON
//! object `{"seq":12,"hash":"<64 hex>"}` is read too.
//!
//! [`Altered`]: ProblemKind::Altered
//! [`Deleted`]: ProblemKind::Deleted
//! [`Reordered`]: ProblemKind::Reordered
//! [`TruncatedTail`]: ProblemKind::TruncatedTail
//! [`AnchorMismatch`]: ProblemKind::AnchorMismatch
//! [`Malformed`]: ProblemKind::Malformed

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};

mod sqlite;

pub use sqlite::{append, head, list, page, verify};

/// `prev_hash` of the first entry.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Seconds from the epoch to the end of year 9999, the last instant an RFC
/// 3339 time stamp can write.
const MAX_TIMESTAMP_SECS: u64 = 253_402_300_800;

/// Which entries a page of the log shows: newest first, those with `seq`
/// below `before` (all when absent), at most `limit`, narrowed by action
/// (exact), subject (prefix) and actor (substring).
#[derive(Debug, Clone, Copy, Default)]
pub struct Page<'a> {
    pub before: Option<i64>,
    pub limit: usize,
    pub action: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub actor: Option<&'a str>,
}

/// Most entries one page returns.
pub const PAGE_MAX: usize = 500;

/// One entry of the audit log, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    /// Position in the chain: 1 for the first entry, then without gaps.
    pub seq: i64,
    /// When it was appended: RFC 3339, UTC, microseconds.
    pub at: String,
    /// Who acted (a user, a plugin, the host).
    pub actor: String,
    /// What was done (`deploy`, `call`, `grant`, ...).
    pub action: String,
    /// What it was done to (a plugin name, a manifest path, ...).
    pub subject: String,
    /// sha256 of the artifact concerned, when there is one.
    pub digest: Option<String>,
    /// Anything else worth proving later (the grants, limits, outcome).
    pub detail: Value,
    /// `hash` of the previous entry; 64 `0`s for the first.
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this entry's fields (see the module docs).
    pub hash: String,
}

impl Entry {
    /// Whether a token scoped to `scope` may read this entry: `*` reads
    /// everything; a narrower scope reads the entries about its plugins
    /// (the subject, a `connector`, `proposed_by` or `plugin` in the
    /// detail, the connector acting in a pipeline or execute entry), and
    /// nothing host-wide (tokens, refused requests).
    pub fn visible_to(&self, scope: &str) -> bool {
        if scope == "*" {
            return true;
        }
        let matches = |name: &str| crate::auth::scope_matches(scope, name);
        let in_detail = ["connector", "proposed_by", "plugin"]
            .iter()
            .filter_map(|k| self.detail.get(k).and_then(Value::as_str))
            .any(matches);
        let plugin_subject = !self.subject.contains('/') && matches(&self.subject);
        let acting_connector =
            matches!(self.action.as_str(), "pipeline" | "execute") && matches(&self.actor);
        plugin_subject || in_detail || acting_connector
    }
}

/// What the caller records; [`append`] adds `seq`, `at` and the hashes.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub digest: Option<&'a str>,
    pub detail: Value,
}

/// Errors of the audit log. Tampering is not an error: [`verify`] reports it
/// in its [`Verification`].
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite failed while reading or writing the log.
    #[error("audit log: {context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },

    /// The anchor file could not be read or written.
    #[error("audit anchor {}: {context}: {source}", path.display())]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: io::Error,
    },

    /// Another database failed while reading or writing the log.
    #[error("audit log: {context}: {source}")]
    Store {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The anchor file exists but does not hold an anchor.
    #[error("audit anchor {}: {message}", path.display())]
    Anchor { path: PathBuf, message: String },

    /// A stored entry cannot be read as an entry, so it cannot be listed or
    /// chained onto.
    #[error(
        "audit entry {seq} is malformed: {message}; run the audit verification to see what happened to the log"
    )]
    Malformed { seq: i64, message: String },

    /// The `since` filter given to [`list`] is neither a time nor a duration.
    #[error(
        "cannot read `{input}` as a time: {message}; give an RFC 3339 time (2025-01-31T09:00:00Z, 2025-01-31T10:00:00+01:00, 2025-01-31) or a duration meaning that long ago (90m, 1h, 7days)"
    )]
    Since { input: String, message: String },

    /// The system clock is outside what an RFC 3339 time stamp can record.
    #[error(
        "the system clock reads {reading}, which an audit time stamp cannot record (it must be between 1970 and 9999); fix the clock"
    )]
    Clock { reading: String },
}

impl From<AuditError> for crate::Error {
    fn from(e: AuditError) -> crate::Error {
        crate::Error::Audit(Box::new(e))
    }
}

/// The head of the chain as last committed, kept outside the database so that
/// deleting the newest entries is detectable.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    /// Entries a transaction in flight may append after `seq`: written
    /// before a commit that appends more than one entry, so a crash between
    /// that commit and the next anchor update is told apart from entries
    /// appended behind the host's back. 0 (and absent in the file) otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Bytes of one slot of the anchor file.
const SLOT: usize = 256;

/// One slot of the anchor file: the anchor, its generation, and a check
/// over both that tells a whole slot from a torn write.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Slot {
    generation: u64,
    seq: i64,
    hash: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pending: i64,
    check: String,
}

fn slot_check(generation: u64, a: &Anchor) -> String {
    let digest = Sha256::digest(format!(
        "evos-anchor|{generation}|{}|{}|{}",
        a.seq, a.hash, a.pending
    ));
    hex::encode(&digest[..8])
}

/// The valid slots of an anchor file's bytes, as (generation, anchor).
fn slots(bytes: &[u8]) -> Vec<(u64, Anchor)> {
    bytes
        .chunks(SLOT)
        .take(2)
        .filter_map(|chunk| {
            let slot: Slot = serde_json::from_slice(chunk.trim_ascii()).ok()?;
            let anchor = Anchor {
                seq: slot.seq,
                hash: slot.hash,
                pending: slot.pending,
            };
            (slot.check == slot_check(slot.generation, &anchor))
                .then_some((slot.generation, anchor))
        })
        .collect()
}

/// Read the anchor file; `None` when it does not exist. The file holds two
/// slots ([`write_anchor`]); the newest whole one is the anchor. A file
/// holding one plain JSON anchor (`{"seq":…,"hash":…}`) is read as well.
pub fn read_anchor(path: &Path) -> Result<Option<Anchor>, AuditError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuditError::Io {
                path: path.to_owned(),
                context: "reading",
                source,
            });
        }
    };
    let invalid = |message: String| AuditError::Anchor {
        path: path.to_owned(),
        message,
    };
    let anchor = match slots(&bytes).into_iter().max_by_key(|(generation, _)| *generation) {
        Some((_, anchor)) => anchor,
        None => serde_json::from_slice::<Anchor>(&bytes).map_err(|e| {
            invalid(format!(
                "not an anchor ({e}); expected {{\"seq\":<n>,\"hash\":\"<64 hex>\"}} or the two-slot form evos writes"
            ))
        })?,
    };
    if anchor.seq < 0 {
        return Err(invalid(format!("seq {} is negative", anchor.seq)));
    }
    if anchor.pending < 0 {
        return Err(invalid(format!("pending {} is negative", anchor.pending)));
    }
    if !is_hash(&anchor.hash) {
        return Err(invalid(format!(
            "hash `{}` is not 64 lowercase hex digits",
            anchor.hash
        )));
    }
    Ok(Some(anchor))
}

/// Record `anchor` durably with one data sync. The file has two fixed-size
/// slots, each a padded JSON line with a generation and a check; a write
/// replaces the older slot in place. A crash mid-write tears at most that
/// slot, which then fails its check, so the file holds the old anchor or
/// the new one, never a torn one. The file and its directory entry are
/// synced once, when the file is created.
pub fn write_anchor(path: &Path, anchor: &Anchor) -> Result<(), AuditError> {
    use std::os::unix::fs::FileExt;
    let io_err = |context| {
        let path = path.to_owned();
        move |source| AuditError::Io {
            path,
            context,
            source,
        }
    };
    let created = !path.exists();
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let file = opts.open(path).map_err(io_err("opening the anchor"))?;
    let mut current = vec![0u8; 2 * SLOT];
    let n = file
        .read_at(&mut current, 0)
        .map_err(io_err("reading the anchor"))?;
    let generation = slots(&current[..n])
        .into_iter()
        .map(|(generation, _)| generation)
        .max()
        .unwrap_or(0)
        + 1;
    let slot = Slot {
        generation,
        seq: anchor.seq,
        hash: anchor.hash.clone(),
        pending: anchor.pending,
        check: slot_check(generation, anchor),
    };
    let mut bytes = serde_json::to_vec(&slot).map_err(|e| AuditError::Anchor {
        path: path.to_owned(),
        message: format!("encoding the anchor: {e}"),
    })?;
    if bytes.len() >= SLOT {
        return Err(AuditError::Anchor {
            path: path.to_owned(),
            message: format!("an anchor slot of {} bytes does not fit", bytes.len()),
        });
    }
    bytes.resize(SLOT - 1, b' ');
    bytes.push(b'\n');
    let offset = (generation % 2) * SLOT as u64;
    file.write_all_at(&bytes, offset)
        .map_err(io_err("writing the anchor"))?;
    // A plain JSON anchor of the older form left in slot 0 is not a valid
    // slot, so the new slot wins; the next write replaces it.
    file.sync_data().map_err(io_err("syncing the anchor"))?;
    if created {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        sync_dir(dir).map_err(|source| AuditError::Io {
            path: dir.to_owned(),
            context: "syncing the anchor's directory",
            source,
        })?;
    }
    Ok(())
}

/// Make a new directory entry in `dir` durable. Only Unix can open a
/// directory to sync it.
fn sync_dir(dir: &Path) -> io::Result<()> {
    if cfg!(unix) {
        File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    /// No tampering found.
    pub intact: bool,
    /// Entries found good: all of them when intact, else those before the
    /// first bad one.
    pub entries: i64,
    /// The first thing wrong, when not intact.
    pub problem: Option<Problem>,
    /// Whether an anchor was given and the chain leads to it. Without an
    /// anchor, an intact chain may still have lost its newest entries.
    pub anchored: bool,
    /// Something a reviewer should know that is not tampering (an entry
    /// committed but not yet anchored, no anchor given).
    pub note: Option<String>,
}

/// The first thing wrong with the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// The first bad (or missing) entry.
    pub seq: i64,
    pub kind: ProblemKind,
    /// What was found, with the hashes or seqs involved.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// An entry's fields or hash were changed.
    Altered,
    /// Entries are missing from the middle (or start) of the log.
    Deleted,
    /// Entries were swapped or renumbered.
    Reordered,
    /// The newest entries, up to the anchor, are missing.
    TruncatedTail,
    /// The log does not lead to the anchor.
    AnchorMismatch,
    /// A row evos cannot have written.
    Malformed,
}

/// Where [`verify_rows`] reads a chain from: the SQLite table, or the
/// PostgreSQL one several nodes share.
pub(crate) trait ChainRows {
    /// Up to `limit` rows with `seq > after`, in `seq` order.
    fn after(&mut self, after: i64, limit: usize) -> Result<Vec<RowRead>, AuditError>;
    /// The rows whose `prev_hash` is `prev_hash`.
    fn chained_onto(&mut self, prev_hash: &str) -> Result<Vec<RowRead>, AuditError>;
}

/// A row as read: its text columns, or why it cannot be an entry evos
/// wrote (a NULL, a non-text column).
pub(crate) type RowRead = Result<Record, Unreadable>;

/// A row that cannot be read as an entry.
#[derive(Debug, Clone)]
pub(crate) struct Unreadable {
    pub seq: i64,
    pub message: String,
}

/// Rows read per page while verifying.
const PAGE: usize = 4096;

/// Who appends to the chain an anchor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writers {
    /// One host: its anchor follows every commit, so entries past it are
    /// at most the one transaction a crash interrupted.
    One,
    /// Several nodes append to one chain and each anchors its own
    /// commits: entries past a node's anchor were appended by others.
    Shared,
}

/// The link after `head` (`None`: the first entry) for `entry` appended
/// now: what a backend inserts. The row chains onto `head` whatever
/// backend stores it.
pub(crate) fn next_link(head: Option<&Anchor>, entry: &NewEntry<'_>) -> Result<Record, AuditError> {
    let (seq, prev_hash) = match head {
        None => (1, GENESIS.to_owned()),
        Some(last) => {
            if !is_hash(&last.hash) {
                return Err(AuditError::Malformed {
                    seq: last.seq,
                    message: format!(
                        "its hash `{}` is not 64 lowercase hex digits, so no entry can be chained onto it",
                        last.hash
                    ),
                });
            }
            let seq = last.seq.checked_add(1).ok_or(AuditError::Malformed {
                seq: last.seq,
                message: "it has the largest possible seq".into(),
            })?;
            (seq, last.hash.clone())
        }
    };
    let mut record = Record {
        seq,
        at: timestamp(SystemTime::now())?,
        actor: entry.actor.to_owned(),
        action: entry.action.to_owned(),
        subject: entry.subject.to_owned(),
        digest: entry.digest.map(str::to_owned),
        detail: canonical_json(&entry.detail),
        prev_hash,
        hash: String::new(),
    };
    record.hash = record.hash_as(seq);
    Ok(record)
}

/// Check the whole chain read from `rows` and, when given, that it leads
/// to `anchor` (see [`verify`] for the single-host form).
///
/// Rows are read in `seq` order a page at a time, and each is hashed once,
/// so the cost is O(n) with memory for one page. Verification stops at the
/// first problem; only then does it scan the rows once more (still O(n))
/// to tell a moved entry from an altered one. Tampering is reported in the
/// result, not as an error; errors are the database's failures.
pub(crate) fn verify_rows(
    rows: &mut dyn ChainRows,
    anchor: Option<&Anchor>,
    writers: Writers,
) -> Result<Verification, AuditError> {
    let mut last: Option<Link> = None;
    let mut good: i64 = 0;
    let mut hash_at_anchor: Option<String> = None;
    let mut after = i64::MIN;
    loop {
        let page = rows.after(after, PAGE)?;
        let full = page.len() == PAGE;
        for row in page {
            after = match &row {
                Ok(r) => r.seq,
                Err(u) => u.seq,
            };
            match check_entry(rows, row, last.as_ref())? {
                Ok(link) => {
                    good += 1;
                    if anchor.is_some_and(|a| a.seq == link.seq) {
                        hash_at_anchor = Some(link.hash.clone());
                    }
                    last = Some(link);
                }
                Err(problem) => {
                    // Entries before the bad one were found good; for an
                    // entry found altered by its successor, that is one
                    // fewer than were read.
                    let entries = problem.seq.saturating_sub(1).clamp(0, good);
                    return Ok(broken(entries, problem));
                }
            }
        }
        if !full {
            break;
        }
    }

    let Some(anchor) = anchor else {
        let note = (good > 0).then(|| {
            "no anchor was given, so deleting the newest entries (or changing the newest entry and recomputing its hash) would not be detected".to_owned()
        });
        return Ok(Verification {
            intact: true,
            entries: good,
            problem: None,
            anchored: false,
            note,
        });
    };
    let head_seq = last.as_ref().map_or(0, |l| l.seq);
    if anchor.seq < 0 || !is_hash(&anchor.hash) {
        return Ok(broken(
            good,
            Problem {
                seq: anchor.seq,
                kind: ProblemKind::AnchorMismatch,
                message: format!(
                    "the anchor (seq {}, hash `{}`) is not a valid anchor",
                    anchor.seq, anchor.hash
                ),
            },
        ));
    }
    if head_seq < anchor.seq {
        let missing = range(head_seq + 1, anchor.seq);
        let message = if head_seq == 0 {
            format!(
                "the log is empty but the anchor records {} as its last entry: {missing} were deleted",
                range(anchor.seq, anchor.seq)
            )
        } else {
            format!(
                "the log ends at entry {head_seq} but the anchor records entry {}: {missing} were deleted",
                anchor.seq
            )
        };
        return Ok(broken(
            good,
            Problem {
                seq: head_seq + 1,
                kind: ProblemKind::TruncatedTail,
                message,
            },
        ));
    }
    let found = if anchor.seq == 0 {
        Some(GENESIS.to_owned())
    } else {
        hash_at_anchor
    };
    if found.as_deref() != Some(anchor.hash.as_str()) {
        let found = found.unwrap_or_default();
        return Ok(broken(
            good,
            Problem {
                seq: anchor.seq,
                kind: ProblemKind::AnchorMismatch,
                message: format!(
                    "entry {} has hash {found} but the anchor recorded {}: the log was rewritten up to entry {} (changed and every hash recomputed), or the anchor belongs to another log",
                    anchor.seq, anchor.hash, anchor.seq
                ),
            },
        ));
    }
    if head_seq == anchor.seq {
        return Ok(Verification {
            intact: true,
            entries: good,
            problem: None,
            anchored: true,
            note: None,
        });
    }
    if writers == Writers::Shared {
        return Ok(Verification {
            intact: true,
            entries: good,
            problem: None,
            anchored: true,
            note: Some(format!(
                "this node's anchor records entry {}; {} appended since by any node chain onto it but only that node's anchor can show none of its own were cut off",
                anchor.seq,
                if head_seq == anchor.seq + 1 {
                    format!("entry {head_seq}, ")
                } else {
                    format!("entries {}..={head_seq}, ", anchor.seq + 1)
                }
            )),
        });
    }
    // One transaction commits before its anchor update: the entries it
    // appended (one, or the `pending` count announced before a larger
    // commit) may be unanchored after a crash.
    let in_flight = anchor.pending.max(1);
    if head_seq - anchor.seq <= in_flight {
        let unanchored = if head_seq == anchor.seq + 1 {
            format!("entry {head_seq} was")
        } else {
            format!("entries {}..={head_seq} were", anchor.seq + 1)
        };
        return Ok(Verification {
            intact: true,
            entries: good,
            problem: None,
            anchored: true,
            note: Some(format!(
                "{unanchored} committed but the anchor still records entry {}: the process stopped between the commit and the anchor update, which is not tampering; write the anchor from the current head to close the gap",
                anchor.seq
            )),
        });
    }
    Ok(broken(
        good,
        Problem {
            seq: anchor.seq + 1,
            kind: ProblemKind::AnchorMismatch,
            message: format!(
                "the anchor records entry {} but the log continues to entry {head_seq}: {} were never anchored. A crash between commit and anchor update leaves at most {in_flight} unanchored, so entries were appended (or the anchor file replaced by an older copy) behind the host's back",
                anchor.seq,
                range(anchor.seq + 1, head_seq)
            ),
        },
    ))
}

fn broken(entries: i64, problem: Problem) -> Verification {
    Verification {
        intact: false,
        entries,
        problem: Some(problem),
        anchored: false,
        note: None,
    }
}

/// "entry 4" or "entries 4..=6".
fn range(first: i64, last: i64) -> String {
    if first == last {
        format!("entry {first}")
    } else {
        format!("entries {first}..={last}")
    }
}

/// The last good entry, which the next one must chain onto.
struct Link {
    seq: i64,
    hash: String,
}

/// Check one row against the last good entry: `Ok(link)` when it extends the
/// chain, else the problem it reveals.
fn check_entry(
    rows: &mut dyn ChainRows,
    row: RowRead,
    last: Option<&Link>,
) -> Result<Result<Link, Problem>, AuditError> {
    let seq = match &row {
        Ok(r) => r.seq,
        Err(u) => u.seq,
    };
    let expected = last.map_or(1, |l| l.seq.saturating_add(1));
    let expected_prev = last.map_or(GENESIS, |l| l.hash.as_str());

    if seq > expected {
        return Ok(Err(gap(rows, expected, expected_prev, seq)?));
    }

    let record = match row {
        Ok(record) => record,
        Err(Unreadable { seq, message }) => {
            return Ok(Err(Problem {
                seq,
                kind: ProblemKind::Malformed,
                message,
            }));
        }
    };
    if let Err(message) = record.check_form() {
        return Ok(Err(Problem {
            seq,
            kind: ProblemKind::Malformed,
            message,
        }));
    }

    if seq < expected {
        // Only the first row can get here, with a seq of 0 or less, which
        // `append` never writes.
        return Ok(Err(match find_origin(rows, &record)? {
            Some(problem) => problem,
            None => Problem {
                seq,
                kind: ProblemKind::Malformed,
                message: format!(
                    "seq {seq} is not a position evos writes (seqs start at 1) and the entry does not verify as any other seq"
                ),
            },
        }));
    }

    let computed = record.hash_as(seq);
    if computed != record.hash {
        return Ok(Err(match find_origin(rows, &record)? {
            Some(problem) => problem,
            None => Problem {
                seq,
                kind: ProblemKind::Altered,
                message: format!(
                    "entry {seq} does not match its hash: its fields hash to {computed} but the stored hash is {}; the entry was changed after it was written",
                    record.hash
                ),
            },
        }));
    }

    if record.prev_hash != expected_prev {
        return Ok(Err(match last {
            None => Problem {
                seq,
                kind: ProblemKind::Altered,
                message: format!(
                    "entry 1 must chain from {GENESIS} but records prev_hash {}; it was rewritten and its hash recomputed",
                    record.prev_hash
                ),
            },
            Some(last) => Problem {
                seq: last.seq,
                kind: ProblemKind::Altered,
                message: format!(
                    "entry {} matches its own hash {}, but entry {seq} recorded entry {}'s hash as {} when it was written: entry {} was changed afterwards and its hash recomputed to hide it",
                    last.seq, last.hash, last.seq, record.prev_hash, last.seq
                ),
            },
        }));
    }

    Ok(Ok(Link {
        seq,
        hash: record.hash,
    }))
}

/// The problem behind a gap: entries `expected..seq` are not where they
/// belong. Moved elsewhere (renumbered) if the entry that chains onto
/// `expected_prev` is stored at another seq and verifies as `expected`;
/// deleted otherwise.
fn gap(
    rows: &mut dyn ChainRows,
    expected: i64,
    expected_prev: &str,
    seq: i64,
) -> Result<Problem, AuditError> {
    for record in rows.chained_onto(expected_prev)?.into_iter().flatten() {
        if record.check_form().is_ok() && record.hash_as(expected) == record.hash {
            return Ok(Problem {
                seq: expected,
                kind: ProblemKind::Reordered,
                message: format!(
                    "entry {expected} is stored at seq {}: it verifies as entry {expected} there, so it was renumbered",
                    record.seq
                ),
            });
        }
    }
    let missing = range(expected, seq - 1);
    let message = if expected == 1 {
        format!("the log starts at entry {seq}: {missing} were deleted")
    } else {
        format!(
            "entry {seq} follows entry {}: {missing} {} deleted",
            expected - 1,
            if seq - 1 == expected { "was" } else { "were" }
        )
    };
    Ok(Problem {
        seq: expected,
        kind: ProblemKind::Deleted,
        message,
    })
}

/// Whether a row that does not verify where it is was moved there from
/// another position, in one more pass over the rows:
/// - the whole row (fields and both hashes) verifies as another seq: it is
///   that entry, swapped or renumbered. Candidates are every stored seq, and
///   the seqs its chain neighbours imply (the one after the entry whose hash
///   is its `prev_hash`, the one before the entry whose `prev_hash` is its
///   hash), which covers a move to an unused seq;
/// - its fields, hashed with another row's seq and `prev_hash`, give that
///   row's hash: the contents of two entries were exchanged while the hash
///   columns stayed put.
fn find_origin(rows: &mut dyn ChainRows, record: &Record) -> Result<Option<Problem>, AuditError> {
    let moved = |from: i64| Problem {
        seq: record.seq,
        kind: ProblemKind::Reordered,
        message: format!(
            "the row at seq {} is entry {from}: its hash verifies only as seq {from}, so entries were swapped or renumbered",
            record.seq
        ),
    };
    let mut candidates = Vec::new();
    if record.prev_hash == GENESIS {
        candidates.push(1);
    }
    let mut content_of = None;
    let mut after = i64::MIN;
    loop {
        let page = rows.after(after, PAGE)?;
        let full = page.len() == PAGE;
        for row in page {
            let other = match row {
                Ok(other) => other,
                Err(u) => {
                    after = u.seq;
                    continue;
                }
            };
            after = other.seq;
            let seq = other.seq;
            if seq == record.seq {
                continue;
            }
            if record.hash_as(seq) == record.hash {
                return Ok(Some(moved(seq)));
            }
            if other.hash == record.prev_hash {
                candidates.push(seq.saturating_add(1));
            }
            if other.prev_hash == record.hash {
                candidates.push(seq.saturating_sub(1));
            }
            if content_of.is_none()
                && entry_hash(&other.prev_hash, &record.fields_as(seq)) == other.hash
            {
                content_of = Some(seq);
            }
        }
        if !full {
            break;
        }
    }
    if let Some(from) = candidates
        .into_iter()
        .find(|&s| s != record.seq && record.hash_as(s) == record.hash)
    {
        return Ok(Some(moved(from)));
    }
    Ok(content_of.map(|from| Problem {
        seq: record.seq,
        kind: ProblemKind::Reordered,
        message: format!(
            "the fields at seq {} are those of entry {from}: they verify against entry {from}'s hashes, not their own, so the contents of entries were exchanged",
            record.seq
        ),
    }))
}

/// A row as stored, every column text (`digest` may be NULL), nothing else
/// checked yet.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub digest: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl Record {
    /// What `append` guarantees beyond column types: both hashes are hashes
    /// and `detail` is JSON.
    fn check_form(&self) -> Result<(), String> {
        for (name, value) in [("hash", &self.hash), ("prev_hash", &self.prev_hash)] {
            if !is_hash(value) {
                return Err(format!(
                    "`{name}` is `{value}`, not 64 lowercase hex digits"
                ));
            }
        }
        serde_json::from_str::<serde::de::IgnoredAny>(&self.detail)
            .map_err(|e| format!("`detail` is not JSON ({e})"))?;
        Ok(())
    }

    fn fields_as(&self, seq: i64) -> Fields<'_> {
        Fields {
            seq,
            at: &self.at,
            actor: &self.actor,
            action: &self.action,
            subject: &self.subject,
            digest: self.digest.as_deref(),
            detail: &self.detail,
        }
    }

    /// The hash this row would have if it were entry `seq`.
    pub(crate) fn hash_as(&self, seq: i64) -> String {
        entry_hash(&self.prev_hash, &self.fields_as(seq))
    }

    pub(crate) fn into_entry(self) -> Result<Entry, AuditError> {
        let detail = serde_json::from_str(&self.detail).map_err(|e| AuditError::Malformed {
            seq: self.seq,
            message: format!("`detail` is not JSON ({e})"),
        })?;
        Ok(Entry {
            seq: self.seq,
            at: self.at,
            actor: self.actor,
            action: self.action,
            subject: self.subject,
            digest: self.digest,
            detail,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// The hashed fields of an entry; `detail` is its stored JSON text.
struct Fields<'a> {
    seq: i64,
    at: &'a str,
    actor: &'a str,
    action: &'a str,
    subject: &'a str,
    digest: Option<&'a str>,
    detail: &'a str,
}

/// `hash` of an entry: lowercase hex SHA-256 of `prev_hash` followed by
/// `[seq,at,actor,action,subject,digest,detail]` (module docs).
fn entry_hash(prev_hash: &str, fields: &Fields<'_>) -> String {
    let mut canonical = String::with_capacity(
        64 + fields.at.len()
            + fields.actor.len()
            + fields.action.len()
            + fields.subject.len()
            + fields.detail.len(),
    );
    canonical.push('[');
    canonical.push_str(&fields.seq.to_string());
    for s in [fields.at, fields.actor, fields.action, fields.subject] {
        canonical.push(',');
        push_json_str(&mut canonical, s);
    }
    canonical.push(',');
    match fields.digest {
        Some(digest) => push_json_str(&mut canonical, digest),
        None => canonical.push_str("null"),
    }
    canonical.push(',');
    canonical.push_str(fields.detail);
    canonical.push(']');

    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

/// `value` as canonical JSON: no whitespace, object keys sorted by code point
/// at every depth. Sorting is done here rather than left to `serde_json::Map`,
/// which keeps insertion order when its `preserve_order` feature is on.
fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    push_canonical(&mut out, value);
    out
}

fn push_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => push_json_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // `str` orders by bytes, which for UTF-8 is code point order.
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(out, key);
                out.push(':');
                push_canonical(out, item);
            }
            out.push('}');
        }
    }
}

/// `s` as a JSON string, escaped exactly as the module docs say (and as
/// `serde_json` and Python's `json.dumps(s, ensure_ascii=False)` do).
fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let b = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `t` as RFC 3339 UTC with microseconds. humantime panics before 1970 and
/// fails after 9999, so those are refused here first.
fn timestamp(t: SystemTime) -> Result<String, AuditError> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(since_epoch) if since_epoch.as_secs() < MAX_TIMESTAMP_SECS => {
            Ok(humantime::format_rfc3339_micros(t).to_string())
        }
        _ => Err(AuditError::Clock {
            reading: format!("{t:?}"),
        }),
    }
}

/// A `since` filter (an RFC 3339 time or date, or a duration ago such as
/// `7d`) as an RFC 3339 time in UTC, for filters on other records.
pub fn since_rfc3339(input: &str) -> Result<String, AuditError> {
    parse_since(input, SystemTime::now()).map(|t| humantime::format_rfc3339_micros(t).to_string())
}

/// Read a `since` filter (see [`list`]) relative to `now`. Times before 1970
/// are taken as 1970, which lets every entry through.
fn parse_since(input: &str, now: SystemTime) -> Result<SystemTime, AuditError> {
    let err = |message: String| AuditError::Since {
        input: input.to_owned(),
        message,
    };
    let s = input.trim().to_ascii_uppercase();
    let b = s.as_bytes();
    if s.is_empty() {
        return Err(err("it is empty".into()));
    }
    let looks_like_date = b.len() >= 10 && b[4] == b'-' && b[7] == b'-';
    if !looks_like_date {
        let ago = humantime::parse_duration(input.trim()).map_err(|e| err(e.to_string()))?;
        return Ok(now.checked_sub(ago).unwrap_or(UNIX_EPOCH).max(UNIX_EPOCH));
    }

    // humantime reads only UTC (`Z`); an explicit offset is applied here.
    let (base, offset) = split_offset(&s).map_err(err)?;
    let parsed = if base.len() == 10 {
        humantime::parse_rfc3339_weak(&format!("{base}T00:00:00"))
    } else {
        humantime::parse_rfc3339_weak(base)
    }
    .map_err(|e| err(e.to_string()))?;
    // Local time = UTC + offset.
    let utc = if offset >= 0 {
        parsed.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    } else {
        parsed.checked_add(Duration::from_secs(offset.unsigned_abs()))
    };
    Ok(utc.unwrap_or(UNIX_EPOCH).max(UNIX_EPOCH))
}

/// Split a trailing `+HH:MM` / `-HH:MM` offset (in seconds east of UTC) from
/// an RFC 3339 time; 0 when there is none.
fn split_offset(s: &str) -> Result<(&str, i64), String> {
    let b = s.as_bytes();
    // Shortest time with an offset: 2025-01-31T09:00:00+01:00.
    if b.len() < 25 {
        return Ok((s, 0));
    }
    let tail = &b[b.len() - 6..];
    let sign = match tail[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Ok((s, 0)),
    };
    let digits = |hi: u8, lo: u8| -> Option<i64> {
        (hi.is_ascii_digit() && lo.is_ascii_digit())
            .then(|| i64::from((hi - b'0') * 10 + lo - b'0'))
    };
    match (digits(tail[1], tail[2]), tail[3], digits(tail[4], tail[5])) {
        (Some(h), b':', Some(m)) if h <= 23 && m <= 59 => {
            // The last six bytes are ASCII, so this is a char boundary.
            Ok((&s[..s.len() - 6], sign * (h * 3600 + m * 60)))
        }
        _ => Err(format!(
            "the offset `{}` is not +HH:MM or -HH:MM",
            String::from_utf8_lossy(tail)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite::{COLUMNS, read_record};
    use super::*;
    use rusqlite::{Connection, params};
    use serde_json::json;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../migrations/0002_audit.sql"))
            .unwrap();
        conn
    }

    /// A log of `n` entries, each in its own transaction like the host writes them.
    fn chain(n: i64) -> Connection {
        let mut conn = db();
        for i in 1..=n {
            push(&mut conn, i);
        }
        conn
    }

    fn push(conn: &mut Connection, i: i64) -> Entry {
        let tx = conn.transaction().unwrap();
        let entry = append(
            &tx,
            NewEntry {
                actor: "alice",
                action: "deploy",
                subject: &format!("plugin-{i}"),
                digest: Some(&format!("{i:064x}")),
                detail: json!({"grants": {"kv": true, "http": ["https://example.com/*"]}, "n": i}),
            },
        )
        .unwrap();
        tx.commit().unwrap();
        entry
    }

    fn problem(v: &Verification) -> (i64, ProblemKind, &str) {
        let p = v
            .problem
            .as_ref()
            .unwrap_or_else(|| panic!("expected a problem, got {v:?}"));
        assert!(!v.intact);
        (p.seq, p.kind, p.message.as_str())
    }

    fn get_text(conn: &Connection, seq: i64, column: &str) -> String {
        conn.query_row(
            &format!("SELECT {column} FROM audit WHERE seq = ?1"),
            [seq],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn set_text(conn: &Connection, seq: i64, column: &str, value: &str) {
        let n = conn
            .execute(
                &format!("UPDATE audit SET {column} = ?1 WHERE seq = ?2"),
                params![value, seq],
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    /// Change one ASCII digit or letter of `s` (the last one), keeping JSON
    /// and hex valid.
    fn flip(s: &str) -> String {
        let mut bytes = s.as_bytes().to_vec();
        let i = bytes
            .iter()
            .rposition(|b| b.is_ascii_alphanumeric())
            .unwrap();
        bytes[i] = match bytes[i] {
            b'9' => b'8',
            b'0'..=b'8' => bytes[i] + 1,
            b'f' => b'e',
            b'z' => b'y',
            b => b + 1,
        };
        String::from_utf8(bytes).unwrap()
    }

    /// Recompute the stored hash of `seq` from its stored fields, as someone
    /// hiding an edit would.
    fn rehash(conn: &Connection, seq: i64) {
        let record = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM audit WHERE seq = ?1"),
                [seq],
                read_record,
            )
            .unwrap();
        let Ok(record) = record else {
            panic!("unreadable row {seq}")
        };
        set_text(conn, seq, "hash", &record.hash_as(seq));
    }

    fn swap_rows(conn: &Connection, a: i64, b: i64) {
        conn.execute_batch(&format!(
            "UPDATE audit SET seq = -1000 WHERE seq = {a};
             UPDATE audit SET seq = {a} WHERE seq = {b};
             UPDATE audit SET seq = {b} WHERE seq = -1000;"
        ))
        .unwrap();
    }

    #[test]
    fn append_chains_entries_from_the_genesis_hash() {
        let mut conn = db();
        let first = push(&mut conn, 1);
        let second = push(&mut conn, 2);
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_hash, GENESIS);
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_hash, first.hash);
        assert!(is_hash(&first.hash) && is_hash(&second.hash));
        assert_ne!(first.hash, second.hash);
        // RFC 3339, UTC, microseconds.
        assert_eq!(first.at.len(), "2025-01-31T09:00:00.123456Z".len());
        assert!(first.at.ends_with('Z'));
        assert_eq!(list(&conn, 0, None).unwrap(), vec![first, second.clone()]);
        assert_eq!(
            head(&conn).unwrap(),
            Some(Anchor {
                seq: 2,
                hash: second.hash,
                pending: 0,
            })
        );
    }

    #[test]
    fn a_rolled_back_transaction_leaves_no_entry() {
        let mut conn = db();
        {
            let tx = conn.transaction().unwrap();
            append(
                &tx,
                NewEntry {
                    actor: "alice",
                    action: "deploy",
                    subject: "x",
                    digest: None,
                    detail: json!(null),
                },
            )
            .unwrap();
            // Dropped without commit: rolled back.
        }
        assert_eq!(head(&conn).unwrap(), None);
        assert_eq!(push(&mut conn, 1).seq, 1);
    }

    #[test]
    fn detail_is_stored_canonically_whatever_the_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2.5, "x"], "x": null}}"#).unwrap();
        let mut inner = serde_json::Map::new();
        inner.insert("x".into(), Value::Null);
        inner.insert("y".into(), json!([1, 2.5, "x"]));
        let mut outer = serde_json::Map::new();
        outer.insert("a".into(), Value::Object(inner));
        outer.insert("b".into(), json!(1));
        let b = Value::Object(outer);
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,2.5,"x"]},"b":1}"#
        );
        assert_eq!(canonical_json(&a), canonical_json(&b));
        // Keys sort by code point, not by how a locale would.
        assert_eq!(
            canonical_json(&json!({"é": 1, "z": 2, "Z": 3})),
            r#"{"Z":3,"z":2,"é":1}"#
        );
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        let s = "q\" b\\ / é \u{8}\t\n\u{c}\r \u{0}\u{1f}\u{7f} \u{2028}";
        let mut ours = String::new();
        push_json_str(&mut ours, s);
        assert_eq!(ours, serde_json::to_string(s).unwrap());
        assert_eq!(
            ours,
            "\"q\\\" b\\\\ / é \\b\\t\\n\\f\\r \\u0000\\u001f\u{7f} \u{2028}\""
        );
    }

    /// Pins the encoding of the module docs; the expected hash was computed
    /// independently with Python:
    /// `sha256((prev + json.dumps([seq, at, actor, action, subject, digest],
    /// ensure_ascii=False, separators=(",", ":"))[:-1] + "," + detail + "]")
    /// .encode())`.
    #[test]
    fn entry_hash_matches_the_documented_encoding() {
        let fields = Fields {
            seq: 7,
            at: "2025-01-31T09:00:00.123456Z",
            actor: "alice \"a\" é\n",
            action: "deploy",
            subject: "plugins/summarize.wasm",
            digest: None,
            detail: r#"{"grants":{"kv":true},"n":1.5}"#,
        };
        assert_eq!(
            entry_hash(GENESIS, &fields),
            "3db9833edf9e91f00d282b0df8377e7e9e98de63aaf48fed3f68d4537be961c1"
        );
    }

    #[test]
    fn an_untouched_log_is_intact() {
        let conn = chain(5);
        let anchor = head(&conn).unwrap().unwrap();
        let v = verify(&conn, Some(&anchor)).unwrap();
        assert!(v.intact, "{v:?}");
        assert_eq!(v.entries, 5);
        assert!(v.problem.is_none() && v.note.is_none());

        let v = verify(&conn, None).unwrap();
        assert!(v.intact);
        assert_eq!(v.entries, 5);
        assert!(v.note.unwrap().contains("no anchor"));
    }

    #[test]
    fn an_empty_log_without_an_anchor_is_intact() {
        let v = verify(&db(), None).unwrap();
        assert!(v.intact);
        assert_eq!(v.entries, 0);
        assert!(v.problem.is_none() && v.note.is_none());
    }

    #[test]
    fn an_empty_log_with_an_anchor_is_a_truncated_tail() {
        let anchor = head(&chain(3)).unwrap().unwrap();
        let v = verify(&db(), Some(&anchor)).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (1, ProblemKind::TruncatedTail));
        assert!(message.contains("entries 1..=3 were deleted"), "{message}");
        assert_eq!(v.entries, 0);
    }

    #[test]
    fn a_changed_byte_in_any_field_is_altered_at_that_entry() {
        for column in [
            "at",
            "actor",
            "action",
            "subject",
            "digest",
            "detail",
            "prev_hash",
            "hash",
        ] {
            let conn = chain(5);
            let changed = flip(&get_text(&conn, 3, column));
            set_text(&conn, 3, column, &changed);
            let v = verify(&conn, None).unwrap();
            let (seq, kind, message) = problem(&v);
            assert_eq!(
                (seq, kind),
                (3, ProblemKind::Altered),
                "{column}: {message}"
            );
            assert!(
                message.contains("entry 3 does not match its hash"),
                "{column}: {message}"
            );
            assert_eq!(v.entries, 2, "{column}");
        }
    }

    #[test]
    fn a_null_digest_set_afterwards_is_altered() {
        let mut conn = db();
        let tx = conn.transaction().unwrap();
        append(
            &tx,
            NewEntry {
                actor: "host",
                action: "start",
                subject: "evos",
                digest: None,
                detail: json!({}),
            },
        )
        .unwrap();
        tx.commit().unwrap();
        set_text(&conn, 1, "digest", "");
        let v = verify(&conn, None).unwrap();
        assert_eq!(problem(&v).1, ProblemKind::Altered);
    }

    #[test]
    fn an_altered_entry_with_a_recomputed_hash_is_caught_by_its_successor() {
        let conn = chain(5);
        let original = get_text(&conn, 3, "hash");
        set_text(&conn, 3, "detail", r#"{"grants":{},"n":3}"#);
        rehash(&conn, 3);
        let forged = get_text(&conn, 3, "hash");
        let v = verify(&conn, None).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (3, ProblemKind::Altered), "{message}");
        assert!(
            message.contains(&format!("entry 4 recorded entry 3's hash as {original}"))
                && message.contains(&forged)
                && message.contains("recomputed"),
            "{message}"
        );
        assert_eq!(v.entries, 2);
    }

    #[test]
    fn a_rewritten_first_entry_must_still_chain_from_genesis() {
        let conn = chain(3);
        set_text(&conn, 1, "prev_hash", &"1".repeat(64));
        rehash(&conn, 1);
        let v = verify(&conn, None).unwrap();
        assert_eq!(problem(&v).0, 1);
        assert_eq!(problem(&v).1, ProblemKind::Altered);
    }

    #[test]
    fn the_newest_entry_altered_and_rehashed_is_caught_only_by_the_anchor() {
        let conn = chain(5);
        let anchor = head(&conn).unwrap().unwrap();
        set_text(&conn, 5, "actor", "mallory");
        rehash(&conn, 5);
        // No later entry vouches for it: without the anchor this is invisible.
        assert!(verify(&conn, None).unwrap().intact);
        let v = verify(&conn, Some(&anchor)).unwrap();
        let (seq, kind, _) = problem(&v);
        assert_eq!((seq, kind), (5, ProblemKind::AnchorMismatch));
    }

    #[test]
    fn a_deleted_entry_in_the_middle_is_deleted() {
        let conn = chain(5);
        conn.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
        let v = verify(&conn, None).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (3, ProblemKind::Deleted));
        assert_eq!(message, "entry 4 follows entry 2: entry 3 was deleted");
        assert_eq!(v.entries, 2);

        conn.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        let v = verify(&conn, None).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (2, ProblemKind::Deleted));
        assert_eq!(
            message,
            "entry 4 follows entry 1: entries 2..=3 were deleted"
        );
    }

    #[test]
    fn a_deleted_first_entry_is_deleted() {
        let conn = chain(3);
        conn.execute("DELETE FROM audit WHERE seq = 1", []).unwrap();
        let v = verify(&conn, None).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (1, ProblemKind::Deleted));
        assert!(message.contains("starts at entry 2"), "{message}");
    }

    #[test]
    fn swapped_entries_are_reordered() {
        // Renumbering two rows exchanges everything but seq.
        let conn = chain(6);
        swap_rows(&conn, 2, 5);
        let v = verify(&conn, None).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (2, ProblemKind::Reordered), "{message}");
        assert!(message.contains("is entry 5"), "{message}");
        assert_eq!(v.entries, 1);

        // Neighbours, at the end of the log.
        let conn = chain(6);
        swap_rows(&conn, 5, 6);
        let v = verify(&conn, None).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (5, ProblemKind::Reordered), "{message}");
        assert!(message.contains("is entry 6"), "{message}");
    }

    #[test]
    fn contents_exchanged_between_entries_are_reordered() {
        let conn = chain(5);
        let payload = ["at", "actor", "action", "subject", "digest", "detail"];
        let read = |seq| payload.map(|c| get_text(&conn, seq, c));
        let (two, four) = (read(2), read(4));
        for (i, column) in payload.iter().enumerate() {
            set_text(&conn, 2, column, &four[i]);
            set_text(&conn, 4, column, &two[i]);
        }
        let v = verify(&conn, None).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (2, ProblemKind::Reordered), "{message}");
        assert!(message.contains("those of entry 4"), "{message}");
    }

    #[test]
    fn an_entry_renumbered_into_a_gap_is_reordered() {
        let conn = chain(5);
        conn.execute("UPDATE audit SET seq = 10 WHERE seq = 3", [])
            .unwrap();
        let v = verify(&conn, None).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (3, ProblemKind::Reordered), "{message}");
        assert!(message.contains("entry 3 is stored at seq 10"), "{message}");

        let conn = chain(3);
        conn.execute("UPDATE audit SET seq = 0 WHERE seq = 1", [])
            .unwrap();
        let v = verify(&conn, None).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (0, ProblemKind::Reordered), "{message}");
        assert!(message.contains("is entry 1"), "{message}");
    }

    #[test]
    fn deleted_newest_entries_are_a_truncated_tail() {
        let conn = chain(6);
        let anchor = head(&conn).unwrap().unwrap();
        conn.execute("DELETE FROM audit WHERE seq >= 5", [])
            .unwrap();
        // The chain that is left is consistent: only the anchor shows the loss.
        assert!(verify(&conn, None).unwrap().intact);
        let v = verify(&conn, Some(&anchor)).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (5, ProblemKind::TruncatedTail));
        assert_eq!(
            message,
            "the log ends at entry 4 but the anchor records entry 6: entries 5..=6 were deleted"
        );
        assert_eq!(v.entries, 4);
    }

    #[test]
    fn an_anchor_naming_another_hash_is_a_mismatch() {
        let conn = chain(4);
        let anchor = Anchor {
            seq: 3,
            hash: "ab".repeat(32),
            pending: 0,
        };
        let v = verify(&conn, Some(&anchor)).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (3, ProblemKind::AnchorMismatch));
        assert!(message.contains(&get_text(&conn, 3, "hash")), "{message}");

        let anchor = Anchor {
            seq: 4,
            hash: "ab".repeat(32),
            pending: 0,
        };
        let v = verify(&conn, Some(&anchor)).unwrap();
        assert_eq!(problem(&v).0, 4);
        assert_eq!(problem(&v).1, ProblemKind::AnchorMismatch);
    }

    #[test]
    fn a_group_commit_announced_in_the_anchor_may_be_unanchored_after_a_crash() {
        let mut conn = chain(4);
        let mut anchor = head(&conn).unwrap().unwrap();
        anchor.pending = 3;
        // The group committed three entries, then the process died.
        push(&mut conn, 5);
        push(&mut conn, 6);
        push(&mut conn, 7);
        let v = verify(&conn, Some(&anchor)).unwrap();
        assert!(v.intact, "{v:?}");
        assert!(
            v.note.unwrap().contains("entries 5..=7 were committed"),
            "names the unanchored entries"
        );
        // One more than announced was appended behind the host's back.
        push(&mut conn, 8);
        let v = verify(&conn, Some(&anchor)).unwrap();
        assert_eq!(problem(&v).1, ProblemKind::AnchorMismatch);
        assert!(problem(&v).2.contains("at most 3 unanchored"), "{v:?}");
    }

    #[test]
    fn one_committed_but_unanchored_entry_is_a_torn_write_not_tampering() {
        let mut conn = chain(4);
        let anchor = head(&conn).unwrap().unwrap();
        push(&mut conn, 5); // then the process died before write_anchor
        let v = verify(&conn, Some(&anchor)).unwrap();
        assert!(v.intact, "{v:?}");
        assert_eq!(v.entries, 5);
        let note = v.note.unwrap();
        assert!(
            note.contains("entry 5 was committed but the anchor still records entry 4"),
            "{note}"
        );

        // Same from an empty log whose anchor was never written.
        let mut conn = db();
        push(&mut conn, 1);
        let genesis = Anchor {
            seq: 0,
            hash: GENESIS.into(),
            pending: 0,
        };
        assert!(verify(&conn, Some(&genesis)).unwrap().intact);
    }

    #[test]
    fn more_than_one_unanchored_entry_is_a_mismatch() {
        let mut conn = chain(3);
        let anchor = head(&conn).unwrap().unwrap();
        push(&mut conn, 4);
        push(&mut conn, 5);
        let v = verify(&conn, Some(&anchor)).unwrap();
        let (seq, kind, message) = problem(&v);
        assert_eq!((seq, kind), (4, ProblemKind::AnchorMismatch));
        assert!(
            message.contains("entries 4..=5 were never anchored"),
            "{message}"
        );
    }

    #[test]
    fn malformed_rows_are_malformed() {
        let cases: [(&str, &str); 5] = [
            ("detail = 'not json'", "`detail` is not JSON"),
            ("hash = 'abc'", "`hash` is `abc`"),
            ("hash = upper(hash)", "not 64 lowercase hex"),
            ("actor = X'00ff'", "`actor` holds a blob"),
            (
                "subject = CAST(X'ff' AS TEXT)",
                "`subject` is not valid UTF-8",
            ),
        ];
        for (set, expected) in cases {
            let conn = chain(4);
            conn.execute(&format!("UPDATE audit SET {set} WHERE seq = 2"), [])
                .unwrap();
            let v = verify(&conn, None).unwrap();
            let (seq, kind, message) = problem(&v);
            assert_eq!((seq, kind), (2, ProblemKind::Malformed), "{set}: {message}");
            assert!(message.contains(expected), "{set}: {message}");
            assert_eq!(v.entries, 1);
        }
    }

    #[test]
    fn append_refuses_to_chain_onto_a_malformed_head() {
        let mut conn = chain(2);
        set_text(&conn, 2, "hash", "nope");
        let tx = conn.transaction().unwrap();
        let err = append(
            &tx,
            NewEntry {
                actor: "a",
                action: "b",
                subject: "c",
                digest: None,
                detail: json!(1),
            },
        )
        .unwrap_err();
        assert!(matches!(err, AuditError::Malformed { seq: 2, .. }), "{err}");
    }

    #[test]
    fn list_filters_by_seq_and_time() {
        let mut conn = db();
        let entries: Vec<Entry> = (1..=4).map(|i| push(&mut conn, i)).collect();
        assert_eq!(list(&conn, 2, None).unwrap(), entries[2..].to_vec());
        assert_eq!(list(&conn, 4, None).unwrap(), vec![]);
        assert_eq!(list(&conn, 0, Some("1h")).unwrap(), entries);
        assert_eq!(
            list(&conn, 1, Some("2000-01-01")).unwrap(),
            entries[1..].to_vec()
        );
        assert_eq!(
            list(&conn, 0, Some("9000-01-01T00:00:00Z")).unwrap(),
            vec![]
        );
        // Exactly at an entry's time includes it.
        set_text(&conn, 3, "at", "2030-06-01T12:00:00.000000Z");
        set_text(&conn, 4, "at", "2030-06-01T12:00:00.000001Z");
        let since = list(&conn, 0, Some("2030-06-01T14:00:00+02:00")).unwrap();
        assert_eq!(since.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
        let err = list(&conn, 0, Some("yesterday")).unwrap_err();
        assert!(matches!(err, AuditError::Since { .. }), "{err}");
    }

    #[test]
    fn list_reports_an_unreadable_detail() {
        let conn = chain(2);
        set_text(&conn, 2, "detail", "{");
        let err = list(&conn, 0, None).unwrap_err();
        assert!(matches!(err, AuditError::Malformed { seq: 2, .. }), "{err}");
    }

    #[test]
    fn since_accepts_rfc3339_with_offsets_dates_and_durations() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s: &str| parse_since(s, now).unwrap();
        let utc = at("2025-01-31T09:00:00Z");
        assert_eq!(timestamp(utc).unwrap(), "2025-01-31T09:00:00.000000Z");
        assert_eq!(at("2025-01-31T10:00:00+01:00"), utc);
        assert_eq!(at("2025-01-31t05:30:00.000-03:30"), utc);
        assert_eq!(at("2025-01-31 09:00:00"), utc);
        assert_eq!(
            timestamp(at("2025-01-31")).unwrap(),
            "2025-01-31T00:00:00.000000Z"
        );
        assert_eq!(at("1h"), now - Duration::from_secs(3600));
        assert_eq!(at(" 1h 30m "), now - Duration::from_secs(5400));
        assert_eq!(at("100years"), UNIX_EPOCH);
        for bad in [
            "",
            "soon",
            "2025-13-01",
            "2025-01-31T09:00:00+1:00",
            "2025-01-31T09:00:00+01:99",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("evos-audit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_anchor_round_trips_through_its_file() {
        let dir = scratch_dir("anchor");
        let path = dir.join("audit.anchor");
        assert_eq!(read_anchor(&path).unwrap(), None);
        let first = Anchor {
            seq: 3,
            hash: "0a".repeat(32),
            pending: 0,
        };
        write_anchor(&path, &first).unwrap();
        assert_eq!(read_anchor(&path).unwrap(), Some(first));
        let second = Anchor {
            seq: 4,
            hash: "1b".repeat(32),
            pending: 0,
        };
        write_anchor(&path, &second).unwrap();
        assert_eq!(read_anchor(&path).unwrap(), Some(second));
        // The anchor is one file, rewritten in place.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("audit.anchor")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_slot_leaves_the_previous_anchor_and_the_older_form_is_read() {
        let dir = scratch_dir("torn-anchor");
        let path = dir.join("audit.anchor");
        let anchor = |seq: i64, h: &str| Anchor {
            seq,
            hash: h.repeat(32),
            pending: 0,
        };
        write_anchor(&path, &anchor(1, "0a")).unwrap();
        write_anchor(&path, &anchor(2, "0b")).unwrap();
        let whole = fs::read(&path).unwrap();
        assert_eq!(whole.len(), 2 * SLOT);
        // The third write goes to the slot of the first; tear it halfway.
        write_anchor(&path, &anchor(3, "0c")).unwrap();
        let third = fs::read(&path).unwrap();
        let slot = third
            .chunks(SLOT)
            .position(|c| String::from_utf8_lossy(c).contains(&"0c".repeat(32)))
            .unwrap();
        let mut torn = third.clone();
        torn[slot * SLOT + 40..(slot + 1) * SLOT]
            .copy_from_slice(&whole[slot * SLOT + 40..(slot + 1) * SLOT]);
        fs::write(&path, &torn).unwrap();
        assert_eq!(read_anchor(&path).unwrap(), Some(anchor(2, "0b")));
        // A file in the older plain JSON form is read, then upgraded.
        fs::write(
            &path,
            format!(r#"{{"seq":7,"hash":"{}"}}"#, "0d".repeat(32)),
        )
        .unwrap();
        assert_eq!(read_anchor(&path).unwrap(), Some(anchor(7, "0d")));
        write_anchor(&path, &anchor(8, "0e")).unwrap();
        assert_eq!(read_anchor(&path).unwrap(), Some(anchor(8, "0e")));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_anchor_file_is_an_error() {
        let dir = scratch_dir("bad-anchor");
        let path = dir.join("audit.anchor");
        for content in [
            "garbage",
            r#"{"seq": 1}"#,
            r#"{"seq": -1, "hash": "0000000000000000000000000000000000000000000000000000000000000000"}"#,
            r#"{"seq": 1, "hash": "xyz"}"#,
            r#"{"seq": 1, "hash": "0000000000000000000000000000000000000000000000000000000000000000", "extra": 1}"#,
        ] {
            fs::write(&path, content).unwrap();
            let err = read_anchor(&path).unwrap_err();
            assert!(matches!(err, AuditError::Anchor { .. }), "{content}: {err}");
        }
        let err = write_anchor(
            &dir.join("missing").join("audit.anchor"),
            &Anchor {
                seq: 1,
                hash: GENESIS.into(),
                pending: 0,
            },
        )
        .unwrap_err();
        assert!(matches!(err, AuditError::Io { .. }), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verification_serializes_kinds_in_kebab_case() {
        let conn = chain(3);
        let anchor = Anchor {
            seq: 5,
            hash: GENESIS.into(),
            pending: 0,
        };
        let v = serde_json::to_value(verify(&conn, Some(&anchor)).unwrap()).unwrap();
        assert_eq!(v["problem"]["kind"], "truncated-tail");
        assert_eq!(v["intact"], false);
    }
}
