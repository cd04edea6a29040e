//! `berth plan | apply | discover --export | drift`: the declarative mode over the proxmox backend
//! a configuration names. Plans are saved as JSON with the backend they were made against and an
//! expiry; every apply and action goes to a hash-chained audit file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use berth_decl::apply::{ApplyOptions, apply as apply_plan};
use berth_decl::observe::observe;
use berth_decl::plan::Plan;
use serde::{Deserialize, Serialize};

use crate::cli::{ApplyArgs, DeclArgs, DiscoverArgs, OutputFormat, SiteArgs};
use crate::decl_audit;
use crate::decl_ledger::Job;
use crate::pve_cmd::pve_client;

/// A plan kept for `berth apply PLAN`.
#[derive(Serialize, Deserialize)]
struct SavedPlan {
    /// The configuration's backend it was made against.
    backend: String,
    /// The site file it came from.
    site: String,
    /// Milliseconds since the epoch; a plan is good for an hour.
    created_at: i64,
    /// The `--target`s it was limited to (what the ledger records after it is applied).
    #[serde(default)]
    targets: Vec<String>,
    plan: Plan,
}

const PLAN_LIFETIME_MS: i64 = 3_600_000;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The site file read and checked, with its hash; every problem printed as file:line: key: …
fn read_site(path: &Path) -> anyhow::Result<(berth_decl::Desired, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let desired = berth_decl::parse(&name, &text).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("{} problem(s) in the site file:\n{}", lines.len(), lines.join("\n"))
    })?;
    Ok((desired, berth_decl::site::file_hash(&text)))
}

/// A plan of a site file against the cluster, with what it was made from.
struct Made {
    plan: Plan,
    client: berth_proxmox::PveClient,
    backend: String,
    desired: berth_decl::Desired,
    observed: berth_decl::Observed,
    ledger: Option<berth_decl::ledger::Ledger>,
}

/// How a plan treats what Berth applied from the file that it no longer names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Removed {
    /// Named in a note, kept.
    Note,
    /// Deleted (`--prune`).
    Prune,
    /// Neither (drift says it itself; the proof after an apply).
    Quiet,
}

/// Plans `file` (see [`Removed`] for what the file no longer names).
async fn make_plan(site: &SiteArgs, file: &Path, targets: &[String], removed: Removed) -> anyhow::Result<Made> {
    let (desired, hash) = read_site(file)?;
    let backend = site.backend.as_deref().or(desired.backend.as_deref());
    let (client, _, backend) = pve_client(&site.config.config, backend, "berth plan")?;
    let observed = observe(&client).await.context("reading the cluster")?;
    let (ledger, held) = crate::decl_ledger::load(&site.audit, file, &backend);
    let wanted = match (&ledger, removed) {
        (Some(l), Removed::Prune) => l.prune(&desired, &observed, &held),
        (None, Removed::Prune) => bail!(
            "--prune deletes what Berth applied from {} and the file no longer names, but nothing was applied from it yet (no ledger next to {})",
            file.display(),
            site.audit.display()
        ),
        _ => desired.clone(),
    };
    if let (Some(l), Removed::Note) = (&ledger, removed) {
        let kept: Vec<&str> = l
            .prunable(&desired, &observed, &held)
            .map(|o| o.addr.as_str())
            .collect();
        if !kept.is_empty() {
            eprintln!(
                "note: {} object(s) Berth applied from {} are no longer in it: {} (kept; --prune deletes them)",
                kept.len(),
                file.display(),
                kept.join(", ")
            );
        }
    }
    let plan = berth_decl::plan(&wanted, &observed, &hash).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("{}:{e}", file.display())).collect();
        anyhow::anyhow!("the site file names what does not exist:\n{}", lines.join("\n"))
    })?;
    let mut plan = plan.only(targets);
    // What the apply takes over, said for a plan to be looked at (not when resuming, drifting or
    // proving an apply: those continue what an apply began).
    if removed != Removed::Quiet {
        let hit = |a: &str| targets.is_empty() || targets.iter().any(|t| berth_decl::model::glob(t, a));
        plan.adopt = berth_decl::ledger::Ledger::adopted(ledger.as_ref(), &desired, &observed)
            .into_iter()
            .filter(|a| hit(a))
            .collect();
    }
    Ok(Made {
        plan,
        client,
        backend,
        desired,
        observed,
        ledger,
    })
}

fn print_plan(plan: &Plan, out: OutputFormat) -> anyhow::Result<()> {
    match out {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(plan)?),
        OutputFormat::Human => println!("{}", berth_core::text::printable(&berth_decl::render::human(plan))),
    }
    Ok(())
}

/// `berth plan` (and `berth drift`, the same comparison read as "what changed out of band").
pub async fn plan(a: DeclArgs, out: OutputFormat, drift: bool) -> anyhow::Result<ExitCode> {
    if drift && (a.prune || a.out.is_some()) {
        bail!("--prune and --out belong to berth plan; drift only reports");
    }
    let removed = match (drift, a.prune) {
        (true, _) => Removed::Quiet,
        (false, true) => Removed::Prune,
        (false, false) => Removed::Note,
    };
    let made = make_plan(&a.site, &a.file, &a.target, removed).await?;
    // Drift against the last apply, when there was one: the cluster's changes outside Berth,
    // apart from the file's edits not applied yet.
    if drift && let Some(ledger) = &made.ledger {
        let mut d = ledger.drift(&made.desired, &made.observed);
        d.retain(&a.target);
        crate::decl_ledger::print_drift(&d, &a.file, out)?;
        return Ok(if d.is_drift() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    let (plan, backend) = (made.plan, made.backend);
    print_plan(&plan, out)?;
    if let Some(path) = a.out.as_ref().filter(|_| !drift) {
        let saved = SavedPlan {
            backend,
            // Absolute: `berth apply PLAN` may run from elsewhere.
            site: berth_decl::ledger_file::absolute(&a.file),
            created_at: now_ms(),
            targets: a.target.clone(),
            plan: plan.clone(),
        };
        std::fs::write(path, serde_json::to_vec_pretty(&saved)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "plan saved to {} (apply it within the hour: berth apply {})",
            path.display(),
            path.display()
        );
    }
    if let Some(c) = plan.impossible().next() {
        bail!("the plan cannot be applied: {} is impossible", c.addr);
    }
    Ok(if plan.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub(crate) fn ask(question: &str, yes: bool) -> anyhow::Result<()> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("confirm with --yes (no terminal to ask on); nothing was applied");
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => bail!("not confirmed; nothing was applied"),
    }
}

/// Applies `plan`, recording the apply, each action and each checkpoint in the audit file, and
/// the apply itself for `berth checkpoints` / `berth rollback`.
async fn run_apply(
    client: &berth_proxmox::PveClient,
    job: Job<'_>,
    site: &SiteArgs,
    site_file: &str,
    backend: &str,
    opts: ApplyOptions,
) -> anyhow::Result<()> {
    let plan = job.plan;
    let subject = &format!("site:{site_file}");
    let origin = crate::decl_rollback::Origin { site: site_file, plan };
    let mut summary = serde_json::json!({ "file_hash": plan.file_hash, "summary": plan.summary() });
    match apply_plan(client, plan, opts).await {
        Ok(done) => {
            for step in &done.steps {
                println!("{step}");
            }
            for change in &plan.changes {
                let detail =
                    serde_json::json!({ "apply": done.apply_id, "action": change.action, "fields": change.fields });
                decl_audit::append(&site.audit, "decl.action.done", &change.addr, detail)?;
            }
            for cp in &done.checkpoints {
                decl_audit::append(
                    &site.audit,
                    "decl.checkpoint.created",
                    cp.addr(),
                    serde_json::to_value(cp)?,
                )?;
            }
            summary["apply"] = serde_json::json!(done.apply_id);
            decl_audit::append(&site.audit, "decl.plan.applied", subject, summary)?;
            if !done.checkpoints.is_empty() {
                println!("checkpoints kept: `berth rollback {}` puts them back", done.apply_id);
            }
            crate::decl_rollback::keep(&site.audit, backend, done, &origin, None)?;
            crate::decl_ledger::record(&site.audit, Path::new(site_file), backend, job);
            Ok(())
        }
        Err(failed) => {
            // What was done before the failure, and any checkpoint taken, is kept and audited.
            let failed = *failed;
            for step in &failed.done.steps {
                println!("{step}");
            }
            for cp in &failed.done.checkpoints {
                decl_audit::append(
                    &site.audit,
                    "decl.checkpoint.created",
                    cp.addr(),
                    serde_json::to_value(cp)?,
                )?;
            }
            let detail = serde_json::json!({
                "apply": failed.done.apply_id, "error": failed.error.to_string(),
                "done": failed.done.steps, "plan": summary,
            });
            decl_audit::append(&site.audit, "decl.apply.failed", subject, detail)?;
            if !failed.done.checkpoints.is_empty() {
                println!(
                    "checkpoints kept: `berth rollback {}` puts them back",
                    failed.done.apply_id
                );
            }
            let (error, id) = (failed.error.to_string(), failed.done.apply_id.clone());
            crate::decl_rollback::keep(&site.audit, backend, failed.done, &origin, Some(error))?;
            eprintln!("what was done stays done; `berth apply --resume {id}` finishes the rest");
            Err(failed.error.into())
        }
    }
}

fn options(a: &ApplyArgs) -> ApplyOptions {
    ApplyOptions {
        adopt_pending_network: a.adopt_pending_network,
        allow_mgmt_network: a.allow_mgmt_network,
        no_backup: a.no_backup,
        ..ApplyOptions::default()
    }
}

pub async fn apply(a: ApplyArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    if let Some(path) = &a.plan {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let saved: SavedPlan =
            serde_json::from_slice(&text).with_context(|| format!("{} is not a saved plan", path.display()))?;
        if now_ms() - saved.created_at > PLAN_LIFETIME_MS {
            bail!("the plan in {} is more than an hour old; plan again", path.display());
        }
        let backend = a.site.backend.as_deref().unwrap_or(&saved.backend);
        let (client, _, _) = pve_client(&a.site.config.config, Some(backend), "berth apply")?;
        print_plan(&saved.plan, out)?;
        if saved.plan.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        refuse_unowned(&saved.plan, a.adopt)?;
        let job = Job {
            plan: &saved.plan,
            targets: &saved.targets,
            observed: None,
        };
        run_apply(&client, job, &a.site, &saved.site, backend, options(&a)).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = &a.resume {
        return resume(&a, id, out).await;
    }
    let file = a.file.as_ref().expect("clap: a plan, --file or --resume");
    let Made {
        plan,
        client,
        backend,
        observed,
        ..
    } = make_plan(
        &a.site,
        file,
        &a.target,
        if a.prune { Removed::Prune } else { Removed::Note },
    )
    .await?;
    let job = Job {
        plan: &plan,
        targets: &a.target,
        observed: Some(&observed),
    };
    print_plan(&plan, out)?;
    if let Some(c) = plan.impossible().next() {
        bail!("the plan cannot be applied: {} is impossible", c.addr);
    }
    if plan.is_empty() {
        // Nothing to do: the cluster is as the file says, which is what the ledger records.
        crate::decl_ledger::record(&a.site.audit, file, &backend, job);
        return Ok(ExitCode::SUCCESS);
    }
    refuse_unowned(&plan, a.adopt)?;
    ask(
        &format!("Apply these {} changes through backend {backend}?", plan.changes.len()),
        a.yes,
    )?;
    let site_file = file.display().to_string();
    run_apply(&client, job, &a.site, &site_file, &backend, options(&a)).await?;
    converged(&a.site, file, &a.target).await
}

/// Refuses, before anything is asked or done, to change objects Berth never applied from the
/// file unless `--adopt` says to take them over.
fn refuse_unowned(plan: &Plan, adopt: bool) -> anyhow::Result<()> {
    let unowned: Vec<&str> = plan.adopted_changes().map(|c| c.addr.as_str()).collect();
    if adopt || unowned.is_empty() {
        return Ok(());
    }
    bail!(
        "{} on the cluster but never applied from this file: the plan would change {}; --adopt takes {} over (nothing was applied)",
        if unowned.len() == 1 {
            format!("{} is", unowned[0])
        } else {
            format!("{} are", unowned.join(", "))
        },
        if unowned.len() == 1 { "it" } else { "them" },
        if unowned.len() == 1 { "it" } else { "them" },
    )
}

/// The proof after an apply: planning again finds nothing left to do.
async fn converged(site: &SiteArgs, file: &Path, targets: &[String]) -> anyhow::Result<ExitCode> {
    let again = make_plan(site, file, targets, Removed::Quiet).await?.plan;
    if again.is_empty() {
        println!("Applied. A new plan shows no changes.");
        Ok(ExitCode::SUCCESS)
    } else {
        print_plan(&again, OutputFormat::Human)?;
        bail!("applied, but the cluster still differs from the file (above)");
    }
}

/// What a change does, in one word, as apply records keep it.
pub(crate) fn action_word(a: &berth_decl::Action) -> &'static str {
    use berth_decl::Action as A;
    match a {
        A::Create => "create",
        A::Update => "update",
        A::UpdateRestart { .. } => "update-restart",
        A::Move { .. } => "move",
        A::Replace { .. } => "replace",
        A::Delete => "delete",
        A::Impossible { .. } => "impossible",
    }
}

/// `berth apply --resume APPLY_ID`: finishes an apply that failed part way. The same site file
/// (unchanged since: its hash is checked) is planned again over the objects that apply touched,
/// so what it already did plans to nothing and only the rest is shown, confirmed and applied,
/// under the same apply id (its checkpoints and audit entries join the first attempt's).
async fn resume(a: &ApplyArgs, id: &str, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let records = crate::decl_rollback::records(&a.site.audit)?;
    let Some(last) = records.iter().rev().find(|r| r.applied.apply_id == id) else {
        bail!("no apply {id} is recorded next to {}", a.site.audit.display());
    };
    if last.rolled_back {
        bail!("apply {id} was rolled back: nothing to resume (plan and apply the file anew)");
    }
    if last.error.is_none() {
        println!("apply {id} finished: nothing to resume");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(b) = a.site.backend.as_deref().filter(|b| *b != last.backend) {
        bail!(
            "apply {id} was made through backend {}, not {b}: a resume goes to the same cluster",
            last.backend
        );
    }
    let (Some(site_file), Some(hash)) = (&last.site, &last.file_hash) else {
        bail!("apply {id} was recorded without its site file (an older release): plan and apply the file again");
    };
    let file = Path::new(site_file);
    let (desired, now) = read_site(file)?;
    if &now != hash {
        bail!("{site_file} changed since apply {id}: plan and apply it anew (berth apply -f {site_file})");
    }
    let site = SiteArgs {
        backend: Some(last.backend.clone()),
        ..a.site.clone()
    };
    // A pruning apply deleted what the file no longer names among the objects it touched: its
    // resume does the rest of that (within those objects, pruning deletes nothing else).
    let pruning = last
        .actions
        .iter()
        .any(|(addr, action)| action == "delete" && desired.find(addr).is_none());
    // Every object the apply's attempts touched: a resume that failed too recorded only its rest,
    // and the ledger must get them all.
    let mut addresses: Vec<String> = records
        .iter()
        .filter(|r| r.applied.apply_id == id)
        .flat_map(|r| r.addresses.iter().cloned())
        .collect();
    addresses.sort();
    addresses.dedup();
    let Made {
        mut plan,
        client,
        backend,
        observed,
        ..
    } = make_plan(
        &site,
        file,
        &addresses,
        if pruning { Removed::Prune } else { Removed::Quiet },
    )
    .await?;
    // The apply was allowed what it planned (with --adopt if it needed it): nothing to adopt here.
    plan.adopt.clear();
    if last.cluster.is_some() && plan.cluster != last.cluster {
        bail!(
            "apply {id} was made against cluster {}, backend {backend} reaches {}: a resume goes to the same cluster",
            last.cluster.as_deref().unwrap_or("-"),
            plan.cluster.as_deref().unwrap_or("-")
        );
    }
    print_plan(&plan, out)?;
    // The rest must be what was planned: a change the cluster turned into another action
    // (an update now a replace) is a new plan to look at, not a resume.
    for c in &plan.changes {
        let now = action_word(&c.action);
        match last.actions.get(&c.addr) {
            Some(was) if was == now => {}
            was => bail!(
                "the rest of apply {id} is not what it planned: {} was to {}, now {now} (the cluster changed since); plan and apply the file anew",
                c.addr,
                was.map_or("stay as it was", String::as_str)
            ),
        }
    }
    let job = Job {
        plan: &plan,
        targets: &addresses,
        observed: Some(&observed),
    };
    if plan.is_empty() {
        println!("Nothing left: the cluster is as apply {id} meant.");
        crate::decl_ledger::record(&site.audit, file, &backend, job);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(c) = plan.impossible().next() {
        bail!("the rest of apply {id} cannot be applied: {} is impossible", c.addr);
    }
    ask(
        &format!(
            "Resume apply {id}: {} changes left, through backend {backend}?",
            plan.changes.len()
        ),
        a.yes,
    )?;
    let opts = ApplyOptions {
        apply_id: id.to_owned(),
        earlier: crate::decl_rollback::ApplyRecord::checkpoints_of(&records, id),
        ..options(a)
    };
    run_apply(&client, job, &site, site_file, &backend, opts).await?;
    converged(&site, file, &addresses).await
}

pub async fn discover(a: DiscoverArgs) -> anyhow::Result<ExitCode> {
    let (client, _, backend) = pve_client(&a.site.config.config, a.site.backend.as_deref(), "berth discover")?;
    let observed = observe(&client).await.context("reading the cluster")?;
    let text = berth_decl::export::export(&observed, Some(&backend));
    match &a.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} ({} objects)", path.display(), observed.objects.len());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth audit verify --file`: the chain of a local audit file.
pub fn verify_audit(path: &Path, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let result = decl_audit::verify(path)?;
    let json = match &result {
        Ok(v) => serde_json::json!({ "ok": true, "entries": v.entries, "last_hash": v.head }),
        Err(b) => serde_json::json!({ "ok": false, "broken_at": b.seq, "reason": b.reason }),
    };
    match (out, &result) {
        (OutputFormat::Json, _) => println!("{}", serde_json::to_string_pretty(&json)?),
        (OutputFormat::Human, Ok(v)) => println!("audit file intact: {} entries, head {}", v.entries, v.head),
        (OutputFormat::Human, Err(b)) => println!("audit file BROKEN at entry {}: {}", b.seq, b.reason),
    }
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
