//! HA declared on a VM or a container: the resource with its state, and its nodes as a node-affinity rule (PVE
//! 9) or a group (PVE 8); changed, exported, and gone with the VM.

mod common;

use berth_decl::apply::ApplyOptions;
use berth_decl::observe::observe;
use berth_decl::plan::{Action, plan};
use berth_proxmox::client::PveClient;
use berth_pve_emulator::{Emulator, EmulatorConfig, Timings};
use common::{client, emulator};

fn site(nodes: &str, absent: bool) -> String {
    let ensure = if absent { "ensure = \"absent\"\n" } else { "" };
    format!(
        "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 150\nnode = \"pve1\"\nname = \"db\"\nmemory = 1024\n{ensure}\
         disks.scsi0 = {{ storage = \"local-lvm\", size = \"4G\" }}\n\
         ha = {{ state = \"started\", nodes = [{nodes}], max_restart = 2 }}\n"
    )
}

async fn converge(c: &PveClient, text: &str) -> berth_decl::Plan {
    common::settle_with(
        c,
        text,
        ApplyOptions {
            no_backup: true,
            ..ApplyOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn pve9_places_ha_resources_with_rules() {
    let emu = emulator().await;
    let c = client(&emu);
    let p = converge(&c, &site("\"pve2:1\", \"pve1:2\"", false)).await;
    let made: Vec<(&str, &Action)> = p.changes.iter().map(|c| (c.addr.as_str(), &c.action)).collect();
    assert_eq!(made, [("vm.150", &Action::Create), ("ha.vm:150", &Action::Create)]);
    let r = c.ha_resource("vm:150").await.unwrap();
    assert_eq!((r.state.as_deref(), r.max_restart), (Some("started"), Some(2)));
    let rules = c.ha_rules().await.unwrap();
    assert_eq!(
        (rules[0].rule.as_deref(), rules[0].nodes.as_deref()),
        (Some("berth-vm-150"), Some("pve1:2,pve2:1"))
    );

    let p = converge(&c, &site("\"pve1\"", false)).await;
    assert_eq!((p.changes.len(), &p.changes[0].action), (1, &Action::Update));
    assert_eq!(c.ha_rules().await.unwrap()[0].nodes.as_deref(), Some("pve1"));

    let observed = observe(&c).await.unwrap();
    let text = berth_decl::export::export(&observed, None);
    assert!(
        text.contains("ha = { max_restart = 2, nodes = [\"pve1\"], state = \"started\" }"),
        "{text}"
    );
    let round = plan(&berth_decl::parse("x.toml", &text).unwrap(), &observed, "h").unwrap();
    assert!(round.is_empty(), "{}", berth_decl::render::human(&round));

    converge(&c, &site("\"pve1\"", true)).await;
    assert!(c.ha_resources().await.unwrap().is_empty() && c.ha_rules().await.unwrap().is_empty());
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn pve8_places_ha_resources_with_groups() {
    let emu = Emulator::start(EmulatorConfig {
        timings: Timings::fast(),
        pve_major: 8,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let c = client(&emu);
    converge(&c, &site("\"pve1:2\", \"pve2:1\"", false)).await;
    let groups = c.ha_groups().await.unwrap();
    assert_eq!(
        (groups[0].group.as_deref(), groups[0].nodes.as_deref()),
        (Some("berth-vm-150"), Some("pve1:2,pve2:1"))
    );
    assert_eq!(
        c.ha_resource("vm:150").await.unwrap().group.as_deref(),
        Some("berth-vm-150")
    );
    converge(&c, &site("\"pve2\"", false)).await;
    assert_eq!(c.ha_groups().await.unwrap()[0].nodes.as_deref(), Some("pve2"));
}

#[test]
fn bad_ha_settings_are_named() {
    let bad = "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 150\nnode = \"pve1\"\nha = { state = \"running\", level = 3 }\n";
    let e: Vec<String> = berth_decl::parse("site.toml", bad)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        e.iter()
            .any(|s| s.contains("ha.state: expected started, stopped, disabled or ignored")),
        "{e:?}"
    );
    assert!(e.iter().any(|s| s.contains("ha.level: unknown key")), "{e:?}");
}

#[tokio::test]
async fn a_containers_ha_is_its_own_resource() {
    let emu = emulator().await;
    let c = client(&emu);
    let ct = |absent: bool| {
        let ensure = if absent { "ensure = \"absent\"\n" } else { "" };
        format!(
            "version = 1\n[proxmox]\n[[proxmox.containers]]\nvmid = 220\nnode = \"pve1\"\nhostname = \"cache\"\n{ensure}\
             ostemplate = \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\"\n\
             rootfs = {{ storage = \"local-lvm\", size = \"4G\" }}\n\
             ha = {{ state = \"started\", nodes = [\"pve2\"] }}\n"
        )
    };
    let p = converge(&c, &ct(false)).await;
    let made: Vec<(&str, &Action)> = p.changes.iter().map(|c| (c.addr.as_str(), &c.action)).collect();
    assert_eq!(made, [("ct.220", &Action::Create), ("ha.ct:220", &Action::Create)]);
    assert_eq!(c.ha_resource("ct:220").await.unwrap().state.as_deref(), Some("started"));
    assert_eq!(c.ha_rules().await.unwrap()[0].rule.as_deref(), Some("berth-ct-220"));
    let observed = observe(&c).await.unwrap();
    let text = berth_decl::export::export(&observed, None);
    let entry = text.split("vmid = 220").nth(1).unwrap();
    assert!(
        entry.contains("ha = { nodes = [\"pve2\"], state = \"started\" }"),
        "{text}"
    );
    let round = plan(&berth_decl::parse("x.toml", &text).unwrap(), &observed, "h").unwrap();
    assert!(round.is_empty(), "{}", berth_decl::render::human(&round));
    converge(&c, &ct(true)).await;
    assert!(c.ha_resources().await.unwrap().is_empty() && c.ha_rules().await.unwrap().is_empty());
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}
