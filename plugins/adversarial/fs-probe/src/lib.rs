//! Adversarial agent `fs-probe`: drives single `wasi:filesystem` operations
//! chosen by the caller and reports what the host let through.
//!
//! Where `fs-escape` goes through Rust's `std::fs` (and so through
//! wasi-libc's path handling), this probe calls `wasi:filesystem` directly,
//! so a test controls the exact path string (`..`, absolute paths, trailing
//! slashes) and flags (truncate without write, writes through a descriptor
//! opened read-only) that reach the host.
//!
//! The event payload is `{"ops": [op, ...]}`, each op an object:
//!
//! | `op`          | fields                 | what it does                                        |
//! |---------------|------------------------|-----------------------------------------------------|
//! | `read`        | `path`                 | open for reading (following symlinks), read it all  |
//! | `stat`        | `path`, `follow`?      | `stat-at`; value is `<type> <size>`                 |
//! | `readdir`     | `path`                 | open as a directory, list its entries (sorted)      |
//! | `readlink`    | `path`                 | `readlink-at`; value is the link's target           |
//! | `create`      | `path`, `data`?        | open with create+exclusive, write `data`            |
//! | `write`       | `path`, `data`?        | open with create+truncate for writing, write `data` |
//! | `open-write`  | `path`                 | open an existing file for writing                   |
//! | `truncate`    | `path`                 | open with the truncate flag but only read access    |
//! | `append`      | `path`, `data`?        | open for writing, append `data` through a stream    |
//! | `set-size`    | `path`                 | open for reading, then `set-size(0)`                |
//! | `write-fd`    | `path`, `data`?        | open for reading, then write `data` at offset 0     |
//! | `set-times`   | `path`                 | `set-times-at` (now, now)                           |
//! | `set-times-fd`| `path`                 | open for reading, then `set-times` (now, now)       |
//! | `mkdir`       | `path`                 | `create-directory-at`                               |
//! | `rmdir`       | `path`                 | `remove-directory-at`                               |
//! | `remove`      | `path`                 | `unlink-file-at`                                    |
//! | `rename`      | `path`, `to`           | `rename-at` from `path` to `to`                     |
//! | `link`        | `path`, `to`           | `link-at`: a hard link `to` of the file `path`      |
//! | `symlink`     | `path`, `target`       | `symlink-at`: a symlink at `path` holding `target`  |
//!
//! Paths are guest paths. A path that starts with a preopen's name (`/ro`,
//! `/ro/x`) is opened relative to that preopen with the rest of the string
//! kept as written (`/ro/link/` stays `link/`, `/ro/../x` is `../x`); any
//! other path (`/etc/passwd`) is handed as written to the first preopen, so
//! the host sees the absolute path.
//!
//! Outcome: one `fs-report` action whose payload is `{"results": [{"op",
//! "path", "to"?, "result"}]}` with each result `ok`, `ok: <value>` or
//! `refused: <wasi error code>` (`refused: not-permitted`). The probe never fails the call itself, so
//! a test sees every result.

use evos_sdk::{Action, Agent, Error, Event};
use serde::{Deserialize, Serialize};
use wasi::filesystem::preopens::get_directories;
use wasi::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, NewTimestamp, OpenFlags, PathFlags,
};

#[derive(Deserialize)]
struct Probe {
    ops: Vec<Op>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Op {
    op: String,
    path: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    follow: Option<bool>,
}

#[derive(Serialize)]
struct Outcome {
    op: String,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    result: String,
}

/// A failed step: a WASI error code, or the probe's own complaint.
enum Fail {
    Wasi(ErrorCode),
    Probe(String),
}

impl From<ErrorCode> for Fail {
    fn from(e: ErrorCode) -> Fail {
        Fail::Wasi(e)
    }
}

type Res<T> = Result<T, Fail>;

struct Preopens(Vec<(Descriptor, String)>);

impl Preopens {
    /// The preopen `path` lies under, and the rest of the path as written.
    fn locate<'a>(&self, path: &'a str) -> Res<(&Descriptor, &'a str)> {
        let best = self
            .0
            .iter()
            .filter_map(|(d, name)| {
                let name = name.trim_end_matches('/');
                let rest = path.strip_prefix(name)?;
                if rest.is_empty() {
                    Some((d, name.len(), "."))
                } else {
                    rest.strip_prefix('/').map(|r| {
                        let r = if r.is_empty() { "./" } else { r };
                        (d, name.len(), r)
                    })
                }
            })
            .max_by_key(|(_, len, _)| *len);
        match best {
            Some((d, _, rest)) => Ok((d, rest)),
            None => match self.0.first() {
                Some((d, _)) => Ok((d, path)),
                None => Err(Fail::Probe("no preopens".into())),
            },
        }
    }
}

fn follow(op: &Op) -> PathFlags {
    if op.follow.unwrap_or(true) {
        PathFlags::SYMLINK_FOLLOW
    } else {
        PathFlags::empty()
    }
}

fn open(p: &Preopens, path: &str, oflags: OpenFlags, flags: DescriptorFlags) -> Res<Descriptor> {
    let (dir, rel) = p.locate(path)?;
    Ok(dir.open_at(PathFlags::SYMLINK_FOLLOW, rel, oflags, flags)?)
}

fn read_all(file: &Descriptor) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let (chunk, end) = file.read(64 * 1024, out.len() as u64)?;
        out.extend_from_slice(&chunk);
        if end || chunk.is_empty() || out.len() > 1 << 20 {
            return Ok(out);
        }
    }
}

fn write_all(file: &Descriptor, data: &[u8]) -> Res<()> {
    let mut at = 0usize;
    while at < data.len() {
        let n = file.write(&data[at..], at as u64)?;
        if n == 0 {
            return Err(Fail::Probe("write made no progress".into()));
        }
        at += n as usize;
    }
    Ok(())
}

fn second<'a>(op: &'a Op, field: &str, value: &'a Option<String>) -> Res<&'a str> {
    value
        .as_deref()
        .ok_or_else(|| Fail::Probe(format!("`{}` needs `{field}`", op.op)))
}

/// Run one op; `Some(value)` for ops that return something.
fn run(p: &Preopens, op: &Op) -> Res<Option<String>> {
    let data = op.data.as_deref().unwrap_or("probe").as_bytes();
    let read = DescriptorFlags::READ;
    let write = DescriptorFlags::WRITE;
    let none = OpenFlags::empty();
    match op.op.as_str() {
        "read" => {
            let file = open(p, &op.path, none, read)?;
            let bytes = read_all(&file)?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        "stat" => {
            let (dir, rel) = p.locate(&op.path)?;
            let stat = dir.stat_at(follow(op), rel)?;
            let kind = match stat.type_ {
                DescriptorType::Directory => "directory",
                DescriptorType::RegularFile => "file",
                DescriptorType::SymbolicLink => "symlink",
                _ => "other",
            };
            Ok(Some(format!("{kind} {}", stat.size)))
        }
        "readdir" => {
            let dir = open(p, &op.path, OpenFlags::DIRECTORY, read)?;
            let entries = dir.read_directory()?;
            let mut names = Vec::new();
            while let Some(entry) = entries.read_directory_entry()? {
                names.push(entry.name);
            }
            names.sort();
            Ok(Some(names.join(",")))
        }
        "readlink" => {
            let (dir, rel) = p.locate(&op.path)?;
            Ok(Some(dir.readlink_at(rel)?))
        }
        "create" => {
            let file = open(p, &op.path, OpenFlags::CREATE | OpenFlags::EXCLUSIVE, write)?;
            write_all(&file, data).map(|()| None)
        }
        "write" => {
            let file = open(p, &op.path, OpenFlags::CREATE | OpenFlags::TRUNCATE, write)?;
            write_all(&file, data).map(|()| None)
        }
        "open-write" => open(p, &op.path, none, write).map(|_| None),
        "truncate" => open(p, &op.path, OpenFlags::TRUNCATE, read).map(|_| None),
        "append" => {
            let file = open(p, &op.path, none, write)?;
            let stream = file.append_via_stream()?;
            stream
                .blocking_write_and_flush(data)
                .map_err(|e| Fail::Probe(format!("append stream: {e:?}")))?;
            Ok(None)
        }
        "set-size" => {
            let file = open(p, &op.path, none, read)?;
            file.set_size(0)?;
            Ok(None)
        }
        "write-fd" => {
            let file = open(p, &op.path, none, read)?;
            write_all(&file, data).map(|()| None)
        }
        "set-times" => {
            let (dir, rel) = p.locate(&op.path)?;
            dir.set_times_at(follow(op), rel, NewTimestamp::Now, NewTimestamp::Now)?;
            Ok(None)
        }
        "set-times-fd" => {
            let file = open(p, &op.path, none, read)?;
            file.set_times(NewTimestamp::Now, NewTimestamp::Now)?;
            Ok(None)
        }
        "mkdir" => {
            let (dir, rel) = p.locate(&op.path)?;
            dir.create_directory_at(rel)?;
            Ok(None)
        }
        "rmdir" => {
            let (dir, rel) = p.locate(&op.path)?;
            dir.remove_directory_at(rel)?;
            Ok(None)
        }
        "remove" => {
            let (dir, rel) = p.locate(&op.path)?;
            dir.unlink_file_at(rel)?;
            Ok(None)
        }
        "rename" | "link" => {
            let to = second(op, "to", &op.to)?;
            let (from_dir, from_rel) = p.locate(&op.path)?;
            let (to_dir, to_rel) = p.locate(to)?;
            if op.op == "rename" {
                from_dir.rename_at(from_rel, to_dir, to_rel)?;
            } else {
                from_dir.link_at(PathFlags::empty(), from_rel, to_dir, to_rel)?;
            }
            Ok(None)
        }
        "symlink" => {
            let target = second(op, "target", &op.target)?;
            let (dir, rel) = p.locate(&op.path)?;
            dir.symlink_at(target, rel)?;
            Ok(None)
        }
        other => Err(Fail::Probe(format!("unknown op `{other}`"))),
    }
}

struct FsProbe;

impl Agent for FsProbe {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        let probe: Probe = evos_sdk::json::parse(&event.payload)?;
        let preopens = Preopens(get_directories());
        let results: Vec<Outcome> = probe
            .ops
            .iter()
            .map(|op| {
                let result = match run(&preopens, op) {
                    Ok(None) => "ok".to_string(),
                    Ok(Some(value)) => format!("ok: {value}"),
                    Err(Fail::Wasi(code)) => format!("refused: {}", code.name()),
                    Err(Fail::Probe(message)) => format!("probe error: {message}"),
                };
                Outcome {
                    op: op.op.clone(),
                    path: op.path.clone(),
                    to: op.to.clone().or_else(|| op.target.clone()),
                    result,
                }
            })
            .collect();
        let payload = serde_json::json!({ "results": results });
        Ok(vec![Action::new(
            "fs-report",
            &event,
            &payload,
            "filesystem probe results",
        )?])
    }
}

evos_sdk::export_agent!(FsProbe);
