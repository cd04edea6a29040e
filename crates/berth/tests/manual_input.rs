//! The manual backend answered through the control plane (what the dashboard's form sends): a
//! customer's order waits in `waiting_for_operator` on a real `berth agent`; the provider gives
//! the machine's details with `POST /operations/{id}/input`, the agent applies them to its
//! manual backend and the order ends running with those details. The root password is sealed to
//! the customer's age key on arrival: it is nowhere in clear (database, agent state, logs), and
//! the customer opens it. Bad input names its field and keeps nothing; fail ends the order with
//! the operator's reason.

mod common;
mod stack;

use std::time::Duration;

use berth_api::client::ClientError;
use berth_api::wire::*;
use berth_pve_emulator::Timings;
use stack::{AGE_ID, Db, Stack};

const LONG: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct-horse-battery-staple-42";

fn refused(r: Result<OperatorInputView, ClientError>) -> Problem {
    match r {
        Err(ClientError::Problem(p)) => *p,
        other => panic!("expected a problem, got {other:?}"),
    }
}

fn complete(ipv4: Option<&str>, ipv6: Option<&str>) -> OperatorInput {
    OperatorInput::Complete {
        ipv4: ipv4.map(str::to_owned),
        ipv6: ipv6.map(str::to_owned),
        ssh_port: Some(2222),
        root_password: Some(PASSWORD.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_answers_a_manual_order_through_the_api() {
    let mut s = Stack::manual(Db::Sqlite, Timings::fast()).await.unwrap();
    let offering = s.offering(&[]).await;
    let a = s.order(&offering, "by-hand").await;
    let op = a.operation_id.clone().unwrap();
    s.in_stage(&op, "waiting_for_operator").await;

    // Only staff answer; bad input names its field and keeps nothing.
    let p = refused(s.customer.submit_input(&op, &complete(Some("203.0.113.7"), None)).await);
    assert_eq!(p.status, 403, "{p:?}");
    for (input, field) in [
        (complete(None, None), "ipv4"),
        (complete(Some("300.1.2.3"), None), "ipv4"),
        (complete(None, Some("2001:db8::zz")), "ipv6"),
        (OperatorInput::Fail { reason: "  ".into() }, "reason"),
    ] {
        let p = refused(s.provider.submit_input(&op, &input).await);
        assert_eq!((p.status, p.field.as_deref()), (422, Some(field)), "{p:?}");
    }
    assert!(matches!(
        s.provider.operation_input(&op).await,
        Err(ClientError::Problem(p)) if p.status == 404
    ));

    // The details: kept (without the password) until the agent takes them; one answer at a time.
    let sent = s
        .provider
        .submit_input(&op, &complete(Some("203.0.113.7"), Some("2001:db8::7")))
        .await
        .unwrap();
    assert!(sent.root_password_sealed);
    assert!(!format!("{sent:?}").contains(PASSWORD));
    let again = refused(s.operator.submit_input(&op, &complete(Some("203.0.113.8"), None)).await);
    // Either still waiting for the agent, or applied already: both refuse a second answer.
    assert!(
        (again.status, again.code.as_str()) == (409, "input_exists") || again.code == "not_waiting",
        "{again:?}"
    );

    let done = s.finished(&op, LONG).await;
    assert_eq!(done.status, "succeeded", "{done:#?}\n{}", s.agent_log());
    let i = s.customer.instance(&a.instance_id).await.unwrap();
    assert_eq!(
        (
            i.status.as_str(),
            i.ip_address.as_deref(),
            i.ipv6_address.as_deref(),
            i.ssh_port
        ),
        ("running", Some("203.0.113.7"), Some("2001:db8::7"), Some(2222))
    );
    let applied = s.provider.operation_input(&op).await.unwrap();
    assert_eq!((applied.status.as_str(), applied.error), ("applied", None));
    let sealed = i.credentials.expect("the operator's password, sealed");
    let plain = berth_api::credentials::open(AGE_ID, &sealed).unwrap();
    assert_eq!((plain.user.as_str(), plain.password.as_str()), ("root", PASSWORD));
    // Nowhere in clear: not in the database, the agent's state or its log.
    let mut files = vec![s.dir.path().join("berth.db")];
    let mut dirs = vec![s.dir.path().join("agent")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { dirs.push(p) } else { files.push(p) }
        }
    }
    for f in files.iter().chain(std::iter::once(&s.dir.path().join("agent.log"))) {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
            "the password is in clear in {}",
            f.display()
        );
    }
    // Finished: nothing more to answer.
    let late = refused(s.provider.submit_input(&op, &complete(Some("203.0.113.9"), None)).await);
    assert_eq!((late.status, late.code.as_str()), (409, "not_waiting"), "{late:?}");

    // A machine that cannot be built: the order fails with the operator's reason.
    let b = s.order(&offering, "cannot").await;
    let op2 = b.operation_id.clone().unwrap();
    s.in_stage(&op2, "waiting_for_operator").await;
    s.provider
        .submit_input(
            &op2,
            &OperatorInput::Fail {
                reason: "no capacity in rack 4".into(),
            },
        )
        .await
        .unwrap();
    let failed = s.finished(&op2, LONG).await;
    assert_eq!(failed.status, "failed", "{failed:#?}");
    let e = failed.error.unwrap();
    assert!(e.message.contains("no capacity in rack 4"), "{e:?}");

    // An order naming no requester key: a password could be read by nobody, so it is refused
    // by name; without one the machine is delivered, with no credentials.
    let c = s
        .customer
        .create_order(
            &CreateOrder {
                offering_id: offering.clone(),
                name: "keyless".into(),
                ssh_public_key: common::KEY.into(),
                requester_public_key: None,
                skip_post_provision: false,
                provision: true,
            },
            None,
        )
        .await
        .unwrap();
    let op3 = c.operation_id.clone().unwrap();
    s.in_stage(&op3, "waiting_for_operator").await;
    let p = refused(
        s.provider
            .submit_input(&op3, &complete(Some("203.0.113.10"), None))
            .await,
    );
    assert_eq!((p.status, p.field.as_deref()), (422, Some("root_password")), "{p:?}");
    assert!(p.detail.contains("no requester key"), "{p:?}");
    let no_password = OperatorInput::Complete {
        ipv4: Some("203.0.113.10".into()),
        ipv6: None,
        ssh_port: None,
        root_password: None,
    };
    s.provider.submit_input(&op3, &no_password).await.unwrap();
    let done = s.finished(&op3, LONG).await;
    assert_eq!(done.status, "succeeded", "{done:#?}");
    let i = s.customer.instance(&c.instance_id).await.unwrap();
    assert_eq!((i.status.as_str(), i.credentials), ("running", None));
    s.term_agent().await;
}
