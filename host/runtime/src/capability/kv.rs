//! `kv`: durable key-value state, namespaced per plugin.
//!
//! A plugin only ever addresses keys inside its own namespace (its name); the
//! namespace is added by the host, never taken from the guest, so no key a
//! guest can write reaches another plugin's data. Quotas guard the host's
//! storage against a plugin filling it: key length, value size and key count,
//! enforced atomically by the store. The storage sits behind [`KvStore`]: in
//! memory here, persistent stores plug in behind the same trait.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use wasmtime::component::Linker;

use super::{CallContext, Cap, Capability, HasCap, HasCapability, Views};
use crate::bindings::evos::plugin::kv::{Host, KvError, add_to_linker};
use crate::manifest::Manifest;
use crate::{Error, Result};

/// The `kv` capability.
pub struct Kv;

impl Capability for Kv {
    const NAME: &'static str = "kv";
    const INTERFACES: &'static [&'static str] = &["evos:plugin/kv"];
    const PRIVILEGED: bool = true;
    const EXAMPLE: &'static str = "kv = { max-value-bytes = 65536, max-keys = 10000 }";
    type State = KvState;

    fn granted(m: &Manifest) -> bool {
        m.capabilities.kv.is_some()
    }

    fn link<T: Views>(linker: &mut Linker<T>) -> Result<()> {
        add_to_linker::<T, HasCap<KvState>>(linker, HasCapability::<Kv>::capability)
            .map_err(|e| Error::wasmtime("linking evos:plugin/kv", e))
    }

    fn state(call: &CallContext<'_>) -> KvState {
        if call.shadow.is_some() {
            KvState::shadow(call.grants, call.kv)
        } else {
            KvState::new(call.grants, call.kv.clone())
        }
    }
}

/// Quotas of a plugin's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KvGrant {
    #[serde(default = "KvGrant::default_value_bytes")]
    pub max_value_bytes: u64,
    #[serde(default = "KvGrant::default_keys")]
    pub max_keys: u64,
    #[serde(default = "KvGrant::default_key_bytes")]
    pub max_key_bytes: u64,
    /// Bytes of keys and values the namespace may hold in all.
    #[serde(default = "KvGrant::default_total_bytes")]
    pub max_total_bytes: u64,
}

/// The quotas a store enforces atomically with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    pub max_keys: u64,
    pub max_total_bytes: u64,
}

impl KvGrant {
    pub fn quota(&self) -> KvQuota {
        KvQuota {
            max_keys: self.max_keys,
            max_total_bytes: self.max_total_bytes,
        }
    }
}

impl KvGrant {
    fn default_value_bytes() -> u64 {
        64 * 1024
    }
    fn default_keys() -> u64 {
        10_000
    }
    fn default_key_bytes() -> u64 {
        256
    }
    fn default_total_bytes() -> u64 {
        64 * 1024 * 1024
    }
}

impl Default for KvGrant {
    fn default() -> Self {
        KvGrant {
            max_value_bytes: KvGrant::default_value_bytes(),
            max_keys: KvGrant::default_keys(),
            max_key_bytes: KvGrant::default_key_bytes(),
            max_total_bytes: KvGrant::default_total_bytes(),
        }
    }
}

/// Why a store refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvStoreError {
    #[error("{0}")]
    Quota(String),
    #[error("{0}")]
    Backend(String),
}

/// The future of an async kv operation.
pub type KvFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, KvStoreError>> + Send>>;

/// Storage behind the `kv` capability. Implementations enforce the key-count
/// quota atomically with the write.
pub trait KvStore: Send + Sync + 'static {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvStoreError>;
    /// Insert or replace; a new key beyond `quota.max_keys`, or a namespace
    /// growing past `quota.max_total_bytes` (keys plus values), is a
    /// `Quota` error and writes nothing.
    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        quota: KvQuota,
    ) -> Result<(), KvStoreError>;
    fn delete(&self, namespace: &str, key: &str) -> Result<bool, KvStoreError>;
    /// [`KvStore::set`] for async callers; a durable store waits for its
    /// commit without holding a thread.
    fn set_owned(
        &self,
        namespace: Arc<str>,
        key: String,
        value: Vec<u8>,
        quota: KvQuota,
    ) -> KvFuture<()> {
        let result = self.set(&namespace, &key, &value, quota);
        Box::pin(std::future::ready(result))
    }
    /// [`KvStore::delete`] for async callers.
    fn delete_owned(&self, namespace: Arc<str>, key: String) -> KvFuture<bool> {
        let result = self.delete(&namespace, &key);
        Box::pin(std::future::ready(result))
    }
    /// At most `limit` keys starting with `prefix`, in lexical order.
    fn list_keys(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, KvStoreError>;
}

/// In-memory [`KvStore`].
#[derive(Debug, Default)]
pub struct MemoryKv {
    data: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKv {
    fn with<R>(
        &self,
        f: impl FnOnce(&mut HashMap<String, BTreeMap<String, Vec<u8>>>) -> R,
    ) -> Result<R, KvStoreError> {
        let mut guard = self
            .data
            .lock()
            .map_err(|_| KvStoreError::Backend("kv store lock poisoned".into()))?;
        Ok(f(&mut guard))
    }
}

impl KvStore for MemoryKv {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvStoreError> {
        self.with(|d| d.get(ns).and_then(|m| m.get(key)).cloned())
    }

    fn set(&self, ns: &str, key: &str, value: &[u8], quota: KvQuota) -> Result<(), KvStoreError> {
        self.with(|d| {
            let map = d.entry(ns.to_string()).or_default();
            let old = map.get(key).map(|v| (key.len() + v.len()) as u64);
            if old.is_none() && map.len() as u64 >= quota.max_keys {
                return Err(KvStoreError::Quota(format!(
                    "the namespace holds {} keys, the limit `max-keys` is {}",
                    map.len(),
                    quota.max_keys
                )));
            }
            let total: u64 = map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
            let after = total - old.unwrap_or(0) + (key.len() + value.len()) as u64;
            if after > quota.max_total_bytes {
                return Err(KvStoreError::Quota(total_bytes_refusal(after, quota)));
            }
            map.insert(key.to_string(), value.to_vec());
            Ok(())
        })?
    }

    fn delete(&self, ns: &str, key: &str) -> Result<bool, KvStoreError> {
        self.with(|d| d.get_mut(ns).is_some_and(|m| m.remove(key).is_some()))
    }

    fn list_keys(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<String>, KvStoreError> {
        self.with(|d| {
            d.get(ns)
                .map(|m| {
                    m.range(prefix.to_string()..)
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .take(limit)
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

/// A shadow call's view of kv: reads see the live data, writes and deletes
/// land in an overlay that lives as long as the call and never reaches the
/// live store. `max-keys` is checked against the live keys and the
/// overlay together; `max-total-bytes` bounds what the overlay holds (the
/// memory a shadow call can tie up), and the per-key and per-value limits
/// are the capability's, as for a live call.
pub struct ShadowKv {
    live: Arc<dyn KvStore>,
    overlay: Mutex<Overlay>,
}

#[derive(Default)]
struct Overlay {
    /// Per namespace: written values, `None` for a deleted key.
    changes: HashMap<String, BTreeMap<String, Option<Vec<u8>>>>,
    /// Bytes of keys and values held.
    held: u64,
}

impl Overlay {
    fn put(&mut self, ns: &str, key: &str, value: Option<Vec<u8>>) {
        let size = |v: &Option<Vec<u8>>| (key.len() + v.as_ref().map_or(0, Vec::len)) as u64;
        self.held += size(&value);
        let old = self
            .changes
            .entry(ns.to_string())
            .or_default()
            .insert(key.to_string(), value);
        if let Some(old) = old {
            self.held = self.held.saturating_sub(size(&old));
        }
    }
}

impl ShadowKv {
    pub fn over(live: Arc<dyn KvStore>) -> ShadowKv {
        ShadowKv {
            live,
            overlay: Mutex::default(),
        }
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        evos_core::sync::lock(&self.overlay)
    }

    /// Every key of `ns` starting with `prefix` as the call sees them.
    fn keys(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<String>, KvStoreError> {
        let changed = self.overlay().changes.get(ns).map_or(0, BTreeMap::len);
        let live = self
            .live
            .list_keys(ns, prefix, limit.saturating_add(changed))?;
        let mut keys: std::collections::BTreeSet<String> = live.into_iter().collect();
        if let Some(changes) = self.overlay().changes.get(ns) {
            for (k, v) in changes.range(prefix.to_string()..) {
                if !k.starts_with(prefix) {
                    break;
                }
                match v {
                    Some(_) => keys.insert(k.clone()),
                    None => keys.remove(k),
                };
            }
        }
        Ok(keys.into_iter().take(limit).collect())
    }
}

impl KvStore for ShadowKv {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvStoreError> {
        if let Some(changed) = self.overlay().changes.get(ns).and_then(|m| m.get(key)) {
            return Ok(changed.clone());
        }
        self.live.get(ns, key)
    }

    fn set(&self, ns: &str, key: &str, value: &[u8], quota: KvQuota) -> Result<(), KvStoreError> {
        if self.get(ns, key)?.is_none() {
            // The key count as the call sees it, up to the limit.
            let cap = usize::try_from(quota.max_keys).unwrap_or(usize::MAX);
            let seen = self.keys(ns, "", cap.saturating_add(1))?.len() as u64;
            if seen >= quota.max_keys {
                return Err(KvStoreError::Quota(format!(
                    "the namespace holds {seen} keys, the limit `max-keys` is {}",
                    quota.max_keys
                )));
            }
        }
        let mut overlay = self.overlay();
        let after = overlay.held + (key.len() + value.len()) as u64;
        if after > quota.max_total_bytes {
            return Err(KvStoreError::Quota(total_bytes_refusal(after, quota)));
        }
        overlay.put(ns, key, Some(value.to_vec()));
        Ok(())
    }

    fn delete(&self, ns: &str, key: &str) -> Result<bool, KvStoreError> {
        let existed = self.get(ns, key)?.is_some();
        self.overlay().put(ns, key, None);
        Ok(existed)
    }

    fn list_keys(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<String>, KvStoreError> {
        self.keys(ns, prefix, limit)
    }
}

/// Why a write that would grow a namespace past `max-total-bytes` failed.
pub fn total_bytes_refusal(after: u64, quota: KvQuota) -> String {
    format!(
        "the namespace would hold {after} bytes of keys and values, the limit `max-total-bytes` is {}",
        quota.max_total_bytes
    )
}

/// Most keys one `list-keys` call returns.
const LIST_LIMIT: usize = 1000;

/// Per-call kv state.
pub struct KvState {
    pub(crate) grant: KvGrant,
    pub(crate) namespace: Arc<str>,
    pub(crate) store: Arc<dyn KvStore>,
}

impl KvState {
    pub(crate) fn new(grants: &super::Grants, store: Arc<dyn KvStore>) -> KvState {
        KvState {
            grant: grants.kv.unwrap_or_default(),
            namespace: grants.plugin.clone(),
            store,
        }
    }

    /// A shadow call's state: the live data under a per-call overlay
    /// (built only when the plugin has the grant).
    pub(crate) fn shadow(grants: &super::Grants, live: &Arc<dyn KvStore>) -> KvState {
        let store: Arc<dyn KvStore> = if grants.kv.is_some() {
            Arc::new(ShadowKv::over(live.clone()))
        } else {
            live.clone()
        };
        KvState::new(grants, store)
    }
}

impl Cap<'_, KvState> {
    fn check_key(&mut self, key: &str) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::InvalidKey("keys must not be empty".into()));
        }
        let max = self.state.grant.max_key_bytes;
        if key.len() as u64 > max {
            let why = format!("key of {} bytes exceeds `max-key-bytes` = {max}", key.len());
            self.refuse("kv", why.clone());
            return Err(KvError::QuotaExceeded(why));
        }
        Ok(())
    }

    fn store_error(&mut self, e: KvStoreError) -> KvError {
        match e {
            KvStoreError::Quota(why) => {
                self.refuse("kv", format!("quota: {why}"));
                KvError::QuotaExceeded(why)
            }
            KvStoreError::Backend(why) => KvError::Internal(why),
        }
    }
}

impl Host for Cap<'_, KvState> {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        self.check_key(&key)?;
        // Reads are short and never wait for a commit: no blocking thread.
        let s = &self.state;
        s.store
            .get(&s.namespace, &key)
            .map_err(|e| self.store_error(e))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.check_key(&key)?;
        let max = self.state.grant.max_value_bytes;
        if value.len() as u64 > max {
            let why = format!(
                "value of {} bytes for key {key:?} exceeds `max-value-bytes` = {max}",
                value.len()
            );
            self.refuse("kv", format!("quota: {why}"));
            return Err(KvError::QuotaExceeded(why));
        }
        let s = &self.state;
        let write = s
            .store
            .set_owned(s.namespace.clone(), key, value, s.grant.quota());
        write.await.map_err(|e| self.store_error(e))
    }

    async fn delete(&mut self, key: String) -> Result<bool, KvError> {
        self.check_key(&key)?;
        let s = &self.state;
        let delete = s.store.delete_owned(s.namespace.clone(), key);
        delete.await.map_err(|e| self.store_error(e))
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, KvError> {
        let s = &self.state;
        s.store
            .list_keys(&s.namespace, &prefix, LIST_LIMIT)
            .map_err(|e| self.store_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_isolated_and_key_count_is_enforced() {
        let kv = MemoryKv::default();
        let q = KvQuota {
            max_keys: 2,
            max_total_bytes: 1024,
        };
        kv.set("a", "k", b"1", q).unwrap();
        kv.set("a", "l", b"2", q).unwrap();
        assert!(matches!(
            kv.set("a", "m", b"3", q),
            Err(KvStoreError::Quota(_))
        ));
        // Replacing an existing key is not a new key.
        kv.set("a", "k", b"9", q).unwrap();
        // Bytes: "k" + 1024 bytes would pass the total; refused, nothing kept.
        let err = kv.set("a", "k", &[0u8; 1024], q).unwrap_err();
        assert!(err.to_string().contains("max-total-bytes"), "{err}");
        assert_eq!(kv.get("a", "k").unwrap(), Some(b"9".to_vec()));
        assert_eq!(kv.get("b", "k").unwrap(), None);
        assert_eq!(kv.get("a", "k").unwrap(), Some(b"9".to_vec()));
        assert_eq!(kv.list_keys("a", "", 10).unwrap(), vec!["k", "l"]);
        assert!(kv.delete("a", "k").unwrap());
        assert!(!kv.delete("b", "l").unwrap());
    }

    #[test]
    fn a_shadow_reads_live_data_and_its_writes_stay_in_its_overlay() {
        let live: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        let q = KvQuota {
            max_keys: 3,
            max_total_bytes: 1024,
        };
        live.set("p", "a", b"live-a", q).unwrap();
        live.set("p", "b", b"live-b", q).unwrap();
        let shadow = ShadowKv::over(live.clone());
        assert_eq!(shadow.get("p", "a").unwrap(), Some(b"live-a".to_vec()));
        shadow.set("p", "a", b"shadow-a", q).unwrap();
        assert!(shadow.delete("p", "b").unwrap());
        shadow.set("p", "c", b"new", q).unwrap();
        // The call sees its own writes...
        assert_eq!(shadow.get("p", "a").unwrap(), Some(b"shadow-a".to_vec()));
        assert_eq!(shadow.get("p", "b").unwrap(), None);
        assert_eq!(shadow.list_keys("p", "", 10).unwrap(), vec!["a", "c"]);
        // ...and the live store has none of them.
        assert_eq!(live.get("p", "a").unwrap(), Some(b"live-a".to_vec()));
        assert_eq!(live.get("p", "b").unwrap(), Some(b"live-b".to_vec()));
        assert_eq!(live.get("p", "c").unwrap(), None);
        // Quotas count live keys and the overlay together: a, c, d fill 3.
        shadow.set("p", "d", b"1", q).unwrap();
        assert!(matches!(
            shadow.set("p", "e", b"1", q),
            Err(KvStoreError::Quota(_))
        ));
        assert_eq!(live.list_keys("p", "", 10).unwrap(), vec!["a", "b"]);
    }
}
