//! Containers declared in a site on the PVE emulator: made from an OS template, then changed: live
//! changes (memory, host name, pool), one that waits for the restart (DNS servers, checked against
//! PVE's `pending`), a grown root volume, a move to another node; a shrink, a change of
//! `unprivileged` and a volume move of a running container refused at plan time; one VMID for a VM
//! and a container refused in the file; an exported cluster with containers plans to nothing;
//! `ensure = "absent"` deletes one after its backup.

use berth_decl::apply::{ApplyOptions, apply};
use berth_decl::observe::observe;
use berth_decl::plan::{Action, plan};
mod common;

use berth_proxmox::client::{GuestType, PveClient};
use common::{client, emulator};

const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

fn site(memory: u32, nameserver: &str, size: &str, node: &str) -> String {
    format!(
        r#"version = 1
[proxmox]
node = "pve1"

[[proxmox.containers]]
vmid = 210
node = "{node}"
hostname = "dns1"
ostemplate = "{TEMPLATE}"
pool = "berth"
nameserver = {nameserver}
cores = 1
memory = {memory}
swap = 256
unprivileged = true
rootfs = {{ storage = "local-lvm", size = "{size}" }}
nets.net0 = {{ name = "eth0", bridge = "vmbr0", ip = "dhcp" }}
ssh_public_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ci@example"]

[[proxmox.containers]]
vmid = 211
hostname = "cache"
ostemplate = "{TEMPLATE}"
memory = 256
state = "stopped"
rootfs = {{ storage = "local-lvm", size = "4G" }}
"#
    )
}

async fn settle(c: &PveClient, text: &str) -> berth_decl::Plan {
    common::settle_with(c, text, ApplyOptions::default()).await
}

fn planned(c_site: &str, observed: &berth_decl::Observed) -> berth_decl::Plan {
    plan(&berth_decl::parse("site.toml", c_site).unwrap(), observed, "h").unwrap()
}

#[tokio::test]
async fn containers_are_made_changed_moved_and_never_shrunk() {
    let emu = emulator().await;
    let c = client(&emu);
    let one = "\"1.1.1.1\"";
    let p = settle(&c, &site(512, one, "8G", "pve1")).await;
    assert!(p.changes.iter().all(|c| c.action == Action::Create), "{p:?}");
    let cfg = c.guest_config("pve1", GuestType::Lxc, 210).await.unwrap();
    assert_eq!(cfg.get("hostname").as_deref(), Some("dns1"));
    // Both keys, one per line, as PVE takes them.
    let create = emu
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/lxc") && r.params.contains(&("vmid".into(), "210".into())))
        .expect("the create request");
    let keys = create
        .params
        .iter()
        .find(|(k, _)| k == "ssh-public-keys")
        .map(|(_, v)| v.as_str());
    assert_eq!(keys.map(|k| k.lines().count()), Some(2), "{keys:?}");
    assert!(cfg.get("rootfs").unwrap().contains("size=8G"), "{cfg:?}");
    assert!(cfg.get("net0").unwrap().contains("bridge=vmbr0"), "{cfg:?}");
    let status = |vmid| {
        let c = &c;
        async move {
            c.guest_status("pve1", GuestType::Lxc, vmid)
                .await
                .unwrap()
                .status
                .unwrap_or_default()
        }
    };
    assert_eq!(status(210).await, "running");
    assert_eq!(status(211).await, "stopped");

    // More memory and another host name are live; other DNS servers wait for the restart (a
    // list, compared as PVE stores it: space-separated); in one update, and PVE agrees.
    let two = "[\"1.1.1.1\", \"9.9.9.9\"]";
    let renamed = site(1024, two, "8G", "pve1").replace("hostname = \"dns1\"", "hostname = \"dns-1\"");
    let p = planned(&renamed, &observe(&c).await.unwrap());
    assert_eq!(p.changes.len(), 1, "{p:?}");
    assert_eq!(
        p.changes[0].action,
        Action::UpdateRestart {
            restart: vec!["nameserver".into()]
        }
    );
    let done = apply(&c, &p, ApplyOptions::default()).await.unwrap();
    assert!(
        done.steps
            .iter()
            .any(|s| s == "ct.210: waits for a restart: nameserver"),
        "{:?}",
        done.steps
    );
    // The checkpoint before a change that waits for a restart: a snapshot of the container.
    assert!(
        c.snapshots("pve1", GuestType::Lxc, 210)
            .await
            .unwrap()
            .iter()
            .any(|s| s.name.starts_with("berth-")),
        "a checkpoint snapshot"
    );
    let site = |memory, size: &str, node: &str| {
        site(memory, two, size, node).replace("hostname = \"dns1\"", "hostname = \"dns-1\"")
    };
    assert!(planned(&site(1024, "8G", "pve1"), &observe(&c).await.unwrap()).is_empty());
    // Into a pool: a live change (a pool is no option of creation only).
    let pooled = site(1024, "8G", "pve1").replace("hostname = \"cache\"", "hostname = \"cache\"\npool = \"berth\"");
    let p = settle(&c, &pooled).await;
    assert_eq!(p.changes[0].action, Action::Update, "{p:?}");
    // A bigger root volume grows; a smaller one is refused before anything runs.
    let p = settle(&c, &site(1024, "12G", "pve1")).await;
    assert_eq!(p.changes[0].action, Action::Update);
    let cfg = c.guest_config("pve1", GuestType::Lxc, 210).await.unwrap();
    assert!(cfg.get("rootfs").unwrap().contains("size=12G"), "{cfg:?}");
    let p = planned(&site(1024, "4G", "pve1"), &observe(&c).await.unwrap());
    assert!(
        matches!(&p.changes[0].action, Action::Impossible { reason } if reason.contains("rootfs would shrink from 12G to 4G")),
        "{p:?}"
    );
    // Unprivileged is set at creation: never changed by destroying the container.
    let privileged = site(1024, "12G", "pve1").replace("unprivileged = true", "unprivileged = false");
    let p = planned(&privileged, &observe(&c).await.unwrap());
    assert!(
        matches!(&p.changes[0].action, Action::Impossible { reason } if reason.starts_with("unprivileged is set when a container is created")),
        "{p:?}"
    );
    // A running container's volume does not move: it is refused before anything runs.
    let elsewhere = site(1024, "12G", "pve1").replace(
        "storage = \"local-lvm\", size = \"12G\"",
        "storage = \"local\", size = \"12G\"",
    );
    let p = planned(&elsewhere, &observe(&c).await.unwrap());
    assert!(
        matches!(&p.changes[0].action, Action::Impossible { reason } if reason.contains("rootfs moves to another storage only while the container is stopped")),
        "{p:?}"
    );
    // Another node: a move (a running container restarts there).
    let p = settle(&c, &site(1024, "12G", "pve2")).await;
    assert_eq!(p.changes[0].action, Action::Move { to: "pve2".into() });
    assert_eq!(
        c.guest_status("pve2", GuestType::Lxc, 210)
            .await
            .unwrap()
            .status
            .as_deref(),
        Some("running")
    );

    // The cluster written out plans to nothing, containers included.
    let observed = observe(&c).await.unwrap();
    let text = berth_decl::export::export(&observed, None);
    assert!(text.contains("[[proxmox.containers]]\nvmid = 210"), "{text}");
    // A privileged container says so: rebuilt from the file it must not become unprivileged.
    let ct211 = text.split("vmid = 211").nth(1).unwrap().split("[[").next().unwrap();
    assert!(ct211.contains("unprivileged = false"), "{ct211}");
    let again = plan(&berth_decl::parse("export.toml", &text).unwrap(), &observed, "h").unwrap();
    assert!(again.is_empty(), "{}\n{text}", berth_decl::render::human(&again));

    // Gone on request, after a backup.
    let gone = format!(
        "{}\n[[proxmox.containers]]\nvmid = 211\nensure = \"absent\"\n",
        site(1024, "12G", "pve2")
            .split("\n[[proxmox.containers]]\nvmid = 211")
            .next()
            .unwrap()
    );
    let d = berth_decl::parse("site.toml", &gone).unwrap();
    let p = plan(&d, &observe(&c).await.unwrap(), "h").unwrap();
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].action, Action::Delete);
    let done = apply(&c, &p, ApplyOptions::default()).await.unwrap();
    assert!(
        done.steps.iter().any(|s| s.starts_with("ct.211: backed up to")),
        "{:?}",
        done.steps
    );
    assert!(c.guest_config("pve1", GuestType::Lxc, 211).await.is_err());
    // The rollback restores it (`pct restore`): its rootfs made anew.
    let t = std::time::Duration::from_secs(30);
    let steps = berth_decl::checkpoint::rollback(&c, &done.checkpoints, t)
        .await
        .unwrap();
    assert!(steps[0].starts_with("ct.211: restored from "), "{steps:?}");
    let cfg = c.guest_config("pve1", GuestType::Lxc, 211).await.unwrap();
    let rootfs = cfg.get("rootfs").unwrap_or_default();
    let before = p.changes[0].before.as_ref().unwrap();
    let storage = before.get("rootfs.storage").unwrap();
    assert!(
        rootfs.starts_with(&format!("{storage}:")) && rootfs.contains("-211-disk-"),
        "on the storage it was on ({storage}), not PVE's default `local`: {rootfs}"
    );
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn bad_containers_are_refused_naming_the_line_and_key() {
    let emu = emulator().await;
    let c = client(&emu);
    let bad = "version = 1\n[proxmox]\nnode = \"pve1\"\n\
        [[proxmox.containers]]\nvmid = 300\nostemplate = \"x\"\nrootfs = { storage = \"local-lvm\", size = \"1.5G\" }\nnets.eth0 = { bridge = \"vmbr0\" }\nwings = 2\n\
        [[proxmox.vms]]\nvmid = 300\nname = \"clash\"\n";
    let errors = berth_decl::parse("site.toml", bad).unwrap_err();
    let shown = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    for want in [
        "site.toml:7: proxmox.containers[0].rootfs.size: '1.5G' is not a size in whole GiB",
        "site.toml:8: proxmox.containers[0].nets.eth0: not a slot (expected netN)",
        "site.toml:9: proxmox.containers[0].wings: not an option of a container",
        "VMID 300 is declared twice (first on line 4)",
    ] {
        assert!(shown.contains(want), "{want}\n{shown}");
    }
    // A container without its template, and one whose VMID is a VM on the cluster, cannot be made.
    settle(
        &c,
        "version = 1\n[proxmox]\nnode = \"pve1\"\n[[proxmox.vms]]\nvmid = 150\nmemory = 512\nstate = \"stopped\"\n",
    )
    .await;
    let observed = observe(&c).await.unwrap();
    let p = planned(
        &format!(
            "version = 1\n[proxmox]\nnode = \"pve1\"\n[[proxmox.containers]]\nvmid = 301\nhostname = \"x\"\n\
             [[proxmox.containers]]\nvmid = 150\nostemplate = \"{TEMPLATE}\"\n"
        ),
        &observed,
    );
    let reasons: Vec<String> = p
        .changes
        .iter()
        .map(|c| match &c.action {
            Action::Impossible { reason } => format!("{}: {reason}", c.addr),
            other => format!("{}: {other:?}", c.addr),
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("ct.301: a container is made from an OS template")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "ct.150: VMID 150 is a VM on the cluster"),
        "{reasons:?}"
    );
}
