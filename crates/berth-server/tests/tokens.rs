//! API tokens over their life through the real API: made with a lifetime, listed without
//! secrets, revoked and rotated (the old secret stops at once), capped per account, made and
//! revoked by an operator for an account, and the last operator token kept.

mod common;

use berth_api::wire::{CreateToken, SetQuota};
use common::*;

fn named(name: &str, ttl_seconds: Option<u64>) -> CreateToken {
    CreateToken {
        name: name.into(),
        ttl_seconds,
    }
}

#[tokio::test]
async fn tokens_are_made_listed_revoked_and_rotated() {
    let ctx = TestContext::sqlite_with(|c| c.quotas.tokens = 3).await;
    let (cid, customer) = ctx.customer("bob").await;

    // A second token with a lifetime; it works like the first.
    let ci = customer.create_token(None, &named("ci", Some(3600))).await.unwrap();
    assert_eq!(ci.view.name, "ci");
    let expires = ci.view.expires_at.unwrap() - ci.view.created_at;
    assert_eq!(expires, 3_600_000);
    let ci_client = ctx.client(&ci.token);
    ci_client.keys().await.unwrap();

    // Listed by id and name; no secret anywhere in the list.
    let list = customer.tokens(None).await.unwrap();
    assert_eq!(list.len(), 2);
    let listed = serde_json::to_string(&list).unwrap();
    assert!(!listed.contains(&ci.token) && !listed.contains(customer.bearer_token().unwrap()));

    // Rotation: a new secret, same name and lifetime; the old one is refused at once.
    let rotated = customer.rotate_token(&ci.view.id).await.unwrap();
    assert_eq!(rotated.view.name, "ci");
    assert_eq!(rotated.view.expires_at.unwrap() - rotated.view.created_at, 3_600_000);
    let e = ci_client.keys().await.unwrap_err();
    assert_eq!(e.code(), Some("unauthenticated"), "{e}");
    ctx.client(&rotated.token).keys().await.unwrap();

    // Revocation by id; a second time is harmless.
    let gone = customer.revoke_token(None, &rotated.view.id).await.unwrap();
    assert!(gone.revoked_at.is_some());
    assert!(ctx.client(&rotated.token).keys().await.is_err());
    customer.revoke_token(None, &rotated.view.id).await.unwrap();
    let e = customer.rotate_token(&rotated.view.id).await.unwrap_err();
    assert_eq!(e.code(), Some("token_revoked"), "{e}");

    // The cap counts live tokens only: two more fit under three, a third does not.
    customer.create_token(None, &named("a", None)).await.unwrap();
    customer.create_token(None, &named("b", None)).await.unwrap();
    let e = customer.create_token(None, &named("c", None)).await.unwrap_err();
    assert_eq!(e.code(), Some("quota_exceeded"), "{e}");
    ctx.operator
        .set_quota(
            &cid,
            &SetQuota {
                tokens: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    customer.create_token(None, &named("c", None)).await.unwrap();

    // Bad input is named.
    for (req, field) in [(named("x", Some(5)), "ttl_seconds"), (named("tab\there", None), "name")] {
        let e = ctx.operator.create_token(None, &req).await.unwrap_err();
        assert_eq!((e.code(), e.field()), (Some("invalid_input"), Some(field)), "{e}");
    }
}

#[tokio::test]
async fn operators_manage_an_accounts_tokens_and_keep_their_last_one() {
    let ctx = TestContext::sqlite().await;
    let (cid, customer) = ctx.customer("bob").await;
    // The customer lost their token: an operator makes another and revokes the lost one.
    let fresh = ctx
        .operator
        .create_token(Some(&cid), &named("replacement", None))
        .await
        .unwrap();
    let lost = ctx.operator.tokens(Some(&cid)).await.unwrap();
    let initial = lost.iter().find(|t| t.name == "initial").unwrap();
    ctx.operator.revoke_token(Some(&cid), &initial.id).await.unwrap();
    assert!(customer.keys().await.is_err());
    ctx.client(&fresh.token).keys().await.unwrap();
    let e = ctx.operator.tokens(Some("nobody")).await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"));

    // The audit log says who did what to which token, never the secret.
    let audit = ctx.operator.audit(0, 1000).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"token.created") && actions.contains(&"token.revoked"),
        "{actions:?}"
    );
    assert!(!serde_json::to_string(&audit).unwrap().contains(&fresh.token));

    // The operator's own last token cannot be revoked; with a second one it can.
    let mine = ctx.operator.tokens(None).await.unwrap();
    assert_eq!(mine.len(), 1);
    let e = ctx.operator.revoke_token(None, &mine[0].id).await.unwrap_err();
    assert_eq!(e.code(), Some("last_operator_token"), "{e}");
    let second = ctx.operator.create_token(None, &named("second", None)).await.unwrap();
    ctx.client(&second.token).revoke_token(None, &mine[0].id).await.unwrap();
    assert!(
        ctx.operator.tokens(None).await.is_err(),
        "the revoked token no longer works"
    );
}
