use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::*;

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;

fn rec(key: &str, server: &str, version: u64, expires_at_ms: u64) -> SessionRecord {
    SessionRecord {
        key: key.into(),
        pool: "agents".into(),
        server: server.into(),
        expires_at_ms,
        version: Hlc(version),
        origin: "lb1".into(),
        tombstone: false,
    }
}

fn sorted(mut v: Vec<SessionRecord>) -> Vec<SessionRecord> {
    v.sort_by(|a, b| (&a.pool, &a.key).cmp(&(&b.pool, &b.key)));
    v
}

fn opts(commit_interval: Duration, max_batch: usize) -> StoreOptions {
    StoreOptions { commit_interval, max_batch, queue_capacity: 10_000, ..StoreOptions::default() }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("does/not/exist/yet");
    let mut tomb = rec("h3", "s1", 30, T0 + HOUR);
    tomb.tombstone = true;
    let written = vec![rec("h1", "s1", 10, T0 + HOUR), rec("h2", "s2", 20, T0 + 2 * HOUR), tomb];
    let store = Store::open(&data_dir).unwrap();
    assert_eq!(store.path(), data_dir.join(FILE_NAME));
    let h = store.handle();
    for r in &written {
        h.put(r.clone()).unwrap();
    }
    h.flush().unwrap();
    assert_eq!(h.stats().records_written, 3);
    store.close().unwrap();
    assert_eq!(h.put(written[0].clone()), Err(StoreError::Closed));

    let store = Store::open(&data_dir).unwrap();
    assert_eq!(sorted(store.load_all(T0).unwrap()), sorted(written));
    let table = Table::new("lb1");
    assert_eq!(store.load_into(&table, T0).unwrap(), 3);
    assert_eq!(table.get("agents", "h2", T0).as_deref(), Some("s2"));
    assert_eq!(table.get("agents", "h3", T0), None, "tombstone");
    assert_eq!(table.counts_per_server("agents").values().sum::<usize>(), 2);
}

#[test]
fn expired_records_are_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let h = store.handle();
    h.put(rec("old", "s1", 1, T0)).unwrap();
    h.put(rec("new", "s1", 2, T0 + 1)).unwrap();
    h.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load_all(T0).unwrap();
    assert_eq!(loaded.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["new"]);
}

#[test]
fn the_store_keeps_the_winning_version_whatever_the_queue_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let h = store.handle();
    h.put(rec("h1", "new", 20, T0 + 2 * HOUR)).unwrap();
    h.put(rec("h1", "old", 10, T0 + HOUR)).unwrap();
    h.flush().unwrap();
    assert_eq!(h.stats().records_written, 1);
    assert_eq!(store.load_all(T0).unwrap(), [rec("h1", "new", 20, T0 + 2 * HOUR)]);
    // The old version's expiry index entry went with it: a sweep at its
    // expiry leaves the newer record alone.
    h.sweep(T0 + HOUR).unwrap();
    h.flush().unwrap();
    assert_eq!(h.stats().swept, 0);
    assert_eq!(store.load_all(0).unwrap().len(), 1);
}

#[test]
fn sweep_deletes_expired_records_and_tombstones_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let h = store.handle();
    let mut tomb = rec("t", "s1", 3, T0 + 5);
    tomb.tombstone = true;
    h.put(rec("a", "s1", 1, T0)).unwrap();
    h.put(rec("b", "s1", 2, T0 + HOUR)).unwrap();
    h.put(tomb).unwrap();
    h.sweep(T0 + 5).unwrap();
    h.flush().unwrap();
    assert_eq!(h.stats().swept, 2);
    // load_all(0) shows everything still in the file.
    assert_eq!(store.load_all(0).unwrap(), [rec("b", "s1", 2, T0 + HOUR)]);
}

#[test]
fn writes_within_the_interval_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), opts(Duration::from_millis(500), 10_000)).unwrap();
    let h = store.handle();
    for i in 0..500 {
        h.put(rec(&format!("h{i}"), "s1", i, T0 + HOUR)).unwrap();
    }
    h.flush().unwrap();
    let stats = h.stats();
    assert_eq!(stats.records_written, 500);
    // One batch, or two if the interval ran out while the puts were queued.
    assert!(stats.commits <= 2, "{stats:?}");
}

#[test]
fn a_full_batch_commits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // An interval this long would time the test out: only the size cap can commit.
    let store = Store::open_with(dir.path(), opts(Duration::from_secs(60), 10)).unwrap();
    let h = store.handle();
    for i in 0..100 {
        h.put(rec(&format!("h{i}"), "s1", i, T0 + HOUR)).unwrap();
    }
    let started = Instant::now();
    h.flush().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(h.stats().commits, 10);
    assert_eq!(store.load_all(T0).unwrap().len(), 100);
}

#[test]
fn the_interval_commits_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), opts(Duration::from_millis(20), 10_000)).unwrap();
    let h = store.handle();
    h.put(rec("h1", "s1", 1, T0 + HOUR)).unwrap();
    wait_for("the timed commit", || h.stats().commits == 1);
    assert_eq!(store.load_all(T0).unwrap().len(), 1);
}

/// A store with room for two queued writes whose writer is stuck: the
/// returned transaction holds redb's write lock, so the writer blocks in its
/// next commit until it is dropped.
fn a_store_with_a_stuck_writer() -> (tempfile::TempDir, Store, StoreHandle, redb::WriteTransaction) {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        commit_interval: Duration::from_millis(1),
        max_batch: 1,
        queue_capacity: 2,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), o).unwrap();
    let h = store.handle();
    let db = store.db.lock().unwrap().clone().unwrap();
    let txn = db.begin_write().unwrap();
    (dir, store, h, txn)
}

#[test]
fn a_full_queue_refuses_writes_without_blocking() {
    let (_dir, _store, h, txn) = a_store_with_a_stuck_writer();
    let started = Instant::now();
    let refused = (0..10).map(|i| h.put(rec(&format!("h{i}"), "s1", i, T0 + HOUR))).find(|r| r.is_err());
    assert_eq!(refused, Some(Err(StoreError::QueueFull { capacity: 2 })));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(h.stats().dropped, 1);
    drop(txn);
    h.flush().unwrap();
}

#[test]
fn a_bulk_write_waits_for_room_and_control_is_never_refused() {
    let (_dir, store, h, txn) = a_store_with_a_stuck_writer();
    // Fill the queue; the writer takes one write and then waits for the
    // lock, so fill again once it had the time to.
    while h.put(rec("filler", "s1", 1, T0 + HOUR)).is_ok() {}
    std::thread::sleep(Duration::from_millis(50));
    while h.put(rec("filler", "s1", 1, T0 + HOUR)).is_ok() {}
    // The queue is full and the writer stuck: a bulk write waits.
    let bulk = {
        let h = h.clone();
        std::thread::spawn(move || h.put_wait(rec("bulk", "s1", 2, T0 + HOUR)))
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!bulk.is_finished(), "put_wait returned while the queue was full");
    drop(txn);
    bulk.join().unwrap().unwrap();
    // A flush is queued even past the bound, and commits everything.
    h.flush().unwrap();
    let keys: Vec<String> = store.load_all(T0).unwrap().into_iter().map(|r| r.key).collect();
    assert!(keys.contains(&"bulk".to_string()) && keys.contains(&"filler".to_string()), "{keys:?}");
}

#[test]
fn a_second_open_in_this_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).err().unwrap();
    let path = dir.path().join(FILE_NAME);
    assert_eq!(err, StoreError::Locked { path: path.clone() });
    assert_eq!(
        err.to_string(),
        format!(
            "sessions store {} is locked by another process: is another sysmanage-node running with the same data_dir?",
            path.display()
        )
    );
}

const HOLD_ENV: &str = "SYSMANAGE_TEST_HOLD_STORE";

/// Run by [`another_process_holding_the_store_locks_it`] in a child process:
/// holds the store open until its stdin closes. Does nothing otherwise.
#[test]
#[ignore = "helper run in a child process"]
fn hold_store_for_parent() {
    let Some(dir) = std::env::var_os(HOLD_ENV) else { return };
    let _store = Store::open(Path::new(&dir)).unwrap();
    println!("HOLDING");
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
}

#[test]
fn another_process_holding_the_store_locks_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sessions::store::tests::hold_store_for_parent", "--ignored", "--nocapture"])
        .env(HOLD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let holding = lines.by_ref().any(|l| l.contains("HOLDING"));
    assert!(holding, "the child never opened the store");
    let err = Store::open(dir.path()).err();
    drop(child.stdin.take());
    // Read the child's output to the end so that it can finish writing it.
    lines.for_each(drop);
    let status = child.wait().unwrap();
    assert_eq!(err, Some(StoreError::Locked { path: dir.path().join(FILE_NAME) }));
    assert!(status.success());
    // Released with the process.
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_file_that_is_not_a_database_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(&path, b"this is not a redb file\n".repeat(500)).unwrap();
    let err = Store::open(dir.path()).err().unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("sessions store {} is corrupt (", path.display())), "{msg}");
    assert!(msg.ends_with(')'), "{msg}");
}

#[test]
fn a_damaged_database_is_reported_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let h = store.handle();
    for i in 0..50 {
        h.put(rec(&format!("h{i}"), "s1", i, T0 + HOUR)).unwrap();
    }
    store.close().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    // Keep the header, damage the pages behind it.
    for b in bytes.iter_mut().skip(4096) {
        *b ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    let err = Store::open(dir.path()).err().unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().close().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(SCHEMA_KEY, SCHEMA_VERSION + 1).unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(dir.path()).err().unwrap();
    assert_eq!(
        err,
        StoreError::SchemaTooNew { path: path.clone(), found: SCHEMA_VERSION + 1, supported: SCHEMA_VERSION }
    );
    assert!(
        err.to_string().contains("has schema version 2, but this sysmanage-node knows only up to 1 (a newer"),
        "{err}"
    );
    // The refused file is left as it was.
    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(txn.open_table(META).unwrap().get(SCHEMA_KEY).unwrap().map(|v| v.value()), Some(SCHEMA_VERSION + 1));
}

#[test]
fn a_data_dir_that_cannot_be_created_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file.join("sub")).err().unwrap();
    assert!(matches!(&err, StoreError::DataDir { path, .. } if *path == file.join("sub")), "{err:?}");
}

// ---- A running node's store: recovered, never fatal (open_or_recover) ----

fn quick_retry() -> StoreOptions {
    StoreOptions {
        commit_interval: Duration::from_millis(5),
        retry_interval: Duration::from_millis(50),
        ..opts(Duration::from_millis(5), 1024)
    }
}

/// The files beside `sessions.redb` whose name starts with `prefix`.
fn aside(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect()
}

#[test]
fn a_corrupt_file_is_moved_aside_and_an_empty_store_serves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let garbage = b"garbage, not a redb database\n".repeat(300);
    std::fs::write(&path, &garbage).unwrap();

    let (store, records) = Store::open_or_recover(dir.path(), quick_retry(), T0).unwrap();
    assert!(records.is_empty());
    let h = store.handle();
    let moved = h.moved_aside().expect("the damaged file is reported");
    assert!(moved.reason.starts_with(&format!("sessions store {} is corrupt (", path.display())), "{}", moved.reason);
    // Kept for inspection, byte for byte, beside the new file.
    let kept = aside(dir.path(), "sessions.redb.corrupt-");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0], moved.to);
    assert_eq!(std::fs::read(&moved.to).unwrap(), garbage);
    // The new store works: nothing is wrong with it now.
    h.put(rec("h1", "s1", 1, T0 + HOUR)).unwrap();
    h.flush().unwrap();
    assert_eq!(h.problem(), None);
    store.close().unwrap();
    let (store, records) = Store::open_or_recover(dir.path(), quick_retry(), T0).unwrap();
    assert_eq!(records, [rec("h1", "s1", 1, T0 + HOUR)]);
    assert_eq!(store.handle().moved_aside(), None, "a healthy file is not moved again");
}

#[test]
fn a_file_from_a_newer_build_is_moved_aside_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(SCHEMA_KEY, SCHEMA_VERSION + 1).unwrap();
        txn.commit().unwrap();
    }
    let (store, records) = Store::open_or_recover(dir.path(), quick_retry(), T0).unwrap();
    assert!(records.is_empty());
    let moved = store.handle().moved_aside().unwrap();
    assert!(moved.reason.contains("has schema version 2"), "{}", moved.reason);
    // The newer build's file is intact where it was moved.
    let db = Database::create(&moved.to).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(txn.open_table(META).unwrap().get(SCHEMA_KEY).unwrap().map(|v| v.value()), Some(SCHEMA_VERSION + 1));
}

#[test]
fn a_locked_file_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _holder = Store::open(dir.path()).unwrap();
    let err = Store::open_or_recover(dir.path(), quick_retry(), T0).err().unwrap();
    assert_eq!(err, StoreError::Locked { path: dir.path().join(FILE_NAME) });
    assert!(aside(dir.path(), "sessions.redb.").is_empty(), "a locked file is not moved");
}

#[test]
fn a_data_dir_that_cannot_be_made_keeps_records_in_memory_until_it_can() {
    let dir = tempfile::tempdir().unwrap();
    // A plain file where a directory should be: even root cannot create
    // data_dir under it.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let data_dir = blocker.join("data");
    let (store, records) = Store::open_or_recover(&data_dir, quick_retry(), T0).unwrap();
    assert!(records.is_empty());
    let h = store.handle();
    let problem = h.problem().expect("the failure is visible");
    assert!(problem.error.starts_with(&format!("cannot create data_dir {}", data_dir.display())), "{problem:?}");

    let written: Vec<_> = (0..20).map(|i| rec(&format!("h{i}"), "s1", i + 1, T0 + HOUR)).collect();
    for r in &written {
        h.put(r.clone()).unwrap();
    }
    // A newer record for a key replaces the waiting one.
    h.put(rec("h0", "s2", 100, T0 + HOUR)).unwrap();
    assert!(matches!(h.flush(), Err(StoreError::DataDir { .. })));
    wait_for("the records to wait in memory", || h.stats().pending == 20);
    assert!(h.stats().commit_errors >= 1);
    assert_eq!(h.stats().records_written, 0);

    // The disk is fixed: the writer's retry writes everything, unasked.
    std::fs::remove_file(&blocker).unwrap();
    wait_for("the retry to commit", || h.stats().pending == 0 && h.problem().is_none());
    assert_eq!(h.stats().records_written, 20);
    let mut expected = written.clone();
    expected[0] = rec("h0", "s2", 100, T0 + HOUR);
    assert_eq!(sorted(store.load_all(T0).unwrap()), sorted(expected.clone()));
    store.close().unwrap();
    let (_store, records) = Store::open_or_recover(&data_dir, quick_retry(), T0).unwrap();
    assert_eq!(sorted(records), sorted(expected));
}

/// A redb backend in memory whose writes can be made to fail, as on a full
/// disk. Shared between reopenings, as a file would be.
#[derive(Debug, Clone)]
struct FlakyDisk {
    inner: Arc<redb::backends::InMemoryBackend>,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyDisk {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

impl redb::StorageBackend for FlakyDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[test]
fn a_full_disk_keeps_records_in_memory_and_writes_them_when_space_returns() {
    let disk = FlakyDisk { inner: Arc::new(redb::backends::InMemoryBackend::new()), full: Arc::default() };
    let path = PathBuf::from("/flaky/sessions.redb");
    let open = {
        let (disk, path) = (disk.clone(), path.clone());
        move || -> Result<Database, StoreError> {
            let db = Database::builder().create_with_backend(disk.clone()).map_err(|e| open_error(&path, e))?;
            prepare_schema(&db, &path)?;
            Ok(db)
        }
    };
    let mut opener: Opener = Box::new(open);
    let db = opener().unwrap();
    let store = Store::start(path.clone(), Some(db), opener, quick_retry(), Arc::default()).unwrap();
    let h = store.handle();
    h.put(rec("before", "s1", 1, T0 + HOUR)).unwrap();
    h.flush().unwrap();

    disk.full.store(true, Ordering::SeqCst);
    for i in 0..50 {
        h.put(rec(&format!("h{i}"), "s1", i + 10, T0 + HOUR)).unwrap();
    }
    let err = h.flush().unwrap_err();
    assert!(err.to_string().starts_with(&format!("sessions store {}: commit failed: ", path.display())), "{err}");
    let problem = h.problem().unwrap();
    assert_eq!(problem.error, err.to_string());
    assert_eq!(h.stats().pending, 50);
    // Retries keep failing while the disk is full, and keep the records.
    let errors = h.stats().commit_errors;
    wait_for("a retry", || h.stats().commit_errors > errors);
    assert_eq!(h.stats().pending, 50);

    disk.full.store(false, Ordering::SeqCst);
    wait_for("the retry to commit", || h.stats().pending == 0 && h.problem().is_none());
    h.flush().unwrap();
    let records = store.load_all(T0).unwrap();
    assert_eq!(records.len(), 51, "nothing lost: the record before and the fifty during");
}
