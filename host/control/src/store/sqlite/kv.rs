//! The `kv` capability's data in the SQLite store.

use std::sync::{Arc, Mutex};

use evos_core::sync::lock;
use rusqlite::{OptionalExtension, Transaction, params};

use super::{SqliteStore, db_err};
use crate::capability::kv::{KvFuture, KvQuota, KvStore, KvStoreError};
use crate::{Error, Result};

/// The `kv` capability's storage in the data directory. Quotas are checked
/// in the same transaction as the write.
pub struct SqliteKv {
    store: Arc<SqliteStore>,
}

impl SqliteKv {
    pub fn new(store: Arc<SqliteStore>) -> SqliteKv {
        SqliteKv { store }
    }
}

type KvJob<R> = Box<dyn FnOnce(&Transaction<'_>) -> Result<R> + Send>;

/// The write of a kv `set`, and where it says why a quota refused it.
fn kv_set(
    ns: String,
    key: String,
    value: Vec<u8>,
    quota: KvQuota,
) -> (KvJob<()>, Arc<Mutex<Option<String>>>) {
    let why: Arc<Mutex<Option<String>>> = Default::default();
    let refused = why.clone();
    let job = Box::new(move |tx: &Transaction<'_>| {
        let old: Option<i64> = tx
            .prepare_cached("SELECT LENGTH(value) FROM kv WHERE namespace = ?1 AND key = ?2")
            .and_then(|mut s| s.query_row(params![ns, key], |r| r.get(0)).optional())
            .map_err(db_err("reading kv"))?;
        let (keys, bytes) = kv_usage(tx, &ns)?;
        let refuse = |why: String| {
            *lock(&refused) = Some(why.clone());
            Err(Error::Refused(why))
        };
        // Compared as i128: limits are u64 and may exceed i64 (a manifest
        // may say any number), counts are SQLite's i64.
        if old.is_none() && i128::from(keys) >= i128::from(quota.max_keys) {
            return refuse(format!(
                "the namespace holds {keys} keys, the limit `max-keys` is {}",
                quota.max_keys
            ));
        }
        let after =
            bytes - old.map_or(0, |old| old + key.len() as i64) + (key.len() + value.len()) as i64;
        if i128::from(after) > i128::from(quota.max_total_bytes) {
            return refuse(crate::capability::kv::total_bytes_refusal(
                after.max(0) as u64,
                quota,
            ));
        }
        tx.prepare_cached(
            "INSERT INTO kv (namespace, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT(namespace, key) DO UPDATE SET value = ?3",
        )
        .and_then(|mut s| s.execute(params![ns, key, value]))
        .map_err(db_err("writing kv"))?;
        let added_keys = i64::from(old.is_none());
        let added_bytes = match old {
            Some(old) => value.len() as i64 - old,
            None => (key.len() + value.len()) as i64,
        };
        add_kv_usage(tx, &ns, added_keys, added_bytes)
    });
    (job, why)
}

fn kv_result(written: Result<()>, quota: &Mutex<Option<String>>) -> Result<(), KvStoreError> {
    match written {
        Ok(()) => Ok(()),
        Err(e) => match lock(quota).take() {
            Some(why) => Err(KvStoreError::Quota(why)),
            None => Err(KvStoreError::Backend(format!("kv store: {e}"))),
        },
    }
}

fn kv_delete(ns: String, key: String) -> KvJob<bool> {
    Box::new(move |tx: &Transaction<'_>| {
        let old: Option<i64> = tx
            .query_row(
                "DELETE FROM kv WHERE namespace = ?1 AND key = ?2 RETURNING LENGTH(value)",
                params![ns, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("deleting kv"))?;
        match old {
            Some(old) => {
                add_kv_usage(tx, &ns, -1, -(key.len() as i64 + old))?;
                Ok(true)
            }
            None => Ok(false),
        }
    })
}

/// Keys and bytes (keys plus values) a kv namespace holds.
fn kv_usage(tx: &Transaction<'_>, ns: &str) -> Result<(i64, i64)> {
    Ok(tx
        .prepare_cached("SELECT keys, bytes FROM kv_usage WHERE namespace = ?1")
        .and_then(|mut s| s.query_row([ns], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_err("reading kv usage"))?
        .unwrap_or((0, 0)))
}

fn add_kv_usage(tx: &Transaction<'_>, ns: &str, keys: i64, bytes: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO kv_usage (namespace, keys, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT(namespace) DO UPDATE SET keys = keys + ?2, bytes = bytes + ?3",
    )
    .and_then(|mut s| s.execute(params![ns, keys, bytes]))
    .map_err(db_err("updating kv usage"))?;
    Ok(())
}

fn kv_err(e: rusqlite::Error) -> KvStoreError {
    KvStoreError::Backend(format!("kv store: {e}"))
}

impl KvStore for SqliteKv {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvStoreError> {
        self.store
            .reader()
            .query_row(
                "SELECT value FROM kv WHERE namespace = ?1 AND key = ?2",
                params![ns, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(kv_err)
    }

    fn set(&self, ns: &str, key: &str, value: &[u8], quota: KvQuota) -> Result<(), KvStoreError> {
        let (job, refused) = kv_set(ns.to_owned(), key.to_owned(), value.to_vec(), quota);
        kv_result(self.store.write("kv", job), &refused)
    }

    fn delete(&self, ns: &str, key: &str) -> Result<bool, KvStoreError> {
        self.store
            .write("kv", kv_delete(ns.to_owned(), key.to_owned()))
            .map_err(|e| KvStoreError::Backend(format!("kv store: {e}")))
    }

    fn set_owned(&self, ns: Arc<str>, key: String, value: Vec<u8>, quota: KvQuota) -> KvFuture<()> {
        let store = self.store.clone();
        Box::pin(async move {
            let (job, refused) = kv_set(ns.to_string(), key, value, quota);
            kv_result(store.write_async("kv", job).await, &refused)
        })
    }

    fn delete_owned(&self, ns: Arc<str>, key: String) -> KvFuture<bool> {
        let store = self.store.clone();
        Box::pin(async move {
            store
                .write_async("kv", kv_delete(ns.to_string(), key))
                .await
                .map_err(|e| KvStoreError::Backend(format!("kv store: {e}")))
        })
    }

    fn list_keys(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<String>, KvStoreError> {
        let conn = self.store.reader();
        let mut stmt = conn
            .prepare("SELECT key FROM kv WHERE namespace = ?1 AND key >= ?2 ORDER BY key LIMIT ?3")
            .map_err(kv_err)?;
        let rows = stmt
            .query_map(params![ns, prefix, (limit as i64).saturating_mul(4)], |r| {
                r.get::<_, String>(0)
            })
            .map_err(kv_err)?;
        let mut keys = Vec::new();
        for k in rows {
            let k = k.map_err(kv_err)?;
            if !k.starts_with(prefix) || keys.len() >= limit {
                break;
            }
            keys.push(k);
        }
        Ok(keys)
    }
}
