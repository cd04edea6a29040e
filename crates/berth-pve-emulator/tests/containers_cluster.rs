//! Containers (create, interfaces, resize, destroy), cluster-wide views, and concurrent clones.

mod common;

use common::start;
use serde_json::json;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZpeGVkLWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3 berth@test";

#[tokio::test]
async fn containers_are_created_started_and_destroyed() {
    let api = start().await;
    let tmpl = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
    let form = [
        ("vmid", "200"),
        ("ostemplate", tmpl),
        ("hostname", "ct-1"),
        ("net0", "name=eth0,bridge=vmbr0,ip=192.0.2.20/24,gw=192.0.2.1"),
        ("rootfs", "local-lvm:8"),
        ("ssh-public-keys", KEY),
        ("start", "1"),
        ("pool", "berth"),
        ("tags", "berth;ct"),
        ("unprivileged", "1"),
    ];
    let upid = api.post("/nodes/pve1/lxc", &form).await.upid();
    assert!(upid.contains(":vzcreate:200:"));
    assert_eq!(api.guest(200).unwrap().lock.as_deref(), Some("create"));
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let g = api.guest(200).unwrap();
    assert_eq!(
        (g.kind.as_str(), g.name.as_str(), g.status.as_str()),
        ("lxc", "ct-1", "running")
    );
    assert_eq!(g.config["rootfs"], "local-lvm:vm-200-disk-0,size=8G");
    assert_eq!(g.tags, vec!["berth", "ct"]);
    let ifaces = api.get("/nodes/pve1/lxc/200/interfaces").await;
    assert_eq!(ifaces.data()[1]["inet"], "192.0.2.20/24");
    let cur = api.get("/nodes/pve1/lxc/200/status/current").await;
    assert_eq!(cur.data()["type"], "lxc");
    assert_eq!(cur.data()["status"], "running");
    assert_eq!(
        api.put("/nodes/pve1/lxc/200/config", &[("memory", "1024")])
            .await
            .status,
        200
    );
    assert_eq!(api.get("/nodes/pve1/lxc/200/config").await.data()["memory"], "1024");
    let st = api
        .run_task(
            api.put("/nodes/pve1/lxc/200/resize", &[("disk", "rootfs"), ("size", "+2G")])
                .await,
        )
        .await;
    assert_eq!(st["exitstatus"], "OK");
    assert_eq!(
        api.guest(200).unwrap().config["rootfs"],
        "local-lvm:vm-200-disk-0,size=10G"
    );

    let r = api
        .post("/nodes/pve1/lxc", &[("vmid", "9000"), ("ostemplate", tmpl)])
        .await;
    assert_eq!(r.reason, "VM 9000 already exists on node 'pve1'");
    let r = api
        .post(
            "/nodes/pve1/lxc",
            &[("vmid", "201"), ("ostemplate", "local:vztmpl/nope.tar.zst")],
        )
        .await;
    assert_eq!(r.reason, "volume 'local:vztmpl/nope.tar.zst' does not exist");
    let r = api
        .post(
            "/nodes/pve1/lxc",
            &[("vmid", "201"), ("ostemplate", tmpl), ("rootfs", "local:8")],
        )
        .await;
    assert_eq!(r.reason, "storage 'local' does not support container directories");

    let r = api.delete("/nodes/pve1/lxc/200").await;
    assert_eq!(r.reason, "unable to destroy CT 200 - container is running");
    let st = api
        .run_task(api.delete("/nodes/pve1/lxc/200?force=1&purge=1").await)
        .await;
    assert_eq!(st["exitstatus"], "OK");
    assert!(api.guest(200).is_none());
}

#[tokio::test]
async fn container_power_needs_the_right_state_and_config_keeps_read_only_keys() {
    let api = start().await;
    let tmpl = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
    let form = [("vmid", "202"), ("ostemplate", tmpl), ("rootfs", "local-lvm:4")];
    assert_eq!(
        api.run_task(api.post("/nodes/pve1/lxc", &form).await).await["exitstatus"],
        "OK"
    );
    let base = "/nodes/pve1/lxc/202";
    for op in ["stop", "shutdown", "reboot"] {
        let r = api.post(&format!("{base}/status/{op}"), &[]).await;
        assert_eq!((r.status, r.reason.as_str()), (500, "CT 202 not running"), "{op}");
    }
    for (op, task_type) in [
        ("start", "vzstart"),
        ("reboot", "vzreboot"),
        ("shutdown", "vzshutdown"),
        ("start", "vzstart"),
        ("stop", "vzstop"),
    ] {
        let upid = api.post(&format!("{base}/status/{op}"), &[]).await.upid();
        assert!(upid.contains(&format!(":{task_type}:202:")), "{upid}");
        assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK", "{op}");
    }
    api.run_task(api.post(&format!("{base}/status/start"), &[]).await).await;
    let r = api.post(&format!("{base}/status/start"), &[]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "CT 202 already running"));

    let r = api.put(&format!("{base}/config"), &[("arch", "arm64")]).await;
    assert_eq!(r.reason, "unable to modify read-only option: 'arch'");
    let r = api
        .put(&format!("{base}/config"), &[("swap", "256"), ("delete", "memory")])
        .await;
    assert_eq!(r.status, 200);
    let cfg = api.get(&format!("{base}/config")).await;
    assert_eq!(
        (cfg.data()["swap"].clone(), cfg.data().get("memory")),
        (json!(256), None)
    );
    assert_eq!(api.get(&format!("{base}/pending")).await.data()[0]["key"], "arch");
}

#[tokio::test]
async fn cluster_views_show_guests_storages_and_pools() {
    let api = start().await;
    api.clone_9000(115, &[("pool", "berth")]).await;
    api.put("/nodes/pve1/qemu/115/config", &[("tags", "a,b")]).await;
    let r = api.get("/cluster/resources?type=vm").await;
    let vms = r.data().as_array().unwrap();
    let tpl = vms.iter().find(|v| v["vmid"] == 9100).unwrap();
    assert_eq!(
        (tpl["template"].clone(), tpl["node"].clone(), tpl["id"].clone()),
        (json!(1), json!("pve2"), json!("qemu/9100"))
    );
    let vm = vms.iter().find(|v| v["vmid"] == 115).unwrap();
    assert_eq!(
        (vm["template"].clone(), vm["pool"].clone(), vm["tags"].clone()),
        (json!(0), json!("berth"), json!("a;b"))
    );
    let r = api.get("/cluster/resources?type=storage").await;
    assert_eq!(r.data().as_array().unwrap().len(), 6);
    let r = api.get("/nodes/pve2/storage?content=images").await;
    let names: Vec<&str> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["storage"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["local-lvm", "shared"]);
    let r = api.get("/nodes/pve2/storage/local/content?content=vztmpl").await;
    assert_eq!(
        r.data()[0]["volid"],
        "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    );
    let r = api.get("/nodes/pve1/storage/shared/status").await;
    assert_eq!(r.data()["shared"], 1);
    let r = api.get("/nodes/pve2/qemu").await;
    let ids: Vec<u64> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![9001, 9100, 9101]);
    assert_eq!(
        api.get("/pools").await.data(),
        &json!([{"poolid": "berth", "comment": "Berth-managed guests"}])
    );
    assert_eq!(
        api.get("/access/permissions?path=/vms/115").await.data()["/vms/115"]["VM.Allocate"],
        1
    );
}

#[tokio::test]
async fn thirty_two_concurrent_clones_all_succeed() {
    let api = std::sync::Arc::new(start().await);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..32u32 {
        let api = api.clone();
        set.spawn(async move {
            let (node, tpl) = if i % 2 == 0 { ("pve1", 9000) } else { ("pve2", 9001) };
            let newid = (1000 + i).to_string();
            let r = api
                .post(
                    &format!("/nodes/{node}/qemu/{tpl}/clone"),
                    &[("newid", &newid), ("full", "1")],
                )
                .await;
            api.run_task(r).await["exitstatus"].as_str().unwrap().to_string()
        });
    }
    let mut ok = 0;
    while let Some(res) = set.join_next().await {
        assert_eq!(res.unwrap(), "OK");
        ok += 1;
    }
    assert_eq!(ok, 32);
    let clones = api
        .h
        .guests()
        .into_iter()
        .filter(|g| (1000..1032).contains(&g.vmid))
        .count();
    assert_eq!(clones, 32);
    assert_eq!(api.h.running_tasks(), 0);
}
