//! Placing a machine on a chosen agent and backend, without an offering, end to end: through
//! `berth instance create` against the control plane, real `berth agent` processes and the PVE
//! emulator. The provision runs on the named agent only (a second agent of the same provider
//! never claims it), later actions follow it there, and a template the backend does not report
//! is refused naming the field, before anything is made.

mod common;
mod stack;

use std::time::Duration;

use stack::{Db, Stack, age_public, paced, run_berth};

const LONG: Duration = Duration::from_secs(90);

fn create_args(s: &Stack, token: &std::path::Path, agent: &str, name: &str, template: &str) -> Vec<String> {
    [
        "instance",
        "create",
        "--agent",
        agent,
        "--template",
        template,
        "--name",
        name,
        "--cores",
        "1",
        "--memory-mib",
        "1024",
        "--disk-gib",
        "10",
        "--ssh-key",
        common::KEY,
        "--requester-key",
        &age_public(),
        "--server",
        &s.url,
        "--token-file",
        &token.display().to_string(),
        "--output",
        "json",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_placed_on_an_agent_runs_there_and_stays_there() {
    let Some(mut s) = Stack::start(Db::Sqlite, paced(), "[polling]\nheartbeat_interval_seconds = 1\n").await else {
        return;
    };
    // Two agents of one provider, both on the cluster: the machine is placed on the second.
    let other_toml = s.enroll_another("second").await;
    s.spawn_agent();
    let _second = s.spawn_other(&other_toml);
    let started = std::time::Instant::now();
    let agents = loop {
        let a = s.provider.agents().await.unwrap();
        if a.iter().filter(|a| a.alive).count() == 2
            && !s.provider.provider_templates(&s.provider_id).await.unwrap().is_empty()
        {
            break a;
        }
        assert!(started.elapsed() < LONG, "two live agents: {a:#?}\n{}", s.agent_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let target = agents.iter().find(|a| a.name == "second").unwrap().id.clone();
    let token = s.dir.path().join("provider.token");
    std::fs::write(&token, &s.tokens.provider).unwrap();

    // A template the backend does not report: refused, the field named, nothing made.
    // With --output json the control plane's refusal is a JSON error on stdout (code, field),
    // and the exit code says "bad input" (2).
    let out = run_berth(create_args(&s, &token, &target, "nope1", "no-such-template")).await;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (err["error"]["code"].as_str(), err["error"]["field"].as_str()),
        (Some("invalid_input"), Some("template")),
        "{err}"
    );
    // The templates an offering or a placement may name, as the CLI lists them.
    let listed = run_berth(
        [
            "template",
            "list",
            "--agent",
            &target,
            "--server",
            &s.url,
            "--token-file",
            &token.display().to_string(),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && text.starts_with("AGENT") && text.contains("9000"),
        "{text}"
    );
    // The agents as the provider sees them: a list with a header, one in detail, and a revoke
    // that needs confirming.
    let cli = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        v.extend([
            "--server".into(),
            s.url.clone(),
            "--token-file".into(),
            token.display().to_string(),
        ]);
        run_berth(v)
    };
    let out = cli(&["agent", "list"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("ID") && text.matches(" alive ").count() == 2, "{text}");
    let out = cli(&["agent", "show", &target]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("name         second") && text.contains("backend "),
        "{text}"
    );
    let out = cli(&["agent", "revoke", &target]).await;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(s.provider.agent(&target).await.unwrap().revoked_at.is_none());
    assert!(s.provider.instances().await.unwrap().is_empty(), "nothing was made");

    let out = run_berth(create_args(&s, &token, &target, "placed1", "9000")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let accepted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let op = accepted["operation_id"].as_str().unwrap().to_owned();
    let id = accepted["instance_id"].as_str().unwrap().to_owned();
    let done = s.finished_as(&s.provider, &op, LONG).await;
    assert_eq!(done.status, "succeeded", "{done:#?}");
    let i = s.provider.instance(&id).await.unwrap();
    assert_eq!(
        i.agent_id.as_deref(),
        Some(target.as_str()),
        "ran on the agent it was placed on"
    );
    assert_eq!(
        (i.customer_id, i.offering_id),
        (None, None),
        "the provider's own, no offering"
    );
    assert_eq!(i.backend.as_deref(), Some("proxmox"));
    assert!(i.ip_address.is_some());
    // Later work goes to the same agent: the first agent is stopped, the stop still runs.
    s.kill_agent();
    let stop = s.provider.instance_action(&id, "stop").await.unwrap();
    let stopped = s
        .finished_as(&s.provider, stop.operation_id.as_deref().unwrap(), LONG)
        .await;
    assert_eq!(stopped.status, "succeeded", "{stopped:#?}");
    assert_eq!(s.provider.instance(&id).await.unwrap().status, "stopped");
}
