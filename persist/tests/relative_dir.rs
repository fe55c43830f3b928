//! A log opened on a relative directory (as the server's default `./data` gives) works
//! under the `fsync` policy: glommio 0.9 opens a relative directory against dirfd -1
//! (`Directory::open`, glommio #637), so the log resolves its directory first.
//!
//! One test in this file on purpose: it changes the process's working directory.
mod common;

use common::*;
use ringbearer_persist::{Durability, Wal, WalConfig};

#[test]
fn a_relative_directory_opens_syncs_and_recovers_under_fsync() {
    let dir = TempDir::new("relative");
    std::env::set_current_dir(dir.path()).unwrap();
    for durability in [Durability::Fsync, Durability::Batch] {
        let rel = format!("./data/wal/{}", durability.as_str());
        let mut cfg = WalConfig::new(&rel);
        cfg.durability = durability;
        cfg.segment_bytes = 8 << 10;
        run(async {
            let (wal, _) = Wal::open(cfg.clone()).await.unwrap();
            for id in 1..=60 {
                let lsn = append(&wal, 1, id).unwrap();
                wal.durable(lsn).await.unwrap();
            }
            if durability == Durability::Fsync {
                // One commit per record: the log rotates, which syncs the directory too.
                assert!(wal.stats().segments > 1);
            }
            wal.close().await.unwrap();
            let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
            assert_eq!(rec.records.len(), 60);
            check_all(&rec.records);
            wal.close().await.unwrap();
        });
        assert!(dir.path().join(&rel).join("START").exists());
    }
}
