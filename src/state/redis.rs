//! The Redis/Valkey backend: what several instances share so that they act
//! as one gateway. It holds the UIDL memory (one string per mailbox), the
//! per-user session leases and the failed-login penalty. Every operation
//! that reads and then writes is one Lua script, so it is atomic on the
//! server, and every script reads the clock with Redis's `TIME`, so the
//! instances' clocks need not agree.
//!
//! The connection is the `redis` crate's `ConnectionManager`: one
//! multiplexed connection, re-established by itself after Redis went away.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};

use super::scripts;
use super::{MailboxKey, Memory, Saved, StateError, StateStore, Stored};
use crate::config::RedisState;

pub struct Redis {
    client: redis::Client,
    manager: ConnectionManagerConfig,
    /// Made on first use, inside the runtime (`--check` has none).
    conn: std::sync::OnceLock<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
}

struct Scripts {
    save: Script,
    lease: Script,
    admit: Script,
    failed: Script,
}

/// A session's place in its user's lease set.
pub struct LeaseId {
    key: String,
    token: String,
}

/// The penalty's settings, passed to every script that applies it.
#[derive(Debug, Clone, Copy)]
pub struct PenaltyRule {
    pub max_delay: Duration,
    pub window: Duration,
    pub queue: u32,
}

/// What the admit script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Wait this long; `by_user` when the user's failures set the wait;
    /// `known` when the user logged in from this network recently.
    Wait {
        wait: Duration,
        by_user: bool,
        known: bool,
    },
    /// Too many attempts queued already.
    Crowded,
}

impl Redis {
    /// Prepares the connection without making it: an instance starts (and
    /// reports itself unready) while Redis is down, and connects when it
    /// returns. Errors name the key at fault.
    pub fn open(config: &RedisState) -> Result<Redis, String> {
        let mut info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("state.redis.url: {}", e.kind_text()))?;
        if let Some(path) = &config.password_file {
            let password = read_password(path)?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(|e| format!("state.redis.url: {e}"))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.timeout);
        Ok(Redis {
            client,
            manager,
            conn: std::sync::OnceLock::new(),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            scripts: Scripts {
                save: Script::new(scripts::SAVE),
                lease: Script::new(scripts::LEASE),
                admit: Script::new(scripts::ADMIT),
                failed: Script::new(scripts::FAILED),
            },
        })
    }

    /// The connection, made at the first call: it does not connect yet.
    pub(super) fn conn(&self) -> Result<ConnectionManager, StateError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let made =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager.clone())
                .map_err(|e| StateError::Backend(format!("redis: {}", e.kind_text())))?;
        Ok(self.conn.get_or_init(|| made).clone())
    }

    /// Runs one request within the timeout, whatever the connection does.
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StateError::Backend(format!("redis: {}", e.kind_text()))),
            Err(_) => Err(StateError::Backend("redis: no answer in time".into())),
        }
    }

    /// A user's sealed refresh token (`state::tokens`).
    pub(super) fn token_key(&self, route: &str, user: &str) -> String {
        format!("{}oauth:{}:{}", self.prefix, escape(route), escape(user))
    }

    /// The set of a route's enrolled users, for counting them.
    pub(super) fn token_index(&self, route: &str) -> String {
        format!("{}oauth-users:{}", self.prefix, escape(route))
    }

    fn uidl_key(&self, mailbox: &MailboxKey) -> String {
        let (r, u, f) = (&mailbox.route, &mailbox.user, &mailbox.folder);
        format!(
            "{}uidl:{}:{}:{}",
            self.prefix,
            escape(r),
            escape(u),
            escape(f)
        )
    }

    pub async fn ping(&self) -> Result<(), StateError> {
        let mut conn = self.conn()?;
        let _: String = self.run(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }

    /// Takes (or renews) a lease for `user`, a digest naming the user: at
    /// most `max` live leases per user (0: any number). `None` when full.
    pub async fn lease(
        &self,
        user: &str,
        token: Option<&LeaseId>,
        max: usize,
        ttl: Duration,
    ) -> Result<Option<LeaseId>, StateError> {
        let id = match token {
            Some(t) => LeaseId {
                key: t.key.clone(),
                token: t.token.clone(),
            },
            None => LeaseId {
                key: format!("{}lease:{user}", self.prefix),
                token: new_token(),
            },
        };
        let mut conn = self.conn()?;
        let mut call = self.scripts.lease.key(&id.key);
        call.arg(&id.token).arg(max).arg(ttl.as_millis() as u64);
        let got: i64 = self.run(call.invoke_async(&mut conn)).await?;
        Ok((got == 1).then_some(id))
    }

    pub async fn release(&self, lease: &LeaseId) -> Result<(), StateError> {
        let mut conn = self.conn()?;
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&lease.key).arg(&lease.token);
        let _: i64 = self.run(cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    /// Books a login of `user` (a digest) unless one was booked within
    /// `delay`: true when it may go on. One `SET NX PX`, so two instances
    /// cannot both let a login in.
    pub async fn login_delay(&self, user: &str, delay: Duration) -> Result<bool, StateError> {
        let mut conn = self.conn()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}login-delay:{user}", self.prefix))
            .arg(1)
            .arg("PX")
            .arg(delay.as_millis() as u64)
            .arg("NX");
        let set: Option<String> = self.run(cmd.query_async(&mut conn)).await?;
        Ok(set.is_some())
    }

    fn penalty_keys(&self, network: &str, user: &str) -> [String; 3] {
        let p = &self.prefix;
        [
            format!("{p}penalty:net:{network}"),
            format!("{p}penalty:user:{user}"),
            format!("{p}known:{user}:{network}"),
        ]
    }

    /// Queues a login attempt of `user` from `network` (digests).
    pub async fn admit(
        &self,
        network: &str,
        user: &str,
        rule: PenaltyRule,
    ) -> Result<Admit, StateError> {
        let [n, u, k] = self.penalty_keys(network, user);
        let mut conn = self.conn()?;
        let mut call = self.scripts.admit.key(n);
        call.key(u).key(k);
        rule_args(&mut call, rule);
        let (wait, by_user, known): (i64, i64, i64) =
            self.run(call.invoke_async(&mut conn)).await?;
        Ok(match u64::try_from(wait) {
            Ok(ms) => Admit::Wait {
                wait: Duration::from_millis(ms),
                by_user: by_user == 1,
                known: known == 1,
            },
            Err(_) => Admit::Crowded,
        })
    }

    pub async fn failed(
        &self,
        network: &str,
        user: &str,
        rule: PenaltyRule,
    ) -> Result<(), StateError> {
        let [n, u, _] = self.penalty_keys(network, user);
        let mut conn = self.conn()?;
        let mut call = self.scripts.failed.key(n);
        call.key(u);
        rule_args(&mut call, rule);
        let _: i64 = self.run(call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// Clears the network's failures and vouches for it as the user's for
    /// `known_for`; the user's failures stay (see `gateway::limits`).
    pub async fn succeeded(
        &self,
        network: &str,
        user: &str,
        known_for: Duration,
    ) -> Result<(), StateError> {
        let [n, _, k] = self.penalty_keys(network, user);
        let mut conn = self.conn()?;
        let mut pipe = redis::pipe();
        pipe.atomic().del(n).ignore();
        pipe.cmd("SET")
            .arg(k)
            .arg(1)
            .arg("PX")
            .arg(known_for.as_millis() as u64)
            .ignore();
        let () = self.run(pipe.query_async(&mut conn)).await?;
        Ok(())
    }
}

fn rule_args(call: &mut redis::ScriptInvocation<'_>, rule: PenaltyRule) {
    call.arg(rule.max_delay.as_millis() as u64)
        .arg(rule.window.as_millis() as u64)
        .arg(rule.queue);
}

#[async_trait]
impl StateStore for Redis {
    async fn load(&self, mailbox: &MailboxKey) -> Result<Option<Stored>, StateError> {
        let mut conn = self.conn()?;
        let key = self.uidl_key(mailbox);
        let bytes: Option<Vec<u8>> = self
            .run(redis::cmd("GET").arg(key).query_async(&mut conn))
            .await?;
        bytes.map(|b| Stored::decode(&b)).transpose()
    }

    async fn save(
        &self,
        mailbox: &MailboxKey,
        memory: &Memory,
        expected: Option<&Stored>,
    ) -> Result<Saved, StateError> {
        let mut conn = self.conn()?;
        let key = self.uidl_key(mailbox);
        let mut call = self.scripts.save.key(key);
        call.arg(memory.encode())
            .arg(expected.map(|s| s.stamp.hex()).unwrap_or_default());
        let saved: i64 = self.run(call.invoke_async(&mut conn)).await?;
        Ok(if saved == 1 {
            Saved::Done
        } else {
            Saved::Conflict
        })
    }

    async fn forget(&self, mailbox: &MailboxKey) -> Result<bool, StateError> {
        let mut conn = self.conn()?;
        let key = self.uidl_key(mailbox);
        let n: i64 = self
            .run(redis::cmd("DEL").arg(key).query_async(&mut conn))
            .await?;
        Ok(n > 0)
    }

    async fn ping(&self) -> Result<(), StateError> {
        Redis::ping(self).await
    }
}

/// Key parts are joined by `:`; a part's own `:` and `%` are escaped so
/// that two mailboxes never share a key.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace(':', "%3A")
}

/// 128 random bits: names one session's lease, so only it releases it.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    // An unguessable token is not needed for safety (only our own code
    // releases leases), only a unique one; fall back to the clock.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = t.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_password(path: &Path) -> Result<String, String> {
    let secret = crate::files::master_password(path)
        .map_err(|e| format!("state.redis.password_file: {e}"))?;
    String::from_utf8(secret.0.clone())
        .map_err(|_| format!("state.redis.password_file: {}: not UTF-8", path.display()))
}

/// The redis crate's error text without the parts that may echo a command's
/// arguments.
trait KindText {
    fn kind_text(&self) -> String;
}

impl KindText for redis::RedisError {
    fn kind_text(&self) -> String {
        if self.is_timeout() {
            "timed out".into()
        } else if self.is_connection_refusal() {
            "connection refused".into()
        } else if self.is_connection_dropped() || self.is_io_error() {
            "connection lost".into()
        } else {
            match self.code() {
                Some(code) => format!("server error {code}"),
                None => format!("{:?}", self.kind()),
            }
        }
    }
}
