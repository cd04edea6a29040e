//! Replays responses captured from real Proxmox VE (proxmox-facts.md §4) byte for byte from a
//! tiny HTTP/1.1 server: the exact status line with PVE's reason phrase, its headers and body.
//! Checks what the client makes of them: message, error class, retry or not, lenient parsing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::{ErrorCode, ProviderError, Secret};
use berth_proxmox::client::{ClientOptions, GuestType, Params, PveClient, PveError, RetryPolicy, Upid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A canned answer: status line (with reason phrase) and body.
fn reply(status_line: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status_line}\r\nCache-Control: max-age=0\r\nConnection: close\r\nDate: Tue, 21 Mar 2023 15:19:20 GMT\r\n\
         Pragma: no-cache\r\nServer: pve-api-daemon/3.0\r\nContent-Length: {}\r\n\
         Content-Type: application/json;charset=UTF-8\r\nExpires: Tue, 21 Mar 2023 15:19:20 GMT\r\n\r\n{body}",
        body.len()
    )
}

fn ok(body: &str) -> String {
    reply("200 OK", body)
}

/// Serves `replies` in order, one per connection; records each request's head line, its
/// `Authorization` and `Content-Type` lines, and its body.
struct Replay {
    client: PveClient,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn replay(replies: Vec<String>) -> Replay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for r in replies {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let req = read_request(&mut sock).await;
            log.lock().unwrap().push(req);
            let _ = sock.write_all(r.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    let mut o = ClientOptions::new(&format!("http://{addr}"), "berth@pve!agent", Secret::new("s3cr3t"));
    o.retry = RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
    };
    o.poll_interval = Duration::from_millis(5);
    Replay {
        client: PveClient::new(o).unwrap(),
        seen,
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0usize);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let first = head.lines().next().unwrap_or_default().to_owned();
            let auth = head
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                .unwrap_or_default();
            let ctype = head
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&buf[end + 4..]).to_string();
            return format!("{first}\n{auth}\n{ctype}\n{body}");
        }
    }
    String::new()
}

impl Replay {
    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

const F1_BODY: &str =
    r#"{"errors":{"vmid":"VM 2004 already exists"},"data":null,"message":"Parameter verification failed.\n"}"#;

#[tokio::test]
async fn f1_nextid_conflict_new_envelope() {
    let r = replay(vec![reply("400 Parameter verification failed.", F1_BODY)]).await;
    assert!(!r.client.vmid_is_free(2004).await.unwrap(), "taken");
    let req = &r.requests()[0];
    assert!(
        req.starts_with("GET /api2/json/cluster/nextid?vmid=2004 HTTP/1.1"),
        "{req}"
    );
    assert!(
        req.contains("PVEAPIToken=berth@pve!agent=s3cr3t"),
        "token auth header: {req}"
    );

    let r = replay(vec![reply("400 Parameter verification failed.", F1_BODY)]).await;
    let e = r
        .client
        .get::<serde_json::Value>("/cluster/nextid", &Params::new().int("vmid", 2004u32))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "GET /cluster/nextid: HTTP 400 Parameter verification failed.; vmid: VM 2004 already exists"
    );
    assert_eq!(r.requests().len(), 1, "a 400 is not retried");
    match ProviderError::from(e) {
        ProviderError::InvalidSpec { field, reason } => {
            assert_eq!(field, "vmid");
            assert!(reason.contains("VM 2004 already exists"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn f2_nextid_conflict_old_envelope() {
    let r = replay(vec![reply(
        "400 Parameter verification failed.",
        r#"{"errors":{"vmid":"VM 218 already exists"},"data":null}"#,
    )])
    .await;
    assert!(!r.client.vmid_is_free(218).await.unwrap());
}

#[tokio::test]
async fn f3_nextid_is_a_string() {
    let r = replay(vec![ok(r#"{"data": "100"}"#), ok(r#"{"data":"4711"}"#)]).await;
    assert_eq!(r.client.next_id().await.unwrap(), 100);
    assert!(r.client.vmid_is_free(4711).await.unwrap());
}

#[tokio::test]
async fn f4_warnings_are_success_and_surface_the_warn_lines() {
    let status = r#"{"data":{"id":"100","pid":29475,"status":"stopped","type":"qmstart","pstart":1062565,"exitstatus":"WARNINGS: 1","upid":"UPID:dahu-2:00007323:001036A5:6419CAF8:qmstart:100:root@pam:","starttime":1679411960,"user":"root@pam","node":"dahu-2"}}"#;
    let log = r#"{"data":[{"n":1,"t":"WARN: no efidisk configured! Using temporary efivars disk."},{"n":2,"t":"TASK WARNINGS: 1"}],"total":2}"#;
    let r = replay(vec![ok(status), ok(log)]).await;
    let upid = Upid::parse("UPID:dahu-2:00007323:001036A5:6419CAF8:qmstart:100:root@pam:").unwrap();
    let out = r.client.wait_task(&upid, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        out.warnings,
        vec!["WARN: no efidisk configured! Using temporary efivars disk.".to_owned()]
    );
    let reqs = r.requests();
    assert!(
        reqs[0].starts_with(
            "GET /api2/json/nodes/dahu-2/tasks/UPID:dahu-2:00007323:001036A5:6419CAF8:qmstart:100:root@pam:/status "
        ),
        "polled at the UPID's node: {}",
        reqs[0]
    );
}

#[tokio::test]
async fn f4_no_such_task_is_tolerated_briefly() {
    let status = r#"{"data":{"status":"stopped","exitstatus":"OK"}}"#;
    let r = replay(vec![
        reply(
            "400 Parameter verification failed.",
            r#"{"errors":{"upid":"no such task"},"data":null}"#,
        ),
        ok(r#"{"data":{"status":"running"}}"#),
        ok(status),
    ])
    .await;
    let upid = Upid::parse("UPID:pve:00007323:001036A5:6419CAF8:qmstart:100:root@pam:").unwrap();
    assert!(
        r.client
            .wait_task(&upid, Duration::from_secs(5))
            .await
            .unwrap()
            .warnings
            .is_empty()
    );
}

#[tokio::test]
async fn f7_old_style_500_reads_the_reason_phrase() {
    let r = replay(vec![reply("500 CT is locked (disk)", r#"{"data":null}"#)]).await;
    let e = r
        .client
        .update_config("pve", GuestType::Lxc, 100, &Params::new().int("cores", 2u32))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "PUT /nodes/pve/lxc/100/config: HTTP 500 CT is locked (disk)"
    );
    assert_eq!(e.locked_by().as_deref(), Some("disk"));
    assert_eq!(
        r.requests().len(),
        1,
        "a lock held by another task is not a blind retry"
    );
    assert!(
        r.requests()[0].ends_with("cores=2"),
        "form-encoded body: {:?}",
        r.requests()
    );
}

const F8: &str = "500 can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout";

#[tokio::test]
async fn f8_f9_config_lock_timeouts_are_retried() {
    let r = replay(vec![
        reply(F8, r#"{"data":null}"#),
        reply(F8, r#"{"data":null}"#),
        ok(r#"{"data":null}"#),
    ])
    .await;
    r.client
        .update_config("pve", GuestType::Qemu, 101, &Params::new().int("memory", 2048u32))
        .await
        .unwrap();
    assert_eq!(r.requests().len(), 3);

    let r = replay(vec![reply(F8, "{\"data\":null}"); 4]).await;
    let e = r
        .client
        .update_config("pve", GuestType::Qemu, 101, &Params::new().int("memory", 2048u32))
        .await
        .unwrap_err();
    assert!(e.is_lock_timeout());
    assert_eq!(r.requests().len(), 4, "retries are bounded");
    assert_eq!(ProviderError::from(e).code(), ErrorCode::Unavailable);
}

#[tokio::test]
async fn f10_storage_lock_timeout_inside_a_clone_task() {
    let exit = "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout";
    let status = format!(r#"{{"data":{{"status":"stopped","exitstatus":"{exit}"}}}}"#);
    let log = format!(
        r#"{{"data":[{{"n":1,"t":"create full clone of drive scsi0 (local-lvm:base-9000-disk-0)"}},{{"n":2,"t":"TASK ERROR: {exit}"}}],"total":2}}"#
    );
    let r = replay(vec![ok(&status), ok(&log)]).await;
    let upid = Upid::parse("UPID:pve-mp:00000ACD:00006AE8:679A423B:qmclone:112:capmox@pve!capi:").unwrap();
    let e = r.client.wait_task(&upid, Duration::from_secs(5)).await.unwrap_err();
    match &e {
        PveError::TaskFailed {
            exitstatus, log_tail, ..
        } => {
            assert_eq!(exitstatus, exit);
            assert_eq!(
                log_tail,
                &vec!["create full clone of drive scsi0 (local-lvm:base-9000-disk-0)".to_owned()]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_lock_timeout(), "transient");
    assert!(r.requests()[0].contains("/nodes/pve-mp/tasks/"), "{:?}", r.requests());
}

#[tokio::test]
async fn f11_missing_vm_is_not_found_without_retries() {
    let r = replay(vec![reply(
        "500 Configuration file 'nodes/pve-mp/qemu-server/117.conf' does not exist",
        r#"{"data":null}"#,
    )])
    .await;
    let e = r.client.guest_status("pve-mp", GuestType::Qemu, 117).await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(r.requests().len(), 1);
    assert_eq!(ProviderError::from(e).code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn a_plain_500_on_a_read_is_retried_and_never_not_found() {
    let r = replay(vec![reply("500 Internal Server Error", r#"{"data":null}"#); 4]).await;
    let e = r.client.guest_status("pve", GuestType::Qemu, 117).await.unwrap_err();
    assert!(!e.is_not_found());
    assert_eq!(r.requests().len(), 4);
    assert_eq!(ProviderError::from(e).code(), ErrorCode::Unavailable);
    // Standard reason phrase: the body's message (PVE 8.3+) carries the text.
    let r = replay(vec![reply(
        "500 Internal Server Error",
        r#"{"data":null,"message":"storage 'x' is not online\n"}"#,
    )])
    .await;
    let e = r.client.delete_guest("pve", GuestType::Qemu, 117).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "DELETE /nodes/pve/qemu/117: HTTP 500 storage 'x' is not online"
    );
    assert!(
        r.requests()[0].starts_with("DELETE /api2/json/nodes/pve/qemu/117?purge=1&destroy-unreferenced-disks=1 "),
        "{:?}",
        r.requests()
    );
}

#[tokio::test]
async fn f12_clone_into_an_existing_vmid_is_sent_once() {
    let r = replay(vec![reply(
        "500 unable to create VM 401: config file already exists",
        r#"{"data":null}"#,
    )])
    .await;
    let p = Params::new()
        .int("newid", 401u32)
        .bool("full", true)
        .str("name", "web1");
    let e = r.client.clone_vm("pve", 9000, &p).await.unwrap_err();
    assert!(e.is_already_exists());
    let reqs = r.requests();
    assert_eq!(reqs.len(), 1, "a clone is never re-sent blindly");
    assert!(
        reqs[0].starts_with("POST /api2/json/nodes/pve/qemu/9000/clone "),
        "{}",
        reqs[0]
    );
    assert!(
        reqs[0].ends_with("newid=401&full=1&name=web1"),
        "booleans as 1: {}",
        reqs[0]
    );
}

#[tokio::test]
async fn f14_agent_not_running_is_not_ready_and_not_retried_here() {
    let r = replay(vec![reply(
        "500 QEMU guest agent is not running",
        r#"{"data":null,"message":"QEMU guest agent is not running\n"}"#,
    )])
    .await;
    let e = r.client.agent_interfaces("pve", 100).await.unwrap_err();
    assert!(e.is_agent_not_ready());
    assert_eq!(r.requests().len(), 1, "the network waiter has its own loop");
    let r = replay(vec![reply(
        "500 VM 100 qmp command 'guest-ping' failed - got timeout",
        r#"{"data":null}"#,
    )])
    .await;
    assert!(
        r.client
            .agent_interfaces("pve", 100)
            .await
            .unwrap_err()
            .is_agent_not_ready()
    );
}

// No capture of `agent/exec` was found: these are the shapes of qemu-server's `exec` and
// `exec-status` (`PVE::QemuServer::Agent::qemu_exec_status`: output decoded, booleans as 1/0).
#[tokio::test]
async fn agent_exec_sends_the_command_as_a_json_array() {
    let r = replay(vec![
        ok(r#"{"data":{"pid":4242}}"#),
        ok(r#"{"data":{"exited":0}}"#),
        ok(r#"{"data":{"exited":1,"exitcode":3,"err-data":"bad\n","out-truncated":1}}"#),
    ])
    .await;
    let argv = ["/bin/sh", "-c", "echo 'a b' && exit 3"];
    let pid = r.client.agent_exec("pve", 100, &argv).await.unwrap();
    assert_eq!(pid, 4242);
    assert!(!r.client.agent_exec_status("pve", 100, pid).await.unwrap().exited);
    let done = r.client.agent_exec_status("pve", 100, pid).await.unwrap();
    assert!(done.exited && done.out_truncated && !done.err_truncated);
    assert_eq!((done.exitcode, done.err_data.as_deref()), (Some(3), Some("bad\n")));
    let reqs = r.requests();
    assert!(
        reqs[0].starts_with("POST /api2/json/nodes/pve/qemu/100/agent/exec HTTP/1.1"),
        "{}",
        reqs[0]
    );
    // A form would turn the list into one NUL-joined string; JSON keeps it a list.
    assert!(
        reqs[0]
            .to_ascii_lowercase()
            .contains("\ncontent-type: application/json\n"),
        "{}",
        reqs[0]
    );
    assert!(
        reqs[0].ends_with(r#"{"command":["/bin/sh","-c","echo 'a b' && exit 3"]}"#),
        "{}",
        reqs[0]
    );
    assert!(
        reqs[1].starts_with("GET /api2/json/nodes/pve/qemu/100/agent/exec-status?pid=4242 "),
        "{}",
        reqs[1]
    );
}

#[tokio::test]
async fn agent_exec_is_sent_once() {
    // Whether to send it again is the caller's decision (the command may have started).
    let r = replay(vec![
        reply(
            "500 QEMU guest agent is not running",
            r#"{"data":null,"message":"QEMU guest agent is not running\n"}"#,
        ),
        ok(r#"{"data":{"pid":1}}"#),
    ])
    .await;
    let e = r.client.agent_exec("pve", 100, &["true"]).await.unwrap_err();
    assert!(e.is_agent_down(), "{e}");
}

#[tokio::test]
async fn f15_unencoded_sshkeys_are_an_invalid_spec_naming_the_keys() {
    let body = r#"{"errors":{"sshkeys":"invalid format - invalid urlencoded string: ssh-rsa AAAAB3NzaC1yc2EAAAAD"},"data":null,"message":"Parameter verification failed.\n"}"#;
    let r = replay(vec![reply("400 Parameter verification failed.", body)]).await;
    let e = r
        .client
        .update_config(
            "pve",
            GuestType::Qemu,
            100,
            &Params::new().str("sshkeys", "ssh-rsa AAAAB3NzaC1yc2EAAAAD"),
        )
        .await
        .unwrap_err();
    match ProviderError::from(e) {
        ProviderError::InvalidSpec { field, reason } => {
            assert_eq!(field, "ssh_keys");
            assert!(reason.contains("invalid urlencoded string"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn f18_proxy_failures_retry_reads_but_not_writes() {
    let r = replay(vec![
        reply(
            "596 tls_process_server_certificate: certificate verify failed",
            r#"{"data":null}"#,
        ),
        reply("599 Too many redirections", r#"{"data":null}"#),
        ok(r#"{"data":{"status":"running","vmid":100}}"#),
    ])
    .await;
    let st = r.client.guest_status("pve2", GuestType::Qemu, 100).await.unwrap();
    assert_eq!(st.status.as_deref(), Some("running"));
    assert_eq!(r.requests().len(), 3);

    let r = replay(vec![reply(
        "596 tls_process_server_certificate: certificate verify failed",
        r#"{"data":null}"#,
    )])
    .await;
    let e = r
        .client
        .power(
            "pve2",
            GuestType::Qemu,
            100,
            berth_proxmox::client::PowerAction::Start,
            &Params::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "POST /nodes/pve2/qemu/100/status/start: HTTP 596 tls_process_server_certificate: certificate verify failed"
    );
    assert_eq!(r.requests().len(), 1);
    assert_eq!(ProviderError::from(e).code(), ErrorCode::Unavailable);
}

#[tokio::test]
async fn f16_resources_parse_with_mixed_number_forms() {
    let body = r#"{"data":[{"maxmem":2147483648,"name":"SRV-FW01","status":"running","maxdisk":34359738368,"template":0,"id":"qemu/100","vmid":100,"type":"qemu","uptime":5349141,"node":"x","tags":"berth;berth-fw1"},{"id":"lxc/101","vmid":"101","type":"lxc","template":"1","node":"x","maxcpu":"2"}]}"#;
    let r = replay(vec![ok(body)]).await;
    let res = r.client.cluster_resources(Some("vm")).await.unwrap();
    assert_eq!(res[0].maxdisk, Some(32 << 30));
    assert_eq!(res[0].tag_list(), vec!["berth", "berth-fw1"]);
    assert_eq!(
        (res[1].vmid, res[1].template, res[1].maxcpu),
        (Some(101), true, Some(2.0))
    );
}

#[tokio::test]
async fn auth_failure_with_an_empty_body() {
    let r = replay(vec![
        "HTTP/1.1 401 Authentication failed!\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    ])
    .await;
    let e = r.client.version().await.unwrap_err();
    assert_eq!(e.to_string(), "GET /version: HTTP 401 Authentication failed!");
    assert_eq!(r.requests().len(), 1);
    let p = ProviderError::from(e);
    assert_eq!(p.code(), ErrorCode::Unauthorized);
    assert!(!p.to_string().contains("s3cr3t"));
}
