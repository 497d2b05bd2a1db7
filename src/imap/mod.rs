//! The upstream side: an IMAP client that streams. `framer` and `parse` are
//! free of I/O; `client` owns the socket.

pub mod client;
pub mod framer;
pub mod parse;
pub mod quote;

pub use client::{Client, ClientError, Status};
