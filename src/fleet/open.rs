//! Which store serve and `nixos-pxe fleet` use: `--database` names a PostgreSQL database that
//! several boot servers share; without it, `<state-dir>/state.sqlite3` (one server).

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::store::{Store, StoreError};
use clap::Args;
use std::path::Path;
use std::sync::Arc;

/// The store's options, shared by `serve` and `fleet`.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Keep the fleet's state in this PostgreSQL database, shared by every boot server of the
    /// fleet, instead of <state-dir>/state.sqlite3: a URL (postgresql://nixos-pxe@db.example/nixos-pxe)
    /// or libpq's key=value words (host=/run/postgresql dbname=nixos-pxe: a socket directory, with
    /// peer authentication). No TLS: reach a remote database over a network the site trusts.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// A file whose first line is the database user's password (kept out of the URL, the
    /// command line and the unit file).
    #[arg(long, value_name = "FILE", requires = "database")]
    pub database_password_file: Option<camino::Utf8PathBuf>,
}

impl StoreArgs {
    fn password(&self) -> Result<Option<String>, StoreError> {
        let Some(file) = &self.database_password_file else { return Ok(None) };
        let text = std::fs::read_to_string(file).map_err(|e| StoreError::Backend(format!("--database-password-file {file}: {e}")))?;
        Ok(Some(text.lines().next().unwrap_or_default().to_string()))
    }

    /// Where the state is, for messages.
    pub fn describe(&self, state_dir: &Path) -> String {
        match &self.database {
            Some(url) => format!("database {}", super::postgres::redact(url)),
            None => state_dir.join(super::sqlite::FILE_NAME).display().to_string(),
        }
    }

    /// The store for serve: created if needed. A database that cannot be reached now is not an
    /// error (serve starts and waits for it); a wrong URL or a newer schema is.
    pub fn open_for_serve(&self, state_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
        match &self.database {
            None => Ok(Arc::new(SqliteStore::open(state_dir)?)),
            Some(url) => {
                let store = PostgresStore::new(url, self.password()?.as_deref())?;
                match store.check() {
                    Ok(()) => {}
                    Err(StoreError::Unavailable(why)) => tracing::error!("fleet: {why}; serve starts and hands out no attempt until it is reached"),
                    Err(e) => return Err(e),
                }
                Ok(Arc::new(store))
            }
        }
    }

    /// The store for `fleet status`, `reinstall` and `copy`: it must be there now.
    pub fn open_existing(&self, state_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
        match &self.database {
            None => Ok(Arc::new(SqliteStore::open_existing(state_dir)?)),
            Some(url) => Ok(Arc::new(PostgresStore::open(url, self.password()?.as_deref())?)),
        }
    }
}
