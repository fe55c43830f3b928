//! A process publishing with `fsync` durability is killed with SIGKILL at random points,
//! over and over; after each kill the log reopens with every acknowledged record present
//! exactly once, in order, byte for byte.
mod common;

use common::*;
use ringbearer_persist::Wal;
use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const CYCLES: usize = 12;
const APPENDERS: u64 = 16;
/// Each child stops by itself after this many records if the kill comes late.
const MAX_RECORDS_PER_CHILD: u64 = 200_000;
/// Small segments, so kills also land during rotation.
const SEGMENT_BYTES: u64 = 64 << 10;

/// A small xorshift: random kill points without a dependency; the seed is printed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_record() {
    let dir = TempDir::new("kill");
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    // lsn -> (k, id) acknowledged by some child.
    let mut acked: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut total_acked_this_run = Vec::new();
    let mut tail_cuts = 0;
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wal-crash-child"))
            .arg(dir.path())
            .arg(APPENDERS.to_string())
            .arg(MAX_RECORDS_PER_CHILD.to_string())
            .arg(SEGMENT_BYTES.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("child ready");
        assert!(ready.starts_with("ready "), "{ready}");
        // Kill somewhere in the first 5 to 250 ms of publishing.
        let delay = Duration::from_millis(5 + next(&mut seed) % 245);
        let start = Instant::now();
        let mut lines = Vec::new();
        while start.elapsed() < delay {
            if let Ok(l) = rx.recv_timeout(delay - start.elapsed().min(delay)) {
                lines.push(l);
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let mut n = 0;
        for l in &lines {
            // A line cut by the kill does not parse and is not an acknowledgement.
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() == 4 && f[0] == "ack" {
                if let (Ok(lsn), Ok(k), Ok(id)) = (f[1].parse(), f[2].parse(), f[3].parse()) {
                    assert!(acked.insert(lsn, (k, id)).is_none_or(|old| old == (k, id)));
                    n += 1;
                }
            }
        }
        total_acked_this_run.push(n);

        // Restart: reopen in this process and check the promise.
        run(async {
            let (wal, rec) = Wal::open(config(dir.path(), SEGMENT_BYTES)).await.unwrap();
            check_all(&rec.records);
            tail_cuts += usize::from(rec.report.tail_cut.is_some());
            let by_lsn: HashMap<u64, (u64, u64)> = rec
                .records
                .iter()
                .map(|r| {
                    let k = r.channel.rsplit('-').next().unwrap().parse().unwrap();
                    (r.lsn.0, (k, r.id))
                })
                .collect();
            for (lsn, want) in &acked {
                assert_eq!(
                    by_lsn.get(lsn),
                    Some(want),
                    "cycle {cycle}: acknowledged LSN {lsn} lost or changed"
                );
            }
            // Exactly once, and in order per channel.
            let mut seen = HashSet::new();
            let mut last_id: HashMap<&str, u64> = HashMap::new();
            for r in &rec.records {
                assert!(
                    seen.insert((r.channel.clone(), r.id)),
                    "duplicate {} #{}",
                    r.channel,
                    r.id
                );
                let prev = last_id.insert(&r.channel, r.id).unwrap_or(0);
                assert!(r.id > prev, "{}: id {} after {}", r.channel, r.id, prev);
            }
            wal.close().await.unwrap();
        });
    }
    let total: usize = total_acked_this_run.iter().sum();
    println!("cycles {CYCLES}, acknowledged per cycle {total_acked_this_run:?}, total {total}, tail cuts {tail_cuts}, lost 0, duplicates 0");
    assert!(total > 0, "no record was acknowledged in any cycle");
}
