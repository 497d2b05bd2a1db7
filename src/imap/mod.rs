//! The upstream side: an IMAP client that streams. `framer` and `parse` are
//! free of I/O; `client` owns the socket.

pub(crate) mod client;
pub mod date;
pub mod framer;
pub mod parse;
pub mod quote;

pub use client::{Client, ClientError, Status};

/// What SELECT told us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selected {
    pub uid_validity: u32,
    pub exists: u32,
}

/// One message of the login snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listing {
    pub uid: u32,
    pub size: u64,
    pub deleted: bool,
}
