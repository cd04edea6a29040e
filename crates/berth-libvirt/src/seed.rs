//! The NoCloud seed: `meta-data` (instance id, host name), `user-data` (the login user and its
//! SSH keys) and `network-config` (v2), on an ISO 9660 image labelled `cidata` with Rock Ridge
//! and Joliet names, attached to the guest as a CD-ROM.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use berth_core::{Ipv4Config, Ipv6Config, ProviderError, VmSpec};
use hadris_iso::read::PathSeparator;
use hadris_iso::write::options::{CreationFeatures, IsoFormatOptions};
use hadris_iso::write::{File as IsoFile, InputFiles, IsoImageWriter};

/// A YAML scalar that reads back verbatim: JSON strings are valid YAML.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

fn short_name(spec: &VmSpec) -> &str {
    spec.name.split('.').next().unwrap_or(&spec.name)
}

pub fn meta_data(spec: &VmSpec) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        q(spec.instance_id.as_str()),
        q(short_name(spec))
    )
}

pub fn user_data(spec: &VmSpec, user: &str) -> String {
    let mut out = String::from("#cloud-config\n");
    out.push_str(&format!("hostname: {}\n", q(short_name(spec))));
    if spec.name.contains('.') {
        out.push_str(&format!("fqdn: {}\n", q(&spec.name)));
    }
    out.push_str("preserve_hostname: false\n");
    out.push_str("users:\n  - default\n");
    out.push_str(&format!("  - name: {}\n", q(user)));
    out.push_str("    shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: true\n");
    if !spec.ssh_keys.is_empty() {
        out.push_str("    ssh_authorized_keys:\n");
        for k in &spec.ssh_keys {
            out.push_str(&format!("      - {}\n", q(k.as_str())));
        }
    }
    out
}

pub fn network_config(spec: &VmSpec) -> String {
    let net = &spec.network;
    let mut out = String::from("version: 2\nethernets:\n  primary:\n    match:\n      name: \"e*\"\n");
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    match net.ipv4 {
        Ipv4Config::Dhcp => out.push_str("    dhcp4: true\n"),
        Ipv4Config::Static {
            address,
            prefix_len,
            gateway,
        } => {
            out.push_str("    dhcp4: false\n");
            addresses.push(format!("{address}/{prefix_len}"));
            if let Some(gw) = gateway {
                routes.push(("0.0.0.0/0".to_owned(), gw.to_string()));
            }
        }
    }
    match net.ipv6 {
        None => {}
        Some(Ipv6Config::Dhcp) => out.push_str("    dhcp6: true\n"),
        Some(Ipv6Config::Auto) => out.push_str("    accept-ra: true\n"),
        Some(Ipv6Config::Static {
            address,
            prefix_len,
            gateway,
        }) => {
            addresses.push(format!("{address}/{prefix_len}"));
            if let Some(gw) = gateway {
                routes.push(("::/0".to_owned(), gw.to_string()));
            }
        }
    }
    if !addresses.is_empty() {
        out.push_str("    addresses:\n");
        for a in &addresses {
            out.push_str(&format!("      - {}\n", q(a)));
        }
    }
    if !routes.is_empty() {
        out.push_str("    routes:\n");
        for (to, via) in &routes {
            out.push_str(&format!("      - to: {}\n        via: {}\n", q(to), q(via)));
        }
    }
    if !net.nameservers.is_empty() {
        out.push_str("    nameservers:\n      addresses:\n");
        for n in &net.nameservers {
            out.push_str(&format!("        - {}\n", q(&n.to_string())));
        }
    }
    out
}

/// The seed ISO's bytes.
pub fn seed_iso(spec: &VmSpec, user: &str) -> Result<Vec<u8>, ProviderError> {
    let file = |name: &str, text: String| IsoFile::File {
        name: Arc::new(name.to_owned()),
        contents: text.into_bytes(),
    };
    let files = InputFiles {
        path_separator: PathSeparator::ForwardSlash,
        files: vec![
            file("meta-data", meta_data(spec)),
            file("user-data", user_data(spec, user)),
            file("network-config", network_config(spec)),
        ],
    };
    let options = IsoFormatOptions {
        volume_name: "cidata".to_owned(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: Some("berth".to_owned()),
        sector_size: 2048,
        path_separator: PathSeparator::ForwardSlash,
        features: CreationFeatures::extensions(),
        strict_charset: false,
    };
    let mut buf = Cursor::new(Vec::new());
    IsoImageWriter::create(&mut buf, files, options)
        .map_err(|e| ProviderError::internal(format!("building the cloud-init seed ISO: {e}")))?;
    Ok(buf.into_inner())
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename), readable by the hypervisor.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use berth_core::{GuestKind, InstanceId, NetworkSpec, SshPublicKey};

    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

    fn spec() -> VmSpec {
        VmSpec {
            instance_id: InstanceId::parse("web1").unwrap(),
            name: "web1.example.com".into(),
            kind: GuestKind::Vm,
            cores: 1,
            memory_mib: 512,
            disk_gib: 2,
            template: None,
            ssh_keys: vec![SshPublicKey::parse(KEY).unwrap()],
            user: None,
            network: NetworkSpec::default(),
        }
    }

    #[test]
    fn documents_carry_id_name_user_and_keys() {
        let s = spec();
        assert_eq!(meta_data(&s), "instance-id: \"web1\"\nlocal-hostname: \"web1\"\n");
        let ud = user_data(&s, "deploy");
        assert!(
            ud.starts_with("#cloud-config\nhostname: \"web1\"\nfqdn: \"web1.example.com\"\n"),
            "{ud}"
        );
        assert!(ud.contains("  - name: \"deploy\"\n"), "{ud}");
        assert!(ud.contains(&format!("      - \"{KEY}\"\n")), "{ud}");
        assert_eq!(
            network_config(&s),
            "version: 2\nethernets:\n  primary:\n    match:\n      name: \"e*\"\n    dhcp4: true\n"
        );
    }

    #[test]
    fn static_addresses_routes_and_dns() {
        let mut s = spec();
        s.network.ipv4 = Ipv4Config::parse("10.0.0.5/24,gw=10.0.0.1").unwrap();
        s.network.ipv6 = Some(Ipv6Config::Auto);
        s.network.nameservers = vec!["1.1.1.1".parse().unwrap()];
        let nc = network_config(&s);
        assert!(
            nc.contains("    dhcp4: false\n    accept-ra: true\n    addresses:\n      - \"10.0.0.5/24\"\n"),
            "{nc}"
        );
        assert!(
            nc.contains("      - to: \"0.0.0.0/0\"\n        via: \"10.0.0.1\"\n"),
            "{nc}"
        );
        assert!(
            nc.contains("    nameservers:\n      addresses:\n        - \"1.1.1.1\"\n"),
            "{nc}"
        );
    }

    #[test]
    fn iso_has_the_cidata_label_and_the_three_files() {
        let iso = seed_iso(&spec(), "berth").unwrap();
        assert_eq!(iso.len() % 2048, 0);
        // Primary volume descriptor at sector 16: type 1, "CD001", volume id at offset 40.
        let pvd = &iso[16 * 2048..17 * 2048];
        assert_eq!((&pvd[0], &pvd[1..6]), (&1u8, &b"CD001"[..]));
        assert_eq!(std::str::from_utf8(&pvd[40..72]).unwrap().trim_end(), "cidata");
        let image = hadris_iso::read::IsoImage::open(Cursor::new(iso)).unwrap();
        let mut names = Vec::new();
        for e in image.root_dir().iter(&image).entries() {
            let e = e.unwrap();
            names.push(String::from_utf8_lossy(e.name()).to_string());
        }
        let joined = names.join(",").to_lowercase();
        for want in ["meta", "user", "network"] {
            assert!(joined.contains(want), "{joined}");
        }
    }
}
