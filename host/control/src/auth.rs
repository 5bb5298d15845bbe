//! API tokens: who may do what.
//!
//! A token is `evos_<id>_<secret>`: the id names it in lists, audit entries
//! and revocations; only the sha256 of the secret is stored, so the database
//! never holds a usable credential (secrets are 256 random bits, so a plain
//! hash suffices — there is nothing to brute-force). Each token has one role
//! and a scope: a plugin-name pattern (`*`, `claims-*`, `fraud-score`) that
//! limits every plugin-specific permission.
//!
//! | role     | may                                                        |
//! |----------|------------------------------------------------------------|
//! | admin    | everything, including tokens                               |
//! | deployer | upload components, deploy, canary, promote, roll back, status, history |
//! | invoker  | ingest through connectors, invoke plugins                  |
//! | reviewer | list, approve and reject reviews                           |
//! | auditor  | read and verify the audit log, status, history, metrics    |

use std::fmt;
use std::str::FromStr;

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use crate::store::{Role, Token};
use crate::store::{StateStore, now};
use crate::{Error, Result};

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Invoker => "invoker",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
        }
    }

    /// Whether this role grants `permission` (scope aside).
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Deployer => matches!(permission, Deploy | Status),
            Role::Invoker => matches!(permission, Ingest | Invoke),
            Role::Reviewer => matches!(permission, Review),
            Role::Auditor => matches!(permission, Audit | Status | Metrics),
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "deployer" => Ok(Role::Deployer),
            "invoker" => Ok(Role::Invoker),
            "reviewer" => Ok(Role::Reviewer),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!(
                "unknown role {other:?}; use admin, deployer, invoker, reviewer or auditor"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    Ingest,
    Invoke,
    Deploy,
    Status,
    Review,
    Audit,
    Metrics,
    Tokens,
}

impl Token {
    /// Whether the token may use `permission` on `plugin` (when the request
    /// concerns one).
    pub fn allows(&self, permission: Permission, plugin: Option<&str>) -> bool {
        self.revoked_at.is_none()
            && self.role.allows(permission)
            && plugin.is_none_or(|p| scope_matches(&self.scope, p))
    }
}

/// `*` matches everything; a trailing `*` matches a prefix; otherwise exact.
pub fn scope_matches(scope: &str, plugin: &str) -> bool {
    match scope.strip_suffix('*') {
        Some(prefix) => plugin.starts_with(prefix),
        None => scope == plugin,
    }
}

fn valid_scope(scope: &str) -> bool {
    let body = scope.strip_suffix('*').unwrap_or(scope);
    !scope.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `bytes` random bytes from the OS, as hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("/dev/urandom", e))?;
    Ok(hex::encode(buf))
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of two equal-length hex digests.
/// Compares secrets in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The tokens of a data directory.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<dyn StateStore>,
    /// Recently checked tokens by id, with the stored hash and when the row
    /// was read: a request does not query the database for a token checked
    /// within [`RECHECK`]. Revoking through this value takes effect at once;
    /// a revocation by another process within [`RECHECK`].
    checked: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Checked>>>,
}

/// How long a token row read from the database is trusted.
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// Most token rows remembered.
const CHECKED_MAX: usize = 4096;

struct Checked {
    row: Option<(Token, String)>,
    at: std::time::Instant,
}

impl Tokens {
    pub fn new(store: Arc<dyn StateStore>) -> Tokens {
        Tokens {
            store,
            checked: Default::default(),
        }
    }

    fn checked(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Checked>> {
        evos_core::sync::lock(&self.checked)
    }

    /// Create a token; returns it and the full secret, shown only now.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        scope: &str,
        actor: &str,
    ) -> Result<(Token, String)> {
        if !valid_scope(scope) {
            return Err(Error::Refused(format!(
                "invalid scope {scope:?}: use `*`, a plugin name, or a prefix ending in `*` (e.g. \"claims-*\")"
            )));
        }
        let id = random_hex(6)?;
        let secret = random_hex(32)?;
        let token_text = format!("evos_{id}_{secret}");
        let token = Token {
            id: id.clone(),
            name: name.to_string(),
            role,
            scope: scope.to_string(),
            created_at: now(),
            revoked_at: None,
        };
        self.store.create_token(&token, &hash(&secret), actor)?;
        Ok((token, token_text))
    }

    pub fn list(&self) -> Result<Vec<Token>> {
        self.store.tokens()
    }

    pub fn revoke(&self, id: &str, actor: &str) -> Result<()> {
        let revoked = self.revoke_row(id, actor);
        self.checked().remove(id);
        revoked
    }

    fn revoke_row(&self, id: &str, actor: &str) -> Result<()> {
        self.store.revoke_token(id, actor)
    }

    /// The active token with id `id`, if any: what a console session
    /// signed in with, looked up again on each request so that a revoked
    /// token ends its sessions (within [`RECHECK`] when revoked elsewhere).
    pub fn active(&self, id: &str) -> Result<Option<Token>> {
        Ok(self
            .row(id)?
            .map(|(token, _)| token)
            .filter(|t| t.revoked_at.is_none()))
    }

    /// The token row of `id` with its stored hash, read through the cache.
    fn row(&self, id: &str) -> Result<Option<(Token, String)>> {
        let cached = self
            .checked()
            .get(id)
            .filter(|c| c.at.elapsed() < RECHECK)
            .map(|c| c.row.clone());
        Ok(match cached {
            Some(row) => row,
            None => {
                let row = self.store.token(id)?;
                let mut checked = self.checked();
                if checked.len() >= CHECKED_MAX {
                    checked.retain(|_, c| c.at.elapsed() < RECHECK);
                }
                // Unknown ids are remembered only while there is room, so
                // guessing ids cannot evict real tokens.
                if row.is_some() || checked.len() < CHECKED_MAX {
                    checked.insert(
                        id.to_string(),
                        Checked {
                            row: row.clone(),
                            at: std::time::Instant::now(),
                        },
                    );
                }
                row
            }
        })
    }

    /// The active token a bearer string belongs to, if any.
    pub fn authenticate(&self, bearer: &str) -> Result<Option<Token>> {
        let Some(rest) = bearer.strip_prefix("evos_") else {
            return Ok(None);
        };
        let Some((id, secret)) = rest.split_once('_') else {
            return Ok(None);
        };
        let row = self.row(id)?;
        Ok(match row {
            Some((token, stored)) if same(&stored, &hash(secret)) && token.revoked_at.is_none() => {
                Some(token)
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_is_immediate_here_and_within_recheck_elsewhere() {
        let dir = std::env::temp_dir().join(format!("evos-auth-recheck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn StateStore> = Arc::new(crate::store::SqliteStore::open(&dir).unwrap());
        let serving = Tokens::new(store.clone());
        let (a, secret_a) = serving.create("a", Role::Invoker, "*", "test").unwrap();
        let (b, secret_b) = serving.create("b", Role::Invoker, "*", "test").unwrap();
        assert_eq!(serving.authenticate(&secret_a).unwrap().unwrap().id, a.id);
        assert_eq!(serving.authenticate(&secret_b).unwrap().unwrap().id, b.id);
        // A wrong secret for a known (and remembered) id is refused.
        let forged = format!("{}{}", &secret_a[..secret_a.len() - 1], "0");
        let forged = if forged == secret_a {
            format!("{}{}", &secret_a[..secret_a.len() - 1], "1")
        } else {
            forged
        };
        assert!(serving.authenticate(&forged).unwrap().is_none());

        // Revoked through the serving process: refused at once.
        serving.revoke(&a.id, "test").unwrap();
        assert!(serving.authenticate(&secret_a).unwrap().is_none());

        // Revoked by another process (another Tokens on the same data):
        // refused once the remembered row is older than RECHECK.
        let other = Tokens::new(Arc::new(crate::store::SqliteStore::open(&dir).unwrap()));
        other.revoke(&b.id, "test").unwrap();
        std::thread::sleep(RECHECK + std::time::Duration::from_millis(50));
        assert!(serving.authenticate(&secret_b).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scopes_match_exactly_or_by_prefix() {
        assert!(scope_matches("*", "anything"));
        assert!(scope_matches("claims-*", "claims-webhook"));
        assert!(!scope_matches("claims-*", "fraud-score"));
        assert!(scope_matches("fraud-score", "fraud-score"));
        assert!(!scope_matches("fraud-score", "fraud-score-2"));
        assert!(valid_scope("claims-*") && !valid_scope("a*b") && !valid_scope(""));
    }

    #[test]
    fn roles_grant_only_their_permissions() {
        assert!(Role::Admin.allows(Permission::Tokens));
        assert!(
            Role::Deployer.allows(Permission::Deploy) && !Role::Deployer.allows(Permission::Invoke)
        );
        assert!(
            Role::Invoker.allows(Permission::Ingest) && !Role::Invoker.allows(Permission::Review)
        );
        assert!(
            Role::Reviewer.allows(Permission::Review) && !Role::Reviewer.allows(Permission::Audit)
        );
        assert!(
            Role::Auditor.allows(Permission::Audit) && !Role::Auditor.allows(Permission::Deploy)
        );
    }

    #[test]
    fn tokens_authenticate_until_revoked() {
        let dir = std::env::temp_dir().join(format!("evos-auth-{}", std::process::id()));
        let store: Arc<dyn StateStore> = Arc::new(crate::store::SqliteStore::open(&dir).unwrap());
        let tokens = Tokens::new(store);
        let (t, secret) = tokens
            .create("ci", Role::Invoker, "claims-*", "test")
            .unwrap();
        assert_eq!(tokens.authenticate(&secret).unwrap().unwrap().id, t.id);
        assert!(
            tokens
                .authenticate(&format!("{secret}x"))
                .unwrap()
                .is_none()
        );
        assert!(tokens.authenticate("garbage").unwrap().is_none());
        tokens.revoke(&t.id, "test").unwrap();
        assert!(tokens.authenticate(&secret).unwrap().is_none());
        assert!(tokens.revoke(&t.id, "test").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
