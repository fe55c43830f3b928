//! Test helper for `tests/crash_kill.rs`: opens a log with `fsync` durability, publishes
//! from several concurrent tasks and prints one line per record acknowledged durable, until
//! it is killed (SIGKILL) or has published `max_records`.
//!
//! Usage: `wal-crash-child DIR APPENDERS MAX_RECORDS SEGMENT_BYTES`
//!
//! Output (stdout, one line each, flushed): `ready NEXT_LSN` once recovered, then
//! `ack LSN K ID` for record `ID` of channel `wedding:main:w-K`, printed only after
//! `durable(LSN)` resolved. Record bodies are `body(K, ID)` below; the test computes the
//! same. Ids continue after the highest recovered id of each channel.

use glommio::{LocalExecutorBuilder, Placement};
use ringbearer_persist::{Record, Wal, WalConfig};
use std::{cell::RefCell, collections::HashMap, io::Write, rc::Rc};

fn body(k: u64, id: u64) -> Vec<u8> {
    let unit = format!("{k}/{id};");
    unit.repeat(2 + ((id * 7 + k) % 40) as usize).into_bytes()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: wal-crash-child DIR APPENDERS MAX_RECORDS SEGMENT_BYTES");
        std::process::exit(2);
    }
    let dir = args[1].clone();
    let appenders: u64 = args[2].parse().expect("APPENDERS");
    let max_records: u64 = args[3].parse().expect("MAX_RECORDS");
    let segment_bytes: u64 = args[4].parse().expect("SEGMENT_BYTES");
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("executor")
        .run(async move {
            let mut cfg = WalConfig::new(&dir);
            cfg.segment_bytes = segment_bytes;
            let (wal, rec) = match Wal::open(cfg).await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("open failed: {e}");
                    std::process::exit(3);
                }
            };
            let mut next_id: HashMap<u64, u64> = HashMap::new();
            for r in &rec.records {
                let k: u64 = r.channel.rsplit('-').next().unwrap().parse().unwrap();
                let n = next_id.entry(k).or_insert(1);
                *n = (*n).max(r.id + 1);
            }
            println!("ready {}", rec.report.next_lsn);
            std::io::stdout().flush().unwrap();
            let wal = Rc::new(wal);
            let next_id = Rc::new(RefCell::new(next_id));
            let published = Rc::new(RefCell::new(0u64));
            let tasks: Vec<_> = (0..appenders)
                .map(|k| {
                    let (wal, next_id, published) =
                        (wal.clone(), next_id.clone(), published.clone());
                    glommio::spawn_local(async move {
                        let channel = format!("wedding:main:w-{k}");
                        loop {
                            {
                                let mut p = published.borrow_mut();
                                if *p >= max_records {
                                    return;
                                }
                                *p += 1;
                            }
                            let id = {
                                let mut m = next_id.borrow_mut();
                                let n = m.entry(k).or_insert(1);
                                *n += 1;
                                *n - 1
                            };
                            let b = body(k, id);
                            let rec = Record {
                                channel: &channel,
                                id,
                                ts_ms: 1_000 + id,
                                body: &b,
                            };
                            let lsn = match wal.append(&rec) {
                                Ok(lsn) => lsn,
                                Err(e) => {
                                    eprintln!("append failed: {e}");
                                    std::process::exit(4);
                                }
                            };
                            if let Err(e) = wal.durable(lsn).await {
                                eprintln!("durable failed: {e}");
                                std::process::exit(5);
                            }
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "ack {lsn} {k} {id}").unwrap();
                            out.flush().unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            Rc::try_unwrap(wal).ok().unwrap().close().await.unwrap();
        });
}
