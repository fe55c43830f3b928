//! Tier and rate limits at their boundaries (SPEC §1), over real sockets with 2 shards:
//! the N-th allowed, the N+1-th refused with the SPEC code (and `retry_after` for rates),
//! and nothing else disturbed.

mod common;
use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

#[tokio::test]
async fn free_tier_message_rate() {
    let server = TestServer::start("");
    let mut c = server
        .connect(&server.token_tier("u", "o", "coordinator", "free", &["w"]))
        .await;
    c.create("wedding:main:w", Some("w")).await;
    for n in 1..=10 {
        let p = c.publish("wedding:main:w", json!(n)).await;
        assert_eq!(p["op"], "published", "publish {n}: {p}");
    }
    let e = c.publish("wedding:main:w", json!(11)).await;
    assert_error(&e, "WS_RATE_LIMITED");
    assert_eq!(e["retryable"], true);
    assert_eq!(
        e["retry_after"], 6,
        "one message every 6 s at 10 a minute: {e}"
    );
    // The refused one was not stored: the next id, once allowed, is 11.
    let mut other = server
        .connect(&server.token_tier("v", "o", "coordinator", "free", &["w"]))
        .await;
    assert_eq!(other.publish("wedding:main:w", json!("x")).await["id"], 11);
}

#[tokio::test]
async fn channel_publish_rate() {
    let server = TestServer::start("[limits]\nchannel_messages_per_min = 5\n");
    let mut c = server
        .connect(&server.token_tier("u", "o", "coordinator", "enterprise", &["w"]))
        .await;
    c.create("wedding:main:w", Some("w")).await;
    for n in 1..=5 {
        assert_eq!(
            c.publish("wedding:main:w", json!(n)).await["op"],
            "published"
        );
    }
    let e = c.publish("wedding:main:w", json!(6)).await;
    assert_error(&e, "WS_RATE_LIMITED");
    assert_eq!(e["retry_after"], 12, "{e}");
    // Another channel has its own rate.
    c.create("wedding:other:w", Some("w")).await;
    assert_eq!(
        c.publish("wedding:other:w", json!(1)).await["op"],
        "published"
    );
}

#[tokio::test]
async fn connections_subscriptions_and_channels_per_tier() {
    let server = TestServer::start("");
    let token = server.token_tier("sam", "studio", "photographer", "free", &["w"]);
    let mut a = server.connect(&token).await;
    let _b = server.connect(&token).await;
    // Free tier: 2 connections per user; the third upgrade is refused with 429.
    let mut req = server.url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "WS_TIER_LIMIT", "{body}");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // Another user of the same organization is counted apart.
    let _c = server
        .connect(&server.token_tier("kim", "studio", "photographer", "free", &["w"]))
        .await;

    // Free tier: 3 channels per organization.
    for i in 0..3 {
        assert_eq!(
            a.create(&format!("wedding:c{i}:w"), Some("w")).await["op"],
            "created"
        );
    }
    assert_error(&a.create("wedding:c3:w", Some("w")).await, "WS_TIER_LIMIT");
    // Re-creating an existing name is not a new channel.
    assert_eq!(a.create("wedding:c0:w", Some("w")).await["op"], "created");

    // Free tier: 3 subscriptions per user, over all its connections.
    for i in 0..3 {
        assert_eq!(
            a.subscribe(&format!("wedding:c{i}:w")).await["op"],
            "subscribed"
        );
    }
    // Subscribing again to one already held is not a new subscription.
    assert_eq!(a.subscribe("wedding:c1:w").await["op"], "subscribed");
    let mut coord = server
        .connect(&server.token_tier("co", "venue", "coordinator", "enterprise", &["w"]))
        .await;
    coord.create("wedding:extra:w", Some("w")).await;
    assert_error(&a.subscribe("wedding:extra:w").await, "WS_TIER_LIMIT");
    // Unsubscribing gives one back; a refused subscribe does not use it up.
    assert_eq!(
        a.request(json!({"op": "unsubscribe", "channel": "wedding:c0:w"}))
            .await["op"],
        "unsubscribed"
    );
    assert_error(
        &a.subscribe("wedding:missing:w").await,
        "WS_CHANNEL_NOT_FOUND",
    );
    assert_eq!(a.subscribe("wedding:extra:w").await["op"], "subscribed");
    assert_error(&a.subscribe("wedding:c0:w").await, "WS_TIER_LIMIT");
}
