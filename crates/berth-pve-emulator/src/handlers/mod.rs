//! Routing: maps `(method, path)` to an endpoint and runs its handler.

mod access;
mod backup;
mod cluster;
mod guest;
mod ha;
mod lxc;
mod migrate;
mod network;
mod pools;
mod qemu;
mod qemu_create;
mod restore;
mod snapshot;
mod storage;
mod storage_config;
mod tasks;

use crate::api::{ApiResult, Ctx};
use crate::state::Kind;

/// Power actions shared by qemu and lxc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Power {
    Start,
    Stop,
    Shutdown,
    Reboot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Version,
    Nodes,
    NodeIndex,
    NodeStatus,
    ClusterResources,
    ClusterNextId,
    ClusterStatus,
    ClusterConfigNodes,
    ClusterOptions,
    AccessPermissions,
    PoolsList,
    PoolsCreate,
    PoolGet,
    PoolUpdate,
    PoolDelete,
    StorageList,
    HaResources,
    HaResourceCreate,
    HaResource,
    HaResourceUpdate,
    HaResourceDelete,
    HaSections(&'static str),
    HaSectionCreate(&'static str),
    HaSection(&'static str),
    HaSectionUpdate(&'static str),
    HaSectionDelete(&'static str),
    HaStatus,
    BackupList,
    BackupCreate,
    BackupGet,
    BackupUpdate,
    BackupDelete,
    NotBackedUp,
    Vzdump,
    NetworkList,
    NetworkCreate,
    NetworkReload,
    NetworkRevert,
    NetworkGet,
    NetworkUpdate,
    NetworkDelete,
    StorageCfgList,
    StorageCfgCreate,
    StorageCfgGet,
    StorageCfgUpdate,
    StorageCfgDelete,
    StorageStatus,
    StorageContent,
    TaskList,
    TaskStatus,
    TaskLog,
    TaskStop,
    GuestList,
    LxcCreate,
    QemuCreate,
    GuestIndex,
    GuestDestroy,
    ConfigGet,
    ConfigPut,
    ConfigPost,
    Pending,
    CloudinitGet,
    CloudinitPut,
    Resize,
    StatusCurrent,
    Power(Power),
    AgentInterfaces,
    AgentPing,
    AgentExec,
    AgentExecStatus,
    LxcInterfaces,
    Clone,
    MigrateCheck,
    Migrate,
    MoveDisk,
    Snapshot(snapshot::SnapshotOp),
}

/// A matched endpoint with its path parameters.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub ep: Endpoint,
    pub node: Option<String>,
    pub kind: Option<Kind>,
    pub vmid: Option<String>,
    pub storage: Option<String>,
    pub upid: Option<String>,
    pub poolid: Option<String>,
    pub snapname: Option<String>,
    pub iface: Option<String>,
    pub id: Option<String>,
    /// The URI name of `id` (`id`, `sid`, `group`, `rule`).
    pub id_name: &'static str,
}

impl Route {
    fn new(ep: Endpoint) -> Route {
        Route {
            ep,
            node: None,
            kind: None,
            vmid: None,
            storage: None,
            upid: None,
            poolid: None,
            snapname: None,
            iface: None,
            id: None,
            id_name: "id",
        }
    }
    fn node(mut self, n: &str) -> Route {
        self.node = Some(n.to_string());
        self
    }

    /// (name, value) of the parameters that come from the URI.
    pub fn path_params(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (name, v) in [
            ("node", &self.node),
            ("vmid", &self.vmid),
            ("storage", &self.storage),
            ("upid", &self.upid),
            ("poolid", &self.poolid),
            ("snapname", &self.snapname),
            ("iface", &self.iface),
            (self.id_name, &self.id),
        ] {
            if let Some(v) = v {
                out.push((name, v.clone()));
            }
        }
        out
    }
}

/// The endpoint for a request, or None (501 not implemented).
pub(crate) fn route(method: &str, segs: &[String]) -> Option<Route> {
    use Endpoint as E;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let r = match (method, s.as_slice()) {
        ("GET", ["version"]) => Route::new(E::Version),
        ("GET", ["nodes"]) => Route::new(E::Nodes),
        ("GET", ["nodes", n]) => Route::new(E::NodeIndex).node(n),
        ("GET", ["nodes", n, "status"]) => Route::new(E::NodeStatus).node(n),
        ("GET", ["cluster", "resources"]) => Route::new(E::ClusterResources),
        ("GET", ["cluster", "nextid"]) => Route::new(E::ClusterNextId),
        ("GET", ["cluster", "status"]) => Route::new(E::ClusterStatus),
        ("GET", ["cluster", "config", "nodes"]) => Route::new(E::ClusterConfigNodes),
        ("GET", ["cluster", "options"]) => Route::new(E::ClusterOptions),
        ("GET", ["access", "permissions"]) => Route::new(E::AccessPermissions),
        ("GET", ["pools"]) => Route::new(E::PoolsList),
        ("POST", ["pools"]) => Route::new(E::PoolsCreate),
        ("PUT", ["pools"]) => Route::new(E::PoolUpdate),
        ("DELETE", ["pools"]) => Route::new(E::PoolDelete),
        (m @ ("GET" | "PUT" | "DELETE"), ["pools", p]) => {
            let mut r = Route::new(match m {
                "GET" => E::PoolGet,
                "PUT" => E::PoolUpdate,
                _ => E::PoolDelete,
            });
            r.poolid = Some(p.to_string());
            r
        }
        ("GET", ["cluster", "ha", "status", "current"]) => Route::new(E::HaStatus),
        (m, ["cluster", "ha", "resources"]) => Route::new(match m {
            "GET" => E::HaResources,
            "POST" => E::HaResourceCreate,
            _ => return None,
        }),
        (m, ["cluster", "ha", "resources", sid]) => {
            let mut r = Route::new(match m {
                "GET" => E::HaResource,
                "PUT" => E::HaResourceUpdate,
                "DELETE" => E::HaResourceDelete,
                _ => return None,
            });
            (r.id, r.id_name) = (Some(sid.to_string()), "sid");
            r
        }
        (m, ["cluster", "ha", t @ ("groups" | "rules")]) => {
            let kind = if *t == "groups" { "group" } else { "rule" };
            Route::new(match m {
                "GET" => E::HaSections(kind),
                "POST" => E::HaSectionCreate(kind),
                _ => return None,
            })
        }
        (m, ["cluster", "ha", t @ ("groups" | "rules"), id]) => {
            let kind = if *t == "groups" { "group" } else { "rule" };
            let mut r = Route::new(match m {
                "GET" => E::HaSection(kind),
                "PUT" => E::HaSectionUpdate(kind),
                "DELETE" => E::HaSectionDelete(kind),
                _ => return None,
            });
            (r.id, r.id_name) = (Some(id.to_string()), kind);
            r
        }
        ("GET", ["cluster", "backup"]) => Route::new(E::BackupList),
        ("POST", ["cluster", "backup"]) => Route::new(E::BackupCreate),
        (m @ ("GET" | "PUT" | "DELETE"), ["cluster", "backup", id]) => {
            let mut r = Route::new(match m {
                "GET" => E::BackupGet,
                "PUT" => E::BackupUpdate,
                _ => E::BackupDelete,
            });
            r.id = Some(id.to_string());
            r
        }
        ("GET", ["cluster", "backup-info", "not-backed-up"]) => Route::new(E::NotBackedUp),
        ("POST", ["nodes", n, "vzdump"]) => Route::new(E::Vzdump).node(n),
        ("GET", ["storage"]) => Route::new(E::StorageCfgList),
        ("POST", ["storage"]) => Route::new(E::StorageCfgCreate),
        (m @ ("GET" | "PUT" | "DELETE"), ["storage", st]) => {
            let mut r = Route::new(match m {
                "GET" => E::StorageCfgGet,
                "PUT" => E::StorageCfgUpdate,
                _ => E::StorageCfgDelete,
            });
            r.storage = Some(st.to_string());
            r
        }
        (m, ["nodes", n, "network"]) => Route::new(match m {
            "GET" => E::NetworkList,
            "POST" => E::NetworkCreate,
            "PUT" => E::NetworkReload,
            "DELETE" => E::NetworkRevert,
            _ => return None,
        })
        .node(n),
        (m, ["nodes", n, "network", i]) => {
            let mut r = Route::new(match m {
                "GET" => E::NetworkGet,
                "PUT" => E::NetworkUpdate,
                "DELETE" => E::NetworkDelete,
                _ => return None,
            })
            .node(n);
            r.iface = Some(i.to_string());
            r
        }
        ("GET", ["nodes", n, "storage"]) => Route::new(E::StorageList).node(n),
        ("GET", ["nodes", n, "storage", st, rest]) => {
            let ep = match *rest {
                "status" => E::StorageStatus,
                "content" => E::StorageContent,
                _ => return None,
            };
            let mut r = Route::new(ep).node(n);
            r.storage = Some(st.to_string());
            r
        }
        ("GET", ["nodes", n, "tasks"]) => Route::new(E::TaskList).node(n),
        (m, ["nodes", n, "tasks", upid, rest @ ..]) => {
            let ep = match (m, rest) {
                ("GET", ["status"]) => E::TaskStatus,
                ("GET", ["log"]) => E::TaskLog,
                ("DELETE", []) => E::TaskStop,
                _ => return None,
            };
            let mut r = Route::new(ep).node(n);
            r.upid = Some(upid.to_string());
            r
        }
        ("GET", ["nodes", n, k @ ("qemu" | "lxc")]) => {
            let mut r = Route::new(E::GuestList).node(n);
            r.kind = Some(if *k == "qemu" { Kind::Qemu } else { Kind::Lxc });
            r
        }
        ("POST", ["nodes", n, "qemu"]) => {
            let mut r = Route::new(E::QemuCreate).node(n);
            r.kind = Some(Kind::Qemu);
            r
        }
        ("POST", ["nodes", n, "lxc"]) => {
            let mut r = Route::new(E::LxcCreate).node(n);
            r.kind = Some(Kind::Lxc);
            r
        }
        (m, ["nodes", n, k @ ("qemu" | "lxc"), id, rest @ ..]) => {
            let kind = if *k == "qemu" { Kind::Qemu } else { Kind::Lxc };
            let ep = guest_endpoint(m, kind, rest)?;
            let mut r = Route::new(ep).node(n);
            r.kind = Some(kind);
            r.vmid = Some(id.to_string());
            if let ["snapshot", name, ..] = rest {
                r.snapname = Some(name.to_string());
            }
            r
        }
        _ => return None,
    };
    Some(r)
}

fn guest_endpoint(method: &str, kind: Kind, rest: &[&str]) -> Option<Endpoint> {
    use Endpoint as E;
    let qemu = kind == Kind::Qemu;
    Some(match (method, rest) {
        ("GET", []) => E::GuestIndex,
        ("DELETE", []) => E::GuestDestroy,
        ("GET", ["config"]) => E::ConfigGet,
        ("PUT", ["config"]) => E::ConfigPut,
        ("POST", ["config"]) if qemu => E::ConfigPost,
        ("GET", ["pending"]) => E::Pending,
        ("GET", ["cloudinit"]) if qemu => E::CloudinitGet,
        ("PUT", ["cloudinit"]) if qemu => E::CloudinitPut,
        ("PUT", ["resize"]) => E::Resize,
        ("GET", ["status", "current"]) => E::StatusCurrent,
        ("POST", ["status", "start"]) => E::Power(Power::Start),
        ("POST", ["status", "stop"]) => E::Power(Power::Stop),
        ("POST", ["status", "shutdown"]) => E::Power(Power::Shutdown),
        ("POST", ["status", "reboot"]) => E::Power(Power::Reboot),
        ("GET", ["agent", "network-get-interfaces"]) if qemu => E::AgentInterfaces,
        ("POST", ["agent", "ping"]) if qemu => E::AgentPing,
        ("POST", ["agent", "exec"]) if qemu => E::AgentExec,
        ("GET", ["agent", "exec-status"]) if qemu => E::AgentExecStatus,
        ("GET", ["interfaces"]) if !qemu => E::LxcInterfaces,
        ("POST", ["clone"]) if qemu => E::Clone,
        ("GET", ["migrate"]) => E::MigrateCheck,
        ("POST", ["migrate"]) => E::Migrate,
        ("POST", ["move_disk"]) if qemu => E::MoveDisk,
        ("POST", ["move_volume"]) if !qemu => E::MoveDisk,
        (m, ["snapshot", rest @ ..]) => {
            use snapshot::SnapshotOp as S;
            E::Snapshot(match (m, rest) {
                ("GET", []) => S::List,
                ("POST", []) => S::Create,
                ("GET", [_]) => S::Index,
                ("DELETE", [_]) => S::Delete,
                ("POST", [_, "rollback"]) => S::Rollback,
                ("GET", [_, "config"]) => S::ConfigGet,
                ("PUT", [_, "config"]) => S::ConfigPut,
                _ => return None,
            })
        }
        _ => return None,
    })
}

pub(crate) use backup::run_vzdump;
pub(crate) use ha::HaConfig;
pub(crate) use migrate::{DiskMove, finish_migrate, finish_move, unlock};
pub(crate) use qemu_create::{CreateVmJob, finish_create};
pub(crate) use restore::{RestoreJob, finish as finish_restore};

/// The HA manager's effect on one guest (the `hastart`/`hastop` task).
pub(crate) fn ha_enforce(world: &mut crate::state::World, kind: Kind, vmid: u32) {
    ha::enforce(world, kind, vmid)
}

/// `purge=1` on a guest's destroy: out of HA (and its rules), backup jobs and pools.
pub(crate) fn purge_guest(world: &mut crate::state::World, kind: Kind, vmid: u32) {
    let sid = ha::sid(kind, vmid);
    world.ha.resources.remove(&sid);
    ha::purge_from_rules(world, &sid);
    backup::remove_vmid(world, vmid);
    world.remove_from_pools(vmid);
}
pub(crate) use network::apply_reload as apply_network_reload;

/// Runs the endpoint's handler.
pub(crate) fn dispatch(ctx: &mut Ctx, route: Route) -> ApiResult {
    use Endpoint as E;
    let node = route.node.clone().unwrap_or_default();
    match route.ep {
        E::Version => cluster::version(ctx),
        E::Nodes => cluster::nodes(ctx),
        E::NodeIndex => cluster::node_index(),
        E::NodeStatus => cluster::node_status(ctx, &node),
        E::ClusterResources => cluster::resources(ctx),
        E::ClusterNextId => cluster::nextid(ctx),
        E::ClusterStatus => cluster::status(ctx),
        E::ClusterConfigNodes => cluster::config_nodes(ctx),
        E::ClusterOptions => cluster::options(ctx),
        E::AccessPermissions => access::permissions(ctx),
        E::PoolsList => pools::list(ctx),
        E::PoolsCreate => pools::create(ctx),
        E::PoolGet => pools::get(ctx, route.poolid.as_deref().unwrap_or_default()),
        E::PoolUpdate => pools::update(ctx, route.poolid.as_deref()),
        E::PoolDelete => pools::delete(ctx, route.poolid.as_deref()),
        E::StorageList => storage::list(ctx, &node),
        E::HaStatus => ha::status(ctx),
        E::HaResources => ha::resources(ctx),
        E::HaResourceCreate => ha::create_resource(ctx),
        E::HaResource => ha::resource(ctx, route.id.as_deref().unwrap_or_default()),
        E::HaResourceUpdate => ha::update_resource(ctx, route.id.as_deref().unwrap_or_default()),
        E::HaResourceDelete => ha::delete_resource(ctx, route.id.as_deref().unwrap_or_default()),
        E::HaSections(k) => ha::list_sections(ctx, k),
        E::HaSectionCreate(k) => ha::create_section(ctx, k),
        E::HaSection(k) => ha::get_section(ctx, k, route.id.as_deref().unwrap_or_default()),
        E::HaSectionUpdate(k) => ha::update_section(ctx, k, route.id.as_deref().unwrap_or_default()),
        E::HaSectionDelete(k) => ha::delete_section(ctx, k, route.id.as_deref().unwrap_or_default()),
        E::BackupList => backup::list(ctx),
        E::BackupCreate => backup::create(ctx),
        E::BackupGet => backup::get(ctx, route.id.as_deref().unwrap_or_default()),
        E::BackupUpdate => backup::update(ctx, route.id.as_deref().unwrap_or_default()),
        E::BackupDelete => backup::delete(ctx, route.id.as_deref().unwrap_or_default()),
        E::NotBackedUp => backup::not_backed_up(ctx),
        E::Vzdump => backup::vzdump(ctx, &node),
        E::NetworkList => network::list(ctx, &node),
        E::NetworkCreate => network::create(ctx, &node),
        E::NetworkReload => network::reload(ctx, &node),
        E::NetworkRevert => network::revert(ctx, &node),
        E::NetworkGet => network::get(ctx, &node, route.iface.as_deref().unwrap_or_default()),
        E::NetworkUpdate => network::update(ctx, &node, route.iface.as_deref().unwrap_or_default()),
        E::NetworkDelete => network::delete(ctx, &node, route.iface.as_deref().unwrap_or_default()),
        E::StorageCfgList => storage_config::list(ctx),
        E::StorageCfgCreate => storage_config::create(ctx),
        E::StorageCfgGet => storage_config::get(ctx, route.storage.as_deref().unwrap_or_default()),
        E::StorageCfgUpdate => storage_config::update(ctx, route.storage.as_deref().unwrap_or_default()),
        E::StorageCfgDelete => storage_config::delete(ctx, route.storage.as_deref().unwrap_or_default()),
        E::StorageStatus => storage::status(ctx, &node, route.storage.as_deref().unwrap_or_default()),
        E::StorageContent => storage::content(ctx, &node, route.storage.as_deref().unwrap_or_default()),
        E::TaskList => tasks::list(ctx, &node),
        E::TaskStatus => tasks::status(ctx, &node, route.upid.as_deref().unwrap_or_default()),
        E::TaskLog => tasks::log(ctx, &node, route.upid.as_deref().unwrap_or_default()),
        E::TaskStop => tasks::stop(ctx, &node, route.upid.as_deref().unwrap_or_default()),
        E::GuestList => guest::list(ctx, &node, route.kind.unwrap_or(Kind::Qemu)),
        E::LxcCreate => lxc::create(ctx, &node),
        E::QemuCreate => qemu_create::create(ctx, &node),
        E::Snapshot(op) => {
            let kind = route.kind.unwrap_or(Kind::Qemu);
            let vmid = crate::api::parse_vmid("vmid", route.vmid.as_deref().unwrap_or_default())?;
            snapshot::dispatch(ctx, op, &node, kind, vmid, route.snapname.as_deref())
        }
        _ => {
            let kind = route.kind.unwrap_or(Kind::Qemu);
            let vmid = crate::api::parse_vmid("vmid", route.vmid.as_deref().unwrap_or_default())?;
            guest_dispatch(ctx, route.ep, &node, kind, vmid)
        }
    }
}

fn guest_dispatch(ctx: &mut Ctx, ep: Endpoint, node: &str, kind: Kind, vmid: u32) -> ApiResult {
    use Endpoint as E;
    match ep {
        E::GuestIndex => guest::index(ctx, node, kind, vmid),
        E::GuestDestroy => guest::destroy(ctx, node, kind, vmid),
        E::ConfigGet => guest::config_get(ctx, node, kind, vmid),
        E::ConfigPut => guest::config_put(ctx, node, kind, vmid),
        E::ConfigPost => qemu::config_post(ctx, node, vmid),
        E::Pending => guest::pending(ctx, node, kind, vmid),
        E::CloudinitGet => qemu::cloudinit_get(ctx, node, vmid),
        E::CloudinitPut => qemu::cloudinit_put(ctx, node, vmid),
        E::Resize => guest::resize(ctx, node, kind, vmid),
        E::StatusCurrent => guest::status_current(ctx, node, kind, vmid),
        E::Power(p) => guest::power(ctx, node, kind, vmid, p),
        E::AgentInterfaces => qemu::agent_interfaces(ctx, node, vmid),
        E::AgentPing => qemu::agent_ping(ctx, node, vmid),
        E::AgentExec => qemu::agent_exec(ctx, node, vmid),
        E::AgentExecStatus => qemu::agent_exec_status(ctx, node, vmid),
        E::LxcInterfaces => lxc::interfaces(ctx, node, vmid),
        E::Clone => qemu::clone(ctx, node, vmid),
        E::MigrateCheck => migrate::precondition(ctx, node, kind, vmid),
        E::Migrate => migrate::migrate(ctx, node, kind, vmid),
        E::MoveDisk => migrate::move_disk(ctx, node, kind, vmid),
        _ => Err(crate::api::ApiError::Status(501, "Method not implemented".to_string())),
    }
}
