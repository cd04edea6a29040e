//! `berth plan | apply | discover --export | drift | audit verify --file` against the PVE
//! emulator: a cluster exported plans to nothing, a saved plan applies once and then is stale, a
//! site applied with --yes converges, drift exits 2, every apply is in the audit file's chain.

mod common;

use common::*;

/// The next matching request fails with `status` and `message`.
fn fail_once(env: &Env, method: &str, path: &str, status: u16, message: &str) {
    env.emu.inject(berth_pve_emulator::FaultRule {
        method: Some(method.into()),
        path_contains: path.into(),
        fault: berth_pve_emulator::Fault::Http {
            status,
            message: message.into(),
        },
        times: 1,
    });
}

/// The apply id a failed apply names in "`berth apply --resume ID` finishes the rest".
fn resume_id(stderr: &str) -> String {
    stderr
        .split("berth apply --resume ")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap_or_else(|| panic!("the failure says how to resume: {stderr}"))
        .to_owned()
}

/// The apply id an apply that kept checkpoints names in "checkpoints kept: `berth rollback ID`".
fn rollback_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("checkpoints kept: `berth rollback ")
                .and_then(|r| r.split('`').next())
        })
        .unwrap_or_else(|| panic!("the apply names its checkpoints: {stdout}"))
        .to_owned()
}

fn site(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const SITE: &str = r#"version = 1
[proxmox]
[[proxmox.storage]]
id = "nas"
type = "nfs"
server = "10.0.0.9"
export = "/tank"
content = ["backup"]

[[proxmox.pools]]
id = "web"
comment = "front ends"

[[proxmox.network]]
node = "pve1"
iface = "vmbr1"
type = "bridge"
bridge_ports = ["eno2"]
cidr = "192.168.5.1/24"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_planned_applied_exported_and_audited() {
    let env = start(berth_pve_emulator::Timings::fast()).await;
    let dir = env.dir.path();
    let audit = dir.join("audit.jsonl").display().to_string();
    let file = site(dir, "site.toml", SITE);

    // Planned and saved: exit 2 (changes), each object with its action.
    let plan_path = dir.join("plan.json").display().to_string();
    let planned = env.run(&["plan", "-f", &file, "--out", &plan_path]).await;
    assert_eq!(planned.status.code(), Some(2), "{}", stderr(&planned));
    let text = stdout(&planned);
    for want in [
        "+ storage.nas  create  (line 3)",
        "+ pool.web  create",
        "+ net.pve1.vmbr1  create",
        "Plan: 3 create, 0 update",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    // Only what --target names.
    let some = env.run(&["plan", "-f", &file, "--target", "pool.*"]).await;
    assert_eq!(some.status.code(), Some(2));
    assert!(
        stdout(&some).contains("+ pool.web") && !stdout(&some).contains("storage.nas"),
        "{}",
        stdout(&some)
    );
    // Applied once; the same plan again is stale (it was made against a cluster without them).
    let applied = env.run(&["apply", &plan_path, "--audit", &audit]).await;
    assert!(applied.status.success(), "{}", stderr(&applied));
    assert!(
        stdout(&applied).contains("reloaded the network of pve1"),
        "{}",
        stdout(&applied)
    );
    let again = env.run(&["apply", &plan_path, "--audit", &audit]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("stale plan: storage.nas changed since it was planned"),
        "{}",
        stderr(&again)
    );
    let clean = env.run(&["plan", "-f", &file]).await;
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    assert!(stdout(&clean).contains("No changes"), "{}", stdout(&clean));

    // Another file changes the pool; against the first file that is drift (exit 2).
    let other = site(
        dir,
        "other.toml",
        "version = 1\n[proxmox]\n[[proxmox.pools]]\nid = \"web\"\ncomment = \"changed\"\n",
    );
    // pool.web is the first file's: this one changes it only when told to take it over.
    let planned = env.run(&["plan", "-f", &other, "--audit", &audit]).await;
    assert!(
        stdout(&planned)
            .contains("The plan changes 1 of them (pool.web): `berth apply` needs --adopt to take them over."),
        "{}",
        stdout(&planned)
    );
    let unowned = env.run(&["apply", "-f", &other, "--yes", "--audit", &audit]).await;
    assert_eq!(unowned.status.code(), Some(1));
    assert!(
        stderr(&unowned).contains(
            "pool.web is on the cluster but never applied from this file: the plan would change it; --adopt takes it over (nothing was applied)"
        ),
        "{}",
        stderr(&unowned)
    );
    let unasked = env.run(&["apply", "-f", &other, "--adopt", "--audit", &audit]).await;
    assert!(stderr(&unasked).contains("confirm with --yes"), "{}", stderr(&unasked));
    let yes = env
        .run(&["apply", "-f", &other, "--yes", "--adopt", "--audit", &audit])
        .await;
    assert!(
        yes.status.success() && stdout(&yes).contains("Applied. A new plan shows no changes."),
        "{}",
        stderr(&yes)
    );
    let drift = env.run(&["drift", "-f", &file]).await;
    assert_eq!(drift.status.code(), Some(2));
    assert!(
        stdout(&drift).contains("comment: \"changed\" → \"front ends\""),
        "{}",
        stdout(&drift)
    );

    // The cluster written out plans to nothing.
    let exported = dir.join("exported.toml").display().to_string();
    let out = env.run(&["discover", "--export", "--out", &exported]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let round = env.run(&["plan", "-f", &exported]).await;
    assert_eq!(
        round.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&round),
        std::fs::read_to_string(&exported).unwrap()
    );

    // The audit file holds every apply and action, chained.
    let verified = env.run(&["audit", "verify", "--file", &audit]).await;
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(
        stdout(&verified).starts_with("audit file intact: "),
        "{}",
        stdout(&verified)
    );
    let lines = std::fs::read_to_string(&audit).unwrap();
    assert!(
        lines.contains("decl.apply.failed")
            && lines.contains("decl.plan.applied")
            && lines.contains("\"decl.action.done\""),
        "{lines}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_site_names_every_problem_and_changes_nothing() {
    let env = start(berth_pve_emulator::Timings::fast()).await;
    let dir = env.dir.path();
    let bad = site(
        dir,
        "bad.toml",
        "version = 1\n[proxmox]\ncolour = \"blue\"\n[[proxmox.backups]]\nid = \"b\"\nschedule = \"21:00\"\nstorage = \"nope\"\nall = true\n",
    );
    let before = env.mutations();
    let out = env.run(&["apply", "-f", &bad, "--yes"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("bad.toml:3: proxmox.colour: unknown key"),
        "{}",
        stderr(&out)
    );
    let refs = site(
        dir,
        "refs.toml",
        "version = 1\n[proxmox]\n[[proxmox.backups]]\nid = \"b\"\nschedule = \"21:00\"\nstorage = \"nope\"\nall = true\n",
    );
    let out = env.run(&["plan", "-f", &refs]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refs.toml:3: backup.b.storage: storage nope does not exist"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.mutations(), before, "nothing changed");
}

/// A change that restarts a VM keeps a snapshot first; `berth checkpoints` lists it and
/// `berth rollback ID --yes` puts the VM back; both are in the audit chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_kept_and_rolled_back() {
    let env = start(berth_pve_emulator::Timings::fast()).await;
    let dir = env.dir.path();
    let audit = dir.join("audit.jsonl").display().to_string();
    let vm = |cores: u32| {
        format!(
            "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 170\nnode = \"pve1\"\nname = \"app\"\ncores = {cores}\nmemory = 1024\n\
             disks.scsi0 = {{ storage = \"local-lvm\", size = \"4G\" }}\nnets.net0 = {{ bridge = \"vmbr0\" }}\n"
        )
    };
    let made = site(dir, "vm.toml", &vm(1));
    let out = env.run(&["apply", "-f", &made, "--yes", "--audit", &audit]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let bigger = site(dir, "vm2.toml", &vm(2));
    let out = env
        .run(&["apply", "-f", &bigger, "--yes", "--adopt", "--audit", &audit])
        .await;
    let text = stdout(&out);
    assert!(
        text.contains("~! vm.170  update; takes effect at the next restart (cores not hotpluggable)"),
        "{text}"
    );
    assert!(text.contains("vm.170: checkpoint snapshot berth-"), "{text}");
    let id = rollback_id(&text);
    let listed = env.run(&["checkpoints", "--audit", &audit]).await;
    assert!(
        stdout(&listed).contains(&format!("apply {id} at ")),
        "{}",
        stdout(&listed)
    );
    assert!(
        stdout(&listed).contains("roll vm.170 back to snapshot berth-"),
        "{}",
        stdout(&listed)
    );
    let back = env.run(&["rollback", &id, "--yes", "--audit", &audit]).await;
    assert!(back.status.success(), "{}", stderr(&back));
    assert!(
        stdout(&back).contains("vm.170: rolled back to berth-"),
        "{}",
        stdout(&back)
    );
    let drift = env.run(&["drift", "-f", &bigger]).await;
    assert_eq!(
        drift.status.code(),
        Some(2),
        "the rollback undid the change: {}",
        stdout(&drift)
    );
    // Against the ledger, what the rollback put back is not a change outside Berth: the file's
    // value is an edit not applied (again) yet.
    let drift = env.run(&["drift", "-f", &bigger, "--audit", &audit]).await;
    let text = stdout(&drift);
    assert_eq!(drift.status.code(), Some(0), "{text}");
    assert!(
        text.contains("No drift") && text.contains("~ vm.170  cores: \"1\" → \"2\""),
        "{text}"
    );
    let verified = env.run(&["audit", "verify", "--file", &audit]).await;
    assert!(verified.status.success(), "{}", stdout(&verified));
    let lines = std::fs::read_to_string(&audit).unwrap();
    assert!(
        lines.contains("decl.checkpoint.created") && lines.contains("decl.rollback"),
        "{lines}"
    );
}

/// An apply that fails part way keeps what it did; `berth apply --resume ID` plans the same,
/// unchanged file over what that apply touched, applies only the rest under the same id, and
/// converges. An unknown id, a finished apply and a changed file are each said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_that_failed_part_way_is_resumed() {
    let env = start(berth_pve_emulator::Timings::fast()).await;
    let dir = env.dir.path();
    let audit = dir.join("audit.jsonl").display().to_string();
    let text = "version = 1\n[proxmox]\n[[proxmox.storage]]\nid = \"nas\"\ntype = \"nfs\"\nserver = \"10.0.0.9\"\nexport = \"/tank\"\ncontent = [\"backup\"]\n\n[[proxmox.pools]]\nid = \"web\"\ncomment = \"front ends\"\n";
    let file = site(dir, "site.toml", text);
    // The pool cannot be made the first time: the storage is, then the apply stops.
    fail_once(&env, "POST", "/pools", 500, "pool backend unavailable");
    let failed = env.run(&["apply", "-f", &file, "--yes", "--audit", &audit]).await;
    assert!(!failed.status.success(), "{}", stdout(&failed));
    let err = stderr(&failed);
    let id = resume_id(&err);

    let unknown = env
        .run(&["apply", "--resume", "nope", "--yes", "--audit", &audit])
        .await;
    assert!(
        stderr(&unknown).contains("no apply nope is recorded"),
        "{}",
        stderr(&unknown)
    );

    // What is left is only the pool: the storage was made.
    let resumed = env.run(&["apply", "--resume", &id, "--yes", "--audit", &audit]).await;
    let out = stdout(&resumed);
    assert!(resumed.status.success(), "{out}\n{}", stderr(&resumed));
    assert!(out.contains("+ pool.web") && !out.contains("storage.nas"), "{out}");
    assert!(out.contains("Applied. A new plan shows no changes."), "{out}");
    let again = env.run(&["apply", "--resume", &id, "--yes", "--audit", &audit]).await;
    assert!(
        stdout(&again).contains("finished: nothing to resume"),
        "{}",
        stdout(&again)
    );
    let verify = env.run(&["audit", "verify", "--file", &audit]).await;
    assert!(verify.status.success(), "{}", stdout(&verify));

    // A file changed since a failed apply is not resumed: its plan is another one.
    fail_once(&env, "POST", "/pools", 500, "pool backend unavailable");
    let file = site(dir, "site.toml", &format!("{text}\n[[proxmox.pools]]\nid = \"db\"\n"));
    let failed = env.run(&["apply", "-f", &file, "--yes", "--audit", &audit]).await;
    let id = resume_id(&stderr(&failed));
    site(dir, "site.toml", &format!("{text}\n[[proxmox.pools]]\nid = \"db2\"\n"));
    let refused = env.run(&["apply", "--resume", &id, "--yes", "--audit", &audit]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("changed since apply"), "{}", stderr(&refused));
}

/// A guest deleted by an apply is backed up first; `berth rollback` restores it from that backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_vm_is_restored_by_the_rollback() {
    let env = start(berth_pve_emulator::Timings::fast()).await;
    let dir = env.dir.path();
    let audit = dir.join("audit.jsonl").display().to_string();
    let vm = "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 172\nnode = \"pve1\"\nname = \"old\"\nmemory = 1024\nstate = \"stopped\"\n\
              disks.scsi0 = { storage = \"local-lvm\", size = \"4G\" }\n";
    let file = site(dir, "site.toml", vm);
    let made = env.run(&["apply", "-f", &file, "--yes", "--audit", &audit]).await;
    assert!(made.status.success(), "{}", stderr(&made));
    site(
        dir,
        "site.toml",
        "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 172\nensure = \"absent\"\n",
    );
    let gone = env.run(&["apply", "-f", &file, "--yes", "--audit", &audit]).await;
    let text = stdout(&gone);
    assert!(gone.status.success(), "{text}\n{}", stderr(&gone));
    assert!(
        text.contains("vm.172: backed up to local:backup/vzdump-qemu-172-"),
        "{text}"
    );
    let id = rollback_id(&text);
    let listed = stdout(&env.run(&["checkpoints", "--audit", &audit]).await);
    assert!(
        listed.contains("restore vm.172 from its backup local:backup/vzdump-qemu-172-"),
        "{listed}"
    );
    let back = env.run(&["rollback", &id, "--yes", "--audit", &audit]).await;
    assert!(back.status.success(), "{}", stderr(&back));
    assert!(
        stdout(&back).contains("vm.172: restored from local:backup/vzdump-qemu-172-"),
        "{}",
        stdout(&back)
    );
    let exported = stdout(&env.run(&["discover", "--export"]).await);
    assert!(
        exported.contains("vmid = 172") && exported.contains("name = \"old\""),
        "{exported}"
    );
    // Back in the file's ledger, as before the apply: deleting it again needs no --adopt.
    let again = env.run(&["plan", "-f", &file, "--audit", &audit]).await;
    let text = stdout(&again);
    assert!(text.contains("- vm.172  delete") && !text.contains("Adopts"), "{text}");
}

/// A pruning apply that fails part way (the pool deleted, the storage not): its resume prunes the
/// rest, and the ledger forgets both (nothing is left "taken out of the file").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruning_apply_that_failed_part_way_is_resumed_and_prunes_the_rest() {
    let env = start(berth_pve_emulator::Timings::fast()).await;
    let dir = env.dir.path();
    let audit = dir.join("audit.jsonl").display().to_string();
    let keep = "version = 1\n[proxmox]\n[[proxmox.pools]]\nid = \"keep\"\n";
    let old = "[[proxmox.pools]]\nid = \"old\"\n[[proxmox.storage]]\nid = \"old\"\ntype = \"dir\"\npath = \"/srv/old\"\ncontent = [\"backup\"]\n";
    let file = site(dir, "site.toml", &format!("{keep}{old}"));
    let made = env.run(&["apply", "-f", &file, "--yes", "--audit", &audit]).await;
    assert!(made.status.success(), "{}", stderr(&made));
    site(dir, "site.toml", keep);
    // Deletes go pools first, storage last: the storage's fails.
    fail_once(&env, "DELETE", "/storage", 500, "storage busy");
    let failed = env
        .run(&["apply", "-f", &file, "--prune", "--yes", "--audit", &audit])
        .await;
    assert!(!failed.status.success(), "{}", stdout(&failed));
    let id = resume_id(&stderr(&failed));
    let resumed = env.run(&["apply", "--resume", &id, "--yes", "--audit", &audit]).await;
    let out = stdout(&resumed);
    assert!(resumed.status.success(), "{out}\n{}", stderr(&resumed));
    assert!(
        out.contains("- storage.old  delete") && !out.contains("pool.old"),
        "{out}"
    );
    let exported = stdout(&env.run(&["discover", "--export"]).await);
    assert!(!exported.contains("\"old\""), "{exported}");
    let drift = env.run(&["drift", "-f", &file, "--audit", &audit]).await;
    let text = stdout(&drift);
    assert_eq!(drift.status.code(), Some(0), "{text}");
    assert!(text.contains("No drift") && !text.contains("old"), "{text}");
}

/// A VM change that fails after its checkpoint: the snapshot is kept and listed all the same;
/// the resume takes the same snapshot as its checkpoint (not a second one), finishes, and a
/// rollback puts the VM back once; a rolled-back apply is not resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_change_that_failed_after_its_checkpoint_is_resumed_and_rolled_back() {
    let env = start(berth_pve_emulator::Timings::fast()).await;
    let dir = env.dir.path();
    let audit = dir.join("audit.jsonl").display().to_string();
    let vm = |cores: u32| {
        format!(
            "version = 1\n[proxmox]\n[[proxmox.vms]]\nvmid = 171\nnode = \"pve1\"\nname = \"api\"\ncores = {cores}\nmemory = 1024\n\
             disks.scsi0 = {{ storage = \"local-lvm\", size = \"4G\" }}\nnets.net0 = {{ bridge = \"vmbr0\" }}\n"
        )
    };
    let made = env
        .run(&["apply", "-f", &site(dir, "vm.toml", &vm(1)), "--yes", "--audit", &audit])
        .await;
    assert!(made.status.success(), "{}", stderr(&made));
    fail_once(&env, "PUT", "/qemu/171/config", 400, "VM is locked (backup)");
    let bigger = site(dir, "vm2.toml", &vm(2));
    let failed = env
        .run(&["apply", "-f", &bigger, "--yes", "--adopt", "--audit", &audit])
        .await;
    assert!(!failed.status.success(), "{}", stdout(&failed));
    assert!(
        stdout(&failed).contains("vm.171: checkpoint snapshot berth-"),
        "{}",
        stdout(&failed)
    );
    let err = stderr(&failed);
    let id = resume_id(&err);
    let listed = env.run(&["checkpoints", "--audit", &audit]).await;
    assert!(
        stdout(&listed).contains("roll vm.171 back to snapshot berth-"),
        "the failed change's checkpoint is kept: {}",
        stdout(&listed)
    );

    let resumed = env.run(&["apply", "--resume", &id, "--yes", "--audit", &audit]).await;
    let out = stdout(&resumed);
    assert!(resumed.status.success(), "{out}\n{}", stderr(&resumed));
    assert!(
        out.contains(&format!("vm.171: checkpoint snapshot berth-{id} (already there)")),
        "{out}"
    );

    let back = env.run(&["rollback", &id, "--yes", "--audit", &audit]).await;
    let text = stdout(&back);
    assert!(back.status.success(), "{text}\n{}", stderr(&back));
    assert_eq!(
        text.matches("roll vm.171 back").count(),
        1,
        "once, though both attempts kept it: {text}"
    );
    let again = env.run(&["apply", "--resume", &id, "--yes", "--audit", &audit]).await;
    assert!(stderr(&again).contains("was rolled back"), "{}", stderr(&again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_tells_drift_from_edits_and_prunes_only_what_berth_applied() {
    let env = start(berth_pve_emulator::Timings::fast()).await;
    let dir = env.dir.path();
    let audit = dir.join("audit.jsonl").display().to_string();
    let pools = |ids: &[&str]| {
        let mut s = String::from("version = 1\n[proxmox]\n");
        for id in ids {
            s.push_str(&format!(
                "[[proxmox.pools]]\nid = \"{id}\"\ncomment = \"made by berth\"\n"
            ));
        }
        s
    };
    let file = site(dir, "site.toml", &pools(&["web", "old"]));
    let applied = env.run(&["apply", "-f", &file, "--yes", "--audit", &audit]).await;
    assert!(applied.status.success(), "{}", stderr(&applied));
    assert!(dir.join("audit.ledger.json").exists());
    // Someone else's pool (applied from another file, with its own ledger): never this file's to
    // delete.
    let hand = dir.join("hand.jsonl").display().to_string();
    let by_hand = |text: &str| {
        let f = site(dir, "hand.toml", text);
        let (env, hand) = (&env, hand.clone());
        async move {
            let out = env
                .run(&["apply", "-f", &f, "--yes", "--adopt", "--audit", &hand])
                .await;
            assert!(out.status.success(), "{}", stderr(&out));
        }
    };
    by_hand("version = 1\n[proxmox]\n[[proxmox.pools]]\nid = \"manual\"\n").await;
    // Named in this file now, it is adopted: shown, taken into the ledger by the apply.
    let grown = site(dir, "site.toml", &pools(&["web", "old", "manual"]));
    let adopting = env.run(&["plan", "-f", &grown, "--audit", &audit]).await;
    assert!(
        stdout(&adopting)
            .contains("Adopts 1 object(s) already on the cluster, managed from this file once applied: pool.manual"),
        "{}",
        stdout(&adopting)
    );

    // "old" taken out of the file: kept, and said so; --prune deletes it (and only it).
    site(dir, "site.toml", &pools(&["web"]));
    let planned = env.run(&["plan", "-f", &file, "--audit", &audit]).await;
    assert_eq!(planned.status.code(), Some(0), "{}", stdout(&planned));
    assert!(
        stderr(&planned).contains("1 object(s) Berth applied from")
            && stderr(&planned).contains("pool.old (kept; --prune deletes them)"),
        "{}",
        stderr(&planned)
    );
    // Edited in the file and changed by hand: the drift is only the hand's.
    site(
        dir,
        "site.toml",
        &pools(&["web"]).replace("made by berth", "front ends"),
    );
    by_hand("version = 1\n[proxmox]\n[[proxmox.pools]]\nid = \"web\"\ncomment = \"by hand\"\n").await;
    let drift = env.run(&["drift", "-f", &file, "--audit", &audit]).await;
    assert_eq!(drift.status.code(), Some(2), "{}", stdout(&drift));
    let text = stdout(&drift);
    for want in [
        "Changed outside Berth since the last apply:\n  ~ pool.web  comment: \"made by berth\" → \"by hand\"",
        "Edited in the file since the last apply (not applied yet; not drift):\n  ~ pool.web  comment: \"made by berth\" → \"front ends\"",
        "  - pool.old  taken out of the file (kept; `berth apply --prune` deletes it)",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    let pruned = env
        .run(&["apply", "-f", &file, "--prune", "--yes", "--audit", &audit])
        .await;
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    assert!(stdout(&pruned).contains("- pool.old  delete"), "{}", stdout(&pruned));
    let exported = env.run(&["discover", "--export"]).await;
    let left = stdout(&exported);
    assert!(
        left.contains("id = \"manual\"") && !left.contains("id = \"old\""),
        "{left}"
    );
    // Now the cluster is as the last apply left it.
    let drift = env.run(&["drift", "-f", &file, "--audit", &audit]).await;
    assert_eq!(drift.status.code(), Some(0), "{}", stdout(&drift));
    assert!(stdout(&drift).starts_with("No drift"), "{}", stdout(&drift));
}
