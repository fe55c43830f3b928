//! Tenant isolation across shards (SPEC §1): eight weddings, one photographer subscribed to
//! all of them and a couple per wedding. Each couple sees only its own wedding's messages;
//! the photographer sees each wedding's messages in its own channel, in order; a token
//! without a wedding is refused with `WS_WEDDING_ISOLATION_VIOLATION` and receives nothing.

mod common;
use common::*;
use serde_json::json;

const WEDDINGS: usize = 8;
const PER_WEDDING: u64 = 5;

fn chan(i: usize) -> String {
    format!("wedding:main:w-{i}")
}

#[tokio::test]
async fn eight_weddings_stay_apart() {
    let server = TestServer::start("");
    let all: Vec<String> = (0..WEDDINGS).map(|i| format!("w-{i}")).collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();

    let mut photographer = server
        .connect(&server.token("photo-1", "studio-a", "photographer", &all_refs))
        .await;
    let mut coordinators = Vec::new();
    let mut couples = Vec::new();
    for (i, w) in all.iter().enumerate() {
        let mut coord = server
            .connect(&server.token(
                &format!("coord-{i}"),
                &format!("venue-{i}"),
                "coordinator",
                &[w],
            ))
            .await;
        let created = coord.create(&chan(i), Some(w)).await;
        assert_eq!(created["op"], "created", "{created}");
        coordinators.push(coord);
    }
    for (i, w) in all.iter().enumerate() {
        let mut couple = server
            .connect(&server.token(
                &format!("couple-{i}"),
                &format!("venue-{i}"),
                "couple",
                &[w],
            ))
            .await;
        assert_eq!(couple.subscribe(&chan(i)).await["op"], "subscribed");
        // The couple may not reach any other wedding, whatever name it guesses.
        let other = chan((i + 1) % WEDDINGS);
        assert_error(
            &couple.subscribe(&other).await,
            "WS_WEDDING_ISOLATION_VIOLATION",
        );
        let p = couple.publish(&other, json!({"sneaky": true})).await;
        assert_error(&p, "WS_WEDDING_ISOLATION_VIOLATION");
        couples.push(couple);
    }
    for i in 0..WEDDINGS {
        assert_eq!(photographer.subscribe(&chan(i)).await["op"], "subscribed");
    }

    // An outsider whose token lists no wedding: refused everywhere, receives nothing.
    let mut outsider = server
        .connect(&server.token("outsider", "venue-0", "coordinator", &[]))
        .await;
    for i in 0..WEDDINGS {
        assert_error(
            &outsider.subscribe(&chan(i)).await,
            "WS_WEDDING_ISOLATION_VIOLATION",
        );
    }
    // Re-creating an existing name does not hand it over either.
    assert_error(
        &outsider.create(&chan(0), Some("w-0")).await,
        "WS_WEDDING_ISOLATION_VIOLATION",
    );

    // Interleave publishes across weddings.
    for n in 0..PER_WEDDING {
        for (i, coord) in coordinators.iter_mut().enumerate() {
            let r = coord.publish(&chan(i), json!({"wedding": i, "n": n})).await;
            assert_eq!(r["op"], "published", "{r}");
            assert_eq!(r["id"], n + 1);
        }
    }

    for (i, couple) in couples.iter_mut().enumerate() {
        let got = couple.messages(&chan(i), PER_WEDDING as usize).await;
        let ns: Vec<u64> = got
            .iter()
            .map(|m| m["payload"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (0..PER_WEDDING).collect::<Vec<_>>());
        assert!(got.iter().all(|m| m["payload"]["wedding"] == i));
    }
    for i in 0..WEDDINGS {
        let got = photographer.messages(&chan(i), PER_WEDDING as usize).await;
        let ids: Vec<u64> = got.iter().map(|m| m["id"].as_u64().unwrap()).collect();
        assert_eq!(
            ids,
            (1..=PER_WEDDING).collect::<Vec<_>>(),
            "wedding {i} in order"
        );
        assert!(got.iter().all(|m| m["payload"]["wedding"] == i));
    }

    // Nothing else arrived anywhere: a ping round trip flushes each connection's queue,
    // and no stray `message` frame may precede the pong.
    for (i, couple) in couples.iter_mut().enumerate() {
        let pong = couple.request(json!({"op": "ping"})).await;
        assert_eq!(pong["op"], "pong");
        assert!(
            couple.backlog.iter().all(|v| v["op"] != "message"),
            "couple {i} got a stray message: {:?}",
            couple.backlog
        );
    }
    let pong = outsider.request(json!({"op": "ping"})).await;
    assert_eq!(pong["op"], "pong");
    assert!(
        outsider.backlog.iter().all(|v| v["op"] != "message"),
        "{:?}",
        outsider.backlog
    );
    let pong = photographer.request(json!({"op": "ping"})).await;
    assert_eq!(pong["op"], "pong");
    assert!(
        photographer.backlog.iter().all(|v| v["op"] != "message"),
        "{:?}",
        photographer.backlog
    );
}

#[tokio::test]
async fn organization_channels_and_roles() {
    let server = TestServer::start("");
    let mut admin = server
        .connect(&server.token("a1", "org-a", "admin", &["*"]))
        .await;
    // A channel without a wedding belongs to the creator's organization only.
    assert_eq!(
        admin.create("supplier:dashboard:org-a", None).await["op"],
        "created"
    );
    let mut same_org = server
        .connect(&server.token("c1", "org-a", "caterer", &[]))
        .await;
    assert_eq!(
        same_org.subscribe("supplier:dashboard:org-a").await["op"],
        "subscribed"
    );
    let mut other_org = server
        .connect(&server.token("c2", "org-b", "caterer", &[]))
        .await;
    assert_error(
        &other_org.subscribe("supplier:dashboard:org-a").await,
        "WS_FORBIDDEN",
    );
    // `*` reaches the admin's own organization's weddings, not another's.
    let mut coord_b = server
        .connect(&server.token("cb", "org-b", "coordinator", &["w-b"]))
        .await;
    assert_eq!(
        coord_b.create("wedding:main:w-b", Some("w-b")).await["op"],
        "created"
    );
    assert_error(
        &admin.subscribe("wedding:main:w-b").await,
        "WS_WEDDING_ISOLATION_VIOLATION",
    );
    // Broadcast channels: guests read, only write roles publish.
    let mut coord = server
        .connect(&server.token("co", "org-a", "coordinator", &["w-1"]))
        .await;
    let r = coord.request(json!({"op": "create", "name": "venue:announcements:w-1", "type": "broadcast", "wedding_id": "w-1"})).await;
    assert_eq!(r["op"], "created", "{r}");
    let mut guest = server
        .connect(&server.token("g1", "org-x", "guest", &["w-1"]))
        .await;
    assert_eq!(
        guest.subscribe("venue:announcements:w-1").await["op"],
        "subscribed"
    );
    assert_error(
        &guest.publish("venue:announcements:w-1", json!(1)).await,
        "WS_FORBIDDEN",
    );
    assert_error(
        &guest.create("guest:rsvp:w-1", Some("w-1")).await,
        "WS_FORBIDDEN",
    );
    let p = coord
        .publish("venue:announcements:w-1", json!({"ceremony": "indoors"}))
        .await;
    assert_eq!(p["delivered_count"], 1);
    assert_eq!(
        guest.messages("venue:announcements:w-1", 1).await[0]["payload"]["ceremony"],
        "indoors"
    );
    // Private channels: creator and named members only. A member of another organization
    // is named with its organization (a plain id is a user of the channel's own).
    let r = coord.request(json!({"op": "create", "name": "couple:private:w-1", "type": "private", "wedding_id": "w-1", "members": [{"org": "org-x", "user_id": "cp1"}]})).await;
    assert_eq!(r["op"], "created", "{r}");
    let mut member = server
        .connect(&server.token("cp1", "org-x", "couple", &["w-1"]))
        .await;
    assert_eq!(
        member.subscribe("couple:private:w-1").await["op"],
        "subscribed"
    );
    let mut stranger = server
        .connect(&server.token("cp2", "org-x", "couple", &["w-1"]))
        .await;
    assert_error(
        &stranger.subscribe("couple:private:w-1").await,
        "WS_FORBIDDEN",
    );
    // Creating an existing name returns the existing channel to a caller of its own
    // organization with access; another organization is told, never handed it.
    let again = coord.create("couple:private:w-1", Some("w-1")).await;
    assert_eq!(again["op"], "created");
    assert_eq!(again["channel_id"], r["channel_id"]);
    assert_eq!(again["created_at"], r["created_at"]);
    assert_error(
        &member.create("couple:private:w-1", Some("w-1")).await,
        "WS_FORBIDDEN",
    );
}
