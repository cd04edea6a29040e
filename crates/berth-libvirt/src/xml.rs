//! Domain XML: built from a spec (virtio disk and NIC, the seed CD-ROM, a serial console with a
//! log file, the guest-agent channel) with Berth's ownership marker in `<metadata>`, and read
//! back into the facts Berth reports.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use berth_core::{InstanceId, PoolMark};

use crate::config::NetworkAttachment;

/// The namespace of Berth's `<metadata>` element.
pub const NS: &str = "https://berth.dev/xmlns/libvirt-instance/1";

/// What Berth's `<metadata>` marker says of a domain.
pub struct Marker<'a> {
    /// The owner: an instance, or a pool machine (`pool-…`).
    pub id: &'a InstanceId,
    pub template: &'a str,
    /// A pool machine's pool.
    pub pool: Option<&'a PoolMark>,
    /// A machine taken from a pool keeps its files in the pool machine's directory: that
    /// machine's id, which the directory's owner file names.
    pub files: Option<&'a InstanceId>,
}

impl Marker<'_> {
    /// The marker's child elements, each name prefixed with `prefix`.
    fn children(&self, prefix: &str) -> String {
        let mut out = String::new();
        let mut el = |tag: &str, text: &str| {
            let _ = write!(out, "<{prefix}{tag}>{}</{prefix}{tag}>", escape(text));
        };
        el("id", self.id.as_str());
        el("template", self.template);
        if let Some(m) = self.pool {
            el("pool", &m.token());
        }
        if let Some(f) = self.files {
            el("files", f.as_str());
        }
        out
    }

    /// The marker for `virDomainSetMetadata` (key `berth`, namespace [`NS`]): libvirt puts the
    /// element and its unprefixed children into the namespace.
    pub fn element(&self) -> String {
        format!("<instance>{}</instance>", self.children(""))
    }
}

/// Everything a new domain's XML is made from.
pub struct DomainPlan<'a> {
    pub name: &'a str,
    /// Kept when a domain is redefined (a pool machine handed over).
    pub uuid: Option<&'a str>,
    pub marker: Marker<'a>,
    /// `kvm` or `qemu`.
    pub domain_type: &'a str,
    pub machine: &'a str,
    pub cores: u32,
    pub max_cores: u32,
    pub memory_mib: u64,
    pub max_memory_mib: u64,
    pub disk: &'a Path,
    pub seed: &'a Path,
    pub console_log: &'a Path,
    pub network: &'a NetworkAttachment,
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn path(p: &Path) -> String {
    escape(&p.to_string_lossy())
}

pub fn domain_xml(p: &DomainPlan) -> String {
    let mut x = String::new();
    let w = &mut x;
    let _ = writeln!(w, "<domain type='{}'>", escape(p.domain_type));
    let _ = writeln!(w, "  <name>{}</name>", escape(p.name));
    if let Some(u) = p.uuid {
        let _ = writeln!(w, "  <uuid>{}</uuid>", escape(u));
    }
    let _ = writeln!(w, "  <metadata>");
    let _ = writeln!(
        w,
        "    <berth:instance xmlns:berth='{NS}'>{}</berth:instance>",
        p.marker.children("berth:")
    );
    let _ = writeln!(w, "  </metadata>");
    let _ = writeln!(
        w,
        "  <memory unit='MiB'>{}</memory>",
        p.max_memory_mib.max(p.memory_mib)
    );
    let _ = writeln!(w, "  <currentMemory unit='MiB'>{}</currentMemory>", p.memory_mib);
    let _ = writeln!(
        w,
        "  <vcpu placement='static' current='{}'>{}</vcpu>",
        p.cores,
        p.max_cores.max(p.cores)
    );
    let _ = writeln!(
        w,
        "  <os>\n    <type arch='x86_64' machine='{}'>hvm</type>\n    <boot dev='hd'/>\n  </os>",
        escape(p.machine)
    );
    let _ = writeln!(w, "  <features>\n    <acpi/>\n    <apic/>\n  </features>");
    if p.domain_type == "kvm" {
        let _ = writeln!(w, "  <cpu mode='host-passthrough' check='none'/>");
    }
    let _ = writeln!(w, "  <clock offset='utc'/>");
    let _ = writeln!(
        w,
        "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>"
    );
    let _ = writeln!(w, "  <devices>");
    let _ = writeln!(
        w,
        "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2' discard='unmap'/>\n      <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>",
        path(p.disk)
    );
    let cd_bus = if p.machine.starts_with("pc") && !p.machine.contains("q35") {
        "ide"
    } else {
        "sata"
    };
    let cd_dev = if cd_bus == "ide" { "hdc" } else { "sda" };
    let _ = writeln!(
        w,
        "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <source file='{}'/>\n      <target dev='{cd_dev}' bus='{cd_bus}'/>\n      <readonly/>\n    </disk>",
        path(p.seed)
    );
    let source = match p.network {
        NetworkAttachment::Network(n) => format!("type='network'>\n      <source network='{}'/>", escape(n)),
        NetworkAttachment::Bridge(b) => format!("type='bridge'>\n      <source bridge='{}'/>", escape(b)),
        NetworkAttachment::User => "type='user'>".to_owned(),
    };
    let _ = writeln!(
        w,
        "    <interface {source}\n      <model type='virtio'/>\n    </interface>"
    );
    let _ = writeln!(
        w,
        "    <serial type='pty'>\n      <log file='{}' append='off'/>\n      <target port='0'/>\n    </serial>",
        path(p.console_log)
    );
    let _ = writeln!(
        w,
        "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>"
    );
    let _ = writeln!(
        w,
        "    <channel type='unix'>\n      <target type='virtio' name='org.qemu.guest_agent.0'/>\n    </channel>"
    );
    let _ = writeln!(w, "    <memballoon model='virtio'/>");
    let _ = writeln!(
        w,
        "    <rng model='virtio'>\n      <backend model='random'>/dev/urandom</backend>\n    </rng>"
    );
    let _ = writeln!(w, "  </devices>");
    let _ = writeln!(w, "</domain>");
    x
}

/// What Berth reads back from a domain's XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainFacts {
    pub name: String,
    pub uuid: Option<String>,
    pub domain_type: String,
    /// From the ownership marker; `None` when Berth does not own the domain.
    pub instance_id: Option<InstanceId>,
    pub template: Option<String>,
    /// A pool machine's pool (from the marker).
    pub pool: Option<PoolMark>,
    /// Whose directory holds the files, when not the owner's own (a machine taken from a pool).
    pub files_owner: Option<InstanceId>,
    pub cores: u32,
    pub max_cores: u32,
    pub memory_mib: u64,
    pub max_memory_mib: u64,
    /// The first disk's file (`vda` for Berth's domains).
    pub disk: Option<PathBuf>,
    /// Files of every disk and CD-ROM.
    pub files: Vec<PathBuf>,
}

impl DomainFacts {
    /// The id the directory holding the domain's files is named after (its owner file names it).
    pub fn files_id(&self) -> Option<&InstanceId> {
        self.files_owner.as_ref().or(self.instance_id.as_ref())
    }
}

fn kib(node: Option<roxmltree::Node>) -> u64 {
    let Some(n) = node else { return 0 };
    let v: u64 = n.text().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
    let unit = n.attribute("unit").unwrap_or("KiB");
    let bytes: u128 = match unit {
        "b" | "bytes" => v as u128,
        "KB" => v as u128 * 1000,
        "k" | "KiB" => v as u128 * 1024,
        "MB" => v as u128 * 1_000_000,
        "M" | "MiB" => (v as u128) << 20,
        "GB" => v as u128 * 1_000_000_000,
        "G" | "GiB" => (v as u128) << 30,
        _ => v as u128 * 1024,
    };
    (bytes >> 20) as u64
}

pub fn parse_domain(xml: &str) -> Result<DomainFacts, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("domain XML does not parse: {e}"))?;
    let root = doc.root_element();
    let child = |name: &str| root.children().find(|n| n.has_tag_name(name));
    let name = child("name").and_then(|n| n.text()).unwrap_or_default().to_owned();
    let marker = doc.descendants().find(|n| n.has_tag_name((NS, "instance")));
    let marker_text = |tag: &str| {
        marker
            .and_then(|m| m.children().find(|n| n.has_tag_name((NS, tag))))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_owned())
    };
    let instance_id = marker_text("id").and_then(|t| InstanceId::parse(&t).ok());
    let id_of = |tag: &str| marker_text(tag).and_then(|t| InstanceId::parse(&t).ok());
    let vcpu = child("vcpu");
    let max_cores: u32 = vcpu
        .and_then(|n| n.text())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let cores = vcpu
        .and_then(|n| n.attribute("current"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(max_cores);
    let max_memory_mib = kib(child("memory"));
    let memory_mib = match child("currentMemory") {
        Some(n) => kib(Some(n)),
        None => max_memory_mib,
    };
    let mut disk = None;
    let mut files = Vec::new();
    for d in doc.descendants().filter(|n| n.has_tag_name("disk")) {
        let Some(file) = d
            .children()
            .find(|n| n.has_tag_name("source"))
            .and_then(|s| s.attribute("file"))
        else {
            continue;
        };
        if d.attribute("device") == Some("disk") && disk.is_none() {
            disk = Some(PathBuf::from(file));
        }
        files.push(PathBuf::from(file));
    }
    Ok(DomainFacts {
        name,
        uuid: child("uuid").and_then(|n| n.text()).map(|t| t.trim().to_owned()),
        domain_type: root.attribute("type").unwrap_or_default().to_owned(),
        instance_id,
        template: marker_text("template"),
        pool: marker_text("pool").and_then(|t| PoolMark::from_token(&t)),
        files_owner: id_of("files"),
        cores,
        max_cores,
        memory_mib,
        max_memory_mib,
        disk,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan<'a>(id: &'a InstanceId, net: &'a NetworkAttachment) -> DomainPlan<'a> {
        DomainPlan {
            name: "web<1>",
            uuid: None,
            marker: Marker {
                id,
                template: "debian-12",
                pool: None,
                files: None,
            },
            domain_type: "qemu",
            machine: "q35",
            cores: 2,
            max_cores: 4,
            memory_mib: 1024,
            max_memory_mib: 512,
            disk: Path::new("/v/i/disk.qcow2"),
            seed: Path::new("/v/i/seed.iso"),
            console_log: Path::new("/v/i/console.log"),
            network: net,
        }
    }

    #[test]
    fn built_xml_reads_back() {
        let id = InstanceId::parse("web1").unwrap();
        let net = NetworkAttachment::Bridge("br0".into());
        let xml = domain_xml(&plan(&id, &net));
        assert!(xml.contains("<name>web&lt;1&gt;</name>"), "{xml}");
        assert!(xml.contains("<source bridge='br0'/>"), "{xml}");
        assert!(xml.contains("name='org.qemu.guest_agent.0'"), "{xml}");
        assert!(xml.contains("<target dev='sda' bus='sata'/>"), "{xml}");
        assert!(
            !xml.contains("host-passthrough"),
            "TCG guests get QEMU's default CPU: {xml}"
        );
        let facts = parse_domain(&xml).unwrap();
        assert_eq!(facts.name, "web<1>");
        assert_eq!(facts.instance_id.as_ref(), Some(&id));
        assert_eq!(facts.template.as_deref(), Some("debian-12"));
        assert_eq!((facts.cores, facts.max_cores), (2, 4));
        // The maximum never drops below what was asked for.
        assert_eq!((facts.memory_mib, facts.max_memory_mib), (1024, 1024));
        assert_eq!(facts.disk.as_deref(), Some(Path::new("/v/i/disk.qcow2")));
        assert_eq!(facts.files.len(), 2);
        assert_eq!((&facts.uuid, &facts.pool, &facts.files_owner), (&None, &None, &None));
        assert_eq!(facts.files_id(), Some(&id));
    }

    #[test]
    fn pool_marks_uuids_and_files_read_back() {
        let id = InstanceId::parse("web1").unwrap();
        let from = InstanceId::parse("pool-0123456789abcdef").unwrap();
        let mark = PoolMark::new("small", "1a2b").unwrap();
        let net = NetworkAttachment::User;
        let mut p = plan(&from, &net);
        p.uuid = Some("c2a6e3f5-469d-4ce9-b253-81fe61d7a1f4");
        p.marker.pool = Some(&mark);
        let facts = parse_domain(&domain_xml(&p)).unwrap();
        assert_eq!(facts.uuid.as_deref(), p.uuid);
        assert_eq!(facts.pool.as_ref(), Some(&mark));
        assert_eq!(facts.files_id(), Some(&from));
        p.marker.id = &id;
        p.marker.pool = None;
        p.marker.files = Some(&from);
        let facts = parse_domain(&domain_xml(&p)).unwrap();
        assert_eq!((facts.instance_id.as_ref(), &facts.pool), (Some(&id), &None));
        assert_eq!(facts.files_id(), Some(&from));
        // What set_metadata is given: unprefixed children, which libvirt puts in the namespace.
        assert_eq!(
            p.marker.element(),
            "<instance><id>web1</id><template>debian-12</template><files>pool-0123456789abcdef</files></instance>"
        );
    }

    #[test]
    fn foreign_domains_have_no_id_and_units_convert() {
        let xml = "<domain type='kvm'><name>other</name><memory unit='KiB'>2097152</memory>\
                   <vcpu>2</vcpu><metadata><x:instance xmlns:x='urn:other'><x:id>web1</x:id></x:instance></metadata></domain>";
        let f = parse_domain(xml).unwrap();
        assert_eq!(f.instance_id, None);
        assert_eq!((f.cores, f.memory_mib, f.max_memory_mib), (2, 2048, 2048));
        assert!(parse_domain("<domain").is_err());
    }
}
