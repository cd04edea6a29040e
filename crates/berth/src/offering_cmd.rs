//! `berth offering`: publish, list, show, change and withdraw offerings.

use std::collections::BTreeMap;
use std::process::ExitCode;

use berth_api::wire::*;

use crate::api_cmd::{client, show};
use crate::cli::OutputFormat;
use crate::cli_api::{ApiArgs, OfferingAction};
use crate::cli_error::bad_flag;

fn price(s: &str) -> anyhow::Result<Price> {
    Price::parse(s).map_err(|e| bad_flag("--price", e))
}

fn labels(v: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    v.iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| bad_flag("--label", format!("{l:?} is not key=value")))
        })
        .collect()
}

fn size(s: &OfferingSpec) -> String {
    format!("{}c {} MiB {} GiB", s.cores, s.memory_mib, s.disk_gib)
}

fn state(o: &OfferingView) -> &'static str {
    match (&o.withdrawn_at, &o.availability) {
        (Some(_), _) => "withdrawn",
        (None, Some(a)) if !a.orderable => "not orderable now",
        (None, Some(_)) => "orderable",
        (None, None) => "on sale",
    }
}

/// One offering per line under a header; a provider's list says whether each can be ordered.
fn table(list: &[OfferingView]) -> String {
    if list.is_empty() {
        return "no offerings".into();
    }
    let row = |id: &str, name: &str, size: &str, price: &str, region: &str, state: &str| {
        format!("{id:<36}  {name:<16}  {size:<20}  {price:<18}  {region:<8}  {state}")
            .trim_end()
            .to_owned()
    };
    let providers = list.iter().any(|o| o.availability.is_some());
    let mut lines = vec![row(
        "ID",
        "NAME",
        "SIZE",
        "PRICE",
        "REGION",
        if providers { "STATE" } else { "" },
    )];
    for o in list {
        let s = &o.spec;
        lines.push(row(
            &o.id,
            &s.name,
            &size(s),
            &s.price.as_ref().map_or_else(|| "-".into(), Price::to_string),
            s.region.as_deref().unwrap_or("-"),
            if providers { state(o) } else { "" },
        ));
    }
    lines.join("\n")
}

/// One offering in full; for its provider, each agent and why it cannot take an order.
fn detail(o: &OfferingView) -> String {
    let s = &o.spec;
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut lines = vec![
        format!("id           {}", o.id),
        format!("name         {}", s.name),
        format!(
            "size         {} cores, {} MiB, {} GiB",
            s.cores, s.memory_mib, s.disk_gib
        ),
        format!("bandwidth    {}", dash(s.bandwidth_mbps.map(|b| format!("{b} Mbit/s")))),
        format!("template     {}", dash(s.template.clone())),
        format!("price        {}", dash(s.price.as_ref().map(Price::to_string))),
        format!("region       {}", dash(s.region.clone())),
        format!(
            "labels       {}",
            if s.labels.is_empty() {
                "-".into()
            } else {
                s.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    ];
    for (i, c) in s.post_provision_commands.iter().enumerate() {
        let head = if i == 0 { "then runs" } else { "" };
        lines.push(format!("{head:<12} $ {c}"));
    }
    lines.push(format!("created      {}", berth_core::utc(o.created_at)));
    if let Some(t) = o.withdrawn_at {
        lines.push(format!(
            "withdrawn    {} (it can no longer be ordered)",
            berth_core::utc(t)
        ));
    }
    if let Some(a) = &o.availability {
        lines.push(format!("orderable    {}", if a.orderable { "yes" } else { "NO" }));
        for g in &a.agents {
            let why = g.reason.as_deref().unwrap_or("can take it");
            lines.push(format!("  agent {} ({}): {why}", g.name, g.agent_id));
        }
        if a.agents.is_empty() {
            lines.push("  no agent is enrolled: `berth agent-token create`, then `berth agent enroll`".into());
        }
    }
    lines.join("\n")
}

/// After a create or a change: says on stderr when no agent can take the offering now.
fn warn_if_unorderable(o: &OfferingView, out: OutputFormat) {
    let Some(a) = &o.availability else { return };
    if a.orderable || o.withdrawn_at.is_some() || out == OutputFormat::Json {
        return;
    }
    let mut why: Vec<String> = a
        .agents
        .iter()
        .map(|g| format!("agent {}: {}", g.name, g.reason.as_deref().unwrap_or("-")))
        .collect();
    if why.is_empty() {
        why.push("no agent is enrolled".into());
    }
    eprintln!(
        "{}",
        berth_core::text::printable(&format!(
            "warning: no agent can take an order of this offering now ({})",
            why.join("; ")
        ))
    );
}

/// `none` for a flag that clears an optional value.
fn optional<T>(
    v: Option<String>,
    parse: impl Fn(&str) -> anyhow::Result<T>,
    old: Option<T>,
) -> anyhow::Result<Option<T>> {
    match v.as_deref() {
        None => Ok(old),
        Some("none") => Ok(None),
        Some(s) => parse(s).map(Some),
    }
}

pub async fn offering(action: OfferingAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    match action {
        OfferingAction::Create(f) => {
            let spec = OfferingSpec {
                name: f.name,
                cores: f.cores,
                memory_mib: f.memory_mib,
                disk_gib: f.disk_gib,
                bandwidth_mbps: f.bandwidth_mbps,
                template: f.template,
                price: f.price.as_deref().map(price).transpose()?,
                region: f.region,
                labels: labels(&f.labels)?,
                post_provision_commands: f.post_provision,
            };
            let o = c.create_offering(&spec).await?;
            warn_if_unorderable(&o, out);
            show(out, &o, detail)
        }
        OfferingAction::List {
            cores,
            memory_mib,
            disk_gib,
            region,
            labels: l,
            all,
        } => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in [
                ("cores", cores.map(u64::from)),
                ("memory_mib", memory_mib),
                ("disk_gib", disk_gib),
            ] {
                if let Some(v) = v {
                    q.append_pair(k, &v.to_string());
                }
            }
            if let Some(v) = &region {
                q.append_pair("region", v);
            }
            if !l.is_empty() {
                q.append_pair("labels", &l.join(","));
            }
            if all {
                q.append_pair("all", "true");
            }
            // A customer's `--all` is refused by the server (not allowed, exit 5).
            let list = c.offerings(&q.finish()).await?;
            show(out, &list, |l| table(l))
        }
        OfferingAction::Show { id } => show(out, &c.offering(&id).await?, detail),
        OfferingAction::Update {
            id,
            name,
            cores,
            memory_mib,
            disk_gib,
            bandwidth_mbps,
            template,
            price: p,
            region,
            labels: l,
            post_provision,
        } => {
            let old = c.offering(&id).await?.spec;
            let number = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| bad_flag("--bandwidth-mbps", format!("{s:?} is not a whole number or none")))
            };
            let spec = OfferingSpec {
                name: name.unwrap_or(old.name),
                cores: cores.unwrap_or(old.cores),
                memory_mib: memory_mib.unwrap_or(old.memory_mib),
                disk_gib: disk_gib.unwrap_or(old.disk_gib),
                bandwidth_mbps: optional(bandwidth_mbps, number, old.bandwidth_mbps)?,
                template: optional(template, |s| Ok(s.to_owned()), old.template)?,
                price: optional(p, price, old.price)?,
                region: optional(region, |s| Ok(s.to_owned()), old.region)?,
                labels: match l.as_slice() {
                    [] => old.labels,
                    [none] if none == "none" => BTreeMap::new(),
                    _ => labels(&l)?,
                },
                post_provision_commands: match post_provision.as_slice() {
                    [] => old.post_provision_commands,
                    [none] if none == "none" => Vec::new(),
                    _ => post_provision,
                },
            };
            let o = c.update_offering(&id, &spec).await?;
            warn_if_unorderable(&o, out);
            show(out, &o, detail)
        }
        OfferingAction::Withdraw { id } => {
            let o = c.withdraw_offering(&id).await?;
            show(out, &o, |o| format!("withdrawn: {} ({})", o.spec.name, o.id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OfferingView {
        serde_json::from_value(serde_json::json!({
            "id": "5b0c6a47-3f7e-4d2a-9c1e-2f8a7b6c5d4e", "provider_id": "p1", "name": "small",
            "cores": 2, "memory_mib": 2048, "disk_gib": 20, "template": "9000",
            "price": {"amount": 999, "currency": "EUR", "period": "month"}, "region": "eu-1",
            "labels": {"ssd": "yes"}, "post_provision_commands": ["apt-get update", "apt-get -y upgrade"],
            "withdrawn_at": null, "created_at": 1_796_544_000_000_i64,
            "availability": {"orderable": false, "agents": [
                {"agent_id": "a1", "name": "pve1", "orderable": false,
                 "reason": "does not report template \"9000\" (`berth template list` shows what it has)"}
            ]}
        }))
        .unwrap()
    }

    /// Golden: a provider's list, with prices and whether each can be ordered.
    #[test]
    fn list_shows_prices_and_state_under_a_header() {
        let mut withdrawn = sample();
        withdrawn.id = "9d3e1f20-aaaa-4bbb-8ccc-ddddeeeeffff".into();
        withdrawn.spec.name = "old".into();
        withdrawn.spec.price = None;
        withdrawn.withdrawn_at = Some(1);
        assert_eq!(
            table(&[sample(), withdrawn]),
            "\
ID                                    NAME              SIZE                  PRICE               REGION    STATE
5b0c6a47-3f7e-4d2a-9c1e-2f8a7b6c5d4e  small             2c 2048 MiB 20 GiB    9.99 EUR/month      eu-1      not orderable now
9d3e1f20-aaaa-4bbb-8ccc-ddddeeeeffff  old               2c 2048 MiB 20 GiB    -                   eu-1      withdrawn"
        );
        assert_eq!(table(&[]), "no offerings");
        // A customer's list has no availability: no state column.
        let mut customer = sample();
        customer.availability = None;
        assert!(table(&[customer]).lines().next().unwrap().ends_with("REGION"));
    }

    /// Golden: one offering in full, with why no agent can take it.
    #[test]
    fn show_is_a_detail_view_with_reasons() {
        assert_eq!(
            detail(&sample()),
            "\
id           5b0c6a47-3f7e-4d2a-9c1e-2f8a7b6c5d4e
name         small
size         2 cores, 2048 MiB, 20 GiB
bandwidth    -
template     9000
price        9.99 EUR/month
region       eu-1
labels       ssd=yes
then runs    $ apt-get update
             $ apt-get -y upgrade
created      2026-12-06T08:00:00Z
orderable    NO
  agent pve1 (a1): does not report template \"9000\" (`berth template list` shows what it has)"
        );
    }
}
