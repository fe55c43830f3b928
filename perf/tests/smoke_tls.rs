//! A small S1 over TLS (`--tls`) against the real server and the baseline: 40 connections
//! handshake TLS with the run's self-signed certificate, upgrade and subscribe, and are
//! held; the memory per connection and each connection's establishment time are reported.
//! No timings.

mod common;

#[test]
fn s1_over_tls_connects_everyone() {
    let results = common::run_scenario_servers(
        "s1",
        "s1-idle-tls",
        &["ringbearer", "baseline"],
        &[
            "--tls",
            "--compare",
            "--connections",
            "40",
            "--duration-secs",
            "1",
            "--workers",
            "1",
        ],
    );
    for v in &results {
        assert_eq!(v["tls"], true, "{v}");
        let connect = common::phase(v, "connect");
        common::assert_clean(connect);
        assert_eq!(connect["counters"]["subscribed"], 40, "{connect}");
        // Each of them completed a TLS handshake with the server first.
        assert_eq!(connect["counters"]["tls_subscribed"], 40, "{connect}");
        assert_eq!(connect["connect_latency"]["count"], 40, "{connect}");
        assert!(connect["rss_per_connection_bytes"].is_number(), "{connect}");
        common::assert_clean(common::phase(v, "idle-hold"));
    }
}
