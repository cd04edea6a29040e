//! VMs from scratch against the emulator: disks allocated from `STORAGE:SIZE`, a cloud-init
//! drive, PVE's defaults (boot order, MAC, SMBIOS UUID), the pending view of a running VM; a
//! failed `qmcreate` leaves nothing behind; bad input named, nothing created.

mod common;

use std::time::Duration;

use berth_proxmox::client::propstring::{Drive, NetDevice};
use berth_proxmox::client::{GuestType, Params, PveError};
use berth_pve_emulator::{Fault, FaultRule};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn says(e: PveError) -> String {
    e.to_string()
}

fn scratch(vmid: u32) -> Params {
    Params::new()
        .int("vmid", vmid)
        .str("name", "scratch")
        .int("memory", 2048u32)
        .int("cores", 2u32)
        .str("ostype", "l26")
        .str("scsihw", "virtio-scsi-single")
        .str("scsi0", "local-lvm:8,iothread=1")
        .str("ide2", "local-lvm:cloudinit")
        .str("net0", "virtio,bridge=vmbr0")
        .str("agent", "1")
        .str("pool", "berth")
        .bool("start", true)
}

/// `p` with `key` set to `value` (replaced, not repeated).
fn with(p: Params, key: &str, value: &str) -> Params {
    p.pairs()
        .iter()
        .filter(|(k, _)| k != key)
        .fold(Params::new(), |acc, (k, v)| acc.str(k, v.clone()))
        .str(key, value)
}

#[tokio::test]
async fn a_vm_is_made_from_scratch_with_pve_defaults() {
    let emu = emulator().await;
    let c = client(&emu);
    let upid = c.create_vm("pve1", &scratch(150)).await.unwrap();
    assert!(upid.to_string().contains(":qmcreate:150:"), "{upid}");
    c.wait_task(&upid, WAIT).await.unwrap();
    let cfg = c.guest_config("pve1", GuestType::Qemu, 150).await.unwrap();
    let scsi0 = Drive::parse(&cfg.get("scsi0").unwrap());
    assert_eq!(
        (scsi0.storage(), scsi0.size_bytes()),
        (Some("local-lvm"), Some(8 << 30)),
        "{scsi0}"
    );
    assert_eq!(scsi0.0.get("iothread"), Some("1"));
    let ide2 = Drive::parse(&cfg.get("ide2").unwrap());
    assert!(ide2.is_cloudinit() && ide2.is_cdrom(), "{ide2}");
    let net0 = NetDevice::parse(&cfg.get("net0").unwrap());
    assert!(
        matches!(net0.model(), Some(("virtio", Some(mac))) if mac.len() == 17),
        "{net0}"
    );
    assert_eq!(cfg.get("boot").as_deref(), Some("order=scsi0;net0"));
    assert!(cfg.get("smbios1").is_some_and(|s| s.starts_with("uuid=")));
    assert!(cfg.lock().is_none());
    let st = c.guest_status("pve1", GuestType::Qemu, 150).await.unwrap();
    assert_eq!(st.status.as_deref(), Some("running"));
    let berth = &c.pools(Some("berth")).await.unwrap()[0];
    assert!(berth.members.iter().any(|m| m.vmid == Some(150)));

    // A running VM takes a new memory size at its next start: pending until then.
    c.update_config("pve1", GuestType::Qemu, 150, &Params::new().int("memory", 4096u32))
        .await
        .unwrap();
    let pending = c.pending("pve1", GuestType::Qemu, 150).await.unwrap();
    let mem = pending.iter().find(|p| p.key == "memory").unwrap();
    assert_eq!(
        (mem.value.as_deref(), mem.pending.as_deref()),
        (Some("2048"), Some("4096"))
    );
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn bad_or_failed_creates_leave_nothing() {
    let emu = emulator().await;
    let c = client(&emu);
    let cases = [
        (
            scratch(9000),
            "unable to create VM 9000 - VM 9000 already exists on node 'pve1'",
        ),
        (
            with(scratch(151), "scsi0", "local:8"),
            "scsi0: storage 'local' does not support vm images",
        ),
        (with(scratch(152), "scsi0", "nope:8"), "storage 'nope' does not exist"),
        (with(scratch(153), "memory", "10"), "memory"),
        (
            with(scratch(154), "pool", "ghosts"),
            "pool: pool 'ghosts' does not exist",
        ),
        (with(scratch(155), "net0", "tulip,bridge=vmbr0"), "net0"),
    ];
    for (p, expect) in cases {
        let e = says(c.create_vm("pve1", &p).await.unwrap_err());
        assert!(e.contains(expect), "{expect}: {e}");
    }
    // A worker that fails takes its half-made VM and disks with it.
    let before = c.storage_content("pve1", "local-lvm", None).await.unwrap().len();
    emu.inject(FaultRule {
        method: Some("POST".into()),
        path_contains: "/nodes/pve1/qemu".into(),
        fault: Fault::TaskFailure {
            message: "unable to create VM 156 - lvcreate failed".into(),
        },
        times: 1,
    });
    let upid = c.create_vm("pve1", &scratch(156)).await.unwrap();
    assert!(says(c.wait_task(&upid, WAIT).await.unwrap_err()).contains("lvcreate failed"));
    let guests = c.cluster_resources(Some("vm")).await.unwrap();
    for id in 151..=156 {
        assert!(guests.iter().all(|g| g.vmid != Some(id)), "{id} exists");
    }
    assert_eq!(
        c.storage_content("pve1", "local-lvm", None).await.unwrap().len(),
        before
    );
}
