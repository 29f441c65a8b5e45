//! Test support, not part of Iris's interface: the database a test's Iris
//! runs on. The suite runs twice (scripts/test.sh): on SQLite files, and
//! with `IRIS_TEST_POSTGRES` (a Postgres server URL whose user may create
//! databases) on Postgres, each test folder its own database cloned from a
//! migrated template and dropped when the test process exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::{AnyConnection, Connection};

use crate::backend::{DbSettings, sqlite_url};
use crate::store::Store;

/// The migrated database every test database is cloned from.
const TEMPLATE: &str = "iris_test_template";
/// Test databases are named `iris_t_…` (scripts/test.sh drops leftovers).
const PREFIX: &str = "iris_t_";

/// The Postgres server the suite runs against, if it does.
pub fn postgres_server() -> Option<String> {
    std::env::var("IRIS_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// The databases made by this process, by folder: (server, database URL).
#[allow(clippy::type_complexity)]
static MADE: Mutex<Option<HashMap<PathBuf, (String, String)>>> = Mutex::new(None);

/// The database for the Iris whose home is `dir`: the same URL for the
/// same folder within a process. SQLite: `dir/data/iris.db`. Postgres: a
/// new database, dropped at exit.
pub fn database_url(dir: &Path) -> String {
    match postgres_server() {
        None => sqlite_url(&dir.join("data").join("iris.db")),
        Some(server) => postgres_database(&server, dir)
            .unwrap_or_else(|e| panic!("a test database on {server}: {e}")),
    }
}

/// A new database on the Postgres `server` for `dir` (the same one for the
/// same folder within a process), dropped when the process exits.
pub fn postgres_database(server: &str, dir: &Path) -> Result<String, String> {
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let made = made.get_or_insert_with(HashMap::new);
    if let Some((_, url)) = made.get(dir) {
        return Ok(url.clone());
    }
    let first = made.is_empty();
    let name = create(server)?;
    if first {
        // SAFETY: registers a plain `extern "C" fn` with no arguments.
        unsafe { libc::atexit(drop_made) };
    }
    let url = with_database(server, &name);
    made.insert(dir.to_owned(), (server.to_owned(), url.clone()));
    Ok(url)
}

/// [`database_url`] with the pool settings the tests use.
pub fn settings(dir: &Path) -> DbSettings {
    DbSettings {
        url: database_url(dir),
        ..DbSettings::sqlite(dir)
    }
}

/// A migrated store of its own for a test of this crate or another.
pub async fn store_in(dir: &Path) -> Store {
    Store::connect(&settings(dir))
        .await
        .unwrap_or_else(|e| panic!("opening the test database: {e}"))
}

/// `server` with its database part replaced by `name`.
pub fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Run `f` on a runtime of its own on another thread: callers may be
/// inside a runtime already, or at exit.
fn blocking<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(f)
    })
    .join()
    .map_err(|_| "the database thread panicked".to_string())?
}

/// A new database cloned from the template (brought up to date first).
fn create(server: &str) -> Result<String, String> {
    let server = server.to_owned();
    blocking(async move {
        sqlx::any::install_default_drivers();
        let mut admin = AnyConnection::connect(&server)
            .await
            .map_err(|e| e.to_string())?;
        // One process at a time migrates the template and clones it: a
        // template being migrated cannot be cloned.
        const LOCK: i64 = 0x4952_4953_7465_7374; // "IRIStest"
        run(&mut admin, &format!("SELECT pg_advisory_lock({LOCK})")).await?;
        let made = async {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM pg_database WHERE datname = $1")
                    .bind(TEMPLATE)
                    .fetch_optional(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
            if exists.is_none() {
                run(&mut admin, &format!("CREATE DATABASE {TEMPLATE}")).await?;
            }
            let template = Store::connect_unmigrated(&DbSettings {
                url: with_database(&server, TEMPLATE),
                max_connections: 1,
                connect_timeout: Duration::from_secs(10),
                statement_timeout: Duration::from_secs(60),
                read_only: false,
            })
            .await
            .map_err(|e| e.to_string())?;
            template.migrate().await.map_err(|e| e.to_string())?;
            template.close().await;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let name = format!("{PREFIX}{}_{nanos}", std::process::id());
            run(
                &mut admin,
                &format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"),
            )
            .await?;
            Ok::<_, String>(name)
        }
        .await;
        let _ = run(&mut admin, &format!("SELECT pg_advisory_unlock({LOCK})")).await;
        let _ = admin.close().await;
        made
    })
}

async fn run(conn: &mut AnyConnection, sql: &str) -> Result<(), String> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| format!("{sql}: {e}"))
}

/// At exit: drop the databases this process made (servers it started
/// may still hold connections; FORCE ends them).
extern "C" fn drop_made() {
    let made: Vec<(String, String)> = MADE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|m| {
            m.values()
                .filter_map(|(server, url)| {
                    let name = url.rsplit('/').next()?;
                    let name = name.split('?').next().unwrap_or(name);
                    Some((server.clone(), name.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = blocking(async move {
        for (server, name) in made.iter().filter(|(_, n)| n.starts_with(PREFIX)) {
            let mut admin = AnyConnection::connect(server)
                .await
                .map_err(|e| e.to_string())?;
            let _ = run(
                &mut admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await;
            let _ = admin.close().await;
        }
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_part_of_a_server_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
