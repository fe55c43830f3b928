//! Test support: the real `ringbearer` binary (debug build) and running a scenario through
//! the real `ringbearer-perf` binary, reading back its result JSON.
//!
//! Why the server is built from here: `CARGO_BIN_EXE_*` only names binaries of the package
//! under test, and cargo has no stable way to depend on another package's binary. So the
//! test runs `cargo build -p ringbearer` (a no-op when `cargo test --workspace` or an
//! earlier run built it; cargo does not hold the build lock while tests run) and uses
//! `TARGET/debug/ringbearer`. `RINGBEARER_BIN` overrides the path (and skips the build).
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// The debug `ringbearer` binary, built once per test process.
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("RINGBEARER_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "ringbearer"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build -p ringbearer");
        assert!(status.success(), "cargo build -p ringbearer failed");
        let bin = target_dir().join("debug/ringbearer");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// Runs `ringbearer-perf SCENARIO ARGS…` against the debug server with a fresh output
/// directory; returns the parsed result JSON (which exists even when a step failed).
pub fn run_scenario(scenario: &str, file_stem: &str, args: &[&str]) -> Value {
    let out = std::env::temp_dir().join(format!(
        "rb-perf-test-{}-{}-{}",
        scenario,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_ringbearer-perf"))
        .arg(scenario)
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--out")
        .arg(&out)
        .args(["--max-secs", "120", "--step-timeout-secs", "30"])
        .args(args)
        .output()
        .expect("running ringbearer-perf");
    let json = out.join(format!("{file_stem}-ringbearer.json"));
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no result {} ({e}); status {:?}\nstderr:\n{}",
            json.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        output.status.success() && v["error"].is_null(),
        "run failed: {}\nstderr:\n{}",
        v["error"],
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&out);
    v
}

pub fn phase<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no phase {name} in {v}"))
}

/// Asserts a step lost nothing: 0 gaps, duplicates, missing, unfinished, errors.
pub fn assert_clean(p: &Value) {
    let c = &p["counters"];
    assert_eq!(c["gaps"], 0, "gaps in {p}");
    assert_eq!(c["duplicates"], 0, "duplicates in {p}");
    assert_eq!(c["foreign"], 0, "foreign messages in {p}");
    assert_eq!(p["missing"], 0, "missing messages in {p}");
    assert_eq!(p["incomplete"], 0, "unfinished items in {p}");
    assert_eq!(c["subscribe_errors"], 0, "{p}");
    assert!(c["errors"].as_object().unwrap().is_empty(), "errors in {p}");
    assert!(
        c["closed"].as_object().unwrap().is_empty(),
        "closed connections in {p}"
    );
}
