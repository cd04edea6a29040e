//! The libvirt backend against libvirt's in-process `test:///default` driver: the conformance
//! suite and the bad-input cases, fast. Disks and seeds are real files made by `qemu-img`.

use std::sync::Arc;

mod common;

use berth_conformance::{Fixture, Recorder, run_all};
use berth_core::{CheckStatus, ErrorCode, GuestKind, InstanceRef, ListFilter, Provider, VmSpec};
use berth_libvirt::LibvirtProvider;
use common::{instance_dirs, spec, test_driver as setup};

#[tokio::test]
async fn test_driver_passes_the_conformance_suite_and_leaves_no_files() {
    let Some(s) = setup() else { return };
    let root = s.dir.path().to_owned();
    let f = Fixture {
        provider: Arc::new(s.provider),
        spec: Box::new(|kind: GuestKind, tag: &str| {
            let mut sp = spec(&format!("conf-{tag}"));
            sp.kind = kind;
            sp
        }),
        kinds: vec![GuestKind::Vm],
    };
    run_all(&f).await;
    assert_eq!(
        instance_dirs(&root),
        Vec::<String>::new(),
        "every instance's files are removed"
    );
    // The test driver's own domain is listed with --all, never as Berth's.
    let all = f
        .provider
        .list(ListFilter {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        all.iter().any(|i| i.name == "test" && i.instance_id.is_none()),
        "{all:?}"
    );
}

#[tokio::test]
async fn create_makes_an_overlay_a_seed_and_a_marked_domain() {
    let Some(s) = setup() else { return };
    let p = &s.provider;
    let sp = spec("web1");
    let inst = p.create(&sp, &Recorder::default()).await.unwrap();
    assert_eq!(inst.backend_id, "vm-web1");
    assert!(inst.ipv4.is_some(), "{inst:?}");
    let dir = p.instance_dir(&sp.instance_id);
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json", dir.join("disk.qcow2").to_str().unwrap()])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 1u64 << 30);
    assert_eq!(info["backing-filename-format"], "qcow2");
    assert!(
        info["backing-filename"]
            .as_str()
            .unwrap()
            .ends_with("/images/tiny.qcow2"),
        "{info}"
    );
    let iso = std::fs::read(dir.join("seed.iso")).unwrap();
    assert_eq!(&iso[16 * 2048 + 40..16 * 2048 + 46], b"cidata");

    let templates = p.list_templates().await.unwrap();
    assert_eq!(templates.len(), 1);
    assert_eq!(
        (
            templates[0].id.as_str(),
            templates[0].format.as_deref(),
            templates[0].disk_gib
        ),
        ("tiny", Some("qcow2"), Some(1))
    );
    let checks = p.validate().await;
    let by = |n: &str| {
        checks
            .iter()
            .find(|c| c.name == n)
            .unwrap_or_else(|| panic!("{n}: {checks:?}"))
    };
    assert_eq!(by("libvirt connection").status, CheckStatus::Ok, "{checks:?}");
    assert_eq!(by("templates").status, CheckStatus::Ok, "{checks:?}");
    assert_eq!(by("qemu-img").status, CheckStatus::Ok, "{checks:?}");
    assert!(by("domain type").detail.contains("qemu"), "{checks:?}");
    let cap = p.capacity().await.unwrap();
    assert!(
        cap.cpus_total > 0 && cap.memory_mib_total > 0 && cap.instances >= 2,
        "{cap:?}"
    );
    p.delete(&InstanceRef::Id(sp.instance_id.clone())).await.unwrap();
    assert!(!dir.exists());
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_leaves_nothing() {
    let Some(s) = setup() else { return };
    let p = &s.provider;
    let images = s.dir.path().join("images");
    std::os::unix::fs::symlink("/nonexistent/berth.qcow2", images.join("gone.qcow2")).unwrap();
    let mut broken = b"QFI\xfb".to_vec();
    broken.extend_from_slice(&[0xff; 60]);
    std::fs::write(images.join("broken.qcow2"), broken).unwrap();

    type Mutation = Box<dyn Fn(&mut VmSpec)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "template",
            Box::new(|s| s.template = Some("nope".into())),
            "no template \"nope\"",
        ),
        (
            "template",
            Box::new(|s| s.template = Some("gone".into())),
            "cannot be read",
        ),
        (
            "template",
            Box::new(|s| s.template = Some("broken".into())),
            "cannot be read",
        ),
        ("template", Box::new(|s| s.template = Some("../x".into())), "no path"),
        ("memory_mib", Box::new(|s| s.memory_mib = 512 * 1024), "MiB of memory"),
        ("cores", Box::new(|s| s.cores = 64), "CPUs"),
        ("kind", Box::new(|s| s.kind = GuestKind::Container), "VMs only"),
    ];
    for (field, mutate, words) in cases {
        let mut sp = spec("bad");
        mutate(&mut sp);
        match p.create(&sp, &Recorder::default()).await {
            Err(berth_core::ProviderError::InvalidSpec { field: got, reason }) => {
                assert_eq!(got, field, "{reason}");
                assert!(reason.contains(words), "{field}: {reason}");
            }
            other => panic!("bad {field}: expected InvalidSpec, got {other:?}"),
        }
    }
    // A name that an unowned domain (the test driver's own "test") already has.
    let mut sp = spec("dup");
    sp.name = "test".into();
    let err = p.create(&sp, &Recorder::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    assert!(err.to_string().contains("something other than Berth"), "{err}");
    // ...and Berth will not touch that domain.
    let err = p.delete(&InstanceRef::Backend("test".into())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    assert_eq!(instance_dirs(s.dir.path()), Vec::<String>::new());
    let owned = p.list(ListFilter::default()).await.unwrap();
    assert!(owned.is_empty(), "{owned:?}");
}

#[tokio::test]
async fn reconfigure_live_within_maxima_and_disks_only_grow() {
    let Some(s) = setup() else { return };
    let mut cfg = s.provider.config().clone();
    cfg.max_cores = Some(4);
    cfg.max_memory_mib = Some(1024);
    let p = LibvirtProvider::new(cfg, s.dir.path()).unwrap();
    let sp = spec("grow");
    p.create(&sp, &Recorder::default()).await.unwrap();
    let id = InstanceRef::Id(sp.instance_id.clone());
    let live = berth_core::Resize {
        cores: Some(3),
        memory_mib: Some(512),
        disk_gib: None,
    };
    let out = p.reconfigure(&id, &live).await.unwrap();
    assert!(!out.restart_required, "within the maxima the change is live");
    let now = p.describe(&id).await.unwrap();
    assert_eq!((now.cores, now.memory_mib), (Some(3), Some(512)));
    let beyond = berth_core::Resize {
        cores: Some(8),
        memory_mib: None,
        disk_gib: None,
    };
    let out = p.reconfigure(&id, &beyond).await.unwrap();
    assert!(out.restart_required, "beyond the maxima the change waits for a restart");
    // The definition holds the new count for the next start; asking again for what runs now
    // must set the definition back, not be taken for "no change".
    assert_eq!(saved_facts("vm-grow").await.cores, 8);
    let back = berth_core::Resize {
        cores: Some(3),
        memory_mib: None,
        disk_gib: None,
    };
    p.reconfigure(&id, &back).await.unwrap();
    assert_eq!(saved_facts("vm-grow").await.cores, 3);
    p.delete(&id).await.unwrap();
}

/// What the persistent definition of `name` says (the next start's values).
async fn saved_facts(name: &str) -> berth_libvirt::xml::DomainFacts {
    let name = name.to_owned();
    berth_libvirt::conn::Libvirt::new("test:///default")
        .call("reading the definition", move |c| {
            let d = c.lookup_domain_by_name(&name).unwrap();
            let xml = d.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).unwrap();
            Ok(berth_libvirt::xml::parse_domain(&xml).unwrap())
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn full_clones_are_independent_copies() {
    let Some(s) = setup() else { return };
    let mut cfg = s.provider.config().clone();
    cfg.clone = berth_libvirt::CloneMode::Full;
    let p = LibvirtProvider::new(cfg, s.dir.path()).unwrap();
    let sp = spec("full");
    p.create(&sp, &Recorder::default()).await.unwrap();
    let disk = p.instance_dir(&sp.instance_id).join("disk.qcow2");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json", disk.to_str().unwrap()])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert!(info.get("backing-filename").is_none(), "{info}");
    assert_eq!(info["virtual-size"], 1u64 << 30, "grown to the requested size");
    p.delete(&InstanceRef::Id(sp.instance_id.clone())).await.unwrap();
}

#[tokio::test]
async fn directories_and_domains_berth_cannot_prove_are_its_own_are_left_alone() {
    let Some(s) = setup() else { return };
    let p = &s.provider;
    // A directory in instances_dir named like the instance, but not Berth's.
    let sp = spec("foreign");
    let dir = p.instance_dir(&sp.instance_id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("precious.img"), b"data").unwrap();
    let err = p.create(&sp, &Recorder::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    let err = p.delete(&InstanceRef::Id(sp.instance_id.clone())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    assert!(dir.join("precious.img").exists());
    assert!(p.list(ListFilter::default()).await.unwrap().is_empty());

    // A copy of a Berth domain (same marker, another name): Berth refuses to pick one, and
    // deleting the copy keeps the files the original uses.
    let sp = spec("orig");
    p.create(&sp, &Recorder::default()).await.unwrap();
    berth_libvirt::conn::Libvirt::new("test:///default")
        .call("copying a domain", |c| {
            let d = c.lookup_domain_by_name("vm-orig").unwrap();
            let xml = d.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).unwrap();
            let (start, end) = (xml.find("<uuid>").unwrap(), xml.find("</uuid>").unwrap() + 7);
            let copy =
                format!("{}{}", &xml[..start], &xml[end..]).replace("<name>vm-orig</name>", "<name>vm-copy</name>");
            c.define_domain_xml(&copy).unwrap();
            Ok(())
        })
        .await
        .unwrap();
    let id = InstanceRef::Id(sp.instance_id.clone());
    let err = p.describe(&id).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    p.delete(&InstanceRef::Backend("vm-copy".into())).await.unwrap();
    assert!(
        p.instance_dir(&sp.instance_id).join("disk.qcow2").exists(),
        "the original's disk stays"
    );
    p.delete(&id).await.unwrap();
    assert!(!p.instance_dir(&sp.instance_id).exists());
}

#[tokio::test]
async fn oversized_disks_are_refused_not_wrapped() {
    let Some(s) = setup() else { return };
    let mut sp = spec("huge");
    sp.disk_gib = (1 << 34) + 1;
    let err = s.provider.create(&sp, &Recorder::default()).await.unwrap_err();
    assert!(
        matches!(&err, berth_core::ProviderError::InvalidSpec { field, .. } if field == "disk_gib"),
        "{err}"
    );
}
