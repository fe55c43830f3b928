//! The shared-state operation (`state.rs`) driven without sockets: compare-and-set against
//! changes still being stored, answers only once stored, a failed store undoing pending
//! changes, the override notice, checkpoints holding stored documents only, and the
//! reserved message type.

use super::tests::CountingJournal;
use super::*;
use crate::journal::JournalError;
use ringbearer_core::channel_state::ChannelCheckpoint;
use ringbearer_core::protocol::{parse_request, Request as Parsed};
use ringbearer_core::{Role, Tier};

const T0: u64 = 1_800_000_000_000;
const CH: &str = "wedding:main:w";

fn who(sub: &str, role: Role) -> Arc<Claims> {
    Arc::new(Claims {
        sub: sub.into(),
        org: "o".into(),
        role,
        tier: Tier::Enterprise,
        weddings: vec!["w".into()],
        exp: u64::MAX,
        nbf: None,
    })
}

fn conn(n: u64) -> ConnRef {
    ConnRef { shard: 0, conn: n }
}

fn send(owner: &mut Owner, from: ConnRef, claims: &Arc<Claims>, json: &str) -> Effects {
    let env = parse_request(json, &owner.cfg.limits).unwrap();
    let op = match env.req {
        Parsed::Create(req) => Op::Create(req),
        Parsed::Subscribe(req) => Op::Subscribe(req),
        Parsed::Publish(req) => Op::Publish {
            req,
            recipients: false,
        },
        Parsed::StateGet { channel, doc } => Op::StateGet { channel, doc },
        Parsed::StateWrite(req) => Op::StateWrite(req),
        other => panic!("not used here: {other:?}"),
    };
    owner.handle(
        Now::at(T0),
        Request {
            from,
            r#ref: env.r#ref,
            claims: claims.clone(),
            op,
        },
    )
}

fn commit(owner: &mut Owner, result: Result<(), JournalError>) -> Effects {
    let (_, upto) = owner.pending_upto().expect("something pending");
    owner.committed(Now::at(T0), upto, result)
}

fn set(version: u64, value: &str) -> String {
    format!(
        r#"{{"op":"state_set","ref":"s","channel":"{CH}","doc":"d","version":{version},"value":{value}}}"#
    )
}

fn get() -> String {
    format!(r#"{{"op":"state_get","channel":"{CH}","doc":"d"}}"#)
}

fn replies(fx: &Effects) -> Vec<(ConnRef, &Reply)> {
    fx.replies().map(|(c, r)| (*c, r)).collect()
}

/// An owner with a journal and the channel `CH`, stored.
fn setup() -> (Owner, Rc<CountingJournal>) {
    let j = Rc::new(CountingJournal::default());
    let cfg = Rc::new(IoConfig::default());
    let mut owner = Owner::new(
        0,
        1,
        cfg,
        0,
        Some(j.clone()),
        Arc::default(),
        Weddings::default(),
    );
    let coord = who("coord", Role::Coordinator);
    send(
        &mut owner,
        conn(1),
        &coord,
        &format!(r#"{{"op":"create","name":"{CH}","wedding_id":"w"}}"#),
    );
    commit(&mut owner, Ok(()));
    (owner, j)
}

fn stored_version(owner: &mut Owner) -> u64 {
    let fx = send(owner, conn(1), &who("coord", Role::Coordinator), &get());
    match replies(&fx)[..] {
        [(_, Reply::State(v))] => v.version,
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_write_on_one_version_loses_even_while_the_first_is_being_stored() {
    let (mut owner, _) = setup();
    let (a, b) = (who("a", Role::Venue), who("b", Role::Florist));
    let fx = send(&mut owner, conn(2), &a, &set(0, r#"{"by":"a"}"#));
    assert!(fx.replies().next().is_none(), "not answered before stored");
    // The first is not stored yet, and a read does not see it.
    assert_eq!(stored_version(&mut owner), 0);
    let fx = send(&mut owner, conn(3), &b, &set(0, r#"{"by":"b"}"#));
    assert!(
        fx.replies().next().is_none(),
        "the conflict waits for the version it lost to: {fx:?}"
    );
    let fx = commit(&mut owner, Ok(()));
    let r = replies(&fx);
    assert!(
        matches!(r[0], (c, Reply::StateOk(ok)) if c == conn(2) && ok.version == 1 && ok.id == 1),
        "{r:?}"
    );
    match r[1] {
        (c, Reply::StateConflict { current, yours }) => {
            assert_eq!(c, conn(3));
            assert_eq!((current.version, *yours), (1, 0));
            assert_eq!(current.value.as_ref().unwrap()["by"], "a");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stored_version(&mut owner), 1);
}

#[test]
fn a_failed_store_undoes_pending_changes() {
    let (mut owner, _) = setup();
    let a = who("a", Role::Venue);
    send(&mut owner, conn(2), &a, &set(0, r#"{"n":1}"#));
    send(&mut owner, conn(2), &a, &set(1, r#"{"n":2}"#));
    let fx = commit(&mut owner, Err(JournalError::Failed("disk".into())));
    let r = replies(&fx);
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|(_, x)| matches!(x, Reply::Error(e) if e.code == ErrorCode::Internal)));
    assert_eq!(stored_version(&mut owner), 0);
    // Version 0 is current again, and the message id 1 is reused.
    send(&mut owner, conn(2), &a, &set(0, r#"{"n":3}"#));
    let fx = commit(&mut owner, Ok(()));
    assert!(
        matches!(replies(&fx)[..], [(_, Reply::StateOk(ref ok))] if ok.version == 1 && ok.id == 1),
        "{fx:?}"
    );
}

#[test]
fn an_outranking_stale_write_tells_the_overridden_writers_subscribed_connections() {
    let (mut owner, _) = setup();
    let (vendor, couple) = (who("v", Role::Photographer), who("c", Role::Couple));
    let sub = format!(r#"{{"op":"subscribe","channel":"{CH}"}}"#);
    send(&mut owner, conn(5), &vendor, &sub);
    send(&mut owner, conn(6), &vendor, &sub);
    send(&mut owner, conn(2), &vendor, &set(0, r#"{"x":1}"#));
    commit(&mut owner, Ok(()));
    send(&mut owner, conn(3), &couple, &set(0, r#"{"x":2}"#));
    let fx = commit(&mut owner, Ok(()));
    let r = replies(&fx);
    match r[0] {
        (c, Reply::StateOk(ok)) => {
            assert_eq!(c, conn(3));
            let o = ok.overrode.as_ref().expect("overrode");
            assert_eq!((o.user_id.as_str(), o.version), ("v", 1));
        }
        other => panic!("{other:?}"),
    }
    let mut told: Vec<ConnRef> = r[1..]
        .iter()
        .map(|(c, x)| {
            assert!(
                matches!(x, Reply::StateOverridden { version: 2, yours: 1, by, .. } if by.role == Role::Couple),
                "{x:?}"
            );
            *c
        })
        .collect();
    told.sort();
    assert_eq!(told, [conn(5), conn(6)]);
    // The stored change went to the subscribing shard.
    assert_eq!(
        fx.list
            .iter()
            .filter(|e| matches!(e, Effect::Deliver { .. }))
            .count(),
        1
    );
}

#[test]
fn a_checkpoint_holds_the_stored_documents_only() {
    let (mut owner, _) = setup();
    let a = who("a", Role::Coordinator);
    send(&mut owner, conn(2), &a, &set(0, r#"{"n":1}"#));
    commit(&mut owner, Ok(()));
    send(&mut owner, conn(2), &a, &set(1, r#"{"n":2}"#));
    let round = owner.retention_snapshot(T0);
    let (_, json) = &round.checkpoints[0];
    let cp: ChannelCheckpoint = serde_json::from_slice(json).unwrap();
    assert_eq!(cp.last_id, 1);
    assert_eq!(cp.docs["d"].version, 1, "not the change still being stored");
    assert_eq!(cp.docs["d"].value["n"], 1);
}

#[test]
fn the_state_type_cannot_be_published() {
    let (mut owner, _) = setup();
    let fx = send(
        &mut owner,
        conn(2),
        &who("a", Role::Coordinator),
        &format!(r#"{{"op":"publish","channel":"{CH}","type":"state","payload":{{}}}}"#),
    );
    assert!(
        matches!(replies(&fx)[..], [(_, Reply::Error(ref e))] if e.code == ErrorCode::BadRequest)
    );
    assert!(owner.pending_upto().is_none(), "nothing appended");
}

#[test]
fn documents_per_channel_are_bounded() {
    let (mut owner, _) = setup();
    let a = who("a", Role::Coordinator);
    let n = owner.cfg.limits.state_docs_per_channel;
    for i in 0..n {
        let req = format!(
            r#"{{"op":"state_set","channel":"{CH}","doc":"d{i}","version":0,"value":{{}}}}"#
        );
        send(&mut owner, conn(2), &a, &req);
    }
    let req = format!(
        r#"{{"op":"state_set","channel":"{CH}","doc":"one-more","version":0,"value":{{}}}}"#
    );
    let fx = send(&mut owner, conn(2), &a, &req);
    assert!(
        matches!(replies(&fx)[..], [(_, Reply::Error(ref e))] if e.code == ErrorCode::BadRequest),
        "{fx:?}"
    );
    // An existing one is still writable.
    let req =
        format!(r#"{{"op":"state_set","channel":"{CH}","doc":"d0","version":1,"value":{{}}}}"#);
    assert!(send(&mut owner, conn(2), &a, &req).wake_commit);
}

#[test]
fn a_channels_documents_are_bounded_in_bytes_for_its_checkpoint() {
    let j = Rc::new(CountingJournal::default());
    let mut cfg = IoConfig::default();
    cfg.limits.state_max_value_bytes = 100;
    cfg.limits.state_max_bytes_per_channel = 250;
    let mut owner = Owner::new(
        0,
        1,
        Rc::new(cfg),
        0,
        Some(j),
        Arc::default(),
        Weddings::default(),
    );
    let a = who("a", Role::Coordinator);
    send(
        &mut owner,
        conn(1),
        &a,
        &format!(r#"{{"op":"create","name":"{CH}","wedding_id":"w"}}"#),
    );
    commit(&mut owner, Ok(()));
    let x = "x".repeat(80);
    let write = |doc: &str, version: u64| {
        format!(
            r#"{{"op":"state_set","channel":"{CH}","doc":"{doc}","version":{version},"value":{{"v":"{x}"}}}}"#
        )
    };
    // Three documents of 88 bytes: the third (one still being stored counts) passes 250.
    send(&mut owner, conn(1), &a, &write("d1", 0));
    commit(&mut owner, Ok(()));
    assert!(send(&mut owner, conn(1), &a, &write("d2", 0)).wake_commit);
    let fx = send(&mut owner, conn(1), &a, &write("d3", 0));
    assert!(
        matches!(replies(&fx)[..], [(_, Reply::Error(ref e))] if e.code == ErrorCode::PayloadTooLarge),
        "{fx:?}"
    );
    // Rewriting a document counts its new size only.
    assert!(send(&mut owner, conn(1), &a, &write("d1", 1)).wake_commit);
}

#[test]
fn a_change_message_keeps_the_payload_bound() {
    let j = Rc::new(CountingJournal::default());
    let mut cfg = IoConfig::default();
    cfg.limits.max_payload_bytes = 300;
    cfg.limits.state_max_value_bytes = 200;
    cfg.limits.state_max_bytes_per_channel = 200;
    let mut owner = Owner::new(
        0,
        1,
        Rc::new(cfg),
        0,
        Some(j),
        Arc::default(),
        Weddings::default(),
    );
    let a = who("a", Role::Coordinator);
    send(
        &mut owner,
        conn(1),
        &a,
        &format!(r#"{{"op":"create","name":"{CH}","wedding_id":"w"}}"#),
    );
    commit(&mut owner, Ok(()));
    // A 150-byte patch creates a 150-byte value: fields and value together pass 300.
    let x = "x".repeat(140);
    let req = format!(
        r#"{{"op":"state_patch","channel":"{CH}","doc":"d","version":0,"fields":{{"v":"{x}"}}}}"#
    );
    let fx = send(&mut owner, conn(1), &a, &req);
    assert!(
        matches!(replies(&fx)[..], [(_, Reply::Error(ref e))] if e.code == ErrorCode::PayloadTooLarge),
        "{fx:?}"
    );
    assert!(owner.pending_upto().is_none(), "nothing appended");
    // The same value as a whole-value write fits.
    let req = format!(
        r#"{{"op":"state_set","channel":"{CH}","doc":"d","version":0,"value":{{"v":"{x}"}}}}"#
    );
    assert!(send(&mut owner, conn(1), &a, &req).wake_commit);
}
