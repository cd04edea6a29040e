//! The declarative mode end to end on the PVE emulator: an exported cluster plans to nothing; a
//! site is built from nothing and a second plan is empty; the network reloads once per node; a
//! change behind Berth's back makes a saved plan stale (named field); a failure mid-apply is
//! finished by applying again; bad references fail the plan; zero schema violations.

use berth_decl::apply::{ApplyError, ApplyOptions, apply};
use berth_decl::observe::observe;
use berth_decl::plan::{Action, plan};
mod common;

use berth_proxmox::client::Params;
use berth_pve_emulator::{EmulatorHandle, Fault};
use common::{client, emulator, fault_once, http_500};

const SITE: &str = r#"version = 1
[proxmox]
cluster = { name = "berth-lab", nodes = ["pve1", "pve2"] }

[[proxmox.storage]]
id = "nas"
type = "nfs"
server = "10.0.0.9"
export = "/tank"
content = ["backup", "images"]
retention = { keep_daily = 7 }

[[proxmox.pools]]
id = "web"
comment = "front ends"

[[proxmox.network]]
node = "pve1"
iface = "vmbr1"
type = "bridge"
bridge_ports = ["eno2"]
cidr = "192.168.5.1/24"
autostart = true

[[proxmox.network]]
node = "pve2"
iface = "vmbr1"
type = "bridge"
bridge_ports = ["eno2"]
bridge_vlan_aware = true
bridge_vids = "2-4094"
autostart = true

[[proxmox.backups]]
id = "nightly"
schedule = "21:00"
storage = "nas"
all = true
retention = { keep_last = 3 }
"#;

fn reloads(emu: &EmulatorHandle) -> usize {
    emu.requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/network"))
        .count()
}

#[tokio::test]
async fn a_site_is_built_from_nothing_and_then_plans_to_nothing() {
    let emu = emulator().await;
    let c = client(&emu);
    let desired = berth_decl::parse("site.toml", SITE).unwrap();
    let p = plan(&desired, &observe(&c).await.unwrap(), "h1").unwrap();
    let actions: Vec<(&str, &Action)> = p.changes.iter().map(|c| (c.addr.as_str(), &c.action)).collect();
    assert_eq!(
        actions,
        [
            ("storage.nas", &Action::Create),
            ("pool.web", &Action::Create),
            ("net.pve1.vmbr1", &Action::Create),
            ("net.pve2.vmbr1", &Action::Create),
            ("backup.nightly", &Action::Create),
        ]
    );
    let done = apply(&c, &p, ApplyOptions::default()).await.unwrap();
    assert_eq!(reloads(&emu), 2, "one reload per node: {:?}", done.steps);
    let again = plan(&desired, &observe(&c).await.unwrap(), "h1").unwrap();
    assert!(again.is_empty(), "{}", berth_decl::render::human(&again));
    // What PVE shows now is what the file says.
    let nas = c.storage_config("nas").await.unwrap();
    assert_eq!(
        (nas.options["path"].as_str(), nas.prune_backups.unwrap().keep_daily),
        ("/mnt/pve/nas", Some(7))
    );
    assert!(c.network_interface("pve1", "vmbr1").await.unwrap().active);
    // Applying the same plan again is refused: what it touches is no longer as planned.
    let e = apply(&c, &p, ApplyOptions::default()).await.unwrap_err();
    assert!(matches!(e.error, ApplyError::Stale { .. }), "{e}");
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn an_exported_cluster_plans_to_nothing() {
    let emu = emulator().await;
    let c = client(&emu);
    c.create_backup_job(&berth_proxmox::client::backup::BackupJob {
        id: "weekly".into(),
        schedule: Some("sat 02:30".into()),
        enabled: true,
        vmid: vec![9000, 9001],
        ..Default::default()
    })
    .await
    .unwrap();
    let observed = observe(&c).await.unwrap();
    let text = berth_decl::export::export(&observed, Some("pve"));
    let desired = berth_decl::parse("exported.toml", &text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let p = plan(&desired, &observed, "h").unwrap();
    assert!(p.is_empty(), "{}\n{text}", berth_decl::render::human(&p));
    assert!(
        text.contains("id = \"local-lvm\"") && text.contains("iface = \"vmbr0\""),
        "{text}"
    );
}

#[tokio::test]
async fn a_change_behind_berths_back_makes_the_saved_plan_stale() {
    let emu = emulator().await;
    let c = client(&emu);
    let site = "version = 1\n[proxmox]\n[[proxmox.storage]]\nid = \"local\"\ntype = \"dir\"\ncontent = [\"iso\", \"backup\", \"vztmpl\"]\n";
    let desired = berth_decl::parse("site.toml", site).unwrap();
    let p = plan(&desired, &observe(&c).await.unwrap(), "h").unwrap();
    assert_eq!(p.changes[0].action, Action::Update);
    assert_eq!(p.changes[0].fields[0].field, "content");
    // Someone disables it meanwhile.
    c.update_storage("local", &Params::new().str("disable", "1"), &[], None)
        .await
        .unwrap();
    let e = apply(&c, &p, ApplyOptions::default()).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("stale plan: storage.local changed") && text.contains("disable: (unset) → 1"),
        "{text}"
    );
    // A fresh plan applies.
    let p = plan(&desired, &observe(&c).await.unwrap(), "h").unwrap();
    apply(&c, &p, ApplyOptions::default()).await.unwrap();
    assert_eq!(
        c.storage_config("local").await.unwrap().content,
        ["backup", "iso", "vztmpl"]
    );
}

#[tokio::test]
async fn a_failure_mid_apply_is_finished_by_applying_again() {
    let emu = emulator().await;
    let c = client(&emu);
    let desired = berth_decl::parse("site.toml", SITE).unwrap();
    fault_once(&emu, "POST", "/cluster/backup", http_500());
    let p = plan(&desired, &observe(&c).await.unwrap(), "h").unwrap();
    let e = apply(&c, &p, ApplyOptions::default()).await.unwrap_err();
    assert!(e.to_string().starts_with("backup.nightly: create failed"), "{e}");
    let rest = plan(&desired, &observe(&c).await.unwrap(), "h").unwrap();
    let left: Vec<&str> = rest.changes.iter().map(|c| c.addr.as_str()).collect();
    assert_eq!(left, ["backup.nightly"]);
    apply(&c, &rest, ApplyOptions::default()).await.unwrap();
    assert!(plan(&desired, &observe(&c).await.unwrap(), "h").unwrap().is_empty());
}

#[tokio::test]
async fn bad_references_and_pending_edits_stop_before_anything_changes() {
    let emu = emulator().await;
    let c = client(&emu);
    let observed = observe(&c).await.unwrap();
    let bad = "version = 1\n[proxmox]\n\
        [[proxmox.backups]]\nid = \"b\"\nschedule = \"21:00\"\nstorage = \"nope\"\nall = true\n\
        [[proxmox.network]]\nnode = \"pve1\"\niface = \"vmbr7\"\ntype = \"bridge\"\nbridge_ports = [\"eth9\"]\n\
        [[proxmox.network]]\nnode = \"pve1\"\niface = \"vmbr8\"\ntype = \"bridge\"\nbridge_ports = [\"vmbr9\"]\n\
        [[proxmox.network]]\nnode = \"pve1\"\niface = \"vmbr9\"\ntype = \"bridge\"\nbridge_ports = [\"vmbr8\"]\n";
    let errors = plan(&berth_decl::parse("site.toml", bad).unwrap(), &observed, "h").unwrap_err();
    let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for want in [
        "3: backup.b.storage: storage nope does not exist",
        "8: net.pve1.vmbr7.bridge_ports: interface eth9 of pve1 does not exist",
        "13: net.pve1.vmbr8: its ports lead back to itself (a cycle)",
    ] {
        assert!(
            shown.iter().any(|s| s == want || s.starts_with(want)),
            "{want}\n{shown:#?}"
        );
    }
    // Someone else's staged network edit: the apply refuses to reload it along.
    let desired = berth_decl::parse("site.toml", SITE).unwrap();
    let p = plan(&desired, &observed, "h").unwrap();
    c.create_interface(
        "pve1",
        &berth_proxmox::client::network::NetworkInterface {
            iface: "vmbr3".into(),
            kind: "bridge".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = apply(&c, &p, ApplyOptions::default()).await.unwrap_err();
    assert!(
        matches!(e.error, ApplyError::PendingNetwork { ref node } if node == "pve1"),
        "{e}"
    );
    assert!(
        c.storage_configs(None)
            .await
            .unwrap()
            .iter()
            .all(|s| s.storage != "nas"),
        "nothing applied"
    );
}

/// The interface carrying the API's own address is not changed unless asked for.
#[tokio::test]
async fn the_management_interface_is_guarded() {
    let emu = emulator().await;
    let c = client(&emu);
    let mgmt = berth_proxmox::client::network::NetworkInterface {
        iface: "vmbr9".into(),
        kind: "bridge".into(),
        cidr: Some("127.0.0.1/8".into()),
        autostart: true,
        ..Default::default()
    };
    c.create_interface("pve1", &mgmt).await.unwrap();
    let upid = c.reload_network("pve1").await.unwrap();
    c.wait_task(&upid, std::time::Duration::from_secs(10)).await.unwrap();
    let site = "version = 1\n[proxmox]\n[[proxmox.network]]\nnode = \"pve1\"\niface = \"vmbr9\"\ntype = \"bridge\"\nmtu = 9000\n";
    let d = berth_decl::parse("site.toml", site).unwrap();
    let p = plan(&d, &observe(&c).await.unwrap(), "h").unwrap();
    let e = apply(&c, &p, ApplyOptions::default()).await.unwrap_err();
    assert!(matches!(e.error, ApplyError::Management { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("net.pve1.vmbr9 carries the API's own address 127.0.0.1"),
        "{e}"
    );
    let allowed = ApplyOptions {
        allow_mgmt_network: true,
        ..ApplyOptions::default()
    };
    apply(&c, &p, allowed).await.unwrap();
    assert_eq!(c.network_interface("pve1", "vmbr9").await.unwrap().mtu, Some(9000));
}

#[tokio::test]
async fn a_failed_network_edit_reverts_what_the_apply_staged() {
    let emu = emulator().await;
    let c = client(&emu);
    let desired = berth_decl::parse("site.toml", SITE).unwrap();
    fault_once(&emu, "POST", "/nodes/pve2/network", http_500());
    let p = plan(&desired, &observe(&c).await.unwrap(), "h").unwrap();
    let e = apply(&c, &p, ApplyOptions::default()).await.unwrap_err();
    assert!(e.to_string().starts_with("net.pve2.vmbr1: create failed"), "{e}");
    // pve1's edit was staged, then reverted: nothing waits for someone's next reload, and
    // nothing was reloaded.
    for node in ["pve1", "pve2"] {
        let net = c.network(node, None).await.unwrap();
        assert_eq!(net.changes, None, "{node}");
        assert!(net.interfaces.iter().all(|i| i.iface != "vmbr1"), "{node}");
        assert!(
            e.done
                .steps
                .iter()
                .any(|s| s.starts_with(&format!("reverted the network edits staged on {node}"))),
            "{:?}",
            e.done.steps
        );
    }
    assert_eq!(reloads(&emu), 0);
    // Applying again converges.
    let again = plan(&desired, &observe(&c).await.unwrap(), "h").unwrap();
    apply(&c, &again, ApplyOptions::default()).await.unwrap();
    assert!(plan(&desired, &observe(&c).await.unwrap(), "h").unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_reload_reverts_the_edits_no_node_took() {
    let emu = emulator().await;
    let c = client(&emu);
    let desired = berth_decl::parse("site.toml", SITE).unwrap();
    let failed = Fault::TaskFailure {
        message: "ifreload failed".into(),
    };
    fault_once(&emu, "PUT", "/nodes/pve1/network", failed);
    let p = plan(&desired, &observe(&c).await.unwrap(), "h").unwrap();
    let e = apply(&c, &p, ApplyOptions::default()).await.unwrap_err();
    assert!(e.to_string().starts_with("net.pve1: reload failed"), "{e}");
    // pve1 failed to take its edits, pve2 was never reloaded: neither keeps them staged.
    for node in ["pve1", "pve2"] {
        assert_eq!(c.network(node, None).await.unwrap().changes, None, "{node}");
        assert!(
            e.done
                .steps
                .iter()
                .any(|s| s.starts_with(&format!("reverted the network edits staged on {node}"))),
            "{:?}",
            e.done.steps
        );
    }
    let again = plan(&desired, &observe(&c).await.unwrap(), "h").unwrap();
    apply(&c, &again, ApplyOptions::default()).await.unwrap();
    assert!(plan(&desired, &observe(&c).await.unwrap(), "h").unwrap().is_empty());
}

#[tokio::test]
async fn bond_options_and_ipv6_by_address_are_managed_and_exported() {
    let emu = emulator().await;
    let c = client(&emu);
    let site = "version = 1\n[proxmox]\nnode = \"pve1\"\n\
        [[proxmox.network]]\niface = \"bond0\"\ntype = \"bond\"\nslaves = [\"eno2\"]\nbond_mode = \"active-backup\"\nbond-primary = \"eno2\"\n\
        [[proxmox.network]]\niface = \"vmbr5\"\ntype = \"bridge\"\nbridge_ports = [\"bond0\"]\naddress6 = \"2001:db8::5\"\nnetmask6 = \"64\"\ncomments6 = \"v6 side\"\n";
    common::settle_with(&c, site, ApplyOptions::default()).await;
    let bond = c.network_interface("pve1", "bond0").await.unwrap();
    assert_eq!(bond.options.get("bond-primary").map(String::as_str), Some("eno2"));
    let bridge = c.network_interface("pve1", "vmbr5").await.unwrap();
    assert_eq!(bridge.cidr6.as_deref(), Some("2001:db8::5/64"));
    let observed = observe(&c).await.unwrap();
    let text = berth_decl::export::export(&observed, None);
    assert!(text.contains("bond-primary = \"eno2\""), "{text}");
    let round = plan(&berth_decl::parse("x.toml", &text).unwrap(), &observed, "h").unwrap();
    assert!(round.is_empty(), "{}", berth_decl::render::human(&round));
    // IPv6 written wrong is named.
    let bad = "version = 1\n[proxmox]\nnode = \"pve1\"\n[[proxmox.network]]\niface = \"vmbr6\"\ntype = \"bridge\"\n\
        address6 = \"2001:db8::6\"\nnetmask6 = \"200\"\n[[proxmox.network]]\niface = \"vmbr7\"\ntype = \"bridge\"\ncidr6 = \"10.0.0.1/24\"\n";
    let errors: Vec<String> = berth_decl::parse("site.toml", bad)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    for want in [
        "site.toml:8: proxmox.network[0].netmask6: '200' is not a prefix length (0 to 128)",
        "site.toml:9: proxmox.network[1].cidr6: '10.0.0.1/24' is not an IPv6 address with a prefix length",
    ] {
        assert!(errors.iter().any(|e| e.starts_with(want)), "{want}\n{errors:#?}");
    }
}
