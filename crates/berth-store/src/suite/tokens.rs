//! API tokens over their life, as the store keeps them: an account with its first token and
//! its audit entry at once; tokens listed, expiring, capped, revoked and rotated.

use super::{T0, audit};
use crate::*;

pub async fn tokens(s: &dyn Store, tag: &str) {
    let (id, first) = s
        .create_account(Role::Customer, &format!("{tag}-holder"), audit("customer.created"), T0)
        .await
        .unwrap();
    assert_eq!(s.customer(&id).await.unwrap().name, format!("{tag}-holder"));
    assert_eq!(
        s.token_principal(&first.token.secret, T0).await.unwrap(),
        Some((Role::Customer, id.clone())),
        "store: the first token speaks for the new account"
    );
    let entry = s.audit_page(0, 100_000).await.unwrap().into_iter().last().unwrap();
    assert_eq!(
        (entry.action.as_str(), entry.subject.clone()),
        ("customer.created", format!("customer:{id}"))
    );
    assert!(
        s.create_account(Role::Customer, "\u{1b}[2J", audit("customer.created"), T0)
            .await
            .is_err(),
        "store: a refused name makes no account"
    );

    // A token with a lifetime; the account's cap on live tokens.
    let short = s
        .issue_token(
            Role::Customer,
            &id,
            "ci",
            Some(T0 + 1_000),
            3,
            audit("token.created"),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        (short.info.name.as_str(), short.info.expires_at),
        ("ci", Some(T0 + 1_000))
    );
    assert!(
        s.token_principal(&short.token.secret, T0 + 999)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.token_principal(&short.token.secret, T0 + 1_000)
            .await
            .unwrap()
            .is_none(),
        "store: an expired token speaks for no one"
    );
    let third = s
        .issue_token(Role::Customer, &id, "laptop", None, 3, audit("token.created"), T0)
        .await
        .unwrap();
    assert!(matches!(
        s.issue_token(Role::Customer, &id, "more", None, 3, audit("token.created"), T0)
            .await,
        Err(StoreError::Quota {
            what: "tokens",
            limit: 3
        })
    ));
    let listed = s.tokens(Role::Customer, &id).await.unwrap();
    let mut names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["ci", "initial", "laptop"]);
    assert!(
        listed
            .iter()
            .all(|t| t.id.len() == 16 && !first.token.secret.contains(&t.id))
    );

    // Rotation: a new secret under the same name; the old one stops at once.
    let rotated = s
        .rotate_token(Role::Customer, &id, &third.info.id, audit("token.rotated"), T0 + 5)
        .await
        .unwrap();
    assert_eq!(rotated.info.name, "laptop");
    assert!(s.token_principal(&third.token.secret, T0 + 6).await.unwrap().is_none());
    assert!(
        s.token_principal(&rotated.token.secret, T0 + 6)
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        s.rotate_token(Role::Customer, &id, &third.info.id, audit("token.rotated"), T0 + 7)
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Revocation: by id, of one's own tokens only; twice is harmless.
    let gone = s
        .revoke_token(Role::Customer, &id, &first.info.id, audit("token.revoked"), T0 + 8)
        .await
        .unwrap();
    assert_eq!(gone.revoked_at, Some(T0 + 8));
    assert!(s.token_principal(&first.token.secret, T0 + 9).await.unwrap().is_none());
    s.revoke_token(Role::Customer, &id, &first.info.id, audit("token.revoked"), T0 + 9)
        .await
        .unwrap();
    assert!(matches!(
        s.revoke_token(Role::Provider, &id, &rotated.info.id, audit("token.revoked"), T0)
            .await,
        Err(StoreError::NotFound(_))
    ));

    // The last operator token stays.
    let op = |name: &'static str| s.issue_token(Role::Operator, "", name, None, 100, audit("token.created"), T0);
    let (a, b) = (op("a").await.unwrap(), op("b").await.unwrap());
    for t in s.tokens(Role::Operator, "").await.unwrap() {
        if t.revoked_at.is_none() && t.id != b.info.id {
            s.revoke_token(Role::Operator, "", &t.id, audit("token.revoked"), T0)
                .await
                .unwrap();
        }
    }
    assert!(s.token_principal(&a.token.secret, T0).await.unwrap().is_none());
    assert!(matches!(
        s.revoke_token(Role::Operator, "", &b.info.id, audit("token.revoked"), T0)
            .await,
        Err(StoreError::Conflict(_))
    ));
}
