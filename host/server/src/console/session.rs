//! Console sessions: an API token exchanged at sign-in for a random
//! session id in an `HttpOnly`, `SameSite=Strict` cookie, with an absolute
//! expiry and a CSRF secret of its own.
//!
//! Sessions are kept in the state store, so every node sharing it (and a
//! restarted node) knows them; only the id's SHA-256 is stored, so reading
//! the database does not hand out live cookies. Signing in and out is
//! audited in the same step. The token behind a session is looked up again
//! on every request, so revoking the token ends its sessions too.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Result;
use crate::audit::NewEntry;
use crate::auth::{Token, random_hex};
use crate::store::{ConsoleSession, StateStore};

/// The session cookie's name.
pub const COOKIE: &str = "evos_session";
/// The cookie that carries the sign-in form's CSRF secret (the form is
/// posted before there is a session).
pub const LOGIN_COOKIE: &str = "evos_login";

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The API token it signed in with.
    pub token_id: String,
    /// The secret every form of this session carries.
    pub csrf: String,
    /// When it ends, in Unix seconds.
    pub expires: i64,
}

/// The sessions of the hosts sharing one state.
pub struct Sessions {
    ttl: Duration,
    store: Arc<dyn StateStore>,
}

fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn now() -> i64 {
    (evos_core::call::unix_micros() / 1_000_000) as i64
}

impl Sessions {
    pub fn new(store: Arc<dyn StateStore>, ttl: Duration) -> Sessions {
        Sessions { ttl, store }
    }

    /// How long a session lasts from sign-in.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session for `token`, its sign-in audited with `detail`: the
    /// cookie value and the session.
    pub fn open(&self, token: &Token, detail: Value) -> Result<(String, Session)> {
        let id = random_hex(32)?;
        let created = now();
        let stored = ConsoleSession {
            id_sha256: key(&id),
            token_id: token.id.clone(),
            csrf: random_hex(32)?,
            created,
            expires: created.saturating_add(self.ttl.as_secs().min(i64::MAX as u64) as i64),
        };
        self.store.open_session(
            &stored,
            NewEntry {
                actor: &format!("token/{}", token.id),
                action: "console-sign-in",
                subject: "console",
                digest: None,
                detail,
            },
        )?;
        Ok((
            id,
            Session {
                token_id: stored.token_id,
                csrf: stored.csrf,
                expires: stored.expires,
            },
        ))
    }

    /// The live session of cookie value `id`.
    pub fn get(&self, id: &str) -> Result<Option<Session>> {
        Ok(self
            .store
            .session(&key(id))?
            .filter(|s| s.expires > now())
            .map(|s| Session {
                token_id: s.token_id,
                csrf: s.csrf,
                expires: s.expires,
            }))
    }

    /// End the session of cookie value `id`, audited as `actor`'s sign-out.
    pub fn close(&self, id: &str, actor: &str) -> Result<()> {
        self.store.close_session(
            &key(id),
            Some(NewEntry {
                actor,
                action: "console-sign-out",
                subject: "console",
                digest: None,
                detail: Value::Null,
            }),
        )
    }

    /// End every session signed in with `token_id`.
    pub fn close_token(&self, token_id: &str) -> Result<()> {
        self.store.close_sessions_of(token_id)
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
    fn sessions_are_kept_by_hash_expire_and_close() {
        let dir =
            std::env::temp_dir().join(format!("evos-console-sessions-{}", std::process::id()));
        let store = crate::store::open(&dir, None).unwrap();
        let token = |id: &str| Token {
            id: id.into(),
            name: id.into(),
            role: crate::auth::Role::Reviewer,
            scope: "*".into(),
            created_at: String::new(),
            revoked_at: None,
        };
        let sessions = Sessions::new(store.clone(), Duration::from_secs(3600));
        let (id, s) = sessions.open(&token("tok1"), Value::Null).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(s.csrf, id);
        assert_eq!(sessions.get(&id).unwrap().unwrap().token_id, "tok1");
        assert!(sessions.get("not-a-session").unwrap().is_none());
        assert!(
            store.session(&id).unwrap().is_none(),
            "the id itself is not a key"
        );
        assert!(store.session(&key(&id)).unwrap().is_some());
        let (other, _) = sessions.open(&token("tok2"), Value::Null).unwrap();
        sessions.close(&id, "token/tok1").unwrap();
        assert!(sessions.get(&id).unwrap().is_none());
        assert!(sessions.get(&other).unwrap().is_some());
        sessions.close_token("tok2").unwrap();
        assert!(sessions.get(&other).unwrap().is_none());

        let ended = Sessions::new(store, Duration::ZERO);
        let (id, _) = ended.open(&token("tok3"), Value::Null).unwrap();
        assert!(
            ended.get(&id).unwrap().is_none(),
            "a session ends at its expiry"
        );
        let _ = std::fs::remove_dir_all(&dir);
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
