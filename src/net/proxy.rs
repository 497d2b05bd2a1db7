//! The PROXY protocol (versions 1 and 2, as HAProxy specifies them): a load
//! balancer tells us the real client address in a header before the first
//! POP3 byte. The parser is free of I/O; `read_header` peeks at the socket so
//! that not one byte past the header is consumed (a TLS ClientHello may
//! follow it directly).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included.
const MAX_V1: usize = 107;
/// v2 with its TLVs we cap at this.
const MAX_HEADER: usize = 536;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A header of `len` bytes; `source` is the client, or `None` for a
    /// health check from the balancer itself (v1 UNKNOWN, v2 LOCAL).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid PROXY protocol header: {0}")]
pub struct Invalid(&'static str);

pub fn parse(buf: &[u8]) -> Result<Parsed, Invalid> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if buf.len() < 16 {
            Ok(Parsed::Incomplete)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return parse_v1(buf);
    }
    Err(Invalid("no PROXY header"))
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Invalid> {
    // The same verdict whether the CRLF has arrived yet or not.
    let end = match memchr::memmem::find(buf, b"\r\n") {
        Some(end) if end + 2 <= MAX_V1 => end,
        None if buf.len() < MAX_V1 => return Ok(Parsed::Incomplete),
        _ => return Err(Invalid("v1 line too long")),
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| Invalid("v1 not ASCII"))?;
    let len = end + 2;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Parsed::Header { len, source: None }),
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| Invalid("v1 bad source address"))?;
            if (*proto == "TCP4") != ip.is_ipv4() {
                return Err(Invalid("v1 address family mismatch"));
            }
            let port: u16 = sport.parse().map_err(|_| Invalid("v1 bad source port"))?;
            Ok(Parsed::Header {
                len,
                source: Some(SocketAddr::new(ip, port)),
            })
        }
        _ => Err(Invalid("v1 malformed")),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Invalid> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Invalid("v2 bad version"));
    }
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body_len;
    if len > MAX_HEADER {
        return Err(Invalid("v2 header too long"));
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[16..len];
    match ver_cmd & 0x0f {
        0 => return Ok(Parsed::Header { len, source: None }), // LOCAL
        1 => {}                                               // PROXY
        _ => return Err(Invalid("v2 bad command")),
    }
    let source = match buf[13] {
        0x11 | 0x12 if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        0x21 | 0x22 if body.len() >= 36 => {
            let octets: [u8; 16] = body[..16].try_into().expect("16 bytes");
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        0x00 => None, // UNSPEC
        0x11 | 0x12 | 0x21 | 0x22 => return Err(Invalid("v2 address block too short")),
        _ => return Err(Invalid("v2 unsupported address family")),
    };
    Ok(Parsed::Header { len, source })
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("I/O error reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PROXY header in time")]
    Timeout,
}

/// Reads exactly the header off `stream`; returns the client address it
/// names, or `None` when the balancer speaks for itself.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ReadError> {
    let work = async {
        let mut buf = [0u8; MAX_HEADER];
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            match parse(&buf[..n])? {
                Parsed::Header { len, source } => {
                    stream.read_exact(&mut buf[..len]).await?;
                    // An IPv4 client behind an IPv6 balancer is an IPv4 client.
                    return Ok(source.map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())));
                }
                Parsed::Incomplete if n == MAX_HEADER => {
                    return Err(Invalid("header too long").into())
                }
                // peek returns what is there; wait a little for the rest.
                Parsed::Incomplete => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ReadError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_forms() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 110\r\nUSER x";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                len: 41,
                source: Some("192.0.2.7:56324".parse().unwrap())
            })
        );
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 995\r\n";
        assert!(matches!(parse(h), Ok(Parsed::Header { source: Some(a), .. }) if a.port() == 4000));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Header {
                len: 15,
                source: None
            })
        );
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete));
        assert!(parse(b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 1.2.3.5 99999 2\r\n").is_err());
        assert!(parse(b"USER alice\r\n").is_err());
    }

    #[test]
    fn v2_forms() {
        let mut body = vec![198, 51, 100, 9, 10, 0, 0, 1];
        body.extend_from_slice(&1234u16.to_be_bytes());
        body.extend_from_slice(&110u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0, 1, 0]); // a TLV, skipped
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                len: h.len(),
                source: Some("198.51.100.9:1234".parse().unwrap())
            })
        );
        assert_eq!(parse(&h[..20]), Ok(Parsed::Incomplete));
        assert_eq!(
            parse(&v2(0, 0, &[])),
            Ok(Parsed::Header {
                len: 16,
                source: None
            })
        );
        assert!(parse(&v2(1, 0x11, &[1, 2, 3])).is_err());
        assert!(parse(&v2(5, 0x11, &body)).is_err());
    }

    #[test]
    fn v1_longer_than_107_bytes_is_refused_with_or_without_its_crlf() {
        let mut long = b"PROXY UNKNOWN".to_vec();
        long.resize(109, b' ');
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Err(Invalid("v1 line too long")));
        assert_eq!(parse(&long[..107]), Err(Invalid("v1 line too long")));
        let mut max = b"PROXY UNKNOWN".to_vec();
        max.resize(105, b' ');
        max.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&max),
            Ok(Parsed::Header {
                len: 107,
                source: None
            })
        );
        assert_eq!(parse(&max[..106]), Ok(Parsed::Incomplete));
    }

    proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&input);
        }

        #[test]
        fn v2_signature_prefix_with_junk_never_panics(rest in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend_from_slice(&rest);
            let _ = parse(&h);
        }
    }
}
