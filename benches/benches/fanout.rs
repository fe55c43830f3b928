//! Fan-out on a receiving shard, and the WebSocket frame encoder it ends in.
//!
//! `fanout_200B`: one message (200 B payload) delivered to N local subscribers, two ways, in
//! the same group so they share the machine's state:
//! - `ours`: what `io/src/shard.rs` (`on_deliver`) and the writer in `io/src/conn.rs` do —
//!   read the rkyv frame in place, render the client's JSON once into `Bytes`, push a clone
//!   of those `Bytes` into every subscriber's `Outbox`, then each subscriber's writer drains
//!   its outbox into its write buffer (frame header + payload copy).
//! - `naive`: a server holding the message as a serde struct (payload a `serde_json::Value`)
//!   calls `serde_json::to_vec` for every subscriber, then queues and frames it the same way.
//!
//! Both produce the same JSON (checked in `src/lib.rs`'s tests); only "serialize once" versus
//! "serialize per subscriber" differs. Throughput is in deliveries (elements) per second.
//! Not measured here: the socket write itself (see the whole-system figures).
//!
//! `ws_frame_encode`: `outbox::encode_frame` against tungstenite 0.30's `Frame::format`, for
//! an unmasked server text frame of 100 B, 4 KiB and 64 KiB.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringbearer_benches::{message_frame, payload_json, NaiveMessage};
use ringbearer_core::message::{access_frame, render_message_json};
use ringbearer_io::host::channel_hash;
use ringbearer_io::outbox::{encode_frame, Opcode, OutFrame, Outbox};
use std::time::Duration;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// `IoConfig`'s defaults: outbox bounds and the writer's batch size.
const OUTBOX_MAX_MESSAGES: usize = 1024;
const OUTBOX_MAX_BYTES: usize = 4 * 1024 * 1024;
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// One local subscriber: its outbox and its writer's reusable write buffer.
struct Sub {
    outbox: Outbox,
    tx: Vec<u8>,
}

fn subs(n: usize) -> Vec<Sub> {
    (0..n)
        .map(|_| Sub {
            outbox: Outbox::new(OUTBOX_MAX_MESSAGES, OUTBOX_MAX_BYTES),
            tx: Vec::new(),
        })
        .collect()
}

/// Every writer drains its outbox into its buffer, "writes" it, and clears it.
fn drain_all(subs: &mut [Sub]) {
    for s in subs.iter_mut() {
        s.outbox.drain_into(&mut s.tx, WRITE_BATCH_BYTES);
        black_box(&s.tx);
        s.tx.clear();
    }
}

fn fanout(c: &mut Criterion) {
    let frame = message_frame(&payload_json(200));
    let frame_bytes = frame.encode();
    let naive_msg = NaiveMessage::from_frame(&frame);
    let mut json = Vec::new();
    render_message_json(access_frame(&frame_bytes).expect("valid"), &mut json);
    eprintln!(
        "fixture fanout_200B: rkyv frame {} B, JSON per delivery {} B",
        frame_bytes.len(),
        json.len()
    );

    let mut g = c.benchmark_group("fanout_200B");
    for n in [1usize, 8, 100, 1000] {
        g.throughput(Throughput::Elements(n as u64));

        let mut ours_subs = subs(n);
        g.bench_with_input(BenchmarkId::new("ours", n), &frame_bytes[..], |b, fb| {
            b.iter(|| {
                let f = access_frame(black_box(fb)).expect("valid frame");
                let mut buf = Vec::new();
                render_message_json(f, &mut buf);
                let data = Bytes::from(buf);
                let (prio, h) = (f.priority(), channel_hash(f.channel.as_str()));
                for s in ours_subs.iter_mut() {
                    s.outbox
                        .push_message(
                            prio,
                            OutFrame {
                                opcode: Opcode::Text,
                                channel: h,
                                data: data.clone(),
                            },
                        )
                        .expect("outbox has room");
                }
                drain_all(&mut ours_subs);
            })
        });

        let mut naive_subs = subs(n);
        g.bench_with_input(BenchmarkId::new("naive", n), &naive_msg, |b, m| {
            b.iter(|| {
                let m = black_box(m);
                let (prio, h) = (
                    ringbearer_core::Priority::parse(m.priority).expect("valid"),
                    channel_hash(&m.channel),
                );
                for s in naive_subs.iter_mut() {
                    let data = Bytes::from(serde_json::to_vec(m).expect("serializes"));
                    s.outbox
                        .push_message(
                            prio,
                            OutFrame {
                                opcode: Opcode::Text,
                                channel: h,
                                data,
                            },
                        )
                        .expect("outbox has room");
                }
                drain_all(&mut naive_subs);
            })
        });
    }
    g.finish();
}

fn ws_frame_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_frame_encode");
    for (label, len) in [("100B", 100usize), ("4KiB", 4096), ("64KiB", 64 * 1024)] {
        let payload = Bytes::from(vec![b'x'; len]);
        g.throughput(Throughput::Bytes(len as u64));

        let mut out = Vec::with_capacity(len + 16);
        g.bench_with_input(BenchmarkId::new("ours", label), &payload, |b, p| {
            b.iter(|| {
                out.clear();
                encode_frame(&mut out, Opcode::Text, black_box(p));
                black_box(&out);
            })
        });

        // Same output bytes (checked once here), through tungstenite's public frame API.
        let mut check = Vec::new();
        Frame::message(payload.clone(), OpCode::Data(Data::Text), true)
            .format(&mut check)
            .expect("Vec write");
        out.clear();
        encode_frame(&mut out, Opcode::Text, &payload);
        assert_eq!(check, out, "tungstenite and ours frame identically");

        g.bench_with_input(BenchmarkId::new("tungstenite", label), &payload, |b, p| {
            b.iter(|| {
                out.clear();
                Frame::message(black_box(p).clone(), OpCode::Data(Data::Text), true)
                    .format(&mut out)
                    .expect("Vec write");
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = fanout, ws_frame_encode
}
criterion_main!(benches);
