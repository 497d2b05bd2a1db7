//! The token broker's records: one sealed refresh token per user and route
//! (`oauth::sealed` makes and opens them). They sit beside the UIDL
//! memories in the same store, in a table (embedded) or a key space (Redis)
//! of their own: a record is opaque bytes, useless without the user's POP3
//! password.

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use super::embedded::Embedded;
use super::redis::Redis;
use super::StateError;

#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn load_token(&self, route: &str, user: &str) -> Result<Option<Vec<u8>>, StateError>;
    async fn save_token(&self, route: &str, user: &str, sealed: &[u8]) -> Result<(), StateError>;
    /// True if there was a record.
    async fn forget_token(&self, route: &str, user: &str) -> Result<bool, StateError>;
    /// How many users of `route` have a record.
    async fn count_tokens(&self, route: &str) -> Result<u64, StateError>;
}

#[async_trait]
impl TokenStore for Embedded {
    async fn load_token(&self, route: &str, user: &str) -> Result<Option<Vec<u8>>, StateError> {
        let (route, user) = (route.to_string(), user.to_string());
        self.blocking(move |c| {
            c.query_row(
                "SELECT sealed FROM oauth_tokens WHERE route = ?1 AND user = ?2",
                [&route, &user],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn save_token(&self, route: &str, user: &str, sealed: &[u8]) -> Result<(), StateError> {
        let (route, user, sealed) = (route.to_string(), user.to_string(), sealed.to_vec());
        self.blocking(move |c| {
            c.execute(
                "INSERT INTO oauth_tokens (route, user, sealed) VALUES (?1, ?2, ?3)
                 ON CONFLICT (route, user) DO UPDATE SET sealed = excluded.sealed",
                rusqlite::params![route, user, sealed],
            )
            .map(|_| ())
        })
        .await
    }

    async fn forget_token(&self, route: &str, user: &str) -> Result<bool, StateError> {
        let (route, user) = (route.to_string(), user.to_string());
        self.blocking(move |c| {
            c.execute(
                "DELETE FROM oauth_tokens WHERE route = ?1 AND user = ?2",
                [&route, &user],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn count_tokens(&self, route: &str) -> Result<u64, StateError> {
        let route = route.to_string();
        self.blocking(move |c| {
            c.query_row(
                "SELECT count(*) FROM oauth_tokens WHERE route = ?1",
                [&route],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
        .await
    }
}

#[async_trait]
impl TokenStore for Redis {
    async fn load_token(&self, route: &str, user: &str) -> Result<Option<Vec<u8>>, StateError> {
        let mut conn = self.conn()?;
        let key = self.token_key(route, user);
        self.run(redis::cmd("GET").arg(key).query_async(&mut conn))
            .await
    }

    async fn save_token(&self, route: &str, user: &str, sealed: &[u8]) -> Result<(), StateError> {
        let mut conn = self.conn()?;
        let key = self.token_key(route, user);
        let index = self.token_index(route);
        let _: () = self
            .run(
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(sealed)
                    .ignore()
                    .cmd("SADD")
                    .arg(&index)
                    .arg(user)
                    .ignore()
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn forget_token(&self, route: &str, user: &str) -> Result<bool, StateError> {
        let mut conn = self.conn()?;
        let key = self.token_key(route, user);
        let index = self.token_index(route);
        let (n, _): (u64, u64) = self
            .run(
                redis::pipe()
                    .atomic()
                    .cmd("DEL")
                    .arg(&key)
                    .cmd("SREM")
                    .arg(&index)
                    .arg(user)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(n > 0)
    }

    async fn count_tokens(&self, route: &str) -> Result<u64, StateError> {
        let mut conn = self.conn()?;
        let index = self.token_index(route);
        self.run(redis::cmd("SCARD").arg(index).query_async(&mut conn))
            .await
    }
}
