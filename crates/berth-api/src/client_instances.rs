//! The typed client's actions on an instance, each optionally under an `Idempotency-Key`.

use crate::client::{Client, ClientError, TIMEOUT};
use crate::wire::*;

impl Client {
    /// `provision`, `start`, `stop`, `reboot` or `terminate`.
    pub async fn instance_action(&self, id: &str, action: &str) -> Result<Accepted, ClientError> {
        self.instance_action_with_key(id, action, None).await
    }
    pub async fn reconfigure(&self, id: &str, change: &Reconfigure) -> Result<Accepted, ClientError> {
        self.reconfigure_with_key(id, change, None).await
    }
    /// As [`Client::instance_action`], `key` sent as `Idempotency-Key` (a retry is answered
    /// the first time's answer).
    pub async fn instance_action_with_key(
        &self,
        id: &str,
        action: &str,
        key: Option<&str>,
    ) -> Result<Accepted, ClientError> {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let path = format!("/api/v1/instances/{id}/{action}");
        self.call(
            http::Method::POST,
            &path,
            Some(&serde_json::json!({})),
            &headers,
            TIMEOUT,
        )
        .await
    }
    pub async fn reconfigure_with_key(
        &self,
        id: &str,
        change: &Reconfigure,
        key: Option<&str>,
    ) -> Result<Accepted, ClientError> {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let path = format!("/api/v1/instances/{id}/reconfigure");
        self.call(http::Method::POST, &path, Some(change), &headers, TIMEOUT)
            .await
    }
}
