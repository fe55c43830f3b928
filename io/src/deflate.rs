//! permessage-deflate (RFC 7692): the negotiation in the upgrade, and the compression of
//! outgoing messages. Incoming compressed messages are inflated by the frame reader
//! (`wsframe.rs`), bounded by `max_frame_bytes`.
//!
//! Off by default (`[io.permessage_deflate] enabled`). Our side never keeps compression
//! context between messages unless configured (`server_no_context_takeover = true`, sent
//! to every client that offers the extension): each message is then compressed on its
//! own, so the compressed bytes of one message are the same for every connection with the
//! same window size. A shard compresses such a message ONCE: the fan-out hands every
//! subscriber the same `Bytes` (one allocation per message per shard), and the first
//! connection to write it compresses it into a small shard-local cache keyed by that
//! allocation; the others find it there. The cache keeps a clone of the original, so the
//! key cannot be reused by another allocation while the entry lives; it holds the last
//! [`CACHE_ENTRIES`] messages of at most [`CACHE_MAX_BYTES`] each (larger ones, such as
//! echoes, are compressed per connection). Messages under `min_size_bytes`, and those that
//! do not shrink, are sent uncompressed (RSV1 is per message).
//!
//! Memory: with no context takeover, a connection holds no deflate state at all (the
//! compressor is one per shard, reused). With `server_no_context_takeover = false` a
//! connection whose client allows it keeps its own compressor for its life (~300 KB with
//! miniz_oxide) and its messages are compressed per connection: only for a few clients.

use crate::wire::{encode_frame, Opcode};
use crate::DeflateConfig;
use bytes::Bytes;
use miniz_oxide::deflate::core::{
    create_comp_flags_from_zip_params, CompressionStrategy, CompressorOxide,
};
use miniz_oxide::MZFlush;
use std::cell::RefCell;
use std::collections::VecDeque;

/// Messages whose compressed form a shard keeps for the connections still to write them.
pub const CACHE_ENTRIES: usize = 64;
/// Largest message kept in that cache (the default `limits.max_payload_bytes` plus its
/// envelope fits).
pub const CACHE_MAX_BYTES: usize = 128 * 1024;

/// The extension's parameters as agreed with one client (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// We start every message with an empty window (sent when asked, or by our config).
    pub server_no_context_takeover: bool,
    /// The client starts every message with an empty window (when it offered it, or our
    /// config asks it): then we need no inflater between messages.
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window our compressor may use (15 unless the client asked less).
    pub server_max_window_bits: u8,
    /// Echoed when the client offered a value; our inflater takes any window.
    pub client_max_window_bits: Option<u8>,
}

impl Negotiated {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response(&self) -> String {
        let mut s = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            s.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if let Some(b) = self.client_max_window_bits {
            s.push_str(&format!("; client_max_window_bits={b}"));
        }
        s
    }
}

/// The first acceptable `permessage-deflate` offer among the client's
/// `Sec-WebSocket-Extensions` values (comma-separated, in its order of preference), or
/// `None`: extension off, no offer, or every offer invalid (an unknown or repeated
/// parameter, a value where none belongs, a window size outside 8..=15). Declining is
/// answering without the extension (RFC 7692 §5); the connection goes on uncompressed.
pub fn negotiate(cfg: &DeflateConfig, offers: Option<&str>) -> Option<Negotiated> {
    if !cfg.enabled {
        return None;
    }
    offers?
        .split(',')
        .find_map(|offer| accept(cfg, offer.trim()))
}

fn accept(cfg: &DeflateConfig, offer: &str) -> Option<Negotiated> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut n = Negotiated {
        server_no_context_takeover: cfg.server_no_context_takeover,
        client_no_context_takeover: cfg.client_no_context_takeover,
        server_max_window_bits: 15,
        client_max_window_bits: None,
    };
    let mut seen = [false; 4];
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        let bits = |v: Option<&str>| -> Option<u8> {
            let b: u8 = v?.parse().ok()?;
            (8..=15).contains(&b).then_some(b)
        };
        let i = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                n.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if value.is_none() => {
                n.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                n.server_max_window_bits = bits(value)?;
                2
            }
            "client_max_window_bits" => {
                if value.is_some() {
                    n.client_max_window_bits = Some(bits(value)?);
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    Some(n)
}

/// A connection's outgoing side of the extension: writes data frames compressed (RSV1)
/// when that pays.
pub struct Deflater {
    min_bytes: usize,
    level: u8,
    window_bits: u8,
    /// Our compressor when we keep context between messages (server context takeover).
    own: Option<Box<CompressorOxide>>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("min_bytes", &self.min_bytes)
            .field("window_bits", &self.window_bits)
            .field("takeover", &self.own.is_some())
            .finish()
    }
}

impl Deflater {
    pub fn new(cfg: &DeflateConfig, n: &Negotiated) -> Self {
        Deflater {
            min_bytes: cfg.min_size_bytes.max(1),
            level: cfg.level,
            window_bits: n.server_max_window_bits,
            own: (!n.server_no_context_takeover)
                .then(|| Box::new(new_compressor(cfg.level, n.server_max_window_bits))),
        }
    }

    /// Writes one server frame of `data` into `out`, compressed when it is a data frame of
    /// at least `min_size_bytes` that shrinks.
    pub fn encode(&mut self, out: &mut Vec<u8>, opcode: Opcode, data: &Bytes) {
        if opcode == Opcode::Ping || data.len() < self.min_bytes {
            return encode_frame(out, opcode, data);
        }
        let z = match &mut self.own {
            // With context takeover every message must go through the window the
            // client's inflater follows: always sent compressed.
            Some(c) => {
                let z = compress(c, data);
                if z.is_none() {
                    // Our window now holds bytes the client never sees: its later
                    // back-references could be wrong. Not seen; logged if it ever is.
                    tracing::error!("permessage-deflate: the compressor did not end a message");
                }
                z
            }
            None => shared_compress(self.level, self.window_bits, data),
        };
        match z {
            Some(z) => {
                let at = out.len();
                encode_frame(out, opcode, &z);
                out[at] |= 0x40;
            }
            None => encode_frame(out, opcode, data),
        }
    }
}

/// A raw-deflate compressor whose back-references stay within `2^window_bits` bytes.
///
/// IMPORTANT: under 15 bits this uses run-length matches only (distance 1), valid for any
/// window. miniz_oxide's own small-window mode (`CompressorOxide::with_params`) is not:
/// under 12 bits it asks for RLE at level 1, which its fast path ignores, and it wrote
/// distances up to 32 KiB for a 512-byte window (Autobahn 13.3.10: "invalid distance too
/// far back").
fn new_compressor(level: u8, window_bits: u8) -> CompressorOxide {
    let (level, strategy) = if window_bits >= 15 {
        (level, CompressionStrategy::Default)
    } else {
        // Level 2 or more keeps it off the fast path.
        (level.max(2), CompressionStrategy::RLE)
    };
    CompressorOxide::new(create_comp_flags_from_zip_params(
        level.into(),
        -15,
        strategy as i32,
    ))
}

/// Compresses `data` as one message (sync flush, the trailing 00 00 ff ff removed: RFC
/// 7692 §7.2.1), continuing `c`'s window. `None` if the compressor failed to end the
/// message (not seen; the caller sends it uncompressed).
fn compress(c: &mut CompressorOxide, data: &[u8]) -> Option<Bytes> {
    // Room for deflate's worst case (stored blocks: 5 bytes per 64 KiB, plus the marker),
    // so one call normally ends the message.
    compress_into(c, data, data.len() + data.len() / 16 + 64)
}

/// IMPORTANT: when the output fills up just as the input runs out, miniz_oxide returns
/// with all input consumed but the sync flush not written; the next call with no input
/// writes the rest of the block, still without the marker (Autobahn 12.2.9: a shard
/// panicked on the check below). So: call until the output ends with the marker, each
/// further call with no input flushing again (an extra empty block is harmless).
fn compress_into(c: &mut CompressorOxide, data: &[u8], room: usize) -> Option<Bytes> {
    const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
    let mut out = vec![0u8; room.max(16)];
    let mut input = data;
    let mut len = 0;
    for _ in 0..64 {
        if out.len() - len < 16 {
            out.resize(out.len() * 2, 0);
        }
        let r = miniz_oxide::deflate::stream::deflate(c, input, &mut out[len..], MZFlush::Sync);
        input = &input[r.bytes_consumed..];
        len += r.bytes_written;
        if r.status.is_err() && r.bytes_written == 0 && r.bytes_consumed == 0 {
            return None;
        }
        if input.is_empty() && len < out.len() && out[..len].ends_with(&TAIL) {
            out.truncate(len - TAIL.len());
            out.shrink_to_fit();
            return Some(out.into());
        }
    }
    None
}

/// The shard's compressor and its recent results (see the module doc).
struct Shared {
    compressor: Option<(u8, u8, Box<CompressorOxide>)>,
    /// (original, level, window bits, compressed or `None` when it did not shrink).
    recent: VecDeque<(Bytes, u8, u8, Option<Bytes>)>,
}

thread_local! {
    static SHARED: RefCell<Shared> = const {
        RefCell::new(Shared { compressor: None, recent: VecDeque::new() })
    };
}

/// Counts compressions done on this thread (tests and the bench read it).
pub fn compressions() -> u64 {
    COMPRESSIONS.with(|c| *c.borrow())
}

thread_local! {
    static COMPRESSIONS: RefCell<u64> = const { RefCell::new(0) };
}

/// `data` compressed on its own (no context), from the shard's cache when another
/// connection already compressed these very bytes.
fn shared_compress(level: u8, window_bits: u8, data: &Bytes) -> Option<Bytes> {
    SHARED.with(|s| {
        let mut s = s.borrow_mut();
        let key = (data.as_ptr(), data.len());
        // Newest first: a fan-out asks for the message it has just compressed.
        if let Some((_, _, _, z)) =
            s.recent.iter().rev().find(|(b, l, w, _)| {
                (b.as_ptr(), b.len()) == key && *l == level && *w == window_bits
            })
        {
            return z.clone();
        }
        let c = match &mut s.compressor {
            Some((l, w, c)) if *l == level && *w == window_bits => {
                c.reset();
                c
            }
            slot => {
                let c = Box::new(new_compressor(level, window_bits));
                &mut slot.insert((level, window_bits, c)).2
            }
        };
        let z = compress(c, data);
        COMPRESSIONS.with(|n| *n.borrow_mut() += 1);
        let z = z.filter(|z| z.len() < data.len());
        if data.len() <= CACHE_MAX_BYTES {
            if s.recent.len() == CACHE_ENTRIES {
                s.recent.pop_front();
            }
            s.recent
                .push_back((data.clone(), level, window_bits, z.clone()));
        }
        z
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::DataFormat;

    fn cfg() -> DeflateConfig {
        DeflateConfig {
            enabled: true,
            ..DeflateConfig::default()
        }
    }

    #[test]
    fn negotiation_accepts_the_first_valid_offer_and_echoes_its_parameters() {
        let c = cfg();
        assert_eq!(
            negotiate(&DeflateConfig::default(), Some("permessage-deflate")),
            None
        );
        assert_eq!(negotiate(&c, None), None);
        assert_eq!(negotiate(&c, Some("x-webkit-deflate-frame")), None);
        let n = negotiate(&c, Some("permessage-deflate; client_max_window_bits")).unwrap();
        assert_eq!(
            n.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let n = negotiate(
            &c,
            Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=\"12\""),
        )
        .unwrap();
        assert_eq!(n.server_max_window_bits, 10);
        assert!(n
            .response()
            .ends_with("server_max_window_bits=10; client_max_window_bits=12"));
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=x",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            assert_eq!(negotiate(&c, Some(bad)), None, "{bad}");
        }
        // A bad first offer falls back to the next.
        let n = negotiate(&c, Some("permessage-deflate; foo, permessage-deflate")).unwrap();
        assert_eq!(n.server_max_window_bits, 15);
        // With takeover allowed by config, only what the client asks is sent.
        let keep = DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            ..cfg()
        };
        assert_eq!(
            negotiate(&keep, Some("permessage-deflate"))
                .unwrap()
                .response(),
            "permessage-deflate"
        );
    }

    /// Decodes one server frame: (rsv1, payload).
    fn unframe(b: &[u8]) -> (bool, Vec<u8>) {
        let (len, at) = match b[1] {
            126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        assert_eq!(b.len(), at + len);
        (b[0] & 0x40 != 0, b[at..].to_vec())
    }

    /// A client's inflater over one message (no final block: the stream goes on).
    fn inflate(z: &[u8]) -> Vec<u8> {
        let mut v = z.to_vec();
        v.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut st = miniz_oxide::inflate::stream::InflateState::new_boxed(DataFormat::Raw);
        let mut out = vec![0u8; 1 << 17];
        let r = miniz_oxide::inflate::stream::inflate(&mut st, &v, &mut out, MZFlush::None);
        assert!(r.status.is_ok());
        out.truncate(r.bytes_written);
        out
    }

    #[test]
    fn messages_are_compressed_once_per_shard_small_ones_not_at_all() {
        let c = cfg();
        let n = negotiate(&c, Some("permessage-deflate")).unwrap();
        let msg =
            Bytes::from(r#"{"type":"message","payload":"aaaaaaaaaaaaaaaaaaaaaaa"}"#.repeat(20));
        let before = compressions();
        let mut frames = Vec::new();
        for _ in 0..100 {
            let mut d = Deflater::new(&c, &n);
            let mut out = Vec::new();
            d.encode(&mut out, Opcode::Text, &msg.clone());
            frames.push(out);
        }
        assert_eq!(compressions() - before, 1);
        assert!(frames.iter().all(|f| f == &frames[0]));
        let (rsv1, z) = unframe(&frames[0]);
        assert!(rsv1 && z.len() < msg.len() / 5);
        assert_eq!(inflate(&z), msg);
        // Under min_size_bytes: plain.
        let mut out = Vec::new();
        Deflater::new(&c, &n).encode(&mut out, Opcode::Text, &Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(out, b"\x81\x07{\"a\":1}");
        // Small windows compress with what fits them.
        let small = negotiate(&c, Some("permessage-deflate; server_max_window_bits=9")).unwrap();
        let mut out = Vec::new();
        Deflater::new(&c, &small).encode(&mut out, Opcode::Text, &msg);
        let (rsv1, z) = unframe(&out);
        assert!(rsv1);
        assert_eq!(inflate(&z), msg);
    }

    /// Whatever the output room, a message ends with the sync marker (stripped) and
    /// inflates back: the case where the output fills just as the input runs out took a
    /// shard down (Autobahn 12.2.9) before `compress_into` flushed until the marker.
    #[test]
    fn every_output_size_ends_the_message() {
        let mut x: u32 = 7;
        let mut data: Vec<u8> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        data.extend(b"a repetitive tail, a repetitive tail ".repeat(200));
        let mut c = new_compressor(6, 15);
        for room in (1..400).chain((10_000..30_000).step_by(97)) {
            c.reset();
            let z = compress_into(&mut c, &data, room).expect("ended");
            assert_eq!(inflate(&z), data, "room {room}");
        }
        // Smooth 8-bit "image" rows with noise (Autobahn 12.2's lena512.bmp is such data):
        // miniz takes all of a 64 KiB message before it writes, so the output fills as
        // the input runs out.
        let img: Vec<u8> = (0..65_536u32)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((i % 512) / 3 + (i / 512) / 2) as u8 ^ ((x >> 29) as u8)
            })
            .collect();
        for room in [img.len() / 2 + 64, img.len() / 3, img.len() / 4 + 1] {
            c.reset();
            let z = compress_into(&mut c, &img, room).expect("ended");
            assert_eq!(inflate(&z), img, "room {room}");
        }
    }

    #[test]
    fn context_takeover_compresses_through_one_window() {
        let c = DeflateConfig {
            server_no_context_takeover: false,
            ..cfg()
        };
        let n = negotiate(&c, Some("permessage-deflate")).unwrap();
        assert!(!n.server_no_context_takeover);
        let mut d = Deflater::new(&c, &n);
        let msg = Bytes::from("the quick brown fox jumps over the lazy dog ".repeat(10));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.encode(&mut a, Opcode::Text, &msg);
        d.encode(&mut b, Opcode::Text, &msg);
        let (za, zb) = (unframe(&a).1, unframe(&b).1);
        assert!(zb.len() < za.len());
        // One inflater over both, as the client's.
        let mut st = miniz_oxide::inflate::stream::InflateState::new_boxed(DataFormat::Raw);
        for z in [za, zb] {
            let mut input = z.clone();
            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut out = vec![0u8; 4096];
            let r = miniz_oxide::inflate::stream::inflate(&mut st, &input, &mut out, MZFlush::None);
            assert_eq!(&out[..r.bytes_written], &msg[..]);
        }
    }
}
