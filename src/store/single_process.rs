//! One server process per SQLite file.
//!
//! SQLite is the single-process embedded default: the singletons (reconciler, workflows)
//! are not fenced on it (there is no other instance to fence against), so two
//! `latchkey serve` processes on one file would both switch relays and issue door codes.
//! A server on SQLite therefore holds an exclusive lock (`flock`, through rustix) on
//! `<file>.lock` for as long as it lives, and a second one refuses to start, saying why
//! (on Unix; elsewhere there is no guard). The operating system releases the lock when the process
//! ends, however it ends, so a crash never leaves a stale lock behind. Short commands
//! (`token create`, `verify`, `export`, …) do not take it: they may run beside the server.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use sqlx::sqlite::SqliteConnectOptions;

use crate::config::DatabaseUrl;

/// Held for the life of a server process on SQLite; dropping it releases the lock.
#[derive(Debug)]
pub struct ProcessLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the SQLite file's process lock (`None` on PostgreSQL, where several instances are
/// the point, and for an in-memory database). Fails with a message naming the file when
/// another process holds it.
pub fn claim(url: &DatabaseUrl) -> anyhow::Result<Option<ProcessLock>> {
    let DatabaseUrl::Sqlite(raw) = url else {
        return Ok(None);
    };
    let options = SqliteConnectOptions::from_str(raw)
        .with_context(|| "DATABASE_URL is not a valid SQLite URL")?;
    let database = options.get_filename();
    if database.as_os_str().is_empty() || database == Path::new(":memory:") {
        return Ok(None);
    }
    let path = lock_path(database);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("could not open the lock file {}", path.display()))?;
    match try_lock(&file) {
        Ok(true) => Ok(Some(ProcessLock { _file: file, path })),
        Ok(false) => anyhow::bail!(
            "another Latchkey process is already serving the SQLite database {} (it holds {}); \
             SQLite is for one process: stop that one first, or move to PostgreSQL \
             (DATABASE_URL=postgres://…) to run several instances",
            database.display(),
            path.display()
        ),
        Err(error) => Err(error).with_context(|| format!("could not lock {}", path.display())),
    }
}

/// Takes an exclusive `flock` on `file` without waiting: `false` if another process holds
/// one. Released when the file is closed, by the process's end at the latest.
#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// `<file>.lock` beside the database file.
fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}
