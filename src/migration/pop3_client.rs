//! The POP3 client that reads the old server: log in, UIDL, LIST, and
//! `TOP n 0` of every message (pipelined when CAPA offers PIPELINING),
//! QUIT. It never sends RETR or DELE: the old mailbox stays as it was.
//! The parsing is in `pop3_wire`; this is the I/O around it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::headers::{self, MAX_HEADER};
use super::matcher::OldMessage;
use super::pop3_wire::{self, WireError};
use super::Source;
use crate::config::UpstreamTls;
use crate::net::stream::Stream;
use crate::secret::Secret;

/// Longest line accepted from the old server.
const MAX_LINE: usize = 64 * 1024;
/// TOP commands in flight at once when the server pipelines.
const WINDOW: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("read or write failed: {0}")]
    Io(std::io::Error),
    #[error("no answer within the timeout")]
    Timeout,
    #[error("the connection closed in the middle of an answer")]
    Closed,
    #[error("a line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("{command} refused: {text}")]
    Refused { command: &'static str, text: String },
}

struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    async fn send(&mut self, line: &[u8]) -> Result<(), Pop3Error> {
        let write = async {
            self.stream.write_all(line).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(r) => r.map_err(Pop3Error::Io),
            Err(_) => Err(Pop3Error::Timeout),
        }
    }

    /// The next line, with its end.
    async fn line(&mut self) -> Result<Vec<u8>, Pop3Error> {
        let mut scanned = 0;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[scanned..]) {
                let rest = self.buf.split_off(scanned + i + 1);
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            scanned = self.buf.len();
            if scanned > MAX_LINE {
                return Err(Pop3Error::LineTooLong);
            }
            let mut chunk = [0u8; 8192];
            let n = match tokio::time::timeout(self.timeout, self.stream.read(&mut chunk)).await {
                Ok(r) => r.map_err(Pop3Error::Io)?,
                Err(_) => return Err(Pop3Error::Timeout),
            };
            if n == 0 {
                return Err(Pop3Error::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A status line: the `+OK` text, or the refusal of `command`.
    async fn status(&mut self, command: &'static str) -> Result<String, Pop3Error> {
        let line = self.line().await?;
        match pop3_wire::status(&line)? {
            Ok(text) => Ok(text.to_string()),
            Err(text) => Err(Pop3Error::Refused {
                command,
                text: pop3_wire::quote(text.as_bytes()),
            }),
        }
    }

    async fn command(
        &mut self,
        command: &'static str,
        args: &[&[u8]],
    ) -> Result<String, Pop3Error> {
        self.send(&line(command, args)).await?;
        self.status(command).await
    }

    /// The data lines of a multi-line answer, each passed to `each`.
    async fn data(
        &mut self,
        mut each: impl FnMut(&[u8]) -> Result<(), WireError>,
    ) -> Result<(), Pop3Error> {
        loop {
            let l = self.line().await?;
            match pop3_wire::data_line(&l) {
                None => return Ok(()),
                Some(d) => each(d)?,
            }
        }
    }
}

/// A command line, allocated once at its full length: it may hold a
/// password, and a buffer that grows leaves copies behind.
fn line(command: &str, args: &[&[u8]]) -> Vec<u8> {
    let len = command.len() + args.iter().map(|a| a.len() + 1).sum::<usize>() + 2;
    let mut l = Vec::with_capacity(len);
    l.extend_from_slice(command.as_bytes());
    for a in args {
        l.push(b' ');
        l.extend_from_slice(a);
    }
    l.extend_from_slice(b"\r\n");
    l
}

async fn connect(source: &Source) -> Result<Conn, Pop3Error> {
    let c = &source.config;
    let tcp = match tokio::time::timeout(c.timeout, TcpStream::connect(&c.address.0)).await {
        Ok(r) => r.map_err(Pop3Error::Connect)?,
        Err(_) => return Err(Pop3Error::Timeout),
    };
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn {
        stream: Stream::Plain(tcp),
        buf: Vec::new(),
        timeout: c.timeout,
    };
    if c.tls == UpstreamTls::Implicit {
        conn.stream = handshake(source, conn.stream).await?;
    }
    conn.status("greeting").await?;
    if c.tls == UpstreamTls::Starttls {
        conn.command("STLS", &[]).await?;
        conn.buf.clear();
        conn.stream = handshake(source, conn.stream).await?;
    }
    Ok(conn)
}

async fn handshake(source: &Source, mut plain: Stream) -> Result<Stream, Pop3Error> {
    let (Some((connector, name)), Some(tcp)) = (source.tls.as_ref(), plain.take_plain()) else {
        return Err(Pop3Error::Tls(std::io::Error::other("no TLS configured")));
    };
    let connecting = connector.connect(name.clone(), tcp);
    match tokio::time::timeout(source.config.timeout, connecting).await {
        Ok(r) => Ok(Stream::Client(Box::new(r.map_err(Pop3Error::Tls)?))),
        Err(_) => Err(Pop3Error::Timeout),
    }
}

/// Reads every message's UIDL, size and header hash from the old server,
/// logged in as `user` with `password`.
pub async fn read_mailbox(
    source: &Source,
    user: &str,
    password: &Secret,
) -> Result<Vec<OldMessage>, Pop3Error> {
    let mut conn = connect(source).await?;
    // CAPA is optional (RFC 2449): a server without it does not pipeline.
    let mut capa = Vec::new();
    conn.send(b"CAPA\r\n").await?;
    if conn.status("CAPA").await.is_ok() {
        conn.data(|l| {
            capa.push(l.to_vec());
            Ok(())
        })
        .await?;
    }
    conn.command("USER", &[user.as_bytes()]).await?;
    conn.command("PASS", &[password.expose()])
        .await
        .map_err(|e| redact(e, password))?;

    let mut uidls = Vec::new();
    conn.command("UIDL", &[]).await?;
    conn.data(|l| {
        uidls.push(pop3_wire::uidl_entry(l)?);
        Ok(())
    })
    .await?;
    let mut sizes = Vec::new();
    conn.command("LIST", &[]).await?;
    conn.data(|l| {
        sizes.push(pop3_wire::list_entry(l)?);
        Ok(())
    })
    .await?;
    let listed = pop3_wire::listing(&uidls, &sizes)?;

    let window = if pop3_wire::offers(&capa, "PIPELINING") {
        WINDOW
    } else {
        1
    };
    let mut out = Vec::with_capacity(listed.len());
    for batch in listed.chunks(window) {
        let mut sent = Vec::with_capacity(batch.len() * 16);
        for m in batch {
            sent.extend_from_slice(&line("TOP", &[m.number.to_string().as_bytes(), b"0"]));
        }
        conn.send(&sent).await?;
        for m in batch {
            // A message gone meanwhile (another client's DELE) is skipped.
            match conn.status("TOP").await {
                Ok(_) => {}
                Err(Pop3Error::Refused { .. }) => continue,
                Err(e) => return Err(e),
            }
            let mut header = Vec::new();
            conn.data(|l| {
                if header.len() < MAX_HEADER {
                    header.extend_from_slice(l);
                    header.extend_from_slice(b"\r\n");
                }
                Ok(())
            })
            .await?;
            out.push(OldMessage {
                uidl: m.uidl.clone(),
                size: m.size,
                hash: headers::hash(&header),
            });
        }
    }
    // Nothing was marked, so QUIT changes nothing; its answer is moot.
    let _ = conn.send(b"QUIT\r\n").await;
    Ok(out)
}

/// A refusal's text without the password, should the server echo it.
fn redact(e: Pop3Error, password: &Secret) -> Pop3Error {
    match e {
        Pop3Error::Refused { command, text } => {
            let secret = String::from_utf8_lossy(password.expose());
            let quoted = pop3_wire::quote(password.expose());
            let inner = quoted.trim_matches('"');
            let text = if secret.is_empty() {
                text
            } else {
                text.replace(&*secret, "<password>")
                    .replace(inner, "<password>")
            };
            Pop3Error::Refused { command, text }
        }
        other => other,
    }
}
