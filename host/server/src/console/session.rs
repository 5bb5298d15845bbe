//! Console sessions: an API token exchanged at sign-in for a random
//! session id in an `HttpOnly`, `SameSite=Strict` cookie, with an absolute
//! expiry and a CSRF secret of its own.
//!
//! Sessions live in this node's memory: signing out or restarting ends
//! them, and the token behind one is looked up again on every request, so
//! revoking the token ends its sessions too. The id is kept only as its
//! SHA-256, so a memory dump does not hand out live cookies.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::Result;
use crate::auth::random_hex;

/// The session cookie's name.
pub const COOKIE: &str = "evos_session";
/// The cookie that carries the sign-in form's CSRF secret (the form is
/// posted before there is a session).
pub const LOGIN_COOKIE: &str = "evos_login";
/// Most sessions a node keeps; past it, the oldest goes first.
const SESSIONS_MAX: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The API token it signed in with.
    pub token_id: String,
    /// The secret every form of this session carries.
    pub csrf: String,
    pub expires: Instant,
    pub created: Instant,
}

/// The sessions of this node.
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, Session>>,
}

fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts from sign-in.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session for `token_id`: its cookie value and the session.
    pub fn open(&self, token_id: &str) -> Result<(String, Session)> {
        let id = random_hex(32)?;
        let now = Instant::now();
        let session = Session {
            token_id: token_id.to_string(),
            csrf: random_hex(32)?,
            expires: now + self.ttl,
            created: now,
        };
        let mut map = evos_core::sync::lock(&self.map);
        if map.len() >= SESSIONS_MAX {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= SESSIONS_MAX
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(key(&id), session.clone());
        Ok((id, session))
    }

    /// The live session of cookie value `id`; an expired one is dropped.
    pub fn get(&self, id: &str) -> Option<Session> {
        let k = key(id);
        let mut map = evos_core::sync::lock(&self.map);
        match map.get(&k) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// End the session of cookie value `id`.
    pub fn close(&self, id: &str) {
        evos_core::sync::lock(&self.map).remove(&key(id));
    }

    /// End every session signed in with `token_id`.
    pub fn close_token(&self, token_id: &str) {
        evos_core::sync::lock(&self.map).retain(|_, s| s.token_id != token_id);
    }
}

/// The value of cookie `name` in a `Cookie` header, if present.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, scoped to the
/// console's path, `Secure` when the request came over https.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_expires_closes_and_keeps_no_id_in_memory() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let (id, s) = sessions.open("tok1").unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(s.csrf, id);
        assert_eq!(sessions.get(&id).unwrap().token_id, "tok1");
        assert!(sessions.get("not-a-session").is_none());
        assert!(
            !evos_core::sync::lock(&sessions.map).contains_key(&id),
            "the cookie value itself is not a key"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(sessions.get(&id).is_none(), "expired");

        let sessions = Sessions::new(Duration::from_secs(60));
        let (a, _) = sessions.open("tok1").unwrap();
        let (b, _) = sessions.open("tok2").unwrap();
        sessions.close(&a);
        assert!(sessions.get(&a).is_none());
        assert!(sessions.get(&b).is_some());
        sessions.close_token("tok2");
        assert!(sessions.get(&b).is_none());
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "evos_session_x=1; evos_session=abc; other=2"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
        let set = set_cookie(COOKIE, "abc", Duration::from_secs(60), true);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(set.contains("Max-Age=60") && set.ends_with("; Secure"));
    }
}
