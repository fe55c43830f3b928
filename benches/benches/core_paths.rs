//! Hot paths of `ringbearer-core`, one message's life in order: validate the channel name
//! and pick its shard, parse the client's `publish`, answer `published`, encode the rkyv
//! frame for the owner, read it in place on a receiving shard (checked), render the
//! client's JSON.
//!
//! Payloads are 200 B (a typical app event) and 16 KiB; the fixtures are in `src/lib.rs`.
//! Results and the command that produced them: `docs/performance.md`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringbearer_benches::{message_frame, payload_json, publish_request, CHANNEL};
use ringbearer_core::message::{access_frame, render_message_json};
use ringbearer_core::protocol::{parse_request, reply_published};
use ringbearer_core::{shard_for, ChannelName, Limits};
use std::time::Duration;

/// Short runs: the whole suite must finish in about three minutes on a shared 2-core VM.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// Payload sizes, named as they appear in the benchmark ids.
const SIZES: [(&str, usize); 2] = [("200B", 200), ("16KiB", 16 * 1024)];

fn channel(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel");
    // The longest valid name: a 13-byte scope, 32-byte entity, 64-byte id (SPEC §1).
    let longest = format!("collaboration:{}:{}", "e".repeat(32), "I".repeat(64));
    assert_eq!(longest.len(), 111);
    for (label, name) in [("typical", CHANNEL), ("longest_111B", longest.as_str())] {
        g.bench_with_input(BenchmarkId::new("parse", label), name, |b, name| {
            b.iter(|| ChannelName::parse(black_box(name)).expect("valid"))
        });
    }
    g.bench_function("shard_for/typical", |b| {
        b.iter(|| shard_for(black_box(CHANNEL), black_box(2)))
    });
    g.finish();
}

fn protocol(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("protocol");
    for (label, len) in SIZES {
        let req = publish_request(&payload_json(len));
        eprintln!(
            "fixture protocol/parse_publish/{label}: request {} B",
            req.len()
        );
        g.throughput(Throughput::Bytes(req.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("parse_publish", label),
            req.as_str(),
            |b, req| b.iter(|| parse_request(black_box(req), &limits).expect("valid")),
        );
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("reply_published", |b| {
        b.iter(|| {
            reply_published(
                black_box(Some("p1")),
                black_box(CHANNEL),
                black_box(42),
                black_box(3),
                black_box(1),
            )
        })
    });
    g.finish();
}

fn message(c: &mut Criterion) {
    let mut g = c.benchmark_group("message");
    for (label, len) in SIZES {
        let frame = message_frame(&payload_json(len));
        let bytes = frame.encode();
        let mut json = Vec::new();
        render_message_json(access_frame(&bytes).expect("valid"), &mut json);
        eprintln!(
            "fixture message/*/{label}: payload {len} B, rkyv frame {} B, rendered JSON {} B",
            bytes.len(),
            json.len()
        );

        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("frame_encode", label), &frame, |b, f| {
            b.iter(|| black_box(f).encode())
        });
        g.bench_with_input(
            BenchmarkId::new("frame_access_checked", label),
            &bytes[..],
            |b, bytes| b.iter(|| access_frame(black_box(bytes)).expect("valid").id()),
        );
        // What a receiving shard does once per message: read in place, render.
        g.throughput(Throughput::Bytes(json.len() as u64));
        let archived = access_frame(&bytes).expect("valid");
        g.bench_with_input(
            BenchmarkId::new("render_json", label),
            archived,
            |b, archived| {
                b.iter(|| {
                    let mut out = Vec::new();
                    render_message_json(black_box(archived), &mut out);
                    out
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = channel, protocol, message
}
criterion_main!(benches);
