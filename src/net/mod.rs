//! The transport below the sessions: plain or TLS streams, the buffered
//! POP3 connection, TLS material and PROXY protocol headers.

pub(crate) mod conn;
pub mod proxy;
pub mod stream;
pub mod tls;
