//! Berth's reaction to each kind of failure the emulator can inject: retried and succeeded,
//! failed with the right error code and message, or cleaned up, and never a duplicate guest.

mod common;

use std::time::Duration;

use berth_core::{ErrorCode, GuestKind, InstanceRef, ListFilter, Provider, ProviderError};
use berth_pve_emulator::{Emulator, EmulatorConfig, Fault, FaultRule, Timings};
use common::*;

fn rule(method: &str, path: &str, fault: Fault, times: u32) -> FaultRule {
    FaultRule {
        method: Some(method.to_owned()),
        path_contains: path.to_owned(),
        fault,
        times,
    }
}

fn count(emu: &berth_pve_emulator::EmulatorHandle, method: &str, suffix: &str) -> usize {
    emu.requests()
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(suffix))
        .count()
}

#[tokio::test]
async fn reads_are_retried_on_5xx_and_proxy_failures() {
    let emu = emulator().await;
    let p = provider(&emu);
    for (status, message) in [
        (500, "unexpected internal error"),
        (595, "Connection refused"),
        (596, "tls_process_server_certificate: certificate verify failed"),
        (599, "Too many redirections"),
    ] {
        let before = count(&emu, "GET", "/cluster/resources");
        emu.inject(rule(
            "GET",
            "/cluster/resources",
            Fault::Http {
                status,
                message: message.into(),
            },
            2,
        ));
        p.list(ListFilter::default())
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(
            count(&emu, "GET", "/cluster/resources") - before,
            3,
            "{status}: two failures, then success"
        );
    }
}

#[tokio::test]
async fn a_persistent_5xx_is_unavailable_never_absent() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "w7");
    p.create(&spec, &Events::default()).await.unwrap();
    emu.inject(rule(
        "GET",
        "/cluster/resources",
        Fault::Http {
            status: 500,
            message: "Internal Server Error".into(),
        },
        50,
    ));
    let id = InstanceRef::Id(spec.instance_id.clone());
    let e = p.describe(&id).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    let e = p.delete(&id).await.unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::Unavailable,
        "delete must not report a 5xx as absent: {e}"
    );
    emu.clear_faults();
    assert_eq!(
        marked(&emu, spec.instance_id.as_str()).len(),
        1,
        "the VM is still there"
    );
}

#[tokio::test]
async fn config_lock_timeouts_are_retried() {
    let emu = emulator().await;
    let p = provider(&emu);
    emu.inject(rule("PUT", "/config", Fault::LockTimeout, 2));
    let spec = spec(GuestKind::Vm, "cfglock");
    p.create(&spec, &Events::default())
        .await
        .expect("create after two lock timeouts");
    assert_eq!(count(&emu, "PUT", "/config"), 3);
    assert_eq!(marked(&emu, spec.instance_id.as_str()).len(), 1);
}

#[tokio::test]
async fn transient_clone_dispatch_failures_are_retried_without_duplicates() {
    for (n, fault) in [
        Fault::LockTimeout,
        Fault::NoWorkerUpid,
        Fault::Http {
            status: 596,
            message: "tls_process_server_certificate: certificate verify failed".into(),
        },
        Fault::Http {
            status: 595,
            message: "Connection refused".into(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let emu = emulator().await;
        let p = provider(&emu);
        emu.inject(rule("POST", "/clone", fault.clone(), 1));
        let spec = spec(GuestKind::Vm, &format!("dispatch{n}"));
        p.create(&spec, &Events::default())
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(count(&emu, "POST", "/clone"), 2, "{fault:?}: sent again once");
        assert_eq!(marked(&emu, spec.instance_id.as_str()).len(), 1, "{fault:?}");
    }
}

#[tokio::test]
async fn no_worker_upid_on_start_is_retried() {
    let emu = emulator().await;
    let p = provider(&emu);
    emu.inject(rule("POST", "/status/start", Fault::NoWorkerUpid, 2));
    let spec = spec(GuestKind::Vm, "noworker");
    p.create(&spec, &Events::default()).await.expect("create");
    assert_eq!(count(&emu, "POST", "/status/start"), 3);
}

#[tokio::test]
async fn a_clone_task_failing_on_a_storage_lock_is_cloned_again() {
    let emu = emulator().await;
    let p = provider(&emu);
    let msg = "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout";
    emu.inject(rule("POST", "/clone", Fault::TaskFailure { message: msg.into() }, 1));
    let spec = spec(GuestKind::Vm, "storagelock");
    p.create(&spec, &Events::default()).await.expect("create");
    assert_eq!(count(&emu, "POST", "/clone"), 2);
    assert_eq!(marked(&emu, spec.instance_id.as_str()).len(), 1);
}

#[tokio::test]
async fn a_failed_start_removes_the_half_made_vm() {
    let emu = emulator().await;
    let p = provider(&emu);
    let msg = "start failed: QEMU exited with code 1";
    emu.inject(rule(
        "POST",
        "/status/start",
        Fault::TaskFailure { message: msg.into() },
        1,
    ));
    let spec = spec(GuestKind::Vm, "badstart");
    let e = p.create(&spec, &Events::default()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.to_string().contains(msg), "{e}");
    assert!(marked(&emu, spec.instance_id.as_str()).is_empty(), "cleaned up");
    assert!(named(&emu, &spec.name).is_empty());
    assert!(emu.requests().iter().any(|r| {
        r.method == "DELETE"
            && r.params.iter().any(|(k, v)| k == "purge" && v == "1")
            && r.params
                .iter()
                .any(|(k, v)| k == "destroy-unreferenced-disks" && v == "1")
    }));
}

#[tokio::test]
async fn task_warnings_count_as_success() {
    let emu = emulator().await;
    let p = provider(&emu);
    emu.inject(rule("POST", "/clone", Fault::TaskWarnings { count: 1 }, 1));
    emu.inject(rule("POST", "/status/start", Fault::TaskWarnings { count: 2 }, 1));
    let spec = spec(GuestKind::Vm, "warn");
    let inst = p.create(&spec, &Events::default()).await.expect("warnings are success");
    assert!(inst.ipv4.is_some());
}

#[tokio::test]
async fn vmid_races_move_to_another_vmid() {
    for (n, path) in ["/cluster/nextid", "/clone"].into_iter().enumerate() {
        let emu = emulator().await;
        let p = provider(&emu);
        emu.inject(FaultRule {
            method: None,
            path_contains: path.into(),
            fault: Fault::NextIdRace,
            times: 1,
        });
        let spec = spec(GuestKind::Vm, &format!("race{n}"));
        let inst = p
            .create(&spec, &Events::default())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let foreign: Vec<_> = emu
            .guests()
            .into_iter()
            .filter(|g| g.name.starts_with("foreign-"))
            .collect();
        assert_eq!(foreign.len(), 1, "{path}: the race happened");
        assert_ne!(foreign[0].vmid.to_string(), inst.backend_id, "{path}: not adopted");
        assert!(
            foreign[0].tags.iter().all(|t| !t.starts_with("berth")),
            "{path}: the foreign VM is untouched"
        );
        assert_eq!(marked(&emu, spec.instance_id.as_str()).len(), 1);
    }
}

#[tokio::test]
async fn container_vmid_race_moves_to_another_vmid() {
    let emu = emulator().await;
    let p = provider(&emu);
    emu.inject(rule("POST", "/lxc", Fault::NextIdRace, 1));
    let spec = spec(GuestKind::Container, "race");
    p.create(&spec, &Events::default()).await.expect("create");
    assert_eq!(count(&emu, "POST", "/lxc"), 2);
    assert_eq!(marked(&emu, spec.instance_id.as_str()).len(), 1);
}

#[tokio::test]
async fn slow_answers_are_waited_for() {
    let emu = emulator().await;
    let p = provider(&emu);
    emu.inject(rule("POST", "/clone", Fault::Delay(Duration::from_millis(150)), 1));
    emu.inject(rule("GET", "/status", Fault::Delay(Duration::from_millis(50)), 3));
    p.create(&spec(GuestKind::Vm, "slow"), &Events::default())
        .await
        .expect("create");
}

#[tokio::test]
async fn a_refused_delete_is_an_error_not_absence() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "nodel");
    p.create(&spec, &Events::default()).await.unwrap();
    emu.inject(rule(
        "DELETE",
        "/qemu/",
        Fault::Http {
            status: 500,
            message: "unable to remove VM - used in HA resources and purge parameter not set.".into(),
        },
        1,
    ));
    let id = InstanceRef::Id(spec.instance_id.clone());
    let e = p.delete(&id).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.to_string().contains("used in HA resources"), "{e}");
    assert_eq!(marked(&emu, spec.instance_id.as_str()).len(), 1);
    assert_eq!(p.delete(&id).await.unwrap(), berth_core::DeleteOutcome::Deleted);
}

#[tokio::test]
async fn permission_errors_name_the_privilege_and_create_nothing() {
    let emu = emulator().await;
    let p = provider(&emu);
    emu.inject(rule(
        "POST",
        "/clone",
        Fault::Http {
            status: 403,
            message: "Permission check failed (/vms/10001, VM.Allocate)".into(),
        },
        1,
    ));
    let spec = spec(GuestKind::Vm, "perm");
    let e = p.create(&spec, &Events::default()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthorized, "{e}");
    assert!(e.to_string().contains("VM.Allocate"), "{e}");
    assert!(named(&emu, &spec.name).is_empty());
}

#[tokio::test]
async fn an_agent_that_never_answers_times_out_and_cleans_up() {
    let emu = emulator().await;
    emu.set_timings(Timings {
        agent_ready: Duration::from_secs(3600),
        ..Timings::fast()
    });
    let mut cfg = config(&emu);
    cfg.network_timeout_secs = 1;
    let p = berth_proxmox::ProxmoxProvider::new(cfg).unwrap();
    let spec = spec(GuestKind::Vm, "noagent");
    let e = p.create(&spec, &Events::default()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(e.to_string().contains("QEMU guest agent is not running"), "{e}");
    assert!(
        marked(&emu, spec.instance_id.as_str()).is_empty(),
        "removed after the timeout"
    );
}

#[tokio::test]
async fn the_old_error_envelope_still_yields_pve_messages() {
    let emu = Emulator::start(EmulatorConfig {
        timings: Timings::fast(),
        old_error_envelope: true,
        schema_path: EmulatorConfig::default_schema_path(),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let p = provider(&emu);
    // The message can only come from the HTTP reason phrase: the body is {"data":null}.
    let e = p.describe(&InstanceRef::Backend("4242".into())).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    emu.inject(rule("POST", "/clone", Fault::NextIdRace, 1));
    let spec = spec(GuestKind::Vm, "oldenv");
    p.create(&spec, &Events::default())
        .await
        .expect("already-exists is recognised from the reason phrase");
    let c = client(&emu);
    let e = c
        .guest_status("pve1", berth_proxmox::client::GuestType::Qemu, 4242)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[tokio::test]
async fn random_transient_faults_never_duplicate_or_leak() {
    let emu = emulator().await;
    let p = provider(&emu);
    emu.set_fault_rate(0.1);
    let mut specs = Vec::new();
    for n in 0..6 {
        let kind = if n % 2 == 0 {
            GuestKind::Vm
        } else {
            GuestKind::Container
        };
        let s = spec(kind, &format!("chaos{n}"));
        let r = p.create(&s, &Events::default()).await;
        let m = marked(&emu, s.instance_id.as_str());
        assert!(m.len() <= 1, "never two guests for one instance: {m:?}");
        if let Err(e) = &r {
            assert!(e.is_retryable() || matches!(e, ProviderError::Internal { .. }), "{e}");
        }
        specs.push(s);
    }
    emu.clear_faults();
    for s in &specs {
        p.create(s, &Events::default()).await.expect("re-run without faults");
        assert_eq!(marked(&emu, s.instance_id.as_str()).len(), 1);
        p.delete(&InstanceRef::Id(s.instance_id.clone())).await.unwrap();
    }
    let left: Vec<_> = emu
        .guests()
        .into_iter()
        .filter(|g| !g.template && !g.name.starts_with("foreign-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Reading a guest's description by VMID: a 5xx is an error, never "not Berth's" (which would
/// turn into a permanent Conflict on delete).
#[tokio::test]
async fn a_5xx_reading_the_marker_by_vmid_is_not_a_conflict() {
    let emu = emulator().await;
    let p = provider(&emu);
    emu.add_foreign_vm("pve1", 4343, "someone-else");
    emu.inject(rule(
        "GET",
        "/qemu/4343/config",
        Fault::Http {
            status: 500,
            message: "Internal Server Error".into(),
        },
        50,
    ));
    let e = p.delete(&InstanceRef::Backend("4343".into())).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    emu.clear_faults();
    let e = p.delete(&InstanceRef::Backend("4343".into())).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
}

/// A found guest that "disappears" every time it is waited for (its status says the config does
/// not exist while `/cluster/resources` still lists it) makes create give up after a few rounds
/// with a clear error, instead of looping forever.
#[tokio::test]
async fn a_guest_that_keeps_vanishing_ends_create_with_an_error() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "ghost");
    let inst = p.create(&spec, &Events::default()).await.unwrap();
    let vmid: u32 = inst.backend_id.parse().unwrap();
    // Stopped, so the lock applies at once (not as a pending change).
    p.power(&InstanceRef::Id(spec.instance_id.clone()), berth_core::PowerOp::Stop)
        .await
        .unwrap();
    assert_eq!(set_lock(&emu, "pve1", vmid, "backup").await.as_deref(), Some("backup"));
    emu.inject(rule(
        "GET",
        &format!("/qemu/{vmid}/status/current"),
        Fault::Http {
            status: 500,
            message: format!("Configuration file 'nodes/pve1/qemu-server/{vmid}.conf' does not exist"),
        },
        10_000,
    ));
    let before = count(&emu, "GET", &format!("/qemu/{vmid}/status/current"));
    // Only a guard against hanging the test run; nothing about speed is asserted.
    let e = tokio::time::timeout(Duration::from_secs(60), p.create(&spec, &Events::default()))
        .await
        .expect("create gives up instead of looping forever")
        .unwrap_err();
    assert!(e.to_string().contains("disappeared"), "{e}");
    let probes = count(&emu, "GET", &format!("/qemu/{vmid}/status/current")) - before;
    assert!(probes <= 3, "a bounded number of rounds: {probes}");
    emu.clear_faults();
    assert_eq!(marked(&emu, spec.instance_id.as_str()).len(), 1, "nothing duplicated");
}

/// A hibernated VM (`lock: suspended`) is started at once (PVE resumes it), never waited for;
/// delete and other locks fail fast with a Conflict naming the lock.
#[tokio::test]
async fn non_creation_locks_are_not_waited_for() {
    let emu = emulator().await;
    let p = provider(&emu);
    let spec = spec(GuestKind::Vm, "hibernated");
    let inst = p.create(&spec, &Events::default()).await.unwrap();
    let vmid: u32 = inst.backend_id.parse().unwrap();
    let id = InstanceRef::Id(spec.instance_id.clone());
    p.power(&id, berth_core::PowerOp::Stop).await.unwrap();
    assert_eq!(
        set_lock(&emu, "pve1", vmid, "suspended").await.as_deref(),
        Some("suspended")
    );

    let starts = || count(&emu, "POST", &format!("/qemu/{vmid}/status/start"));
    let before = starts();
    // The emulator refuses any start of a locked VM (real PVE resumes a hibernated one), so
    // only "sent at once, not waited for" is checked here.
    let r = p.power(&id, berth_core::PowerOp::Start).await;
    assert_eq!(starts() - before, 1, "start was sent: {r:?}");
    if let Err(e) = &r {
        assert_ne!(e.code(), ErrorCode::Timeout, "{e}");
    }

    let deletes = || emu.requests().iter().filter(|r| r.method == "DELETE").count();
    let before = deletes();
    let e = p.delete(&id).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    assert!(e.to_string().contains("locked (suspended)"), "{e}");
    assert_eq!(deletes(), before, "nothing deleted");

    assert_eq!(set_lock(&emu, "pve1", vmid, "backup").await.as_deref(), Some("backup"));
    let e = p.power(&id, berth_core::PowerOp::Start).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    assert!(e.to_string().contains("locked (backup)"), "{e}");
    assert_eq!(marked(&emu, spec.instance_id.as_str()).len(), 1);
}

/// The guest agent cannot be asked (403) while the start task fails: the start's own error is
/// what the create reports, and the half-made VM is removed once that task has ended.
#[tokio::test]
async fn a_failed_start_outranks_an_address_that_cannot_be_asked() {
    let emu = emulator().await;
    let p = provider(&emu);
    let msg = "start failed: QEMU exited with code 1";
    emu.inject(FaultRule {
        method: Some("GET".into()),
        path_contains: "/agent/network-get-interfaces".into(),
        fault: Fault::Http {
            status: 403,
            message: "Permission check failed (/vms/100, VM.GuestAgent.Audit)".into(),
        },
        times: 100,
    });
    emu.inject(rule(
        "POST",
        "/status/start",
        Fault::TaskFailure { message: msg.into() },
        1,
    ));
    let spec = spec(GuestKind::Vm, "startandagent");
    let e = p.create(&spec, &Events::default()).await.unwrap_err();
    assert!(e.to_string().contains(msg), "{e}");
    assert!(named(&emu, &spec.name).is_empty(), "the half-made VM is removed");
}
