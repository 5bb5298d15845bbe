//! Headless Chromium driven over WebDriver (chromedriver from Debian's
//! `chromium-driver`), for the console's browser tests: a driver on a free
//! loopback port, a fresh profile in a temp dir, both gone on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{TempDir, tempdir};

/// One browser session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    shots: PathBuf,
    _profile: TempDir,
}

/// One request to the driver: status and body. The body is read by its
/// length (chromedriver keeps connections open whatever the client asks).
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("header") == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The WebDriver id of a found element.
#[derive(Debug, Clone)]
pub struct Element(String);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Start chromedriver and a headless Chromium. Screenshots go to
    /// `target/console-screenshots/<name>/` (kept as CI artifacts).
    pub fn start(name: &str) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium chromium-driver; .ci/run does)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempdir("chromium");
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("chromium");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let (status, body) = request(port, "POST", "/session", caps.to_string().as_bytes());
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "starting a Chromium session: {body}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        let shots = crate::root().join("target/console-screenshots").join(name);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Browser {
            driver,
            port,
            session,
            shots,
            _profile: profile,
        }
    }

    /// A WebDriver command; its `value`, or the error as `Err`.
    fn try_cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        let body = if method == "GET" || method == "DELETE" {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let (status, text) = request(self.port, method, &path, &body);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(format!("{method} {path}: {status} {text}"))
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url}));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's path and query.
    pub fn path(&self) -> String {
        let url = self.url();
        match url.split_once("://") {
            Some((_, rest)) => rest
                .find('/')
                .map(|i| rest[i..].to_string())
                .unwrap_or_default(),
            None => url,
        }
    }

    pub fn try_find(&self, css: &str) -> Option<Element> {
        self.try_cmd(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        )
        .ok()
        .and_then(|v| v[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())))
    }

    /// The element `css` selects, waiting up to 10 s for it to appear.
    pub fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} on {}:\n{}",
                self.url(),
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{}/click", e.0), json!({}));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            json!({"text": text}),
        );
    }

    /// The visible text of the element `css` selects.
    pub fn text(&self, css: &str) -> String {
        match self.try_find(css) {
            Some(e) => self
                .cmd("GET", &format!("/element/{}/text", e.0), Value::Null)
                .as_str()
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    }

    /// The page's HTML as the browser parsed it.
    pub fn source(&self) -> String {
        self.cmd("GET", "/source", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Press `key` (one character) on the page, as a person would.
    pub fn press(&self, key: &str) {
        self.cmd(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key},
            ]}]}),
        );
        self.cmd("DELETE", "/actions", Value::Null);
    }

    /// Run `script` (a function body) in the page; awaits a promise it
    /// returns.
    pub fn execute(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            json!({"script": format!("const done = arguments[arguments.length - 1]; Promise.resolve((async () => {{ {script} }})()).then(done, e => done('error: ' + e));"), "args": []}),
        )
    }

    /// Every cookie of the page, HttpOnly ones included.
    pub fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", Value::Null)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Save a screenshot as `<name>.png`.
    pub fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let png = self.cmd("GET", "/screenshot", Value::Null);
        if let Some(b64) = png.as_str()
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64)
        {
            let _ = std::fs::write(self.shots.join(format!("{name}.png")), bytes);
        }
    }

    /// Wait until `cond` holds on the page, up to 10 s.
    pub fn wait_for(&self, what: &str, cond: impl Fn(&Browser) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not so on {}:\n{}",
                self.url(),
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.try_cmd("DELETE", "", Value::Null);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
