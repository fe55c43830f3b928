//! Fail-fast UTF-8 for incoming text messages (RFC 6455 §8.1, Autobahn 6.4.x "fail fast").
//!
//! tungstenite validates text only per complete frame, so a frame whose first bytes are
//! already invalid is accepted until its last byte arrives (Autobahn 6.4.3 and 6.4.4 send
//! one frame in chops a second apart). [`Utf8Scan`] follows the client's frame stream as
//! bytes arrive — headers, masks, fragments, interleaved control frames — and validates the
//! payload of text messages incrementally, keeping an incomplete trailing code point
//! between chops and fragments, so the connection is closed with 1007 as soon as a
//! sequence cannot become valid. Anything that is not a well-formed client frame stream
//! (unmasked frames, reserved bits or opcodes, a continuation outside a message) stops the
//! scan: tungstenite reports those itself.
//!
//! Cost: one unmask and one `str::from_utf8` over text payload bytes (the JSON parser
//! reads them anyway); no allocation; ~40 bytes per connection.

/// Payload bytes unmasked per step (on the stack).
const CHUNK: usize = 256;

#[derive(Debug, Default)]
pub struct Utf8Scan {
    /// Header bytes of the frame being read (at most 2 + 8 + 4).
    hdr: [u8; 14],
    hdr_len: u8,
    /// Payload bytes still to come in the current frame (0 while reading a header).
    remaining: u64,
    /// Whether the header is complete and `remaining` counts payload.
    in_payload: bool,
    mask: [u8; 4],
    /// Payload bytes of the current frame seen so far, mod 4 (mask position).
    mask_pos: u8,
    /// The current frame's payload is text to validate.
    validate: bool,
    /// The current frame is the last of its message.
    fin: bool,
    /// A fragmented message is open (its continuation frames follow).
    in_message: bool,
    /// The open fragmented message is text.
    text_message: bool,
    /// The bytes of a code point not yet complete, carried across chops and fragments.
    pending: [u8; 4],
    pending_len: u8,
    /// The stream is not one this scanner follows (tungstenite will refuse it).
    stopped: bool,
    /// An invalid sequence was seen.
    invalid: bool,
}

impl Utf8Scan {
    /// Scans the next bytes from the client. `false` once the stream holds text that is not
    /// UTF-8 (and from then on).
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() && !self.stopped && !self.invalid {
            if !self.in_payload {
                let used = self.read_header(data);
                data = &data[used..];
                continue;
            }
            let n = (self.remaining.min(data.len() as u64)) as usize;
            if self.validate && !self.check_masked(&data[..n]) {
                self.invalid = true;
                break;
            }
            self.mask_pos = ((self.mask_pos as usize + n) % 4) as u8;
            self.remaining -= n as u64;
            data = &data[n..];
            if self.remaining == 0 {
                self.end_frame();
            }
        }
        !self.invalid
    }

    /// Takes header bytes from `data`; returns how many it used.
    fn read_header(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let need = self.header_len();
            if self.hdr_len as usize >= need {
                break;
            }
            if used == data.len() {
                return used;
            }
            self.hdr[self.hdr_len as usize] = data[used];
            self.hdr_len += 1;
            used += 1;
        }
        self.start_frame();
        used
    }

    /// Bytes the current header needs, given what has arrived (2 until the length byte).
    fn header_len(&self) -> usize {
        if self.hdr_len < 2 {
            return 2;
        }
        let ext = match self.hdr[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.hdr[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn start_frame(&mut self) {
        let b0 = self.hdr[0];
        let b1 = self.hdr[1];
        let (len, at) = match b1 & 0x7f {
            126 => (u16::from_be_bytes([self.hdr[2], self.hdr[3]]) as u64, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.hdr[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (n as u64, 2),
        };
        // Client frames are masked and carry no reserved bits (no extension is
        // negotiated); anything else is tungstenite's to refuse.
        if b1 & 0x80 == 0 || b0 & 0x70 != 0 {
            self.stopped = true;
            return;
        }
        self.mask.copy_from_slice(&self.hdr[at..at + 4]);
        self.fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        self.validate = match opcode {
            0x1 | 0x2 if self.in_message => {
                self.stopped = true;
                return;
            }
            0x1 => {
                self.in_message = !self.fin;
                self.text_message = true;
                true
            }
            0x2 => {
                self.in_message = !self.fin;
                self.text_message = false;
                false
            }
            0x0 if !self.in_message => {
                self.stopped = true;
                return;
            }
            0x0 => self.text_message,
            0x8..=0xa if self.fin && len <= 125 => false,
            _ => {
                self.stopped = true;
                return;
            }
        };
        // A control frame inside a fragmented message does not end it.
        if opcode >= 0x8 {
            self.fin = false;
        }
        self.hdr_len = 0;
        self.remaining = len;
        self.mask_pos = 0;
        self.in_payload = true;
        if len == 0 {
            self.end_frame();
        }
    }

    fn end_frame(&mut self) {
        self.in_payload = false;
        self.hdr_len = 0;
        if self.validate && self.fin && self.pending_len > 0 {
            // The message ended inside a code point.
            self.invalid = true;
        }
        // (`fin` is false for control frames: they never end a message.)
        if self.fin {
            self.in_message = false;
            self.text_message = false;
            self.pending_len = 0;
        }
        self.validate = false;
        self.fin = false;
    }

    /// Unmasks `masked` (continuing at `mask_pos`) and validates it.
    fn check_masked(&mut self, masked: &[u8]) -> bool {
        let mut buf = [0u8; CHUNK];
        let mut pos = self.mask_pos as usize;
        for part in masked.chunks(CHUNK) {
            for (i, b) in part.iter().enumerate() {
                buf[i] = b ^ self.mask[(pos + i) % 4];
            }
            pos += part.len();
            if !self.check(&buf[..part.len()]) {
                return false;
            }
        }
        true
    }

    /// Validates the next unmasked text bytes, carrying an incomplete code point.
    fn check(&mut self, mut input: &[u8]) -> bool {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 65535 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        f
    }

    /// Feeds `bytes` one byte at a time: returns the index of the byte that made the scan
    /// fail, if any.
    fn fails_at(bytes: &[u8]) -> Option<usize> {
        let mut s = Utf8Scan::default();
        bytes.iter().position(|b| !s.feed(std::slice::from_ref(b)))
    }

    #[test]
    fn valid_text_in_any_split_passes() {
        let text = "κόσμε 😀 edited".as_bytes();
        for cut in 0..=text.len() {
            let mut stream = frame(false, 0x1, &text[..cut]);
            stream.extend(frame(true, 0x9, b"ping in between"));
            stream.extend(frame(true, 0x0, &text[cut..]));
            assert_eq!(fails_at(&stream), None, "cut at {cut}");
            let mut s = Utf8Scan::default();
            assert!(s.feed(&stream));
        }
        // A 70,000-byte frame (64-bit length), split anywhere.
        let big = "é".repeat(35_000);
        let stream = frame(true, 0x1, big.as_bytes());
        let mut s = Utf8Scan::default();
        for part in stream.chunks(997) {
            assert!(s.feed(part));
        }
    }

    #[test]
    fn invalid_bytes_fail_at_the_first_impossible_byte() {
        // Autobahn 6.4.1's payload: `κόσμε`, then f4 90 (past U+10FFFF), then the rest.
        let mut payload = "κόσμε".as_bytes().to_vec();
        let bad = payload.len();
        payload.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]);
        payload.extend_from_slice(b"edited");
        // One frame in chops: fails at the 0x90, long before the frame ends.
        let stream = frame(true, 0x1, &payload);
        let hdr = 2;
        assert_eq!(fails_at(&stream), Some(hdr + MASK.len() + bad + 1));
        // Fragments: the first fragment ends with f4, the second starts with 90.
        let mut stream = frame(false, 0x1, &payload[..bad + 1]);
        let second = stream.len();
        stream.extend(frame(true, 0x0, &payload[bad + 1..]));
        assert_eq!(fails_at(&stream), Some(second + 2 + MASK.len()));
        // A lone 0xff in a first fragment that does not end.
        let stream = frame(false, 0x1, b"ok\xffmore");
        assert_eq!(fails_at(&stream), Some(2 + MASK.len() + 2));
    }

    #[test]
    fn a_message_ending_inside_a_code_point_is_invalid() {
        let mut s = Utf8Scan::default();
        assert!(s.feed(&frame(false, 0x1, b"ab\xe2\x82")));
        assert!(!s.feed(&frame(true, 0x0, b"")));
    }

    #[test]
    fn binary_and_control_payloads_are_not_text() {
        let mut s = Utf8Scan::default();
        assert!(s.feed(&frame(true, 0x2, b"\xff\xfe")));
        assert!(s.feed(&frame(false, 0x2, b"\xff")));
        assert!(s.feed(&frame(true, 0xa, b"\xff")));
        assert!(s.feed(&frame(true, 0x0, b"\xfe")));
        // A text message after them is still checked.
        assert!(!s.feed(&frame(true, 0x1, b"\xc0\xaf")));
    }

    #[test]
    fn streams_tungstenite_refuses_stop_the_scan() {
        // Unmasked: not followed (tungstenite closes with 1002).
        let mut s = Utf8Scan::default();
        assert!(s.feed(&[0x81, 0x02, 0xff, 0xff]));
        assert!(s.feed(&frame(true, 0x1, b"\xff")));
        // A continuation with no message open.
        let mut s = Utf8Scan::default();
        assert!(s.feed(&frame(true, 0x0, b"\xff")));
    }
}
