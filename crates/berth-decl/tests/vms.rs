//! VMs declared in a site on the PVE emulator: made from scratch and cloned from a template,
//! then changed: a live change, a change that waits for the restart (checked against PVE's
//! `pending`), a grown disk, a move to another node, a shrink refused at plan time; an exported
//! cluster with VMs plans to nothing.

use berth_decl::apply::{ApplyOptions, apply};
use berth_decl::observe::observe;
use berth_decl::plan::{Action, plan};
mod common;

use berth_proxmox::client::{GuestType, PveClient};
use common::{client, emulator};

fn site(web_cores: u32, web_disk: &str, db_node: &str, web_name: &str) -> String {
    format!(
        r#"version = 1
[proxmox]
node = "pve1"

[[proxmox.vms]]
vmid = 150
name = "{web_name}"
cores = {web_cores}
memory = 2048
ostype = "l26"
pool = "berth"
disks.scsi0 = {{ storage = "local-lvm", size = "{web_disk}" }}
nets.net0 = {{ model = "virtio", bridge = "vmbr0" }}

[[proxmox.vms]]
vmid = 151
node = "{db_node}"
name = "db"
clone = 9100
memory = 4096
state = "stopped"
"#
    )
}

async fn settle(c: &PveClient, text: &str) -> berth_decl::Plan {
    common::settle_with(c, text, ApplyOptions::default()).await
}

#[tokio::test]
async fn vms_are_made_changed_moved_and_never_shrunk() {
    let emu = emulator().await;
    let c = client(&emu);
    // Made: 150 from scratch (running), 151 cloned from the shared template 9100 (stopped).
    let p = settle(&c, &site(2, "8G", "pve2", "web")).await;
    assert!(p.changes.iter().all(|c| c.action == Action::Create), "{p:?}");
    let web = c.guest_config("pve1", GuestType::Qemu, 150).await.unwrap();
    assert!(web.get("scsi0").unwrap().contains("size=8G"), "{web:?}");
    assert_eq!(
        c.guest_status("pve1", GuestType::Qemu, 150)
            .await
            .unwrap()
            .status
            .as_deref(),
        Some("running")
    );
    assert_eq!(
        c.guest_config("pve2", GuestType::Qemu, 151)
            .await
            .unwrap()
            .get("memory")
            .as_deref(),
        Some("4096")
    );

    // A renamed VM changes live; more cores wait for the restart, and PVE agrees.
    let d = berth_decl::parse("site.toml", &site(4, "8G", "pve2", "web-1")).unwrap();
    let p = plan(&d, &observe(&c).await.unwrap(), "h").unwrap();
    assert_eq!(p.changes.len(), 1);
    assert_eq!(
        p.changes[0].action,
        Action::UpdateRestart {
            restart: vec!["cores".into()]
        }
    );
    assert!(
        berth_decl::render::human(&p)
            .contains("~! vm.150  update; takes effect at the next restart (cores not hotpluggable)")
    );
    let done = apply(&c, &p, ApplyOptions::default()).await.unwrap();
    assert!(
        done.steps.iter().any(|s| s == "vm.150: waits for a restart: cores"),
        "{:?}",
        done.steps
    );
    // A checkpoint was taken first: a snapshot named after the apply.
    let snap = berth_decl::checkpoint::snapshot_name(&done.apply_id);
    assert!(
        matches!(&done.checkpoints[..], [berth_decl::checkpoint::Checkpoint::Snapshot { name, running: true, .. }] if *name == snap)
    );
    assert!(
        c.snapshots("pve1", GuestType::Qemu, 150)
            .await
            .unwrap()
            .iter()
            .any(|s| s.name == snap)
    );
    let pending = c.pending("pve1", GuestType::Qemu, 150).await.unwrap();
    assert!(
        pending
            .iter()
            .any(|e| e.key == "cores" && e.pending.as_deref() == Some("4")),
        "{pending:?}"
    );
    assert!(
        pending
            .iter()
            .any(|e| e.key == "name" && e.value.as_deref() == Some("web-1") && e.pending.is_none())
    );

    // A bigger disk grows it; the db VM moves to pve1.
    let p = settle(&c, &site(4, "12G", "pve1", "web-1")).await;
    let actions: Vec<(&str, &Action)> = p.changes.iter().map(|c| (c.addr.as_str(), &c.action)).collect();
    assert_eq!(actions[1], ("vm.151", &Action::Move { to: "pve1".into() }));
    assert!(
        c.guest_config("pve1", GuestType::Qemu, 150)
            .await
            .unwrap()
            .get("scsi0")
            .unwrap()
            .contains("size=12G")
    );
    assert!(c.guest_config("pve1", GuestType::Qemu, 151).await.is_ok());

    // A smaller disk is refused at plan time, naming the disk.
    let d = berth_decl::parse("site.toml", &site(4, "4G", "pve1", "web-1")).unwrap();
    let p = plan(&d, &observe(&c).await.unwrap(), "h").unwrap();
    assert_eq!(
        p.changes[0].action,
        Action::Impossible {
            reason: "scsi0 would shrink from 12G to 4G: PVE grows disks only".into()
        }
    );
    assert!(apply(&c, &p, ApplyOptions::default()).await.is_err());

    // Rolled back to that checkpoint: the old name and core count, nothing pending, running.
    let back = berth_decl::checkpoint::rollback(&c, &done.checkpoints, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(back, [format!("vm.150: rolled back to {snap}")]);
    let cfg = c.guest_config("pve1", GuestType::Qemu, 150).await.unwrap();
    assert_eq!(
        (cfg.get("name").as_deref(), cfg.get("cores").as_deref()),
        (Some("web"), Some("2"))
    );
    assert!(
        c.pending("pve1", GuestType::Qemu, 150)
            .await
            .unwrap()
            .iter()
            .all(|e| e.pending.is_none())
    );
    assert_eq!(
        c.guest_status("pve1", GuestType::Qemu, 150)
            .await
            .unwrap()
            .status
            .as_deref(),
        Some("running")
    );
    // Applying the file again brings it forward again (name, cores, the disk grown since).
    let p = settle(&c, &site(4, "12G", "pve1", "web-1")).await;
    assert_eq!(p.changes.len(), 1);

    // The whole cluster, VMs included, written out plans to nothing.
    let observed = observe(&c).await.unwrap();
    let text = berth_decl::export::export(&observed, None);
    let again = plan(
        &berth_decl::parse("x.toml", &text).unwrap_or_else(|e| panic!("{e:?}\n{text}")),
        &observed,
        "h",
    )
    .unwrap();
    assert!(again.is_empty(), "{}\n{text}", berth_decl::render::human(&again));
    assert!(
        text.contains("disks.scsi0 = { size = \"12G\", storage = \"local-lvm\""),
        "{text}"
    );
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn a_vm_is_backed_up_before_it_is_deleted() {
    let emu = emulator().await;
    let c = client(&emu);
    settle(&c, &site(2, "8G", "pve2", "web")).await;
    let gone = "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 150\nensure = \"absent\"\n";
    let d = berth_decl::parse("site.toml", gone).unwrap();
    let p = plan(&d, &observe(&c).await.unwrap(), "h").unwrap();
    assert_eq!(p.changes[0].action, Action::Delete);
    let done = apply(&c, &p, ApplyOptions::default()).await.unwrap();
    assert!(
        done.steps
            .iter()
            .any(|s| s.starts_with("vm.150: backed up to local:backup/vzdump-qemu-150-")),
        "{:?}",
        done.steps
    );
    let backups = c.storage_content("pve1", "local", Some("backup")).await.unwrap();
    assert!(
        backups.iter().any(|v| v.volid.contains("vzdump-qemu-150-")),
        "{backups:?}"
    );
    assert!(c.guest_config("pve1", GuestType::Qemu, 150).await.is_err(), "deleted");
    assert!(plan(&d, &observe(&c).await.unwrap(), "h").unwrap().is_empty());

    // The rollback restores it from that backup: its config, its disk made anew.
    let t = std::time::Duration::from_secs(30);
    let steps = berth_decl::checkpoint::rollback(&c, &done.checkpoints, t)
        .await
        .unwrap();
    assert!(
        steps.len() == 1 && steps[0].starts_with("vm.150: restored from local:backup/vzdump-qemu-150-"),
        "{steps:?}"
    );
    let cfg = c.guest_config("pve1", GuestType::Qemu, 150).await.unwrap();
    assert_eq!(
        (cfg.get("cores").as_deref(), cfg.get("name").as_deref()),
        (Some("2"), Some("web"))
    );
    let disk = cfg.get("scsi0").unwrap_or_default();
    let volid = disk.split(',').next().unwrap_or_default();
    let images = c.storage_content("pve1", "local-lvm", Some("images")).await.unwrap();
    assert!(
        images.iter().any(|v| v.volid == volid && v.vmid == Some(150)),
        "{disk}: {images:?}"
    );
    // Rolled back once more, it never overwrites the guest now at that VMID.
    let again = berth_decl::checkpoint::rollback(&c, &done.checkpoints, t)
        .await
        .unwrap();
    assert!(
        again[0].starts_with("vm.150: not restored: VMID 150 is taken again (on pve1)"),
        "{again:?}"
    );
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

/// A VM the file does not say to stop is checked to run; a MAC written in lower case matches.
#[tokio::test]
async fn state_defaults_to_running_and_macs_match_in_any_case() {
    let emu = emulator().await;
    let c = client(&emu);
    let text = "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 180\nnode = \"pve1\"\nmemory = 512\n\
        disks.scsi0 = { storage = \"local-lvm\", size = \"4G\" }\n\
        nets.net0 = { model = \"virtio\", bridge = \"vmbr0\", macaddr = \"bc:24:11:0a:0b:0c\" }\n";
    settle(&c, text).await;
    assert!(
        c.guest_config("pve1", GuestType::Qemu, 180)
            .await
            .unwrap()
            .get("net0")
            .unwrap()
            .starts_with("virtio=BC:24:11:0A:0B:0C")
    );
    // Stopped behind Berth's back: the file (no state) says it runs.
    let upid = c
        .power(
            "pve1",
            GuestType::Qemu,
            180,
            berth_proxmox::client::PowerAction::Stop,
            &berth_proxmox::client::Params::new(),
        )
        .await
        .unwrap();
    c.wait_task(&upid, std::time::Duration::from_secs(10)).await.unwrap();
    let d = berth_decl::parse("site.toml", text).unwrap();
    let p = plan(&d, &observe(&c).await.unwrap(), "h").unwrap();
    assert_eq!(p.changes.len(), 1, "{}", berth_decl::render::human(&p));
    assert_eq!(p.changes[0].fields[0].field, "state");
    let d = berth_decl::parse("x.toml", &text.replace("size = \"4G\"", "size = \"100M\"")).unwrap_err();
    assert!(d[0].to_string().contains("is not a size in whole GiB"), "{}", d[0]);
}

#[tokio::test]
async fn a_vm_naming_what_does_not_exist_fails_the_plan() {
    let emu = emulator().await;
    let c = client(&emu);
    let text = "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 160\nnode = \"pve1\"\n\
        disks.scsi0 = { storage = \"fast-nvme\", size = \"8G\" }\nnets.net0 = { bridge = \"vmbr9\" }\npool = \"ghosts\"\n";
    let errors = plan(
        &berth_decl::parse("site.toml", text).unwrap(),
        &observe(&c).await.unwrap(),
        "h",
    )
    .unwrap_err();
    let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for want in [
        "3: vm.160.scsi0.storage: storage fast-nvme does not exist",
        "3: vm.160.net0.bridge: bridge vmbr9 of pve1 does not exist",
        "3: vm.160.pool: pool ghosts does not exist",
    ] {
        assert!(shown.iter().any(|s| s.starts_with(want)), "{want}\n{shown:#?}");
    }
    let bad = "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 7\nnode = \"pve1\"\n";
    let e = berth_decl::parse("site.toml", bad).unwrap_err();
    assert!(
        e[0].to_string().contains("proxmox.vms[0].vmid: missing or not a VMID"),
        "{}",
        e[0]
    );
    let shrink = "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 161\nnode = \"pve1\"\ndisks.scsi0 = { storage = \"local-lvm\", size = \"big\" }\ncpu_mitigations = \"off\"\n";
    let e: Vec<String> = berth_decl::parse("site.toml", shrink)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        e.iter()
            .any(|s| s.contains("disks.scsi0.size: 'big' is not a size in whole GiB")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|s| s.contains("cpu_mitigations: not a PVE option")),
        "{e:?}"
    );
}

/// The freshness check compares the fields a change touches; a guest whose config changes after
/// it (here while the network reloads, which comes first) is refused before anything is written.
#[tokio::test]
async fn a_guest_changed_after_the_freshness_check_is_refused() {
    let emu = emulator().await;
    let c = client(&emu);
    let vm = |memory: u32| {
        format!(
            "version = 1\n[proxmox]\nnode = \"pve1\"\n[[proxmox.vms]]\nvmid = 150\nmemory = {memory}\nstate = \"stopped\"\n"
        )
    };
    settle(&c, &vm(512)).await;
    let text = format!(
        "{}[[proxmox.network]]\niface = \"vmbr9\"\ntype = \"bridge\"\n",
        vm(1024)
    );
    let d = berth_decl::parse("site.toml", &text).unwrap();
    let p = plan(&d, &observe(&c).await.unwrap(), "h").unwrap();
    // The reload, after the check and before the VM, takes 3 s.
    let slow = berth_pve_emulator::Fault::Delay(std::time::Duration::from_secs(3));
    common::fault_once(&emu, "PUT", "/nodes/pve1/network", slow);
    // The interface is staged only after the check passed: then someone edits the VM.
    let staged = || {
        emu.requests()
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with("/nodes/pve1/network"))
    };
    let meanwhile = async {
        while !staged() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        c.update_config(
            "pve1",
            GuestType::Qemu,
            150,
            &berth_proxmox::client::Params::new().str("description", "by hand"),
        )
        .await
        .unwrap();
    };
    let (applied, ()) = tokio::join!(apply(&c, &p, ApplyOptions::default()), meanwhile);
    let e = applied.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("stale plan: vm.150 changed since it was planned (its config changed while this apply ran"),
        "{e}"
    );
    let cfg = c.guest_config("pve1", GuestType::Qemu, 150).await.unwrap();
    assert_eq!(cfg.get("memory").as_deref(), Some("512"));
}

/// A machine of Berth's control plane (a customer's instance, marked by the agent) is its
/// orders' to change: a site file naming it plans an impossible change, an export leaves it out
/// (and so still plans to nothing), and it is never adopted.
#[tokio::test]
async fn a_machine_of_the_control_plane_is_never_touched() {
    let emu = emulator().await;
    let c = client(&emu);
    emu.add_foreign_vm("pve1", 4000, "customer-web");
    c.update_config(
        "pve1",
        GuestType::Qemu,
        4000,
        &berth_proxmox::client::Params::new().str("tags", "berth;berth-a1"),
    )
    .await
    .unwrap();
    let observed = observe(&c).await.unwrap();
    let exported = berth_decl::export::export(&observed, None);
    assert!(
        exported.contains("# Left out: 1 machine(s) of Berth's control plane (their orders manage them): vm.4000"),
        "{exported}"
    );
    assert!(!exported.contains("vmid = 4000"), "{exported}");
    let d = berth_decl::parse("site.toml", &exported).unwrap();
    assert!(plan(&d, &observed, "h").unwrap().is_empty());

    // Named in a file, it and its HA resource are impossible changes; never adopted.
    let named = "version = 1\n[proxmox]\nnode = \"pve1\"\n[[proxmox.vms]]\nvmid = 4000\nmemory = 8192\nha = { state = \"started\" }\n";
    let d = berth_decl::parse("site.toml", named).unwrap();
    let p = plan(&d, &observed, "h").unwrap();
    let reasons: Vec<(&str, &str)> = p
        .changes
        .iter()
        .map(|c| match &c.action {
            Action::Impossible { reason } => (c.addr.as_str(), reason.as_str()),
            other => panic!("{}: {other:?}", c.addr),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "vm.4000",
                "vm.4000 belongs to Berth's control plane (instance a1): its orders change it, never a site file"
            ),
            (
                "ha.vm:4000",
                "ha.vm:4000 belongs to Berth's control plane (instance a1): its orders change it, never a site file"
            )
        ]
    );
    assert!(berth_decl::ledger::Ledger::adopted(None, &d, &observed).is_empty());
}

/// One checkpoint that cannot be put back does not stop the others: the snapshot is rolled back,
/// the failed restore is said, and the rollback ends incomplete.
#[tokio::test]
async fn a_rollback_puts_back_what_it_can_and_says_what_failed() {
    let emu = emulator().await;
    let c = client(&emu);
    settle(&c, &site(2, "8G", "pve2", "web")).await;
    let web_only = site(4, "8G", "pve2", "web");
    let web_only = web_only.split("\n[[proxmox.vms]]\nvmid = 151").next().unwrap();
    let text = format!("{web_only}\n[[proxmox.vms]]\nvmid = 151\nensure = \"absent\"\n");
    let d = berth_decl::parse("site.toml", &text).unwrap();
    let p = plan(&d, &observe(&c).await.unwrap(), "h").unwrap();
    let done = apply(&c, &p, ApplyOptions::default()).await.unwrap();
    assert_eq!(done.checkpoints.len(), 2, "{:?}", done.checkpoints);
    // vm.151's restore (on pve2) fails; vm.150's snapshot (on pve1) is rolled back all the same.
    common::fault_once(&emu, "POST", "/nodes/pve2/qemu", common::http_500());
    let t = std::time::Duration::from_secs(30);
    let e = berth_decl::checkpoint::rollback(&c, &done.checkpoints, t)
        .await
        .unwrap_err();
    let berth_decl::apply::ApplyError::RollbackIncomplete { failed, lines } = &e else {
        panic!("{e}");
    };
    assert_eq!(*failed, 1, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("vm.150: rolled back to berth-")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("FAILED: vm.151: restore failed")),
        "{lines:?}"
    );
    let cfg = c.guest_config("pve1", GuestType::Qemu, 150).await.unwrap();
    assert_eq!(cfg.get("cores").as_deref(), Some("2"));
    // Tried once more, the restore goes through.
    let again = berth_decl::checkpoint::rollback(&c, &done.checkpoints, t)
        .await
        .unwrap();
    assert!(
        again.iter().any(|l| l.starts_with("vm.151: restored from")),
        "{again:?}"
    );
}
