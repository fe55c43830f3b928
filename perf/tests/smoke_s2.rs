//! A small S2 against the real server: 50 subscribers on one channel, 200 messages; every
//! subscriber gets every message, in id order, with no gap and no duplicate. No timings.

mod common;

#[test]
fn s2_small_fan_out_delivers_everything_in_order() {
    let v = common::run_scenario(
        "s2",
        "s2-fanout",
        &[
            "--connections",
            "50",
            "--rate",
            "100",
            "--duration-secs",
            "2",
            "--workers",
            "2",
        ],
    );
    let connect = common::phase(&v, "connect");
    assert_eq!(connect["incomplete"], 0, "{connect}");
    assert_eq!(connect["counters"]["subscribed"], 50, "{connect}");
    let step = common::phase(&v, "rate-100");
    common::assert_clean(step);
    let published = step["counters"]["acked"].as_u64().unwrap();
    assert!(
        published >= 150,
        "only {published} publishes answered: {step}"
    );
    assert_eq!(
        step["deliveries"].as_u64().unwrap(),
        published * 50,
        "{step}"
    );
    assert_eq!(step["latency"]["count"].as_u64().unwrap(), published * 50);
}
