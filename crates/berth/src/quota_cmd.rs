//! `berth quota`: what an account may hold (operators set it), and what a provider lets each
//! of its customers hold of its instances (the provider sets it).

use std::process::ExitCode;

use berth_api::wire::{CustomerQuotaView, QuotaView, SetCustomerQuota, SetQuota};

use crate::api_cmd::{client, own_provider, show};
use crate::cli::OutputFormat;
use crate::cli_api::{ApiArgs, QuotaAction};
use crate::cli_error::bad_flag;

/// `--instances 500`, or `default` (the server's number).
fn number(flag: &str, v: Option<String>) -> anyhow::Result<Option<Option<i64>>> {
    match v.as_deref() {
        None => Ok(None),
        Some("default") => Ok(Some(None)),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| Some(Some(n)))
            .ok_or_else(|| bad_flag(flag, format!("{s:?} is not a number (0 or more) or `default`"))),
    }
}

fn quota_text(q: &QuotaView) -> String {
    let own = |set: Option<i64>| if set.is_some() { "  (set for this account)" } else { "" };
    format!(
        "account {}\ninstances          {}{}\npending instances  {}{}\nofferings          {}{}\ntokens             {}{}",
        q.account_id,
        q.instances,
        own(q.own.instances),
        q.pending_instances,
        own(q.own.pending_instances),
        q.offerings,
        own(q.own.offerings),
        q.tokens,
        own(q.own.tokens)
    )
}

pub async fn quota(action: QuotaAction, api: &ApiArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let c = client(api)?;
    match action {
        QuotaAction::Show { account } => show(out, &c.quota(&account).await?, quota_text),
        QuotaAction::Set {
            account,
            instances,
            pending_instances,
            offerings,
            tokens,
        } => {
            let changes = [
                number("--instances", instances)?,
                number("--pending-instances", pending_instances)?,
                number("--offerings", offerings)?,
                number("--tokens", tokens)?,
            ];
            if changes.iter().all(Option::is_none) {
                return Err(bad_flag(
                    "--instances",
                    "name what to set: --instances, --pending-instances, --offerings or --tokens (a number or `default`)",
                ));
            }
            // Unnamed numbers keep what the account has now.
            let now = c.quota(&account).await?.own;
            let pick = |change: Option<Option<i64>>, current: Option<i64>| change.unwrap_or(current);
            let set = SetQuota {
                instances: pick(changes[0], now.instances),
                pending_instances: pick(changes[1], now.pending_instances),
                offerings: pick(changes[2], now.offerings),
                tokens: pick(changes[3], now.tokens),
            };
            show(out, &c.set_quota(&account, &set).await?, quota_text)
        }
        QuotaAction::Customers { provider } => {
            let provider = own_provider(&c, provider).await?;
            show(out, &c.customer_quotas(&provider).await?, |l| customer_table(l))
        }
        QuotaAction::Customer { customer, provider } => {
            let provider = own_provider(&c, provider).await?;
            show(out, &c.customer_quota(&provider, &customer).await?, customer_text)
        }
        QuotaAction::SetCustomer {
            customer,
            provider,
            instances,
            pending_instances,
        } => {
            let changes = [
                number("--instances", instances)?,
                number("--pending-instances", pending_instances)?,
            ];
            if changes.iter().all(Option::is_none) {
                return Err(bad_flag(
                    "--instances",
                    "name what to set: --instances or --pending-instances (a number, or `default` to remove it)",
                ));
            }
            let provider = own_provider(&c, provider).await?;
            // Unnamed numbers keep what was set for this customer (not the default's).
            let now = c
                .customer_quotas(&provider)
                .await?
                .into_iter()
                .find(|q| q.customer_id == customer);
            let (instances, pending) = now.map_or((None, None), |q| (q.instances, q.pending_instances));
            let set = SetCustomerQuota {
                instances: changes[0].unwrap_or(instances),
                pending_instances: changes[1].unwrap_or(pending),
            };
            show(
                out,
                &c.set_customer_quota(&provider, &customer, &set).await?,
                customer_text,
            )
        }
    }
}

fn bound(n: Option<i64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

fn customer_table(list: &[CustomerQuotaView]) -> String {
    if list.is_empty() {
        return "no numbers set for customers (only their own quotas bound them)".into();
    }
    let mut lines = vec![format!(
        "{:<36}  {:>9}  {:>17}",
        "CUSTOMER", "INSTANCES", "PENDING INSTANCES"
    )];
    for q in list {
        lines.push(format!(
            "{:<36}  {:>9}  {:>17}",
            q.customer_id,
            bound(q.instances),
            bound(q.pending_instances)
        ));
    }
    lines.join("\n")
}

fn customer_text(q: &CustomerQuotaView) -> String {
    format!(
        "provider {}, customer {}\ninstances          {}\npending instances  {}",
        q.provider_id,
        q.customer_id,
        bound(q.instances),
        bound(q.pending_instances)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: an account's numbers, saying which were set for it; a provider's per-customer
    /// numbers under a header.
    #[test]
    fn quotas_read_as_tables() {
        let q = QuotaView {
            account_id: "c1".into(),
            instances: 500,
            pending_instances: 50,
            offerings: 100,
            tokens: 20,
            own: SetQuota {
                instances: Some(500),
                ..SetQuota::default()
            },
        };
        assert_eq!(
            quota_text(&q),
            "\
account c1
instances          500  (set for this account)
pending instances  50
offerings          100
tokens             20"
        );
        let c = CustomerQuotaView {
            provider_id: "p1".into(),
            customer_id: "default".into(),
            instances: Some(10),
            pending_instances: None,
        };
        assert_eq!(
            customer_table(std::slice::from_ref(&c)),
            "\
CUSTOMER                              INSTANCES  PENDING INSTANCES
default                                      10                  -"
        );
        assert_eq!(
            customer_text(&c),
            "provider p1, customer default\ninstances          10\npending instances  -"
        );
        assert!(customer_table(&[]).starts_with("no numbers set"));
    }
}
