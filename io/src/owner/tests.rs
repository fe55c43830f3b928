//! The owner driven without sockets, executors or a clock: the durability rules of
//! `commit.rs` and restore, with a journal whose positions count appends (the tests play
//! the host's commit pump).

use super::*;
use crate::journal::{Entry, JournalError, LocalBoxFuture, RestoredMessage};
use ringbearer_core::access::ChannelAccess;
use ringbearer_core::message::MessageFrame;
use ringbearer_core::protocol::{parse_request, Request as Parsed};
use ringbearer_core::{Permissions, Role, Tier};
use std::cell::Cell;

/// A journal whose positions count appends; `durable` is never awaited here (the tests call
/// `committed` themselves, as the commit pump would).
#[derive(Default)]
pub(crate) struct CountingJournal {
    appended: Cell<u64>,
    pub(crate) refuse: Cell<bool>,
}

impl Journal for CountingJournal {
    fn append(&self, _: &str, _: u64, _: Entry<'_>) -> Result<u64, JournalError> {
        if self.refuse.get() {
            return Err(JournalError::Backpressure("test".into()));
        }
        self.appended.set(self.appended.get() + 1);
        Ok(self.appended.get())
    }
    fn durable(&self, _: u64) -> LocalBoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async { Ok(()) })
    }
    fn segments(&self) -> usize {
        1
    }
    fn close(&self) -> LocalBoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async { Ok(()) })
    }
    fn reclaim(
        &self,
        _: crate::journal::IsLive,
    ) -> LocalBoxFuture<'_, Result<usize, JournalError>> {
        Box::pin(async { Ok(0) })
    }
}

fn claims() -> Arc<Claims> {
    Arc::new(Claims {
        sub: "u".into(),
        org: "o".into(),
        role: Role::Coordinator,
        tier: Tier::Free,
        weddings: vec!["w".into()],
        exp: u64::MAX,
        nbf: None,
    })
}

const ME: ConnRef = ConnRef { shard: 0, conn: 1 };
const T0: u64 = 1_800_000_000_000;

fn owner(journal: Option<Rc<dyn Journal>>) -> Owner {
    let cfg = Rc::new(IoConfig::default());
    Owner::new(0, 1, cfg, 0, journal, Arc::default(), Weddings::default())
}

fn request(owner: &mut Owner, json: &str) -> Effects {
    let env = parse_request(json, &owner.cfg.limits).unwrap();
    let op = match env.req {
        Parsed::Create(req) => Op::Create(req),
        Parsed::Publish(req) => Op::Publish {
            req,
            recipients: false,
        },
        Parsed::Subscribe(req) => Op::Subscribe(req),
        other => panic!("not used here: {other:?}"),
    };
    owner.handle(
        Now::at(T0),
        Request {
            from: ME,
            r#ref: env.r#ref,
            claims: claims(),
            op,
        },
    )
}

fn replies(fx: &Effects) -> Vec<&Reply> {
    fx.replies().map(|(_, r)| r).collect()
}

fn delivers(fx: &Effects) -> usize {
    fx.list
        .iter()
        .filter(|e| matches!(e, Effect::Deliver { .. }))
        .count()
}

fn published(r: &Reply) -> (u64, usize) {
    match r {
        Reply::Published(p) => (p.id, p.delivered),
        other => panic!("not published: {other:?}"),
    }
}

fn code(r: &Reply) -> ErrorCode {
    match r {
        Reply::Error(e) => e.code,
        other => panic!("not an error: {other:?}"),
    }
}

fn commit_all(owner: &mut Owner, result: Result<(), JournalError>) -> Effects {
    let (_, upto) = owner.pending_upto().expect("something pending");
    owner.committed(Now::at(T0), upto, result)
}

fn owner_with_journal() -> (Owner, Rc<CountingJournal>) {
    let j = Rc::new(CountingJournal::default());
    let mut owner = owner(Some(j.clone()));
    // A create is answered only once stored.
    let fx = request(
        &mut owner,
        r#"{"op":"create","name":"wedding:main:w","wedding_id":"w"}"#,
    );
    assert!(fx.replies().next().is_none());
    let fx = commit_all(&mut owner, Ok(()));
    assert!(
        matches!(replies(&fx)[..], [Reply::Created { .. }]),
        "{fx:?}"
    );
    let fx = request(
        &mut owner,
        r#"{"op":"subscribe","channel":"wedding:main:w"}"#,
    );
    assert!(
        matches!(replies(&fx)[..], [Reply::Subscribed { .. }]),
        "{fx:?}"
    );
    (owner, j)
}

#[test]
fn a_channel_whose_creation_was_not_stored_never_existed() {
    let mut owner = owner(Some(Rc::new(CountingJournal::default())));
    request(
        &mut owner,
        r#"{"op":"create","ref":"c","name":"wedding:gone:w","wedding_id":"w"}"#,
    );
    let fx = commit_all(&mut owner, Err(JournalError::Failed("x".into())));
    assert_eq!(code(replies(&fx)[0]), ErrorCode::Internal);
    assert_eq!(owner.owned_channels(), 0);
    assert!(fx
        .list
        .iter()
        .any(|e| matches!(e, Effect::Record(Record::ChannelDropped(_)))));
}

const PUBLISH: &str = r#"{"op":"publish","ref":"p","channel":"wedding:main:w","type":"general","payload":1,"idempotency_key":"k"}"#;

#[test]
fn nothing_is_answered_or_delivered_before_it_is_durable() {
    let (mut owner, _) = owner_with_journal();
    let fx = request(&mut owner, PUBLISH);
    assert!(fx.list.is_empty(), "no reply, no delivery yet: {fx:?}");
    // An idempotent repeat of a message still being stored waits too.
    assert!(request(&mut owner, PUBLISH).list.is_empty());
    let fx = commit_all(&mut owner, Ok(()));
    assert_eq!(delivers(&fx), 1, "delivered once");
    let r = replies(&fx);
    assert_eq!(r.len(), 2);
    assert_eq!(published(r[0]), (1, 1));
    assert_eq!(published(r[1]), (1, 0), "the repeat");
    assert!(owner.pending_upto().is_none());
}

#[test]
fn a_failed_store_refuses_and_reuses_the_ids() {
    let (mut owner, j) = owner_with_journal();
    request(&mut owner, PUBLISH);
    request(
        &mut owner,
        r#"{"op":"publish","ref":"q","channel":"wedding:main:w","type":"general","payload":2}"#,
    );
    let fx = commit_all(&mut owner, Err(JournalError::Failed("disk on fire".into())));
    assert_eq!(delivers(&fx), 0);
    let r = replies(&fx);
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|x| code(x) == ErrorCode::Internal && ErrorCode::Internal.retryable()));
    // Backpressure at append: refused at once, nothing taken.
    j.refuse.set(true);
    let fx = request(&mut owner, PUBLISH);
    assert_eq!(code(replies(&fx)[0]), ErrorCode::Overloaded);
    j.refuse.set(false);
    // The next publish gets id 1 again: ids 1 and 2 were never stored, never seen.
    request(&mut owner, PUBLISH);
    let fx = commit_all(&mut owner, Ok(()));
    assert_eq!(published(replies(&fx)[0]).0, 1);
}

#[test]
fn restore_continues_ids_and_idempotency_keys() {
    let mut owner = owner(None);
    let name = ChannelName::parse("wedding:main:w").unwrap();
    let meta = ringbearer_core::channel_state::ChannelMeta {
        id: "ch_1".into(),
        name: name.clone(),
        access: ChannelAccess {
            org: "o".into(),
            wedding_id: Some("w".into()),
            kind: ringbearer_core::ChannelType::Shared,
            permissions: Permissions::default_for(ringbearer_core::ChannelType::Shared),
            creator: "u".into(),
            members: vec![],
        },
        max_subscribers: 100,
        retention_ms: 3_600_000,
        created_at_ms: T0,
        epoch: "e".into(),
    };
    let frame = |id: u64, key: Option<&str>| RestoredMessage {
        id,
        ts_ms: T0,
        frame: MessageFrame {
            id,
            ts_ms: T0,
            channel: name.as_str().into(),
            msg_type: "general".into(),
            event: None,
            priority: 1,
            payload: "1".into(),
            sender_user_id: "u".into(),
            sender_org: "o".into(),
            sender_role: Role::Coordinator.code(),
            target_user_id: None,
            target_org: None,
            target_roles: 0,
            wedding_context: None,
            idempotency_key: key.map(Into::into),
        }
        .encode()
        .to_vec(),
    };
    owner.restore(
        vec![RestoredChannel {
            meta,
            last_id: 8,
            messages: vec![frame(7, None), frame(8, Some("cake"))],
            members: vec![(UserKey::new("o", "bob"), 7, None)],
            docs: Default::default(),
        }],
        Now::at(T0),
    );
    let fx = request(
        &mut owner,
        r#"{"op":"publish","channel":"wedding:main:w","type":"general","payload":2,"idempotency_key":"cake"}"#,
    );
    assert_eq!(published(replies(&fx)[0]), (8, 0), "the key survived");
    let fx = request(
        &mut owner,
        r#"{"op":"publish","channel":"wedding:main:w","type":"general","payload":3}"#,
    );
    assert_eq!(published(replies(&fx)[0]).0, 9, "ids continue");
    assert_eq!(
        owner.channels["wedding:main:w"].cursor(&UserKey::new("o", "bob")),
        Some(7)
    );
}

/// The owner reads no clock: the same requests at the same `Now` give the same effects.
#[test]
fn the_same_steps_give_the_same_effects() {
    let run = || {
        let (mut owner, _) = owner_with_journal();
        request(&mut owner, PUBLISH);
        format!("{:?}", commit_all(&mut owner, Ok(())))
    };
    assert_eq!(run(), run());
}

#[test]
fn a_channel_id_names_its_owner_shard() {
    let id = channel_id(0xdead_beef_1234_5678, 7, 42);
    assert_eq!(id, "ch_beef123456780700002a");
    assert_eq!(shard_of_channel_id(&id), Some(7));
    for bad in [
        "",
        "ch_",
        "ch_xyz",
        "dh_beef123456780700002a",
        "ch_beef123456780700002",
        "ch_beef12345678070000zz",
    ] {
        assert_eq!(shard_of_channel_id(bad), None, "{bad}");
    }
}

/// Parking (`park.rs`): a wedding-day `critical` a member has not acknowledged is parked
/// for that member once it is due — not for its sender, not before it is due, not twice,
/// and a `normal` one never.
#[test]
fn parking_finds_each_due_unacknowledged_critical_once() {
    let (mut owner, _j) = owner_with_journal();
    owner
        .weddings
        .upsert(crate::weddings::Wedding::new("w", "o", "2027-01-15", "UTC").unwrap())
        .unwrap();
    let sub = match parse_request(
        r#"{"op":"subscribe","channel":"wedding:main:w"}"#,
        &owner.cfg.limits,
    )
    .unwrap()
    .req
    {
        Parsed::Subscribe(req) => req,
        other => panic!("{other:?}"),
    };
    let fx = owner.handle(
        Now::at(T0),
        Request {
            from: ME,
            r#ref: None,
            claims: claims(),
            op: Op::Enroll {
                user: "v".into(),
                req: sub,
            },
        },
    );
    assert!(
        matches!(replies(&fx)[..], [Reply::Enrolled { .. }]),
        "{fx:?}"
    );
    for priority in ["normal", "critical"] {
        request(
            &mut owner,
            &format!(
                r#"{{"op":"publish","channel":"wedding:main:w","type":"t","priority":"{priority}","payload":{{}}}}"#
            ),
        );
    }
    commit_all(&mut owner, Ok(()));
    let parked = |fx: &Effects| -> Vec<(u64, String)> {
        fx.list
            .iter()
            .filter_map(|e| match e {
                Effect::Record(Record::Parked(p)) => Some((p.message_id, p.member.to_string())),
                _ => None,
            })
            .collect()
    };
    assert!(
        parked(&owner.park_due(Now::at(T0 + 100), 500)).is_empty(),
        "not due"
    );
    // Due: only the critical (id 2), only for o/v (o/u sent it).
    let fx = owner.park_due(Now::at(T0 + 1000), 500);
    assert_eq!(parked(&fx), vec![(2, "o/v".to_string())]);
    assert!(
        parked(&owner.park_due(Now::at(T0 + 2000), 500)).is_empty(),
        "once"
    );
    // Another day: a critical is not parked.
    request(
        &mut owner,
        r#"{"op":"publish","channel":"wedding:main:w","type":"t","priority":"critical","payload":{}}"#,
    );
    commit_all(&mut owner, Ok(()));
    let next_day = Now {
        ms: T0 + 3000,
        calendar_ms: T0 + 86_400_000,
    };
    assert!(
        parked(&owner.park_due(next_day, 500)).is_empty(),
        "not the wedding's day"
    );
}
