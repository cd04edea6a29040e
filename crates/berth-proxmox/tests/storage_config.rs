//! The cluster's storage definitions against the emulator: created per type with PVE's
//! defaults, changed under the file's digest, create-only options and secrets kept as PVE keeps
//! them, removed with their pool memberships; every refusal in PVE's words, nothing changed.

mod common;

use berth_proxmox::client::{Params, PveError};
use berth_pve_emulator::{Fault, FaultRule};
use common::*;

fn says(e: PveError) -> String {
    e.to_string()
}

fn opts(pairs: &[(&str, &str)]) -> Params {
    pairs.iter().fold(Params::new(), |p, (k, v)| p.str(k, *v))
}

#[tokio::test]
async fn storage_definitions_are_created_read_changed_and_removed() {
    let emu = emulator().await;
    let c = client(&emu);
    let seeded = c.storage_configs(None).await.unwrap();
    let ids: Vec<&str> = seeded.iter().map(|s| s.storage.as_str()).collect();
    assert_eq!(ids, ["local", "local-lvm", "shared"]);
    assert_eq!(seeded[0].options["path"], "/var/lib/vz");
    assert_eq!(
        (
            seeded[1].options["vgname"].as_str(),
            seeded[1].options["thinpool"].as_str()
        ),
        ("pve", "data")
    );
    let digest = seeded[0].digest.clone().unwrap();
    assert!(seeded.iter().all(|s| s.digest.as_deref() == Some(digest.as_str())));

    // A directory for backups with a retention, on pve1 only.
    c.create_storage(
        "dumps",
        "dir",
        &opts(&[
            ("path", "/srv/dumps"),
            ("content", "backup,iso"),
            ("prune-backups", "keep-last=3,keep-daily=7"),
            ("nodes", "pve1"),
        ]),
    )
    .await
    .unwrap();
    let d = c.storage_config("dumps").await.unwrap();
    assert_eq!(
        (d.kind.as_str(), d.content.clone(), d.nodes.clone()),
        (
            "dir",
            vec!["backup".to_owned(), "iso".to_owned()],
            vec!["pve1".to_owned()]
        )
    );
    let prune = d.prune_backups.unwrap();
    assert_eq!((prune.keep_last, prune.keep_daily), (Some(3), Some(7)));
    assert_ne!(d.digest.as_deref(), Some(digest.as_str()), "the file changed");
    let on = |n: &'static str| {
        let c = c.clone();
        async move {
            c.storages(n, None)
                .await
                .unwrap()
                .into_iter()
                .any(|s| s.storage.as_deref() == Some("dumps"))
        }
    };
    assert!(on("pve1").await && !on("pve2").await);

    // NFS mounts under /mnt/pve/<id> and is shared by nature; the default content is images.
    c.create_storage("nas", "nfs", &opts(&[("server", "10.0.0.9"), ("export", "/tank")]))
        .await
        .unwrap();
    let nas = c.storage_config("nas").await.unwrap();
    assert_eq!(nas.options["path"], "/mnt/pve/nas");
    assert_eq!(nas.content, ["images"]);
    assert!(
        c.storages("pve2", None)
            .await
            .unwrap()
            .iter()
            .any(|s| s.storage.as_deref() == Some("nas") && s.shared)
    );

    // Changed under the digest it was read with; a stale digest is refused (creating `nas` has
    // already made the one read with `dumps` stale).
    let e = c
        .update_storage("dumps", &opts(&[("nodes", "pve1,pve2")]), &[], d.digest.as_deref())
        .await
        .unwrap_err();
    assert!(says(e).contains("detected modified configuration"));
    let d = c.storage_config("dumps").await.unwrap();
    c.update_storage("dumps", &opts(&[("nodes", "pve1,pve2")]), &[], d.digest.as_deref())
        .await
        .unwrap();
    assert!(on("pve2").await);
    let e = c
        .update_storage("dumps", &opts(&[("disable", "1")]), &[], d.digest.as_deref())
        .await
        .unwrap_err();
    assert!(
        says(e)
            .contains("update storage failed: detected modified configuration - file changed by other user? Try again")
    );
    // delete= removes an optional option; the retention goes.
    c.update_storage("dumps", &Params::new(), &["prune-backups"], None)
        .await
        .unwrap();
    assert!(c.storage_config("dumps").await.unwrap().prune_backups.is_none());
    // Disabled: still listed, no longer enabled on the node.
    c.update_storage("dumps", &opts(&[("disable", "1")]), &[], None)
        .await
        .unwrap();
    let st = c.storages("pve1", None).await.unwrap();
    let dumps = st.iter().find(|s| s.storage.as_deref() == Some("dumps")).unwrap();
    assert!(!dumps.enabled && !dumps.active);

    // Removal takes its pool membership with it; the second time it does not exist.
    c.update_pool("berth", &[], &["dumps"], false, false).await.unwrap();
    c.delete_storage("dumps").await.unwrap();
    assert!(
        c.storage_configs(None)
            .await
            .unwrap()
            .iter()
            .all(|s| s.storage != "dumps")
    );
    let berth = &c.pools(Some("berth")).await.unwrap()[0];
    assert!(berth.members.iter().all(|m| m.storage.as_deref() != Some("dumps")));
    let e = c.delete_storage("dumps").await.unwrap_err();
    assert!(says(e).contains("delete storage failed: storage 'dumps' does not exist"));
    assert!(emu.schema_violations().is_empty(), "{:?}", emu.schema_violations());
}

#[tokio::test]
async fn secrets_are_written_but_never_read_back() {
    let emu = emulator().await;
    let c = client(&emu);
    let made = c
        .create_storage(
            "pbs1",
            "pbs",
            &opts(&[
                ("server", "10.0.0.7"),
                ("datastore", "main"),
                ("username", "backup@pbs"),
                ("password", "hunter2-secret"),
                ("encryption-key", "autogen"),
            ]),
        )
        .await
        .unwrap();
    // PVE hands the generated key to the caller once; it never prints.
    let key = made.encryption_key.expect("generated key");
    assert!(key.expose().contains("\"key\""));
    let shown = format!("{key:?} {key}");
    assert!(!shown.contains(key.expose()), "{shown}");
    let cfg = c.storage_config("pbs1").await.unwrap();
    assert_eq!(cfg.content, ["backup"]);
    let shown = serde_json::to_string(&cfg).unwrap();
    assert!(
        !shown.contains("hunter2") && !shown.contains("encryption-key") && !shown.contains("password"),
        "{shown}"
    );
    // The password can be changed and removed like any optional option; still never shown.
    c.update_storage("pbs1", &opts(&[("password", "other-secret")]), &[], None)
        .await
        .unwrap();
    c.update_storage("pbs1", &Params::new(), &["password"], None)
        .await
        .unwrap();
    let all = serde_json::to_string(&c.storage_configs(Some("pbs")).await.unwrap()).unwrap();
    assert!(all.contains("pbs1") && !all.contains("secret"), "{all}");
}

#[tokio::test]
async fn bad_storage_input_names_the_field_and_changes_nothing() {
    let emu = emulator().await;
    let c = client(&emu);
    let before = c.storage_configs(None).await.unwrap();
    for (id, kind, o, expect) in [
        (
            "x1",
            "floppy",
            vec![],
            "type: value 'floppy' does not have a value in the enumeration",
        ),
        ("x2", "dir", vec![], "missing value for required option 'path'"),
        (
            "x3",
            "dir",
            vec![("path", "/srv/x"), ("server", "10.0.0.1")],
            "unexpected property 'server'",
        ),
        (
            "x4",
            "lvmthin",
            vec![("vgname", "pve"), ("thinpool", "data"), ("content", "iso")],
            "storage does not support content type 'none'",
        ),
        (
            "local",
            "dir",
            vec![("path", "/srv/y")],
            "create storage failed: storage ID 'local' already defined",
        ),
        ("x5", "dir", vec![("path", "relative/path")], "path: invalid format"),
        (
            "9bad",
            "dir",
            vec![("path", "/srv/z")],
            "storage: invalid format - storage ID '9bad'",
        ),
    ] {
        let e = c.create_storage(id, kind, &opts(&o)).await.unwrap_err();
        let e = says(e);
        assert!(e.contains(expect), "{id}: {e}");
    }
    for (id, o, del, expect) in [
        (
            "local",
            vec![("path", "/elsewhere")],
            vec![],
            "path: property is not defined in schema",
        ),
        (
            "shared",
            vec![("server", "10.0.0.99")],
            vec![],
            "update storage failed: can't change value of fixed parameter 'server'",
        ),
        (
            "local",
            vec![],
            vec!["path"],
            "update storage failed: unable to delete fixed option 'path'",
        ),
        (
            "local",
            vec![],
            vec!["server"],
            "update storage failed: no such option 'server'",
        ),
        (
            "local",
            vec![("disable", "1")],
            vec!["disable"],
            "cannot set and delete property 'disable' at the same time!",
        ),
        (
            "nope",
            vec![("disable", "1")],
            vec![],
            "update storage failed: storage 'nope' does not exist",
        ),
        (
            "local",
            vec![("content", "images,floppies")],
            vec![],
            "content: invalid format - invalid content type 'floppies'",
        ),
    ] {
        let e = c.update_storage(id, &opts(&o), &del, None).await.unwrap_err();
        let e = says(e);
        assert!(e.contains(expect), "{id}: {e}");
    }
    let after = c.storage_configs(None).await.unwrap();
    assert_eq!(before, after, "nothing changed");
}

#[tokio::test]
async fn storage_writes_need_datastore_allocate_and_faults_change_nothing() {
    let emu = emulator().await;
    emu.add_token(
        "berth@pve!audit",
        "audit-secret",
        vec![("/storage/local".into(), vec!["Datastore.Audit".into()])],
    );
    let narrow = client_as(&emu, "berth@pve!audit", "audit-secret");
    let seen = narrow.storage_configs(None).await.unwrap();
    assert_eq!(seen.iter().map(|s| s.storage.as_str()).collect::<Vec<_>>(), ["local"]);
    let e = narrow
        .create_storage("mine", "dir", &opts(&[("path", "/srv/mine")]))
        .await
        .unwrap_err();
    assert!(says(e).contains("Permission check failed (/storage, Datastore.Allocate)"));
    let e = narrow.storage_config("local").await.unwrap_err();
    assert!(says(e).contains("Datastore.Allocate"));

    let c = client(&emu);
    let before = c.storage_configs(None).await.unwrap();
    for (method, path) in [
        ("POST", "/storage"),
        ("PUT", "/storage/local"),
        ("DELETE", "/storage/local"),
    ] {
        emu.inject(FaultRule {
            method: Some(method.into()),
            path_contains: path.into(),
            fault: Fault::Http {
                status: 500,
                message: "Internal Server Error".into(),
            },
            times: 1,
        });
    }
    assert!(
        c.create_storage("y", "dir", &opts(&[("path", "/srv/y")]))
            .await
            .is_err()
    );
    assert!(
        c.update_storage("local", &opts(&[("disable", "1")]), &[], None)
            .await
            .is_err()
    );
    assert!(c.delete_storage("local").await.is_err());
    assert_eq!(c.storage_configs(None).await.unwrap(), before);
}
