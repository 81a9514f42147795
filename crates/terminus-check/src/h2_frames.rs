//! A hand-driven HTTP/2 peer (prior knowledge, as over `h2c`, on TCP or a Unix socket):
//! frames written and read one by one (RFC 9113 §4.1), so that a test can stop at any step of the protocol.
//! That is what a real client never does, and what a misbehaving peer does: send the
//! preface and nothing else, stop reading after a response, or ignore every PING.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types used here (RFC 9113 §6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
}

/// END_STREAM on DATA and HEADERS.
pub const END_STREAM: u8 = 0x1;
/// END_HEADERS on HEADERS.
pub const END_HEADERS: u8 = 0x4;
/// ACK on SETTINGS and PING.
pub const ACK: u8 = 0x1;

/// One frame.
#[derive(Debug)]
pub struct Frame {
    /// The frame type (see [`kind`]).
    pub kind: u8,
    /// The flags.
    pub flags: u8,
    /// The stream identifier (0 for the connection).
    pub stream: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Writes one frame: 24-bit length, type, flags, 31-bit stream id, payload.
pub async fn write_frame(
    io: &mut (impl AsyncRead + AsyncWrite + Unpin),
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> io::Result<()> {
    let length = u32::try_from(payload.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.extend_from_slice(&length.to_be_bytes()[1..]);
    frame.push(kind);
    frame.push(flags);
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(payload);
    io.write_all(&frame).await
}

/// Reads one frame.
pub async fn read_frame(io: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> io::Result<Frame> {
    let mut header = [0u8; 9];
    io.read_exact(&mut header).await?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    io.read_exact(&mut payload).await?;
    Ok(Frame {
        kind: header[3],
        flags: header[4],
        stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// The connection handshake: the preface and an empty SETTINGS, then read until the
/// server has sent its own SETTINGS (which this acknowledges) and acknowledged ours.
/// Bound it with a timeout: a server that never answers leaves it waiting.
pub async fn handshake(io: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> io::Result<()> {
    io.write_all(PREFACE).await?;
    write_frame(io, kind::SETTINGS, 0, 0, &[]).await?;
    let (mut theirs, mut our_ack) = (false, false);
    while !(theirs && our_ack) {
        let frame = read_frame(io).await?;
        if frame.kind == kind::SETTINGS && frame.flags & ACK == 0 {
            write_frame(io, kind::SETTINGS, ACK, 0, &[]).await?;
            theirs = true;
        } else if frame.kind == kind::SETTINGS {
            our_ack = true;
        }
    }
    Ok(())
}

/// The HPACK header block of `GET http://127.0.0.1{path}`, without Huffman coding or
/// dynamic-table entries (RFC 7541): indexed fields from the static table for
/// `:method GET` (2) and `:scheme http` (6), and literals without indexing, with the
/// name from the static table, for `:path` (4) and `:authority` (1).
pub fn get_header_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x80 | 2, 0x80 | 6];
    for (name_index, value) in [(4u8, path), (1, "127.0.0.1")] {
        assert!(value.len() < 127, "one-byte string length only");
        block.push(name_index); // 0000xxxx: literal without indexing, indexed name
        block.push(value.len() as u8); // H = 0: no Huffman coding
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// Opens stream `stream` with `GET path` (HEADERS with END_STREAM and END_HEADERS).
pub async fn send_get(
    io: &mut (impl AsyncRead + AsyncWrite + Unpin),
    stream: u32,
    path: &str,
) -> io::Result<()> {
    write_frame(
        io,
        kind::HEADERS,
        END_STREAM | END_HEADERS,
        stream,
        &get_header_block(path),
    )
    .await
}

/// Reads frames until stream `stream` ends; returns its body. Fails unless the
/// response is `:status 200`, which the server's HPACK encoder sends as the static
/// table's entry 8 (one byte, `0x88`). Frames of the connection are read and ignored.
pub async fn read_response(
    io: &mut (impl AsyncRead + AsyncWrite + Unpin),
    stream: u32,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let frame = read_frame(io).await?;
        if frame.stream != stream {
            continue;
        }
        match frame.kind {
            kind::HEADERS if frame.payload.first() != Some(&0x88) => {
                return Err(io::Error::other(format!("not a 200: {frame:?}")));
            }
            kind::DATA => body.extend_from_slice(&frame.payload),
            _ => {}
        }
        if frame.flags & END_STREAM != 0 {
            return Ok(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_is_indexed_then_plain_literals() {
        let block = get_header_block("/");
        assert_eq!(block[..2], [0x82, 0x86]);
        assert_eq!(block[2..5], [0x04, 1, b'/']);
        assert_eq!(block[5..7], [0x01, 9]);
        assert_eq!(&block[7..], b"127.0.0.1");
    }
}
