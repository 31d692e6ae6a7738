//! One connection for the sections of a round.
//!
//! A commit wakes every section at once, and each refresh used to open a
//! connection of its own: four opens, four loads of the schema (SQLite reads
//! and parses `sqlite_schema`, and `sqlite_stat1`/`sqlite_stat4` when the
//! database was analysed, on every new connection), four closes, for one
//! commit. A profile put two thirds of the mirror's CPU under a steady
//! writer there (BENCHMARKS.md, "What a commit costs").
//!
//! Here the refreshes of a round share one connection, one after the other
//! (each in its own read transaction, so each reads the database as it is
//! when it starts): a refresh that finds the connection in use waits for it
//! up to [`WAIT`], then opens its own. A connection given back stays for
//! [`LINGER`] for the next section of the round, then a closer thread closes
//! it. No connection outlives its round by more than that (see
//! [`crate::source::db`] for why none may stay open between rounds): the
//! time some connection of the mirror is open per round stays what it was
//! when each section opened its own for the length of its own refresh.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::source::change::FileId;
use crate::source::held::{Held, LiveConnection};
use crate::source::walguard;

/// How long a refresh waits for the round's connection while another section uses it.
pub(crate) const WAIT: Duration = Duration::from_millis(5);
/// How long a connection given back waits for the next section of its round.
pub(crate) const LINGER: Duration = Duration::from_millis(2);

/// A connection and what closing it needs. Fields drop in order: the
/// connection before its count.
pub(crate) struct Pooled {
    pub(crate) conn: Connection,
    live: LiveConnection,
    file: FileId,
    path: PathBuf,
    header: Arc<Held>,
}

impl Pooled {
    /// A connection just opened on `file` at `path`, counted by `live`;
    /// `header` is a descriptor on the file, for the look after it closes.
    pub(crate) fn new(
        conn: Connection,
        live: LiveConnection,
        file: FileId,
        path: PathBuf,
        header: Arc<Held>,
    ) -> Pooled {
        Pooled { conn, live, file, path, header }
    }

    /// Closes the connection, then looks for a `-wal` left behind.
    fn close(self) {
        let Pooled { conn, live, path, header, .. } = self;
        drop(conn);
        drop(live);
        walguard::look_for_left_behind(&path, &header);
    }
}

#[derive(Default)]
struct Slot {
    /// The connection nobody uses now, and since when.
    idle: Option<(Pooled, Instant)>,
    /// Connections taken and not given back.
    out: usize,
    /// When `out` last went from 0 to 1.
    since: Option<Instant>,
    /// Refreshes waiting for the connection in use.
    waiting: usize,
    /// Whether the closer thread runs.
    closer: bool,
}

/// The round's connection, shared by one mirror's sections.
pub(crate) struct Rounds {
    slot: Mutex<Slot>,
    /// Signalled when a connection is given back.
    back: Condvar,
    /// How long a refresh waits for the connection in use ([`WAIT`]).
    wait: Duration,
}

impl Default for Rounds {
    fn default() -> Self {
        Rounds { slot: Mutex::default(), back: Condvar::new(), wait: WAIT }
    }
}

impl std::fmt::Debug for Rounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rounds").finish_non_exhaustive()
    }
}

impl Rounds {
    /// Rounds whose refreshes wait up to `wait` for the connection in use.
    #[cfg(test)]
    pub(crate) fn waiting(wait: Duration) -> Rounds {
        Rounds { wait, ..Rounds::default() }
    }

    /// Refreshes waiting for the connection now.
    #[cfg(test)]
    pub(crate) fn waiting_now(&self) -> usize {
        self.lock().waiting
    }

    /// Whether no connection is taken or kept.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        let slot = self.lock();
        slot.idle.is_none() && slot.out == 0
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The round's connection when it is on `file` (waiting up to [`WAIT`]
    /// while another section uses it); `None`: open one (it is counted as
    /// taken, and given back like the others).
    pub(crate) fn take(&self, file: FileId) -> Option<Pooled> {
        let mut slot = self.lock();
        let mut stale = Vec::new();
        let found = loop {
            if let Some((pooled, _)) = slot.idle.take() {
                if pooled.file == file {
                    break Some(pooled);
                }
                stale.push(pooled); // on a file the path no longer names
            }
            let waited = slot.since.map_or(self.wait, |since| since.elapsed());
            if slot.out == 0 || waited >= self.wait {
                break None;
            }
            slot.waiting += 1;
            slot = self.back.wait_timeout(slot, self.wait - waited).map_or_else(|p| p.into_inner().0, |(g, _)| g);
            slot.waiting -= 1;
        };
        if slot.out == 0 {
            slot.since = Some(Instant::now());
        }
        slot.out += 1;
        drop(slot);
        stale.into_iter().for_each(Pooled::close);
        found
    }

    /// A connection counted by [`Rounds::take`] could not be opened.
    pub(crate) fn not_opened(&self) {
        let mut slot = self.lock();
        slot.out = slot.out.saturating_sub(1);
        if slot.out == 0 {
            slot.since = None;
        }
        drop(slot);
        self.back.notify_all();
    }

    /// Gives a connection back: it waits [`LINGER`] for the next section
    /// when none is waiting already, else it closes now.
    pub(crate) fn give_back(self: &Arc<Self>, pooled: Pooled) {
        let mut slot = self.lock();
        slot.out = slot.out.saturating_sub(1);
        if slot.out == 0 {
            slot.since = None;
        }
        // Kept only for a section that waits for it: a connection nobody
        // waits for closes at once, so that a round keeps the database open no
        // longer than its refreshes.
        // A connection still inside a transaction (its rollback failed) is
        // not handed on: the next section's BEGIN would fail.
        let extra = match slot.idle {
            None if slot.waiting > 0 && pooled.conn.is_autocommit() => {
                slot.idle = Some((pooled, Instant::now()));
                None
            }
            _ => Some(pooled),
        };
        let start_closer = !std::mem::replace(&mut slot.closer, true);
        drop(slot);
        self.back.notify_all();
        if let Some(extra) = extra {
            extra.close();
        }
        if start_closer {
            let weak = Arc::downgrade(self);
            let spawned =
                std::thread::Builder::new().name("orchmirror-round-closer".into()).spawn(move || closer(weak));
            if spawned.is_err() {
                // No thread: close at once rather than keep a connection open.
                let idle = {
                    let mut slot = self.lock();
                    slot.closer = false;
                    slot.idle.take()
                };
                if let Some((pooled, _)) = idle {
                    pooled.close();
                }
            }
        }
    }
}

/// Closes the idle connection [`LINGER`] after it was given back; ends
/// when the mirror's sections are gone.
fn closer(rounds: Weak<Rounds>) {
    loop {
        let Some(r) = rounds.upgrade() else { return };
        let mut slot = r.lock();
        let due = match &slot.idle {
            Some((_, at)) => *at + LINGER,
            // Nothing to close: look again within a second (or when one is given back).
            None => Instant::now() + Duration::from_secs(1),
        };
        let now = Instant::now();
        if now < due {
            let (guard, _) = r.back.wait_timeout(slot, due - now).unwrap_or_else(|p| p.into_inner());
            slot = guard;
        }
        let expired = slot.idle.as_ref().is_some_and(|(_, at)| at.elapsed() >= LINGER);
        let idle = if expired { slot.idle.take() } else { None };
        drop(slot);
        drop(r);
        if let Some((pooled, _)) = idle {
            pooled.close();
        }
    }
}

/// A connection taken from (or opened for) a round, given back when dropped.
pub(crate) struct Lease<'a> {
    rounds: &'a Arc<Rounds>,
    pooled: Option<Pooled>,
}

impl<'a> Lease<'a> {
    pub(crate) fn new(rounds: &'a Arc<Rounds>, pooled: Pooled) -> Self {
        Lease { rounds, pooled: Some(pooled) }
    }

    pub(crate) fn conn(&self) -> Option<&Connection> {
        self.pooled.as_ref().map(|p| &p.conn)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.pooled.take() {
            self.rounds.give_back(p);
        }
    }
}
