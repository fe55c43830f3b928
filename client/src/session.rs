//! The client's protocol state machine, apart from I/O: requests waiting for their reply
//! (keyed by `ref`), the per-channel bookkeeping ([`Tracker`]), and the queue of events
//! not yet handed to the app.
//!
//! Text frames come in through [`Session::on_text`]; replies go out through each request's
//! oneshot; events pile up in the outbox for the driver to deliver. It owns no socket, reads
//! no clock and never waits, so every rule here is unit-tested with plain strings. What it
//! does not do: connect, reconnect, back off, or decide when a connection is lost; the
//! driver does, and tells it ([`Session::on_disconnect`], [`Session::resubscribe`]).
//!
//! | reply                         | waiter                | effect                                                                 |
//! |-------------------------------|-----------------------|------------------------------------------------------------------------|
//! | `subscribed`                  | caller                | remember channel+epoch; new messages → events; caller gets the reply   |
//! | `subscribed`                  | resubscribe / none    | remember; `Resubscribed` (if resubscribe) then new messages → events  |
//! | `unsubscribed`                | any                   | forget the channel; caller gets `Ok`                                   |
//! | `ok`                          | token refresh         | adopt the new token for reconnects; caller gets `Ok`                   |
//! | `error`                       | caller                | caller gets `Error::Server`                                            |
//! | `error`                       | resubscribe           | `ResubscribeFailed`; forget the channel unless the error is retryable  |
//! | anything                      | none (timed out, …)   | dropped (after the bookkeeping above)                                  |
//! | connection lost               | caller                | `Error::Disconnected`; resubscribe waiters dropped (channels kept)     |

use crate::dedup::Tracker;
use crate::error::Error;
use crate::types::{Created, Event, Published, SubscribeOptions, Subscribed};
use crate::wire::{self, Incoming, RefText, ReplyBody, Request};
use std::collections::{HashMap, VecDeque};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Pending requests are swept of abandoned entries (caller timed out or went away) when the
/// map reaches this size, then at twice the size that survives. Amortised O(1) per request;
/// bounds the map to about twice the requests really in flight.
const SWEEP_MIN: usize = 64;

/// A successful reply, as handed to the waiting call.
#[derive(Debug)]
pub(crate) enum Reply {
    Created(Created),
    Subscribed(Subscribed),
    Unsubscribed,
    Published(Published),
    Ok,
    Pong,
    State(crate::state::StateDoc),
    StateWrite(crate::state::StateWrite),
}

pub(crate) type ReplySender = oneshot::Sender<Result<Reply, Error>>;

/// Who waits for a `ref`.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// An app call.
    Caller(ReplySender),
    /// An app `token` refresh: on `ok`, the token to use for reconnects.
    Token(ReplySender, String),
    /// The client's own resubscribe of a channel after a reconnect.
    Resubscribe(String),
}

impl Waiter {
    fn abandoned(&self) -> bool {
        match self {
            Waiter::Caller(tx) | Waiter::Token(tx, _) => tx.is_closed(),
            Waiter::Resubscribe(_) => false,
        }
    }

    /// Answers an app call; nothing for the client's own requests.
    pub(crate) fn answer(self, result: Result<Reply, Error>) {
        match self {
            // The caller may have timed out and gone: nothing to do then.
            Waiter::Caller(tx) | Waiter::Token(tx, _) => drop(tx.send(result)),
            Waiter::Resubscribe(_) => {}
        }
    }
}

#[derive(Debug)]
pub(crate) struct Session {
    pending: HashMap<u64, Waiter>,
    sweep_at: usize,
    tracker: Tracker,
    outbox: VecDeque<Event>,
    adopted_token: Option<String>,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            pending: HashMap::new(),
            sweep_at: SWEEP_MIN,
            tracker: Tracker::default(),
            outbox: VecDeque::new(),
            adopted_token: None,
        }
    }
}

impl Session {
    /// Registers `waiter` for the reply with `ref` = `r`.
    pub(crate) fn wait(&mut self, r: u64, waiter: Waiter) {
        if self.pending.len() >= self.sweep_at {
            self.pending.retain(|_, w| !w.abandoned());
            self.sweep_at = (self.pending.len() * 2).max(SWEEP_MIN);
        }
        self.pending.insert(r, waiter);
    }

    /// True while any request waits for its reply.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Number of requests waiting for a reply.
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The `subscribe` frame for an app call: the app's `last_seen_id`, else the client's own
    /// highest id on the channel; the remembered `epoch` when there is one.
    pub(crate) fn subscribe_request(
        &self,
        r: &str,
        channel: &str,
        opts: &SubscribeOptions,
    ) -> String {
        let (seen, epoch) = self.tracker.resume_position(channel);
        Request::Subscribe {
            r: Some(r),
            channel,
            last_seen_id: opts.last_seen_id.or(seen),
            epoch,
            include_history: opts.include_history,
        }
        .encode()
    }

    /// The app sent `unsubscribe`: stop resubscribing the channel now, so a connection lost
    /// before the reply cannot bring it back.
    pub(crate) fn forget(&mut self, channel: &str) {
        self.tracker.forget(channel);
    }

    /// After a reconnect: one `subscribe` per remembered channel, with its resume position
    /// and epoch, each waited for as a [`Waiter::Resubscribe`]. `next_ref` hands out refs.
    pub(crate) fn resubscribe(&mut self, mut next_ref: impl FnMut() -> u64) -> Vec<String> {
        let mut frames = Vec::new();
        for channel in self.tracker.subscribed_channels() {
            let r = next_ref();
            let rt = RefText::new(r);
            let (last_seen_id, epoch) = self.tracker.resume_position(channel);
            frames.push(
                Request::Subscribe {
                    r: Some(rt.as_str()),
                    channel,
                    last_seen_id,
                    epoch,
                    include_history: false,
                }
                .encode(),
            );
            self.pending
                .insert(r, Waiter::Resubscribe(channel.to_owned()));
        }
        frames
    }

    /// The connection was lost: every app call in flight fails with
    /// [`Error::Disconnected`]; resubscribes in flight are dropped (their channels stay
    /// remembered and are resubscribed on the next connection).
    pub(crate) fn on_disconnect(&mut self) {
        self.fail_all(Error::Disconnected);
    }

    /// The client is closing: every call in flight fails with [`Error::Closed`].
    pub(crate) fn on_close(&mut self) {
        self.fail_all(Error::Closed);
    }

    fn fail_all(&mut self, error: Error) {
        for (_, w) in self.pending.drain() {
            w.answer(Err(error.clone()));
        }
        self.sweep_at = SWEEP_MIN;
    }

    /// A token refresh was accepted since the last call: the token to reconnect with.
    pub(crate) fn take_adopted_token(&mut self) -> Option<String> {
        self.adopted_token.take()
    }

    pub(crate) fn push_event(&mut self, event: Event) {
        self.outbox.push_back(event);
    }

    pub(crate) fn pop_event(&mut self) -> Option<Event> {
        self.outbox.pop_front()
    }

    /// Puts back an event that could not be delivered, at the front.
    pub(crate) fn unpop_event(&mut self, event: Event) {
        self.outbox.push_front(event);
    }

    pub(crate) fn events_len(&self) -> usize {
        self.outbox.len()
    }

    /// Nobody reads events any more.
    pub(crate) fn clear_events(&mut self) {
        self.outbox.clear();
    }

    /// One text frame from the server.
    pub(crate) fn on_text(&mut self, text: &str) {
        match wire::decode(text) {
            Ok(Incoming::Message(m)) => {
                if self.tracker.accept(&m.channel, m.id, m.priority) {
                    self.outbox.push_back(Event::Message(m));
                } else {
                    debug!(channel = %m.channel, id = m.id, "duplicate message dropped");
                }
            }
            Ok(Incoming::PresenceDiff {
                channel,
                joins,
                leaves,
                total,
            }) => {
                self.outbox.push_back(Event::PresenceDiff {
                    channel,
                    joins,
                    leaves,
                    total,
                });
            }
            Ok(Incoming::PresenceState {
                channel,
                presence,
                total,
            }) => {
                self.outbox.push_back(Event::PresenceState {
                    channel,
                    presence,
                    total,
                });
            }
            Ok(Incoming::Typing {
                channel,
                user_id,
                role,
            }) => {
                self.outbox.push_back(Event::Typing {
                    channel,
                    user_id,
                    role,
                });
            }
            Ok(Incoming::StateOverridden {
                channel,
                doc,
                version,
                your_version,
                by,
            }) => {
                self.outbox.push_back(Event::StateOverridden {
                    channel,
                    doc,
                    version,
                    your_version,
                    by,
                });
            }
            Ok(Incoming::Reply { r, body }) => self.on_reply(r, body),
            Ok(Incoming::Unknown { op }) => debug!(%op, "unknown op ignored"),
            Err(e) => warn!(error = %e, len = text.len(), "undecodable frame from server ignored"),
        }
    }

    fn on_reply(&mut self, r: Option<u64>, body: ReplyBody) {
        let waiter = r.and_then(|r| self.pending.remove(&r));
        match body {
            ReplyBody::Subscribed(s) => self.on_subscribed(waiter, s),
            ReplyBody::Unsubscribed { channel } => {
                self.tracker.forget(&channel);
                if let Some(w) = waiter {
                    w.answer(Ok(Reply::Unsubscribed));
                }
            }
            ReplyBody::Error(e) => match waiter {
                Some(Waiter::Resubscribe(channel)) => {
                    let error: Error = e.into();
                    if !error.is_retryable() {
                        self.tracker.forget(&channel);
                    }
                    self.outbox
                        .push_back(Event::ResubscribeFailed { channel, error });
                }
                Some(w) => w.answer(Err(e.into())),
                None => {
                    warn!(code = %e.code, message = %e.message, "server error for no pending request")
                }
            },
            ReplyBody::Ok => match waiter {
                Some(Waiter::Token(tx, token)) => {
                    self.adopted_token = Some(token);
                    drop(tx.send(Ok(Reply::Ok)));
                }
                Some(w) => w.answer(Ok(Reply::Ok)),
                None => {}
            },
            ReplyBody::Created(c) => answer(waiter, Reply::Created(c)),
            ReplyBody::Published(p) => answer(waiter, Reply::Published(p)),
            ReplyBody::Pong => answer(waiter, Reply::Pong),
            ReplyBody::State(d) => answer(waiter, Reply::State(d)),
            ReplyBody::StateWrite(w) => answer(waiter, Reply::StateWrite(w)),
        }
    }

    fn on_subscribed(&mut self, waiter: Option<Waiter>, s: Subscribed) {
        self.tracker.on_subscribed(&s.channel, &s.epoch);
        match waiter {
            Some(Waiter::Caller(tx)) if !tx.is_closed() => {
                // The caller gets the reply whole; the events get the new messages.
                for m in &s.messages {
                    if self.tracker.accept(&m.channel, m.id, m.priority) {
                        self.outbox.push_back(Event::Message(m.clone()));
                    }
                }
                drop(tx.send(Ok(Reply::Subscribed(s))));
            }
            other => {
                if let Some(Waiter::Resubscribe(_)) = other {
                    self.outbox.push_back(Event::Resubscribed {
                        channel: s.channel.clone(),
                        recovered: s.recovered,
                    });
                } else if let Some(Waiter::Token(tx, _)) = other {
                    drop(tx.send(Err(unexpected("ok", "subscribed"))));
                }
                for m in s.messages {
                    if self.tracker.accept(&m.channel, m.id, m.priority) {
                        self.outbox.push_back(Event::Message(m));
                    }
                }
            }
        }
    }
}

fn answer(waiter: Option<Waiter>, reply: Reply) {
    if let Some(w) = waiter {
        w.answer(Ok(reply));
    }
}

/// The error for a reply op that does not fit the request.
pub(crate) fn unexpected(want: &str, got: &str) -> Error {
    Error::Protocol(format!("expected a `{want}` reply, got `{got}`"))
}

impl Reply {
    /// The op's name, for [`unexpected`].
    pub(crate) fn op(&self) -> &'static str {
        match self {
            Reply::Created(_) => "created",
            Reply::Subscribed(_) => "subscribed",
            Reply::Unsubscribed => "unsubscribed",
            Reply::Published(_) => "published",
            Reply::Ok => "ok",
            Reply::Pong => "pong",
            Reply::State(_) => "state",
            Reply::StateWrite(_) => "state_ok",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DisconnectReason;
    use crate::types::Priority;
    use tokio::sync::oneshot::error::TryRecvError;

    const CH: &str = "wedding:main:w-1";

    fn msg(id: u64, prio: &str) -> String {
        format!(
            r#"{{"op":"message","channel":"{CH}","id":{id},"type":"general","priority":"{prio}","payload":{{"n":{id}}},"sender":{{"user_id":"u-1","role":"coordinator"}},"ts":1}}"#
        )
    }

    fn subscribed(r: u64, epoch: &str, recovered: bool, ids: &[u64]) -> String {
        let msgs: Vec<String> = ids.iter().map(|id| msg(*id, "normal")).collect();
        format!(
            r#"{{"op":"subscribed","ref":"{r}","channel":"{CH}","epoch":"{epoch}","recovered":{recovered},"messages":[{}],"presence":[]}}"#,
            msgs.join(",")
        )
    }

    fn drain(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.pop_event()).collect()
    }

    fn message_ids(events: &[Event]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.id),
                _ => None,
            })
            .collect()
    }

    fn caller(s: &mut Session, r: u64) -> oneshot::Receiver<Result<Reply, Error>> {
        let (tx, rx) = oneshot::channel();
        s.wait(r, Waiter::Caller(tx));
        rx
    }

    /// Subscribes CH through an app call with ref 1 and the given messages.
    fn subscribed_session(epoch: &str, ids: &[u64]) -> Session {
        let mut s = Session::default();
        let mut rx = caller(&mut s, 1);
        s.on_text(&subscribed(1, epoch, true, ids));
        assert!(matches!(rx.try_recv(), Ok(Ok(Reply::Subscribed(_)))));
        s
    }

    #[test]
    fn subscribe_reply_goes_to_caller_whole_and_new_messages_to_events() {
        let mut s = Session::default();
        let mut rx = caller(&mut s, 1);
        s.on_text(&subscribed(1, "e1", true, &[3, 4]));
        let Ok(Ok(Reply::Subscribed(sub))) = rx.try_recv() else {
            panic!("no reply")
        };
        assert_eq!(sub.epoch, "e1");
        assert_eq!(
            sub.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(message_ids(&drain(&mut s)), [3, 4]);

        // Subscribing again on the same connection: the reply repeats 4; the caller sees it,
        // the events do not.
        let mut rx = caller(&mut s, 2);
        s.on_text(&subscribed(2, "e1", true, &[4, 5]));
        let Ok(Ok(Reply::Subscribed(sub))) = rx.try_recv() else {
            panic!("no reply")
        };
        assert_eq!(sub.messages.len(), 2);
        assert_eq!(message_ids(&drain(&mut s)), [5]);
    }

    #[test]
    fn live_messages_are_deduplicated() {
        let mut s = subscribed_session("e1", &[1, 2]);
        drain(&mut s);
        for text in [
            msg(2, "normal"),
            msg(3, "normal"),
            msg(3, "normal"),
            msg(1, "normal"),
            msg(4, "normal"),
        ] {
            s.on_text(&text);
        }
        assert_eq!(message_ids(&drain(&mut s)), [3, 4]);
    }

    #[test]
    fn priority_overtaking_messages_are_all_delivered() {
        let mut s = subscribed_session("e1", &[9]);
        drain(&mut s);
        s.on_text(&msg(11, "critical"));
        s.on_text(&msg(10, "normal"));
        s.on_text(&msg(12, "low"));
        assert_eq!(message_ids(&drain(&mut s)), [11, 10, 12]);
    }

    #[test]
    fn subscribe_request_uses_app_position_else_remembered() {
        let s = Session::default();
        let opts = SubscribeOptions::default();
        assert_eq!(
            s.subscribe_request("5", CH, &opts),
            format!(r#"{{"op":"subscribe","ref":"5","channel":"{CH}"}}"#)
        );
        let hist = SubscribeOptions {
            last_seen_id: None,
            include_history: true,
        };
        assert_eq!(
            s.subscribe_request("5", CH, &hist),
            format!(r#"{{"op":"subscribe","ref":"5","channel":"{CH}","include_history":true}}"#)
        );

        let mut s = subscribed_session("e1", &[7]);
        assert_eq!(
            s.subscribe_request("6", CH, &opts),
            format!(
                r#"{{"op":"subscribe","ref":"6","channel":"{CH}","last_seen_id":7,"epoch":"e1"}}"#
            )
        );
        let explicit = SubscribeOptions {
            last_seen_id: Some(3),
            include_history: false,
        };
        assert_eq!(
            s.subscribe_request("7", CH, &explicit),
            format!(
                r#"{{"op":"subscribe","ref":"7","channel":"{CH}","last_seen_id":3,"epoch":"e1"}}"#
            )
        );
        s.forget(CH);
        assert_eq!(
            s.subscribe_request("8", CH, &opts),
            format!(r#"{{"op":"subscribe","ref":"8","channel":"{CH}"}}"#)
        );
    }

    #[test]
    fn reconnect_resubscribes_with_position_and_epoch() {
        let mut s = subscribed_session("e1", &[1, 2]);
        s.on_text(&msg(3, "normal"));
        drain(&mut s);

        let mut in_flight = caller(&mut s, 50);
        s.on_disconnect();
        assert!(matches!(in_flight.try_recv(), Ok(Err(Error::Disconnected))));
        s.push_event(Event::Disconnected {
            reason: DisconnectReason::IdleTimeout,
        });

        let mut next = 100;
        let frames = s.resubscribe(|| {
            next += 1;
            next
        });
        assert_eq!(
            frames,
            [format!(
                r#"{{"op":"subscribe","ref":"101","channel":"{CH}","last_seen_id":3,"epoch":"e1"}}"#
            )]
        );
        // The server resends 3 (unacknowledged) and what was missed.
        s.on_text(&subscribed(101, "e1", true, &[3, 4, 5]));
        s.on_text(&msg(6, "normal"));
        let events = drain(&mut s);
        assert!(matches!(events[0], Event::Disconnected { .. }));
        assert_eq!(
            events[1],
            Event::Resubscribed {
                channel: CH.into(),
                recovered: true
            }
        );
        assert_eq!(message_ids(&events), [4, 5, 6]);
        assert_eq!(s.pending_len(), 0);
    }

    #[test]
    fn new_epoch_resets_deduplication() {
        let mut s = subscribed_session("e1", &[40, 41]);
        drain(&mut s);
        let frames = s.resubscribe(|| 9);
        assert!(frames[0].contains(r#""last_seen_id":41,"epoch":"e1""#));
        s.on_text(&subscribed(9, "e2", false, &[1, 2]));
        let events = drain(&mut s);
        assert_eq!(
            events[0],
            Event::Resubscribed {
                channel: CH.into(),
                recovered: false
            }
        );
        assert_eq!(message_ids(&events), [1, 2]);
    }

    #[test]
    fn resubscribe_refused_for_good_forgets_the_channel() {
        let mut s = subscribed_session("e1", &[1]);
        drain(&mut s);
        s.resubscribe(|| 9);
        s.on_text(
            r#"{"op":"error","ref":"9","code":"WS_FORBIDDEN","message":"no","retryable":false}"#,
        );
        let events = drain(&mut s);
        let [Event::ResubscribeFailed { channel, error }] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(channel, CH);
        assert_eq!(error.code(), Some("WS_FORBIDDEN"));
        assert!(s.resubscribe(|| 10).is_empty());
    }

    #[test]
    fn resubscribe_refused_for_now_keeps_the_channel() {
        let mut s = subscribed_session("e1", &[1]);
        drain(&mut s);
        s.resubscribe(|| 9);
        s.on_text(
            r#"{"op":"error","ref":"9","code":"WS_OVERLOADED","message":"busy","retryable":true}"#,
        );
        assert!(matches!(
            drain(&mut s)[..],
            [Event::ResubscribeFailed { .. }]
        ));
        let frames = s.resubscribe(|| 10);
        assert!(frames[0].contains(r#""last_seen_id":1,"epoch":"e1""#));
    }

    #[test]
    fn resubscribe_in_flight_at_disconnect_is_retried_next_time() {
        let mut s = subscribed_session("e1", &[1]);
        assert_eq!(s.resubscribe(|| 9).len(), 1);
        s.on_disconnect();
        assert_eq!(s.pending_len(), 0);
        assert_eq!(s.resubscribe(|| 10).len(), 1);
    }

    #[test]
    fn unsubscribe_forgets_even_if_subscribed_arrives_late() {
        let mut s = Session::default();
        let _sub = caller(&mut s, 1);
        // The app unsubscribes before the subscribe reply arrives.
        s.forget(CH);
        let mut unsub = caller(&mut s, 2);
        s.on_text(&subscribed(1, "e1", true, &[]));
        s.on_text(&format!(
            r#"{{"op":"unsubscribed","ref":"2","channel":"{CH}"}}"#
        ));
        assert!(matches!(unsub.try_recv(), Ok(Ok(Reply::Unsubscribed))));
        assert!(s.resubscribe(|| 3).is_empty());
    }

    #[test]
    fn errors_reach_their_caller_with_retry_after() {
        let mut s = Session::default();
        let mut rx = caller(&mut s, 4);
        let mut other = caller(&mut s, 5);
        s.on_text(r#"{"op":"error","ref":"4","code":"WS_RATE_LIMITED","message":"slow","retryable":true,"retry_after":2}"#);
        let Ok(Err(Error::Server {
            code,
            retryable,
            retry_after,
            ..
        })) = rx.try_recv()
        else {
            panic!("no error")
        };
        assert_eq!(code, "WS_RATE_LIMITED");
        assert!(retryable);
        assert_eq!(retry_after, Some(std::time::Duration::from_secs(2)));
        assert!(matches!(other.try_recv(), Err(TryRecvError::Empty)));
        // An error for nobody is ignored.
        s.on_text(r#"{"op":"error","code":"WS_BAD_REQUEST","message":"x","retryable":false}"#);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn simple_replies_reach_their_caller() {
        let mut s = Session::default();
        let mut c = caller(&mut s, 1);
        let mut p = caller(&mut s, 2);
        let mut o = caller(&mut s, 3);
        let mut g = caller(&mut s, 4);
        s.on_text(r#"{"op":"pong","ref":"4"}"#);
        s.on_text(r#"{"op":"ok","ref":"3"}"#);
        s.on_text(r#"{"op":"published","ref":"2","channel":"c:a:b","id":42,"delivered_count":3,"queued_count":1}"#);
        s.on_text(r#"{"op":"created","ref":"1","channel_id":"ch_1","channel_name":"c:a:b","created_at":"t"}"#);
        assert!(
            matches!(c.try_recv(), Ok(Ok(Reply::Created(Created { ref channel_id, .. }))) if channel_id == "ch_1")
        );
        assert!(matches!(
            p.try_recv(),
            Ok(Ok(Reply::Published(Published {
                id: 42,
                delivered_count: 3,
                queued_count: 1
            })))
        ));
        assert!(matches!(o.try_recv(), Ok(Ok(Reply::Ok))));
        assert!(matches!(g.try_recv(), Ok(Ok(Reply::Pong))));
        assert_eq!(s.pending_len(), 0);
    }

    #[test]
    fn token_refresh_is_adopted_only_when_accepted() {
        let mut s = Session::default();
        let (tx, mut rx) = oneshot::channel();
        s.wait(1, Waiter::Token(tx, "new".into()));
        s.on_text(r#"{"op":"error","ref":"1","code":"WS_UNAUTHORIZED","message":"sub differs","retryable":false}"#);
        assert!(matches!(rx.try_recv(), Ok(Err(Error::Server { .. }))));
        assert_eq!(s.take_adopted_token(), None);

        let (tx, mut rx) = oneshot::channel();
        s.wait(2, Waiter::Token(tx, "newer".into()));
        s.on_text(r#"{"op":"ok","ref":"2"}"#);
        assert!(matches!(rx.try_recv(), Ok(Ok(Reply::Ok))));
        assert_eq!(s.take_adopted_token().as_deref(), Some("newer"));
        assert_eq!(s.take_adopted_token(), None);
    }

    #[test]
    fn presence_and_typing_become_events() {
        let mut s = Session::default();
        s.on_text(r#"{"op":"presence_diff","channel":"c:a:b","joins":[],"leaves":[{"user_id":"u","connection_id":"c","role":"r","meta":{}}]}"#);
        s.on_text(r#"{"op":"typing","channel":"c:a:b","user_id":"u-2","role":"couple"}"#);
        s.on_text("garbage");
        s.on_text(r#"{"op":"something_new"}"#);
        let events = drain(&mut s);
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], Event::PresenceDiff { leaves, .. } if leaves.len() == 1));
        assert_eq!(
            events[1],
            Event::Typing {
                channel: "c:a:b".into(),
                user_id: "u-2".into(),
                role: "couple".into()
            }
        );
    }

    #[test]
    fn late_reply_after_timeout_still_does_bookkeeping() {
        let mut s = Session::default();
        let rx = caller(&mut s, 1);
        drop(rx); // the app call timed out
        s.on_text(&subscribed(1, "e1", true, &[5]));
        assert_eq!(message_ids(&drain(&mut s)), [5]);
        assert_eq!(s.resubscribe(|| 2).len(), 1);
    }

    #[test]
    fn abandoned_waiters_are_swept() {
        let mut s = Session::default();
        for r in 0..1000 {
            let rx = caller(&mut s, r);
            drop(rx);
        }
        assert!(
            s.pending_len() <= 2 * SWEEP_MIN,
            "{} pending",
            s.pending_len()
        );
        // Live waiters are never swept.
        let mut live: Vec<_> = (1000..1100).map(|r| caller(&mut s, r)).collect();
        for r in 1100..2000 {
            drop(caller(&mut s, r));
        }
        s.on_close();
        for rx in &mut live {
            assert!(matches!(rx.try_recv(), Ok(Err(Error::Closed))));
        }
    }

    #[test]
    fn outbox_preserves_order_on_unpop() {
        let mut s = Session::default();
        s.push_event(Event::Reconnected);
        s.on_text(&msg(1, "low"));
        let first = s.pop_event().unwrap();
        s.unpop_event(first);
        assert_eq!(s.events_len(), 2);
        assert_eq!(s.pop_event(), Some(Event::Reconnected));
        assert!(matches!(s.pop_event(), Some(Event::Message(m)) if m.priority == Priority::Low));
        s.push_event(Event::Reconnected);
        s.clear_events();
        assert_eq!(s.events_len(), 0);
    }
}
