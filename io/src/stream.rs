//! The byte stream of one accepted connection: the plain TCP socket, or TLS over it
//! (SPEC §4 `wss://`, `https://`). Everything above the accept works on [`Stream`] and does
//! not know which.
//!
//! The plaintext arm forwards each call straight to glommio's socket: no extra copy or
//! allocation per read or write. Socket options (nodelay, the write timeout) are set on the
//! `TcpStream` before it is wrapped and keep working under TLS, whose records are written
//! through the same socket.
//!
//! IMPORTANT: under TLS a completed `write` may leave the last record inside rustls when the
//! socket was full; callers `flush` after a batch of writes (free for plaintext).

use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

pub enum Stream {
    Plain(TcpStream),
    /// Boxed: a rustls server connection is a few hundred bytes of state we only pay for
    /// when TLS is configured.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(_) => Poll::Ready(Ok(())),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    /// TLS: sends `close_notify`, then shuts the socket down like plaintext.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}
