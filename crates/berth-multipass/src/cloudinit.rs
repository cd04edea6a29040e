//! The cloud-init user-data Berth hands to `multipass launch`: host name, the login user and its
//! SSH keys. Every scalar is written as a JSON string, which YAML reads verbatim.

use berth_core::VmSpec;

/// Renders `#cloud-config` user-data for `spec`, giving `user` the spec's SSH keys. The default
/// image user (`ubuntu`) gets the keys directly; any other user is created with password-less
/// sudo, next to the default one (which Multipass itself needs for `multipass shell`).
pub fn user_data(spec: &VmSpec, user: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string always serializes");
    let short = spec.name.split('.').next().unwrap_or(&spec.name);
    let mut out = String::from("#cloud-config\n");
    out.push_str(&format!("hostname: {}\n", q(short)));
    if spec.name.contains('.') {
        out.push_str(&format!("fqdn: {}\n", q(&spec.name)));
    }
    out.push_str("preserve_hostname: false\n");
    let keys: Vec<String> = spec.ssh_keys.iter().map(|k| q(k.as_str())).collect();
    if user == crate::config::DEFAULT_USER {
        if !keys.is_empty() {
            out.push_str("ssh_authorized_keys:\n");
            for k in &keys {
                out.push_str(&format!("  - {k}\n"));
            }
        }
    } else {
        out.push_str("users:\n  - default\n");
        out.push_str(&format!("  - name: {}\n", q(user)));
        out.push_str("    shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: true\n");
        if !keys.is_empty() {
            out.push_str("    ssh_authorized_keys:\n");
            for k in &keys {
                out.push_str(&format!("      - {k}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use berth_core::{GuestKind, InstanceId, NetworkSpec, SshPublicKey};

    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

    fn spec(name: &str) -> VmSpec {
        VmSpec {
            instance_id: InstanceId::parse("web1").unwrap(),
            name: name.into(),
            kind: GuestKind::Vm,
            cores: 1,
            memory_mib: 1024,
            disk_gib: 5,
            template: None,
            ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
            user: None,
            network: NetworkSpec::default(),
        }
    }

    #[test]
    fn default_user_gets_the_keys_directly() {
        let text = user_data(&spec("web1"), "ubuntu");
        assert_eq!(
            text,
            format!(
                "#cloud-config\nhostname: \"web1\"\npreserve_hostname: false\nssh_authorized_keys:\n  - \"{KEY}\"\n"
            )
        );
    }

    #[test]
    fn other_users_are_created_and_fqdns_set() {
        let text = user_data(&spec("web1.example.com"), "deploy");
        assert!(
            text.contains("hostname: \"web1\"\nfqdn: \"web1.example.com\"\n"),
            "{text}"
        );
        assert!(text.contains("users:\n  - default\n  - name: \"deploy\"\n"), "{text}");
        assert!(
            text.contains(&format!("    ssh_authorized_keys:\n      - \"{KEY}\"\n")),
            "{text}"
        );
    }
}
