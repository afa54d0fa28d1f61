//! MLLP (Minimal Lower Layer Protocol): `<VT> message <FS><CR>` frames over TCP.
//!
//! [`FrameDecoder`] is a pure byte-stream decoder (fuzzed): bytes before a start block are
//! skipped and reported, a start block inside a frame abandons the unterminated frame, and a frame
//! larger than the limit is dropped up to its end. The listener processes each connection's
//! messages strictly in order (the next frame is read only after the previous ACK is written) and
//! many connections concurrently.

use crate::security::PeerInfo;
use crate::security::net::Tls;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Start block.
pub const VT: u8 = 0x0B;
/// End block (followed by CR).
pub const FS: u8 = 0x1C;
const CR: u8 = 0x0D;

/// What the decoder found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message.
    Message(Vec<u8>),
    /// Bytes outside any frame were skipped.
    Garbage(usize),
    /// A new start block came before the end of the frame in progress; that frame is dropped.
    Unterminated(usize),
    /// A frame exceeded the limit; it is being dropped up to its end block.
    TooLarge,
}

/// Incremental MLLP frame decoder.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    in_frame: bool,
    oversized: bool,
    max: usize,
}

impl FrameDecoder {
    /// A decoder accepting messages up to `max` bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            in_frame: false,
            oversized: false,
            max,
        }
    }

    /// True while a frame has started and not ended (a connection closing now loses it unacked).
    pub fn in_frame(&self) -> bool {
        self.in_frame
    }

    /// Feeds bytes; returns what they complete, in order.
    pub fn push(&mut self, data: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut garbage = 0usize;
        let mut i = 0;
        while i < data.len() {
            if !self.in_frame {
                let b = data[i];
                i += 1;
                if b == VT {
                    if garbage > 0 {
                        out.push(Frame::Garbage(std::mem::take(&mut garbage)));
                    }
                    self.in_frame = true;
                    self.oversized = false;
                    self.buf.clear();
                } else if !(b == CR || b == b'\n') {
                    // A stray CR/LF after an end block is common and harmless.
                    garbage += 1;
                }
                continue;
            }
            // Inside a frame: the bytes up to the next block character are content, taken at
            // once (a message is kilobytes; byte-by-byte pushing cost more than the parse).
            let rest = &data[i..];
            let run = rest
                .iter()
                .position(|&c| c == FS || c == VT)
                .unwrap_or(rest.len());
            if !self.oversized {
                if self.buf.len() + run > self.max {
                    self.oversized = true;
                    self.buf = Vec::new();
                    out.push(Frame::TooLarge);
                } else {
                    self.buf.extend_from_slice(&rest[..run]);
                }
            }
            i += run;
            let Some(&block) = rest.get(run) else {
                break;
            };
            i += 1;
            if block == VT {
                out.push(Frame::Unterminated(self.buf.len()));
                self.buf.clear();
                self.oversized = false;
            } else {
                // FS ends the frame; the CR after it is skipped as inter-frame noise above.
                self.in_frame = false;
                if self.oversized {
                    self.oversized = false;
                } else {
                    out.push(Frame::Message(std::mem::take(&mut self.buf)));
                }
            }
        }
        if garbage > 0 {
            out.push(Frame::Garbage(garbage));
        }
        out
    }
}

/// Wraps a message in an MLLP frame.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(VT);
    out.extend_from_slice(message);
    out.push(FS);
    out.push(CR);
    out
}

/// Something that answers one message with the bytes of its ACK (or nothing, when the sender's
/// MSH-15 asks for none).
pub trait Handler: Send + Sync + 'static {
    /// `peer` is the connection's address and TLS client identity (the sender's credentials).
    fn handle(
        &self,
        peer: &crate::security::PeerInfo,
        message: Vec<u8>,
    ) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send;
    /// The ACK for a frame that was too large to process.
    fn too_large(&self) -> Vec<u8>;
}

/// Serves MLLP on a bound listener until `stop` fires; returns after in-flight messages finish.
/// With `tls`, every connection starts with a TLS handshake (its client certificate, if any, is
/// the sender's identity).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    max: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
    tls: Option<Arc<Tls>>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, addr)) = accepted else { continue };
                let _ = socket.set_nodelay(true);
                let handler = handler.clone();
                let stop = stop.clone();
                match tls.clone() {
                    None => {
                        let peer = PeerInfo { addr, cert_cn: None };
                        tasks.spawn(connection(socket, peer, handler, max, stop));
                    }
                    Some(tls) => {
                        tasks.spawn(async move {
                            let shake = tokio::time::timeout(std::time::Duration::from_secs(30), tls.accept(socket));
                            match shake.await {
                                Ok(Ok((s, cert_cn))) => {
                                    connection(s, PeerInfo { addr, cert_cn }, handler, max, stop).await
                                }
                                Ok(Err(e)) => tracing::warn!(%addr, error = %e, "MLLP: TLS handshake failed"),
                                Err(_) => tracing::warn!(%addr, "MLLP: TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            _ = stop.changed() => break,
        }
        // Reap finished connections so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn connection<H: Handler, S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    info: PeerInfo,
    handler: Arc<H>,
    max: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let peer: SocketAddr = info.addr;
    let mut decoder = FrameDecoder::new(max);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = socket.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // Between messages only: a message being processed finishes first.
            _ = stop.changed() => break,
        };
        for f in decoder.push(&buf[..n]) {
            let reply = match f {
                Frame::Message(m) => handler.handle(&info, m).await,
                Frame::TooLarge => Some(handler.too_large()),
                Frame::Garbage(k) => {
                    tracing::warn!(%peer, bytes = k, "MLLP: bytes outside a frame skipped");
                    None
                }
                Frame::Unterminated(k) => {
                    tracing::warn!(%peer, bytes = k, "MLLP: frame without end block dropped");
                    None
                }
            };
            if let Some(ack) = reply
                && socket.write_all(&frame(&ack)).await.is_err()
            {
                return;
            }
        }
    }
    if decoder.in_frame() {
        tracing::warn!(%peer, "MLLP: connection closed inside a frame; that message was not processed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_garbage_and_splits() {
        let mut d = FrameDecoder::new(100);
        let mut out = d.push(b"xx\x0bMSH|1\x1c\r\x0bMSH");
        out.extend(d.push(b"|2\x1c\r"));
        assert_eq!(
            out,
            vec![
                Frame::Garbage(2),
                Frame::Message(b"MSH|1".to_vec()),
                Frame::Message(b"MSH|2".to_vec())
            ]
        );
        assert!(!d.in_frame());
    }

    #[test]
    fn missing_end_block_and_oversized() {
        let mut d = FrameDecoder::new(4);
        assert_eq!(
            d.push(b"\x0bab\x0bcd\x1c\r"),
            vec![Frame::Unterminated(2), Frame::Message(b"cd".to_vec())]
        );
        assert_eq!(
            d.push(b"\x0b123456\x1c\r\x0bok\x1c\r"),
            vec![Frame::TooLarge, Frame::Message(b"ok".to_vec())]
        );
        d.push(b"\x0bpartial");
        assert!(d.in_frame());
    }

    #[test]
    fn a_frame_of_exactly_the_limit_is_accepted_and_one_byte_more_refused() {
        let mut d = FrameDecoder::new(4);
        assert_eq!(
            d.push(b"\x0b1234\x1c\r\x0b12345\x1c\r"),
            vec![Frame::Message(b"1234".to_vec()), Frame::TooLarge]
        );
        // Over the limit only once its pieces add up.
        assert_eq!(d.push(b"\x0b12"), vec![]);
        assert_eq!(d.push(b"34"), vec![]);
        assert_eq!(d.push(b"5\x1c\r"), vec![Frame::TooLarge]);
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_frames() {
        let stream = b"\x0bMSH|a\rPID|1\x1c\r\x0bcut\x0bMSH|b\x1c\r\n\x0b0123456789abcdefXYZ\x1c\r\x0bMSH|c\x1c\r";
        let whole = FrameDecoder::new(16).push(stream);
        assert_eq!(
            whole,
            vec![
                Frame::Message(b"MSH|a\rPID|1".to_vec()),
                Frame::Unterminated(3),
                Frame::Message(b"MSH|b".to_vec()),
                Frame::TooLarge,
                Frame::Message(b"MSH|c".to_vec()),
            ]
        );
        for at in 0..=stream.len() {
            let mut d = FrameDecoder::new(16);
            let mut out = d.push(&stream[..at]);
            out.extend(d.push(&stream[at..]));
            assert_eq!(out, whole, "split at {at}");
        }
    }
}
