//! OAuth2 for upstreams that take no passwords: the token broker that logs
//! password-only POP3 users in with XOAUTH2 or OAUTHBEARER
//! (`upstream.oauth2`), and the enrolment that stores a user's refresh
//! token (`popgate oauth enroll`).

pub(crate) mod broker;
pub(crate) mod endpoint;
pub mod enroll;
pub(crate) mod http;
pub(crate) mod sealed;

pub(crate) use broker::watch;
