//! The server's WebSocket frame reader (RFC 6455 §5, RFC 7692 §6): a state machine over the
//! connection's receive buffer that turns a client's frames into whole messages and
//! control frames. It does no I/O and writes nothing: the caller queues pongs and the close
//! reply, and maps a [`Fail`] to its close code (1002, 1007, 1009).
//!
//! What it enforces, from the frame header on, before any payload is kept: client frames
//! are masked; no reserved bit is set (RSV1 only on the first frame of a data message when
//! permessage-deflate was negotiated); no reserved opcode; control frames are final and at
//! most 125 bytes; continuation frames only inside a fragmented message and data frames
//! only outside one (control frames may come between fragments); a frame or message over
//! `max_bytes` is refused (1009) from its header, and a compressed message as soon as its
//! inflated bytes pass `max_bytes`, so a small "inflate bomb" never allocates more than the
//! bound. Text is checked as UTF-8 as bytes arrive, even inside a frame that has not ended
//! (RFC 6455 §8.1 fail fast; Autobahn 6.4.x), and inflated text as it is inflated.
//!
//! Memory: an idle reader is a few words ([`Reader`]), no buffer; the connection's receive
//! buffer holds only a frame still arriving. A fragmented or compressed message is
//! assembled in a buffer that is freed when the message has been handled. With
//! permessage-deflate, the inflater (~43 KB, miniz_oxide) exists only while a compressed
//! message is being read — unless the client keeps its compression context between
//! messages (no `client_no_context_takeover`), when the connection keeps it for its life.

use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// Payload bytes unmasked or inflated per step (on the stack).
const CHUNK: usize = 4096;

/// The last four bytes of every compressed message, removed by the sender (RFC 7692 §7.2.2).
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Input bytes not handled yet: what has arrived from the socket from the start of the
/// first frame not read yet.
#[derive(Debug, Default)]
pub struct Rx {
    buf: Vec<u8>,
    pos: usize,
}

impl Rx {
    /// Appends bytes read from the socket.
    pub fn extend(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Drops `n` handled bytes; an emptied buffer larger than `retain_bytes` is given back.
    fn consume(&mut self, n: usize, retain_bytes: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            if self.buf.capacity() > retain_bytes {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.pos = 0;
        }
    }

    fn pending(&mut self) -> &mut [u8] {
        &mut self.buf[self.pos..]
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Why the connection must be failed (RFC 6455 §7.1.7), with the close code it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// 1002: a framing rule broken.
    Protocol(&'static str),
    /// 1007: text that is not UTF-8, or compressed data that does not inflate.
    InvalidData(&'static str),
    /// 1009: a frame or message over `max_bytes`.
    TooBig,
}

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    /// Its payload, for the pong.
    Ping(&'a [u8]),
    Pong,
    /// `None` for a close frame without a status code (RFC 6455 §7.1.5: 1005). A code no
    /// endpoint may send is reported (and should be answered) as 1002 "Protocol
    /// violation", as tungstenite did.
    Close(Option<(u16, &'a str)>),
}

/// permessage-deflate as negotiated for the client's side (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflateParams {
    /// The client keeps its LZ77 window between messages: so must our inflater.
    pub client_context_takeover: bool,
}

/// A data message under way: fragmented, or compressed.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    /// Its (inflated) payload so far; empty until the message needs assembling.
    data: Vec<u8>,
}

/// The per-connection reader state. Idle (between messages, no frame arriving), it is
/// `max_bytes`, a few flags and counters, and `None`s.
pub struct Reader {
    max_bytes: usize,
    /// Payload bytes of the (incomplete) frame at the front of `Rx` already checked as
    /// UTF-8.
    checked: usize,
    /// Bytes of `Rx` the last event borrowed, dropped at the next call.
    consumed: usize,
    /// The last event borrowed the message buffer: free it at the next call.
    msg_done: bool,
    msg: Option<Box<Partial>>,
    utf8: Utf8Tail,
    deflate: Option<InflateParams>,
    /// Kept between messages only with the client's context takeover.
    inflater: Option<Box<InflateState>>,
    /// Bytes an emptied `Rx` may keep.
    retain_bytes: usize,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("max_bytes", &self.max_bytes)
            .field("msg", &self.msg)
            .field("deflate", &self.deflate)
            .field("inflater", &self.inflater.is_some())
            .finish()
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Head {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: [u8; 4],
    hdr_len: usize,
    len: usize,
}

/// What one step found (no borrows: [`Reader::next`] builds the event).
enum Step {
    NeedMore,
    Continue,
    /// A whole message in one frame, unmasked in place at `Rx[start..end]`.
    InRx {
        text: bool,
        start: usize,
        end: usize,
    },
    /// A whole message in the message buffer.
    InMsg {
        text: bool,
    },
    Ping {
        start: usize,
        end: usize,
    },
    Pong,
    /// Code and reason range; a range of `usize::MAX` marks a code no endpoint may send.
    Close(Option<(u16, usize, usize)>),
}

impl Reader {
    /// `max_bytes`: the largest frame and message (`limits.max_frame_bytes`);
    /// `retain_bytes`: what an emptied receive buffer may keep.
    pub fn new(max_bytes: usize, retain_bytes: usize, deflate: Option<InflateParams>) -> Self {
        Reader {
            max_bytes,
            checked: 0,
            consumed: 0,
            msg_done: false,
            msg: None,
            utf8: Utf8Tail::default(),
            deflate,
            inflater: None,
            retain_bytes,
        }
    }

    /// The next message or control frame in `rx`; `Ok(None)` until one is complete.
    /// Call again (until `Ok(None)`) after handling each event.
    pub fn next<'a>(&'a mut self, rx: &'a mut Rx) -> Result<Option<Event<'a>>, Fail> {
        if self.consumed > 0 {
            rx.consume(std::mem::take(&mut self.consumed), self.retain_bytes);
        }
        if std::mem::take(&mut self.msg_done) {
            self.msg = None;
        }
        let step = loop {
            match self.step(rx)? {
                Step::Continue => continue,
                s => break s,
            }
        };
        let base = rx.pos;
        Ok(match step {
            Step::NeedMore | Step::Continue => None,
            Step::InRx { text, start, end } => {
                let b = &rx.buf[base + start..base + end];
                Some(if text {
                    Event::Text(as_text(b)?)
                } else {
                    Event::Binary(b)
                })
            }
            Step::InMsg { text } => {
                self.msg_done = true;
                let b = &self.msg.as_ref().expect("message").data;
                Some(if text {
                    Event::Text(as_text(b)?)
                } else {
                    Event::Binary(b)
                })
            }
            Step::Ping { start, end } => Some(Event::Ping(&rx.buf[base + start..base + end])),
            Step::Pong => Some(Event::Pong),
            Step::Close(None) => Some(Event::Close(None)),
            Step::Close(Some((code, start, end))) => {
                if start == usize::MAX {
                    Some(Event::Close(Some((code, "Protocol violation"))))
                } else {
                    let reason = std::str::from_utf8(&rx.buf[base + start..base + end])
                        .map_err(|_| Fail::InvalidData("close reason is not UTF-8"))?;
                    Some(Event::Close(Some((code, reason))))
                }
            }
        })
    }

    fn step(&mut self, rx: &mut Rx) -> Result<Step, Fail> {
        let avail = rx.pending();
        let Some(h) = parse_head(avail)? else {
            return Ok(Step::NeedMore);
        };
        self.check_head(&h)?;
        let total = h.hdr_len + h.len;
        let data_frame = h.opcode < 0x8;
        let compressed = data_frame && self.message_compressed(&h);
        let text = data_frame && self.message_text(&h);
        if avail.len() < total {
            // Fail fast on text that can never become valid, before the frame ends.
            if text && !compressed {
                if self.checked == 0 && h.opcode != 0 {
                    self.utf8 = Utf8Tail::default();
                }
                let upto = avail.len() - h.hdr_len;
                let mut buf = [0u8; CHUNK];
                while self.checked < upto {
                    let n = (upto - self.checked).min(CHUNK);
                    let from = h.hdr_len + self.checked;
                    unmask_into(&avail[from..from + n], h.mask, self.checked, &mut buf[..n]);
                    if !self.utf8.feed(&buf[..n]) {
                        return Err(Fail::InvalidData("text frame is not UTF-8"));
                    }
                    self.checked += n;
                }
            }
            return Ok(Step::NeedMore);
        }
        let payload = &mut avail[h.hdr_len..total];
        unmask(payload, h.mask);
        let checked = std::mem::take(&mut self.checked);
        if !data_frame {
            // Control frames are answered before the next frame is read, so their
            // bytes stay in `Rx` until then.
            self.consumed = total;
            return Ok(match h.opcode {
                0x9 => Step::Ping {
                    start: h.hdr_len,
                    end: total,
                },
                0xa => Step::Pong,
                _ => match h.len {
                    0 => Step::Close(None),
                    1 => return Err(Fail::Protocol("close frame with a 1-byte payload")),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if close_code_allowed(code) {
                            Step::Close(Some((code, h.hdr_len + 2, total)))
                        } else {
                            Step::Close(Some((1002, usize::MAX, usize::MAX)))
                        }
                    }
                },
            });
        }
        if checked == 0 && h.opcode != 0 {
            self.utf8 = Utf8Tail::default();
        }
        if text
            && !compressed
            && (!self.utf8.feed(&payload[checked..]) || (h.fin && !self.utf8.complete()))
        {
            return Err(Fail::InvalidData("text frame is not UTF-8"));
        }
        if h.opcode != 0 && h.fin && !compressed {
            // The common case: a whole message in one frame, read where it lies.
            self.consumed = total;
            return Ok(Step::InRx {
                text,
                start: h.hdr_len,
                end: total,
            });
        }
        if h.opcode != 0 {
            self.msg = Some(Box::new(Partial {
                text,
                compressed,
                data: Vec::new(),
            }));
        }
        let max = self.max_bytes;
        let msg = self.msg.as_mut().expect("open message");
        if compressed {
            let inflater = self.inflater.get_or_insert_with(|| {
                // Raw deflate, 32 KiB window: enough for any client_max_window_bits.
                InflateState::new_boxed(DataFormat::Raw)
            });
            inflate_bounded(inflater, payload, &mut msg.data, max, text, &mut self.utf8)?;
            if h.fin {
                inflate_bounded(
                    inflater,
                    &DEFLATE_TAIL,
                    &mut msg.data,
                    max,
                    text,
                    &mut self.utf8,
                )?;
                if text && !self.utf8.complete() {
                    return Err(Fail::InvalidData("text frame is not UTF-8"));
                }
                if !self.deflate.is_some_and(|d| d.client_context_takeover) {
                    self.inflater = None;
                }
            }
        } else {
            if msg.data.len() + payload.len() > max {
                return Err(Fail::TooBig);
            }
            msg.data.extend_from_slice(payload);
        }
        rx.consume(total, self.retain_bytes);
        if h.fin {
            return Ok(Step::InMsg { text: msg.text });
        }
        Ok(Step::Continue)
    }

    /// The rules a header must meet given the reader's state (see the module doc).
    fn check_head(&self, h: &Head) -> Result<(), Fail> {
        match h.opcode {
            0x0 if self.msg.is_none() || self.msg_done => {
                return Err(Fail::Protocol("continuation frame outside a message"))
            }
            0x1 | 0x2 if self.msg.is_some() && !self.msg_done => {
                return Err(Fail::Protocol("new data frame inside a fragmented message"))
            }
            0x0..=0x2 => {}
            0x8..=0xa => {
                if !h.fin {
                    return Err(Fail::Protocol("fragmented control frame"));
                }
                if h.len > 125 {
                    return Err(Fail::Protocol("control frame over 125 bytes"));
                }
                if h.rsv1 {
                    return Err(Fail::Protocol("reserved bit set on a control frame"));
                }
            }
            _ => return Err(Fail::Protocol("reserved opcode")),
        }
        if h.rsv1 && (h.opcode == 0 || self.deflate.is_none()) {
            return Err(Fail::Protocol("reserved bit set"));
        }
        if h.len > self.max_bytes {
            return Err(Fail::TooBig);
        }
        if h.opcode == 0 {
            let msg = self.msg.as_ref().expect("open message");
            if !msg.compressed && msg.data.len() + h.len > self.max_bytes {
                return Err(Fail::TooBig);
            }
        }
        Ok(())
    }

    fn message_compressed(&self, h: &Head) -> bool {
        match h.opcode {
            0 => self.msg.as_ref().is_some_and(|m| m.compressed),
            _ => h.rsv1,
        }
    }

    fn message_text(&self, h: &Head) -> bool {
        match h.opcode {
            0 => self.msg.as_ref().is_some_and(|m| m.text),
            o => o == 0x1,
        }
    }
}

/// Inflates `input` onto `out` in [`CHUNK`]s, failing once `out` would pass `max` (before
/// allocating more) and, for text, as soon as the inflated bytes cannot be UTF-8.
fn inflate_bounded(
    state: &mut InflateState,
    mut input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
    text: bool,
    utf8: &mut Utf8Tail,
) -> Result<(), Fail> {
    let mut chunk = [0u8; CHUNK];
    loop {
        let r = miniz_oxide::inflate::stream::inflate(state, input, &mut chunk, MZFlush::None);
        input = &input[r.bytes_consumed..];
        let got = &chunk[..r.bytes_written];
        if out.len() + got.len() > max {
            return Err(Fail::TooBig);
        }
        if text && !utf8.feed(got) {
            return Err(Fail::InvalidData("text frame is not UTF-8"));
        }
        out.extend_from_slice(got);
        match r.status {
            Ok(MZStatus::Ok) => {}
            // A final block (BFINAL) ends the stream: nothing more may follow in it.
            Ok(MZStatus::StreamEnd) => {
                if !input.is_empty() && input != DEFLATE_TAIL {
                    return Err(Fail::InvalidData("data after the end of a deflate stream"));
                }
                state.reset(DataFormat::Raw);
                return Ok(());
            }
            Ok(MZStatus::NeedDict) => return Err(Fail::InvalidData("invalid deflate data")),
            // No progress: all input used and all output given.
            Err(MZError::Buf) => return Ok(()),
            Err(_) => return Err(Fail::InvalidData("invalid deflate data")),
        }
        if input.is_empty() && r.bytes_written < CHUNK {
            return Ok(());
        }
    }
}

fn as_text(b: &[u8]) -> Result<&str, Fail> {
    // Checked as it arrived; this second pass is the price of no `unsafe`.
    std::str::from_utf8(b).map_err(|_| Fail::InvalidData("text frame is not UTF-8"))
}

/// RFC 6455 §7.4: the codes a close frame may carry (tungstenite's `is_allowed`).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// The frame header at the front of `b`, once all of it has arrived.
fn parse_head(b: &[u8]) -> Result<Option<Head>, Fail> {
    if b.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (b[0], b[1]);
    if b0 & 0x30 != 0 {
        return Err(Fail::Protocol("reserved bit set"));
    }
    if b1 & 0x80 == 0 {
        return Err(Fail::Protocol("client frame not masked"));
    }
    let (len, at) = match b1 & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            let len = u64::from_be_bytes(l);
            if len >> 63 != 0 {
                return Err(Fail::Protocol("frame length with its top bit set"));
            }
            (len, 10)
        }
        n => (n as u64, 2),
    };
    if b.len() < at + 4 {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&b[at..at + 4]);
    Ok(Some(Head {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        mask,
        hdr_len: at + 4,
        len: usize::try_from(len).unwrap_or(usize::MAX),
    }))
}

fn unmask(b: &mut [u8], mask: [u8; 4]) {
    for (i, x) in b.iter_mut().enumerate() {
        *x ^= mask[i % 4];
    }
}

/// Unmasks `src` (whose first byte is payload byte `offset`) into `dst`.
fn unmask_into(src: &[u8], mask: [u8; 4], offset: usize, dst: &mut [u8]) {
    for (i, (d, s)) in dst.iter_mut().zip(src).enumerate() {
        *d = s ^ mask[(offset + i) % 4];
    }
}

/// Incremental UTF-8 validation: carries an incomplete code point between pieces.
#[derive(Debug, Default, Clone, Copy)]
struct Utf8Tail {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Tail {
    /// `false` as soon as `input` makes the text invalid.
    fn feed(&mut self, mut input: &[u8]) -> bool {
        while self.pending_len > 0 {
            let Some((&b, rest)) = input.split_first() else {
                return true;
            };
            self.pending[self.pending_len as usize] = b;
            self.pending_len += 1;
            input = rest;
            match std::str::from_utf8(&self.pending[..self.pending_len as usize]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return false,
                // Still the start of a valid sequence (at most 3 bytes, so it fits).
                Err(_) => {}
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => true,
            Err(e) => match e.error_len() {
                Some(_) => false,
                None => {
                    let tail = &input[e.valid_up_to()..];
                    self.pending[..tail.len()].copy_from_slice(tail);
                    self.pending_len = tail.len() as u8;
                    true
                }
            },
        }
    }

    /// The text ended on a code point boundary.
    fn complete(&self) -> bool {
        self.pending_len == 0
    }
}

#[cfg(test)]
mod tests;
