//! Bounded lists and quotas: every list pages in creation order without gaps or repeats (ties
//! in time broken by id), and quotas hold even when many orders race.

use std::sync::Arc;

use serde_json::json;

use super::{T0, audit};
use crate::*;

fn order(provider: &str, customer: &str, status: &str, quota: Option<InstanceQuota>) -> NewInstance {
    NewInstance {
        provider_id: provider.into(),
        customer_id: Some(customer.into()),
        offering_id: None,
        agent_id: None,
        status: status.into(),
        request: json!({}),
        quota,
    }
}

/// Reads a whole list page by page (`limit` at a time), as a client following cursors does.
async fn all_pages<F, Fut>(limit: i64, mut page: F) -> Vec<String>
where
    F: FnMut(Page) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let got = page(Page {
            after: after.clone(),
            limit,
        })
        .await;
        assert!(got.len() as i64 <= limit, "store: a page holds at most its limit");
        seen.extend(got.iter().cloned());
        match got.last() {
            Some(last) if got.len() as i64 == limit => after = Some(last.clone()),
            _ => return seen,
        }
    }
}

pub async fn limits(s: Arc<dyn Store>, tag: &str) {
    let p = s.create_provider(&format!("{tag}-pages"), T0).await.unwrap();
    let c = s.create_customer("pager", T0).await.unwrap();
    // Seven instances, three of them created in the same millisecond.
    for t in [0, 1, 1, 1, 2, 3, 4] {
        s.create_instance(order(&p.id, &c.id, "pending", None), None, audit("x"), T0 + t)
            .await
            .unwrap();
    }
    let filter = InstanceFilter {
        customer_id: Some(c.id.clone()),
        ..Default::default()
    };
    let whole: Vec<String> = s
        .instances(&filter, &Page::all())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(whole.len(), 7);
    for limit in [1, 2, 3, 7, 100] {
        let paged = all_pages(limit, |page| {
            let (s, filter) = (s.clone(), filter.clone());
            async move {
                s.instances(&filter, &page)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|i| i.id)
                    .collect()
            }
        })
        .await;
        assert_eq!(
            paged, whole,
            "store: instances paged by {limit} are the whole list, in order"
        );
    }
    assert!(
        s.instances(
            &filter,
            &Page {
                after: Some("nothing".into()),
                limit: 10
            }
        )
        .await
        .unwrap()
        .is_empty(),
        "store: an unknown cursor gives an empty page"
    );
    for n in 0..5 {
        s.create_offering(&p.id, json!({"name": format!("o{n}")}), None, audit("x"), T0 + n / 2)
            .await
            .unwrap();
    }
    let offerings: Vec<String> = s
        .offerings(Some(&p.id), false, &Page::all())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    let paged = all_pages(2, |page| {
        let (s, p) = (s.clone(), p.id.clone());
        async move {
            s.offerings(Some(&p), false, &page)
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.id)
                .collect()
        }
    })
    .await;
    assert_eq!(paged, offerings, "store: offerings page");
    let customers: Vec<String> = s
        .customers(&Page::all())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let paged = all_pages(2, |page| {
        let s = s.clone();
        async move { s.customers(&page).await.unwrap().into_iter().map(|c| c.id).collect() }
    })
    .await;
    assert_eq!(paged, customers, "store: customers page");
    let providers: Vec<String> = s
        .providers(&Page::all())
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    let paged = all_pages(3, |page| {
        let s = s.clone();
        async move { s.providers(&page).await.unwrap().into_iter().map(|p| p.id).collect() }
    })
    .await;
    assert_eq!(paged, providers, "store: providers page");
    assert_eq!(s.provider(&p.id).await.unwrap().id, p.id, "store: one provider by id");
    assert!(matches!(s.provider("nobody").await, Err(StoreError::NotFound(_))));

    // Offerings quota: counted per provider, withdrawn ones free their place.
    assert!(matches!(
        s.create_offering(&p.id, json!({}), Some(5), audit("x"), T0).await,
        Err(StoreError::Quota {
            what: "offerings",
            limit: 5
        })
    ));
    s.withdraw_offering(&offerings[0], audit("x"), T0).await.unwrap();
    s.create_offering(&p.id, json!({}), Some(5), audit("x"), T0)
        .await
        .unwrap();

    // Instance quotas: pending ones apart; concurrent orders never slip past together.
    let q = InstanceQuota {
        instances: 10,
        pending_instances: 7,
        of_provider: CustomerQuota::default(),
    };
    assert!(matches!(
        s.create_instance(order(&p.id, &c.id, "pending", Some(q)), None, audit("x"), T0)
            .await,
        Err(StoreError::Quota {
            what: "pending_instances",
            limit: 7
        })
    ));
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (s, p, c) = (s.clone(), p.id.clone(), c.id.clone());
            tokio::spawn(async move {
                s.create_instance(order(&p, &c, "provisioning", Some(q)), None, audit("x"), T0)
                    .await
            })
        })
        .collect();
    let mut made = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => made += 1,
            Err(StoreError::Quota {
                what: "instances",
                limit: 10,
            }) => {}
            Err(e) => panic!("store: unexpected {e}"),
        }
    }
    assert_eq!(made, 3, "store: exactly the room left under the quota was used");

    // An account's own numbers: set, read, cleared; unknown accounts refused.
    assert_eq!(s.quota(&c.id).await.unwrap(), Quota::default());
    let mine = Quota {
        instances: Some(50),
        ..Default::default()
    };
    s.set_quota(&c.id, mine, audit("quota.set"), T0).await.unwrap();
    assert_eq!(s.quota(&c.id).await.unwrap(), mine);
    s.set_quota(&c.id, Quota::default(), audit("quota.set"), T0)
        .await
        .unwrap();
    assert_eq!(s.quota(&c.id).await.unwrap(), Quota::default());
    assert!(matches!(
        s.set_quota("nobody", mine, audit("quota.set"), T0).await,
        Err(StoreError::NotFound(_))
    ));

    // What a provider lets its customers hold: one customer's numbers, else its default;
    // counted per provider, so another provider's instances do not count.
    let (c2, other) = (
        s.create_customer(&format!("{tag}-c2"), T0).await.unwrap(),
        s.create_provider(&format!("{tag}-other"), T0).await.unwrap(),
    );
    let every = CustomerQuota {
        instances: Some(2),
        pending_instances: None,
    };
    s.set_customer_quota(&p.id, EVERY_CUSTOMER, every, audit("customer_quota.set"), T0)
        .await
        .unwrap();
    let one = CustomerQuota {
        instances: None,
        pending_instances: Some(1),
    };
    s.set_customer_quota(&p.id, &c2.id, one, audit("customer_quota.set"), T0)
        .await
        .unwrap();
    assert_eq!(s.customer_quota(&p.id, &c2.id).await.unwrap(), one);
    let listed = s.customer_quotas(&p.id, &Page::all()).await.unwrap();
    let mut want = vec![(EVERY_CUSTOMER.to_owned(), every), (c2.id.clone(), one)];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, want, "store: a provider's numbers, by customer id");
    let roomy = InstanceQuota {
        instances: 100,
        pending_instances: 100,
        of_provider: one.or(every),
    };
    s.create_instance(order(&other.id, &c2.id, "pending", Some(roomy)), None, audit("x"), T0)
        .await
        .unwrap();
    s.create_instance(order(&p.id, &c2.id, "pending", Some(roomy)), None, audit("x"), T0)
        .await
        .unwrap();
    assert!(matches!(
        s.create_instance(order(&p.id, &c2.id, "pending", Some(roomy)), None, audit("x"), T0)
            .await,
        Err(StoreError::Quota {
            what: "provider_pending_instances",
            limit: 1
        })
    ));
    s.create_instance(order(&p.id, &c2.id, "provisioning", Some(roomy)), None, audit("x"), T0)
        .await
        .unwrap();
    assert!(matches!(
        s.create_instance(order(&p.id, &c2.id, "provisioning", Some(roomy)), None, audit("x"), T0)
            .await,
        Err(StoreError::Quota {
            what: "provider_instances",
            limit: 2
        })
    ));
    s.set_customer_quota(&p.id, &c2.id, CustomerQuota::default(), audit("customer_quota.set"), T0)
        .await
        .unwrap();
    assert_eq!(
        s.customer_quotas(&p.id, &Page::all()).await.unwrap().len(),
        1,
        "store: cleared"
    );
    for (provider, customer) in [("nobody", c2.id.as_str()), (p.id.as_str(), "nobody")] {
        assert!(matches!(
            s.set_customer_quota(provider, customer, one, audit("customer_quota.set"), T0)
                .await,
            Err(StoreError::NotFound(_))
        ));
    }

    // Idempotency keys are not kept forever: one stuck in progress is freed after an hour, one
    // done is forgotten after a day.
    let scope = format!("{tag}-expiry");
    let begin = |key: &'static str, now: i64| {
        let (s, scope) = (s.clone(), scope.clone());
        async move { s.idempotency_begin(&scope, key, "f", now).await.unwrap() }
    };
    assert_eq!(begin("stuck", T0).await, Idempotency::New);
    assert_eq!(
        begin("stuck", T0 + replay::IN_PROGRESS_MS - 1).await,
        Idempotency::InProgress
    );
    assert_eq!(
        begin("stuck", T0 + replay::IN_PROGRESS_MS + 1).await,
        Idempotency::New,
        "store: an abandoned key is taken again"
    );
    assert_eq!(begin("done", T0).await, Idempotency::New);
    s.idempotency_end(&scope, "done", Some((202, json!({"x": 1}))))
        .await
        .unwrap();
    assert_eq!(
        begin("done", T0 + replay::IDEMPOTENCY_TTL_MS - 1).await,
        Idempotency::Done(202, json!({"x": 1}))
    );
    assert_eq!(
        begin("done", T0 + replay::IDEMPOTENCY_TTL_MS + 1).await,
        Idempotency::New,
        "store: keys are forgotten after a day"
    );
}
