//! Reading site files: TOML and the seed's JSON shape give the same objects; every problem is
//! reported at once as file:line: key: what was expected.

use berth_decl::model::Kind;
use berth_decl::parse;

const SITE: &str = r#"version = 1
stack = "prod"

[proxmox]
backend = "pve-prod"
cluster = { name = "prod-cluster", nodes = ["pve1", "pve2"] }

[[proxmox.storage]]
id = "nfs-backup"
type = "nfs"
server = "192.168.1.100"
export = "/mnt/backups"
content = ["iso", "backup"]
retention = { keep_daily = 7, keep_weekly = 4 }

[[proxmox.storage]]
id = "pbs"
type = "pbs"
server = "10.0.0.7"
datastore = "main"
password = { secret = "env:PBS_PASSWORD" }

[[proxmox.pools]]
id = "web"
comment = "front ends"

[[proxmox.network]]
node = "pve1"
iface = "vmbr1"
type = "bridge"
bridge_ports = ["eno2"]
cidr = "10.0.0.1/24"
bridge_vlan_aware = true

[[proxmox.backups]]
id = "nightly"
schedule = "02:00"
storage = "nfs-backup"
guests = [101, 100]
retention = { keep_last = 3 }
"#;

#[test]
fn a_toml_site_reads_into_objects() {
    let d = parse("site.toml", SITE).unwrap();
    assert_eq!(d.backend.as_deref(), Some("pve-prod"));
    assert_eq!(
        (d.cluster_name.as_deref(), d.nodes.clone()),
        (Some("prod-cluster"), vec!["pve1".to_owned(), "pve2".to_owned()])
    );
    let addrs: Vec<&str> = d.objects.iter().map(|o| o.addr.as_str()).collect();
    assert_eq!(
        addrs,
        [
            "storage.nfs-backup",
            "storage.pbs",
            "pool.web",
            "net.pve1.vmbr1",
            "backup.nightly"
        ]
    );
    let nfs = d.find("storage.nfs-backup").unwrap();
    assert_eq!(
        (nfs.get("content"), nfs.get("prune-backups"), nfs.line),
        (Some("backup,iso"), Some("keep-daily=7,keep-weekly=4"), 8)
    );
    let pbs = d.find("storage.pbs").unwrap();
    assert_eq!(pbs.secrets["password"], "env:PBS_PASSWORD");
    assert!(!pbs.fields.contains_key("password"));
    let br = d.find("net.pve1.vmbr1").unwrap();
    assert_eq!(
        (br.kind, br.get("bridge_vlan_aware"), br.get("cidr")),
        (Kind::Interface, Some("1"), Some("10.0.0.1/24"))
    );
    assert_eq!(d.find("backup.nightly").unwrap().get("vmid"), Some("100,101"));
}

#[test]
fn the_seeds_json_shape_reads_too() {
    let json = r#"{
  "version": 1,
  "plugins": {
    "proxmox": {
      "node": "pve1",
      "storage": [
        {"id": "nfs-backup", "type": "nfs", "server": "192.168.1.100", "export": "/mnt/backups", "content": ["backup", "iso"]}
      ],
      "network": [
        {"iface": "vmbr1", "type": "bridge", "bridge_ports": "eno2", "address": "10.0.0.1", "netmask": "255.255.255.0", "comment": "Internal VM network"}
      ],
      "cluster": {"enabled": true, "name": "prod-cluster", "nodes": [{"name": "pve1", "ip": "192.168.1.10"}]},
      "backups": [
        {"id": "daily", "schedule": "daily", "time": "02:00", "storage": "nfs-backup", "mode": "snapshot",
         "compression": "zstd", "vms": [100, 101], "containers": [200], "retention": {"keep_daily": 7}}
      ]
    }
  }
}"#;
    let d = parse("site.json", json).unwrap();
    let br = d.find("net.pve1.vmbr1").unwrap();
    assert_eq!(
        (br.get("cidr"), br.get("comments")),
        (Some("10.0.0.1/24"), Some("Internal VM network"))
    );
    let job = d.find("backup.daily").unwrap();
    assert_eq!(
        (job.get("schedule"), job.get("compress"), job.get("vmid")),
        (Some("02:00"), Some("zstd"), Some("100,101,200"))
    );
    assert_eq!(d.nodes, ["pve1"]);
}

#[test]
fn every_problem_is_named_by_file_line_and_key() {
    let bad = r#"version = 1
[proxmox]
colour = "blue"

[[proxmox.storage]]
id = "nas"
type = "nfs"
server = "10.0.0.9"
password = "hunter2"
cpu_mitigations = "off"

[[proxmox.storage]]
id = "nas"
type = "dir"
path = "/srv"

[[proxmox.network]]
iface = "vmbr1"
type = "bridge"
cidr = "10.0.0.300/24"

[[proxmox.backups]]
schedule = "02:00"

[[proxmox.vms]]
vmid = 100
"#;
    let errors = parse("site.toml", bad).unwrap_err();
    let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for want in [
        "site.toml:3: proxmox.colour: unknown key",
        "site.toml:9: proxmox.storage[0].password: a secret is a reference",
        "site.toml:10: proxmox.storage[0].cpu_mitigations: not an option of a storage definition",
        "site.toml:12: storage.nas: declared twice (first on line 5)",
        "site.toml:17: proxmox.network[0].node: missing",
        "site.toml:22: proxmox.backups[0].id: missing: a backup job needs an id",
        "site.toml:25: proxmox.vms[0].node: missing",
    ] {
        assert!(shown.iter().any(|s| s.starts_with(want)), "{want}\n{shown:#?}");
    }
    assert!(!shown.iter().any(|s| s.contains("hunter2")), "{shown:#?}");
    // Syntax errors name their line too.
    let e = parse("site.toml", "version = 1\n[proxmox\n").unwrap_err();
    assert!(e[0].to_string().starts_with("site.toml:2: (syntax): "), "{}", e[0]);
    let e = parse("site.json", "{\n  \"version\": 1,\n  \"plugins\": {\"proxmox\": [}\n}").unwrap_err();
    assert!(e[0].to_string().starts_with("site.json:3: (syntax): "), "{}", e[0]);
    let e = parse("site.toml", "version = 1\n[proxmox]\n[[proxmox.network]]\nnode = \"pve1\"\niface = \"vmbr1\"\ntype = \"bridge\"\ncidr = \"10.0.0.300/24\"\n").unwrap_err();
    assert!(
        e[0].to_string()
            .contains("proxmox.network[0].cidr: '10.0.0.300/24' is not an IPv4 address"),
        "{}",
        e[0]
    );
}
