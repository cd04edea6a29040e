//! Guest lifecycles over the API: UPIDs and tasks, clone rules and locks, config/cloud-init, power,
//! guest agent, resize, destroy, containers, cluster views.

mod common;

use std::time::Duration;

use berth_pve_emulator::Timings;
use common::{start, url_escape};
use serde_json::json;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZpeGVkLWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3 berth@test";

fn slow_clone() -> Timings {
    Timings {
        clone: Duration::from_secs(30),
        ..Timings::fast()
    }
}

#[tokio::test]
async fn upid_lifecycle_and_task_endpoints() {
    let api = start().await;
    let re =
        regex::Regex::new(r"^UPID:pve1:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:qmclone:9000:berth@pve!agent:$").unwrap();

    // A long clone: observe it running, then stop it (the partial VM is cleaned up).
    api.h.set_timings(slow_clone());
    let upid = api
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "101")])
        .await
        .upid();
    assert!(re.is_match(&upid), "{upid}");
    let status_path = format!("/nodes/pve1/tasks/{}/status", url_escape(&upid));
    let st = api.get(&status_path).await;
    assert_eq!(st.data()["status"], "running", "{}", st.raw);
    assert_eq!(st.data()["id"], "9000");
    assert_eq!(st.data()["type"], "qmclone");
    assert_eq!(st.data()["user"], "berth@pve");
    assert_eq!(st.data()["tokenid"], "agent");
    assert!(st.data().get("exitstatus").is_none());
    assert_eq!(api.h.running_tasks(), 1);
    // The task only exists on the node that runs it.
    let other = api
        .get(&format!("/nodes/pve2/tasks/{}/status", url_escape(&upid)))
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.body["errors"]["upid"], "no such task");
    let r = api.get("/nodes/pve1/tasks/UPID:garbage/status").await;
    assert_eq!(r.status, 400, "{}", r.raw);
    assert_eq!(
        api.delete(&format!("/nodes/pve1/tasks/{}", url_escape(&upid)))
            .await
            .status,
        200
    );
    let st = api.wait_task(&upid).await;
    assert_eq!(st["exitstatus"], "clone failed: received interrupt");
    assert!(api.guest(101).is_none());
    assert_eq!(api.h.running_tasks(), 0);

    // A normal clone ends OK with a log ending in TASK OK.
    api.h.set_timings(Timings::fast());
    let upid = api
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "101")])
        .await
        .upid();
    let st = api.wait_task(&upid).await;
    assert_eq!(st["exitstatus"], "OK");
    assert_eq!(
        st["pid"],
        u64::from_str_radix(upid.split(':').nth(2).unwrap(), 16).unwrap()
    );
    let log = api
        .get(&format!("/nodes/pve1/tasks/{}/log?start=0&limit=2", url_escape(&upid)))
        .await;
    assert_eq!(log.data().as_array().unwrap().len(), 2);
    assert_eq!(log.data()[0]["n"], 1);
    let total = log.body["total"].as_u64().unwrap();
    assert!(total > 2);
    assert_eq!(api.task_log(&upid).await.last().unwrap(), "TASK OK");
    let list = api.get("/nodes/pve1/tasks?typefilter=qmclone").await;
    assert_eq!(list.body["total"], 2);
    assert_eq!(list.data()[0]["upid"], upid.as_str());
    assert_eq!(list.data()[0]["status"], "OK");
    assert_eq!(list.data()[1]["status"], "clone failed: received interrupt");
    assert_eq!(api.get("/nodes/pve1/tasks?errors=1").await.body["total"], 1);
}

#[tokio::test]
async fn fresh_upids_answer_no_such_task_briefly() {
    let api = start().await;
    api.h.set_timings(Timings {
        no_such_task_window: Duration::from_secs(30),
        ..Timings::fast()
    });
    let upid = api
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "102")])
        .await
        .upid();
    let r = api
        .get(&format!("/nodes/pve1/tasks/{}/status", url_escape(&upid)))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"data": null, "errors": {"upid": "no such task"}, "message": "Parameter verification failed.\n"})
    );
}

#[tokio::test]
async fn clone_locks_the_new_vm_until_the_task_ends() {
    let api = start().await;
    api.h.set_timings(slow_clone());
    let upid = api
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "103")])
        .await
        .upid();
    let cur = api.get("/nodes/pve1/qemu/103/status/current").await;
    assert_eq!(cur.data()["lock"], "clone");
    let r = api.put("/nodes/pve1/qemu/103/config", &[("cores", "2")]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "VM is locked (clone)"));
    let r = api.get("/cluster/resources?type=vm").await;
    let entry = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["vmid"] == 103)
        .unwrap()
        .clone();
    assert_eq!(entry["lock"], "clone");
    // A second clone into the same id fails synchronously.
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "103")]).await;
    assert_eq!(r.reason, "unable to create VM 103: config file already exists");
    api.delete(&format!("/nodes/pve1/tasks/{}", url_escape(&upid))).await;
    api.wait_task(&upid).await;

    api.h.set_timings(Timings::fast());
    api.clone_9000(103, &[("name", "web-1"), ("pool", "berth"), ("description", "hello")])
        .await;
    let g = api.guest(103).unwrap();
    assert_eq!(g.lock, None);
    assert_eq!(g.name, "web-1");
    assert_eq!(g.description, "hello");
    assert!(!g.template);
    let cur = api.get("/nodes/pve1/qemu/103/status/current").await;
    assert!(cur.data().get("lock").is_none());
    assert_eq!(
        api.put("/nodes/pve1/qemu/103/config", &[("cores", "2")]).await.status,
        200
    );
    let pool = api.get("/pools?poolid=berth").await;
    assert_eq!(pool.data()[0]["members"][0]["vmid"], 103);
}

#[tokio::test]
async fn clone_rules_follow_pve() {
    let api = start().await;
    // Templates default to linked clones, normal VMs to full clones.
    api.clone_9000(104, &[]).await;
    let g = api.guest(104).unwrap();
    assert_eq!(g.name, "Copy-of-VM-debian-12-cloud");
    assert_eq!(g.config["scsi0"], "local-lvm:base-9000-disk-0/vm-104-disk-0,size=2G");
    assert_eq!(g.config["ide2"], "local-lvm:vm-104-cloudinit,media=cdrom");
    let tpl = api.guest(9000).unwrap();
    assert_ne!(g.config["net0"], tpl.config["net0"]);
    assert!(g.config["net0"].starts_with("virtio=BC:24:11:") && g.config["net0"].ends_with(",bridge=vmbr0"));
    api.clone_9000(105, &[("full", "1")]).await;
    assert_eq!(
        api.guest(105).unwrap().config["scsi0"],
        "local-lvm:vm-105-disk-0,size=2G"
    );
    let r = api
        .run_task(api.post("/nodes/pve1/qemu/105/clone", &[("newid", "106")]).await)
        .await;
    assert_eq!(r["exitstatus"], "OK");
    assert_eq!(
        api.guest(106).unwrap().config["scsi0"],
        "local-lvm:vm-106-disk-0,size=2G"
    );
    let r = api
        .post("/nodes/pve1/qemu/105/clone", &[("newid", "107"), ("full", "0")])
        .await;
    assert_eq!(
        r.reason,
        "Linked clone feature is not supported for 'local-lvm:vm-105-disk-0' (scsi0)"
    );

    let r = api
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "108"), ("storage", "local-lvm")],
        )
        .await;
    assert_eq!(r.reason, "parameter 'storage' not allowed for linked clones");
    let r = api
        .post(
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "108"), ("full", "1"), ("storage", "local")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["errors"]["storage"],
        "storage 'local' does not support vm images"
    );
    let r = api
        .post("/nodes/pve2/qemu/9101/clone", &[("newid", "108"), ("target", "pve1")])
        .await;
    assert_eq!(r.reason, "can't clone VM to node 'pve1' (VM uses local storage)");
    let r = api.post("/nodes/pve2/qemu/9000/clone", &[("newid", "108")]).await;
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve2/qemu-server/9000.conf' does not exist"
    );
    let r = api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "9000")]).await;
    assert_eq!(r.reason, "unable to create VM 9000: config file already exists");
    let r = api
        .post("/nodes/pve1/qemu/9000/clone", &[("newid", "108"), ("pool", "nope")])
        .await;
    assert_eq!(r.body["errors"]["pool"], "pool 'nope' does not exist");

    // Shared storage: the clone runs on the source node and lands on the target.
    let upid = api
        .post("/nodes/pve2/qemu/9100/clone", &[("newid", "109"), ("target", "pve1")])
        .await
        .upid();
    assert!(upid.starts_with("UPID:pve2:"));
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let g = api.guest(109).unwrap();
    assert_eq!(g.node, "pve1");
    assert_eq!(
        g.config["scsi0"],
        "shared:9100/base-9100-disk-0.qcow2/109/vm-109-disk-0.qcow2,size=2G"
    );
    // Same newid on another node passes the sync checks and fails in the task.
    api.h.add_foreign_vm("pve2", 110, "elsewhere");
    let st = api
        .run_task(api.post("/nodes/pve1/qemu/9000/clone", &[("newid", "110")]).await)
        .await;
    assert_eq!(
        st["exitstatus"],
        "close (rename) atomic file '/etc/pve/nodes/pve1/qemu-server/110.conf' failed: File exists"
    );
}

#[tokio::test]
async fn config_cloud_init_and_pending_changes() {
    let api = start().await;
    api.clone_9000(111, &[]).await;
    let path = "/nodes/pve1/qemu/111/config";
    let keys = url_escape(KEY)
        .replace("%2D", "-")
        .replace("%2E", ".")
        .replace("%5F", "_");
    let r = api
        .put(
            path,
            &[
                ("ciuser", "berth"),
                ("cipassword", "hunter22"),
                ("sshkeys", &keys),
                ("ipconfig0", "ip=192.0.2.10/24,gw=192.0.2.1"),
                ("memory", "2048"),
                ("cores", "2"),
                ("tags", "berth,web"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let cfg = api.get(path).await;
    assert_eq!(cfg.data()["cipassword"], "**********");
    assert_eq!(cfg.data()["sshkeys"], keys.as_str());
    assert_eq!(cfg.data()["memory"], "2048");
    assert_eq!(cfg.data()["tags"], "berth;web");
    assert_eq!(cfg.data()["digest"].as_str().unwrap().len(), 40);

    // A key that is urlencoded but not a key; a value that is not urlencoded at all.
    let r = api.put(path, &[("sshkeys", "ssh-rsa%20notakey")]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "SSH public key validation error"));
    let r = api.put(path, &[("sshkeys", KEY)]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["errors"]["sshkeys"]
            .as_str()
            .unwrap()
            .starts_with("invalid format - invalid urlencoded string")
    );
    let r = api.put(path, &[]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "no options specified"));
    let r = api
        .put(
            path,
            &[("cores", "3"), ("digest", "0000000000000000000000000000000000000000")],
        )
        .await;
    assert_eq!(
        r.reason,
        "detected modified configuration - file changed by other user? Try again."
    );
    let digest = cfg.data()["digest"].as_str().unwrap().to_string();
    assert_eq!(
        api.put(path, &[("delete", "ipconfig0"), ("digest", &digest)])
            .await
            .status,
        200
    );
    assert!(!api.guest(111).unwrap().config.contains_key("ipconfig0"));

    // On a running VM, cores and memory become pending until the next start.
    assert_eq!(
        api.run_task(api.post("/nodes/pve1/qemu/111/status/start", &[]).await)
            .await["exitstatus"],
        "OK"
    );
    assert_eq!(
        api.put(path, &[("cores", "4"), ("memory", "4096"), ("name", "renamed")])
            .await
            .status,
        200
    );
    let pending = api.get("/nodes/pve1/qemu/111/pending").await;
    let cores = pending
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == "cores")
        .unwrap()
        .clone();
    assert_eq!(cores, json!({"key": "cores", "value": 2, "pending": 4}));
    assert_eq!(api.get(path).await.data()["cores"], 4);
    assert_eq!(api.get(&format!("{path}?current=1")).await.data()["cores"], 2);
    assert_eq!(api.guest(111).unwrap().name, "renamed");
    assert_eq!(
        api.put("/nodes/pve1/qemu/111/cloudinit", &[]).await.body,
        json!({"data": null})
    );
    assert_eq!(
        api.run_task(api.post("/nodes/pve1/qemu/111/status/reboot", &[]).await)
            .await["exitstatus"],
        "OK"
    );
    assert_eq!(api.guest(111).unwrap().config["cores"], "4");
    assert_eq!(api.get(&format!("{path}?current=1")).await.data()["memory"], "4096");
}

#[tokio::test]
async fn power_and_guest_agent() {
    let api = start().await;
    api.clone_9000(112, &[]).await;
    let base = "/nodes/pve1/qemu/112";
    let r = api.get(&format!("{base}/agent/network-get-interfaces")).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "VM 112 is not running"));
    let st = api
        .run_task(api.post("/nodes/pve1/qemu/9000/status/start", &[]).await)
        .await;
    assert_eq!(st["exitstatus"], "you can't start a vm if it's a template");

    api.h.set_timings(Timings {
        agent_ready: Duration::from_secs(600),
        ..Timings::fast()
    });
    let upid = api.post(&format!("{base}/status/start"), &[]).await.upid();
    assert!(upid.contains(":qmstart:112:"));
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    let r = api.get(&format!("{base}/agent/network-get-interfaces")).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "QEMU guest agent is not running"));
    assert_eq!(api.post(&format!("{base}/agent/ping"), &[]).await.status, 500);
    let st = api.run_task(api.post(&format!("{base}/status/start"), &[]).await).await;
    assert_eq!(st["exitstatus"], "VM 112 already running");
    let cur = api.get(&format!("{base}/status/current")).await;
    assert_eq!(cur.data()["status"], "running");
    assert_eq!(cur.data()["qmpstatus"], "running");
    assert_eq!(cur.data()["agent"], 1);
    assert_eq!(cur.data()["maxmem"], 1024u64 << 20);
    assert_eq!(cur.data()["maxdisk"], 2u64 << 30);

    // Reboot restarts the agent clock; with fast timings it answers soon.
    api.h.set_timings(Timings::fast());
    assert_eq!(
        api.run_task(api.post(&format!("{base}/status/reboot"), &[]).await)
            .await["exitstatus"],
        "OK"
    );
    let mut ifaces = None;
    for _ in 0..400 {
        let r = api.get(&format!("{base}/agent/network-get-interfaces")).await;
        if r.status == 200 {
            ifaces = Some(r.data().clone());
            break;
        }
        assert_eq!(r.reason, "QEMU guest agent is not running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ifaces = ifaces.expect("agent becomes ready");
    let result = ifaces["result"].as_array().unwrap();
    assert_eq!(result[0]["name"], "lo");
    let mac = api.guest(112).unwrap().config["net0"]
        .split(['=', ','])
        .nth(1)
        .unwrap()
        .to_ascii_lowercase();
    assert_eq!(result[1]["hardware-address"], mac.as_str());
    let addrs = result[1]["ip-addresses"].as_array().unwrap();
    assert!(addrs[0]["ip-address"].as_str().unwrap().starts_with("fe80::"));
    assert_eq!(
        addrs[1],
        json!({"ip-address": "10.1.0.114", "ip-address-type": "ipv4", "prefix": 24})
    );
    assert_eq!(
        api.post(&format!("{base}/agent/ping"), &[]).await.body,
        json!({"data": {"result": {}}})
    );

    let st = api
        .run_task(
            api.post(
                &format!("{base}/status/shutdown"),
                &[("timeout", "30"), ("forceStop", "1")],
            )
            .await,
        )
        .await;
    assert_eq!(st["exitstatus"], "OK");
    assert_eq!(api.guest(112).unwrap().status, "stopped");
    let r = api.post(&format!("{base}/status/reboot"), &[]).await;
    assert_eq!(r.reason, "VM 112 not running");
    assert_eq!(
        api.put(&format!("{base}/config"), &[("delete", "agent")]).await.status,
        200
    );
    let r = api.get(&format!("{base}/agent/network-get-interfaces")).await;
    assert_eq!(r.reason, "No QEMU guest agent configured");
}

#[tokio::test]
async fn static_addresses_show_up_in_the_agent() {
    let api = start().await;
    api.clone_9000(113, &[]).await;
    let r = api
        .put(
            "/nodes/pve1/qemu/113/config",
            &[("ipconfig0", "ip=192.0.2.50/26,gw=192.0.2.1,ip6=auto")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    api.run_task(api.post("/nodes/pve1/qemu/113/status/start", &[]).await)
        .await;
    let mut found = None;
    for _ in 0..400 {
        let r = api.get("/nodes/pve1/qemu/113/agent/network-get-interfaces").await;
        if r.status == 200 {
            found = Some(r.data()["result"][1]["ip-addresses"].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addrs = found.expect("agent answers");
    assert_eq!(
        addrs[1],
        json!({"ip-address": "192.0.2.50", "ip-address-type": "ipv4", "prefix": 26})
    );
    assert_eq!(
        addrs[2],
        json!({"ip-address": "2001:db8::71", "ip-address-type": "ipv6", "prefix": 64})
    );
}

#[tokio::test]
async fn resize_and_destroy() {
    let api = start().await;
    api.clone_9000(114, &[("full", "1"), ("pool", "berth")]).await;
    let st = api
        .run_task(
            api.put("/nodes/pve1/qemu/114/resize", &[("disk", "scsi0"), ("size", "+2G")])
                .await,
        )
        .await;
    assert_eq!(st["exitstatus"], "OK");
    assert_eq!(
        api.guest(114).unwrap().config["scsi0"],
        "local-lvm:vm-114-disk-0,size=4G"
    );
    let st = api
        .run_task(
            api.put("/nodes/pve1/qemu/114/resize", &[("disk", "scsi0"), ("size", "1G")])
                .await,
        )
        .await;
    assert_eq!(st["exitstatus"], "shrinking disks is not supported");
    let content = api.get("/nodes/pve1/storage/local-lvm/content?vmid=114").await;
    let disk = content
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volid"] == "local-lvm:vm-114-disk-0")
        .unwrap()
        .clone();
    assert_eq!(disk["size"], 4u64 << 30);

    api.run_task(api.post("/nodes/pve1/qemu/114/status/start", &[]).await)
        .await;
    let r = api
        .delete("/nodes/pve1/qemu/114?purge=1&destroy-unreferenced-disks=1")
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "VM 114 is running - destroy failed")
    );
    api.run_task(api.post("/nodes/pve1/qemu/114/status/stop", &[]).await)
        .await;
    let upid = api
        .delete("/nodes/pve1/qemu/114?purge=1&destroy-unreferenced-disks=1")
        .await
        .upid();
    assert!(upid.contains(":qmdestroy:114:"));
    assert_eq!(api.guest(114).unwrap().lock.as_deref(), Some("destroyed"));
    assert_eq!(api.wait_task(&upid).await["exitstatus"], "OK");
    assert!(api.guest(114).is_none());
    assert_eq!(
        api.get("/nodes/pve1/storage/local-lvm/content?vmid=114").await.body,
        json!({"data": []})
    );
    assert_eq!(api.get("/pools/berth").await.data()["members"], json!([]));
    let r = api.get("/nodes/pve1/qemu/114/config").await;
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve1/qemu-server/114.conf' does not exist"
    );
}
