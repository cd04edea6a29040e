//! The agent's scheduled drift check (`[drift]`): its site file against the cluster, reported
//! in the heartbeat (and so to the provider and on the dashboard's hypervisors page); a site
//! file that does not parse is reported as a failed check naming file:line, not a crash.

mod browser;
mod common;
mod stack;

use std::time::{Duration, Instant};

use berth_api::wire::{SiteChange, SiteDrift};
use berth_pve_emulator::Timings;
use stack::{Db, Stack, run_berth};

const SITE: &str = r#"version = 1
[proxmox]
[[proxmox.pools]]
id = "ops"
comment = "operations"
"#;

/// The agent's last site check as the control plane shows it, once there is one.
async fn reported(s: &Stack) -> SiteDrift {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let agents = s.provider.agents().await.unwrap();
        if let Some(d) = agents
            .iter()
            .filter_map(|a| a.heartbeat.as_ref())
            .find_map(|h| h.site_drift.clone())
        {
            return d;
        }
        assert!(Instant::now() < until, "no site drift reported:\n{}", s.agent_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A browser signed in as the provider on the Hypervisors page, once it shows the site check
/// (`None`: no browser here, said so).
async fn hypervisors_page(s: &Stack, name: &str) -> Option<browser::Browser> {
    let b = browser::Browser::start(&s.url, name).await?;
    b.sign_in(&s.tokens.provider).await;
    b.goto("/ui/agents").await;
    b.wait_for(".site-drift").await;
    Some(b)
}

/// `berth apply -f FILE --yes --adopt --audit AUDIT` with the stack agent's configuration
/// (`--adopt`: a hand's file changes what the site file applied).
async fn apply(s: &Stack, file: &std::path::Path, audit: &std::path::Path) {
    let [file, audit, config] = [file, audit, s.agent_toml.as_path()].map(|p| p.display().to_string());
    let args = [
        "apply", "-f", &file, "--yes", "--adopt", "--audit", &audit, "--config", &config,
    ];
    let out = run_berth(args.map(str::to_owned).to_vec()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A stack whose agent checks `site` (written first: the configuration names an existing file).
async fn stack_with_site(site: &str) -> (Stack, tempfile::TempDir) {
    stack_with_site_and(site, "").await
}

/// As [`stack_with_site`], with more `[drift]` keys.
async fn stack_with_site_and(site: &str, drift: &str) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    std::fs::write(&file, site).unwrap();
    let extra = format!(
        "[polling]\nheartbeat_interval_seconds = 1\n[drift]\nsite = \"{}\"\ninterval_seconds = 60\n{drift}",
        file.display()
    );
    let s = Stack::start(Db::Sqlite, Timings::fast(), &extra).await.unwrap();
    (s, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_what_differs_from_its_site_file() {
    let (mut s, _site) = stack_with_site(SITE).await;
    s.spawn_agent();
    let d = reported(&s).await;
    assert_eq!(d.error, None, "{d:#?}");
    assert_eq!(d.backend, "proxmox");
    assert!(d.site.ends_with("site.toml"), "{}", d.site);
    let pool = d
        .changes
        .iter()
        .find(|c| c.address == "pool.ops")
        .expect("pool.ops differs");
    assert_eq!(pool.change, "create: comment = \"operations\"");
    let log = s.agent_log();
    assert!(log.contains("the cluster has drifted from the site file"), "{log}");

    // The provider sees it on the hypervisors page.
    let Some(b) = hypervisors_page(&s, "site_drift").await else {
        return;
    };
    let text = b.text(".agent").await;
    assert!(
        text.contains("Site file") && text.contains("1 object differs"),
        "{text}"
    );
    assert!(text.contains("pool.ops") && text.contains("operations"), "{text}");
    b.shot("hypervisors-site-drift").await;
    b.check_accessibility("hypervisors-site-drift").await;
    b.set_width(360).await;
    b.shot("hypervisors-site-drift-360px").await;
    // The operator sees every agent's report the same way.
    b.set_width(1280).await;
    b.sign_out().await;
    b.sign_in(&s.tokens.operator).await;
    b.goto("/ui/agents").await;
    b.wait_for(".site-drift").await;
    assert!(b.text(".agent").await.contains("pool.ops"));
    b.shot("operator-hypervisors-site-drift").await;
}

/// With the ledger of the applies (`[drift] audit`), the agent reports what changed on the
/// cluster outside Berth since the last apply, not the file's edits that are not applied yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ledger_the_agent_reports_what_changed_outside_berth_since_the_last_apply() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.jsonl");
    let (mut s, site_dir) = stack_with_site_and(SITE, &format!("audit = \"{}\"\n", audit.display())).await;
    let site = site_dir.path().join("site.toml");
    apply(&s, &site, &audit).await;
    // Changed by hand (another file, another audit file): drift. Edited in the file and not
    // applied (a new pool): not drift.
    let hand = site_dir.path().join("hand.toml");
    std::fs::write(&hand, SITE.replace("operations", "by hand")).unwrap();
    apply(&s, &hand, &audit_dir.path().join("hand.jsonl")).await;
    std::fs::write(&site, format!("{SITE}[[proxmox.pools]]\nid = \"new\"\n")).unwrap();

    s.spawn_agent();
    let d = reported(&s).await;
    assert_eq!(d.error, None, "{d:#?}");
    assert!(d.applied_at.is_some(), "checked against the last apply: {d:#?}");
    assert_eq!(
        d.changes,
        [SiteChange {
            address: "pool.ops".into(),
            change: "comment: \"operations\" → \"by hand\"".into(),
        }]
    );
    let log = s.agent_log();
    assert!(
        log.contains("the cluster changed outside Berth since the last apply"),
        "{log}"
    );

    let Some(b) = hypervisors_page(&s, "site_drift_ledger").await else {
        return;
    };
    let text = b.text(".agent").await;
    assert!(
        text.contains("1 object changed outside Berth since the apply of") && text.contains("by hand"),
        "{text}"
    );
    assert!(!text.contains("pool.new"), "an edit not applied is not drift: {text}");
    b.shot("hypervisors-site-drift-since-apply").await;
    b.check_accessibility("hypervisors-site-drift-since-apply").await;
    b.set_width(360).await;
    b.shot("hypervisors-site-drift-since-apply-360px").await;
    // The operator sees the same.
    b.set_width(1280).await;
    b.sign_out().await;
    b.sign_in(&s.tokens.operator).await;
    b.goto("/ui/agents").await;
    b.wait_for(".site-drift").await;
    assert!(
        b.text(".site-drift")
            .await
            .contains("changed outside Berth since the apply of")
    );
    b.shot("operator-hypervisors-site-drift-since-apply").await;
}

/// With the ledger and nothing changed since the apply, the check says the cluster is as applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ledger_a_cluster_as_applied_is_shown_so() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.jsonl");
    let (mut s, site_dir) = stack_with_site_and(SITE, &format!("audit = \"{}\"\n", audit.display())).await;
    apply(&s, &site_dir.path().join("site.toml"), &audit).await;
    s.spawn_agent();
    let d = reported(&s).await;
    assert!(
        d.applied_at.is_some() && d.error.is_none() && d.changes.is_empty(),
        "{d:#?}"
    );
    let Some(b) = hypervisors_page(&s, "site_drift_as_applied").await else {
        return;
    };
    let text = b.text(".site-drift").await;
    assert!(
        text.contains("as applied") && text.contains("nothing changed outside Berth since the apply of"),
        "{text}"
    );
    b.shot("hypervisors-site-as-applied").await;
    b.check_accessibility("hypervisors-site-as-applied").await;
    b.set_width(360).await;
    b.shot("hypervisors-site-as-applied-360px").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_file_that_does_not_parse_is_a_failed_check_naming_its_line() {
    let (mut s, _site) =
        stack_with_site("version = 1\n[proxmox]\n[[proxmox.pools]]\nid = \"ops\"\ncolour = \"red\"\n").await;
    s.spawn_agent();
    let d = reported(&s).await;
    let e = d.error.expect("the check failed");
    assert!(e.contains("site.toml:5") && e.contains("colour"), "{e}");
    assert!(d.changes.is_empty());
    s.wait_agent_alive().await;
    let Some(b) = hypervisors_page(&s, "site_drift_failed").await else {
        return;
    };
    let text = b.text(".site-drift").await;
    assert!(text.contains("check failed") && text.contains("colour"), "{text}");
    b.shot("hypervisors-site-check-failed").await;
    b.check_accessibility("hypervisors-site-check-failed").await;
    b.set_width(360).await;
    b.shot("hypervisors-site-check-failed-360px").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_as_the_site_file_says_is_shown_so() {
    let (mut s, _site) = stack_with_site("version = 1\n[proxmox]\n").await;
    s.spawn_agent();
    let d = reported(&s).await;
    assert_eq!((d.error.as_deref(), d.changes.len()), (None, 0), "{d:#?}");
    let Some(b) = hypervisors_page(&s, "site_drift_clean").await else {
        return;
    };
    assert!(b.text(".site-drift").await.contains("as the file says"));
    b.shot("hypervisors-site-clean").await;
    b.set_width(360).await;
    b.shot("hypervisors-site-clean-360px").await;
}
