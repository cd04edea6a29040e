//! The command line of the control plane: `berth server` and the client commands operators,
//! providers and customers run against a server.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Where the server is and who is calling.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The control plane's URL.
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:8420", global = true)]
    pub server: String,
    /// File holding the API token (or set BERTH_TOKEN to the token itself).
    #[arg(long, env = "BERTH_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// A CA certificate bundle (PEM) that signed the server's certificate, besides the system's.
    #[arg(long, env = "BERTH_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// The server certificate's SHA-256 (`sha256:AB:CD:…`, as `berth server` prints it):
    /// trusted without a CA.
    #[arg(long, env = "BERTH_TLS_FINGERPRINT", global = true)]
    pub tls_fingerprint: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ServerAction {
    /// Print the OpenAPI document of the API.
    Openapi,
    /// Copy the database (SQLite) to a new file while the server runs: one consistent snapshot.
    Backup {
        /// The new file (never overwritten).
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup in place of the database (SQLite; stop `berth server` first). The backup is
    /// migrated to this release and its audit chain verified before anything is replaced.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing database (it is kept beside as `<file>.before-restore`).
        #[arg(long)]
        force: bool,
    },
}

/// `berth provider …`: accounts on the control plane, or serving a backend over gRPC.
#[derive(Subcommand, Debug)]
pub enum ProviderAction {
    /// Create one (operators); prints its id and first API token.
    Create {
        /// Its name (unique among them).
        name: String,
    },
    /// List them (operators).
    List,
    /// Serve one backend of `--config` as a remote provider over gRPC
    /// (proto/berth/provider/v1/provider.proto), for agents with `type = "remote"`.
    Serve(ProviderServeArgs),
}

#[derive(Args, Debug)]
pub struct ProviderServeArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArg,
    /// The backend of the configuration to serve (default: its only one).
    #[arg(long)]
    pub backend: Option<String>,
    /// Where to listen: ADDRESS:PORT, or unix:/path/to.sock. Without TLS only a loopback
    /// address or a Unix socket is accepted.
    #[arg(long, default_value = "127.0.0.1:8421")]
    pub listen: String,
    /// The server's certificate (PEM) for TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: only clients with a certificate signed by this CA (PEM) may call.
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Callers must send `authorization: Bearer <token>`, the token being this file's content.
    #[arg(long)]
    pub bearer_token_file: Option<PathBuf>,
    /// Serve TCP with neither a token nor client certificates (anyone who reaches the port may
    /// create, delete and run commands in guests). Unix sockets need no such flag.
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArg,
    #[command(subcommand)]
    pub action: Option<ServerAction>,
}

#[derive(Subcommand, Debug)]
pub enum AccountAction {
    /// Create one (operators); prints its id and first API token.
    Create {
        /// Its name (unique among them).
        name: String,
    },
    /// List them (providers: operators see all).
    List,
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Your API tokens (operators: `--account` for a provider's or customer's): ids, names,
    /// lifetimes; never the secrets.
    List {
        /// Operators: a provider's or customer's id.
        #[arg(long)]
        account: Option<String>,
    },
    /// A new API token, shown once.
    Create {
        /// What it is for: `ci`, `billing`, `laptop`.
        name: String,
        /// How long it may be used: `30d`, `24h` (default: until revoked).
        #[arg(long)]
        ttl: Option<String>,
        /// Operators: make it for this provider or customer.
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a token by id (`berth token list`): it stops working at once.
    Revoke {
        /// The token's id (`berth token list`).
        id: String,
        /// Operators: a token of this provider or customer.
        #[arg(long)]
        account: Option<String>,
    },
    /// A new secret for one of your tokens, same name and lifetime; the old one stops working.
    Rotate {
        /// The token's id (`berth token list`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuotaAction {
    /// The quotas in force for an account (yours, or any for operators).
    Show {
        /// A provider's or customer's id.
        account: String,
    },
    /// Give an account its own numbers (operators); `default` returns one to the server's.
    Set {
        /// A provider's or customer's id.
        account: String,
        /// Instances it may hold at once (a number, or `default`).
        #[arg(long)]
        instances: Option<String>,
        /// Instances it may have waiting to be built at once (a number, or `default`).
        #[arg(long)]
        pending_instances: Option<String>,
        /// Offerings a provider may publish (a number, or `default`).
        #[arg(long)]
        offerings: Option<String>,
        /// API tokens it may hold (a number, or `default`).
        #[arg(long)]
        tokens: Option<String>,
    },
    /// The customers a provider set numbers for, and its `default` for every other customer.
    Customers {
        /// The provider (default: the caller's own, for a provider token).
        #[arg(long)]
        provider: Option<String>,
    },
    /// What a provider lets one customer hold of its instances, in force (`-`: no bound).
    Customer {
        /// A customer id, or `default`.
        customer: String,
        /// The provider (default: the caller's own, for a provider token).
        #[arg(long)]
        provider: Option<String>,
    },
    /// Bound what one customer (or, as `default`, every customer) holds of a provider's
    /// instances, on top of the customer's own quota; `default` as a number removes it.
    SetCustomer {
        /// A customer id, or `default`.
        customer: String,
        /// The provider (default: the caller's own, for a provider token).
        #[arg(long)]
        provider: Option<String>,
        /// Instances of this provider's the customer may hold (a number, or `default`).
        #[arg(long)]
        instances: Option<String>,
        /// Of those, how many may wait to be built at once (a number, or `default`).
        #[arg(long)]
        pending_instances: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AgentTokenAction {
    /// A single-use setup token that enrolls one agent under a provider.
    Create {
        /// The provider (default: the caller's own, for a provider token).
        #[arg(long)]
        provider: Option<String>,
        /// How long it may be used: `30m`, `24h`, `7d`.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

/// An offering's machine and catalogue entry, as `offering create` takes it.
#[derive(Args, Debug)]
pub struct OfferingFlags {
    /// Its name, shown to customers (unique among your offerings on sale).
    #[arg(long)]
    pub name: String,
    /// Virtual CPU cores.
    #[arg(long)]
    pub cores: u32,
    /// Memory in MiB.
    #[arg(long)]
    pub memory_mib: u64,
    /// Root disk size in GiB.
    #[arg(long)]
    pub disk_gib: u64,
    /// Network bandwidth in Mbit/s, as sold.
    #[arg(long)]
    pub bandwidth_mbps: Option<u32>,
    /// The backend's template id (see `berth template list`); default: the backend's default.
    #[arg(long)]
    pub template: Option<String>,
    /// `AMOUNT CURRENCY/PERIOD` in major units: `9.99EUR/month`, `0.02USD/hour`.
    #[arg(long)]
    pub price: Option<String>,
    /// Region label customers filter by (`eu-1`).
    #[arg(long)]
    pub region: Option<String>,
    /// `key=value`; repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// A command run in the guest once it is reachable; repeatable, in order.
    #[arg(long = "post-provision")]
    pub post_provision: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum OfferingAction {
    /// Publish an offering (providers); says when no agent can take it yet, and why.
    Create(OfferingFlags),
    /// What can be ordered now (customers), or your own offerings with whether each can be
    /// ordered now (providers).
    List {
        /// Only those with at least this many cores.
        #[arg(long)]
        cores: Option<u32>,
        /// Only those with at least this much memory (MiB).
        #[arg(long)]
        memory_mib: Option<u64>,
        /// Only those with at least this much disk (GiB).
        #[arg(long)]
        disk_gib: Option<u64>,
        /// Only those in this region.
        #[arg(long)]
        region: Option<String>,
        /// `key=value`; repeatable; all must match.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Providers and operators: withdrawn offerings too.
        #[arg(long)]
        all: bool,
    },
    /// One offering; for its provider, whether it can be ordered now and why not, per agent.
    Show {
        /// The offering's id.
        id: String,
    },
    /// Change an offering (providers): the flags named change, the rest stays. Later orders
    /// get the new spec; machines already ordered keep theirs.
    Update {
        /// The offering's id.
        id: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// Virtual CPU cores.
        #[arg(long)]
        cores: Option<u32>,
        /// Memory in MiB.
        #[arg(long)]
        memory_mib: Option<u64>,
        /// Root disk size in GiB.
        #[arg(long)]
        disk_gib: Option<u64>,
        /// Network bandwidth in Mbit/s (`none` removes it).
        #[arg(long)]
        bandwidth_mbps: Option<String>,
        /// The backend's template id (`none`: the backend's default).
        #[arg(long)]
        template: Option<String>,
        /// `9.99EUR/month` (`none` removes the price).
        #[arg(long)]
        price: Option<String>,
        /// Region label (`none` removes it).
        #[arg(long)]
        region: Option<String>,
        /// `key=value`; repeatable; replaces all labels (`--label none` removes them).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Replaces the post-provision commands; repeatable (`--post-provision none` removes them).
        #[arg(long = "post-provision")]
        post_provision: Vec<String>,
    },
    /// Stop selling an offering: it can no longer be ordered; machines of it keep running.
    Withdraw {
        /// The offering's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum OrderAction {
    /// Order a machine of an offering (customers); prints the operation, or follows it with --wait.
    Create {
        /// The offering's id (`berth offering list`).
        #[arg(long)]
        offering: String,
        /// Host name.
        #[arg(long)]
        name: String,
        /// SSH public key line, or a file holding one.
        #[arg(long)]
        ssh_key: String,
        /// Your age public key (`age1…`); credentials the VM is born with are encrypted to it.
        /// Without it, a password the machine is born with is not kept (log in by SSH key).
        #[arg(long)]
        requester_key: Option<String>,
        /// Do not run the offering's post-provision commands.
        #[arg(long)]
        skip_post_provision: bool,
        /// Record the instance without provisioning it yet.
        #[arg(long)]
        no_provision: bool,
        /// Makes a retried order safe (default: a fresh one per run).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the operation until it ends.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum OpAction {
    /// One operation: its stages, result or error.
    Show {
        /// The operation's id.
        id: String,
    },
    /// Follow an operation's stages until it ends (exit status 1 if it failed).
    Wait {
        /// The operation's id.
        id: String,
        /// Give up after this long: `90s`, `10m`.
        #[arg(long, default_value = "30m")]
        timeout: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum InstanceAction {
    /// Place a machine on a chosen agent and backend, without an offering (providers,
    /// operators): for yourself or on behalf of a customer. The agent alone runs its work.
    Create {
        /// The agent (hypervisor host): `berth agents list` shows them.
        #[arg(long)]
        agent: String,
        /// One of the agent's backends (may be left out when it has one).
        #[arg(long)]
        backend: Option<String>,
        /// A template the backend reports (`GET /agents/{id}/templates`); default: its default.
        #[arg(long)]
        template: Option<String>,
        /// Host name.
        #[arg(long)]
        name: String,
        /// Virtual CPU cores.
        #[arg(long)]
        cores: u32,
        /// Memory in MiB.
        #[arg(long)]
        memory_mib: u64,
        /// Root disk size in GiB.
        #[arg(long)]
        disk_gib: u64,
        /// SSH public key line, or a file holding one.
        #[arg(long)]
        ssh_key: String,
        /// age public key (`age1…`) the credentials are encrypted to. Without it, a password
        /// the machine is born with is not kept (log in by SSH key).
        #[arg(long)]
        requester_key: Option<String>,
        /// The customer it is for (default: your own machine).
        #[arg(long)]
        customer: Option<String>,
        /// A command to run in the guest once it is reachable (repeatable).
        #[arg(long = "command")]
        commands: Vec<String>,
        /// Do not run the post-provision commands.
        #[arg(long)]
        skip_post_provision: bool,
        /// Record the instance without provisioning it yet.
        #[arg(long)]
        no_provision: bool,
        /// Makes a retried request safe (default: a fresh one per run).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the operation until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// The instances you see, newest last.
    List {
        /// Only those with this status (pending, provisioning, running, stopped, failed, …).
        #[arg(long)]
        status: Option<String>,
        /// Only those with this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// One instance in detail.
    Show {
        /// The instance: its id or its name.
        id: String,
    },
    /// Build a recorded (pending) or failed instance.
    Provision {
        /// The instance: its id or its name.
        id: String,
        #[command(flatten)]
        run: ActionArgs,
    },
    /// Power on a stopped instance.
    Start {
        /// The instance: its id or its name.
        id: String,
        #[command(flatten)]
        run: ActionArgs,
    },
    /// Power off a running instance.
    Stop {
        /// The instance: its id or its name.
        id: String,
        #[command(flatten)]
        run: ActionArgs,
    },
    /// Restart a running instance.
    Reboot {
        /// The instance: its id or its name.
        id: String,
        #[command(flatten)]
        run: ActionArgs,
    },
    /// Destroy the machine and its disks (asks first on a terminal).
    Terminate {
        /// The instance: its id or its name.
        id: String,
        /// Do not ask (needed without a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        run: ActionArgs,
    },
    /// Decrypt the credentials the machine was born with (a root password), with the age
    /// identity whose public key the order named.
    Credentials {
        /// The instance: its id or its name.
        id: String,
        /// The age identity file (`AGE-SECRET-KEY-1…`, as `age-keygen` writes it).
        #[arg(long)]
        identity: PathBuf,
    },
    /// Change the size: the numbers named change (disks only grow).
    Reconfigure {
        /// The instance: its id or its name.
        id: String,
        /// New number of cores.
        #[arg(long)]
        cores: Option<u32>,
        /// New memory in MiB.
        #[arg(long)]
        memory_mib: Option<u64>,
        /// New root disk size in GiB (larger than now).
        #[arg(long)]
        disk_gib: Option<u64>,
        #[command(flatten)]
        run: ActionArgs,
    },
}

/// What every instance action takes.
#[derive(Args, Debug)]
pub struct ActionArgs {
    /// Follow the operation until it ends.
    #[arg(long)]
    pub wait: bool,
    /// Makes a retried request safe (default: a fresh one per run).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `berth agent`: run the agent (`--config berth.toml`), or enroll it.
#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArg,
    #[command(subcommand)]
    pub action: Option<AgentAction>,
}

#[derive(Subcommand, Debug)]
pub enum AgentAction {
    /// Register this agent's key with the control plane, using a single-use setup token.
    Enroll(berth_agent::cmd::EnrollArgs),
    /// Run the agent (the default).
    Run,
    /// This agent's identity, backends, the operations in its journal, and how the control
    /// plane sees it.
    Status,
    /// Empty this agent's warm pools and keep them empty (`--undo`: fill them again).
    Drain(berth_agent::cmd::DrainArgs),
    /// Hand a machine this agent holds in quarantine to the operator: the agent no longer
    /// stops, deletes or reports it (`berth agent status` lists the quarantine).
    Release {
        /// The quarantined machine's instance id.
        instance_id: String,
    },
    /// The agents the control plane knows (providers: theirs), through the API.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One agent: its heartbeat, backends, capacity and drift, through the API.
    Show {
        /// The agent's id (`berth agent list`).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke an agent's key: it can no longer claim work (asks first on a terminal).
    Revoke {
        /// The agent's id (`berth agent list`).
        id: String,
        /// Do not ask (needed without a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `berth up`: the control plane on SQLite and a local agent, in one process.
#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArg,
    /// Where the database, tokens, keys and the agent's journal go.
    #[arg(long, default_value = "berth-data")]
    pub data_dir: PathBuf,
    /// The control plane's listen address.
    #[arg(long, default_value = "127.0.0.1:8420")]
    pub listen: String,
    /// Also order one machine from the first offering and follow it until it runs.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Subcommand, Debug)]
pub enum TemplateAction {
    /// The templates the agents report: what an offering's `--template` may name.
    List {
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
        /// The provider (default: the caller's own, for a provider token).
        #[arg(long, conflicts_with = "agent")]
        provider: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditAction {
    /// Verify the hash chain offline, straight from the database named in the server config
    /// (or, with --file, a declarative-mode audit file).
    Verify {
        #[command(flatten)]
        config: crate::cli::ConfigArg,
        /// A local audit file written by `berth apply` instead of the server's database.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Print entries (operators, through the API), oldest first.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many entries (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Only this actor's (`operator`, `provider:ID`, `customer:ID`, `agent:ID`).
        #[arg(long)]
        actor: Option<String>,
        /// Only about this subject (`instance:ID`, `account:ID`, …).
        #[arg(long)]
        subject: Option<String>,
        /// Only these actions: exact (`instance.created`) or a prefix ending in `.` (`instance.`).
        #[arg(long)]
        action: Option<String>,
        /// Only entries younger than this (`90s`, `10m`, `24h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Keep printing new entries as they are appended (Ctrl-C ends).
        #[arg(long)]
        follow: bool,
    },
}
