//! A small S8 against the real server and the baseline: 64 subscribers in 8 channels, two
//! switch steps of 40 switches each with 3 messages waiting per channel; every switch ends
//! with every waiting message recovered (0 gaps, duplicates, missing, unfinished, all
//! `recovered: true`) and one switch time per switch. No timings.

mod common;

#[test]
fn s8_small_channel_switches_recover_everything() {
    let results = common::run_scenario_servers(
        "s8",
        "s8-switch",
        &["ringbearer", "baseline"],
        &[
            "--compare",
            "--connections",
            "64",
            "--publishers",
            "2",
            "--rate",
            "40,40",
            "--duration-secs",
            "1",
            "--per-channel",
            "3",
            "--workers",
            "2",
        ],
    );
    for v in &results {
        let connect = common::phase(v, "connect");
        common::assert_clean(connect);
        assert_eq!(connect["counters"]["subscribed"], 64, "{connect}");
        for step in ["switch-40", "switch-40"] {
            let p = common::phase(v, step);
            common::assert_clean(p);
            let c = &p["counters"];
            assert_eq!(c["subscribed"], 40, "{p}");
            assert_eq!(c["not_recovered"], 0, "{p}");
            assert_eq!(p["switch_latency"]["count"], 40, "{p}");
            // Each switch found at least the 3 messages of the last round waiting.
            assert!(c["replayed"].as_u64().unwrap() >= 120, "{p}");
        }
        // The second step: 24 subscribers switch for the first time (6 waiting each), 16
        // switch back (the 3 of the second round waiting).
        let second = v["phases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "switch-40")
            .nth(1)
            .expect("two switch steps");
        assert_eq!(second["counters"]["replayed"], 24 * 6 + 16 * 3, "{second}");
    }
}
