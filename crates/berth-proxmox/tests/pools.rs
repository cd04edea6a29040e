//! Pools against the emulator: created, guests and storage added and removed, a guest moved
//! from another pool only when allowed, deleted only when empty; PVE's refusals word for word.

mod common;

use berth_core::{GuestKind, Provider};
use common::*;

fn members(p: &berth_proxmox::client::types::PoolInfo) -> Vec<String> {
    p.members
        .iter()
        .map(|m| match (&m.kind, m.vmid, &m.storage) {
            (Some(k), Some(v), _) => format!("{k}/{v}"),
            (_, _, Some(s)) => format!("storage/{}/{s}", m.node.as_deref().unwrap_or("?")),
            _ => "?".into(),
        })
        .collect()
}

#[tokio::test]
async fn pools_gain_and_lose_members_and_go_only_when_empty() {
    let emu = emulator().await;
    let c = client(&emu);
    // A guest in pool `berth` (where the provider puts its machines).
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "pooled");
    let vmid: u32 = p
        .create(&spec, &Events::default())
        .await
        .unwrap()
        .backend_id
        .parse()
        .unwrap();

    c.create_pool("web", Some("front ends")).await.unwrap();
    let fail = |e: berth_proxmox::client::PveError| e.to_string();
    // Moving it needs allow-move; then it is in `web` only.
    let e = c.update_pool("web", &[vmid], &[], false, false).await.unwrap_err();
    assert!(fail(e).contains(&format!(
        "VM {vmid} belongs already to pool 'berth' and 'allow-move' is not set"
    )),);
    c.update_pool("web", &[vmid], &["shared"], false, true).await.unwrap();
    let web = &c.pools(Some("web")).await.unwrap()[0];
    assert_eq!(
        (web.comment.as_deref(), members(web)),
        (
            Some("front ends"),
            vec![
                format!("qemu/{vmid}"),
                "storage/pve1/shared".to_owned(),
                "storage/pve2/shared".to_owned()
            ]
        )
    );
    assert!(members(&c.pools(Some("berth")).await.unwrap()[0]).is_empty());
    // Added twice, removed when absent, unknown ids: refused, nothing changed.
    for (vms, storage, remove, says) in [
        (vec![vmid], vec![], false, format!("VM {vmid} is already a pool member")),
        (
            vec![],
            vec!["local"],
            true,
            "Storage 'local' is not a pool member".to_owned(),
        ),
        (vec![4999], vec![], false, "no such VM '4999'".to_owned()),
        (vec![], vec!["nope"], false, "no such storage 'nope'".to_owned()),
    ] {
        let e = c.update_pool("web", &vms, &storage, remove, false).await.unwrap_err();
        assert!(fail(e).contains(&says), "{says}");
    }
    assert_eq!(members(&c.pools(Some("web")).await.unwrap()[0]).len(), 3);
    // Only an empty pool goes.
    let e = c.delete_pool("web").await.unwrap_err();
    assert!(fail(e).contains("pool 'web' is not empty"));
    c.update_pool("web", &[vmid], &["shared"], true, false).await.unwrap();
    c.delete_pool("web").await.unwrap();
    assert!(c.pools(None).await.unwrap().iter().all(|p| p.poolid != "web"));
    let e = c.delete_pool("web").await.unwrap_err();
    assert!(fail(e).contains("pool 'web' does not exist"));
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

/// Moving a guest or storage into a pool needs the right to change that guest's or storage's
/// permissions (`check_perm_modify`), not only Pool.Allocate.
#[tokio::test]
async fn pool_members_need_their_own_modify_right() {
    let emu = emulator().await;
    let c = client(&emu);
    let privs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    emu.add_token(
        "berth@pve!pools",
        "pools-secret",
        vec![
            ("/pool/web".into(), privs(&["Pool.Allocate"])),
            ("/vms/9001".into(), privs(&["VM.Allocate"])),
        ],
    );
    c.create_pool("web", None).await.unwrap();
    let narrow = client_as(&emu, "berth@pve!pools", "pools-secret");
    let e = narrow.update_pool("web", &[9000], &[], false, true).await.unwrap_err();
    assert!(e.to_string().contains("Permission check failed (/vms/9000"), "{e}");
    let e = narrow
        .update_pool("web", &[], &["shared"], false, false)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("Permission check failed (/storage/shared"),
        "{e}"
    );
    narrow.update_pool("web", &[9001], &[], false, true).await.unwrap();
    assert!(members(&c.pools(Some("web")).await.unwrap()[0]).contains(&"qemu/9001".to_owned()));
}
