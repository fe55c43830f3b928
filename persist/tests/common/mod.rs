//! Helpers shared by the persist tests: a glommio executor per test, temporary directories
//! on a real filesystem (tmpfs ignores O_DIRECT), and deterministic records.
#![allow(dead_code)]

use glommio::{LocalExecutorBuilder, Placement};
use ringbearer_persist::{Durability, Record, RecoveredRecord, Wal, WalConfig};
use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// io_uring registered memory per test executor: memlock is capped at 8 MiB here and tests
/// run in parallel (ARCHITECTURE.md pitfalls). Larger DMA buffers come from the heap.
pub const IO_MEMORY_BYTES: usize = 256 << 10;

/// Runs `fut` on a glommio executor on the current thread.
pub fn run<T>(fut: impl Future<Output = T>) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .make()
        .expect("glommio executor")
        .run(fut)
}

/// A directory under the system temp dir (`TMPDIR`, /tmp: ext4 here), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rb-persist-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config with small segments so tests rotate.
pub fn config(dir: &Path, segment_bytes: u64) -> WalConfig {
    let mut c = WalConfig::new(dir);
    c.segment_bytes = segment_bytes;
    c.durability = Durability::Fsync;
    c
}

pub fn channel(k: u64) -> String {
    format!("wedding:main:w-{k}")
}

/// A deterministic body for (channel k, id): 20..~500 bytes.
pub fn body(k: u64, id: u64) -> Vec<u8> {
    let unit = format!("{k}/{id};");
    unit.repeat(2 + ((id * 7 + k) % 40) as usize).into_bytes()
}

/// Appends record `id` of channel `k`.
pub fn append<S: ringbearer_persist::Storage>(
    wal: &Wal<S>,
    k: u64,
    id: u64,
) -> Result<ringbearer_persist::Lsn, ringbearer_persist::WalError> {
    let ch = channel(k);
    let b = body(k, id);
    wal.append(&Record {
        channel: &ch,
        id,
        ts_ms: 1_000 + id,
        body: &b,
    })
}

/// Checks that `r` is exactly what [`append`] wrote for it.
pub fn check(r: &RecoveredRecord) {
    let k: u64 = r
        .channel
        .strip_prefix("wedding:main:w-")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r.body, body(k, r.id), "body of {} #{}", r.channel, r.id);
    assert_eq!(r.ts_ms, 1_000 + r.id);
}

/// Segment files of `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// LSNs are consecutive and every record is what was written.
pub fn check_all(records: &[RecoveredRecord]) {
    for w in records.windows(2) {
        assert_eq!(w[1].lsn.0, w[0].lsn.0 + 1, "consecutive LSNs");
    }
    records.iter().for_each(check);
}
