//! Test support: the real `ringbearer` binary (debug build) and running a scenario through
//! the real `ringbearer-perf` binary, reading back its result JSON.
//!
//! Where the server comes from: `CARGO_BIN_EXE_*` only names binaries of the package under
//! test, and cargo has no stable way to depend on another package's binary. The test does
//! not run cargo itself (a nested `cargo build -p ringbearer` resolved features apart from
//! the workspace and rebuilt much of the tree, and held the build lock meanwhile): it takes
//! `ringbearer` from the directory of the profile this test was built in
//! (`target/<profile>/`, the parent of the test's own `deps/`), which
//! `cargo test --workspace` builds with the server's own tests. Running only this package
//! needs `cargo build -p ringbearer` (same profile) first. `RINGBEARER_BIN` overrides the path.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The `ringbearer` binary of this test's profile; panics with what to do if it is missing.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RINGBEARER_BIN") {
        return PathBuf::from(p);
    }
    // This test runs as target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps/");
    let bin = profile_dir.join("ringbearer");
    assert!(
        bin.is_file(),
        "{} is missing: these tests run the server that cargo built for the same profile. \
         Run `cargo test --workspace` (it builds it), or `cargo build -p ringbearer` (with the \
         same --release/--profile as this test) first, or set RINGBEARER_BIN to a ringbearer \
         binary",
        bin.display()
    );
    bin
}

/// Runs `ringbearer-perf SCENARIO ARGS…` against this profile's server with a fresh output
/// directory; returns the parsed result JSON (which exists even when a step failed).
pub fn run_scenario(scenario: &str, file_stem: &str, args: &[&str]) -> Value {
    let mut v = run_scenario_servers(scenario, file_stem, &["ringbearer"], args);
    v.pop().expect("one result")
}

/// As [`run_scenario`], reading the result of each server in `servers` (`ringbearer`,
/// `baseline`: pass `--compare` in `args` for both).
pub fn run_scenario_servers(
    scenario: &str,
    file_stem: &str,
    servers: &[&str],
    args: &[&str],
) -> Vec<Value> {
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
    let mut results = Vec::new();
    for server in servers {
        let json = out.join(format!("{file_stem}-{server}.json"));
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
            "run against {server} failed: {}\nstderr:\n{}",
            v["error"],
            String::from_utf8_lossy(&output.stderr)
        );
        results.push(v);
    }
    let _ = std::fs::remove_dir_all(&out);
    results
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
