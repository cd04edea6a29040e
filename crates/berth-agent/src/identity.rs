//! Who the agent is to the control plane: its Ed25519 key (a file of the seed in hex, mode 0600,
//! as in the provisioning-agent seed) and the enrollment record (agent id, endpoint) written by
//! `berth agent enroll` next to the journal.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use berth_api::client::{Auth, Client};
use berth_api::httpsig::RequestSigner;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::config::AgentSettings;
use crate::fsutil;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub agent_id: String,
    pub provider_id: String,
    pub endpoint: String,
    pub name: String,
    /// Standard base64 of the public key, as the control plane holds it.
    pub public_key: String,
}

pub fn enrollment_path(settings: &AgentSettings) -> PathBuf {
    settings.agent.state_dir.join("enrollment.json")
}

/// Reads the key file; the error names the file and what was expected, never its contents.
pub fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the agent key {}", path.display()))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| {
        anyhow::anyhow!(
            "{}: expected the agent's Ed25519 key as 64 hex characters (the file `berth agent enroll` writes)",
            path.display()
        )
    })?;
    fsutil::warn_if_readable_by_others(path, "the agent key");
    Ok(SigningKey::from_bytes(&seed))
}

/// The key at `path`, made (0600, atomically) when there is none.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        return load_key(path);
    }
    if let Some(dir) = path.parent() {
        fsutil::ensure_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    fsutil::write_atomic(path, format!("{}\n", hex::encode(seed)).as_bytes(), 0o600)
        .with_context(|| format!("cannot write the agent key {}", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn public_key_b64(key: &SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
}

pub fn load_enrollment(settings: &AgentSettings) -> anyhow::Result<Enrollment> {
    let path = enrollment_path(settings);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "this agent is not enrolled ({} is missing): run `berth agent enroll --token <setup token>` first",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let e: Enrollment = serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    if e.endpoint != settings.endpoint {
        bail!(
            "this agent was enrolled with {} but api.endpoint is {}; enroll again with the new control plane",
            e.endpoint,
            settings.endpoint
        );
    }
    Ok(e)
}

/// The signed client the agent talks to the control plane with.
pub fn signed_client(settings: &AgentSettings) -> anyhow::Result<(Client, Enrollment)> {
    let enrollment = load_enrollment(settings)?;
    let key = load_key(&settings.key_file)?;
    if public_key_b64(&key) != enrollment.public_key {
        bail!(
            "the key in {} is not the one this agent enrolled with; enroll again",
            settings.key_file.display()
        );
    }
    let client = Client::with_tls(
        &settings.endpoint,
        Auth::Signed(RequestSigner::new(key, enrollment.agent_id.clone())),
        &settings.tls,
    )
    .map_err(anyhow::Error::msg)?;
    Ok((client, enrollment))
}

/// Registers the agent's key (made if absent) with a single-use setup token and records the
/// enrollment. Enrolling again replaces the record (a new agent id).
pub async fn enroll(settings: &AgentSettings, token: &str, name: Option<&str>) -> anyhow::Result<Enrollment> {
    fsutil::ensure_private_dir(&settings.agent.state_dir)
        .with_context(|| format!("cannot create {}", settings.agent.state_dir.display()))?;
    let key = load_or_create_key(&settings.key_file)?;
    let name = name
        .map(str::to_owned)
        .or_else(|| settings.agent.name.clone())
        .unwrap_or_else(host_name);
    let anon = Client::with_tls(&settings.endpoint, Auth::None, &settings.tls).map_err(anyhow::Error::msg)?;
    let view = anon
        .enroll(token, &name, &key)
        .await
        .with_context(|| format!("enrollment with {} failed", settings.endpoint))?;
    let e = Enrollment {
        agent_id: view.id,
        provider_id: view.provider_id,
        endpoint: settings.endpoint.clone(),
        name: view.name,
        public_key: public_key_b64(&key),
    };
    let path = enrollment_path(settings);
    fsutil::write_atomic(&path, &serde_json::to_vec_pretty(&e)?, 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(e)
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "berth-agent".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/agent.key");
        let k1 = load_or_create_key(&p).unwrap();
        let k2 = load_or_create_key(&p).unwrap();
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn a_bad_key_file_names_the_file_not_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.key");
        std::fs::write(&p, "not-hex-secretvalue").unwrap();
        let e = load_key(&p).unwrap_err().to_string();
        assert!(e.contains("agent.key") && e.contains("64 hex"), "{e}");
        assert!(!e.contains("secretvalue"), "{e}");
    }
}
