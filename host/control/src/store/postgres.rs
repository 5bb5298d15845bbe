//! The PostgreSQL side of the storage boundary: the state several evos
//! nodes share. This module holds its connection and schema; the
//! [`StateStore`](super::StateStore) operations over it follow the SQLite
//! backend's, one module at a time.
//!
//! The store's methods are synchronous, as the SQLite backend's are. A
//! [`PgStore`] runs its connection pool (deadpool-postgres over
//! tokio-postgres) on a thread of its own with its own single-threaded
//! tokio runtime; a method sends its query there and waits for the answer.
//! So it may be called from any thread, inside another runtime or not, and
//! dropping the store ends the thread without dropping a runtime inside an
//! async context.
//!
//! The schema (`migrations/postgres/*.sql`) is applied under a session
//! advisory lock, each migration in its own transaction with its version,
//! so nodes starting together apply each migration exactly once and a node
//! never sees half of one.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::{Error, Result};

/// Migrations in order; the schema's version is the number applied.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_schema.sql")];

/// Key of the advisory lock migrations run under ("evos" in ASCII).
const MIGRATION_LOCK: i64 = 0x6576_6f73;

/// Connections in the pool.
const POOL_SIZE: usize = 16;

type Job = Box<dyn FnOnce(Pool) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A connection to the shared state on PostgreSQL.
pub struct PgStore {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    /// The URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.shown).finish()
    }
}

/// `url` with its password replaced, for logs and errors.
fn without_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_string(),
        },
        None => "<unparsable URL>".to_string(),
    }
}

fn pg_err(shown: &str, doing: &str) -> impl Fn(tokio_postgres::Error) -> Error + use<> {
    let context = format!("{doing} on {shown}");
    move |e| Error::store(context.clone(), e)
}

/// A pooled connection; the error says what to check.
async fn client(pool: &Pool, shown: &str) -> Result<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| {
        Error::Refused(format!(
            "cannot connect to {shown}: {e}; check the URL, that the server runs and that it accepts this user"
        ))
    })
}

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host:port/database`),
    /// check that the server answers and bring the schema up to date.
    pub fn connect(url: &str) -> Result<PgStore> {
        let shown = without_password(url);
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            Error::Refused(format!(
                "{shown} is not a PostgreSQL URL ({e}); write postgres://user:password@host:5432/database"
            ))
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready, started) = mpsc::sync_channel::<Result<Pool>>(1);
        let thread_shown = shown.clone();
        std::thread::Builder::new()
            .name("evos-postgres".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(Error::io("the PostgreSQL runtime", e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let pool = match Pool::builder(manager)
                        .max_size(POOL_SIZE)
                        .runtime(deadpool_postgres::Runtime::Tokio1)
                        .build()
                    {
                        Ok(pool) => pool,
                        Err(e) => {
                            let _ = ready.send(Err(Error::Refused(format!(
                                "cannot set up a connection pool for {thread_shown}: {e}"
                            ))));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(pool.clone()));
                    while let Some(job) = queue.recv().await {
                        tokio::spawn(job(pool.clone()));
                    }
                });
            })
            .map_err(|e| Error::io("starting the PostgreSQL thread", e))?;
        started
            .recv()
            .map_err(|_| Error::Refused("the PostgreSQL thread stopped while starting".into()))??;
        let store = PgStore { jobs, shown };
        store.migrate()?;
        Ok(store)
    }

    /// Run `f` with a pooled connection on the store's thread and wait for
    /// its answer.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (answer, wait) = mpsc::sync_channel::<Result<T>>(1);
        let job: Job = Box::new(move |pool| {
            Box::pin(async move {
                let _ = answer.send(f(pool).await);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Refused(format!("the connection to {} is closed", self.shown)))?;
        wait.recv().map_err(|_| {
            Error::Refused(format!(
                "the connection to {} stopped before answering",
                self.shown
            ))
        })?
    }

    /// Apply the migrations this database lacks, under the advisory lock.
    fn migrate(&self) -> Result<()> {
        let shown = self.shown.clone();
        self.run(move |pool| async move {
            let mut client = client(&pool, &shown).await?;
            let err = |doing: &str| pg_err(&shown, doing);
            client
                .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(err("taking the migration lock"))?;
            let applied = async {
                client
                    .batch_execute(
                        "CREATE TABLE IF NOT EXISTS evos_schema (version INTEGER NOT NULL)",
                    )
                    .await
                    .map_err(err("reading the schema version"))?;
                let version: i32 = client
                    .query_opt("SELECT version FROM evos_schema", &[])
                    .await
                    .map_err(err("reading the schema version"))?
                    .map_or(0, |r| r.get(0));
                let known = MIGRATIONS.len() as i32;
                if version > known {
                    return Err(Error::Refused(format!(
                        "{shown} has schema version {version}, newer than this evos knows ({known}); upgrade evos"
                    )));
                }
                for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                    let next = i as i32 + 1;
                    let tx = client
                        .transaction()
                        .await
                        .map_err(err("starting a migration"))?;
                    tx.batch_execute(sql)
                        .await
                        .map_err(err(&format!("applying migration {next}")))?;
                    tx.execute("DELETE FROM evos_schema", &[])
                        .await
                        .map_err(err("recording the schema version"))?;
                    tx.execute("INSERT INTO evos_schema (version) VALUES ($1)", &[&next])
                        .await
                        .map_err(err("recording the schema version"))?;
                    tx.commit()
                        .await
                        .map_err(err(&format!("committing migration {next}")))?;
                }
                Ok(())
            }
            .await;
            // Released whatever happened; a lost connection releases it too.
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await;
            applied
        })
    }

    /// The schema version of the database (the migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        let shown = self.shown.clone();
        self.run(move |pool| async move {
            let client = client(&pool, &shown).await?;
            let row = client
                .query_one("SELECT version FROM evos_schema", &[])
                .await
                .map_err(pg_err(&shown, "reading the schema version"))?;
            Ok(i64::from(row.get::<_, i32>(0)))
        })
    }

    /// The tables of the schema, sorted (for checks and `evos status`).
    pub fn tables(&self) -> Result<Vec<String>> {
        let shown = self.shown.clone();
        self.run(move |pool| async move {
            let client = client(&pool, &shown).await?;
            let rows = client
                .query(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = current_schema() ORDER BY table_name",
                    &[],
                )
                .await
                .map_err(pg_err(&shown, "listing tables"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            without_password("postgres://evos:s3cret@db.internal:5432/evos"),
            "postgres://evos:***@db.internal:5432/evos"
        );
        assert_eq!(
            without_password("postgres://127.0.0.1/evos"),
            "postgres://127.0.0.1/evos"
        );
        let e = PgStore::connect("postgres://evos:s3cret@127.0.0.1:1/evos?connect_timeout=2")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret") && e.contains("cannot connect"), "{e}");
    }
}
