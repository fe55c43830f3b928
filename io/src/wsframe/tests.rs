//! The frame reader's unit tests.

use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame; `b0` is FIN/RSV/opcode.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
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
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = miniz_oxide::deflate::core::CompressorOxide::new(
        miniz_oxide::deflate::core::create_comp_flags_from_zip_params(6, -15, 0),
    );
    let mut out = vec![0u8; data.len() + 64];
    let r = miniz_oxide::deflate::stream::deflate(&mut c, data, &mut out, MZFlush::Sync);
    out.truncate(r.bytes_written);
    assert!(out.ends_with(&DEFLATE_TAIL));
    out.truncate(out.len() - 4);
    out
}

/// Feeds `bytes` in pieces of `step` and collects events as owned strings.
fn run(r: &mut Reader, bytes: &[u8], step: usize) -> Result<Vec<String>, Fail> {
    let mut rx = Rx::default();
    let mut out = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        rx.extend(piece);
        while let Some(e) = r.next(&mut rx)? {
            out.push(match e {
                Event::Text(t) => format!("text:{t}"),
                Event::Binary(b) => format!("bin:{}", b.len()),
                Event::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
                Event::Pong => "pong".into(),
                Event::Close(c) => format!("close:{c:?}"),
            });
        }
    }
    Ok(out)
}

fn reader() -> Reader {
    Reader::new(
        1000,
        512,
        Some(InflateParams {
            client_context_takeover: false,
        }),
    )
}

/// What an idle connection's reader costs (issue 15 item 1: a few words, no buffer).
#[test]
fn an_idle_reader_is_a_few_words() {
    assert!(
        std::mem::size_of::<Reader>() <= 64,
        "{}",
        std::mem::size_of::<Reader>()
    );
    assert!(std::mem::size_of::<Rx>() <= 32);
    let r = reader();
    assert!(r.msg.is_none() && r.inflater.is_none());
}

#[test]
fn messages_fragments_and_interleaved_control_frames_in_any_split() {
    let mut s = frame(0x81, b"hello");
    s.extend(frame(0x01, "fr€".as_bytes()));
    s.extend(frame(0x89, b"p"));
    s.extend(frame(0x80, b"ag"));
    s.extend(frame(0x82, &[1, 2, 3]));
    s.extend(frame(0x8a, b""));
    s.extend(frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
    for step in [1, 2, 3, 7, 1000] {
        let got = run(&mut reader(), &s, step).unwrap();
        assert_eq!(
            got,
            [
                "text:hello",
                "ping:p",
                "text:fr€ag",
                "bin:3",
                "pong",
                "close:Some((1000, \"bye\"))"
            ],
            "step {step}"
        );
    }
}

#[test]
fn framing_errors_are_protocol_errors() {
    let p = |b: &[u8]| run(&mut reader(), b, 1000);
    let unmasked = [0x81, 0x01, b'x'];
    assert!(matches!(p(&unmasked), Err(Fail::Protocol(_))));
    assert!(matches!(p(&frame(0xa1, b"x")), Err(Fail::Protocol(_)))); // RSV2
    assert!(matches!(p(&frame(0x83, b"x")), Err(Fail::Protocol(_)))); // opcode 3
    assert!(matches!(p(&frame(0x80, b"x")), Err(Fail::Protocol(_)))); // lone continuation
    assert!(matches!(p(&frame(0x09, b"x")), Err(Fail::Protocol(_)))); // fragmented ping
    assert!(matches!(p(&frame(0x89, &[0; 126])), Err(Fail::Protocol(_))));
    assert!(matches!(p(&frame(0x88, &[3])), Err(Fail::Protocol(_))));
    let mut two = frame(0x01, b"a");
    two.extend(frame(0x81, b"b"));
    assert!(matches!(p(&two), Err(Fail::Protocol(_))));
    // RSV1 without the extension, and on a continuation or control frame with it.
    let mut plain = Reader::new(1000, 512, None);
    assert!(matches!(
        run(&mut plain, &frame(0xc1, b"x"), 1000),
        Err(Fail::Protocol(_))
    ));
    let mut c = frame(0x41, &deflate(b"a"));
    c.extend(frame(0xc0, b""));
    assert!(matches!(p(&c), Err(Fail::Protocol(_))));
    assert!(matches!(p(&frame(0xc9, b"")), Err(Fail::Protocol(_))));
    assert_eq!(
        p(&frame(0x88, &1002u16.to_be_bytes())).unwrap(),
        ["close:Some((1002, \"\"))"]
    );
    // A close code no endpoint may send is answered as a protocol violation.
    assert_eq!(
        p(&frame(0x88, &1005u16.to_be_bytes())).unwrap(),
        ["close:Some((1002, \"Protocol violation\"))"]
    );
}

#[test]
fn invalid_utf8_fails_before_the_frame_ends() {
    let mut r = reader();
    let f = frame(
        0x81,
        &[b'a'; 200]
            .iter()
            .copied()
            .chain([0xff])
            .chain([b'b'; 300])
            .collect::<Vec<_>>(),
    );
    let mut rx = Rx::default();
    // Header + 201 payload bytes: the 0xff is in, the frame is not complete.
    rx.extend(&f[..4 + 4 + 201]);
    assert_eq!(
        r.next(&mut rx),
        Err(Fail::InvalidData("text frame is not UTF-8"))
    );
    // A message ending inside a code point.
    let e = run(&mut reader(), &frame(0x81, &[0xe2, 0x82]), 1);
    assert!(matches!(e, Err(Fail::InvalidData(_))));
    // ...and a close reason that is not UTF-8.
    let e = run(&mut reader(), &frame(0x88, &[0x03, 0xe8, 0xff]), 1000);
    assert!(matches!(e, Err(Fail::InvalidData(_))));
}

#[test]
fn size_limits_apply_to_frames_messages_and_inflated_bytes() {
    let p = |b: &[u8]| run(&mut reader(), b, 1000);
    // From the header alone: 4 bytes of a frame claiming 1001.
    let mut r = reader();
    let mut rx = Rx::default();
    rx.extend(&frame(0x82, &[0; 1001])[..8]);
    assert_eq!(r.next(&mut rx), Err(Fail::TooBig));
    let mut m = frame(0x02, &[0; 600]);
    m.extend(frame(0x80, &[0; 600]));
    assert_eq!(p(&m), Err(Fail::TooBig));
    // 100 KB of zeros deflate to ~100 bytes: refused, never inflated past the bound.
    let bomb = deflate(&vec![0u8; 100_000]);
    assert!(bomb.len() < 200, "{}", bomb.len());
    assert_eq!(p(&frame(0xc2, &bomb)), Err(Fail::TooBig));
    assert_eq!(p(&frame(0xc1, &deflate(&[b'a'; 1000]))).unwrap().len(), 1);
}

#[test]
fn compressed_messages_inflate_whole_or_fragmented() {
    let text = "ringbearer ".repeat(50);
    let z = deflate(text.as_bytes());
    let mut s = frame(0xc1, &z);
    let (a, b) = z.split_at(z.len() / 2);
    s.extend(frame(0x41, a));
    s.extend(frame(0x89, b"x"));
    s.extend(frame(0x80, b));
    for step in [1, 5, 1000] {
        let got = run(&mut reader(), &s, step).unwrap();
        let want = format!("text:{text}");
        assert_eq!(got, [want.as_str(), "ping:x", want.as_str()]);
    }
    // Garbage is invalid data, not a panic.
    let e = run(&mut reader(), &frame(0xc1, &[0xff; 20]), 1000);
    assert!(matches!(e, Err(Fail::InvalidData(_))));
}

#[test]
fn context_takeover_keeps_the_inflater_and_no_takeover_drops_it() {
    let mut c = miniz_oxide::deflate::core::CompressorOxide::new(
        miniz_oxide::deflate::core::create_comp_flags_from_zip_params(6, -15, 0),
    );
    let mut z = |d: &[u8]| {
        let mut out = vec![0u8; 256];
        let r = miniz_oxide::deflate::stream::deflate(&mut c, d, &mut out, MZFlush::Sync);
        out.truncate(r.bytes_written - 4);
        out
    };
    let one = z(b"the same words again and again");
    let two = z(b"the same words again and again");
    assert!(two.len() < one.len(), "the second refers to the first");
    let mut s = frame(0xc1, &one);
    s.extend(frame(0xc1, &two));
    let mut r = Reader::new(
        1000,
        512,
        Some(InflateParams {
            client_context_takeover: true,
        }),
    );
    assert_eq!(run(&mut r, &s, 1000).unwrap().len(), 2);
    assert!(r.inflater.is_some());
    let mut r = reader();
    assert_eq!(
        run(&mut r, &frame(0xc1, &deflate(b"x")), 1000)
            .unwrap()
            .len(),
        1
    );
    // Once the message is handled (the next call), an idle reader holds no inflater
    // and no message buffer.
    assert!(r.inflater.is_none() && r.msg.is_none());
}
