//! `files`: directories preopened for a plugin, read-only or read-write.
//!
//! A plugin sees only the preopened directories, under the guest paths the
//! manifest gives; WASI's capability-based filesystem refuses `..`, absolute
//! paths and symlinks that leave a preopen. Read-only preopens refuse every
//! write. The manifest refuses preopens of `/`, `/proc`, `/dev`, `/sys` and of
//! host paths that are symlinks, which would hand out far more than intended.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use wasmtime_wasi::FsPerms;

use super::{CallSetup, Descriptor, Grants};
use crate::manifest::Manifest;
use crate::{Error, Result};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "files",
    interfaces: &["wasi:filesystem/preopens"],
    privileged: false,
    example: "files = [{ host = \"data\", guest = \"/data\", mode = \"ro\" }]",
    granted: |m: &Manifest| !m.capabilities.files.is_empty(),
    link: |_| Ok(()),
};

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

/// Host paths no manifest may preopen.
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
    pub(crate) fn resolve(&mut self, base: &Path) -> std::result::Result<(), String> {
        let joined = if self.host.is_absolute() {
            self.host.clone()
        } else {
            base.join(&self.host)
        };
        let shown = self.host.display();
        let meta = std::fs::symlink_metadata(&joined).map_err(|e| {
            format!(
                "files: host directory {shown:?} ({}) cannot be used: {e}",
                joined.display()
            )
        })?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "files: host path {shown:?} is a symlink; name the real directory instead"
            ));
        }
        if !meta.is_dir() {
            return Err(format!("files: host path {shown:?} is not a directory"));
        }
        let canonical = joined
            .canonicalize()
            .map_err(|e| format!("files: cannot resolve {shown:?}: {e}"))?;
        if canonical == Path::new("/") || FORBIDDEN.iter().any(|f| canonical.starts_with(f)) {
            return Err(format!(
                "files: preopening {} would expose the host system; grant a dedicated data directory",
                canonical.display()
            ));
        }
        self.resolved = canonical;
        Ok(())
    }
}

pub(crate) fn prepare(grants: &Grants, setup: &mut CallSetup<'_>) -> Result<()> {
    for grant in &grants.files {
        let perms = match grant.mode {
            Mode::Ro => FsPerms::ReadOnly,
            Mode::Rw => FsPerms::ReadWrite,
        };
        setup
            .wasi
            .preopened_dir(&grant.resolved, &grant.guest, perms)
            .map_err(|e| Error::io(&grant.resolved, std::io::Error::other(format!("{e:#}"))))?;
    }
    Ok(())
}
