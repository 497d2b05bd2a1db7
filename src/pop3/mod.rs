//! The POP3 side, free of I/O: commands, responses, the line reader, the
//! dot-stuffer and the SASL exchanges. The gateway feeds these bytes and
//! writes what they produce.

pub mod command;
pub mod digest;
pub mod dotstuff;
pub mod line;
pub mod response;
pub mod sasl;
pub mod uidl;

pub use command::{Command, CommandError};
pub use dotstuff::{DotStuffer, TopLimiter};
pub use line::{Line, LineReader};
pub use response::RespCode;

pub use crate::secret::Secret;
