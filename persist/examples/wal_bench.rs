//! Write-ahead log throughput and latency under `fsync` durability: durable appends
//! (append, then await `durable`) from 1, 16 and 256 concurrent publishers, plus raw append
//! throughput (one task appending without waiting), on a real filesystem.
//!
//! `cargo run --release -p ringbearer-persist --example wal_bench -- [DIR] [SECONDS] [BODY_BYTES]`
//!
//! DIR defaults to `$TMPDIR/ringbearer-wal-bench-PID` (removed afterwards; it must not be
//! tmpfs, which ignores O_DIRECT and fdatasync). Prints a Markdown table.

use glommio::{LocalExecutorBuilder, Placement};
use ringbearer_persist::{Lsn, Record, Wal, WalConfig, WalError};
use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

struct Row {
    mode: &'static str,
    appenders: usize,
    records: u64,
    elapsed: Duration,
    syncs: u64,
    lat_us: Vec<u64>,
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn durable_appends(
    dir: &Path,
    appenders: usize,
    run_for: Duration,
    body: Rc<Vec<u8>>,
) -> Row {
    let (wal, _) = Wal::open(WalConfig::new(dir)).await.expect("open");
    let wal = Rc::new(wal);
    let lat = Rc::new(RefCell::new(Vec::with_capacity(1 << 20)));
    let start = Instant::now();
    let deadline = start + run_for;
    let tasks: Vec<_> = (0..appenders)
        .map(|k| {
            let (wal, lat, body) = (wal.clone(), lat.clone(), body.clone());
            glommio::spawn_local(async move {
                let channel = format!("wedding:main:w-{k}");
                let mut id = 0;
                while Instant::now() < deadline {
                    id += 1;
                    let t = Instant::now();
                    let rec = Record {
                        channel: &channel,
                        id,
                        ts_ms: id,
                        body: &body,
                    };
                    let lsn = loop {
                        match wal.append(&rec) {
                            Ok(lsn) => break lsn,
                            Err(WalError::Backpressure { .. }) => glommio::yield_if_needed().await,
                            Err(e) => panic!("append: {e}"),
                        }
                    };
                    wal.durable(lsn).await.expect("durable");
                    lat.borrow_mut().push(t.elapsed().as_micros() as u64);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    let elapsed = start.elapsed();
    let s = wal.stats();
    Rc::try_unwrap(wal)
        .ok()
        .unwrap()
        .close()
        .await
        .expect("close");
    let mut lat_us = Rc::try_unwrap(lat).unwrap().into_inner();
    lat_us.sort_unstable();
    Row {
        mode: "durable append",
        appenders,
        records: s.synced_records,
        elapsed,
        syncs: s.synced_batches,
        lat_us,
    }
}

async fn raw_appends(dir: &Path, run_for: Duration, body: &[u8]) -> Row {
    let (wal, _) = Wal::open(WalConfig::new(dir)).await.expect("open");
    let start = Instant::now();
    let mut id = 0;
    let mut last = Lsn(0);
    while start.elapsed() < run_for {
        for _ in 0..256 {
            id += 1;
            let rec = Record {
                channel: "wedding:main:w-0",
                id,
                ts_ms: id,
                body,
            };
            match wal.append(&rec) {
                Ok(lsn) => last = lsn,
                // The queue is full: wait for the disk.
                Err(WalError::Backpressure { .. }) => wal.durable(last).await.expect("durable"),
                Err(e) => panic!("append: {e}"),
            }
        }
        glommio::yield_if_needed().await;
    }
    wal.durable(last).await.expect("durable");
    let elapsed = start.elapsed();
    let s = wal.stats();
    wal.close().await.expect("close");
    Row {
        mode: "append (no wait)",
        appenders: 1,
        records: s.synced_records,
        elapsed,
        syncs: s.synced_batches,
        lat_us: Vec::new(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = args.get(1).map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ringbearer-wal-bench-{}", std::process::id()))
    });
    let secs: f64 = args.get(2).map_or(2.0, |s| s.parse().expect("SECONDS"));
    let body_bytes: usize = args.get(3).map_or(300, |s| s.parse().expect("BODY_BYTES"));
    let run_for = Duration::from_secs_f64(secs);
    let body = Rc::new(vec![0xab_u8; body_bytes]);
    let rows = LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(512 << 10)
        .make()
        .expect("executor")
        .run(async {
            let mut rows = Vec::new();
            for (i, n) in [1usize, 16, 256].into_iter().enumerate() {
                let dir = root.join(format!("durable-{i}"));
                rows.push(durable_appends(&dir, n, run_for, body.clone()).await);
            }
            rows.push(raw_appends(&root.join("raw"), run_for, &body).await);
            rows
        });
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "WAL bench: fsync durability, {body_bytes}-byte bodies, {secs} s per row, dir {}",
        root.display()
    );
    println!();
    println!(
        "| mode | publishers | records/s | MB/s | fdatasyncs/s | records/sync | p50 µs | p99 µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let s = r.elapsed.as_secs_f64();
        let rec_bytes = (body_bytes + 34 + 16) as f64;
        let (p50, p99) = if r.lat_us.is_empty() {
            ("–".to_string(), "–".to_string())
        } else {
            (
                pct(&r.lat_us, 0.50).to_string(),
                pct(&r.lat_us, 0.99).to_string(),
            )
        };
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.0} | {:.1} | {} | {} |",
            r.mode,
            r.appenders,
            r.records as f64 / s,
            r.records as f64 * rec_bytes / s / 1e6,
            r.syncs as f64 / s,
            r.records as f64 / r.syncs.max(1) as f64,
            p50,
            p99
        );
    }
}
