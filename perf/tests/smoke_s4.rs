//! A small S4 against the real server: 200 connections connect and subscribe, all drop, two
//! messages per channel go out while they are away, and all reconnect with jitter and
//! resume; every one of them recovers both messages with no gap and no duplicate, and
//! each connection's establishment time is recorded in both storms. No timings.

mod common;

#[test]
fn s4_small_storm_recovers_everything() {
    let v = common::run_scenario(
        "s4",
        "s4-storm",
        &[
            "--connections",
            "200",
            "--jitter-ms",
            "300",
            "--workers",
            "2",
        ],
    );
    let cold = common::phase(&v, "cold-connect");
    common::assert_clean(cold);
    assert_eq!(cold["counters"]["subscribed"], 200, "{cold}");
    // One establishment time per connection, in both storms (values are not checked).
    assert_eq!(cold["connect_latency"]["count"], 200, "{cold}");
    let storm = common::phase(&v, "reconnect-storm");
    common::assert_clean(storm);
    assert_eq!(storm["counters"]["subscribed"], 200, "{storm}");
    assert_eq!(storm["counters"]["not_recovered"], 0, "{storm}");
    assert_eq!(storm["connect_latency"]["count"], 200, "{storm}");
    // Two messages per subscriber came back inside `subscribed` (or right after it), and
    // `deliveries` counts both kinds.
    let c = &storm["counters"];
    let got = c["replayed"].as_u64().unwrap() + c["deliveries"].as_u64().unwrap();
    assert_eq!(got, 400, "{storm}");
    assert_eq!(storm["deliveries"], 400, "{storm}");
}
