//! The typed client's account calls: API tokens over their life, quotas (an account's own, and
//! what a provider lets each customer hold), and changing an offering.

use crate::client::{Client, ClientError, TIMEOUT};
use crate::wire::*;

impl Client {
    /// API tokens: the caller's own, or (operators) an account's.
    pub async fn tokens(&self, account: Option<&str>) -> Result<Vec<TokenView>, ClientError> {
        match account {
            Some(a) => self.get(&format!("/api/v1/accounts/{a}/tokens")).await,
            None => self.get("/api/v1/tokens").await,
        }
    }
    pub async fn create_token(&self, account: Option<&str>, req: &CreateToken) -> Result<TokenCreated, ClientError> {
        match account {
            Some(a) => self.post(&format!("/api/v1/accounts/{a}/tokens"), req).await,
            None => self.post("/api/v1/tokens", req).await,
        }
    }
    pub async fn revoke_token(&self, account: Option<&str>, id: &str) -> Result<TokenView, ClientError> {
        let path = match account {
            Some(a) => format!("/api/v1/accounts/{a}/tokens/{id}/revoke"),
            None => format!("/api/v1/tokens/{id}/revoke"),
        };
        self.post(&path, &serde_json::json!({})).await
    }
    pub async fn rotate_token(&self, id: &str) -> Result<TokenCreated, ClientError> {
        self.post(&format!("/api/v1/tokens/{id}/rotate"), &serde_json::json!({}))
            .await
    }
    /// The quotas in force for an account (operators: any; others: their own).
    pub async fn quota(&self, account_id: &str) -> Result<QuotaView, ClientError> {
        self.get(&format!("/api/v1/accounts/{account_id}/quota")).await
    }
    /// Gives an account its own quotas (operators).
    pub async fn set_quota(&self, account_id: &str, q: &SetQuota) -> Result<QuotaView, ClientError> {
        self.call(
            http::Method::PUT,
            &format!("/api/v1/accounts/{account_id}/quota"),
            Some(q),
            &[],
            TIMEOUT,
        )
        .await
    }
    /// The customers a provider set numbers for (and `default`).
    pub async fn customer_quotas(&self, provider_id: &str) -> Result<Vec<CustomerQuotaView>, ClientError> {
        self.get_all(&format!("/api/v1/providers/{provider_id}/customer-quotas"))
            .await
    }
    /// What a provider lets a customer hold, in force.
    pub async fn customer_quota(&self, provider_id: &str, customer_id: &str) -> Result<CustomerQuotaView, ClientError> {
        self.get(&format!(
            "/api/v1/providers/{provider_id}/customer-quotas/{customer_id}"
        ))
        .await
    }
    /// Sets what a provider lets a customer (or `default`: every customer) hold.
    pub async fn set_customer_quota(
        &self,
        provider_id: &str,
        customer_id: &str,
        q: &SetCustomerQuota,
    ) -> Result<CustomerQuotaView, ClientError> {
        self.call(
            http::Method::PUT,
            &format!("/api/v1/providers/{provider_id}/customer-quotas/{customer_id}"),
            Some(q),
            &[],
            TIMEOUT,
        )
        .await
    }
    /// Replaces an offering's spec (what later orders get).
    pub async fn update_offering(&self, id: &str, spec: &OfferingSpec) -> Result<OfferingView, ClientError> {
        self.call(
            http::Method::PUT,
            &format!("/api/v1/offerings/{id}"),
            Some(spec),
            &[],
            TIMEOUT,
        )
        .await
    }
}
