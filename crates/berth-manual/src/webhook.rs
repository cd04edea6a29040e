//! Telling the operators: the Slack-compatible webhook client (`{"text": "…"}`, timeout, retries
//! with doubling backoff) and the messages it sends. The webhook URL usually carries a token,
//! so neither it nor reqwest's errors (which embed it) are ever shown whole.

use std::time::Duration;

use base64::Engine as _;
use berth_core::error::error_chain;
use berth_core::{InstanceId, Ipv4Config, Ipv6Config, SshPublicKey, VmSpec};
use sha2::Digest as _;

use crate::config::redacted_url;
use crate::store::{Details, Record};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
    #[error("webhook {url} answered HTTP {status} (not retried)")]
    Refused { url: String, status: u16 },
    #[error("webhook {url} failed after {attempts} attempts; last error: {last}")]
    Exhausted { url: String, attempts: u32, last: String },
}

/// Posts messages to one webhook.
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    retries: u32,
    backoff: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &redacted_url(&self.url))
            .field("retries", &self.retries)
            .finish()
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Webhook {
    pub fn new(url: reqwest::Url, timeout: Duration, retries: u32, backoff: Duration) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("berth-manual/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| WebhookError::Client(e.without_url().to_string()))?;
        Ok(Webhook {
            client,
            url,
            retries,
            backoff,
        })
    }

    /// The URL as it may be shown: scheme and host only.
    pub fn shown_url(&self) -> String {
        redacted_url(&self.url)
    }

    /// Posts `{"text": text}`. Retries network errors, timeouts, 5xx and 429 up to `retries`
    /// more times, waiting `backoff`, then twice that, and so on; any other non-2xx answer is
    /// final (a wrong URL does not heal by retrying).
    pub async fn send(&self, text: &str) -> Result<(), WebhookError> {
        let body = serde_json::json!({ "text": text });
        let attempts = self.retries + 1;
        let mut wait = self.backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
            match self.client.post(self.url.clone()).json(&body).send().await {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    if !(status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                        return Err(WebhookError::Refused {
                            url: self.shown_url(),
                            status: status.as_u16(),
                        });
                    }
                    last = format!("HTTP {status}");
                }
                Err(e) => last = error_chain(&e.without_url()),
            }
            tracing::debug!(attempt, attempts, error = %last, "webhook attempt failed");
        }
        Err(WebhookError::Exhausted {
            url: self.shown_url(),
            attempts,
            last,
        })
    }
}

/// `SHA256:…` (OpenSSH's fingerprint form), followed by the key's comment when it has one.
pub fn describe_key(key: &SshPublicKey) -> String {
    let mut parts = key.as_str().split_whitespace();
    let ty = parts.next().unwrap_or_default();
    let blob = parts
        .next()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let digest = sha2::Sha256::digest(&blob);
    let fp = base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest);
    let comment: Vec<&str> = parts.collect();
    if comment.is_empty() {
        format!("{ty} SHA256:{fp}")
    } else {
        format!("{ty} SHA256:{fp} ({})", comment.join(" "))
    }
}

/// The command an operator runs once the machine is ready.
pub fn complete_command(id: &InstanceId) -> String {
    format!("berth vm complete {id} --ip <ADDRESS> [--ssh-port <PORT>] [--password-file <FILE>]")
}

fn size(spec: &VmSpec) -> String {
    format!(
        "{} vCPU, {} MiB RAM, {} GiB disk",
        spec.cores, spec.memory_mib, spec.disk_gib
    )
}

fn network(spec: &VmSpec) -> String {
    let v4 = match spec.network.ipv4 {
        Ipv4Config::Dhcp => "IPv4 by DHCP".to_owned(),
        Ipv4Config::Static {
            address,
            prefix_len,
            gateway,
        } => match gateway {
            Some(gw) => format!("IPv4 {address}/{prefix_len} via {gw}"),
            None => format!("IPv4 {address}/{prefix_len}"),
        },
    };
    let v6 = match spec.network.ipv6 {
        None => String::new(),
        Some(Ipv6Config::Dhcp) => ", IPv6 by DHCPv6".to_owned(),
        Some(Ipv6Config::Auto) => ", IPv6 by SLAAC".to_owned(),
        Some(Ipv6Config::Static {
            address,
            prefix_len,
            gateway,
        }) => match gateway {
            Some(gw) => format!(", IPv6 {address}/{prefix_len} via {gw}"),
            None => format!(", IPv6 {address}/{prefix_len}"),
        },
    };
    format!("{v4}{v6}")
}

/// The message for a new request: everything needed to build the machine, and the command
/// that completes the request.
pub fn request_message(record: &Record, deadline: Duration) -> String {
    let spec = &record.spec;
    let id = &record.instance_id;
    let keys = if spec.ssh_keys.is_empty() {
        "none".to_owned()
    } else {
        spec.ssh_keys.iter().map(describe_key).collect::<Vec<_>>().join("; ")
    };
    format!(
        "Berth needs a machine built by hand.\n\
         Instance: {id}\n\
         Name: {name}\n\
         Kind: {kind}\n\
         Size: {size}\n\
         Template: {template}\n\
         Login user: {user}\n\
         Network: {network}\n\
         SSH keys: {keys}\n\
         When it is ready, run: {complete}\n\
         If it cannot be built, run: berth vm fail {id} --reason \"…\"\n\
         The request fails if nobody completes it within {deadline} s.",
        name = spec.name,
        kind = spec.kind,
        size = size(spec),
        template = spec.template.as_deref().unwrap_or("default"),
        user = spec.user.as_deref().unwrap_or("default"),
        network = network(spec),
        complete = complete_command(id),
        deadline = deadline.as_secs(),
    )
}

/// The message sent when Berth deletes an instance: tearing the real machine down is the
/// operator's job.
pub fn delete_message(record: &Record) -> String {
    let id = &record.instance_id;
    let name = &record.spec.name;
    match &record.details {
        Some(Details { ipv4, ipv6, .. }) => {
            let addrs: Vec<String> = ipv4
                .map(|a| a.to_string())
                .into_iter()
                .chain(ipv6.map(|a| a.to_string()))
                .collect();
            format!(
                "Berth deleted instance {id} ({name}, {}). Please tear the machine down: Berth no longer tracks it.",
                addrs.join(", ")
            )
        }
        None => format!(
            "Berth withdrew the request for instance {id} ({name}) before it was completed. If you already started building it, tear it down."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_openssh() {
        // `ssh-keygen -lf` prints SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU for this key.
        let key = SshPublicKey::parse(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host",
        )
        .unwrap();
        assert_eq!(
            describe_key(&key),
            "ssh-ed25519 SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU (user@host)"
        );
    }
}
