//! `ringbearer-perf`: the whole-system load generator of Ringbearer, its scenario runner
//! (S1–S7 of the performance issue) and the comparison baseline server.
//!
//! Shape of a run: the coordinator (`ringbearer-perf sN …`) starts the server under test,
//! re-executes itself as worker processes (`ringbearer-perf worker`, each holding at most
//! ~9,000 connections because of the 20,000-open-files cap), drives them over stdin/stdout
//! JSON lines (`proto`), measures the server from `/proc` around each step
//! (`scenario::Env::phase`), and writes JSON and Markdown (`report`). Every process it
//! started is stopped at the end, on error too.
//!
//! What it does not do: load anything but this machine's loopback, or use the full
//! `ringbearer-client` (reconnect, de-duplication): the lean client in `client`/`worker`
//! keeps per-connection state to a socket and a few integers.

pub mod baseline;
pub mod client;
pub mod coord;
pub mod opts;
pub mod procfs;
pub mod proto;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod wire;
pub mod worker;
