//! A connection's outgoing backlog: bounded in frames and bytes, drained highest priority
//! first (SPEC §2.6) without ever reordering one channel's messages (SPEC §2.1), and
//! written as unmasked server frames (RFC 6455 §5.2) straight into the write buffer.
//!
//! Ordering rule: replies and control frames go first; then `critical`, `high`, `normal`,
//! `low`. When a message of priority P is queued while earlier messages of the same channel
//! wait at a lower priority, those earlier messages are promoted to P, ahead of it: a
//! critical message overtakes every other channel's backlog, and is held back only by its
//! own channel's predecessors.

use bytes::Bytes;
use ringbearer_core::Priority;
use std::collections::VecDeque;

use crate::wire::header_len;
pub use crate::wire::{encode_frame, Opcode};

#[derive(Clone, Debug)]
pub struct OutFrame {
    pub opcode: Opcode,
    /// Channel hash for per-channel ordering; 0 for frames outside any channel's order.
    pub channel: u64,
    pub data: Bytes,
}

/// The backlog is over a bound: the consumer is too slow.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

const CONTROL: usize = 0;
const LEVELS: usize = 6;

fn level(p: Priority) -> usize {
    match p {
        Priority::Emergency => 1,
        Priority::Critical => 2,
        Priority::High => 3,
        Priority::Normal => 4,
        Priority::Low => 5,
    }
}

#[derive(Debug)]
pub struct Outbox {
    queues: [VecDeque<OutFrame>; LEVELS],
    frames: usize,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    /// permessage-deflate, when negotiated: data frames are written compressed.
    deflate: Option<Box<crate::deflate::Deflater>>,
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Outbox {
            queues: Default::default(),
            frames: 0,
            bytes: 0,
            max_frames,
            max_bytes,
            deflate: None,
        }
    }

    /// From now on, frames are written through `d` (permessage-deflate negotiated).
    pub fn set_deflate(&mut self, d: crate::deflate::Deflater) {
        self.deflate = Some(Box::new(d));
    }

    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    pub fn len(&self) -> usize {
        self.frames
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn admit(&mut self, f: &OutFrame) -> Result<(), Overflow> {
        if self.frames + 1 > self.max_frames || self.bytes + f.data.len() > self.max_bytes {
            return Err(Overflow);
        }
        self.frames += 1;
        self.bytes += f.data.len();
        Ok(())
    }

    /// A reply or control frame: ahead of every message.
    pub fn push_control(&mut self, f: OutFrame) -> Result<(), Overflow> {
        self.admit(&f)?;
        self.queues[CONTROL].push_back(f);
        Ok(())
    }

    /// A `subscribed` reply with its recovered messages, admitted as one unit while the
    /// backlog is within its bounds: a resume can legitimately be larger than the bound
    /// (`max_queued` messages of up to `max_payload_bytes`), and refusing it would cut off a
    /// healthy client in a loop. The next push past the bound still marks a slow consumer,
    /// so a backlog never exceeds one bound plus one burst.
    pub fn push_control_burst(&mut self, frames: Vec<OutFrame>) -> Result<(), Overflow> {
        if self.frames >= self.max_frames || self.bytes >= self.max_bytes {
            return Err(Overflow);
        }
        for f in frames {
            self.frames += 1;
            self.bytes += f.data.len();
            self.queues[CONTROL].push_back(f);
        }
        Ok(())
    }

    /// A channel message at `p`, keeping the channel's order (see the module doc).
    pub fn push_message(&mut self, p: Priority, f: OutFrame) -> Result<(), Overflow> {
        self.admit(&f)?;
        let at = level(p);
        if f.channel != 0 {
            // Invariant: a channel's older messages sit at a level of equal or higher
            // priority than its newer ones (promotion only raises). So the ones below `at`
            // are its newest, and collecting them level by level downwards yields them
            // oldest first; they go to the back of level `at`, ahead of the new message.
            for lower in at + 1..LEVELS {
                if self.queues[lower].iter().any(|x| x.channel == f.channel) {
                    let q = std::mem::take(&mut self.queues[lower]);
                    let (same, rest): (VecDeque<_>, VecDeque<_>) =
                        q.into_iter().partition(|x| x.channel == f.channel);
                    self.queues[lower] = rest;
                    self.queues[at].extend(same);
                }
            }
        }
        self.queues[at].push_back(f);
        Ok(())
    }

    /// Drops queued messages of one channel (after it is unsubscribed).
    pub fn forget_channel(&mut self, channel: u64) {
        for q in self.queues.iter_mut().skip(1) {
            q.retain(|x| {
                let keep = x.channel != channel;
                if !keep {
                    self.frames -= 1;
                    self.bytes -= x.data.len();
                }
                keep
            });
        }
    }

    /// Appends frames, highest priority first, into `out` until it holds `max_bytes`
    /// (always at least one frame when any is queued).
    pub fn drain_into(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> usize {
        let mut n = 0;
        for (i, q) in self.queues.iter_mut().enumerate() {
            while let Some(f) = q.front() {
                if n > 0 && out.len() + header_len(f.data.len()) + f.data.len() > max_bytes {
                    return n;
                }
                let f = q.pop_front().expect("front");
                self.frames -= 1;
                self.bytes -= f.data.len();
                write_frame(&mut self.deflate, out, &f);
                n += 1;
            }
            if i == CONTROL && q.capacity() > 0 {
                // Replies are occasional: an emptied reply queue gives its buffer back
                // (an idle connection otherwise keeps the one its `subscribed` used). The
                // message queues keep theirs: they are the fan-out's hot path.
                *q = VecDeque::new();
            }
        }
        n
    }

    /// Appends only the queued replies and control frames (not channel messages): what a
    /// closing connection still owes its client, such as the error explaining the close.
    pub fn drain_control_into(&mut self, out: &mut Vec<u8>, max_bytes: usize) {
        while let Some(f) = self.queues[CONTROL].front() {
            if out.len() + header_len(f.data.len()) + f.data.len() > max_bytes {
                break;
            }
            let f = self.queues[CONTROL].pop_front().expect("front");
            self.frames -= 1;
            self.bytes -= f.data.len();
            write_frame(&mut self.deflate, out, &f);
        }
    }

    /// An empty outbox gives every queue's buffer back (the heartbeat sweep calls it, so an
    /// idle connection holds none).
    pub fn shrink_idle(&mut self) {
        if self.frames == 0 {
            for q in self.queues.iter_mut().filter(|q| q.capacity() > 0) {
                *q = VecDeque::new();
            }
        }
    }

    pub fn clear(&mut self) {
        for q in self.queues.iter_mut() {
            q.clear();
        }
        self.frames = 0;
        self.bytes = 0;
    }
}

fn write_frame(
    deflate: &mut Option<Box<crate::deflate::Deflater>>,
    out: &mut Vec<u8>,
    f: &OutFrame,
) {
    match deflate {
        Some(d) => d.encode(out, f.opcode, &f.data),
        None => encode_frame(out, f.opcode, &f.data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(channel: u64, tag: &str) -> OutFrame {
        OutFrame {
            opcode: Opcode::Text,
            channel,
            data: Bytes::copy_from_slice(tag.as_bytes()),
        }
    }

    /// Drains and decodes the payloads in order.
    fn drain(o: &mut Outbox) -> Vec<String> {
        let mut out = Vec::new();
        o.drain_into(&mut out, usize::MAX);
        let mut v = Vec::new();
        let mut i = 0;
        while i < out.len() {
            let len = out[i + 1] as usize;
            v.push(String::from_utf8(out[i + 2..i + 2 + len].to_vec()).unwrap());
            i += 2 + len;
        }
        v
    }

    /// An idle connection keeps no reply buffer; the message queues keep theirs until the
    /// heartbeat sweep finds the outbox empty.
    #[test]
    fn an_emptied_reply_queue_gives_its_buffer_back() {
        let mut o = Outbox::new(100, 1 << 20);
        o.push_control(msg(0, "subscribed")).unwrap();
        o.push_message(Priority::Normal, msg(1, "m")).unwrap();
        assert_eq!(drain(&mut o), vec!["subscribed", "m"]);
        assert_eq!(o.queues[CONTROL].capacity(), 0);
        assert!(o.queues[level(Priority::Normal)].capacity() > 0);
        // Until the heartbeat sweep finds it idle: then it holds no buffer at all.
        o.push_message(Priority::Low, msg(2, "l")).unwrap();
        o.shrink_idle();
        assert!(
            o.queues[level(Priority::Low)].capacity() > 0,
            "not empty: kept"
        );
        assert_eq!(drain(&mut o), vec!["l"]);
        o.shrink_idle();
        assert!(o.queues.iter().all(|q| q.capacity() == 0));
    }

    #[test]
    fn control_then_priorities_keeping_channel_order() {
        let mut o = Outbox::new(100, 1 << 20);
        o.push_message(Priority::Low, msg(1, "a1-low")).unwrap();
        o.push_message(Priority::Normal, msg(2, "b1-normal"))
            .unwrap();
        o.push_message(Priority::Low, msg(1, "a2-low")).unwrap();
        o.push_message(Priority::Critical, msg(3, "c1-critical"))
            .unwrap();
        o.push_control(msg(0, "reply")).unwrap();
        // Channel 1 gets a high message: its two earlier low ones are promoted ahead of it.
        o.push_message(Priority::High, msg(1, "a3-high")).unwrap();
        o.push_message(Priority::Normal, msg(1, "a4-normal"))
            .unwrap();
        assert_eq!(o.len(), 7);
        assert_eq!(
            drain(&mut o),
            [
                "reply",
                "c1-critical",
                "a1-low",
                "a2-low",
                "a3-high",
                "b1-normal",
                "a4-normal"
            ]
        );
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
    }

    /// SPEC §2 `emergency`: ahead of every `critical` of other channels, and it promotes its
    /// own channel's waiting messages like any higher priority.
    #[test]
    fn emergency_goes_before_critical() {
        let mut o = Outbox::new(100, 1 << 20);
        o.push_message(Priority::Critical, msg(1, "a1-critical"))
            .unwrap();
        o.push_message(Priority::Critical, msg(1, "a2-critical"))
            .unwrap();
        o.push_message(Priority::Normal, msg(2, "b1-normal"))
            .unwrap();
        o.push_message(Priority::Emergency, msg(3, "c1-emergency"))
            .unwrap();
        o.push_message(Priority::Emergency, msg(2, "b2-emergency"))
            .unwrap();
        assert_eq!(
            drain(&mut o),
            [
                "c1-emergency",
                "b1-normal",
                "b2-emergency",
                "a1-critical",
                "a2-critical"
            ]
        );
    }

    #[test]
    fn bounded_by_frames_and_bytes() {
        let mut o = Outbox::new(2, 10);
        o.push_control(msg(0, "12345")).unwrap();
        assert_eq!(o.push_control(msg(0, "123456")), Err(Overflow));
        o.push_message(Priority::Low, msg(1, "1")).unwrap();
        assert_eq!(o.push_message(Priority::Low, msg(1, "1")), Err(Overflow));
        o.forget_channel(1);
        assert_eq!((o.len(), o.bytes()), (1, 5));
        // A burst larger than the bound is admitted whole while under the bound...
        let mut o = Outbox::new(2, 10);
        o.push_control_burst(vec![msg(0, "123456"), msg(0, "123456"), msg(0, "1")])
            .unwrap();
        assert_eq!((o.len(), o.bytes()), (3, 13));
        // ...and the next push finds the backlog over it.
        assert_eq!(o.push_control(msg(0, "1")), Err(Overflow));
        assert_eq!(o.push_control_burst(vec![msg(0, "1")]), Err(Overflow));
    }

    #[test]
    fn drain_respects_the_batch_size_but_always_makes_progress() {
        let mut o = Outbox::new(100, 1 << 20);
        for i in 0..10 {
            o.push_control(msg(0, &format!("frame-{i}"))).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(o.drain_into(&mut out, 1), 1);
        let mut out = Vec::new();
        assert_eq!(o.drain_into(&mut out, 30), 3);
        assert_eq!(o.len(), 6);
    }

    #[test]
    fn frame_headers_follow_rfc_6455() {
        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Text, b"Hello");
        assert_eq!(out, b"\x81\x05Hello");
        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Binary, &[0u8; 256]);
        assert_eq!(&out[..4], &[0x82, 126, 0x01, 0x00]);
        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Text, &vec![b'x'; 65_536]);
        assert_eq!(&out[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Ping, b"");
        assert_eq!(out, [0x89, 0x00]);
    }
}
