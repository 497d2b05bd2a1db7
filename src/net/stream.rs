//! A byte stream that is plain TCP or TLS, in either direction, so that a
//! session can upgrade in place (STLS towards clients, STARTTLS upstream).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{client, server};

pub enum Stream {
    Plain(TcpStream),
    /// We are the TLS server (a POP3 client connected to us).
    Server(Box<server::TlsStream<TcpStream>>),
    /// We are the TLS client (towards the IMAP upstream).
    Client(Box<client::TlsStream<TcpStream>>),
    /// An in-memory pipe: in-process tests play the client or the upstream.
    Memory(tokio::io::DuplexStream),
    /// Only while a handshake has taken the socket out.
    Upgrading,
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Server(_) | Stream::Client(_))
    }

    /// Whether the peer has closed the connection or sent something
    /// unasked (a server's goodbye): checked without reading, before a
    /// connection that waited idle is used.
    pub fn peer_spoke(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Plain(tcp) => tcp.as_raw_fd(),
            Stream::Client(tls) => tls.get_ref().0.as_raw_fd(),
            Stream::Server(tls) => tls.get_ref().0.as_raw_fd(),
            Stream::Memory(_) | Stream::Upgrading => return false,
        };
        let mut byte = 0u8;
        // SAFETY: recv writes at most one byte into `byte`; MSG_PEEK
        // leaves it in the socket.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
    }

    /// Takes the plain socket out for a TLS handshake.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Upgrading) {
            Stream::Plain(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }
}

fn upgrading() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "TLS handshake failed")
}

/// Forwards a poll to the stream inside, whichever kind it is; `Upgrading`
/// answers `$upgrading`.
macro_rules! forward {
    ($self:ident, $s:ident => $poll:expr, upgrading => $upgrading:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $poll,
            Stream::Server($s) => $poll,
            Stream::Client($s) => $poll,
            Stream::Memory($s) => $poll,
            Stream::Upgrading => Poll::Ready($upgrading),
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        forward!(self, s => Pin::new(s).poll_read(cx, buf), upgrading => Err(upgrading()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        forward!(self, s => Pin::new(s).poll_write(cx, buf), upgrading => Err(upgrading()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => Pin::new(s).poll_flush(cx), upgrading => Err(upgrading()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => Pin::new(s).poll_shutdown(cx), upgrading => Ok(()))
    }
}
