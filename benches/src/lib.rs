//! Bench crate; the benchmarks are in `benches/benches/`.
