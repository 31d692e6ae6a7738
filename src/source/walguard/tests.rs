//! Unit tests of `walguard`.

use super::*;

#[test]
fn side_files_append_to_the_whole_name() {
    let [wal, shm] = side_files(Path::new("/x/orch.db"));
    assert_eq!(wal, Path::new("/x/orch.db-wal"));
    assert_eq!(shm, Path::new("/x/orch.db-shm"));
}

#[test]
fn the_header_says_wal_only_for_wal_databases() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (wal, rollback, empty) =
        (dir.path().join("wal.db"), dir.path().join("rollback.db"), dir.path().join("empty.db"));
    let c = rusqlite::Connection::open(&wal)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.execute_batch("CREATE TABLE t(x);")?;
    rusqlite::Connection::open(&rollback)?.execute_batch("CREATE TABLE t(x);")?;
    File::create(&empty)?;
    assert!(is_wal(&File::open(&wal)?)?);
    assert!(!is_wal(&File::open(&rollback)?)?);
    assert!(!is_wal(&File::open(&empty)?)?);
    Ok(())
}

/// The mechanism the guard relies on: SQLite's last connection removes
/// the side files as it closes, except while the gate is held (an
/// open-file-description lock conflicts with SQLite's POSIX locks even in
/// one process, so this needs no second process).
#[test]
fn while_the_gate_is_held_a_closing_writer_keeps_the_side_files() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("g.db");
    let open_writer = || -> rusqlite::Result<rusqlite::Connection> {
        let c = rusqlite::Connection::open(&db)?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.execute_batch("CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (1);")?;
        Ok(c)
    };
    let present = || side_files(&db).iter().all(|f| f.exists());

    // Control: without the gate the last close removes both files.
    let writer = open_writer()?;
    assert!(present());
    drop(writer);
    assert!(!present(), "the last connection removes -wal and -shm");

    let header = Arc::new(Held::new(File::open(&db)?));
    let writer = open_writer()?;
    let gate = Gate::take(&header)?.ok_or("the gate is free")?;
    drop(writer);
    assert!(present(), "the gate kept the closing writer from removing them");
    drop(gate);

    // A writer that holds the database exclusively keeps the gate out (and it says so, not an error).
    let writer = rusqlite::Connection::open(&db)?;
    writer.execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;")?;
    assert!(Gate::take(&header)?.is_none(), "a writer's EXCLUSIVE lock keeps the gate out");
    writer.execute_batch("COMMIT;")?;
    Ok(())
}

#[test]
fn root_and_the_owner_create_as_the_owner_others_do_not() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("o.db");
    File::create(&db)?;
    let db_owner = Owner { uid: 1000, gid: 1000 };
    let creator = |uid, gid| Creator { uid, gid, groups: vec![gid] };
    assert!(creates_as_owner(&creator(0, 0), &db, db_owner));
    assert!(creates_as_owner(&creator(1000, 1000), &db, db_owner));
    assert!(!creates_as_owner(&creator(1001, 1000), &db, db_owner));
    // The owner with another primary group would give the files that group.
    assert!(!creates_as_owner(&creator(1000, 1001), &db, db_owner));
    Ok(())
}
