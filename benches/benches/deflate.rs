//! permessage-deflate on the fan-out path, without criterion (`harness = false`): the CPU
//! per delivery and the bytes on the wire of one message sent to 1,000 deflate
//! subscribers of a shard, compressed once per shard (what the server does: every
//! subscriber shares the rendered `Bytes`) against once per subscriber (distinct `Bytes`:
//! the cache never hits), and plain framing as the floor.
//!
//! `cargo bench -p ringbearer-benches --bench deflate` (see docs/performance.md for how it
//! was run and the figures).

use bytes::Bytes;
use ringbearer_io::deflate::{negotiate, Deflater};
use ringbearer_io::outbox::{encode_frame, Opcode};
use ringbearer_io::DeflateConfig;
use std::time::Instant;

const SUBSCRIBERS: usize = 1000;
const ROUNDS: usize = 20;

/// A rendered `message` frame as the fan-out sends it, with a payload of about `n` bytes.
fn message(n: usize) -> Bytes {
    let note = "Table 7 moves to the terrace; the band starts at nine. ".repeat(n / 50 + 1);
    let json = format!(
        r#"{{"op":"message","channel":"wedding:main:w-1","id":1234,"epoch":"e1","type":"general","priority":"normal","sender_id":"coord","ts":1765000000000,"payload":{{"note":"{}"}}}}"#,
        &note[..n]
    );
    Bytes::from(json)
}

fn main() {
    let cfg = DeflateConfig {
        enabled: true,
        ..DeflateConfig::default()
    };
    let n = negotiate(&cfg, Some("permessage-deflate")).expect("accepted");
    println!("subscribers per message: {SUBSCRIBERS}, rounds: {ROUNDS}");
    println!("| payload | frame bytes plain → compressed | plain µs/delivery | once per shard µs/delivery | once per subscriber µs/delivery |");
    println!("|---|---|---|---|---|");
    for size in [300, 1000, 4000] {
        let msg = message(size);
        let mut conns: Vec<Deflater> = (0..SUBSCRIBERS).map(|_| Deflater::new(&cfg, &n)).collect();
        let mut out = Vec::with_capacity(msg.len() + 16);
        let (mut plain_ns, mut once_ns, mut each_ns) = (0u128, 0u128, 0u128);
        let mut sizes = (0, 0);
        for round in 0..ROUNDS {
            // A fresh allocation per round, as every published message is.
            let shared = Bytes::copy_from_slice(&msg);
            let t = Instant::now();
            for _ in 0..SUBSCRIBERS {
                out.clear();
                encode_frame(&mut out, Opcode::Text, &shared);
            }
            plain_ns += t.elapsed().as_nanos();
            sizes.0 = out.len();
            let t = Instant::now();
            for c in conns.iter_mut() {
                out.clear();
                c.encode(&mut out, Opcode::Text, &shared);
            }
            once_ns += t.elapsed().as_nanos();
            sizes.1 = out.len();
            let copies: Vec<Bytes> = (0..SUBSCRIBERS)
                .map(|_| Bytes::copy_from_slice(&msg))
                .collect();
            let t = Instant::now();
            for (c, m) in conns.iter_mut().zip(&copies) {
                out.clear();
                c.encode(&mut out, Opcode::Text, m);
            }
            each_ns += t.elapsed().as_nanos();
            let _ = round;
        }
        let per = |ns: u128| ns as f64 / 1000.0 / (ROUNDS * SUBSCRIBERS) as f64;
        println!(
            "| {size} B | {} → {} ({:.0} %) | {:.3} | {:.3} | {:.3} |",
            sizes.0,
            sizes.1,
            100.0 * sizes.1 as f64 / sizes.0 as f64,
            per(plain_ns),
            per(once_ns),
            per(each_ns)
        );
    }
}
