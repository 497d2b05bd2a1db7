//! Sockets: the accept loops, the buffered POP3 connection, shutdown.

pub mod conn;
pub mod listener;
pub mod proxy;
pub mod stream;
pub mod tls;
