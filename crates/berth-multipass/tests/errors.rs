//! What goes wrong, said clearly: a missing or broken binary, a failing launch with
//! Multipass's own message, output that is not JSON, an unreachable daemon, machines Berth does
//! not own — and doctor's checks for each.

mod common;

use std::os::unix::fs::PermissionsExt;

use berth_conformance::Recorder;
use berth_core::{CheckStatus, ErrorCode, InstanceRef, ListFilter, PowerOp, Provider};
use berth_multipass::{MultipassConfig, MultipassProvider};
use common::{FakeMultipass, spec};

fn status_of(checks: &[berth_core::Check], name: &str) -> (CheckStatus, String) {
    let c = checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"));
    (c.status, c.detail.clone())
}

#[tokio::test]
async fn a_missing_binary_is_named_by_every_call_and_by_doctor() {
    let dir = tempfile::tempdir().unwrap();
    for binary in ["bin/multipass", "no-such-multipass-berth"] {
        let config = MultipassConfig {
            binary: binary.into(),
            ..MultipassConfig::default()
        };
        let p = MultipassProvider::new(config, dir.path()).unwrap();
        let err = p.describe(&InstanceRef::Id(spec("a1").instance_id)).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal, "{err}");
        assert!(err.to_string().contains("multipass"), "{err}");
        let checks = p.validate().await;
        let (status, detail) = status_of(&checks, "multipass binary");
        assert_eq!(status, CheckStatus::Fail);
        assert!(detail.contains(binary.rsplit('/').next().unwrap()), "{detail}");
        assert_eq!(status_of(&checks, "multipass daemon").0, CheckStatus::Fail);
    }
    let err = MultipassProvider::new(
        MultipassConfig {
            binary: "bin/multipass".into(),
            ..MultipassConfig::default()
        },
        dir.path(),
    )
    .unwrap()
    .create(&spec("a2"), &Recorder::default())
    .await
    .unwrap_err();
    assert!(err.to_string().contains("bin/multipass"), "{err}");
}

#[tokio::test]
async fn doctor_flags_a_binary_that_is_not_executable() {
    let fake = FakeMultipass::new(&[]);
    std::fs::set_permissions(fake.binary(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let checks = fake.provider().validate().await;
    let (status, detail) = status_of(&checks, "multipass binary");
    assert_eq!(status, CheckStatus::Fail);
    assert!(detail.contains("not executable"), "{detail}");
}

#[tokio::test]
async fn an_unreachable_daemon_is_unavailable_and_doctor_says_so() {
    let fake = FakeMultipass::new(&["--no-daemon"]);
    let p = fake.provider();
    let checks = p.validate().await;
    assert_eq!(status_of(&checks, "multipass binary").0, CheckStatus::Ok);
    let (status, detail) = status_of(&checks, "multipass daemon");
    assert_eq!(status, CheckStatus::Fail);
    assert!(detail.contains("multipassd did not"), "{detail}");
    let err = p.list(ListFilter::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .contains("multipass list --format json: list failed: cannot connect to the multipass socket"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_launch_reports_multipass_text_and_leaves_nothing() {
    let fake = FakeMultipass::new(&["--fail-launch", "Remote \"\" is unknown or unreachable."]);
    let p = fake.provider();
    let err = p.create(&spec("fail1"), &Recorder::default()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err}");
    let text = err.to_string();
    assert!(text.contains("multipass launch --name berth-fail1"), "{text}");
    assert!(
        text.contains("launch failed: Remote \"\" is unknown or unreachable."),
        "{text}"
    );
    assert!(
        p.list(ListFilter {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn output_that_is_not_json_names_the_command() {
    let fake = FakeMultipass::new(&["--garbage", "info"]);
    let err = fake
        .provider()
        .describe(&InstanceRef::Backend("berth-x1".into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    let text = err.to_string();
    assert!(
        text.contains("multipass info --format json berth-x1: output is not JSON"),
        "{text}"
    );
    assert!(text.contains("Starting info"), "{text}");
}

#[tokio::test]
async fn machines_berth_does_not_own_are_seen_but_not_touched() {
    let fake = FakeMultipass::new(&["--net-delay", "0"]);
    let out = fake.run(
        &["launch", "--name", "primary", "--cloud-init", "-", "24.04"],
        "#cloud-config\n",
    );
    assert!(out.status.success(), "{out:?}");
    let p = fake.provider();
    assert!(p.list(ListFilter::default()).await.unwrap().is_empty());
    let all = p
        .list(ListFilter {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].name.as_str(), all[0].instance_id.as_ref()), ("primary", None));
    let primary = InstanceRef::Backend("primary".into());
    assert!(p.describe(&primary).await.unwrap().ipv4.is_some());
    for result in [
        p.power(&primary, PowerOp::Stop).await.map(|_| ()),
        p.delete(&primary).await.map(|_| ()),
    ] {
        assert_eq!(result.unwrap_err().code(), ErrorCode::Conflict);
    }
    // A backend id that is not a Multipass name never reaches the command line.
    let err = p.describe(&InstanceRef::Backend("--all".into())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert!(!fake.calls().iter().any(|c| c.contains("--all")), "{:?}", fake.calls());
}

#[tokio::test]
async fn specs_multipass_cannot_honour_are_refused_by_field() {
    let fake = FakeMultipass::new(&[]);
    let p = fake.provider();
    let mut small = spec("small1");
    small.memory_mib = 64;
    let mut fixed = spec("fixed1");
    fixed.network.ipv4 = berth_core::Ipv4Config::parse("10.0.0.5/24").unwrap();
    let mut ct = spec("ct1");
    ct.kind = berth_core::GuestKind::Container;
    let mut bad_image = spec("img1");
    bad_image.template = Some("--help".into());
    for (s, field) in [
        (small, "memory_mib"),
        (fixed, "ip"),
        (ct, "kind"),
        (bad_image, "template"),
    ] {
        match p.create(&s, &Recorder::default()).await {
            Err(berth_core::ProviderError::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
    assert!(
        fake.calls().iter().all(|c| !c.starts_with("launch")),
        "{:?}",
        fake.calls()
    );
}

#[tokio::test]
async fn templates_come_from_find() {
    let fake = FakeMultipass::new(&[]);
    let t = fake.provider().list_templates().await.unwrap();
    let ids: Vec<&str> = t.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["22.04", "24.04"]);
    assert_eq!(
        fake.provider().capacity().await.unwrap_err().code(),
        ErrorCode::Unsupported
    );
}

#[tokio::test]
async fn a_failing_daemon_is_unavailable_even_when_its_message_says_does_not_exist() {
    let fake = FakeMultipass::new(&[]);
    // A stand-in whose every command fails like an unreachable daemon (exit 3), with wording
    // that mentions "does not exist".
    std::fs::write(
        fake.binary(),
        "#!/bin/sh\necho \"$1 failed: multipassd socket /run/multipass_socket does not exist\" >&2\nexit 3\n",
    )
    .unwrap();
    let p = fake.provider();
    let id = InstanceRef::Id(spec("d1").instance_id);
    let err = p
        .delete(&id)
        .await
        .expect_err("a daemon failure is not \"already absent\"");
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(err.to_string().contains("multipass delete --purge"), "{err}");
    let err = p.describe(&id).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
}
