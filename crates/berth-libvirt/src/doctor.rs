//! `berth doctor` for libvirt: the connection, the domain type and why, templates, the
//! instances directory, `qemu-img`, and the network guests join.

use std::path::Path;
use std::time::Duration;

use berth_core::{Check, CheckStatus, ProviderError};
use berth_exec::ExecSpec;

use crate::accel::is_local_uri;
use crate::config::NetworkAttachment;
use crate::conn::{map_err, redact_uri};
use crate::provider::LibvirtProvider;

fn version(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1000) % 1000, v % 1000)
}

/// Total and free bytes of the file system holding `dir` (or its nearest existing parent).
pub fn disk_space(dir: &Path) -> Result<(u64, u64), ProviderError> {
    let mut at = dir;
    while !at.exists() {
        at = at.parent().unwrap_or(Path::new("/"));
    }
    let s = rustix::fs::statvfs(at)
        .map_err(|e| ProviderError::internal(format!("cannot read free space of {}: {e}", at.display())))?;
    Ok((s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize))
}

pub async fn checks(p: &LibvirtProvider) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = p.config();
    let conn =
        p.lv.call("connecting", |c| {
            let lib = c.lib_version().map_err(map_err)?;
            let hyp = c.hyp_version().map_err(map_err)?;
            let driver = c.driver_type().map_err(map_err)?;
            let host = c.hostname().map_err(map_err)?;
            Ok((lib, hyp, driver, host))
        })
        .await;
    match conn {
        Ok((lib, hyp, driver, host)) => out.push(Check::ok(
            "libvirt connection",
            format!(
                "{} on {host}: libvirt {}, {driver} {}",
                redact_uri(p.lv.uri()),
                version(lib),
                version(hyp)
            ),
        )),
        Err(e) => {
            out.push(Check::fail("libvirt connection", e.to_string()));
            return out;
        }
    }
    out.push(match p.accel().await {
        Ok(a) if a.domain_type == "kvm" => Check::ok("domain type", format!("kvm: {}", a.reason)),
        Ok(a) => Check::warn("domain type", format!("qemu (TCG, slow): {}", a.reason)),
        Err(e) => Check::fail("domain type", e.to_string()),
    });
    out.push(match p.templates().list().await {
        Err(e) => Check::fail("templates", e.to_string()),
        Ok(list) if list.is_empty() => Check::fail(
            "templates",
            "no template images found (put .qcow2/.img/.raw files in images_dir, or volumes in template_pool)",
        ),
        Ok(list) => {
            let names: Vec<String> = list
                .iter()
                .map(|t| format!("{} ({}, {} GiB)", t.id, t.format, t.virtual_size.div_ceil(1 << 30)))
                .collect();
            match &cfg.template {
                Some(d) if !list.iter().any(|t| &t.id == d) => Check::fail(
                    "templates",
                    format!("the default template {d:?} is not among: {}", names.join(", ")),
                ),
                _ => Check::ok("templates", names.join(", ")),
            }
        }
    });
    out.push(instances_dir_check(&cfg.instances_dir));
    out.push(
        match berth_exec::run(ExecSpec::new(&cfg.qemu_img, Duration::from_secs(10)).arg("--version")).await {
            Ok(o) if o.status.success() => Check::ok(
                "qemu-img",
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            ),
            Ok(o) => Check::fail(
                "qemu-img",
                format!("{} exited with {}", cfg.qemu_img.display(), o.status),
            ),
            Err(e) => Check::fail("qemu-img", format!("{e} (install qemu-utils)")),
        },
    );
    out.push(network_check(p).await);
    out
}

fn instances_dir_check(dir: &Path) -> Check {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Check::fail("instances_dir", format!("cannot create {}: {e}", dir.display()));
    }
    let probe = dir.join(".berth-write-check");
    if let Err(e) = std::fs::write(&probe, b"") {
        return Check::fail("instances_dir", format!("cannot write in {}: {e}", dir.display()));
    }
    let _ = std::fs::remove_file(&probe);
    match disk_space(dir) {
        Ok((_, free)) => Check::ok("instances_dir", format!("{} ({} GiB free)", dir.display(), free >> 30)),
        Err(e) => Check::warn("instances_dir", e.to_string()),
    }
}

async fn network_check(p: &LibvirtProvider) -> Check {
    match p.config().attachment() {
        NetworkAttachment::User => Check::ok(
            "network",
            "QEMU user networking: guests reach out, but no other host can reach them",
        ),
        NetworkAttachment::Bridge(b) => {
            if !is_local_uri(p.lv.uri()) {
                return Check::ok("network", format!("bridge {b} (on a remote host: not checked)"));
            }
            if Path::new("/sys/class/net").join(&b).join("bridge").is_dir() {
                Check::ok("network", format!("bridge {b} exists"))
            } else {
                Check::fail("network", format!("there is no bridge {b} on this host"))
            }
        }
        NetworkAttachment::Network(n) => {
            let name = n.clone();
            let res =
                p.lv.call("looking up the network", move |c| {
                    let net = c.lookup_network_by_name(&name).map_err(map_err)?;
                    net.is_active().map_err(map_err)
                })
                .await;
            match res {
                Ok(true) => Check::ok("network", format!("libvirt network {n} is active")),
                Ok(false) => Check::fail(
                    "network",
                    format!("libvirt network {n} is defined but not active (virsh net-start {n})"),
                ),
                Err(e) => Check {
                    name: "network".into(),
                    status: CheckStatus::Fail,
                    detail: format!("libvirt network {n}: {e}"),
                },
            }
        }
    }
}
