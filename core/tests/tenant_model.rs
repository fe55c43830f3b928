//! A property test against a reference model: random operations from two organizations
//! whose users share ids (`org-a`/`u-1` and `org-b`/`u-1`, …) on one channel — subscribe
//! (with and without a position or history), disconnect, unsubscribe, REST enroll, targeted
//! and open publishes, acks — and after each, every observation is checked: no resume,
//! history or REST history ever hands a user a message targeted at someone else, nothing a
//! user may see is missing, the delivered/queued counts and `unread` are the model's, and
//! cursors are per (org, sub). Run longer with `PROPTEST_CASES=20000 cargo test -p
//! ringbearer-core --test tenant_model`.

use proptest::prelude::*;
use ringbearer_core::access::RoleSet;
use ringbearer_core::access::{ChannelAccess, Role};
use ringbearer_core::channel::{ChannelType, Permissions};
use ringbearer_core::channel_state::{ChannelMeta, ChannelState, ConnRef, ResumeFrom};
use ringbearer_core::identity::{may_see, Target};
use ringbearer_core::{ChannelName, Limits, UserKey};
use std::collections::BTreeMap;

const USERS: usize = 4;

fn user(i: usize) -> UserKey {
    UserKey::new(["org-a", "org-b"][i % 2], ["u-1", "u-2"][i / 2])
}

fn conn(i: usize) -> ConnRef {
    ConnRef {
        shard: (i % 2) as u32,
        conn: i as u64 + 1,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Subscribe {
        who: usize,
        last_seen: Option<u64>,
        history: bool,
    },
    Disconnect(usize),
    Unsubscribe(usize),
    Enroll {
        who: usize,
        history: bool,
    },
    Publish(Option<usize>),
    Ack {
        who: usize,
        id: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..USERS, proptest::option::of(0u64..12), any::<bool>()).prop_map(
            |(who, last_seen, history)| Op::Subscribe {
                who,
                last_seen,
                history
            }
        ),
        (0..USERS).prop_map(Op::Disconnect),
        (0..USERS).prop_map(Op::Unsubscribe),
        (0..USERS, any::<bool>()).prop_map(|(who, history)| Op::Enroll { who, history }),
        proptest::option::of(0..USERS).prop_map(Op::Publish),
        proptest::option::of(0..USERS).prop_map(Op::Publish),
        (0..USERS, 0u64..14).prop_map(|(who, id)| Op::Ack { who, id }),
    ]
}

/// The reference: every message with its target, and per user its subscription.
#[derive(Default)]
struct Model {
    /// id → target.
    messages: BTreeMap<u64, Option<usize>>,
    /// user → (cursor, online).
    members: BTreeMap<usize, (u64, bool)>,
}

impl Model {
    fn last(&self) -> u64 {
        self.messages.keys().next_back().copied().unwrap_or(0)
    }
    fn visible(&self, who: usize, after: u64) -> Vec<u64> {
        self.messages
            .range(after + 1..)
            .filter(|(_, t)| t.is_none_or(|t| t == who))
            .map(|(id, _)| *id)
            .collect()
    }
}

fn state() -> ChannelState<u64> {
    let limits = Limits {
        max_queued: 1000,
        ..Limits::default()
    };
    let meta = ChannelMeta {
        id: "ch_1".into(),
        name: ChannelName::parse("wedding:main:w-1").unwrap(),
        access: ChannelAccess {
            org: "org-a".into(),
            wedding_id: Some("w-1".into()),
            kind: ChannelType::Shared,
            permissions: Permissions::default_for(ChannelType::Shared),
            creator: "u-1".into(),
            members: vec![],
        },
        max_subscribers: 100,
        retention_ms: u64::MAX / 4,
        created_at_ms: 0,
        epoch: "e".into(),
    };
    ChannelState::new(meta, &limits, 2)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_route_or_count_crosses_a_target_or_an_organization(ops in proptest::collection::vec(op(), 1..60)) {
        let mut s = state();
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Subscribe { who, last_seen, history } => {
                    let from = ResumeFrom { last_seen_id: last_seen, epoch: None, include_history: history };
                    let online = m.members.get(&who).is_some_and(|x| x.1);
                    let r = s.subscribe(conn(who), &user(who), Role::Couple, from, 0).unwrap();
                    // Whatever it was handed, it may see.
                    for id in &r.messages {
                        let t = m.messages[id];
                        prop_assert!(t.is_none_or(|t| t == who), "user {who} handed {id} for {t:?}");
                    }
                    if !online {
                        let stored = m.members.get(&who).map(|x| x.0);
                        let pos = match (stored, last_seen) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            (a, b) => a.or(b),
                        };
                        let want = match pos {
                            // A position from the future (an earlier life of the channel):
                            // not trusted, everything kept that it may see.
                            Some(p) if p > m.last() => m.visible(who, 0),
                            Some(p) => m.visible(who, p),
                            None if history => m.visible(who, 0),
                            None => vec![],
                        };
                        prop_assert_eq!(&r.messages, &want);
                        let last = m.last();
                        let e = m.members.entry(who).or_insert((pos.unwrap_or(last).min(last), false));
                        e.1 = true;
                    }
                }
                Op::Disconnect(who) => {
                    let was = m.members.get(&who).is_some_and(|x| x.1);
                    prop_assert_eq!(s.disconnect(conn(who)), was);
                    if let Some(x) = m.members.get_mut(&who) { x.1 = false; }
                }
                Op::Unsubscribe(who) => {
                    let was = m.members.get(&who).is_some_and(|x| x.1);
                    prop_assert_eq!(s.unsubscribe(conn(who)), was);
                    if was { m.members.remove(&who); }
                }
                Op::Enroll { who, history } => {
                    let from = ResumeFrom { last_seen_id: None, epoch: None, include_history: history };
                    let r = s.enroll(&user(who), None, from, 0).unwrap();
                    let want = if history { m.visible(who, 0) } else { vec![] };
                    prop_assert_eq!(r.messages, want);
                    let last = m.last();
                    m.members.entry(who).or_insert((last, false));
                }
                Op::Publish(target) => {
                    let id = s.next_id();
                    let t = target.map(user);
                    let o = s.publish(id, 0, &t.clone().map(Target::user).unwrap_or_default(), None, 0);
                    m.messages.insert(id, target);
                    let for_it = |w: &usize| target.is_none_or(|t| t == *w);
                    let delivered = m.members.iter().filter(|(w, x)| x.1 && for_it(w)).count();
                    let queued = m.members.iter().filter(|(w, x)| !x.1 && for_it(w)).count();
                    prop_assert_eq!((o.delivered, o.queued), (delivered, queued));
                }
                Op::Ack { who, id } => {
                    let known = m.members.contains_key(&who);
                    prop_assert_eq!(s.ack(&user(who), id), known);
                    let last = m.last();
                    if let Some(x) = m.members.get_mut(&who) { x.0 = x.0.max(id.min(last)); }
                }
            }
            // Cursors and counts, per (org, sub), after every step.
            for w in 0..USERS {
                let mine = m.members.get(&w).map(|x| x.0);
                prop_assert_eq!(s.cursor(&user(w)), mine);
                let unread = mine.map(|c| m.visible(w, c).len() as u64);
                prop_assert_eq!(s.unread(&user(w), None), unread);
                for id in m.visible(w, 0) {
                    let t = m.messages[&id].map(user);
                    prop_assert!(may_see(t.as_ref().map(|u| (u.org.as_str(), u.sub.as_str())), RoleSet::EMPTY, &user(w), None));
                }
            }
        }
    }
}
