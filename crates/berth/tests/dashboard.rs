//! The dashboard in a real headless Chromium against the whole stack: the control plane (SQLite
//! or PostgreSQL) serving the pages, a real `berth agent` and the Proxmox VE emulator. Providers
//! publish an offering from a template their agent reports; customers order it and watch its
//! stages arrive live (pushed, no reload) until it runs; a failure names its stage and Retry
//! builds the machine; bad input shows the API's field error and makes nothing. Every page is
//! screenshotted (target/screenshots/) and checked with axe-core.

mod browser;
mod common;
mod stack;

use std::time::{Duration, Instant};

use berth_pve_emulator::{Fault, FaultRule};
use browser::Browser;
use common::KEY;
use stack::{Db, Stack, age_public, paced};

const LONG: Duration = Duration::from_secs(90);

/// The stack with its agent running and its templates reported.
async fn stack(db: Db) -> Option<Stack> {
    let Some(mut s) = Stack::start(db, paced(), "[polling]\nheartbeat_interval_seconds = 1\n").await else {
        eprintln!("skipped: no PostgreSQL here");
        return None;
    };
    s.spawn_agent();
    s.wait_agent_alive().await;
    let started = Instant::now();
    while s.provider.provider_templates(&s.provider_id).await.unwrap().is_empty() {
        assert!(
            started.elapsed() < LONG,
            "the agent reports no templates:\n{}",
            s.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(s)
}

/// The operation id of the operation page the browser is on.
async fn operation_on_page(b: &Browser) -> String {
    b.wait_for("#progress").await;
    let path = b.path().await;
    path.strip_prefix("/ui/operations/")
        .unwrap_or_else(|| panic!("not an operation page: {path}"))
        .to_owned()
}

async fn order_and_watch_live(db: Db, test: &str) {
    let Some(s) = stack(db).await else { return };
    let Some(b) = Browser::start(&s.url, test).await else {
        return;
    };

    // The provider sees its hypervisor and publishes an offering from a reported template.
    b.sign_in(&s.tokens.provider).await;
    b.goto("/ui/agents").await;
    b.wait_for(".agent .badge.online").await;
    assert!(
        b.text(".agent").await.contains("debian-12-cloud"),
        "reported templates are listed"
    );
    b.shot("provider-hypervisors").await;
    b.check_accessibility("hypervisors").await;
    b.goto("/ui/offerings").await;
    b.fill("#name", "web-small").await;
    b.select("#template", "9000").await;
    b.fill("#cores", "1").await;
    b.fill("#memory_mib", "1024").await;
    b.fill("#disk_gib", "10").await;
    b.fill("#price", "4.99").await;
    b.click("form[action='/ui/offerings'] button[type=submit]").await;
    b.wait_for("tr[data-offering]").await;
    let offerings = s.provider.offerings("").await.unwrap();
    assert_eq!(offerings.len(), 1);
    assert_eq!(
        offerings[0].spec.template.as_deref(),
        Some("9000"),
        "the picked template, not a typed id"
    );
    assert_eq!(
        offerings[0].spec.price.as_ref().map(|p| p.amount),
        Some(499),
        "entered in major units, kept in minor ones"
    );
    b.shot("provider-offerings").await;
    b.check_accessibility("offerings").await;
    b.sign_out().await;

    // The customer orders it from the catalogue.
    b.sign_in(&s.tokens.customer).await;
    assert_eq!(b.path().await, "/ui/catalogue");
    b.wait_for("article[data-offering]").await;
    b.shot("customer-catalogue").await;
    b.check_accessibility("catalogue").await;
    // The age key is saved once on the account; the order form fills it in.
    b.click("header nav a[href='/ui/keys']").await;
    b.select("#kind", "age").await;
    b.fill("#name", "mine").await;
    b.fill("#public_key", &age_public()).await;
    b.click("main form[action='/ui/keys'] button[type=submit]").await;
    b.wait_for("tr[data-key]").await;
    b.shot("customer-keys").await;
    b.check_accessibility("keys").await;
    b.goto("/ui/catalogue").await;
    b.click("article[data-offering] a.button").await;
    b.fill("#name", "web1").await;
    b.fill("#ssh_public_key", KEY).await;
    let age = b.find("#requester_public_key").await.value().await.unwrap();
    assert_eq!(
        age.as_deref(),
        Some(age_public().as_str()),
        "the saved age key is filled in"
    );
    b.shot("customer-order").await;
    b.check_accessibility("order form").await;
    b.click("main form button[type=submit]").await;
    let op = operation_on_page(&b).await;
    // A mark on this page: gone if the page were reloaded.
    b.driver.execute("window.berthMark = 42", vec![]).await.unwrap();

    // A stage appears while the operation still runs: pushed, not loaded.
    b.wait_for("#progress li[data-status='completed']").await;
    let stage = b.attr("#progress li[data-status='completed']", "data-stage").await;
    let now = s.customer.operation(&op).await.unwrap();
    assert!(
        !matches!(now.status.as_str(), "succeeded" | "failed"),
        "stage {stage:?} showed only after the operation ended: {now:#?}"
    );
    b.shot("customer-progress-live").await;
    b.check_accessibility("live progress").await;

    b.wait_for("#progress p.status[data-status='succeeded']").await;
    let ip = b.text("#progress dd.ip").await;
    assert!(!ip.is_empty(), "the address shows");
    let mark: i64 = b
        .driver
        .execute("return window.berthMark", vec![])
        .await
        .unwrap()
        .convert()
        .unwrap();
    assert_eq!(mark, 42, "the page was never reloaded");
    let done = s.finished(&op, LONG).await;
    assert_eq!(
        done.result.as_ref().and_then(|r| r.ip_address.clone()).as_deref(),
        Some(ip.as_str())
    );
    // Exactly the stages the agent reported, as it reported them.
    for st in &done.stages {
        let li = format!("#progress li[data-stage='{}']", st.stage);
        assert_eq!(
            b.attr(&li, "data-status").await.as_deref(),
            Some(st.status.as_str()),
            "{st:?}"
        );
    }
    assert!(b.text("#ssh-line").await.contains(&ip));
    b.shot("customer-progress-done").await;
    b.check_accessibility("finished progress").await;

    // The instance page has the record; a reload of the operation shows the same.
    b.click(".crumbs a[href^='/ui/instances/']").await;
    b.wait_for(".facts").await;
    assert!(b.text(".facts").await.contains(&ip));
    b.shot("customer-instance").await;
    b.check_accessibility("instance").await;
    b.set_width(360).await;
    b.goto(&format!("/ui/operations/{op}")).await;
    b.wait_for("#progress p.status[data-status='succeeded']").await;
    b.shot("customer-progress-360px").await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_watches_an_order_become_a_running_vm_live_sqlite() {
    order_and_watch_live(Db::Sqlite, "live-sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_watches_an_order_become_a_running_vm_live_postgres() {
    order_and_watch_live(Db::Postgres, "live-postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_names_its_stage_and_retry_builds_the_machine() {
    let Some(s) = stack(Db::Sqlite).await else { return };
    let Some(b) = Browser::start(&s.url, "failure-retry").await else {
        return;
    };
    s.emu.inject(FaultRule {
        method: Some("POST".into()),
        path_contains: "/status/start".into(),
        fault: Fault::TaskFailure {
            message: "start failed: not enough memory on pve1".into(),
        },
        times: 1,
    });
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "flaky1").await;
    let op = a.operation_id.unwrap();
    b.sign_in(&s.tokens.customer).await;
    b.goto(&format!("/ui/operations/{op}")).await;
    b.wait_for("#progress .failure").await;
    let text = b.text("#progress .failure").await;
    assert!(text.contains("Start the VM"), "names the stage: {text}");
    assert!(text.contains("not enough memory"), "gives the reason: {text}");
    let start = b.attr("#progress li[data-stage='start_vm']", "data-status").await;
    assert_eq!(start.as_deref(), Some("failed"));
    b.shot("failed").await;
    b.check_accessibility("failure").await;

    b.click("#progress .failure form[action$='/provision'] button").await;
    let retry = operation_on_page(&b).await;
    assert_ne!(retry, op, "Retry is a new operation");
    b.wait_for("#progress p.status[data-status='succeeded']").await;
    assert_eq!(s.customer.instance(&a.instance_id).await.unwrap().status, "running");
    b.shot("retried").await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_shows_the_field_error_and_makes_nothing() {
    let Some(s) = stack(Db::Sqlite).await else { return };
    let Some(b) = Browser::start(&s.url, "bad-input").await else {
        return;
    };
    b.sign_in(&s.tokens.provider).await;
    b.goto("/ui/offerings").await;
    b.fill("#name", "broken").await;
    b.fill("#cores", "0").await;
    b.click("form[action='/ui/offerings'] button[type=submit]").await;
    b.wait_for("#cores-error").await;
    assert!(b.text("#cores-error").await.contains("must be 1-"), "the API's words");
    assert_eq!(b.attr("#cores", "aria-invalid").await.as_deref(), Some("true"));
    assert_eq!(
        b.find("#name").await.value().await.unwrap().as_deref(),
        Some("broken"),
        "kept what was typed"
    );
    assert!(
        s.provider.offerings("").await.unwrap().is_empty(),
        "no offering was made"
    );
    b.shot("offering-error").await;
    b.check_accessibility("offering form with an error").await;
    b.sign_out().await;

    let offering = s.offering(&[]).await;
    b.sign_in(&s.tokens.customer).await;
    b.goto(&format!("/ui/order/{offering}")).await;
    b.fill("#name", "web1").await;
    b.fill("#ssh_public_key", "-----BEGIN OPENSSH PRIVATE KEY-----").await;
    b.fill("#requester_public_key", &age_public()).await;
    b.click("main form button[type=submit]").await;
    b.wait_for("#ssh_public_key-error").await;
    assert!(!b.text("#ssh_public_key-error").await.is_empty());
    assert_eq!(b.find("#name").await.value().await.unwrap().as_deref(), Some("web1"));
    assert!(s.customer.instances().await.unwrap().is_empty(), "no instance was made");
    b.set_width(360).await;
    b.shot("order-error-360px").await;
    b.check_accessibility("order form with an error").await;
    // The audit does find what it looks for: an unlabelled field fails it.
    b.driver
        .execute(
            "document.querySelector('main form').insertAdjacentHTML('beforeend', '<input id=unlabelled>')",
            vec![],
        )
        .await
        .unwrap();
    let found = b.accessibility_violations().await;
    assert!(found.iter().any(|v| v.contains("#unlabelled")), "{found:?}");
    b.driver
        .execute("document.getElementById('unlabelled').remove()", vec![])
        .await
        .unwrap();
    // Corrected, the same form places exactly one order.
    b.fill("#ssh_public_key", KEY).await;
    b.click("main form button[type=submit]").await;
    operation_on_page(&b).await;
    assert_eq!(s.customer.instances().await.unwrap().len(), 1);
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_staff_wizard_places_two_machines_from_a_name_pattern() {
    let Some(s) = stack(Db::Sqlite).await else { return };
    // A second agent that never connected: listed, not selectable, and says why.
    s.enroll_another("idle").await;
    let Some(b) = Browser::start(&s.url, "wizard").await else {
        return;
    };
    b.sign_in(&s.tokens.provider).await;
    b.click("header nav a[href='/ui/wizard']").await;
    b.wait_for(".steps").await;
    let idle = b.text(".choice.disabled").await;
    assert!(idle.contains("idle") && idle.contains("never connected"), "{idle}");
    assert_eq!(b.all("input[name=pick]:not([disabled])").await.len(), 1);
    b.shot("wizard-1-hypervisor").await;
    b.check_accessibility("wizard: hypervisor").await;
    b.click("input[name=pick]:not([disabled])").await;
    b.click("main form button[type=submit]").await;

    b.wait_for("input[name=pick][value='9000']").await;
    b.shot("wizard-2-template").await;
    b.check_accessibility("wizard: template").await;
    b.click("input[name=pick][value='9000']").await;
    b.click("main form button[type=submit]").await;

    b.wait_for("#name").await;
    // The URL carries the state: a reload keeps it.
    let configure = b.path().await;
    assert!(configure.contains("pick=9000"), "{configure}");
    b.fill("#name", "web-{n}").await;
    b.fill("#count", "2").await;
    b.fill("#cores", "1").await;
    b.fill("#memory_mib", "1024").await;
    b.fill("#disk_gib", "10").await;
    b.fill("#ssh_public_key", KEY).await;
    b.fill("#requester_public_key", &age_public()).await;
    b.shot("wizard-3-configure").await;
    b.check_accessibility("wizard: configure").await;
    b.click("main form button[type=submit]").await;

    b.wait_for(".review").await;
    assert_eq!(b.all(".review").await.len(), 2, "one request per machine");
    let review = b.text("main").await;
    assert!(
        review.contains("\"name\": \"web-2\"") && review.contains("berth instance create"),
        "{review}"
    );
    b.driver.refresh().await.unwrap();
    b.wait_for(".review").await;
    assert!(
        s.provider.instances().await.unwrap().is_empty(),
        "review makes nothing, reload included"
    );
    b.shot("wizard-4-review").await;
    b.check_accessibility("wizard: review").await;
    b.click("main form[action='/ui/wizard'] button[type=submit]").await;

    b.wait_for("tr[data-instance]").await;
    let ops: Vec<String> = b
        .driver
        .execute(
            "return [...document.querySelectorAll('tr[data-instance] a[href^=\"/ui/operations/\"]')].map(a => a.getAttribute('href').split('/').pop())",
            vec![],
        )
        .await
        .unwrap()
        .convert()
        .unwrap();
    assert_eq!(ops.len(), 2, "{ops:?}");
    for op in &ops {
        assert_eq!(s.finished_as(&s.provider, op, LONG).await.status, "succeeded");
    }
    let mine = s.provider.instances().await.unwrap();
    assert_eq!(mine.len(), 2);
    for i in &mine {
        assert!(i.offering_id.is_none() && i.customer_id.is_none(), "{i:?}");
        assert_eq!(i.status, "running");
    }
    let mut names: Vec<_> = mine.iter().map(|i| i.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["web-1", "web-2"]);
    b.shot("wizard-5-started").await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_sees_every_provider_customer_and_the_verified_audit_log() {
    let Some(s) = stack(Db::Sqlite).await else { return };
    let Some(b) = Browser::start(&s.url, "operator").await else {
        return;
    };
    b.sign_in(&s.tokens.operator).await;
    b.goto("/ui/agents").await;
    b.wait_for(".agent .badge.online").await;
    let page = b.text("main").await;
    assert!(
        page.contains("acme") && page.contains("alice"),
        "providers and customers: {page}"
    );
    b.shot("operator-overview").await;
    b.check_accessibility("operator overview").await;
    b.click("header nav a[href='/ui/audit']").await;
    b.wait_for("p.ok").await;
    assert!(b.text("p.ok").await.contains("verifies"));
    assert!(b.text("main table").await.contains("customer.created"));
    b.shot("operator-audit").await;
    b.check_accessibility("audit log").await;
    b.quit().await;
}

/// The manual backend answered from its form ("dashboard input"): the provider finds the order
/// under Waiting; a bad address is named next to its field, keeps what was typed except the
/// password, and sends nothing; the details hand the machine over, the page follows it live to
/// running with its SSH line, and the customer's credentials hold the typed password.
#[tokio::test(flavor = "multi_thread")]
async fn the_manual_backend_is_completed_from_its_form() {
    const PASSWORD: &str = "typed-in-the-browser-7";
    let Some(s) = Stack::manual(Db::Sqlite, paced()).await else {
        return;
    };
    let Some(b) = Browser::start(&s.url, "manual-form").await else {
        return;
    };
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "hand-built").await;
    let op = a.operation_id.unwrap();
    s.in_stage(&op, "waiting_for_operator").await;

    b.sign_in(&s.tokens.provider).await;
    b.goto("/ui/waiting").await;
    let row = format!("tr[data-operation='{op}']");
    b.wait_for(&row).await;
    assert!(b.text(&row).await.contains("hand-built"), "{}", b.text(&row).await);
    b.shot("waiting").await;
    b.check_accessibility("waiting list").await;

    b.click(&format!("{row} a")).await;
    b.wait_for("#answer-h").await;
    b.fill("#ipv4", "203.0.113.300").await;
    b.fill("#root_password", PASSWORD).await;
    b.click("button[value=complete]").await;
    b.wait_for("#ipv4-error").await;
    assert!(
        b.text("#ipv4-error").await.contains("not an IPv4 address"),
        "the API's words"
    );
    assert_eq!(
        b.find("#ipv4").await.value().await.unwrap().as_deref(),
        Some("203.0.113.300")
    );
    assert_eq!(
        b.find("#root_password").await.value().await.unwrap().as_deref(),
        Some("")
    );
    assert!(
        !b.driver.source().await.unwrap().contains(PASSWORD),
        "never sent back into a page"
    );
    assert!(s.provider.operation_input(&op).await.is_err(), "nothing was kept");
    b.set_width(360).await;
    b.shot("manual-form-error-360px").await;
    b.check_accessibility("manual form with an error").await;
    b.set_width(1280).await;

    b.fill("#ipv4", "203.0.113.7").await;
    b.fill("#ssh_port", "2222").await;
    b.fill("#root_password", PASSWORD).await;
    b.click("button[value=complete]").await;
    b.wait_for("#progress p.status[data-status='succeeded']").await;
    assert!(b.text("#progress").await.contains("ssh -p 2222 203.0.113.7"));
    b.shot("handed-over").await;
    let i = s.customer.instance(&a.instance_id).await.unwrap();
    assert_eq!(
        (i.status.as_str(), i.ip_address.as_deref()),
        ("running", Some("203.0.113.7"))
    );
    let plain = berth_api::credentials::open(stack::AGE_ID, &i.credentials.unwrap()).unwrap();
    assert_eq!(plain.password, PASSWORD);
    b.goto("/ui/waiting").await;
    b.wait_for("p.empty").await;
    b.set_width(360).await;
    b.shot("nothing-waiting-360px").await;
    b.check_accessibility("empty waiting list").await;
    b.quit().await;
}

/// Instances recorded without provisioning (seed phase 6) are built from their Provision button,
/// and several at once from a selection on the list; an empty list says so at 360 px.
#[tokio::test(flavor = "multi_thread")]
async fn pending_instances_are_provisioned_from_their_button_and_as_a_selection() {
    let Some(s) = stack(Db::Sqlite).await else { return };
    let Some(b) = Browser::start(&s.url, "pending").await else {
        return;
    };
    b.sign_in(&s.tokens.customer).await;
    b.set_width(360).await;
    b.goto("/ui/instances").await;
    assert!(b.text("p.empty").await.contains("No instances"));
    b.shot("no-instances-360px").await;
    b.check_accessibility("empty instance list").await;
    b.set_width(1280).await;

    let offering = s.offering(&[]).await;
    let mut ids = Vec::new();
    for name in ["node-1", "node-2", "node-3"] {
        let order = berth_api::wire::CreateOrder {
            offering_id: offering.clone(),
            name: name.into(),
            ssh_public_key: KEY.into(),
            requester_public_key: Some(age_public()),
            skip_post_provision: false,
            provision: false,
        };
        let a = s.customer.create_order(&order, None).await.unwrap();
        assert!(a.operation_id.is_none(), "recorded only");
        ids.push(a.instance_id);
    }

    // One from its own page.
    b.goto(&format!("/ui/instances/{}", ids[0])).await;
    b.click(&format!("form[action='/ui/instances/{}/provision'] button", ids[0]))
        .await;
    let op = operation_on_page(&b).await;
    b.wait_for("#progress p.status[data-status='succeeded']").await;
    assert_eq!(s.customer.operation(&op).await.unwrap().instance_id, ids[0]);

    // The other two as a selection.
    b.goto("/ui/instances?status=pending").await;
    assert_eq!(b.all("tr[data-instance]").await.len(), 2, "only the pending ones");
    for id in &ids[1..] {
        b.click(&format!("input[name=ids][value='{id}']")).await;
    }
    b.select("#bulk-action", "provision").await;
    b.shot("pending-selected").await;
    b.click("#bulk button[type=submit]").await;
    b.wait_for("tr[data-instance] a[href^='/ui/operations/']").await;
    assert_eq!(b.all("tr[data-instance] a[href^='/ui/operations/']").await.len(), 2);
    b.shot("pending-provisioning").await;
    b.check_accessibility("bulk provision result").await;
    for id in &ids {
        let until = Instant::now() + LONG;
        while s.customer.instance(id).await.unwrap().status != "running" {
            assert!(Instant::now() < until, "{id} never ran:\n{}", s.agent_log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    b.quit().await;
}
