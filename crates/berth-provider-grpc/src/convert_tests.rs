use super::*;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

fn spec() -> VmSpec {
    VmSpec {
        instance_id: InstanceId::parse("web1").unwrap(),
        name: "web1.example.com".into(),
        kind: GuestKind::Container,
        cores: 2,
        memory_mib: 2048,
        disk_gib: 20,
        template: Some("debian-12".into()),
        ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
        user: Some("deploy".into()),
        network: NetworkSpec {
            ipv4: Ipv4Config::Static {
                address: "192.0.2.10".parse().unwrap(),
                prefix_len: 24,
                gateway: Some("192.0.2.1".parse().unwrap()),
            },
            ipv6: Some(Ipv6Config::Static {
                address: "2001:db8::10".parse().unwrap(),
                prefix_len: 64,
                gateway: None,
            }),
            nameservers: vec!["192.0.2.53".parse().unwrap(), "2001:db8::53".parse().unwrap()],
        },
    }
}

#[test]
fn a_spec_and_an_instance_cross_the_wire_unchanged() {
    let s = spec();
    assert_eq!(spec_from(spec_to(&s)).unwrap(), s);
    for ipv6 in [None, Some(Ipv6Config::Dhcp), Some(Ipv6Config::Auto)] {
        let mut s = spec();
        s.network.ipv6 = ipv6;
        s.network.ipv4 = Ipv4Config::Dhcp;
        assert_eq!(spec_from(spec_to(&s)).unwrap(), s);
    }
    let i = Instance {
        instance_id: Some(InstanceId::parse("web1").unwrap()),
        backend_id: "101".into(),
        kind: GuestKind::Vm,
        node: Some("pve1".into()),
        name: "web1".into(),
        state: PowerState::Running,
        ipv4: Some("192.0.2.10".parse().unwrap()),
        ipv6: Some("2001:db8::10".parse().unwrap()),
        cores: Some(2),
        memory_mib: Some(2048),
        disk_gib: Some(20),
        ssh_port: Some(2222),
        login_user: Some("deploy".into()),
        root_password: Some(Secret::new("hunter2-root")),
        pool: None,
    };
    let wire = instance_to(&i);
    assert!(!format!("{wire:?}").contains("hunter2"), "{wire:?}");
    assert_eq!(instance_from(wire).unwrap(), i);
}

#[test]
fn a_bad_spec_off_the_wire_names_its_field() {
    type Mutation = Box<dyn Fn(&mut pb::VmSpec)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|s| s.instance_id = "Web 1".into()), "instance_id"),
        (Box::new(|s| s.cores = 0), "cores"),
        (Box::new(|s| s.name = "a_b".into()), "name"),
        (Box::new(|s| s.ssh_keys = vec!["ssh-ed25519 nope".into()]), "ssh_key"),
        (Box::new(|s| s.kind = 7), "kind"),
        (
            Box::new(|s| {
                s.network.as_mut().unwrap().ipv4 = Some(pb::Ipv4Config {
                    mode: Some(pb::ipv4_config::Mode::Static(pb::StaticAddress {
                        address: "10.0.0.300".into(),
                        prefix_len: 24,
                        gateway: None,
                    })),
                })
            }),
            "ip",
        ),
        (
            Box::new(|s| {
                s.network.as_mut().unwrap().ipv6 = Some(pb::Ipv6Config {
                    mode: Some(pb::ipv6_config::Mode::Static(pb::StaticAddress {
                        address: "2001:db8::1".into(),
                        prefix_len: 129,
                        gateway: None,
                    })),
                })
            }),
            "ip6",
        ),
        (
            Box::new(|s| s.network.as_mut().unwrap().nameservers = vec!["dns".into()]),
            "nameservers",
        ),
    ];
    for (mutate, field) in cases {
        let mut wire = spec_to(&spec());
        mutate(&mut wire);
        match spec_from(wire).map_err(Bad::refused) {
            Err(ProviderError::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
}

#[test]
fn what_a_newer_server_adds_is_tolerated_where_it_is_only_information() {
    assert_eq!(state_from(42), PowerState::Unknown);
    assert!(
        event_from(pb::StageEvent {
            stage: 99,
            phase: 1,
            detail: None
        })
        .is_none()
    );
    let c = check_from(pb::Check {
        name: "x".into(),
        status: 9,
        detail: String::new(),
    });
    assert_eq!(c.status, CheckStatus::Fail, "an unknown check status is not a pass");
    let bad = instance_from(pb::Instance {
        ipv4: Some("not-an-ip".into()),
        ..Default::default()
    })
    .unwrap_err()
    .remote_fault();
    assert!(bad.to_string().contains("remote provider answered a bad ipv4"), "{bad}");
}
