//! The typed PVE client against the emulator, one test per area: every call the provider
//! makes, with the emulator's real encodings (form bodies, query strings, string numbers).

mod common;

use std::time::Duration;

use berth_proxmox::client::{GuestType, Method, Params, PowerAction, PveError, Upid, pve_urlencode};
use common::*;

const Q: GuestType = GuestType::Qemu;

#[tokio::test]
async fn inventory_calls() {
    let emu = emulator().await;
    let c = client(&emu);
    assert!(c.version().await.unwrap().version.is_some());
    let res = c.cluster_resources(Some("vm")).await.unwrap();
    let t = res.iter().find(|r| r.vmid == Some(9000)).expect("template 9000");
    assert!(t.template && t.kind.as_deref() == Some("qemu") && t.node.as_deref() == Some("pve1"));
    assert!(t.maxdisk.is_some_and(|d| d >= 2 << 30));

    let nodes = c.nodes().await.unwrap();
    let pve1 = nodes.iter().find(|n| n.node == "pve1").unwrap();
    assert_eq!(pve1.status.as_deref(), Some("online"));
    assert_eq!(pve1.maxcpu, Some(16.0));
    assert!(pve1.ssl_fingerprint.is_some());
    let st = c.node_status("pve1").await.unwrap();
    assert_eq!(st.cpuinfo.cpus, Some(16));
    assert_eq!(st.memory.total, Some(64 << 30));

    let storages = c.storages("pve1", None).await.unwrap();
    let lvm = storages
        .iter()
        .find(|s| s.storage.as_deref() == Some("local-lvm"))
        .unwrap();
    assert!(lvm.has_content("images") && !lvm.shared);
    assert!(
        storages
            .iter()
            .any(|s| s.storage.as_deref() == Some("shared") && s.shared)
    );
    let tmpl = c.storages("pve1", Some("vztmpl")).await.unwrap();
    assert!(tmpl.iter().all(|s| s.has_content("vztmpl")), "{tmpl:?}");
    assert!(c.storage_status("pve1", "local-lvm").await.unwrap().total.is_some());
    let vols = c.storage_content("pve1", "local", Some("vztmpl")).await.unwrap();
    assert!(vols.iter().any(|v| v.volid == CT_TEMPLATE), "{vols:?}");

    assert!(c.pools(None).await.unwrap().iter().any(|p| p.poolid == "berth"));
    let perms = c.permissions(Some("/vms")).await.unwrap();
    assert!(perms.values().any(|m| m.contains_key("VM.Allocate")), "{perms:?}");
}

#[tokio::test]
async fn nextid_is_parsed_from_a_string_and_checks_a_vmid() {
    let emu = emulator().await;
    let c = client(&emu);
    let n = c.next_id().await.unwrap();
    assert!(n >= 100);
    assert!(c.vmid_is_free(4711).await.unwrap());
    assert!(!c.vmid_is_free(9000).await.unwrap(), "a template holds 9000");
    let raw = c
        .get::<serde_json::Value>("/cluster/nextid", &Params::new().int("vmid", 9000u32))
        .await
        .unwrap_err();
    assert_eq!(raw.status(), Some(400));
    assert!(raw.is_already_exists(), "{raw}");
}

#[tokio::test]
async fn clone_configure_resize_power_delete() {
    let emu = emulator().await;
    let c = client(&emu);
    let params = Params::new()
        .int("newid", 4711u32)
        .str("name", "c1")
        .bool("full", true)
        .str("storage", "local-lvm");
    let upid = c.clone_vm("pve1", 9000, &params).await.unwrap();
    assert_eq!((upid.node(), upid.task_type(), upid.id()), ("pve1", "qmclone", "9000"));
    assert!(upid.user().contains('!'), "token-initiated: {}", upid.user());
    let during = c.guest_config("pve1", Q, 4711).await.unwrap();
    assert_eq!(during.lock().as_deref(), Some("clone"));
    let locked = c
        .update_config("pve1", Q, 4711, &Params::new().int("cores", 2u32))
        .await
        .unwrap_err();
    assert_eq!(locked.locked_by().as_deref(), Some("clone"), "{locked}");
    c.wait_task(&upid, Duration::from_secs(10)).await.unwrap();
    assert_eq!(c.guest_config("pve1", Q, 4711).await.unwrap().lock(), None);

    let keys = format!("{KEY}\n{KEY}");
    let p = Params::new()
        .int("cores", 2u32)
        .int("memory", 2048u32)
        .str("sshkeys", pve_urlencode(&keys))
        .str("ipconfig0", "ip=dhcp");
    c.update_config("pve1", Q, 4711, &p).await.unwrap();
    let cfg = c.guest_config("pve1", Q, 4711).await.unwrap();
    assert_eq!(cfg.get_u64("memory"), Some(2048));
    assert!(
        cfg.get("sshkeys").unwrap().contains("%0Assh-ed25519%20"),
        "{:?}",
        cfg.get("sshkeys")
    );
    // The emulator's record is decoded once: the value PVE sees is still percent-encoded.
    let put = emu.requests().into_iter().rev().find(|r| r.method == "PUT").unwrap();
    assert!(
        put.params
            .iter()
            .any(|(k, v)| k == "sshkeys" && v.starts_with("ssh-ed25519%20")),
        "{:?}",
        put.params
    );

    if let Some(u) = c.resize_disk("pve1", Q, 4711, "scsi0", "12G").await.unwrap() {
        c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
    }
    assert!(
        c.guest_config("pve1", Q, 4711)
            .await
            .unwrap()
            .get("scsi0")
            .unwrap()
            .contains("size=12G")
    );

    for (action, want) in [
        (PowerAction::Start, "running"),
        (PowerAction::Reboot, "running"),
        (PowerAction::Stop, "stopped"),
    ] {
        let u = c.power("pve1", Q, 4711, action, &Params::new()).await.unwrap();
        c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            c.guest_status("pve1", Q, 4711).await.unwrap().status.as_deref(),
            Some(want),
            "{action:?}"
        );
    }
    let u = c
        .power("pve1", Q, 4711, PowerAction::Start, &Params::new())
        .await
        .unwrap();
    c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
    let p = Params::new().int("timeout", 5u32).bool("forceStop", true);
    let u = c.power("pve1", Q, 4711, PowerAction::Shutdown, &p).await.unwrap();
    c.wait_task(&u, Duration::from_secs(10)).await.unwrap();

    let u = c.delete_guest("pve1", Q, 4711).await.unwrap();
    c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
    let gone = c.guest_status("pve1", Q, 4711).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    let del = emu.requests().into_iter().find(|r| r.method == "DELETE").unwrap();
    assert!(
        del.params.contains(&("purge".into(), "1".into())),
        "DELETE params go in the query: {:?}",
        del.params
    );
}

#[tokio::test]
async fn guest_agent_interfaces_appear_after_start() {
    let emu = emulator().await;
    let c = client(&emu);
    let u = c
        .clone_vm("pve1", 9000, &Params::new().int("newid", 4712u32))
        .await
        .unwrap();
    c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
    let stopped = c.agent_interfaces("pve1", 4712).await.unwrap_err();
    assert!(stopped.is_agent_not_ready(), "{stopped}");
    let u = c
        .power("pve1", Q, 4712, PowerAction::Start, &Params::new())
        .await
        .unwrap();
    c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
    let mut found = None;
    for _ in 0..200 {
        match c.agent_interfaces("pve1", 4712).await {
            Ok(list) if list.iter().any(|i| i.name.as_deref() == Some("eth0")) => {
                found = Some(list);
                break;
            }
            Ok(_) => {}
            Err(e) => assert!(e.is_agent_not_ready(), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let list = found.expect("the agent answers");
    assert!(list.iter().any(|i| i.name.as_deref() == Some("lo")));
}

#[tokio::test]
async fn container_create_and_interfaces() {
    let emu = emulator().await;
    let c = client(&emu);
    let p = Params::new()
        .int("vmid", 4800u32)
        .str("ostemplate", CT_TEMPLATE)
        .str("hostname", "ct1")
        .str("ssh-public-keys", KEY)
        .str("net0", "name=eth0,bridge=vmbr0,ip=10.9.0.5/24,gw=10.9.0.1")
        .str("rootfs", "local-lvm:4")
        .bool("unprivileged", true);
    let u = c.create_container("pve1", &p).await.unwrap();
    assert_eq!(u.task_type(), "vzcreate");
    c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
    let cfg = c.guest_config("pve1", GuestType::Lxc, 4800).await.unwrap();
    assert!(cfg.get("rootfs").unwrap().contains("size=4G"), "{cfg:?}");
    let u = c
        .power("pve1", GuestType::Lxc, 4800, PowerAction::Start, &Params::new())
        .await
        .unwrap();
    c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
    let ifaces = c.lxc_interfaces("pve1", 4800).await.unwrap();
    assert!(
        ifaces.iter().any(|i| i.inet.as_deref() == Some("10.9.0.5/24")
            || i.ip_addresses
                .iter()
                .flatten()
                .any(|a| a.ip_address.as_deref() == Some("10.9.0.5"))),
        "{ifaces:?}"
    );
    if let Some(u) = c
        .resize_disk("pve1", GuestType::Lxc, 4800, "rootfs", "6G")
        .await
        .unwrap()
    {
        c.wait_task(&u, Duration::from_secs(10)).await.unwrap();
    }
    let exists = c.create_container("pve1", &p).await.unwrap_err();
    assert!(exists.is_already_exists(), "{exists}");
}

#[tokio::test]
async fn tasks_logs_and_stopping() {
    let emu = emulator().await;
    emu.set_timings(berth_pve_emulator::Timings {
        clone: Duration::from_secs(30),
        ..berth_pve_emulator::Timings::fast()
    });
    let c = client(&emu);
    let u = c
        .clone_vm("pve1", 9000, &Params::new().int("newid", 4713u32))
        .await
        .unwrap();
    assert_eq!(c.task_status(&u).await.unwrap().status.as_deref(), Some("running"));
    let e = c.wait_task(&u, Duration::from_millis(100)).await.unwrap_err();
    assert!(matches!(e, PveError::Timeout { .. }), "{e}");
    c.stop_task(&u).await.unwrap();
    let done = c.wait_task(&u, Duration::from_secs(10)).await;
    assert!(
        matches!(done, Err(PveError::TaskFailed { .. })),
        "a stopped task ends in error: {done:?}"
    );
    let (lines, total) = c.task_log(&u, 0, 50).await.unwrap();
    assert!(
        !lines.is_empty() && total.is_some_and(|t| t >= lines.len() as u64),
        "{lines:?} {total:?}"
    );
    let tail = c.task_log_tail(&u, 2).await.unwrap();
    assert!(tail.len() <= 2 && tail.last() == lines.last(), "{tail:?} vs {lines:?}");
    let bad = Upid::parse("UPID:pve1:00000001:00000002:00000003:qmstart:100:root@pam:").unwrap();
    assert!(c.task_status(&bad).await.is_err());
}

#[tokio::test]
async fn raw_requests_and_errors() {
    let emu = emulator().await;
    let c = client(&emu);
    let env = c.request(Method::Get, "/version", &Params::new(), true).await.unwrap();
    assert!(env.data.is_object());
    let e = c
        .request(Method::Get, "/no/such/path", &Params::new(), true)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(501), "{e}");
    if emu.schema_loaded() {
        schema_errors_keep_the_errors_map(&c).await;
    } else {
        eprintln!("skipping the parameter-validation part: the PVE schema is absent");
    }

    let mut bad = common::config(&emu);
    bad.api_token_secret = Some(berth_core::Secret::new("wrong"));
    let p = berth_proxmox::ProxmoxProvider::new(bad).unwrap();
    let e = p.client().version().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(!e.to_string().contains("wrong"), "the secret never shows: {e}");
    assert_eq!(
        berth_core::ProviderError::from(e).code(),
        berth_core::ErrorCode::Unauthorized
    );
}

/// The emulator answers schema violations like PVE: 400 with an `errors` map naming the field.
async fn schema_errors_keep_the_errors_map(c: &berth_proxmox::PveClient) {
    let e = c
        .update_config("pve1", Q, 9000, &Params::new().str("bogus", "1"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("bogus"), "the errors map is kept: {e}");
    let e = c
        .update_config("pve1", Q, 9000, &Params::new().str("cores", "abc"))
        .await
        .unwrap_err();
    match berth_core::ProviderError::from(e) {
        berth_core::ProviderError::InvalidSpec { field, reason } => {
            assert_eq!(field, "cores");
            assert!(reason.contains("type check ('integer') failed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
