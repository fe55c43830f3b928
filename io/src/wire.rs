//! WebSocket frames as the server writes them (RFC 6455 §5.2): unmasked, unfragmented.
//! A leaf: the outbox and permessage-deflate both write frames with it.

/// WebSocket opcodes the server sends (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Text = 0x1,
    Binary = 0x2,
    Ping = 0x9,
}

/// Bytes of a server frame's header for a payload of `payload` bytes.
pub fn header_len(payload: usize) -> usize {
    if payload < 126 {
        2
    } else if payload <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// Writes one unmasked, unfragmented server frame (RFC 6455 §5.2).
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    out.push(0x80 | opcode as u8);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}
