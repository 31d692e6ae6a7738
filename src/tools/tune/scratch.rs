//! Scratch copies of the database, removed on every exit tune survives.

use std::path::Path;

/// The scratch directories tune has made and not yet removed, so that a
/// signal can remove them before the process exits ([`remove_scratch`]).
pub(super) static SCRATCH: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A scratch directory: removed when dropped, or by [`remove_scratch`].
pub(super) struct Scratch(tempfile::TempDir);

impl Scratch {
    pub(super) fn new() -> std::io::Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("orchmirror-tune-").tempdir()?;
        SCRATCH.lock().unwrap_or_else(|p| p.into_inner()).push(dir.path().to_path_buf());
        Ok(Scratch(dir))
    }

    pub(super) fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        SCRATCH.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| p != self.0.path());
    }
}

/// Removes every scratch directory tune has made: for a signal handler that
/// then exits (the directories' own clean-up runs only on a normal return).
pub fn remove_scratch() {
    for dir in SCRATCH.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}
