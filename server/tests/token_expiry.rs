//! Token expiry on an open connection (SPEC §4 Tokens) over real sockets: a connection
//! whose token is about to expire is told `token_expiring` with its `expires_at`, then at
//! `exp` gets `WS_UNAUTHORIZED` and close 4002; a fresh token (`op: token`) prevents the
//! close and re-arms the warning for the new token. Tokens live a few seconds; every wait
//! is on an event (a frame, another connection's close), bounded by `WAIT`.

mod common;
use common::*;
use serde_json::json;

const CONFIG: &str = "[io]\ntoken_leeway_secs = 0\ntoken_expiry_warning_secs = 60\n";

fn short_token(s: &TestServer, sub: &str, exp: u64) -> String {
    s.token_claims(json!({
        "sub": sub, "org": "studio", "role": "coordinator", "tier": "professional",
        "weddings": ["w-1"], "exp": exp, "nbf": now_s() - 1,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_warned_then_closed_with_4002() {
    let s = TestServer::start(CONFIG);
    let exp = now_s() + 3;
    let mut c = s.connect(&short_token(&s, "u", exp)).await;
    let w = c.wait_for(|v| v["op"] == "token_expiring").await;
    assert_eq!(w["expires_at"], exp, "{w}");
    let e = c.wait_for(|v| v["op"] == "error").await;
    assert_error(&e, "WS_UNAUTHORIZED");
    assert!(now_s() >= exp, "closed before exp");
    assert_eq!(c.ended().await, Ended::Close(Some(4002)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_prevents_the_close_and_re_arms_the_warning() {
    let s = TestServer::start(CONFIG);
    let exp = now_s() + 3;
    let mut c = s.connect(&short_token(&s, "u", exp)).await;
    // A witness whose token ends two seconds after the first one's: once it is closed,
    // the first token's end has passed on every shard's sweep.
    let mut witness = s.connect(&short_token(&s, "witness", exp + 2)).await;

    let w = c.wait_for(|v| v["op"] == "token_expiring").await;
    assert_eq!(w["expires_at"], exp);
    // Refreshed with a token that also expires within the warning: warned again, for it.
    let exp2 = now_s() + 30;
    let ok = c
        .request(json!({"op": "token", "token": short_token(&s, "u", exp2)}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    let w = c.wait_for(|v| v["op"] == "token_expiring").await;
    assert_eq!(w["expires_at"], exp2, "{w}");
    // A token for another user is refused and changes nothing.
    let e = c
        .request(json!({"op": "token", "token": short_token(&s, "mallory", now_s() + 3600)}))
        .await;
    assert_error(&e, "WS_UNAUTHORIZED");

    assert_error(
        &witness.wait_for(|v| v["op"] == "error").await,
        "WS_UNAUTHORIZED",
    );
    assert_eq!(witness.ended().await, Ended::Close(Some(4002)));
    // Past the first token's end, the refreshed connection is open and served.
    assert!(now_s() > exp);
    assert_eq!(c.request(json!({"op": "ping"})).await["op"], "pong");
    assert!(
        c.backlog.iter().all(|v| v["op"] != "error"),
        "{:?}",
        c.backlog
    );
}
