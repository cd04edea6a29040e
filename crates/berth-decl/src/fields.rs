//! What Berth knows about each field: from the schema (`fields_table.rs`: create-only = in the
//! create call but not the update; defaults), plus the few places where the schema says less than
//! PVE does, one sourced line each. Values are compared normalized: sets sorted, booleans 1/0,
//! retention in PVE's order, and a field PVE leaves out equal to its default.

use berth_proxmox::client::propstring::PruneBackups;

use crate::fields_table;
use crate::model::Kind;

/// One parameter of a kind's create call.
pub(crate) struct Field {
    pub name: &'static str,
    pub create_only: bool,
    pub default: Option<&'static str>,
    pub boolean: bool,
}

fn table(kind: Kind) -> &'static [Field] {
    match kind {
        Kind::Storage => fields_table::STORAGE,
        Kind::Interface => fields_table::NETWORK,
        Kind::Backup => fields_table::BACKUP,
        Kind::Pool => fields_table::POOL,
        Kind::Vm => fields_table::QEMU,
        Kind::Ct => fields_table::LXC,
        Kind::Cluster | Kind::Ha => &[],
    }
}

/// `scsi0` → `scsi[n]`, as the schema names indexed keys; a VM's `scsi0.size` → `scsi[n]`.
fn schema_name(field: &str) -> std::borrow::Cow<'_, str> {
    let base = field.split('.').next().unwrap_or(field);
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() < base.len() && !stem.is_empty() {
        std::borrow::Cow::Owned(format!("{stem}[n]"))
    } else {
        std::borrow::Cow::Borrowed(base)
    }
}

fn spec(kind: Kind, field: &str) -> Option<&'static Field> {
    // `efidisk0`, `tpmstate0` are names of their own; `scsi0` is one of `scsi[n]`.
    let exact = field.split('.').next().unwrap_or(field);
    let t = table(kind);
    t.iter().find(|f| f.name == exact).or_else(|| {
        let name = schema_name(field);
        t.iter().find(|f| f.name == name)
    })
}

/// Whether the kind's create call takes `field` (anything else PVE shows is read-only).
pub(crate) fn settable(kind: Kind, field: &str) -> bool {
    spec(kind, field).is_some()
}

pub(crate) fn is_boolean(kind: Kind, field: &str) -> bool {
    if matches!(kind, Kind::Vm | Kind::Ct) && field.contains('.') {
        // Options inside a drive or NIC property string that are flags.
        let opt = field.rsplit('.').next().unwrap_or_default();
        return matches!(
            opt,
            "iothread" | "ssd" | "backup" | "replicate" | "ro" | "shared" | "firewall" | "link_down" | "acl" | "quota"
        );
    }
    spec(kind, field).is_some_and(|f| f.boolean) || (kind == Kind::Storage && matches!(field, "disable" | "shared"))
}

/// The value PVE behaves as when the field is left out.
pub(crate) fn default(kind: Kind, field: &str) -> Option<&'static str> {
    match (kind, field) {
        // storage.cfg leaves out flags that are off (pve-storage SectionConfig writes only set keys).
        (Kind::Storage, "disable" | "shared") => Some("0"),
        // ifupdown2 stanzas without `auto` / `bridge-vlan-aware yes` (PVE API2/Network.pm).
        (Kind::Interface, "autostart" | "bridge_vlan_aware") => Some("0"),
        // ha-manager's defaults.
        (Kind::Ha, "state") => Some("started"),
        (Kind::Ha, "max_restart" | "max_relocate") => Some("1"),
        // A guest the file does not say to stop runs.
        (Kind::Vm | Kind::Ct, "state") => Some("running"),
        _ if matches!(kind, Kind::Vm | Kind::Ct) && field.contains('.') => None,
        _ => spec(kind, field).and_then(|f| f.default),
    }
}

/// Whether changing `field` needs the object made anew.
pub(crate) fn create_only(kind: Kind, field: &str, storage_type: Option<&str>) -> bool {
    match (kind, field, storage_type) {
        // Plugin-fixed options the PUT schema still lists (pve-storage NFSPlugin/CIFSPlugin/ZFSPoolPlugin `fixed => 1`).
        (Kind::Storage, "server", Some("nfs" | "cifs")) | (Kind::Storage, "pool", Some("zfspool")) => true,
        // `type` must be sent on every update, but a bridge does not become a bond.
        (Kind::Interface, "type", _) => true,
        // Listed by the PUT schema, refused by pve-container: "unable to modify read-only option".
        (Kind::Ct, "unprivileged", _) => true,
        _ => spec(kind, field).is_some_and(|f| f.create_only),
    }
}

/// What a guest is made from that the cluster does not keep (a VM's template, a container's OS
/// template and first keys): compared only when the guest is created.
pub(crate) fn creation_input(kind: Kind, field: &str) -> bool {
    (kind == Kind::Vm && field == "clone") || (kind == Kind::Ct && crate::ct::is_creation_input(field))
}

/// Written but never read back (pve-storage `sensitive_properties`).
pub(crate) fn is_secret(kind: Kind, field: &str) -> bool {
    match kind {
        Kind::Storage => matches!(field, "password" | "encryption-key" | "keyring" | "master-pubkey"),
        // PVE answers `**********` for it.
        Kind::Vm => field == "cipassword",
        Kind::Ct => field == "password",
        _ => false,
    }
}

/// Lists whose order does not matter.
pub(crate) fn is_set(kind: Kind, field: &str) -> bool {
    matches!(
        (kind, field),
        (Kind::Storage, "content" | "nodes")
            | (Kind::Interface, "bridge_ports" | "slaves" | "ovs_ports" | "ovs_bonds")
            | (Kind::Backup, "vmid" | "exclude")
            | (Kind::Vm | Kind::Ct, "tags")
            | (Kind::Ha, "nodes")
    )
}

/// The value as Berth compares it.
pub(crate) fn normalize(kind: Kind, field: &str, value: &str) -> String {
    if is_boolean(kind, field) {
        return if matches!(value.trim(), "1" | "yes" | "true" | "on") {
            "1"
        } else {
            "0"
        }
        .to_owned();
    }
    if is_set(kind, field) {
        let mut items: Vec<&str> = value.split([',', ';', ' ']).filter(|s| !s.is_empty()).collect();
        items.sort_unstable();
        items.dedup();
        return items.join(",");
    }
    if matches!(kind, Kind::Vm | Kind::Ct) && field.ends_with(".size") {
        return crate::vm::size_bytes(value).map_or_else(|| value.to_owned(), |b| b.to_string());
    }
    if (kind == Kind::Vm && field.ends_with(".macaddr")) || (kind == Kind::Ct && field.ends_with(".hwaddr")) {
        return value.trim().to_uppercase();
    }
    // Read back URL-encoded, written plain in a file: compared decoded.
    if kind == Kind::Vm && field == "sshkeys" {
        return berth_proxmox::client::params::pve_urldecode(value).trim().to_owned();
    }
    if kind == Kind::Vm && field == "agent" {
        return value.strip_prefix("enabled=").unwrap_or(value).to_owned();
    }
    if field == "prune-backups"
        && let Ok(p) = PruneBackups::parse(value)
    {
        return p.to_string();
    }
    // pve-container stores the lists space-separated, whatever separated them when written.
    if (kind == Kind::Interface && field == "bridge_vids")
        || (kind == Kind::Ct && matches!(field, "nameserver" | "searchdomain"))
    {
        return value
            .split([',', ';', ' '])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
    }
    value.trim().to_owned()
}

/// Equal as PVE would behave: a left-out field counts as its default.
pub(crate) fn same(kind: Kind, field: &str, desired: Option<&str>, observed: Option<&str>) -> bool {
    let d = desired.or_else(|| default(kind, field));
    let o = observed.or_else(|| default(kind, field));
    match (d, o) {
        (Some(d), Some(o)) => normalize(kind, field, d) == normalize(kind, field, o),
        (None, None) => true,
        _ => false,
    }
}
