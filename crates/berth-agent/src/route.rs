//! Which of the agent's backends runs a claimed operation. A provision goes to a backend that
//! offers its template (the first, in file order, that has room for it); everything else goes
//! to the backend that holds the instance: known from an earlier provision or reconcile, else
//! asked of each backend. With one backend there is nothing to decide.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_api::wire::{Completion, OpError, ProvisionPayload};
use berth_core::{InstanceId, InstanceRef, ProviderError, Template};

use crate::agent::{Agent, Backend};
use crate::heartbeat::{Need, capacity, fits};

/// Template lists older than this are read again before a provision is routed by them.
const TEMPLATES_FRESH: Duration = Duration::from_secs(300);
/// When no backend lists an order's template, lists older than this are read again (the
/// template may be new); younger ones stand, so such orders do not each cost a round of reads.
const MISS_RECHECK: Duration = Duration::from_secs(30);

/// A backend's template ids and names (`None`: it could not say), and when they were read.
type Listing = (Option<Vec<String>>, Instant);

#[derive(Default)]
pub(crate) struct Routes {
    /// Instance id → the backend that holds it.
    instances: Mutex<HashMap<String, String>>,
    /// Backend → what it offers.
    templates: Mutex<HashMap<String, Listing>>,
}

impl Routes {
    pub(crate) fn located(&self, instance_id: &str, backend: &str) {
        self.instances
            .lock()
            .expect("routes lock")
            .insert(instance_id.to_owned(), backend.to_owned());
    }

    pub(crate) fn forget(&self, instance_id: &str) {
        self.instances.lock().expect("routes lock").remove(instance_id);
    }

    pub(crate) fn location(&self, instance_id: &str) -> Option<String> {
        self.instances.lock().expect("routes lock").get(instance_id).cloned()
    }

    pub(crate) fn templates_seen(&self, backend: &str, listed: Option<&Vec<Template>>) {
        let names = listed.map(|ts| ts.iter().flat_map(|t| [t.id.clone(), t.name.clone()]).collect());
        self.templates
            .lock()
            .expect("routes lock")
            .insert(backend.to_owned(), (names, Instant::now()));
    }

    /// Whether `backend`'s list (or its failure to list) was read less than `age` ago.
    fn read_within(&self, backend: &str, age: Duration) -> bool {
        let t = self.templates.lock().expect("routes lock");
        t.get(backend).is_some_and(|(_, at)| at.elapsed() < age)
    }

    /// `Some(true)`: `backend` offers `template`; `Some(false)`: it lists others; `None`: it
    /// cannot say, or its list is stale or missing.
    fn offers(&self, backend: &str, template: &str) -> Option<bool> {
        let t = self.templates.lock().expect("routes lock");
        match t.get(backend) {
            Some((Some(names), at)) if at.elapsed() < TEMPLATES_FRESH => Some(names.iter().any(|n| n == template)),
            _ => None,
        }
    }
}

fn invalid(message: String) -> Completion {
    Completion::Failed(OpError {
        code: "invalid_spec".into(),
        message,
    })
}

impl Agent {
    /// The backend `kind` on `instance_id` runs on; `Err` is the outcome when none can.
    pub(crate) async fn route(
        &self,
        kind: &str,
        instance_id: &str,
        payload: &serde_json::Value,
    ) -> Result<String, Completion> {
        if kind == "provision" {
            let p: ProvisionPayload =
                serde_json::from_value(payload.clone()).map_err(|e| invalid(format!("provision payload: {e}")))?;
            return self.route_provision(&p).await.map(|b| b.name.clone());
        }
        if self.backends.len() == 1 {
            return Ok(self.backends[0].name.clone());
        }
        Ok(self.locate(instance_id).await.name.clone())
    }

    async fn route_provision(&self, p: &ProvisionPayload) -> Result<&Backend, Completion> {
        if self.backends.len() == 1 && p.backend.as_ref().is_none_or(|b| *b == self.backends[0].name) {
            return Ok(&self.backends[0]);
        }
        // Placed on a backend by name: that one, or a clear refusal.
        if let Some(name) = &p.backend {
            return self.backends.iter().find(|b| &b.name == name).ok_or_else(|| {
                let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
                invalid(format!(
                    "this agent has no backend {name:?} (backends: {}); was it removed from berth.toml?",
                    names.join(", ")
                ))
            });
        }
        let candidates: Vec<&Backend> = match &p.template {
            None => self.backends.iter().collect(),
            Some(t) => self.offering(t).await?,
        };
        if candidates.len() == 1 {
            return Ok(candidates[0]);
        }
        let need = Need {
            cores: u64::from(p.cores),
            memory_mib: p.memory_mib,
            disk_gib: p.disk_gib,
        };
        for b in &candidates {
            // The report counts the provisions under way already.
            let room = match capacity(b, self.capacity_of(b)).await {
                Ok(report) => fits(&report, self.capacity_of(b), need).is_ok(),
                Err(_) => false,
            };
            if room {
                return Ok(b);
            }
        }
        // None has room: the first says so when it refuses (quota_exceeded, with the numbers).
        Ok(candidates[0])
    }

    /// The backends that offer `template`: those whose list has it; if none, those that cannot
    /// list (they may still have it); if none, an error that names the backends.
    async fn offering(&self, template: &str) -> Result<Vec<&Backend>, Completion> {
        let known = |me: &Self| {
            me.backends
                .iter()
                .map(|b| me.routes.offers(&b.name, template))
                .collect::<Vec<_>>()
        };
        let mut offers = known(self);
        if !offers.contains(&Some(true)) {
            // A miss, or lists not read yet: read what is not recent (a template may be new).
            for b in &self.backends {
                if self.routes.read_within(&b.name, MISS_RECHECK) {
                    continue;
                }
                let listed = b.provider.list_templates().await;
                self.routes.templates_seen(&b.name, listed.as_ref().ok());
            }
            offers = known(self);
        }
        let with = |want: Option<bool>| {
            self.backends
                .iter()
                .zip(&offers)
                .filter(|(_, o)| **o == want)
                .map(|(b, _)| b)
                .collect::<Vec<_>>()
        };
        let yes = with(Some(true));
        if !yes.is_empty() {
            return Ok(yes);
        }
        let unsure = with(None);
        if !unsure.is_empty() {
            return Ok(unsure);
        }
        let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        Err(invalid(format!(
            "no backend of this agent offers template {template:?} (backends: {})",
            names.join(", ")
        )))
    }

    /// The backend holding `instance_id`: the one that last had it, else the first that
    /// describes it, else the first that could not answer (its error then ends the work), else
    /// the first backend (where the work finds nothing, which a terminate takes as done).
    pub(crate) async fn locate(&self, instance_id: &str) -> &Backend {
        if let Some(name) = self.routes.location(instance_id)
            && let Some(b) = self.backends.iter().find(|b| b.name == name)
        {
            return b;
        }
        let Ok(id) = InstanceId::parse(instance_id) else {
            return &self.backends[0];
        };
        let r = InstanceRef::Id(id);
        let mut unsure = None;
        for b in &self.backends {
            match b.provider.describe(&r).await {
                Ok(_) => {
                    self.routes.located(instance_id, &b.name);
                    return b;
                }
                Err(ProviderError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(backend = %b.name, instance = %instance_id, error = %e, "cannot tell whether this backend holds the instance");
                    unsure.get_or_insert(b);
                }
            }
        }
        unsure.unwrap_or(&self.backends[0])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_api::client::{Auth, Client};
    use berth_core::Provider;
    use berth_proxmox::{ProxmoxConfig, ProxmoxProvider};
    use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Timings};
    use serde_json::json;

    use super::*;
    use crate::config::{AgentSettings, CapacitySection};

    fn proxmox(emu: &EmulatorHandle) -> Arc<dyn Provider> {
        let mut c = ProxmoxConfig::new(&emu.base_url(), &emu.token_id(), "pve1", 9000, "local-lvm");
        c.api_token_secret = Some(berth_core::Secret::new(emu.token_secret()));
        c.tls_fingerprint = emu.fingerprint();
        c.pool = Some("berth".into());
        Arc::new(ProxmoxProvider::new(c).expect("provider builds"))
    }

    fn provision(template: Option<&str>, cores: u32) -> serde_json::Value {
        json!({
            "instance_id": "11111111-2222-4333-8444-555555555555", "name": "r1", "cores": cores,
            "memory_mib": 512, "disk_gib": 4, "template": template,
            "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl t",
            "requester_public_key": "", "post_provision_commands": []
        })
    }

    /// Two backends that both see the emulator's templates: a template nobody offers fails
    /// with the backends named; one both offer goes to the first that has room.
    #[tokio::test]
    async fn provisions_go_where_the_template_is_and_there_is_room() {
        let emu = Emulator::start(EmulatorConfig {
            timings: Timings::fast(),
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator starts");
        let state = tempfile::tempdir().unwrap();
        let settings = AgentSettings::with_defaults("http://127.0.0.1:9", state.path());
        let tiny = CapacitySection {
            cores: Some(2),
            memory_mib: Some(1 << 20),
            disk_gib: Some(1000),
            ..CapacitySection::default()
        };
        let backends = vec![
            Backend::new("small", proxmox(&emu), 1).with_capacity(Some(tiny)),
            Backend::new("big", proxmox(&emu), 1),
        ];
        let agent = Agent::new(
            Client::new("http://127.0.0.1:9", Auth::None),
            "a".into(),
            settings,
            backends,
        )
        .unwrap();
        let iid = "11111111-2222-4333-8444-555555555555";

        let Err(Completion::Failed(e)) = agent.route("provision", iid, &provision(Some("no-such"), 1)).await else {
            panic!("a template no backend lists is refused");
        };
        assert_eq!(e.code, "invalid_spec");
        // A second miss right after reads no template list again.
        let lists = || {
            emu.requests()
                .iter()
                .filter(|r| r.path.starts_with("/cluster/resources"))
                .count()
        };
        let before = lists();
        assert!(before > 0, "the first miss read the lists");
        assert!(
            agent
                .route("provision", iid, &provision(Some("no-such"), 1))
                .await
                .is_err()
        );
        assert_eq!(lists(), before, "lists read moments ago are not read again");
        assert!(
            e.message.contains("\"no-such\"") && e.message.contains("small, big"),
            "{e:?}"
        );

        let to = |p| {
            let agent = agent.clone();
            async move { agent.route("provision", iid, &p).await.ok() }
        };
        assert_eq!(
            to(provision(Some("9000"), 1)).await.as_deref(),
            Some("small"),
            "first in file order"
        );
        assert_eq!(
            to(provision(Some("9000"), 2)).await.as_deref(),
            Some("big"),
            "2 of 2 cores crosses small's 90 % threshold"
        );
        assert_eq!(to(provision(None, 1)).await.as_deref(), Some("small"));
        assert_eq!(
            to(json!({"cores": "two"})).await,
            None,
            "a bad payload fails, not guessed"
        );
        // Not a provision: the instance is on neither, so the first backend (a terminate there
        // finds nothing to delete); once it is known where the instance is, there.
        assert_eq!(
            agent.route("stop", iid, &json!({})).await.ok().as_deref(),
            Some("small")
        );
        agent.routes.located(iid, "big");
        assert_eq!(agent.route("stop", iid, &json!({})).await.ok().as_deref(), Some("big"));
    }
}
