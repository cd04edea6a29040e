//! Quotas: what one account holds (operators set it), and what a provider lets each customer
//! hold of its instances (the provider sets it), each checked where the row is made.

mod common;

use berth_api::wire::{CreateOrder, SetCustomerQuota, SetQuota};
use common::*;

#[tokio::test]
async fn quotas_bound_what_one_account_holds_and_operators_move_them() {
    let ctx = TestContext::sqlite_with(|c| {
        c.quotas.pending_instances = 3;
        c.quotas.instances = 4;
        c.quotas.offerings = 2;
    })
    .await;
    let (pid, provider) = ctx.provider("acme").await;
    let (cid, customer) = ctx.customer("bob").await;
    let agent = ctx.agent(&pid, &provider).await;
    agent.client.heartbeat(&roomy()).await.unwrap();
    let offering = provider.create_offering(&small_offering()).await.unwrap();
    provider.create_offering(&small_offering()).await.unwrap();
    let e = provider.create_offering(&small_offering()).await.unwrap_err();
    assert_eq!(e.code(), Some("quota_exceeded"), "{e}");

    // Recorded without provisioning: three, not a fourth; provisioned ones up to four in all.
    let later = |name: &str| CreateOrder {
        provision: false,
        ..order(&offering.id, name)
    };
    for n in 0..3 {
        customer.create_order(&later(&format!("p{n}")), None).await.unwrap();
    }
    let e = customer.create_order(&later("p3"), None).await.unwrap_err();
    assert_eq!(e.code(), Some("quota_exceeded"), "{e}");
    assert!(e.to_string().contains("pending_instances"), "{e}");
    customer.create_order(&order(&offering.id, "r0"), None).await.unwrap();
    let e = customer
        .create_order(&order(&offering.id, "r1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("quota_exceeded"), "{e}");

    // The account sees its numbers; an operator raises them, and the order goes through.
    let q = customer.quota(&cid).await.unwrap();
    assert_eq!((q.instances, q.pending_instances, q.own.instances), (4, 3, None));
    let q = ctx
        .operator
        .set_quota(
            &cid,
            &SetQuota {
                instances: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((q.instances, q.own.instances), (10, Some(10)));
    customer.create_order(&order(&offering.id, "r1"), None).await.unwrap();
    let bad = ctx
        .operator
        .set_quota(
            &cid,
            &SetQuota {
                offerings: Some(-1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("invalid_input"));
    let audit = ctx.operator.audit(0, 1000).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "quota.set" && e.subject == format!("account:{cid}"))
    );
}

/// A provider bounds what each customer holds of its instances (a default, and one customer's
/// own numbers), on top of the customer's quota; another provider's customers are not its to see.
#[tokio::test]
async fn providers_bound_what_each_customer_holds_of_their_instances() {
    let ctx = TestContext::sqlite().await;
    let (pid, provider) = ctx.provider("acme").await;
    let (_, other) = ctx.provider("other").await;
    let (cid, customer) = ctx.customer("bob").await;
    let offering = provider.create_offering(&small_offering()).await.unwrap();
    let later = |name: &str| CreateOrder {
        provision: false,
        ..order(&offering.id, name)
    };
    let two = SetCustomerQuota {
        instances: Some(2),
        pending_instances: None,
    };
    let set = provider.set_customer_quota(&pid, "default", &two).await.unwrap();
    assert_eq!((set.customer_id.as_str(), set.instances), ("default", Some(2)));
    for n in 0..2 {
        customer.create_order(&later(&format!("p{n}")), None).await.unwrap();
    }
    let e = customer.create_order(&later("p2"), None).await.unwrap_err();
    assert_eq!(e.code(), Some("quota_exceeded"), "{e}");
    assert!(
        e.to_string()
            .contains("this provider lets this customer hold 2 instances"),
        "{e}"
    );
    // The customer sees what is in force for it; the provider raises it for this customer.
    let mine = customer.customer_quota(&pid, &cid).await.unwrap();
    assert_eq!((mine.instances, mine.pending_instances), (Some(2), None));
    let three = SetCustomerQuota {
        instances: Some(3),
        pending_instances: None,
    };
    provider.set_customer_quota(&pid, &cid, &three).await.unwrap();
    customer.create_order(&later("p2"), None).await.unwrap();
    let listed: Vec<_> = provider
        .customer_quotas(&pid)
        .await
        .unwrap()
        .into_iter()
        .map(|q| (q.customer_id, q.instances))
        .collect();
    assert!(
        listed.contains(&(cid.clone(), Some(3))) && listed.len() == 2,
        "{listed:?}"
    );
    // Not another provider's, not the customer's to set; bad numbers and customers by name.
    let e = other.set_customer_quota(&pid, &cid, &three).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = customer.set_customer_quota(&pid, &cid, &three).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let bad = SetCustomerQuota {
        instances: Some(-1),
        pending_instances: None,
    };
    let e = provider.set_customer_quota(&pid, &cid, &bad).await.unwrap_err();
    assert_eq!((e.code(), e.field()), (Some("invalid_input"), Some("instances")), "{e}");
    let e = provider.set_customer_quota(&pid, "nobody", &three).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    // A customer it never served is answered as no customer at all: ids are not its to probe.
    let (carol, _) = ctx.customer("carol").await;
    let e = provider.set_customer_quota(&pid, &carol, &three).await.unwrap_err();
    assert_eq!(
        (e.status(), e.to_string().contains("customer")),
        (Some(404), true),
        "{e}"
    );
    ctx.operator.set_customer_quota(&pid, &carol, &three).await.unwrap();
    let audit = ctx.operator.audit(0, 1000).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "customer_quota.set").count(), 3);
}
