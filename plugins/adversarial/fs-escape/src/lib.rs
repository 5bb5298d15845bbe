//! Adversarial agent `fs-escape`: probes the filesystem sandbox.
//!
//! Its manifest grants one read-only directory, mounted at `/sandbox`. The
//! agent first reads `/sandbox/readme.txt` (the granted case, which must
//! work), then tries to get out of or write into the sandbox:
//!
//! - reads: `/sandbox/../Cargo.toml`, `../Cargo.toml`, `/etc/passwd`,
//!   `/sandbox/escape/Cargo.toml` and `/sandbox/escape` (a symlink a test may
//!   place in the sandbox, pointing outside it; a directory target is listed);
//! - writes: create `/sandbox/new.txt`, append to and truncate
//!   `/sandbox/readme.txt`, create the directory `/sandbox/newdir`.
//!
//! The event payload may replace either list: `{"read": ["/path", ...],
//! "write": ["/path", {"op": "create"|"append"|"truncate"|"mkdir", "path": "/path"}, ...]}`
//! (a bare write path means `create`).
//!
//! Write probes are non-destructive: append and truncate only open the file
//! for writing (truncation keeps the current length), and anything created is
//! removed again. Gaining the access is what counts as an escape.
//!
//! Outcome: one `fs-report` action whose payload is
//! `{"granted_read": "...", "attempts": [{"op", "path", "result"}]}` with each
//! result `succeeded` or `refused: <error kind>: <message>`; if any attempt
//! succeeded the call fails with `internal("sandbox escape: ...")` instead.

use std::fs::{self, OpenOptions};
use std::io;

use evos_sdk::{Action, Agent, Error, Event};
use serde::{Deserialize, Serialize};

const GRANTED_FILE: &str = "/sandbox/readme.txt";

const DEFAULT_READS: [&str; 5] = [
    "/sandbox/../Cargo.toml",
    "../Cargo.toml",
    "/etc/passwd",
    "/sandbox/escape/Cargo.toml",
    "/sandbox/escape",
];

const DEFAULT_WRITES: [(WriteOp, &str); 4] = [
    (WriteOp::Create, "/sandbox/new.txt"),
    (WriteOp::Append, "/sandbox/readme.txt"),
    (WriteOp::Truncate, "/sandbox/readme.txt"),
    (WriteOp::Mkdir, "/sandbox/newdir"),
];

#[derive(Clone, Copy, Deserialize, Debug)]
#[serde(rename_all = "lowercase")]
enum WriteOp {
    Create,
    Append,
    Truncate,
    Mkdir,
}

impl WriteOp {
    fn name(self) -> &'static str {
        match self {
            WriteOp::Create => "create",
            WriteOp::Append => "append",
            WriteOp::Truncate => "truncate",
            WriteOp::Mkdir => "mkdir",
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WriteTarget {
    Path(String),
    Op { op: WriteOp, path: String },
}

#[derive(Deserialize, Default)]
struct Probe {
    read: Option<Vec<String>>,
    write: Option<Vec<WriteTarget>>,
}

#[derive(Serialize)]
struct Attempt {
    op: &'static str,
    path: String,
    result: String,
}

impl Attempt {
    fn new(op: &'static str, path: &str, outcome: io::Result<()>) -> Attempt {
        let result = match outcome {
            Ok(()) => "succeeded".to_string(),
            Err(e) => format!("refused: {:?}: {e}", e.kind()),
        };
        Attempt {
            op,
            path: path.to_string(),
            result,
        }
    }

    fn succeeded(&self) -> bool {
        self.result == "succeeded"
    }
}

/// Read a file, or list a directory, at `path`.
fn try_read(path: &str) -> io::Result<()> {
    if fs::metadata(path)?.is_dir() {
        fs::read_dir(path)?.try_for_each(|entry| entry.map(drop))
    } else {
        fs::read(path).map(drop)
    }
}

fn try_write(op: WriteOp, path: &str) -> io::Result<()> {
    match op {
        WriteOp::Create => {
            OpenOptions::new().write(true).create_new(true).open(path)?;
            // Best-effort cleanup: the access was gained, the file need not stay.
            let _ = fs::remove_file(path);
            Ok(())
        }
        WriteOp::Append => OpenOptions::new().append(true).open(path).map(drop),
        WriteOp::Truncate => {
            let file = OpenOptions::new().write(true).open(path)?;
            let len = file.metadata()?.len();
            file.set_len(len)
        }
        WriteOp::Mkdir => {
            fs::create_dir(path)?;
            let _ = fs::remove_dir(path);
            Ok(())
        }
    }
}

struct FsEscape;

impl Agent for FsEscape {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        let probe: Probe = if event.payload.trim().is_empty() {
            Probe::default()
        } else {
            evos_sdk::json::parse(&event.payload)?
        };
        let granted_read = fs::read_to_string(GRANTED_FILE).map_err(|e| {
            Error::Internal(format!(
                "granted read of {GRANTED_FILE} failed: {:?}: {e}",
                e.kind()
            ))
        })?;

        let reads: Vec<String> = probe
            .read
            .unwrap_or_else(|| DEFAULT_READS.iter().map(|p| p.to_string()).collect());
        let writes: Vec<(WriteOp, String)> = match probe.write {
            Some(targets) => targets
                .into_iter()
                .map(|t| match t {
                    WriteTarget::Path(path) => (WriteOp::Create, path),
                    WriteTarget::Op { op, path } => (op, path),
                })
                .collect(),
            None => DEFAULT_WRITES
                .iter()
                .map(|(op, p)| (*op, p.to_string()))
                .collect(),
        };

        let mut attempts: Vec<Attempt> = reads
            .iter()
            .map(|path| Attempt::new("read", path, try_read(path)))
            .collect();
        attempts.extend(
            writes
                .iter()
                .map(|(op, path)| Attempt::new(op.name(), path, try_write(*op, path))),
        );

        let escapes: Vec<String> = attempts
            .iter()
            .filter(|a| a.succeeded())
            .map(|a| format!("{} {}", a.op, a.path))
            .collect();
        if !escapes.is_empty() {
            return Err(Error::Internal(format!(
                "sandbox escape: {} succeeded",
                escapes.join(", ")
            )));
        }

        let payload = serde_json::json!({
            "granted_read": granted_read,
            "attempts": attempts,
        });
        let rationale = format!(
            "granted read of {GRANTED_FILE} succeeded; all {} escape attempts were refused",
            attempts.len()
        );
        Ok(vec![Action::new(
            "fs-report",
            &event,
            &payload,
            &rationale,
        )?])
    }
}

evos_sdk::export_agent!(FsEscape);
