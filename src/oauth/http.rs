//! One POST of a form to the authorization server, over TLS (rustls with
//! ring, the same stack as the upstream) or, to loopback only, plain HTTP.
//! A connection per request: tokens are asked for once per user per token
//! lifetime, not often enough to keep connections.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::oauth2::EndpointUrl;
use crate::secret::Secret;

/// The most a token endpoint's answer may hold.
const MAX_BODY: usize = 64 * 1024;

/// Why a request got no usable answer. The text names no secret: neither
/// the form nor the answer's body ever enters it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("broken HTTP exchange: {0}")]
    Protocol(String),
    #[error("answer larger than {MAX_BODY} bytes")]
    TooLarge,
}

/// A status and the body, kept as a secret (it holds tokens).
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Secret,
}

pub(crate) struct Endpoint {
    pub(crate) url: EndpointUrl,
    tls: Option<TlsConnector>,
    timeout: Duration,
}

impl Endpoint {
    pub(crate) fn new(
        url: EndpointUrl,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Endpoint {
        let tls = url.tls.then(|| TlsConnector::from(tls));
        Endpoint { url, tls, timeout }
    }

    /// POSTs `form` (already encoded: it holds secrets) and reads the
    /// answer, all within the timeout.
    pub(crate) async fn post_form(&self, form: &Secret) -> Result<Reply, HttpError> {
        match tokio::time::timeout(self.timeout, self.exchange(form)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, form: &Secret) -> Result<Reply, HttpError> {
        let u = &self.url;
        let tcp = TcpStream::connect((u.host.as_str(), u.port))
            .await
            .map_err(|e| HttpError::Connect(e.kind().to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.send(tcp, form).await,
            Some(connector) => {
                let name = ServerName::try_from(u.host.clone())
                    .map_err(|e| HttpError::Tls(e.to_string()))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| HttpError::Tls(e.to_string()))?;
                self.send(tls, form).await
            }
        }
    }

    async fn send<S>(&self, stream: S, form: &Secret) -> Result<Reply, HttpError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let protocol = |e: hyper::Error| HttpError::Protocol(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let u = &self.url;
        let host = if u.port == 443 || u.port == 80 {
            u.host.clone()
        } else {
            format!("{}:{}", u.host, u.port)
        };
        let request = Request::post(&u.path)
            .header("host", host)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("user-agent", concat!("popgate/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::copy_from_slice(form.expose())))
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        let result = async {
            let response = sender.send_request(request).await.map_err(protocol)?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        HttpError::TooLarge
                    } else {
                        HttpError::Protocol(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Reply {
                status,
                body: Secret(body.to_vec()),
            })
        }
        .await;
        driver.abort();
        result
    }
}

/// `application/x-www-form-urlencoded`, every byte but the unreserved ones
/// escaped.
pub(crate) fn form(pairs: &[(&str, &[u8])]) -> Secret {
    let len: usize = pairs.iter().map(|(k, v)| k.len() + 3 * v.len() + 2).sum();
    let mut out = Vec::with_capacity(len);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        escape(k.as_bytes(), &mut out);
        out.push(b'=');
        escape(v, &mut out);
    }
    Secret(out)
}

fn escape(raw: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn forms_escape_everything_but_unreserved() {
        let f = super::form(&[("grant_type", b"refresh_token"), ("x", b"a b&c=d/\xc3\xbc")]);
        assert_eq!(
            f.expose(),
            b"grant_type=refresh_token&x=a%20b%26c%3Dd%2F%C3%BC"
        );
    }
}
