//! `files`: directories preopened for a plugin, read-only or read-write.
//!
//! A plugin sees only the preopened directories, under the guest paths the
//! manifest gives; WASI's capability-based filesystem refuses `..`, absolute
//! paths and symlinks that leave a preopen (including trailing-slash
//! symlink chains, GHSA-vqjp-4c8c-hfgg, fixed in the wasmtime-wasi we use).
//!
//! Read-only is wasmtime-wasi's `FsPerms::ReadOnly`: since wasmtime 48 one
//! permission covers the preopen and every descriptor opened under it
//! (there are no separate directory and file permissions to get half
//! right). It refuses creating, writing, truncating (also a truncate flag
//! without write access, GHSA-2r75-cxrj-cmph), appending, resizing,
//! setting times, making or removing directories, symlinks and files, and
//! hard links or renames that start or end in a read-only preopen or cross
//! between preopens of different modes (GHSA-4ch3-9j33-3pmj).
//!
//! What this module adds:
//! - the manifest refuses preopens of `/`, `/proc`, `/dev`, `/sys` (and
//!   anything under them), of files, and of host paths with a symlink in
//!   any component the manifest wrote, which would hand out whatever the
//!   link points at rather than what the reviewer read;
//! - each call opens the granted directory anew and checks it is still the
//!   directory the manifest resolved (`CheckedDir`), so a directory
//!   swapped for a symlink after load is not preopened.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use wasmtime_wasi::FsPerms;

use super::{CallContext, CallSetup, Capability, Grants};
use crate::manifest::Manifest;
use crate::{Error, Result};

/// The `files` capability: preopens in the call's WASI context.
pub struct Files;

impl Capability for Files {
    const NAME: &'static str = "files";
    const INTERFACES: &'static [&'static str] = &["wasi:filesystem/preopens"];
    const PRIVILEGED: bool = false;
    const EXAMPLE: &'static str = "files = [{ host = \"data\", guest = \"/data\", mode = \"ro\" }]";
    type State = ();

    fn granted(m: &Manifest) -> bool {
        !m.capabilities.files.is_empty()
    }

    fn state(_call: &CallContext<'_>) {}

    fn prepare_wasi(grants: &Grants, setup: &mut CallSetup<'_>) -> Result<()> {
        prepare(grants, setup)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Ro,
    Rw,
}

/// One preopened directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGrant {
    /// Host directory as written (relative to the manifest's directory).
    host: PathBuf,
    /// Absolute path the plugin sees.
    #[serde(deserialize_with = "guest_path")]
    pub guest: String,
    pub mode: Mode,
    /// The host directory, resolved and checked at load.
    #[serde(skip)]
    resolved: PathBuf,
}

fn guest_path<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let p = Path::new(&s);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(serde::de::Error::custom(format!(
            "guest path {s:?} must be absolute and free of `..`, e.g. \"/data\""
        )));
    }
    Ok(s)
}

/// Host paths no manifest may preopen, nor any directory inside them: each
/// hands out the host itself (processes, devices, kernel state).
const FORBIDDEN: &[&str] = &["/proc", "/dev", "/sys"];

impl FileGrant {
    pub fn host_display(&self) -> String {
        self.host.display().to_string()
    }

    /// The checked host directory.
    pub fn host_path(&self) -> &Path {
        &self.resolved
    }

    /// Resolve the host path against `base` and check it is a real directory
    /// evos may hand out.
    ///
    /// Every component the manifest wrote must be a real directory, not a
    /// symlink: a symlink (at the end or in the middle, `link/sub`) makes
    /// the grant mean whatever the link points at when a call starts, which
    /// the manifest's reviewer never saw. Components of `base` itself (where
    /// the manifest lives) may be symlinks; the manifest did not write them.
    /// The canonical directory must not be `/` or lie under [`FORBIDDEN`].
    pub(crate) fn resolve(&mut self, base: &Path) -> std::result::Result<(), String> {
        let shown = self.host.display();
        let forbidden = |canonical: &Path| {
            (canonical == Path::new("/") || FORBIDDEN.iter().any(|f| canonical.starts_with(f)))
                .then(|| format!(
                    "files: preopening {} would expose the host system (/, /proc, /dev and /sys are never granted); grant a dedicated data directory, e.g. host = \"data/<plugin>\"",
                    canonical.display()
                ))
        };
        // Where the path leads decides first: `/proc/self` is refused as
        // part of /proc, not for being a symlink.
        if let Ok(canonical) = base.join(&self.host).canonicalize()
            && let Some(refused) = forbidden(&canonical)
        {
            return Err(refused);
        }
        let mut walked = if self.host.is_absolute() {
            PathBuf::from("/")
        } else {
            base.canonicalize().map_err(|e| {
                format!(
                    "files: the manifest's directory {} cannot be resolved: {e}",
                    base.display()
                )
            })?
        };
        let mut written = if self.host.is_absolute() {
            PathBuf::from("/")
        } else {
            PathBuf::new()
        };
        for component in self.host.components() {
            match component {
                Component::RootDir | Component::Prefix(_) | Component::CurDir => continue,
                // Every component walked so far is a real directory, so
                // `..` is its real parent.
                Component::ParentDir => {
                    walked.pop();
                    written.push("..");
                    continue;
                }
                Component::Normal(name) => {
                    walked.push(name);
                    written.push(name);
                }
            }
            let meta = std::fs::symlink_metadata(&walked).map_err(|e| {
                format!(
                    "files: host directory {shown:?} ({}) cannot be used: {e}; create the directory or correct `host`",
                    walked.display()
                )
            })?;
            if meta.file_type().is_symlink() {
                let real = walked
                    .canonicalize()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|e| format!("nowhere usable: {e}"));
                let whole = if written == self.host {
                    format!("host path {shown:?} is a symlink (to {real})")
                } else {
                    format!(
                        "host path {shown:?} goes through the symlink {:?} (to {real})",
                        written.display()
                    )
                };
                return Err(format!(
                    "files: {whole}; name the real directory instead, without symlinks"
                ));
            }
            if !meta.is_dir() {
                return Err(format!(
                    "files: host path {shown:?} ({}) is not a directory; grant the directory that holds the files",
                    walked.display()
                ));
            }
        }
        let canonical = walked
            .canonicalize()
            .map_err(|e| format!("files: cannot resolve {shown:?}: {e}"))?;
        if let Some(refused) = forbidden(&canonical) {
            return Err(refused);
        }
        self.resolved = canonical;
        Ok(())
    }
}

/// Refuse grant sets that say one thing and mean another: two grants at one
/// guest path, and a read-only directory inside a read-write one (the
/// plugin could write it through the read-write preopen). Called once all
/// host paths are resolved.
pub(crate) fn check_grants(grants: &[FileGrant]) -> std::result::Result<(), String> {
    for (i, a) in grants.iter().enumerate() {
        for b in &grants[i + 1..] {
            if a.guest == b.guest {
                return Err(format!(
                    "files: two grants are mounted at {:?}; give each directory its own guest path",
                    a.guest
                ));
            }
        }
        for b in grants {
            if a.mode == Mode::Rw && b.mode == Mode::Ro && b.resolved.starts_with(&a.resolved) {
                return Err(format!(
                    "files: {:?} is granted read-only but lies inside the read-write grant {:?}, \
                     so the plugin could write it through {}; grant the read-write directory \
                     without it, or make both read-only",
                    b.host_display(),
                    a.host_display(),
                    a.guest
                ));
            }
        }
    }
    Ok(())
}

/// Refuse grants that would hand a plugin the host's own state: a
/// directory in `protected` (the data directory, the compile cache), one
/// of their parents, or anything inside them. The data directory holds the
/// admin token, the compile cache's key, the database and the audit anchor:
/// whoever reads them acts as the host. `protected` holds canonical paths.
pub(crate) fn check_protected(
    grants: &[FileGrant],
    protected: &[(PathBuf, &'static str)],
) -> std::result::Result<(), String> {
    for grant in grants {
        for (dir, what) in protected {
            let relation = if grant.resolved == *dir {
                "is"
            } else if dir.starts_with(&grant.resolved) {
                "contains"
            } else if grant.resolved.starts_with(dir) {
                "lies inside"
            } else {
                continue;
            };
            return Err(format!(
                "files: host directory {:?} ({}) {relation} this host's {what} ({}), which holds                  the host's secrets and state; no manifest may grant it. Grant a directory                  outside {} instead, e.g. host = \"data/<plugin>\"",
                grant.host_display(),
                grant.resolved.display(),
                dir.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

fn prepare(grants: &Grants, setup: &mut CallSetup<'_>) -> Result<()> {
    for grant in &grants.files {
        let perms = match grant.mode {
            Mode::Rw if setup.shadow.is_none() => FsPerms::ReadWrite,
            // A shadow call reads what the live version reads, and writes nothing.
            Mode::Ro | Mode::Rw => FsPerms::ReadOnly,
        };
        let dir = CheckedDir::open(&grant.resolved).map_err(|e| Error::io(&grant.resolved, e))?;
        setup
            .wasi
            .preopened_dir(&dir.via, &grant.guest, perms)
            .map_err(|e| Error::io(&grant.resolved, std::io::Error::other(format!("{e:#}"))))?;
        drop(dir);
    }
    Ok(())
}

/// A granted directory opened for one call and checked to still be the
/// directory the manifest resolved.
///
/// The manifest's checks hold when it is loaded. Later, anything that can
/// write to a parent of the directory (such as another plugin with a
/// read-write preopen of that parent) can swap the directory for a symlink
/// to `/etc`, or to `../../..`: wasmtime-wasi refuses to create symlinks
/// with absolute targets but not relative ones that leave the sandbox, and
/// it opens a preopen's host path ambiently, following symlinks. So each
/// call opens the path itself (`O_PATH`: no device is really opened), asks
/// the kernel where the opened directory lives (`/proc/self/fd/N`), refuses
/// the grant when that is not the resolved directory, and hands wasmtime
/// the very directory it checked through that same `/proc/self/fd/N` link.
struct CheckedDir {
    /// Keeps `via` pointing at the checked directory until it is preopened.
    _file: std::fs::File,
    /// What to preopen.
    via: PathBuf,
}

/// Opening with `O_PATH` resolves the directory without opening it for
/// reading (no permission on its contents needed, nothing to close early).
#[cfg(target_os = "linux")]
const O_PATH: i32 = libc::O_PATH;
#[cfg(not(target_os = "linux"))]
const O_PATH: i32 = 0;

impl CheckedDir {
    fn open(resolved: &Path) -> std::io::Result<CheckedDir> {
        #[cfg(unix)]
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(O_PATH)
                .open(resolved)?
        };
        #[cfg(not(unix))]
        let file = std::fs::File::open(resolved)?;
        let moved = |now: &Path| {
            std::io::Error::other(format!(
                "{} is no longer the granted directory (it now leads to {}); the grant is withheld from this call",
                resolved.display(),
                now.display()
            ))
        };
        if !file.metadata()?.is_dir() {
            return Err(moved(Path::new("something that is not a directory")));
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let via = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            if let Ok(real) = std::fs::read_link(&via) {
                if real != resolved {
                    return Err(moved(&real));
                }
                return Ok(CheckedDir { _file: file, via });
            }
        }
        // Without /proc the check and the preopen are two lookups of the
        // same path: a swap between them is not caught.
        let real = resolved.canonicalize()?;
        if real != resolved {
            return Err(moved(&real));
        }
        Ok(CheckedDir {
            _file: file,
            via: resolved.to_path_buf(),
        })
    }
}
