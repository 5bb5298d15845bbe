//! The filesystem sandbox: a plugin with preopened directories reaches
//! nothing outside them, writes nothing into a read-only one, and a
//! manifest cannot grant the host system or a directory behind a symlink.
//!
//! Most cases drive the `fs-probe` plugin, which calls `wasi:filesystem`
//! directly with the exact path and flags the test names, and then check
//! both the probe's result and the host files afterwards. Fixtures are made
//! at test time in a directory of their own under `target/tmp/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use evos::{CallOutput, CallReport, Manifest, Outcome, Plugin, Runtime};
use serde_json::{Value, json};

use crate::support::*;

const RO_SECRET: &str = "read-only data\n";
const OUTSIDE_SECRET: &str = "OUTSIDE THE SANDBOX\n";

/// A per-test directory under `target/tmp/` holding `ro/` (with
/// `secret.txt` and `sub/`), `rw/` and `outside/` (with `secret.txt`);
/// removed when dropped.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = root()
            .join("target/tmp")
            .join(format!("files-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Absolute host paths in manifests must be free of symlinks.
        let dir = dir.canonicalize().unwrap();
        let f = Fixture { dir };
        f.write("ro/secret.txt", RO_SECRET);
        f.write("ro/sub/note.txt", "note\n");
        f.mkdir("rw");
        f.write("outside/secret.txt", OUTSIDE_SECRET);
        f
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.path(rel)).unwrap();
    }

    fn symlink(&self, target: impl AsRef<Path>, rel: &str) {
        std::os::unix::fs::symlink(target, self.path(rel)).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    fn exists(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.path(rel)).is_ok()
    }

    /// Names directly in `rel`, sorted.
    fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Nothing outside the preopens was read into, written or planted.
    fn assert_outside_untouched(&self) {
        assert_eq!(self.read("outside/secret.txt"), OUTSIDE_SECRET);
        assert_eq!(self.list("outside"), ["secret.txt"], "planted in outside/");
        let top: Vec<String> = self
            .list("")
            .into_iter()
            .filter(|n| !matches!(n.as_str(), "ro" | "rw" | "outside"))
            .collect();
        assert!(top.is_empty(), "planted next to the preopens: {top:?}");
    }

    /// The read-only preopen is exactly as the fixture made it.
    fn assert_ro_untouched(&self) {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(self.read("ro/secret.txt"), RO_SECRET);
        assert_eq!(self.list("ro"), ["secret.txt", "sub"]);
        assert_eq!(self.list("ro/sub"), ["note.txt"]);
        let meta = std::fs::metadata(self.path("ro/secret.txt")).unwrap();
        assert_eq!(meta.nlink(), 1, "ro/secret.txt gained a hard link");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `fs-probe` manifest granting `(host, guest, mode)` directories.
fn probe_manifest(grants: &[(&Path, &str, &str)]) -> Result<Manifest, evos::Error> {
    let files: Vec<String> = grants
        .iter()
        .map(|(host, guest, mode)| {
            format!(
                "{{ host = {:?}, guest = {guest:?}, mode = {mode:?} }}",
                host.display().to_string()
            )
        })
        .collect();
    let text = format!(
        "[plugin]\nname = \"fs-probe\"\nkind = \"agent\"\nversion = \"0.1.0\"\n\n[capabilities]\nfiles = [{}]\n",
        files.join(", ")
    );
    let path = manifest_path("fs-probe");
    Manifest::parse(&text, &path.display().to_string(), path.parent().unwrap())
}

/// The probe with `/rw` (read-write, listed first) and `/ro` (read-only).
fn probe(f: &Fixture) -> (Runtime, Arc<Plugin>) {
    let m = probe_manifest(&[(&f.path("rw"), "/rw", "rw"), (&f.path("ro"), "/ro", "ro")]).unwrap();
    let rt = runtime();
    let plugin = load_with(&rt, "fs-probe", m);
    (rt, plugin)
}

/// Run `ops` through the probe, which must succeed: the call's report and
/// one result per op.
async fn run(rt: &Runtime, plugin: &Arc<Plugin>, ops: Value) -> (CallReport, Vec<String>) {
    let (r, results) = run_any(rt, plugin, ops).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    (r, results)
}

/// [`run`] for a call whose outcome the test checks itself.
async fn run_any(rt: &Runtime, plugin: &Arc<Plugin>, ops: Value) -> (CallReport, Vec<String>) {
    let event = json!({"id": "e", "kind": "test.fs-probe", "payload": {"ops": ops}});
    let r = call_json(rt, plugin, event).await;
    let Some(CallOutput::Actions(actions)) = &r.output else {
        panic!("{r:?}")
    };
    let results: Vec<String> = actions[0].payload["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|x| x["result"].as_str().unwrap_or_default().to_string())
        .collect();
    (r, results)
}

/// Every op was refused by the host (a WASI error, not a probe mistake).
fn assert_all_refused(ops: &Value, results: &[String]) {
    let ops = ops.as_array().unwrap();
    assert_eq!(ops.len(), results.len());
    for (op, result) in ops.iter().zip(results) {
        assert!(
            result.starts_with("refused: "),
            "{op} was not refused: {result}"
        );
    }
}

/// Threat: a plugin walks out of its preopens with `..` (leading, in the
/// middle, the preopen itself) to read or plant files next to them; every
/// attempt is refused and nothing outside changes.
#[tokio::test(flavor = "multi_thread")]
async fn dot_dot_cannot_leave_a_preopen() {
    let f = Fixture::new("dotdot");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "read", "path": "/ro/../outside/secret.txt"},
        {"op": "read", "path": "/ro/sub/../../outside/secret.txt"},
        {"op": "readdir", "path": "/ro/.."},
        {"op": "stat", "path": "/rw/../outside"},
        {"op": "create", "path": "/rw/../planted.txt"},
        {"op": "write", "path": "/rw/../outside/secret.txt", "data": "owned"},
        {"op": "mkdir", "path": "/rw/../planted-dir"},
        {"op": "symlink", "path": "/rw/../planted-link", "target": "rw"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    f.assert_outside_untouched();
}

/// Threat: a plugin opens absolute host paths (`/etc/passwd`, the real
/// path of a file next to its preopen) relative to a read-write preopen;
/// the host refuses absolute paths outright.
#[tokio::test(flavor = "multi_thread")]
async fn absolute_paths_are_refused() {
    let f = Fixture::new("absolute");
    let (rt, p) = probe(&f);
    let outside = f.path("outside/secret.txt").display().to_string();
    let ops = json!([
        {"op": "read", "path": "/etc/passwd"},
        {"op": "read", "path": outside},
        {"op": "readdir", "path": "/"},
        {"op": "stat", "path": "/etc"},
        {"op": "write", "path": outside, "data": "owned"},
        {"op": "create", "path": f.path("planted.txt").display().to_string()},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    f.assert_outside_untouched();
}

/// Threat: a symlink with an absolute target sits in a preopen (planted by
/// the host's own tools or an earlier tenant) and the plugin reads, lists or
/// writes through it; the host never follows it, and a plugin cannot
/// create such a link itself.
#[tokio::test(flavor = "multi_thread")]
async fn absolute_symlinks_are_not_followed() {
    let f = Fixture::new("abs-symlink");
    f.symlink(f.path("outside"), "ro/abs-dir");
    f.symlink(f.path("outside/secret.txt"), "ro/abs-file");
    f.symlink(f.path("outside"), "rw/abs-dir");
    f.symlink(f.path("outside/secret.txt"), "rw/abs-file");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "read", "path": "/ro/abs-file"},
        {"op": "read", "path": "/ro/abs-dir/secret.txt"},
        {"op": "readdir", "path": "/ro/abs-dir"},
        {"op": "readdir", "path": "/ro/abs-dir/"},
        {"op": "write", "path": "/rw/abs-file", "data": "owned"},
        {"op": "append", "path": "/rw/abs-file", "data": "owned"},
        {"op": "create", "path": "/rw/abs-dir/planted.txt"},
        {"op": "mkdir", "path": "/rw/abs-dir/planted-dir"},
        {"op": "symlink", "path": "/rw/etc", "target": "/etc"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    // The link itself is visible, only not followed; its target (a host
    // path) is not revealed.
    let (_, seen) = run(
        &rt,
        &p,
        json!([
            {"op": "stat", "path": "/ro/abs-dir", "follow": false},
            {"op": "readlink", "path": "/ro/abs-dir"},
        ]),
    )
    .await;
    assert!(seen[0].starts_with("ok: symlink"), "{seen:?}");
    assert_eq!(seen[1], "refused: not-permitted");
    assert!(!f.exists("rw/etc"));
    f.assert_outside_untouched();
}

/// Threat: a relative symlink climbs out of its preopen (`../outside`,
/// `sub/../../outside/secret.txt`), whether the fixture placed it or the
/// plugin made it in its read-write preopen; reading, listing and writing
/// through it are refused.
#[tokio::test(flavor = "multi_thread")]
async fn relative_symlinks_escaping_the_preopen_are_not_followed() {
    let f = Fixture::new("rel-symlink");
    f.symlink("../outside", "ro/up");
    f.symlink("sub/../../outside/secret.txt", "ro/deep");
    f.symlink("../outside/secret.txt", "rw/up-file");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "read", "path": "/ro/up/secret.txt"},
        {"op": "readdir", "path": "/ro/up"},
        {"op": "read", "path": "/ro/deep"},
        {"op": "stat", "path": "/ro/up/secret.txt"},
        {"op": "write", "path": "/rw/up-file", "data": "owned"},
        {"op": "set-times", "path": "/rw/up-file"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);

    // wasmtime-wasi lets a plugin create a relative link that points out of
    // its read-write preopen (only absolute targets are refused); what
    // matters is that nothing follows it.
    let (_, made) = run(
        &rt,
        &p,
        json!([{"op": "symlink", "path": "/rw/made", "target": "../outside"}]),
    )
    .await;
    assert_eq!(made, ["ok"]);
    let ops = json!([
        {"op": "read", "path": "/rw/made/secret.txt"},
        {"op": "readdir", "path": "/rw/made"},
        {"op": "create", "path": "/rw/made/planted.txt"},
        {"op": "write", "path": "/rw/made/secret.txt", "data": "owned"},
        {"op": "rename", "path": "/rw/made/secret.txt", "to": "/rw/stolen.txt"},
        {"op": "link", "path": "/rw/made/secret.txt", "to": "/rw/stolen.txt"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    assert!(!f.exists("rw/stolen.txt"));
    f.assert_outside_untouched();
}

/// Threat: symlink loops (two links pointing at each other, a link to
/// itself, a directory link through itself) make path resolution spin; each
/// open ends in an error, the call finishes well within its limits.
#[tokio::test(flavor = "multi_thread")]
async fn symlink_loops_end_in_an_error() {
    let f = Fixture::new("loops");
    f.symlink("loop-b", "ro/loop-a");
    f.symlink("loop-a", "ro/loop-b");
    f.symlink("self", "ro/self");
    f.symlink("./dir-loop/", "ro/dir-loop");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "read", "path": "/ro/loop-a"},
        {"op": "readdir", "path": "/ro/loop-b/"},
        {"op": "stat", "path": "/ro/self"},
        {"op": "read", "path": "/ro/dir-loop/dir-loop/x"},
        {"op": "symlink", "path": "/rw/a", "target": "b"},
        {"op": "symlink", "path": "/rw/b", "target": "a"},
    ]);
    let (r, results) = run(&rt, &p, ops).await;
    assert!(
        results[..4].iter().all(|x| x.starts_with("refused: ")),
        "{results:?}"
    );
    assert_eq!(results[4..], ["ok", "ok"], "links inside rw are allowed");
    let ops = json!([
        {"op": "write", "path": "/rw/a", "data": "x"},
        {"op": "create", "path": "/rw/b/x"},
        {"op": "read", "path": "/rw/a"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    assert!(r.duration_us < 5_000_000, "{r:?}");
    f.assert_outside_untouched();
}

/// Threat: a dangling symlink in a read-write preopen points at a missing
/// file outside it; opening the link with create would make that file on
/// the host. The host refuses, and creating through a dangling link in a
/// read-only preopen is refused too.
#[tokio::test(flavor = "multi_thread")]
async fn dangling_symlinks_create_nothing_outside() {
    let f = Fixture::new("dangling");
    f.symlink("../outside/new.txt", "rw/dangling");
    f.symlink(f.path("outside/new-abs.txt"), "rw/dangling-abs");
    f.symlink("missing.txt", "ro/dangling");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "write", "path": "/rw/dangling", "data": "planted"},
        {"op": "create", "path": "/rw/dangling", "data": "planted"},
        {"op": "write", "path": "/rw/dangling-abs", "data": "planted"},
        {"op": "read", "path": "/ro/dangling"},
        {"op": "write", "path": "/ro/dangling", "data": "planted"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    assert!(!f.exists("ro/missing.txt"));
    f.assert_outside_untouched();
}

/// Threat: a plugin with write access builds symlink chains whose targets
/// end in `/` (`up -> ../`, `up2 -> up/`) and resolves paths through them
/// with trailing slashes to read, list and write outside its preopen; every
/// step past the preopen is refused. The fixture plants the same chain in
/// the read-only preopen.
/// Advisory: GHSA-vqjp-4c8c-hfgg
#[tokio::test(flavor = "multi_thread")]
async fn trailing_slash_symlink_chains_stay_inside() {
    let f = Fixture::new("trailing-slash");
    f.symlink("s2/", "ro/s1");
    f.symlink("../", "ro/s2");
    f.symlink("s1/outside/", "ro/s3");
    let (rt, p) = probe(&f);
    let (_, made) = run(
        &rt,
        &p,
        json!([
            {"op": "symlink", "path": "/rw/up", "target": "../"},
            {"op": "symlink", "path": "/rw/up2", "target": "up/"},
            {"op": "symlink", "path": "/rw/up3", "target": "up2/outside/"},
            {"op": "symlink", "path": "/rw/up4/", "target": "../outside/"},
        ]),
    )
    .await;
    assert_eq!(made[..3], ["ok", "ok", "ok"], "{made:?}");
    let ops = json!([
        {"op": "read", "path": "/ro/s1/outside/secret.txt"},
        {"op": "readdir", "path": "/ro/s1/"},
        {"op": "readdir", "path": "/ro/s2/"},
        {"op": "readdir", "path": "/ro/s3/"},
        {"op": "read", "path": "/ro/s3/secret.txt"},
        {"op": "stat", "path": "/ro/s1/"},
        {"op": "readdir", "path": "/rw/up/"},
        {"op": "readdir", "path": "/rw/up2/"},
        {"op": "read", "path": "/rw/up2/outside/secret.txt"},
        {"op": "readdir", "path": "/rw/up3/"},
        {"op": "read", "path": "/rw/up3/secret.txt"},
        {"op": "write", "path": "/rw/up3/secret.txt", "data": "owned"},
        {"op": "create", "path": "/rw/up3/planted.txt"},
        {"op": "mkdir", "path": "/rw/up2/outside/planted-dir/"},
        {"op": "mkdir", "path": "/rw/up/planted-dir/"},
        {"op": "symlink", "path": "/rw/up/planted-link", "target": "x"},
        {"op": "symlink", "path": "/rw/up3/planted-link/", "target": "x/"},
        {"op": "rename", "path": "/rw/up3/secret.txt", "to": "/rw/stolen.txt"},
        {"op": "link", "path": "/rw/up2/outside/secret.txt", "to": "/rw/stolen.txt"},
        {"op": "set-times", "path": "/rw/up3/"},
        {"op": "rmdir", "path": "/rw/up3/"},
        {"op": "read", "path": "/rw/up4/secret.txt"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    assert!(!f.exists("rw/stolen.txt"));
    f.assert_outside_untouched();
    f.assert_ro_untouched_but_links(&["s1", "s2", "s3"]);
}

impl Fixture {
    /// [`Fixture::assert_ro_untouched`] for a fixture that added `links`.
    fn assert_ro_untouched_but_links(&self, links: &[&str]) {
        for l in links {
            std::fs::remove_file(self.path(&format!("ro/{l}"))).unwrap();
        }
        self.assert_ro_untouched();
    }
}

/// Threat: a plugin with a read-only and a read-write preopen hard-links a
/// read-only file into the read-write one, then writes to it through the
/// new name; the link is refused (both ways) and the read-only file keeps
/// its content and its single link.
/// Advisory: GHSA-4ch3-9j33-3pmj
#[tokio::test(flavor = "multi_thread")]
async fn hard_link_from_read_only_into_read_write_is_refused() {
    let f = Fixture::new("hardlink");
    f.write("rw/own.txt", "mine\n");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "link", "path": "/ro/secret.txt", "to": "/rw/x"},
        {"op": "link", "path": "/ro/sub/note.txt", "to": "/rw/note"},
        {"op": "link", "path": "/rw/own.txt", "to": "/ro/own.txt"},
        {"op": "link", "path": "/ro/secret.txt", "to": "/ro/copy"},
        {"op": "read", "path": "/rw/x"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    assert!(!f.exists("rw/x") && !f.exists("rw/note"));
    assert_eq!(f.list("rw"), ["own.txt"]);
    f.assert_ro_untouched();
}

/// Threat: a plugin renames a read-only file or directory into its
/// read-write preopen (where it could then change it), or a read-write file
/// into the read-only one; each rename is refused and both sides keep
/// their files.
/// Advisory: GHSA-4ch3-9j33-3pmj
#[tokio::test(flavor = "multi_thread")]
async fn rename_from_read_only_into_read_write_is_refused() {
    let f = Fixture::new("rename");
    f.write("rw/own.txt", "mine\n");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "rename", "path": "/ro/secret.txt", "to": "/rw/x"},
        {"op": "rename", "path": "/ro/sub", "to": "/rw/sub"},
        {"op": "rename", "path": "/rw/own.txt", "to": "/ro/own.txt"},
        {"op": "rename", "path": "/rw/own.txt", "to": "/ro/secret.txt"},
        {"op": "rename", "path": "/ro/secret.txt", "to": "/ro/moved.txt"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    assert_eq!(f.list("rw"), ["own.txt"]);
    assert_eq!(f.read("rw/own.txt"), "mine\n");
    f.assert_ro_untouched();
}

/// Threat: a plugin truncates a read-only file: opening with the truncate
/// flag but only read access, opening for writing, or resizing a descriptor
/// opened for reading; each is refused and the file keeps its content.
/// Advisory: GHSA-2r75-cxrj-cmph
#[tokio::test(flavor = "multi_thread")]
async fn read_only_preopen_refuses_truncation() {
    let f = Fixture::new("ro-truncate");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "truncate", "path": "/ro/secret.txt"},
        {"op": "truncate", "path": "/ro/sub/note.txt"},
        {"op": "write", "path": "/ro/secret.txt", "data": ""},
        {"op": "open-write", "path": "/ro/secret.txt"},
        {"op": "set-size", "path": "/ro/secret.txt"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    f.assert_ro_untouched();
}

/// Threat: a plugin creates, appends to or writes through a read-only
/// preopen (new files, an append stream, writes on a descriptor opened for
/// reading); each is refused and nothing in the directory changes.
/// Advisory: GHSA-2r75-cxrj-cmph
#[tokio::test(flavor = "multi_thread")]
async fn read_only_preopen_refuses_create_append_and_write() {
    let f = Fixture::new("ro-write");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "create", "path": "/ro/new.txt"},
        {"op": "create", "path": "/ro/sub/new.txt"},
        {"op": "write", "path": "/ro/new.txt"},
        {"op": "append", "path": "/ro/secret.txt", "data": "appended"},
        {"op": "write-fd", "path": "/ro/secret.txt", "data": "OVERWRITE"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    f.assert_ro_untouched();
}

/// Threat: a plugin rewrites the timestamps of read-only files and
/// directories (by path and through a descriptor opened for reading) to
/// hide or forge changes; each is refused and the times stay.
/// Advisory: GHSA-2r75-cxrj-cmph
#[tokio::test(flavor = "multi_thread")]
async fn read_only_preopen_refuses_set_times() {
    let f = Fixture::new("ro-times");
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let file = std::fs::File::options()
        .write(true)
        .open(f.path("ro/secret.txt"))
        .unwrap();
    file.set_times(
        std::fs::FileTimes::new()
            .set_modified(old)
            .set_accessed(old),
    )
    .unwrap();
    drop(file);
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "set-times", "path": "/ro/secret.txt"},
        {"op": "set-times", "path": "/ro/secret.txt", "follow": false},
        {"op": "set-times-fd", "path": "/ro/secret.txt"},
        {"op": "set-times", "path": "/ro/sub"},
        {"op": "set-times", "path": "/ro"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    let meta = std::fs::metadata(f.path("ro/secret.txt")).unwrap();
    assert_eq!(meta.modified().unwrap(), old);
    f.assert_ro_untouched();
}

/// Threat: a plugin changes the shape of a read-only preopen: makes or
/// removes directories, removes files, makes symlinks; each is refused and
/// the directory is as it was.
/// Advisory: GHSA-2r75-cxrj-cmph
#[tokio::test(flavor = "multi_thread")]
async fn read_only_preopen_refuses_mkdir_remove_and_symlink() {
    let f = Fixture::new("ro-shape");
    f.mkdir("ro/sub/empty");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "mkdir", "path": "/ro/newdir"},
        {"op": "rmdir", "path": "/ro/sub/empty"},
        {"op": "remove", "path": "/ro/secret.txt"},
        {"op": "remove", "path": "/ro/sub/note.txt"},
        {"op": "symlink", "path": "/ro/link", "target": "secret.txt"},
    ]);
    let (_, results) = run(&rt, &p, ops.clone()).await;
    assert_all_refused(&ops, &results);
    std::fs::remove_dir(f.path("ro/sub/empty")).unwrap();
    f.assert_ro_untouched();
}

/// Threat: the sandbox over-refuses and breaks honest plugins; everything
/// a read-write grant promises works inside it (create, write, append,
/// set times, mkdir, rename, hard and symbolic links, remove) and
/// reads of the read-only grant work, with the host seeing the result.
#[tokio::test(flavor = "multi_thread")]
async fn granted_operations_work_inside_the_preopens() {
    let f = Fixture::new("granted");
    let (rt, p) = probe(&f);
    let ops = json!([
        {"op": "read", "path": "/ro/secret.txt"},
        {"op": "readdir", "path": "/ro"},
        {"op": "stat", "path": "/ro/sub/note.txt"},
        {"op": "create", "path": "/rw/a.txt", "data": "hello"},
        {"op": "append", "path": "/rw/a.txt", "data": " world"},
        {"op": "read", "path": "/rw/a.txt"},
        {"op": "write", "path": "/rw/b.txt", "data": "to be cut"},
        {"op": "write", "path": "/rw/b.txt", "data": ""},
        {"op": "open-write", "path": "/rw/b.txt"},
        {"op": "set-times", "path": "/rw/a.txt"},
        {"op": "mkdir", "path": "/rw/dir"},
        {"op": "rename", "path": "/rw/b.txt", "to": "/rw/dir/b.txt"},
        {"op": "link", "path": "/rw/a.txt", "to": "/rw/dir/a-link.txt"},
        {"op": "symlink", "path": "/rw/sym", "target": "dir/a-link.txt"},
        {"op": "read", "path": "/rw/sym"},
        {"op": "readlink", "path": "/rw/sym"},
        {"op": "create", "path": "/rw/gone.txt"},
        {"op": "remove", "path": "/rw/gone.txt"},
        {"op": "mkdir", "path": "/rw/gone-dir"},
        {"op": "rmdir", "path": "/rw/gone-dir"},
    ]);
    let (r, results) = run(&rt, &p, ops).await;
    let expected = [
        format!("ok: {RO_SECRET}"),
        "ok: secret.txt,sub".into(),
        "ok: file 5".into(),
        "ok".into(),
        "ok".into(),
        "ok: hello world".into(),
        "ok".into(),
        "ok".into(),
        "ok".into(),
        "ok".into(),
        "ok".into(),
        "ok".into(),
        "ok".into(),
        "ok".into(),
        "ok: hello world".into(),
        "ok: dir/a-link.txt".into(),
        "ok".into(),
        "ok".into(),
        "ok".into(),
        "ok".into(),
    ];
    assert_eq!(results, expected);
    assert!(r.refusals.is_empty(), "{r:?}");
    assert_eq!(f.read("rw/a.txt"), "hello world");
    assert_eq!(f.read("rw/dir/b.txt"), "");
    assert_eq!(f.list("rw"), ["a.txt", "dir", "sym"]);
    assert_eq!(f.list("rw/dir"), ["a-link.txt", "b.txt"]);
    f.assert_ro_untouched();
    f.assert_outside_untouched();
}

/// Threat: a plugin with write access to a directory swaps a subdirectory
/// that another plugin is granted for a symlink pointing outside (wasmtime
/// lets it create `../outside`); the host must not preopen where the link
/// now leads. The victim's call withholds the grant and reports a `files`
/// refusal.
#[tokio::test(flavor = "multi_thread")]
async fn granted_directory_swapped_for_a_symlink_is_withheld() {
    let f = Fixture::new("swap");
    f.write("rw/data/own.txt", "victim data\n");
    let attacker = {
        let m = probe_manifest(&[(&f.path("rw"), "/rw", "rw")]).unwrap();
        let rt = runtime();
        let p = load_with(&rt, "fs-probe", m);
        (rt, p)
    };
    let victim = {
        let m = probe_manifest(&[(&f.path("rw/data"), "/data", "ro")]).unwrap();
        let rt = runtime();
        let p = load_with(&rt, "fs-probe", m);
        (rt, p)
    };
    let (_, before) = run(
        &victim.0,
        &victim.1,
        json!([{"op": "readdir", "path": "/data"}]),
    )
    .await;
    assert_eq!(before, ["ok: own.txt"]);

    let (_, swap) = run(
        &attacker.0,
        &attacker.1,
        json!([
            {"op": "rename", "path": "/rw/data", "to": "/rw/data-old"},
            {"op": "symlink", "path": "/rw/data", "target": "../outside"},
        ]),
    )
    .await;
    assert_eq!(
        swap,
        ["ok", "ok"],
        "the swap itself is within the attacker's grant"
    );

    let (r, after) = run_any(
        &victim.0,
        &victim.1,
        json!([
            {"op": "readdir", "path": "/data"},
            {"op": "read", "path": "/data/secret.txt"},
        ]),
    )
    .await;
    for result in &after {
        assert!(
            !result.starts_with("ok"),
            "followed the swapped link: {after:?}"
        );
    }
    assert!(
        matches!(&r.outcome, Outcome::Denied { capability, .. } if capability == "files"),
        "{r:?}"
    );
    assert!(
        r.refusals.iter().any(
            |x| x.capability == "files" && x.detail.contains("no longer the granted directory")
        ),
        "{:?}",
        r.refusals
    );
    f.assert_outside_untouched();
}

/// Threat: a manifest preopens the host system itself (`/`, `/proc`,
/// `/proc/self`, `/proc/self/root`, `/dev`, `/sys`, directories under them);
/// loading it fails with an error that names the directory and the fix.
#[test]
fn manifest_refuses_the_host_system() {
    for host in [
        "/",
        "/proc",
        "/proc/self",
        "/proc/self/root",
        "/proc/1",
        "/dev",
        "/dev/shm",
        "/sys",
        "/sys/kernel",
        "/usr/..",
    ] {
        if !Path::new(host).exists() {
            continue;
        }
        let err = probe_manifest(&[(Path::new(host), "/host", "ro")])
            .expect_err(host)
            .to_string();
        assert!(
            err.contains("would expose the host system")
                && err.contains("grant a dedicated data directory"),
            "{host}: {err}"
        );
    }
}

/// Threat: a manifest grants a host path that is a symlink (even to a
/// harmless directory), so what is preopened is whatever the link points at
/// when a call starts; loading fails and the error names the real
/// directory to grant instead.
#[test]
fn manifest_refuses_a_symlinked_host_directory() {
    let f = Fixture::new("manifest-symlink");
    f.symlink(f.path("ro"), "link");
    f.symlink("ro", "rel-link");
    for link in ["link", "rel-link"] {
        let err = probe_manifest(&[(&f.path(link), "/data", "ro")])
            .expect_err(link)
            .to_string();
        assert!(
            err.contains("is a symlink")
                && err.contains(&f.path("ro").display().to_string())
                && err.contains("name the real directory instead"),
            "{err}"
        );
    }
    // The real directory is fine.
    probe_manifest(&[(&f.path("ro"), "/data", "ro")]).unwrap();
}

/// Threat: a manifest reaches a directory through a symlinked parent
/// (`link/sub`), hiding where the grant leads, possibly into the host system
/// (`root-link/proc`); loading fails, naming the link, or the host system
/// when that is where it leads.
#[test]
fn manifest_refuses_a_host_path_through_a_symlinked_parent() {
    let f = Fixture::new("manifest-parent");
    f.symlink(f.path("ro"), "link");
    f.symlink("/", "root-link");
    let err = probe_manifest(&[(&f.path("link/sub"), "/data", "ro")])
        .expect_err("link/sub")
        .to_string();
    assert!(
        err.contains("goes through the symlink")
            && err.contains("name the real directory instead")
            && err.contains(&f.path("ro").display().to_string()),
        "{err}"
    );
    let err = probe_manifest(&[(&f.path("root-link/proc"), "/p", "ro")])
        .expect_err("root-link/proc")
        .to_string();
    assert!(err.contains("would expose the host system"), "{err}");
    // Relative host paths are checked the same way.
    let path = manifest_path("fs-probe");
    let rel = pathdiff(&f.path("link/sub"), path.parent().unwrap());
    let text = format!(
        "[plugin]\nname = \"fs-probe\"\nkind = \"agent\"\nversion = \"0.1.0\"\n\n[capabilities]\nfiles = [{{ host = {rel:?}, guest = \"/data\", mode = \"ro\" }}]\n"
    );
    let err = Manifest::parse(&text, "x.toml", path.parent().unwrap())
        .expect_err("relative link/sub")
        .to_string();
    assert!(err.contains("goes through the symlink"), "{err}");
}

/// `path` relative to `base` (both absolute, `base` a real directory).
fn pathdiff(path: &Path, base: &Path) -> String {
    let base = base.canonicalize().unwrap();
    let common = base
        .ancestors()
        .find(|a| path.starts_with(a))
        .unwrap()
        .to_path_buf();
    let ups = base.strip_prefix(&common).unwrap().components().count();
    let mut rel = PathBuf::new();
    for _ in 0..ups {
        rel.push("..");
    }
    rel.push(path.strip_prefix(&common).unwrap());
    rel.display().to_string()
}

/// Threat: a manifest grants a file, or a path that does not exist (which
/// someone could create later as anything); loading fails with an error
/// that says what to grant instead.
#[test]
fn manifest_refuses_files_and_missing_paths() {
    let f = Fixture::new("manifest-kinds");
    let err = probe_manifest(&[(&f.path("ro/secret.txt"), "/data", "ro")])
        .expect_err("file")
        .to_string();
    assert!(
        err.contains("is not a directory") && err.contains("grant the directory"),
        "{err}"
    );
    let err = probe_manifest(&[(&f.path("missing"), "/data", "ro")])
        .expect_err("missing")
        .to_string();
    assert!(
        err.contains("cannot be used") && err.contains("create the directory"),
        "{err}"
    );
}

/// Threat: a plugin with one read-only preopen tries, through `std::fs`
/// (wasi-libc's path handling), to read outside it (`..`, relative and
/// absolute paths, symlinks out) and to write into it; each attempt is
/// refused, the granted read works, and no file changes on the host.
#[tokio::test(flavor = "multi_thread")]
async fn fs_escape_is_confined_to_its_read_only_preopen() {
    // A sandbox of the test's own, with a symlink pointing outside it and a
    // secret next to it.
    let f = Fixture::new("fs-escape");
    let dir = f.path("outside");
    let sandbox = f.path("sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    std::fs::write(sandbox.join("readme.txt"), "inside the sandbox\n").unwrap();
    std::fs::write(dir.join("secret.txt"), "TOP SECRET").unwrap();
    std::os::unix::fs::symlink(&dir, sandbox.join("escape")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", sandbox.join("relative-escape")).unwrap();

    let text = manifest_text("fs-escape").replace(
        "../../plugins/adversarial/fs-escape/sandbox",
        &sandbox.display().to_string(),
    );
    let rt = runtime();
    let fs = load_with(&rt, "fs-escape", manifest_from("fs-escape", &text));
    let payload = json!({
        "read": ["/sandbox/../outside/secret.txt", "../outside/secret.txt", "/etc/passwd",
                 "/sandbox/escape/secret.txt", "/sandbox/escape", "/sandbox/relative-escape",
                 "/outside/secret.txt"],
        "write": ["/sandbox/new.txt", {"op": "append", "path": "/sandbox/readme.txt"},
                  {"op": "truncate", "path": "/sandbox/readme.txt"}, {"op": "mkdir", "path": "/sandbox/newdir"},
                  "/sandbox/escape/planted.txt"]
    });
    let event = json!({"id": "e", "kind": "test.fs-escape", "payload": payload});
    let r = call_json(&rt, &fs, event).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let Some(CallOutput::Actions(actions)) = &r.output else {
        panic!("{r:?}")
    };
    let report = &actions[0].payload;
    assert_eq!(
        report["granted_read"], "inside the sandbox\n",
        "the granted read works"
    );
    let attempts = report["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 12, "{attempts:?}");
    for a in attempts {
        assert!(
            a["result"].as_str().unwrap_or("").starts_with("refused"),
            "escaped: {a}"
        );
    }
    // Nothing changed on the host.
    assert!(!sandbox.join("new.txt").exists() && !sandbox.join("newdir").exists());
    assert!(!dir.join("planted.txt").exists());
    assert_eq!(
        std::fs::read_to_string(sandbox.join("readme.txt")).unwrap(),
        "inside the sandbox\n"
    );
    healthy_call(&rt).await;
}

/// Threat: a manifest grants a directory read-only inside one it grants read-write (or
/// mounts two grants at one guest path), so the read-only promise does not hold; loading
/// fails and says which grants conflict.
#[test]
fn manifest_refuses_a_read_only_grant_inside_a_read_write_one() {
    let f = Fixture::new("manifest-overlap");
    let (rw, ro) = (f.path("rw"), f.path("rw/sub"));
    std::fs::create_dir_all(&ro).unwrap();
    let err = probe_manifest(&[(&rw, "/rw", "rw"), (&ro, "/ro", "ro")])
        .expect_err("ro inside rw")
        .to_string();
    assert!(
        err.contains("inside the read-write grant") && err.contains("/rw"),
        "{err}"
    );
    let err = probe_manifest(&[(&rw, "/data", "ro"), (&f.path("ro"), "/data", "ro")])
        .expect_err("one guest path twice")
        .to_string();
    assert!(err.contains("two grants are mounted at \"/data\""), "{err}");
    // Both read-only, or read-write inside read-only, say what they mean.
    probe_manifest(&[(&rw, "/rw", "ro"), (&ro, "/ro", "ro")]).unwrap();
    probe_manifest(&[(&rw, "/a", "ro"), (&ro, "/b", "rw")]).unwrap();
}
