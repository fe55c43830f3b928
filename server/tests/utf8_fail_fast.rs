//! Invalid UTF-8 in a text message fails fast (RFC 6455 §8.1; Autobahn 6.4.3/6.4.4): the
//! server closes with 1007 as soon as a byte makes the text impossible — inside a frame
//! whose rest has not been sent, or in a first fragment — while a code point split across
//! fragments and socket writes stays valid.

mod common;
use common::*;
use serde_json::json;
use std::io::Write;

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5au8, 0x0f, 0xc3, 0x81];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let n = payload.len();
    assert!(n < 126);
    f.push(0x80 | n as u8);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads until the server's close frame; its code (`None` if the socket just ended).
fn close_code(raw: &mut RawTcp) -> Option<u16> {
    while let Some((op, p)) = raw.read_frame() {
        if op == 0x8 {
            return Some(u16::from_be_bytes([p[0], p[1]]));
        }
    }
    None
}

fn upgrade(server: &TestServer, sub: &str) -> RawTcp {
    let token = server.token(sub, "org-1", "coordinator", &["w-1"]);
    RawTcp::upgrade(server.addr, "/ws", &token, None)
}

/// Autobahn 6.4.1's payload: `κόσμε`, then f4 90 80 80 (past U+10FFFF), then `edited`.
fn bad_payload() -> (Vec<u8>, usize) {
    let mut p = "κόσμε".as_bytes().to_vec();
    let at = p.len();
    p.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]);
    p.extend_from_slice(b"edited");
    (p, at)
}

#[test]
fn a_frame_is_refused_with_1007_at_its_first_impossible_byte_before_it_ends() {
    let server = TestServer::start("");
    let mut raw = upgrade(&server, "u-1");
    let (payload, at) = bad_payload();
    let f = frame(true, 0x1, &payload);
    let header = 2 + 4;
    // First chop: valid so far (it ends with f4, the start of a 4-byte sequence).
    raw.s.write_all(&f[..header + at + 1]).unwrap();
    // Second chop: 0x90 cannot follow f4. The rest of the frame is never sent.
    raw.s
        .write_all(&f[header + at + 1..header + at + 2])
        .unwrap();
    assert_eq!(close_code(&mut raw), Some(1007));
}

#[test]
fn a_first_fragment_with_invalid_bytes_is_refused_before_the_final_fragment() {
    let server = TestServer::start("");
    let mut raw = upgrade(&server, "u-1");
    let (payload, at) = bad_payload();
    // Not final: the message is still open when the server refuses it.
    raw.s
        .write_all(&frame(false, 0x1, &payload[..at + 2]))
        .unwrap();
    assert_eq!(close_code(&mut raw), Some(1007));
}

#[test]
fn a_code_point_split_across_fragments_and_writes_is_valid() {
    let server = TestServer::start("");
    let mut raw = upgrade(&server, "u-1");
    let text = json!({"op": "ping", "ref": "κόσμε-😀-ok"}).to_string();
    let bytes = text.as_bytes();
    // Cut inside the 4-byte 😀.
    let cut = text.find('😀').unwrap() + 2;
    let first = frame(false, 0x1, &bytes[..cut]);
    // The first fragment in two writes, cut inside its `ό` as well.
    let mid = text.find('ό').unwrap() + 1 + 6;
    raw.s.write_all(&first[..mid]).unwrap();
    raw.s.flush().unwrap();
    raw.s.write_all(&first[mid..]).unwrap();
    // A control frame between the fragments, then the rest.
    raw.s.write_all(&frame(true, 0x9, b"hi")).unwrap();
    raw.s.write_all(&frame(true, 0x0, &bytes[cut..])).unwrap();
    let reply = raw.read_json().expect("a reply");
    assert_eq!(reply["op"], "pong", "{reply}");
    assert_eq!(reply["ref"], "κόσμε-😀-ok");
    // The connection is still usable.
    raw.send_json(&json!({"op": "ping", "ref": "again"}));
    assert_eq!(raw.read_json().unwrap()["ref"], "again");
}
