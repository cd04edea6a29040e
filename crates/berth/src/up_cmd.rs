//! `berth up`: everything on one machine, in one process. The control plane on SQLite in the
//! data directory, a provider and a customer account, a local agent with the backend `--config`
//! names (libvirt on this host when there is no such file), enrolled; an offering from the first
//! template the agent reports. Prints the URLs and where the tokens are; `--demo` also orders a
//! machine and follows it until it runs. Everything is kept in the data directory, so running it
//! again picks up where it was.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use berth_agent::{AgentSettings, fsutil, identity, runner};
use berth_api::client::{Auth, Client};
use berth_api::wire::{CreateOrder, OfferingSpec};
use serde::{Deserialize, Serialize};

use crate::cli::OutputFormat;
use crate::cli_api::UpArgs;

/// Accounts `berth up` made, so a second run reuses them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Accounts {
    provider_id: Option<String>,
    customer_id: Option<String>,
}

const DEFAULT_AGENT_TOML: &str = r#"# Written by `berth up`: the local agent drives libvirt on this host.
# Put template images (qcow2) in images/: debian-12.qcow2 becomes template "debian-12".
[provisioner]
type = "libvirt"

[provisioner.libvirt]
uri = "qemu:///system"
images_dir = "images"
instances_dir = "instances"
"#;

fn save_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    fsutil::write_atomic(path, format!("{text}\n").as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.config.clone();
    let config = config.as_path();
    let stop = berth_agent::cmd::StopSignal::install()?;
    let data = std::path::absolute(&args.data_dir)?;
    let server_toml = data.join("server.toml");
    // The address first, before anything is written: a second `berth up` on the same port
    // fails here, not after making a data directory it cannot use.
    let (listen, named_by) = match berth_server::ServerConfig::load(&server_toml) {
        Ok(c) if server_toml.exists() => (c.listen.to_string(), format!("listen in {}", server_toml.display())),
        _ => (args.listen.clone(), "--listen".to_owned()),
    };
    if let Err(e) = std::net::TcpListener::bind(&listen) {
        return Err(crate::cli_error::bad_flag(
            &named_by,
            format!("cannot listen on {listen}: {e} (another berth up or berth server?); choose another address"),
        ));
    }
    fsutil::ensure_private_dir(&data).with_context(|| format!("cannot create {}", data.display()))?;

    // The control plane.
    if !server_toml.exists() {
        let text = format!(
            "# Written by `berth up`.\nlisten = \"{}\"\n\n[database]\nsqlite = \"{}\"\n\n[api]\noperator_token_file = \"{}\"\n",
            args.listen,
            data.join("berth.db").display(),
            data.join("operator.token").display()
        );
        fsutil::write_atomic(&server_toml, text.as_bytes(), 0o600)?;
    }
    let scfg = berth_server::ServerConfig::load(&server_toml)?;
    let store = berth_server::open_store(&scfg).await?;
    let operator_file = scfg
        .api
        .operator_token_file
        .clone()
        .unwrap_or_else(|| data.join("operator.token"));
    berth_server::bootstrap_operator(&*store, &operator_file).await?;
    let server = berth_server::start_app(scfg, store, crate::server_cmd::app).await?;
    let url = server.url();
    let operator = Client::new(&url, Auth::Bearer(read_token(&operator_file)?));

    // Accounts.
    let accounts_file = data.join("accounts.json");
    let mut accounts: Accounts = std::fs::read(&accounts_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let provider_file = data.join("provider.token");
    let customer_file = data.join("customer.token");
    // An account made before whose token file is gone gets a new token, not a second account
    // (provider names are unique).
    match (&accounts.provider_id, provider_file.exists()) {
        (Some(_), true) => {}
        (Some(id), false) => save_secret(&provider_file, &new_token(&operator, id).await?)?,
        (None, _) => {
            let p = operator.create_provider("local").await?;
            save_secret(&provider_file, &p.token)?;
            accounts.provider_id = Some(p.id);
        }
    }
    match (&accounts.customer_id, customer_file.exists()) {
        (Some(_), true) => {}
        (Some(id), false) => save_secret(&customer_file, &new_token(&operator, id).await?)?,
        (None, _) => {
            let c = operator.create_customer("demo-customer").await?;
            save_secret(&customer_file, &c.token)?;
            accounts.customer_id = Some(c.id);
        }
    }
    fsutil::write_atomic(&accounts_file, &serde_json::to_vec_pretty(&accounts)?, 0o600)?;
    let provider_id = accounts.provider_id.clone().unwrap_or_default();
    let provider = Client::new(&url, Auth::Bearer(read_token(&provider_file)?));
    let customer = Client::new(&url, Auth::Bearer(read_token(&customer_file)?));

    // The agent: the file's backend and tables, but always this control plane and this state.
    let agent_toml = if config.exists() {
        config.to_owned()
    } else {
        let p = data.join("berth.toml");
        if !p.exists() {
            std::fs::create_dir_all(data.join("images"))?;
            fsutil::write_atomic(&p, DEFAULT_AGENT_TOML.as_bytes(), 0o600)?;
            eprintln!("no {}: wrote {} (libvirt on this host)", config.display(), p.display());
        }
        p
    };
    let mut cfg = crate::agent_cmd::load(&agent_toml)?;
    let state = data.join("agent");
    let settings = match cfg.agent.take() {
        Some(s) => AgentSettings {
            endpoint: url.clone(),
            key_file: state.join("agent.key"),
            agent: berth_agent::config::AgentSection {
                state_dir: state.clone(),
                ..s.agent
            },
            ..s
        },
        None => AgentSettings::with_defaults(&url, &state),
    };
    if identity::load_enrollment(&settings).is_err() {
        let token = provider.create_enrollment_token(&provider_id, None).await?;
        identity::enroll(&settings, &token.token, Some("local")).await?;
    }
    cfg.agent = Some(settings);
    let agent = runner::start(&cfg).await?;
    // Orders are placed by the control plane on agents it has heard from: wait for this one.
    wait_for_agent(&provider, &agent.agent.agent_id, Duration::from_secs(120)).await?;

    // An offering from the first template the agent reports.
    let offering = ensure_offering(&provider, &provider_id).await?;

    // The customer's keys for orders: SSH to log in, age for the credentials.
    let ssh_key = data.join("id_ed25519");
    if !ssh_key.exists() {
        crate::keygen::write_key_pair(&ssh_key, "berth-up")?;
    }
    let age_file = data.join("customer.agekey");
    if !age_file.exists() {
        use age::secrecy::ExposeSecret as _;
        let id = age::x25519::Identity::generate();
        save_secret(&age_file, id.to_string().expose_secret())?;
    }
    let age_public = age_recipient(&age_file)?;

    println!("berth is up");
    println!("  control plane   {url}   (OpenAPI: {url}/api/v1/openapi.json)");
    if cfg!(feature = "dashboard") {
        println!("  dashboard       {url}/   (sign in with one of the tokens below)");
    }
    println!(
        "  agent           {} (backend {})",
        agent.agent.agent_id,
        cfg.describe_backends()
    );
    if let Some(m) = agent.metrics {
        println!("  metrics         http://{m}/metrics");
    }
    println!("  server config   {}", server_toml.display());
    println!("  agent config    {}", agent_toml.display());
    println!("  operator token  {}", operator_file.display());
    println!("  provider token  {}", provider_file.display());
    println!("  customer token  {}", customer_file.display());
    println!(
        "  customer keys   {} (SSH), {} (age identity: opens the credentials)",
        ssh_key.display(),
        age_file.display()
    );
    // Commands that run as printed, from any directory: this very binary, by its full path.
    let me = std::env::current_exe().map_or_else(|_| "berth".into(), |p| p.display().to_string());
    match &offering {
        Some(o) => {
            println!("  offering        {o}");
            println!();
            println!("Order a machine (as the customer):");
            println!(
                "  BERTH_TOKEN=$(cat {}) {me} order create --server {url} --offering {o} --name web1 \\\n      --ssh-key {}.pub --requester-key {age_public} --wait",
                customer_file.display(),
                ssh_key.display()
            );
        }
        None => println!("  offering        none yet: the backend reports no template"),
    }

    let mut code = ExitCode::SUCCESS;
    if args.demo {
        let offering = offering.context("--demo needs an offering, and the backend reports no template")?;
        let ssh_public = std::fs::read_to_string(format!("{}.pub", ssh_key.display()))?;
        let name = format!("demo-{}", &uuid_suffix());
        let order = CreateOrder {
            offering_id: offering,
            name: name.clone(),
            ssh_public_key: ssh_public.trim().to_owned(),
            requester_public_key: Some(age_public.clone()),
            skip_post_provision: false,
            provision: true,
        };
        let accepted = customer.create_order(&order, None).await?;
        println!();
        println!("ordered {name}: instance {}", accepted.instance_id);
        let op = accepted.operation_id.context("the order queued no operation")?;
        code = crate::api_cmd::follow(&customer, &op, Duration::from_secs(600), OutputFormat::Human).await?;
        let i = customer.instance(&accepted.instance_id).await?;
        println!(
            "instance {} is {}: vm {} on {}, ip {}",
            i.id,
            i.status,
            i.vm_id.as_deref().unwrap_or("-"),
            i.hypervisor.as_deref().unwrap_or("-"),
            i.ip_address.as_deref().unwrap_or("-")
        );
    }

    println!();
    println!("Ctrl-C stops the agent (running work is checkpointed) and the control plane.");
    stop.wait().await;
    eprintln!("stopping the agent");
    agent.shutdown();
    agent.wait().await?;
    eprintln!("stopping the control plane");
    server.shutdown().await?;
    Ok(code)
}

/// Waits until the control plane has accepted a heartbeat from `agent_id` that reports room,
/// saying what it waits for when that takes more than a moment.
async fn wait_for_agent(provider: &Client, agent_id: &str, limit: Duration) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let mut said = false;
    loop {
        let a = provider.agent(agent_id).await?;
        let waiting_for = match &a.heartbeat {
            Some(_) if !a.alive => "first heartbeat",
            None => "first heartbeat",
            Some(h)
                if !h.capacity.unmetered
                    && (h.capacity.cores_free == 0
                        || h.capacity.memory_mib_free == 0
                        || h.capacity.disk_gib_free == 0) =>
            {
                "report of free capacity (cores, memory and disk)"
            }
            Some(_) => return Ok(()),
        };
        if start.elapsed() >= limit {
            anyhow::bail!(
                "the agent {agent_id} is running but the control plane has not received its {waiting_for} after {} s: \
                 see the agent's log above (`berth doctor --config …` checks its backend)",
                limit.as_secs()
            );
        }
        if !said && start.elapsed() >= Duration::from_secs(1) {
            eprintln!("waiting for the agent's {waiting_for} to reach the control plane…");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The provider's first live offering, or a new one from the first reported template.
async fn ensure_offering(provider: &Client, provider_id: &str) -> anyhow::Result<Option<String>> {
    if let Some(o) = provider
        .offerings("")
        .await?
        .into_iter()
        .find(|o| o.provider_id == provider_id && o.withdrawn_at.is_none())
    {
        return Ok(Some(o.id));
    }
    // The agent reports its templates right after it starts.
    let mut templates = Vec::new();
    for round in 0..50 {
        templates = provider.provider_templates(provider_id).await?;
        if !templates.is_empty() {
            break;
        }
        if round == 5 {
            eprintln!("waiting for the agent's list of templates to reach the control plane…");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if templates.is_empty() {
        eprintln!(
            "the agent reported no templates in 10 s: no offering is made (`berth doctor --config …` checks its backend)"
        );
    }
    let Some(t) = templates.first() else {
        return Ok(None);
    };
    let spec = OfferingSpec {
        name: "small".into(),
        cores: 1,
        memory_mib: 1024,
        disk_gib: 10,
        bandwidth_mbps: None,
        template: Some(t.template.id.clone()),
        price: None,
        region: None,
        labels: Default::default(),
        post_provision_commands: Vec::new(),
    };
    Ok(Some(provider.create_offering(&spec).await?.id))
}

fn age_recipient(file: &Path) -> anyhow::Result<String> {
    use std::str::FromStr as _;
    let text = read_token(file)?;
    let id = age::x25519::Identity::from_str(text.lines().rfind(|l| !l.starts_with('#')).unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("{}: not an age identity: {e}", file.display()))?;
    Ok(id.to_public().to_string())
}

fn uuid_suffix() -> String {
    let mut b = [0u8; 3];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A new API token for an account `berth up` made before (its token file was removed).
async fn new_token(operator: &berth_api::client::Client, account: &str) -> anyhow::Result<String> {
    let req = berth_api::wire::CreateToken {
        name: "berth-up".into(),
        ttl_seconds: None,
    };
    Ok(operator.create_token(Some(account), &req).await?.token)
}
