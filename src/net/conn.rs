//! The client's socket with its input and output buffers.
//!
//! Responses accumulate in `out` and go out in one write when the client has
//! no further complete command waiting (so a pipelined batch costs one
//! write), or when `out` grows past a chunk while a message streams.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::net::stream::Stream;
use crate::pop3::{Line, LineReader};

/// Bound on a TLS handshake, so a silent client cannot hold a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Output is flushed once it holds this much, which bounds memory per session.
const FLUSH_AT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("client closed the connection")]
    Closed,
    #[error("client idle for too long")]
    Timeout,
    #[error("client I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub struct ClientConn<S> {
    stream: S,
    inbuf: BytesMut,
    pub out: BytesMut,
    lines: LineReader,
    idle: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientConn<S> {
    pub fn new(stream: S, max_line: usize, idle: Duration) -> Self {
        ClientConn {
            stream,
            inbuf: BytesMut::with_capacity(1024),
            out: BytesMut::with_capacity(4096),
            lines: LineReader::new(max_line),
            idle,
        }
    }

    /// The next command line. Pending output is flushed before waiting.
    pub async fn next_line(&mut self) -> Result<Line, ConnError> {
        loop {
            if let Some(line) = self.lines.next_line(&mut self.inbuf) {
                return Ok(line);
            }
            self.flush().await?;
            if self.inbuf.capacity() - self.inbuf.len() < 512 {
                self.inbuf.reserve(4096);
            }
            let n = tokio::time::timeout(self.idle, self.stream.read_buf(&mut self.inbuf))
                .await
                .map_err(|_| ConnError::Timeout)??;
            if n == 0 {
                return Err(ConnError::Closed);
            }
        }
    }

    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        // A client that stops reading is as idle as one that stops writing.
        tokio::time::timeout(self.idle, self.stream.write_all(&self.out))
            .await
            .map_err(|_| ConnError::Timeout)??;
        self.out.clear();
        Ok(())
    }

    /// Flushes only when enough output has piled up.
    pub async fn flush_if_full(&mut self) -> Result<(), ConnError> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// True if the client sent more than the lines already taken.
    pub fn has_pending_input(&self) -> bool {
        !self.inbuf.is_empty()
    }

    /// Flushes and closes the write side so the client sees a clean end.
    pub async fn close(mut self) {
        if self.flush().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.shutdown()).await;
        }
    }
}

impl ClientConn<Stream> {
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Turns the plain connection into TLS (implicit TLS or STLS). Pending
    /// output is sent first; the line reader starts clean.
    pub async fn start_tls(
        &mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
    ) -> Result<(), ConnError> {
        self.flush().await?;
        debug_assert!(self.inbuf.is_empty());
        self.inbuf.clear();
        self.lines.reset();
        let tcp = self
            .stream
            .take_plain()
            .ok_or_else(|| std::io::Error::other("already TLS"))?;
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| ConnError::Timeout)??;
        self.stream = Stream::Server(Box::new(tls));
        Ok(())
    }
}
