//! The mirror's own descriptors on the database's files, and when they may close.
//!
//! SQLite locks the database and its `-shm` with POSIX record locks, and
//! POSIX drops every such lock a process holds on a file when the process
//! closes *any* descriptor of that file. A descriptor the mirror opens itself
//! (to read the header, hold the WAL guard's gate or read the WAL index) must
//! therefore never close while one of this process's SQLite connections has
//! the same file open: that connection would silently lose its shared lock,
//! and a writer could then checkpoint and delete the `-wal` under it.
//!
//! The mirror's connections live only as long as one refresh (see
//! [`crate::source::db`]), so there are moments when none is open. Every
//! connection is counted here ([`LiveConnection`]), and a [`Held`] descriptor
//! that is dropped while any is open waits in a list and is closed when the
//! last one ends. Opening a descriptor is always safe; only closing is not.

use std::fs::File;
use std::sync::Mutex;

struct Live {
    connections: usize,
    retired: Vec<File>,
}

static LIVE: Mutex<Live> = Mutex::new(Live { connections: 0, retired: Vec::new() });

fn live() -> std::sync::MutexGuard<'static, Live> {
    // A poisoned lock only means a thread panicked while counting; the counts stand.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// One of this process's SQLite connections on the orchestrator's database,
/// counted from before it opens until after it has closed: the connection
/// must be dropped before this guard.
#[derive(Debug)]
pub(crate) struct LiveConnection(());

impl LiveConnection {
    /// Counts a connection about to be opened.
    pub(crate) fn begin() -> LiveConnection {
        live().connections += 1;
        LiveConnection(())
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        let retired = {
            let mut l = live();
            l.connections = l.connections.saturating_sub(1);
            if l.connections == 0 { std::mem::take(&mut l.retired) } else { Vec::new() }
        };
        // Closed outside the lock; no connection is open, so no lock is lost.
        drop(retired);
    }
}

/// A descriptor on the database or its `-shm` that closes only while no
/// connection of this process is open.
#[derive(Debug)]
pub(crate) struct Held(Option<File>);

impl Held {
    pub(crate) fn new(file: File) -> Held {
        Held(Some(file))
    }
}

impl std::ops::Deref for Held {
    type Target = File;

    fn deref(&self) -> &File {
        // Only `drop` takes the file out.
        self.0.as_ref().unwrap_or_else(|| unreachable!("a Held descriptor is taken only when dropped"))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(file) = self.0.take() else { return };
        let mut l = live();
        if l.connections == 0 {
            // Closing under the lock: no connection can open meanwhile.
            drop(file);
        } else {
            l.retired.push(file);
        }
    }
}

/// Descriptors waiting to close (for tests).
#[cfg(test)]
pub(crate) fn retired() -> usize {
    live().retired.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_descriptor_closes_only_when_no_connection_is_open() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("h.db");
        File::create(&db)?;
        let guard = LiveConnection::begin();
        let before = retired();
        drop(Held::new(File::open(&db)?));
        assert!(retired() > before, "closing waits while a connection is open");
        // Other tests in this binary may hold connections: the list empties with the last of them.
        drop(guard);
        Ok(())
    }
}
