//! permessage-deflate (RFC 7692) against the real binary over real sockets: off by default;
//! when enabled, offers are accepted with their parameters echoed or declined when
//! invalid; compressed text goes both ways (whole and fragmented, with a ping between the
//! fragments); a message under `min_size_bytes` goes uncompressed; and a small compressed
//! frame that would inflate past `max_frame_bytes` is refused with 1009 without the server
//! allocating it, while the server and its other connections carry on.

mod common;
use common::*;
use miniz_oxide::deflate::core::{create_comp_flags_from_zip_params, CompressorOxide};
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZFlush};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;

const CH: &str = "wedding:main:w-1";
const ON: &str = "[io.permessage_deflate]\nenabled = true\nmin_size_bytes = 400\n";
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A client that speaks permessage-deflate (no context takeover either way), framing by
/// hand over a blocking socket.
struct Dz {
    s: TcpStream,
    buf: Vec<u8>,
}

/// Upgrades at `/ws`, offering `ext` if given; the client and the server's
/// `Sec-WebSocket-Extensions` answer.
fn upgrade(server: &TestServer, sub: &str, role: &str, ext: Option<&str>) -> (Dz, Option<String>) {
    let token = server.token(sub, "org-1", role, &["w-1"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let ext = ext
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}Authorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let answer = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| v.trim().to_owned())
    });
    (Dz { s, buf: Vec::new() }, answer)
}

/// `data` as one compressed message (sync flush, tail removed: RFC 7692 §7.2.1).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = CompressorOxide::new(create_comp_flags_from_zip_params(6, -15, 0));
    let mut out = vec![0u8; data.len() + 1024];
    let r = miniz_oxide::deflate::stream::deflate(&mut c, data, &mut out, MZFlush::Sync);
    assert_eq!(r.bytes_consumed, data.len());
    out.truncate(r.bytes_written);
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

fn inflate(z: &[u8]) -> Vec<u8> {
    let mut input = z.to_vec();
    input.extend_from_slice(&TAIL);
    let mut st = InflateState::new_boxed(DataFormat::Raw);
    let mut out = vec![0u8; 1 << 20];
    let r = miniz_oxide::inflate::stream::inflate(&mut st, &input, &mut out, MZFlush::None);
    assert!(r.status.is_ok(), "{:?}", r.status);
    out.truncate(r.bytes_written);
    out
}

impl Dz {
    /// One masked frame; `b0` is FIN, RSV1 and the opcode.
    fn send(&mut self, b0: u8, payload: &[u8]) {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut f = vec![b0];
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
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).unwrap();
    }

    /// A compressed text message in one frame.
    fn send_z(&mut self, v: &Value) {
        self.send(0xc1, &deflate(v.to_string().as_bytes()));
    }

    /// The next frame: (first byte, payload); `None` when the connection ends.
    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (len, hdr) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= hdr + len {
                    let f = (self.buf[0], self.buf[hdr..hdr + len].to_vec());
                    self.buf.drain(..hdr + len);
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next text message (inflated when compressed) and whether it was; skips pings.
    fn text(&mut self) -> (Value, bool) {
        loop {
            let (b0, p) = self.frame().expect("connection ended");
            match b0 & 0x0f {
                0x1 => {
                    let z = b0 & 0x40 != 0;
                    let p = if z { inflate(&p) } else { p };
                    return (serde_json::from_slice(&p).unwrap(), z);
                }
                0x8 => panic!("closed: {p:?}"),
                _ => continue,
            }
        }
    }

    /// The next text message matching `pred`, skipping others.
    fn wait(&mut self, pred: impl Fn(&Value) -> bool) -> (Value, bool) {
        loop {
            let m = self.text();
            if pred(&m.0) {
                return m;
            }
        }
    }

    /// The code of the server's close frame (`None` if the socket just ended).
    fn close_code(&mut self) -> Option<u16> {
        while let Some((b0, p)) = self.frame() {
            if b0 & 0x0f == 0x8 {
                return Some(u16::from_be_bytes([p[0], p[1]]));
            }
        }
        None
    }
}

fn big_payload() -> Value {
    json!({ "note": "the first dance starts at nine, the cake comes after ".repeat(40) })
}

/// A `/proc/PID/status` field in bytes.
fn vm(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn deflate_is_off_by_default() {
    let server = TestServer::start("");
    let (mut c, answer) = upgrade(&server, "u-1", "coordinator", Some("permessage-deflate"));
    assert_eq!(answer, None);
    // Not negotiated: a compressed frame breaks the framing rules.
    c.send_z(&json!({"op": "ping", "ref": "1"}));
    assert_eq!(c.close_code(), Some(1002));
}

#[test]
fn offers_are_accepted_with_their_parameters_or_declined() {
    let server = TestServer::start(ON);
    let cases: [(Option<&str>, Option<&str>); 7] = [
        (None, None),
        (
            Some("permessage-deflate; client_max_window_bits"),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        (
            Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"),
        ),
        (Some("permessage-deflate; foo=1"), None),
        (Some("permessage-deflate; server_max_window_bits=16"), None),
        (Some("x-webkit-deflate-frame"), None),
        (
            Some("permessage-deflate; bar, permessage-deflate; server_no_context_takeover"),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
    ];
    for (offer, want) in cases {
        let (mut c, answer) = upgrade(&server, "u-1", "coordinator", offer);
        assert_eq!(answer.as_deref(), want, "offer {offer:?}");
        // Either way the connection works (compressed only when accepted).
        let req = json!({"op": "create", "ref": "c", "name": CH, "wedding_id": "w-1"});
        if answer.is_some() {
            c.send_z(&req);
        } else {
            c.send(0x81, req.to_string().as_bytes());
        }
        let (r, _) = c.wait(|v| v["ref"] == "c");
        assert!(r["op"] == "created" || r["op"] == "error", "{r}");
    }
}

#[test]
fn compressed_text_round_trips_and_small_messages_go_uncompressed() {
    let server = TestServer::start(ON);
    let (mut coord, _) = upgrade(&server, "coord", "coordinator", Some("permessage-deflate"));
    coord.send_z(&json!({"op": "create", "ref": "c", "name": CH, "wedding_id": "w-1"}));
    assert_eq!(coord.wait(|v| v["ref"] == "c").0["op"], "created");
    let (mut guest, answer) = upgrade(&server, "guest", "guest", Some("permessage-deflate"));
    assert!(answer.is_some());
    let (mut plain, _) = upgrade(&server, "plain", "guest", None);
    for c in [&mut guest, &mut plain] {
        c.send(
            0x81,
            json!({"op": "subscribe", "ref": "s", "channel": CH})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(c.wait(|v| v["ref"] == "s").0["op"], "subscribed");
    }
    // A large publish, compressed by the client; the message reaches the deflate
    // subscriber compressed and the other one plain, the same JSON.
    coord.send_z(&json!({"op": "publish", "ref": "p1", "channel": CH, "type": "general", "payload": big_payload()}));
    let (reply, z) = coord.wait(|v| v["ref"] == "p1");
    assert_eq!(reply["op"], "published", "{reply}");
    assert!(!z, "a reply under min_size_bytes is sent uncompressed");
    let (m, z) = guest.wait(|v| v["op"] == "message");
    assert!(z, "a message over min_size_bytes is sent compressed");
    assert_eq!(m["payload"], big_payload());
    let (m2, z) = plain.wait(|v| v["op"] == "message");
    assert!(!z);
    assert_eq!(m, m2);
    // A small message: uncompressed on the wire (RSV1 clear) even on a deflate connection.
    coord.send_z(&json!({"op": "publish", "ref": "p2", "channel": CH, "type": "general", "payload": {"n": 2}}));
    let (m, z) = guest.wait(|v| v["op"] == "message");
    assert!(!z);
    assert_eq!(m["payload"]["n"], 2);
}

#[test]
fn a_fragmented_compressed_message_with_a_ping_between_fragments() {
    let server = TestServer::start(ON);
    let (mut coord, _) = upgrade(&server, "coord", "coordinator", Some("permessage-deflate"));
    let req =
        json!({"op": "create", "ref": "c", "name": CH, "wedding_id": "w-1", "x": big_payload()});
    let z = deflate(req.to_string().as_bytes());
    let third = z.len() / 3;
    // RSV1 on the first frame only (RFC 7692 §6.1).
    coord.send(0x41, &z[..third]);
    coord.send(0x89, b"between");
    coord.send(0x00, &z[third..2 * third]);
    coord.send(0x80, &z[2 * third..]);
    let (b0, p) = coord.frame().unwrap();
    assert_eq!((b0, p.as_slice()), (0x8a, &b"between"[..]));
    let (r, _) = coord.wait(|v| v["ref"] == "c");
    assert!(r["op"] == "created" || r["op"] == "error", "{r}");
}

#[test]
fn an_inflate_bomb_is_refused_with_1009_without_allocating_it() {
    let server = TestServer::start(ON);
    let (mut coord, _) = upgrade(&server, "coord", "coordinator", Some("permessage-deflate"));
    coord.send_z(&json!({"op": "create", "ref": "c", "name": CH, "wedding_id": "w-1"}));
    assert_eq!(coord.wait(|v| v["ref"] == "c").0["op"], "created");
    let (mut guest, _) = upgrade(&server, "guest", "guest", Some("permessage-deflate"));
    guest.send_z(&json!({"op": "subscribe", "ref": "s", "channel": CH}));
    assert_eq!(guest.wait(|v| v["ref"] == "s").0["op"], "subscribed");

    // 64 MiB of spaces in ~70 KB: independent sync-flushed blocks of 1 MiB each, one after
    // the other (a valid stream: no block refers back into another).
    let block = deflate(&vec![b' '; 1 << 20]);
    let mut bomb = Vec::new();
    for _ in 0..64 {
        bomb.extend_from_slice(&block);
        bomb.extend_from_slice(&TAIL);
    }
    bomb.truncate(bomb.len() - 4);
    assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
    let pid = server.pid();
    let peak_before = vm(pid, "VmHWM");
    let (mut bomber, _) = upgrade(&server, "bomber", "guest", Some("permessage-deflate"));
    bomber.send(0xc1, &bomb);
    assert_eq!(bomber.close_code(), Some(1009));
    let growth = vm(pid, "VmHWM").saturating_sub(peak_before);
    // The bound (max_frame_bytes, 1 MiB) is what may be inflated; 64 MiB never is.
    assert!(growth < 16 << 20, "peak RSS grew by {growth} bytes");

    // The server and the other connections carry on.
    coord.send_z(&json!({"op": "publish", "ref": "p", "channel": CH, "type": "general", "payload": big_payload()}));
    assert_eq!(coord.wait(|v| v["ref"] == "p").0["op"], "published");
    let (m, z) = guest.wait(|v| v["op"] == "message");
    assert!(z);
    assert_eq!(m["payload"], big_payload());
}
