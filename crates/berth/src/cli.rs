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
    pub output: OutputArg,
    #[command(subcommand)]
    pub command: Command,
}

/// A command run against a control plane: where it is and who calls (flags taken before or
/// after the subcommand), then what to do.
#[derive(Args, Debug)]
pub struct Api<T: Subcommand> {
    #[command(flatten)]
    pub api: crate::cli_api::ApiArgs,
    #[command(subcommand)]
    pub action: T,
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
    /// Proxmox VE objects beyond guests, on the cluster the configuration names: pools, storage.
    Pve(PveArgs),
    /// Declarative mode: what applying a site file would change on the cluster, per object and
    /// field (exit 0: nothing, 2: changes, 1: error or impossible).
    Plan(DeclArgs),
    /// Apply a saved plan (refused if anything it touches changed since), or plan a site file
    /// and apply it after confirmation.
    Apply(ApplyArgs),
    /// Write the cluster as a site file that plans to no change.
    Discover(DiscoverArgs),
    /// What differs between a site file and the cluster now (exit 2 when something does).
    Drift(DeclArgs),
    /// The snapshots and backups applies kept before risky changes.
    Checkpoints(SiteArgs),
    /// Put the VMs an apply changed back to the snapshots it took first (asks unless --yes).
    Rollback(RollbackArgs),
    /// Run the control plane (`--config server.toml`).
    Server(crate::cli_api::ServerArgs),
    /// Providers (operators create them).
    Provider(Api<crate::cli_api::ProviderAction>),
    /// Customers (operators create them).
    Customer(Api<crate::cli_api::AccountAction>),
    /// Setup tokens that enroll agents.
    AgentToken(Api<crate::cli_api::AgentTokenAction>),
    /// API tokens: list, create (with a lifetime), revoke, rotate.
    Token(Api<crate::cli_api::TokenAction>),
    /// What an account may hold: show, and set (operators).
    Quota(Api<crate::cli_api::QuotaAction>),
    /// Offerings: publish (providers), discover (customers).
    Offering(Api<crate::cli_api::OfferingAction>),
    /// Orders (customers).
    Order(Api<crate::cli_api::OrderAction>),
    /// Operations: show one, or follow it until it ends.
    Op(Api<crate::cli_api::OpAction>),
    /// Instances in the control plane and their actions.
    Instance(Api<crate::cli_api::InstanceAction>),
    /// The templates agents report, for offerings.
    Template(Api<crate::cli_api::TemplateAction>),
    /// The audit log.
    #[command(subcommand)]
    Audit(crate::cli_api::AuditAction),
    /// Run the agent next to the hypervisors (`--config berth.toml`), or enroll it.
    Agent(crate::cli_api::AgentArgs),
    /// Everything on one machine: the control plane on SQLite and a local agent with the
    /// backend `--config` names, enrolled; prints the URLs and tokens' files.
    Up(crate::cli_api::UpArgs),
}

/// Where the site lives and how the cluster is reached.
#[derive(Args, Debug, Clone)]
pub struct SiteArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The backend of the configuration that reaches the cluster (default: the site's
    /// `backend`, else the configuration's only one).
    #[arg(long)]
    pub backend: Option<String>,
    /// Append what is applied to this hash-chained audit file (`berth audit verify --file`).
    #[arg(long, default_value = "berth-decl-audit.jsonl")]
    pub audit: PathBuf,
}

#[derive(Args, Debug)]
pub struct DeclArgs {
    #[command(flatten)]
    pub site: SiteArgs,
    /// The site file: TOML, or the seed's JSON shape when it ends in `.json`.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Save the plan here, for `berth apply PLAN` (plan only).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only these objects (`vm.150`, `storage.nas`, or a glob such as `net.pve1.*`); repeatable.
    #[arg(long)]
    pub target: Vec<String>,
    /// Also delete what Berth applied from this file that the file no longer names (its ledger,
    /// next to the audit file, says what that is); plan only.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub site: SiteArgs,
    /// A plan saved by `berth plan --out`.
    #[arg(conflicts_with_all = ["file", "resume"], required_unless_present_any = ["file", "resume"])]
    pub plan: Option<PathBuf>,
    /// Plan this site file now and apply it (asks first unless --yes).
    #[arg(long, short = 'f', conflicts_with = "resume")]
    pub file: Option<PathBuf>,
    /// Finish an apply that failed part way (its id as the failure or `berth checkpoints` says):
    /// the same, unchanged site file is planned again over what that apply touched.
    #[arg(long, value_name = "APPLY_ID")]
    pub resume: Option<String>,
    /// With --file: only these objects (addresses or globs such as `vm.*`); repeatable.
    #[arg(long, requires = "file")]
    pub target: Vec<String>,
    /// With --file: also delete what Berth applied from this file that it no longer names.
    #[arg(long, requires = "file")]
    pub prune: bool,
    /// Do not ask (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Change objects that are on the cluster but were never applied from this file (the plan
    /// lists them under "Adopts"): they are managed from it afterwards.
    #[arg(long)]
    pub adopt: bool,
    /// Apply even when a node has network edits someone else staged (they are reloaded too).
    #[arg(long)]
    pub adopt_pending_network: bool,
    /// Delete VMs without writing a backup of each first.
    #[arg(long)]
    pub no_backup: bool,
    /// Change even the interface that carries the API's own address.
    #[arg(long)]
    pub allow_mgmt_network: bool,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub site: SiteArgs,
    /// The apply to undo (`berth checkpoints` lists them).
    pub apply_id: String,
    /// Do not ask (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    #[command(flatten)]
    pub site: SiteArgs,
    /// Write the site file (the only kind of discovery there is).
    #[arg(long, required = true)]
    pub export: bool,
    /// Write it here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
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
pub struct DoctorArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Private key path; the public key goes to PATH.pub. Existing files are never overwritten.
    #[arg(long, short = 'f')]
    pub out: PathBuf,
    /// Comment stored in the key.
    #[arg(long, default_value = "berth")]
    pub comment: String,
}

#[derive(Args, Debug)]
pub struct PveArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Which backend, when the configuration names several (a `proxmox` one).
    #[arg(long, global = true)]
    pub backend: Option<String>,
    #[command(subcommand)]
    pub action: PveAction,
}

#[derive(Subcommand, Debug)]
pub enum PveAction {
    /// Resource pools.
    #[command(subcommand)]
    Pool(PvePoolAction),
    /// Storage: the cluster's definitions and how a node sees them.
    #[command(subcommand)]
    Storage(PveStorageAction),
    /// A node's network interfaces, with edits staged but not applied.
    #[command(subcommand)]
    Network(PveNetworkAction),
    /// Backup jobs, and the guests none of them covers.
    #[command(subcommand)]
    Backup(PveBackupAction),
    /// HA: resources, their requested and actual state, and the rules or groups placing them.
    #[command(subcommand)]
    Ha(PveHaAction),
}

#[derive(Subcommand, Debug)]
pub enum PveHaAction {
    /// Every HA resource with its requested and actual state, then the rules (PVE 9) or groups (PVE 8).
    List,
    /// One HA resource.
    Show {
        /// Its id: `vm:100`, `ct:101`, or the bare guest id.
        sid: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PveBackupAction {
    /// Every backup job (schedule, next run, what it selects), then the guests no job covers.
    List,
    /// One backup job with all its settings.
    Show {
        /// The job's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PveNetworkAction {
    /// Every interface of a node: type, address, ports, state; then any staged changes.
    List {
        /// The node (default: the configuration's `node`).
        #[arg(long)]
        node: Option<String>,
    },
    /// One interface with all its settings.
    Show {
        /// The interface's name (`vmbr0`).
        name: String,
        /// The node (default: the configuration's `node`).
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PvePoolAction {
    /// Every pool the token may see.
    List,
    /// One pool with its members (guests and storage).
    Show {
        /// The pool's id.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PveStorageAction {
    /// The storages of a node: type, content, use.
    List {
        /// The node (default: the configuration's `node`).
        #[arg(long)]
        node: Option<String>,
    },
    /// One storage's definition (every option but its secrets) and its state on a node.
    Show {
        /// The storage's id.
        name: String,
        /// The node whose view of it to show (default: the configuration's `node`).
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Vm,
    Container,
}

#[derive(Args, Debug)]
pub struct VmArgs {
    #[command(flatten)]
    pub config: ConfigArg,
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
        /// Every machine on the backend, not only Berth's.
        #[arg(long)]
        all: bool,
        /// Manual backend: the requests waiting for an operator to build them.
        #[arg(long, conflicts_with = "all")]
        pending: bool,
    },
    /// Show one machine. ID is Berth's instance id or the backend's own id (the VMID).
    Describe {
        /// Berth's instance id or the backend's own id (the VMID).
        id: String,
    },
    /// Power on a stopped machine and wait until it has an address.
    Start {
        /// Berth's instance id or the backend's own id (the VMID).
        id: String,
        /// How long to wait for an address (`90s`, `5m`; `0s`: do not wait).
        #[arg(long, default_value = "120s")]
        timeout: String,
    },
    /// Power off at once.
    Stop {
        /// Berth's instance id or the backend's own id (the VMID).
        id: String,
    },
    /// Shut down gracefully; power off if still running after the timeout.
    Shutdown {
        /// Berth's instance id or the backend's own id (the VMID).
        id: String,
        /// How long to wait for the guest before powering off (`120s`, `5m`).
        #[arg(long, default_value = "120s")]
        timeout: String,
    },
    /// Restart a running machine (a stopped one is refused: start it).
    Reboot {
        /// Berth's instance id or the backend's own id (the VMID).
        id: String,
    },
    /// Change cores, memory or disk size (disks only grow).
    Resize {
        /// Berth's instance id or the backend's own id (the VMID).
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
    },
    /// Delete a machine and its disks. Deleting something already gone succeeds.
    Delete {
        /// Berth's instance id or the backend's own id (the VMID).
        id: String,
        /// Do not ask (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// List the templates machines can be created from.
    Templates,
    /// Take a snapshot of a machine (Proxmox): its disks and config, with --vmstate its memory.
    Snapshot {
        /// Berth's instance id, the backend's own id, or the machine's name.
        id: String,
        /// The snapshot's name: 2-40 letters, digits, '_' or '-', starting with a letter.
        name: String,
        /// What it is for, kept with it.
        #[arg(long, default_value = "")]
        description: String,
        /// Save a running VM's memory too: a rollback resumes it running.
        #[arg(long)]
        vmstate: bool,
    },
    /// List a machine's snapshots, oldest first.
    Snapshots {
        /// Berth's instance id, the backend's own id, or the machine's name.
        id: String,
    },
    /// Put a machine back to a snapshot: writes since then are lost (asks first on a terminal).
    Rollback {
        /// Berth's instance id, the backend's own id, or the machine's name.
        id: String,
        /// The snapshot's name.
        name: String,
        /// Start the machine afterwards (a snapshot with memory resumes it anyway).
        #[arg(long)]
        start: bool,
        /// Do not ask (needed without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Delete a snapshot (the machine stays as it is). Deleting one already gone succeeds.
    SnapshotDelete {
        /// Berth's instance id, the backend's own id, or the machine's name.
        id: String,
        /// The snapshot's name.
        name: String,
    },
    /// Move a machine to another node of its cluster (Proxmox), disks on local storage along.
    Migrate {
        /// Berth's instance id, the backend's own id, or the machine's name.
        id: String,
        /// The node to move it to.
        #[arg(long)]
        to: String,
        /// Move a running machine: a VM live, a container restarted on the target.
        #[arg(long)]
        online: bool,
    },
    /// Manual backend: what to build for a waiting request: size, template, the SSH keys to
    /// install and the network settings asked for.
    Request {
        /// The request's instance id (`berth vm list --pending`).
        id: String,
    },
    /// Manual backend: submit the details of a machine an operator has built.
    Complete {
        /// The request's instance id (`berth vm list --pending`).
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
        /// The request's instance id (`berth vm list --pending`).
        id: String,
        /// Why it cannot be built (the requester reads it).
        #[arg(long)]
        reason: String,
    },
    /// Manual backend: withdraw a request nobody should build.
    Cancel {
        /// The request's instance id (`berth vm list --pending`).
        id: String,
        /// Why it is withdrawn (recorded with it).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Host name (a DNS name).
    #[arg(long)]
    pub name: String,
    /// Virtual CPU cores.
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
    /// Memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory_mib: u64,
    /// Root disk size in GiB.
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every subcommand and every flag says what it is for in `--help`.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let p = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(format!("{p} (command)"));
                }
                walk(sub, &p, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "berth", &mut missing);
        assert!(missing.is_empty(), "no help for:\n{}", missing.join("\n"));
    }
}
