//! The command line: every subcommand, flag and default, in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "berth", version, about = "VM provisioning for hosting providers")]
pub struct Cli {
    /// More detailed logs (or set BERTH_LOG, e.g. BERTH_LOG=debug).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub output: OutputArg,
    #[command(flatten)]
    pub api: crate::cli_api::ApiArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a configuration file and everything it names; one line per check.
    Doctor(DoctorArgs),
    /// Write a new Ed25519 key pair (OpenSSH format, private key mode 0600).
    Keygen(KeygenArgs),
    /// Drive VMs on the configured backend directly.
    Vm(VmArgs),
    /// Drive containers (LXC) on the configured backend directly (same as `vm --kind container`).
    Ct(VmArgs),
    /// Run the control plane (`--config server.toml`).
    Server(crate::cli_api::ServerArgs),
    /// Providers (operators create them).
    #[command(subcommand)]
    Provider(crate::cli_api::AccountAction),
    /// Customers (operators create them).
    #[command(subcommand)]
    Customer(crate::cli_api::AccountAction),
    /// Setup tokens that enroll agents.
    AgentToken(crate::cli_api::AgentTokenArgs),
    /// API tokens: list, create (with a lifetime), revoke, rotate.
    #[command(subcommand)]
    Token(crate::cli_api::TokenAction),
    /// What an account may hold: show, and set (operators).
    #[command(subcommand)]
    Quota(crate::cli_api::QuotaAction),
    /// Offerings: publish (providers), discover (customers).
    #[command(subcommand)]
    Offering(crate::cli_api::OfferingAction),
    /// Orders (customers).
    #[command(subcommand)]
    Order(crate::cli_api::OrderAction),
    /// Operations: show one, or follow it until it ends.
    #[command(subcommand)]
    Op(crate::cli_api::OpAction),
    /// Instances in the control plane and their actions.
    #[command(subcommand)]
    Instance(crate::cli_api::InstanceAction),
    /// The templates agents report, for offerings.
    #[command(subcommand)]
    Template(crate::cli_api::TemplateAction),
    /// The audit log.
    #[command(subcommand)]
    Audit(crate::cli_api::AuditAction),
    /// Run the agent next to the hypervisors (`--config berth.toml`), or enroll it.
    Agent(crate::cli_api::AgentArgs),
    /// Everything on one machine: the control plane on SQLite and a local agent with the
    /// backend `--config` names, enrolled; prints the URLs and tokens' files.
    Up(crate::cli_api::UpArgs),
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short, env = "BERTH_CONFIG", default_value = "berth.toml", global = true)]
    pub config: PathBuf,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Human,
    Json,
}

#[derive(Args, Debug)]
pub struct OutputArg {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human, global = true)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Private key path; the public key goes to PATH.pub. Existing files are never overwritten.
    #[arg(long, short = 'f')]
    pub out: PathBuf,
    /// Comment stored in the key.
    #[arg(long, default_value = "berth")]
    pub comment: String,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Vm,
    Container,
}

#[derive(Args, Debug)]
pub struct VmArgs {
    /// Machine kind (`berth ct` implies container).
    #[arg(long, value_enum, global = true)]
    pub kind: Option<KindArg>,
    /// Which backend, when the configuration names several (`[provisioner.backends.NAME]`).
    #[arg(long, global = true)]
    pub backend: Option<String>,
    #[command(subcommand)]
    pub action: VmAction,
}

#[derive(Subcommand, Debug)]
pub enum VmAction {
    /// Create a machine (idempotent by --instance-id) and wait until it has an address.
    Create(CreateArgs),
    /// List Berth's machines (all machines with --all; requests waiting for an operator with
    /// --pending, manual backend).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, conflicts_with = "all")]
        pending: bool,
    },
    /// Show one machine. ID is Berth's instance id or the backend's own id (the VMID).
    Describe {
        id: String,
    },
    Start {
        id: String,
    },
    /// Power off at once.
    Stop {
        id: String,
    },
    /// Shut down gracefully; power off if still running after the timeout.
    Shutdown {
        id: String,
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    Reboot {
        id: String,
    },
    /// Change cores, memory or disk size (disks only grow).
    Resize {
        id: String,
        #[arg(long)]
        cores: Option<u32>,
        #[arg(long)]
        memory_mib: Option<u64>,
        #[arg(long)]
        disk_gib: Option<u64>,
    },
    /// Delete a machine and its disks. Deleting something already gone succeeds.
    Delete {
        id: String,
        /// Do not ask (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// List the templates machines can be created from.
    Templates,
    /// Manual backend: submit the details of a machine an operator has built.
    Complete {
        id: String,
        /// Its address (IPv4 and/or IPv6; repeatable).
        #[arg(long = "ip", required = true)]
        ips: Vec<std::net::IpAddr>,
        /// SSH port, when not 22.
        #[arg(long)]
        ssh_port: Option<u16>,
        /// File holding the root password the machine was given (never pass it on the command line).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Manual backend: fail a request; the reason reaches the requester.
    Fail {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Manual backend: withdraw a request nobody should build.
    Cancel {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Host name (a DNS name).
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    #[arg(long, default_value_t = 1024)]
    pub memory_mib: u64,
    #[arg(long, default_value_t = 10)]
    pub disk_gib: u64,
    /// SSH public key line; repeatable.
    #[arg(long = "ssh-key")]
    pub ssh_keys: Vec<String>,
    /// File with SSH public key lines (e.g. ~/.ssh/id_ed25519.pub); repeatable.
    #[arg(long = "ssh-key-file")]
    pub ssh_key_files: Vec<PathBuf>,
    /// Berth's stable id for this machine; running create again with it never makes a second
    /// machine. Generated when absent (and printed).
    #[arg(long)]
    pub instance_id: Option<String>,
    /// IPv4: `dhcp` or `ADDRESS/PREFIX[,gw=GATEWAY]`.
    #[arg(long, default_value = "dhcp")]
    pub ip: String,
    /// DNS server; repeatable.
    #[arg(long)]
    pub nameserver: Vec<std::net::IpAddr>,
    /// Login user created by cloud-init (backend default when absent).
    #[arg(long)]
    pub user: Option<String>,
    /// Template (Proxmox: VMID or name; containers: ostemplate volume; libvirt: image name). Backend default when absent.
    #[arg(long)]
    pub template: Option<String>,
    /// Where to write a root password the machine is born with (a new file, mode 0600). It is
    /// never printed; without this flag it is dropped.
    #[arg(long)]
    pub password_out: Option<PathBuf>,
}
