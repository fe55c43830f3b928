//! Client failover (issue 14 item 5): the Rust client given several server URLs connects to
//! the first one that answers, and when its server goes away moves to the next one and
//! resumes every channel with its last seen id and epoch — nothing missing and nothing
//! twice when that server has the channel's log (the same data directory), and
//! `recovered: false` when it does not (another data directory, another epoch).

mod common;
use common::*;
use ringbearer_client::{Client, ClientConfig, Event, Events, SubscribeOptions, TokenSource};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const CH: &str = "wedding:timeline:w-7";

/// Fast reconnects, so a test spends its time on what it checks, not on waiting.
fn fast(cfg: ClientConfig) -> ClientConfig {
    ClientConfig {
        backoff: ringbearer_client::Backoff {
            initial: std::time::Duration::from_millis(20),
            max: std::time::Duration::from_millis(200),
            ..Default::default()
        },
        ..cfg
    }
}

/// Reads events until `f` returns `Some`, all within [`WAIT`] (a client that retries
/// forever keeps producing events, so each read alone being bounded is not enough).
async fn until<T>(events: &mut Events, mut f: impl FnMut(Event) -> Option<T>) -> T {
    let wait = async {
        loop {
            if let Some(t) = f(events.next().await.expect("events ended")) {
                return t;
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the awaited event in time")
}

/// Message ids until `n` have arrived (other events are skipped).
async fn messages(events: &mut Events, got: &mut Vec<u64>, n: usize) {
    until(events, |ev| {
        if let Event::Message(m) = ev {
            got.push(m.id);
        }
        (got.len() >= n).then_some(())
    })
    .await
}

#[tokio::test]
async fn connect_skips_a_dead_address_and_uses_the_live_server() {
    let server = TestServer::start("");
    let dead = format!("ws://{}/ws", free_port());
    let token = server.token("coord", "venue", "coordinator", &["w-7"]);
    let cfg = ClientConfig::new(dead.clone(), token).with_failover([server.url()]);
    let (client, _events) = Client::connect(cfg)
        .await
        .expect("connected to the live one");
    assert_eq!(client.server_url(), server.url());
    let create = ringbearer_client::CreateChannel {
        wedding_id: Some("w-7".into()),
        ..ringbearer_client::CreateChannel::new(CH)
    };
    assert_eq!(client.create(&create).await.unwrap().channel_name, CH);
    assert!(client.ping().await.is_ok());
    client.close().await;

    // Every server dead: the error is the last one's, a connect failure, and says where.
    let cfg = ClientConfig::new(dead, "t").with_failover([format!("ws://{}/ws", free_port())]);
    let err = Client::connect(cfg).await.expect_err("nothing listens");
    assert!(
        matches!(err, ringbearer_client::Error::Connect(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn stopped_server_moves_the_client_to_the_next_which_resumes_exactly() {
    let mut server = TestServer::start("");
    let a = server.url();
    let b_addr = free_port();
    let b = format!("ws://{b_addr}/ws");
    let mut coord = server
        .connect(&server.token("coord", "venue", "coordinator", &["w-7"]))
        .await;
    coord.create(CH, Some("w-7")).await;

    // The photographer's token source refuses (an invalid token) while `away` is set, so
    // the messages below are certainly published while she is away: they must come back
    // inside the resubscribe, not live.
    let away = Arc::new(AtomicBool::new(false));
    let token = server.token("photo", "studio", "photographer", &["w-7"]);
    let gate = away.clone();
    let source = TokenSource::from_fn(move || {
        if gate.load(Ordering::SeqCst) {
            "not-a-token".into()
        } else {
            token.clone()
        }
    });
    let cfg = fast(ClientConfig::new(a.clone(), source).with_failover([b.clone()]));
    let (client, mut events) = Client::connect(cfg).await.unwrap();
    assert_eq!(client.server_url(), a);
    client
        .subscribe(CH, SubscribeOptions::default())
        .await
        .unwrap();
    for n in 1..=3 {
        coord.publish(CH, json!({"n": n})).await;
    }
    let mut got = Vec::new();
    messages(&mut events, &mut got, 3).await;

    // Server A stops; the same data directory comes back as server B on another port.
    away.store(true, Ordering::SeqCst);
    drop(coord);
    server.restart_at(b_addr);
    assert_eq!(server.url(), b);
    let mut coord = server
        .connect(&server.token("coord", "venue", "coordinator", &["w-7"]))
        .await;
    for n in 4..=6 {
        coord.publish(CH, json!({"n": n})).await;
    }
    // The client has tried B (refused: the token) — failures name the server.
    until(&mut events, |ev| match ev {
        Event::ReconnectFailed { url, error, .. } if url == b => {
            assert_eq!(error.code(), Some("WS_UNAUTHORIZED"), "{error:?}");
            Some(())
        }
        Event::Message(m) => panic!("message {} while away", m.id),
        _ => None,
    })
    .await;
    away.store(false, Ordering::SeqCst);

    let mut resubscribed = None;
    until(&mut events, |ev| {
        match ev {
            Event::Reconnected => assert_eq!(client.server_url(), b),
            Event::Resubscribed { recovered, .. } => resubscribed = Some(recovered),
            Event::Message(m) => {
                assert!(
                    resubscribed.is_some(),
                    "message {} before the resubscribe",
                    m.id
                );
                got.push(m.id);
            }
            Event::ResubscribeFailed { error, .. } => panic!("resubscribe failed: {error:?}"),
            _ => {}
        }
        (resubscribed.is_some() && got.len() >= 6).then_some(())
    })
    .await;
    assert_eq!(resubscribed, Some(true));
    assert_eq!(client.server_url(), b);

    // Live on B afterwards, and nothing arrives twice.
    coord.publish(CH, json!({"n": 7})).await;
    messages(&mut events, &mut got, 7).await;
    assert!(client.ping().await.is_ok());
    while let Some(ev) = events.try_next() {
        if let Event::Message(m) = ev {
            got.push(m.id);
        }
    }
    assert_eq!(
        got,
        (1..=7).collect::<Vec<u64>>(),
        "every message once, in order"
    );
    client.close().await;
}

#[tokio::test]
async fn moving_to_a_server_without_the_log_is_reported_as_not_recovered() {
    // Two independent servers (two data directories, one signing secret): the channel
    // exists on both, with different epochs and histories.
    let mut a = TestServer::start("");
    let b_dir = std::env::temp_dir().join(format!("rb-failover-b-{}", std::process::id()));
    std::fs::create_dir_all(&b_dir).unwrap();
    std::fs::write(b_dir.join("dev-secret"), a.secret()).unwrap();
    let b = TestServer::start_in(&b_dir, "");
    let coord_token = a.token("coord", "venue", "coordinator", &["w-7"]);
    let mut coord_a = a.connect(&coord_token).await;
    let mut coord_b = b.connect(&coord_token).await;
    coord_a.create(CH, Some("w-7")).await;
    coord_b.create(CH, Some("w-7")).await;
    coord_b.publish(CH, json!({"on": "b"})).await;

    let cfg = fast(
        ClientConfig::new(
            a.url(),
            a.token("photo", "studio", "photographer", &["w-7"]),
        )
        .with_failover([b.url()]),
    );
    let (client, mut events) = Client::connect(cfg).await.unwrap();
    let sub = client
        .subscribe(CH, SubscribeOptions::default())
        .await
        .unwrap();
    for n in 1..=2 {
        coord_a.publish(CH, json!({"n": n})).await;
    }
    let mut got = Vec::new();
    messages(&mut events, &mut got, 2).await;

    drop(coord_a);
    let _ = a.stop();
    let recovered = until(&mut events, |ev| match ev {
        Event::Resubscribed { recovered, .. } => Some(recovered),
        Event::ResubscribeFailed { error, .. } => panic!("resubscribe failed: {error:?}"),
        _ => None,
    })
    .await;
    assert_eq!(client.server_url(), b.url());
    assert!(
        !recovered,
        "B's epoch differs from A's ({}): not a resume",
        sub.epoch
    );
    // B's own history comes whole (its ids start again under its epoch).
    let first = until(&mut events, |ev| match ev {
        Event::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!((first.id, first.payload), (1, json!({"on": "b"})));
    client.close().await;
}
