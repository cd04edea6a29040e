//! PVE's named schema formats (`format => 'pve-vmid'` etc.): the code validators and the hash
//! (property-string) formats that `apidata.json` names but does not contain, plus the rewriting of
//! the dump's Perl regex syntax for the `regex` crate.
//!
//! Each code validator mirrors the Perl `register_format` callback it is named after and returns the
//! text that callback `die`s with, trailing newline included (PVE puts that text verbatim after
//! `invalid format - `). Sources: `pve-common` `src/PVE/JSONSchema.pm` (most), `pve-storage`
//! `src/PVE/Storage/Plugin.pm` (volume IDs, content types, paths), `pve-access-control` (users,
//! realms, pools, tokens), `qemu-server` (boot devices, hotplug, ipconfig/boot/cicustom/watchdog/rng
//! property strings) and `pve-container` (mount-point strings, link-local nameservers).
//!
//! Named formats used by the API that are deliberately **accepted without checking** (their rules
//! need host state or are long enumerations nobody in Berth sends): `pve-priv`, `pve-calendar-event`,
//! `pve-cpuset`, `pve-vm-cpu-conf`, `pve-qm-ide`, `pve-qm-hostpci`, `pve-qm-smbios1`,
//! `pve-qemu-sev-fmt`, `pve-qemu-tdx-fmt`, `pve-lxc-dev-string`, `pve-fw-*`, `IPorCIDR*`, `pve-sdn-*`,
//! `pve-ha-*`, `pve-acme-*`, `pve-storage-portal-dns`, `pve-dir-override`, `pve-replication-job-id`,
//! `pve-tfa-config`, `realm-sync-options`, `backup-fleecing`, `backup-performance`,
//! `proxmox-remote`, `pem-*`, `graphite-path`, `mac-prefix`, `pve-command-batch`, `pve-phys-bits`,
//! `pve-qm-usb-device`, `storage-pair`, `bridge-pair` and any name not listed in [`code_format`] or
//! [`hash_format_json`].

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

/// A code validator: `Ok(())` or the exact text the Perl callback dies with (ending in `\n`).
pub(super) type CodeFormat = fn(&str) -> Result<(), String>;

/// Compiles `^(?:body)$` with Perl's meaning of `$` (end of string, or before a final newline).
fn anchored(body: &str) -> Regex {
    Regex::new(&format!(r"\A(?:{body})\n?\z")).unwrap_or_else(|e| panic!("built-in format regex {body:?}: {e}"))
}

const IPV4_OCTET: &str = r"(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])";
const LABEL: &str = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?";
const REALM: &str = r"[A-Za-z][A-Za-z0-9\.\-_]+";
const USER: &str = r"[^\s:/]+";
const EMAIL: &str = r"[\w\+\-\~]+(?:\.[\w\+\-\~]+)*@[a-zA-Z0-9\-]+(?:\.[a-zA-Z0-9\-]+)*";
const EMAIL_USER: &str = r"[\w\+\-\~]+(?:\.[\w\+\-\~]+)*";

/// `$PVE::Tools::IPV4RE`.
fn ipv4_re() -> String {
    format!(r"(?:(?:{IPV4_OCTET}\.){{3}}{IPV4_OCTET})")
}

/// `$PVE::Tools::IPV6RE`, built the same way as the Perl original.
fn ipv6_re() -> String {
    let h16 = "(?:[0-9a-fA-F]{1,4})";
    let ls32 = format!("(?:(?:{}|{h16}:{h16}))", ipv4_re());
    let mut alts = vec![
        format!("(?:(?:(?:{h16}:){{6}}){ls32})"),
        format!("(?:(?:::(?:{h16}:){{5}}){ls32})"),
        format!("(?:(?:(?:{h16})?::(?:{h16}:){{4}}){ls32})"),
    ];
    for (max_before, after) in [(1, 3), (2, 2), (3, 1)] {
        alts.push(format!(
            "(?:(?:(?:(?:{h16}:){{0,{max_before}}}{h16})?::(?:{h16}:){{{after}}}){ls32})"
        ));
    }
    alts.push(format!("(?:(?:(?:(?:{h16}:){{0,4}}{h16})?::){ls32})"));
    alts.push(format!("(?:(?:(?:(?:{h16}:){{0,5}}{h16})?::){h16})"));
    alts.push(format!("(?:(?:(?:(?:{h16}:){{0,6}}{h16})?::))"));
    format!("(?:{})", alts.join("|"))
}

static IPV4: LazyLock<Regex> = LazyLock::new(|| anchored(&ipv4_re()));
static IPV6: LazyLock<Regex> = LazyLock::new(|| anchored(&ipv6_re()));
static CIDRV4: LazyLock<Regex> = LazyLock::new(|| anchored(&format!(r"{}/(\d+)", ipv4_re())));
static CIDRV6: LazyLock<Regex> = LazyLock::new(|| anchored(&format!(r"{}/(\d+)", ipv6_re())));
static DNS_NAME: LazyLock<Regex> = LazyLock::new(|| anchored(&format!(r"(?:{LABEL}\.)*{LABEL}")));
static NODE: LazyLock<Regex> = LazyLock::new(|| anchored(LABEL));
static VMID: LazyLock<Regex> = LazyLock::new(|| anchored("[1-9][0-9]{2,8}"));
static URLENCODED: LazyLock<Regex> = LazyLock::new(|| anchored(r"[-%a-zA-Z0-9_.!~*'()]*"));
static CONFIGID: LazyLock<Regex> = LazyLock::new(|| anchored("(?i:[a-z][a-z0-9_-]+)"));
static PARSE_ID: LazyLock<Regex> = LazyLock::new(|| anchored(r"(?i:[a-z][a-z0-9\-_\.]*[a-z0-9])"));
static BRIDGE_ID: LazyLock<Regex> = LazyLock::new(|| anchored(r"[-_.\w\d]+"));
static MAC: LazyLock<Regex> = LazyLock::new(|| anchored("(?i:[a-f0-9][02468ace](?::[a-f0-9]{2}){5})"));
static EMAIL_RE: LazyLock<Regex> = LazyLock::new(|| anchored(EMAIL));
static EMAIL_USER_RE: LazyLock<Regex> = LazyLock::new(|| anchored(EMAIL_USER));
static IFACE: LazyLock<Regex> = LazyLock::new(|| anchored(r"(?i:[a-z][a-z0-9_]{1,20}(?:[:\.]\d+)?)"));
static VLAN: LazyLock<Regex> = LazyLock::new(|| anchored(r"(\d+)(?:-(\d+))?"));
static SIZE: LazyLock<Regex> = LazyLock::new(|| anchored(r"\d+(?:\.\d+)?[KMGT]?"));
static TAG: LazyLock<Regex> = LazyLock::new(|| anchored(r"(?i:[a-z0-9_][a-z0-9_\-\+\.]*)"));
static TASK_STATUS: LazyLock<Regex> = LazyLock::new(|| anchored("(?i:ok|error|warning|unknown)"));
static LDAP_ATTR: LazyLock<Regex> = LazyLock::new(|| anchored("[a-zA-Z0-9]+"));
static SIMPLE_NAME: LazyLock<Regex> = LazyLock::new(|| anchored(r"[A-Za-z0-9\.\-_]+"));
static POOL: LazyLock<Regex> = LazyLock::new(|| anchored(r"[A-Za-z0-9\.\-_]+(?:/[A-Za-z0-9\.\-_]+){0,2}"));
static REALM_RE: LazyLock<Regex> = LazyLock::new(|| anchored(REALM));
static USERID: LazyLock<Regex> = LazyLock::new(|| anchored(&format!("{USER}@{REALM}")));
static TOKENID: LazyLock<Regex> = LazyLock::new(|| anchored(&format!("{USER}@{REALM}!{REALM}")));
static VOLUME_ID: LazyLock<Regex> = LazyLock::new(|| anchored(r"(?i:[a-z][a-z0-9\-_\.]*[a-z0-9]):.+"));
static STORAGE_PATH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\A/[^;\(\)]+").expect("storage path regex"));
static STORAGE_FORMAT: LazyLock<Regex> = LazyLock::new(|| anchored("raw|qcow2|vmdk|subvol"));
static NO_SPACE: LazyLock<Regex> = LazyLock::new(|| anchored(r"\S+"));
static MP_BAD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"/\.\.?/|/\.\.?\n?\z|\A\.\./").expect("mp regex"));
static LINK_LOCAL: LazyLock<Regex> = LazyLock::new(|| anchored("(fe80:[^%]+)%(.*)"));
static STARTUP_PART: LazyLock<Regex> = LazyLock::new(|| anchored(r"(?:order=)?\d+|up=\d+|down=\d+"));
static TIMEZONE: LazyLock<Regex> = LazyLock::new(|| anchored(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)+"));

fn strip_nl(value: &str) -> &str {
    value.strip_suffix('\n').unwrap_or(value)
}

/// `PVE::Tools::split_list`: NUL-separated if the text has a NUL, else split on `,`, `;` and blanks.
pub(super) fn split_list(text: &str) -> Vec<&str> {
    if text.contains('\0') {
        let mut parts: Vec<&str> = text.split('\0').collect();
        while parts.last() == Some(&"") {
            parts.pop();
        }
        return parts;
    }
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .collect()
}

fn urlencoded(v: &str) -> Result<(), String> {
    ok_or(URLENCODED.is_match(v), || format!("invalid urlencoded string: {v}\n"))
}

fn ok_or(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(msg()) }
}

fn configid(v: &str) -> Result<(), String> {
    ok_or(CONFIGID.is_match(v), || format!("invalid configuration ID '{v}'\n"))
}

fn storage_id(v: &str) -> Result<(), String> {
    ok_or(PARSE_ID.is_match(v), || {
        format!("storage ID '{v}' contains illegal characters\n")
    })
}

fn acme_plugin_id(v: &str) -> Result<(), String> {
    ok_or(PARSE_ID.is_match(v), || {
        format!("ACME plugin ID '{v}' contains illegal characters\n")
    })
}

fn bridge_id(v: &str) -> Result<(), String> {
    ok_or(BRIDGE_ID.is_match(v), || format!("invalid bridge ID '{v}'\n"))
}

fn vmid(v: &str) -> Result<(), String> {
    ok_or(VMID.is_match(v), || {
        "value does not look like a valid VM ID\n".to_string()
    })
}

fn node(v: &str) -> Result<(), String> {
    ok_or(NODE.is_match(v), || {
        "value does not look like a valid node name\n".to_string()
    })
}

fn mac_addr(v: &str) -> Result<(), String> {
    ok_or(MAC.is_match(v), || {
        "value does not look like a valid unicast MAC address\n".to_string()
    })
}

fn ipv4(v: &str) -> Result<(), String> {
    ok_or(IPV4.is_match(v), || {
        "value does not look like a valid IPv4 address\n".to_string()
    })
}

fn ipv6(v: &str) -> Result<(), String> {
    ok_or(IPV6.is_match(v), || {
        "value does not look like a valid IPv6 address\n".to_string()
    })
}

fn is_ip(v: &str) -> bool {
    IPV4.is_match(v) || IPV6.is_match(v)
}

fn ip(v: &str) -> Result<(), String> {
    ok_or(is_ip(v), || "value does not look like a valid IP address\n".to_string())
}

fn ipv4mask(v: &str) -> Result<(), String> {
    let ok = (0..=32u32).any(|bits| {
        let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
        std::net::Ipv4Addr::from(mask).to_string() == v
    });
    ok_or(ok, || "value does not look like a valid IP netmask\n".to_string())
}

fn cidr_bits_ok(re: &Regex, v: &str, max: u32) -> bool {
    re.captures(v)
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse::<u64>().ok())
        .is_some_and(|bits| bits > 7 && bits <= u64::from(max))
}

fn is_cidrv4(v: &str) -> bool {
    cidr_bits_ok(&CIDRV4, v, 32)
}

fn is_cidrv6(v: &str) -> bool {
    cidr_bits_ok(&CIDRV6, v, 128)
}

fn cidrv4(v: &str) -> Result<(), String> {
    ok_or(is_cidrv4(v), || {
        "value does not look like a valid IPv4 CIDR network\n".to_string()
    })
}

fn cidrv6(v: &str) -> Result<(), String> {
    ok_or(is_cidrv6(v), || {
        "value does not look like a valid IPv6 CIDR network\n".to_string()
    })
}

fn cidr(v: &str) -> Result<(), String> {
    ok_or(is_cidrv4(v) || is_cidrv6(v), || {
        "value does not look like a valid CIDR network\n".to_string()
    })
}

fn ipv4_config(v: &str) -> Result<(), String> {
    let special = matches!(strip_nl(v), "dhcp" | "manual");
    ok_or(special || is_cidrv4(v), || {
        "value does not look like a valid ipv4 network configuration\n".to_string()
    })
}

fn ipv6_config(v: &str) -> Result<(), String> {
    let special = matches!(strip_nl(v), "auto" | "dhcp" | "manual");
    ok_or(special || is_cidrv6(v), || {
        "value does not look like a valid ipv6 network configuration\n".to_string()
    })
}

fn email(v: &str) -> Result<(), String> {
    ok_or(EMAIL_RE.is_match(v), || {
        "value does not look like a valid email address\n".to_string()
    })
}

fn email_or_username(v: &str) -> Result<(), String> {
    ok_or(EMAIL_RE.is_match(v) || EMAIL_USER_RE.is_match(v), || {
        "value does not look like a valid email address or user name\n".to_string()
    })
}

fn dns_name(v: &str) -> Result<(), String> {
    ok_or(DNS_NAME.is_match(v), || {
        "value does not look like a valid DNS name\n".to_string()
    })
}

fn iface(v: &str) -> Result<(), String> {
    ok_or(IFACE.is_match(v), || format!("invalid network interface name '{v}'\n"))
}

fn vlan_id_or_range(v: &str) -> Result<(), String> {
    let caps = VLAN
        .captures(v)
        .ok_or_else(|| format!("invalid VLAN configuration '{v}'\n"))?;
    let tag = |m: Option<regex::Match<'_>>| m.map(|m| m.as_str().parse::<u64>().unwrap_or(u64::MAX));
    let check = |t: u64, text: &str| ok_or((2..=4094).contains(&t), || format!("invalid VLAN tag '{text}'\n"));
    let start = tag(caps.get(1)).unwrap_or(0);
    check(start, caps.get(1).map_or("", |m| m.as_str()))?;
    if let Some(end) = tag(caps.get(2)).filter(|&e| e != 0) {
        check(end, caps.get(2).map_or("", |m| m.as_str()))?;
        ok_or(start < end, || {
            format!("VLAN range must go from lower to higher tag '{v}'\n")
        })?;
    }
    Ok(())
}

fn address(v: &str) -> Result<(), String> {
    ok_or(is_ip(v) || DNS_NAME.is_match(v), || {
        format!("value does not look like a valid address: {v}\n")
    })
}

fn disk_size(v: &str) -> Result<(), String> {
    ok_or(SIZE.is_match(v), || {
        format!("value does not look like a valid disk size: {v}\n")
    })
}

fn startup_order(v: &str) -> Result<(), String> {
    // `pve_parse_startup_order` returns undef for a false value ("" or "0") and for any bad part.
    let truthy = !v.is_empty() && v != "0";
    let parts_ok = v.split(',').all(|p| p.trim().is_empty() || STARTUP_PART.is_match(p));
    ok_or(truthy && parts_ok, || "unable to parse startup options\n".to_string())
}

fn tag(v: &str) -> Result<(), String> {
    ok_or(TAG.is_match(v), || "invalid characters in tag\n".to_string())
}

fn task_status_type(v: &str) -> Result<(), String> {
    ok_or(TASK_STATUS.is_match(v), || format!("invalid status '{v}'\n"))
}

fn ldap_simple_attr(v: &str) -> Result<(), String> {
    ok_or(LDAP_ATTR.is_match(v), || {
        format!("value '{v}' does not look like a simple ldap attribute name\n")
    })
}

fn groupid(v: &str) -> Result<(), String> {
    ok_or(SIMPLE_NAME.is_match(v), || {
        format!("group name '{v}' contains invalid characters\n")
    })
}

fn roleid(v: &str) -> Result<(), String> {
    ok_or(SIMPLE_NAME.is_match(v), || {
        format!("role name '{v}' contains invalid characters\n")
    })
}

fn poolid(v: &str) -> Result<(), String> {
    // PVE >= 8.1 allows nested pools up to three levels deep (`a/b/c`).
    if v.split('/').count() > 3 {
        return Err(format!("pool name '{v}' nested too deeply (max levels = 3)\n"));
    }
    ok_or(POOL.is_match(v), || {
        format!("pool name '{v}' contains invalid characters\n")
    })
}

fn realm(v: &str) -> Result<(), String> {
    ok_or(REALM_RE.is_match(v), || {
        "value does not look like a valid realm\n".to_string()
    })
}

fn userid(v: &str) -> Result<(), String> {
    let len = v.chars().count();
    if len < 3 {
        return Err(format!("user name '{v}' is too short\n"));
    }
    if len > 64 {
        return Err(format!("user name '{v}' is too long ({len} > 64)\n"));
    }
    ok_or(USERID.is_match(v), || {
        format!("value '{v}' does not look like a valid user name\n")
    })
}

fn tokenid(v: &str) -> Result<(), String> {
    ok_or(TOKENID.is_match(v), || {
        format!("value '{v}' does not look like a valid token ID\n")
    })
}

fn storage_content(v: &str) -> Result<(), String> {
    let known = [
        "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import",
    ];
    ok_or(known.contains(&v), || format!("invalid content type '{v}'\n"))
}

fn storage_format(v: &str) -> Result<(), String> {
    ok_or(STORAGE_FORMAT.is_match(v), || format!("invalid format '{v}'\n"))
}

fn storage_options(v: &str) -> Result<(), String> {
    ok_or(NO_SPACE.is_match(v), || format!("invalid options '{v}'\n"))
}

fn volume_id(v: &str) -> Result<(), String> {
    ok_or(VOLUME_ID.is_match(v), || format!("unable to parse volume ID '{v}'\n"))
}

fn volume_id_or_absolute_path(v: &str) -> Result<(), String> {
    if v.starts_with('/') { Ok(()) } else { volume_id(v) }
}

fn volume_id_or_qm_path(v: &str) -> Result<(), String> {
    if v == "none" || v == "cdrom" {
        Ok(())
    } else {
        volume_id_or_absolute_path(v)
    }
}

fn storage_path(v: &str) -> Result<(), String> {
    ok_or(STORAGE_PATH.is_match(v), || {
        "value does not look like a valid absolute path\n".to_string()
    })
}

fn storage_server(v: &str) -> Result<(), String> {
    ok_or(is_ip(v) || DNS_NAME.is_match(v), || {
        "value does not look like a valid server name or IP address\n".to_string()
    })
}

fn storage_vgname(v: &str) -> Result<(), String> {
    ok_or(PARSE_ID.is_match(v), || {
        format!("lvm name '{v}' contains illegal characters\n")
    })
}

fn lxc_mp_string(v: &str) -> Result<(), String> {
    ok_or(!MP_BAD.is_match(v), || {
        format!("{v} contains illegal character sequences\n")
    })
}

fn ip_with_ll_iface(v: &str) -> Result<(), String> {
    if let Some(c) = LINK_LOCAL.captures(v) {
        let (addr, dev) = (c.get(1).map_or("", |m| m.as_str()), c.get(2).map_or("", |m| m.as_str()));
        if is_ip(addr) && IFACE.is_match(dev) {
            return Ok(());
        }
    }
    ip(v)
}

/// `PVE::QemuServer::Drive::is_valid_drivename`.
fn is_drive_name(v: &str) -> bool {
    indexed_below(v, "ide", 4)
        || indexed_below(v, "sata", 6)
        || indexed_below(v, "scsi", 31)
        || indexed_below(v, "virtio", 16)
        || v == "efidisk0"
        || v == "tpmstate0"
}

/// `true` when `v` is `prefix` followed by a canonical decimal index below `count`.
fn indexed_below(v: &str, prefix: &str, count: u32) -> bool {
    v.strip_prefix(prefix)
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && (d.len() == 1 || !d.starts_with('0')))
        .and_then(|d| d.parse::<u32>().ok())
        .is_some_and(|i| i < count)
}

fn bootdisk(v: &str) -> Result<(), String> {
    ok_or(is_drive_name(v), || format!("invalid boot disk '{v}'\n"))
}

fn bootdev(v: &str) -> Result<(), String> {
    let special = v.starts_with("efidisk") || v.starts_with("tpmstate");
    let ok = (is_drive_name(v) && !special)
        || indexed_below(v, "net", 32)
        || indexed_below(v, "usb", 14)
        || indexed_below(v, "hostpci", 16);
    ok_or(ok, || format!("invalid boot device '{v}'\n"))
}

fn hotplug_features(v: &str) -> Result<(), String> {
    if v == "0" || v == "1" || v.is_empty() {
        return Ok(());
    }
    for feature in split_list(v) {
        if !matches!(feature, "network" | "disk" | "cpu" | "memory" | "usb" | "cloudinit") {
            return Err(format!("invalid hotplug feature '{feature}'\n"));
        }
    }
    Ok(())
}

fn ct_timezone(v: &str) -> Result<(), String> {
    // The real check reads /usr/share/zoneinfo/zone.tab; `Area/Location` shape is the approximation.
    ok_or(v == "host" || v == "UTC" || TIMEZONE.is_match(v), || {
        format!("invalid time zone '{v}'\n")
    })
}

fn any_string(_: &str) -> Result<(), String> {
    Ok(())
}

/// The code validator registered under `name` (the base name, without `-list`/`-opt`).
pub(super) fn code_format(name: &str) -> Option<CodeFormat> {
    let f: CodeFormat = match name {
        "string" => any_string,
        "urlencoded" => urlencoded,
        "pve-configid" => configid,
        "pve-storage-id" => storage_id,
        "acme-plugin-id" => acme_plugin_id,
        "pve-bridge-id" => bridge_id,
        "pve-vmid" => vmid,
        "pve-node" => node,
        "mac-addr" => mac_addr,
        "ipv4" => ipv4,
        "ipv6" => ipv6,
        "ip" => ip,
        "ipv4mask" => ipv4mask,
        "CIDRv4" => cidrv4,
        "CIDRv6" => cidrv6,
        "CIDR" => cidr,
        "pve-ipv4-config" => ipv4_config,
        "pve-ipv6-config" => ipv6_config,
        "email" => email,
        "email-or-username" => email_or_username,
        "dns-name" => dns_name,
        "pve-iface" => iface,
        "pve-vlan-id-or-range" => vlan_id_or_range,
        "address" => address,
        "disk-size" => disk_size,
        "pve-startup-order" => startup_order,
        "pve-tag" => tag,
        "pve-task-status-type" => task_status_type,
        "ldap-simple-attr" => ldap_simple_attr,
        "pve-groupid" => groupid,
        "pve-roleid" => roleid,
        "pve-poolid" => poolid,
        "pve-realm" => realm,
        "pve-userid" => userid,
        "pve-tokenid" => tokenid,
        "pve-storage-content" => storage_content,
        "pve-storage-format" => storage_format,
        "pve-storage-options" => storage_options,
        "pve-volume-id" => volume_id,
        "pve-volume-id-or-qm-path" => volume_id_or_qm_path,
        "pve-volume-id-or-absolute-path" => volume_id_or_absolute_path,
        "pve-storage-path" => storage_path,
        "pve-storage-server" => storage_server,
        "pve-storage-vgname" => storage_vgname,
        "pve-lxc-mp-string" => lxc_mp_string,
        "lxc-ip-with-ll-iface" => ip_with_ll_iface,
        "pve-qm-bootdisk" => bootdisk,
        "pve-qm-bootdev" => bootdev,
        "pve-hotplug-features" => hotplug_features,
        "pve-ct-timezone" => ct_timezone,
        _ => return None,
    };
    Some(f)
}

/// Hash (property-string) formats registered by name, in the same JSON shape as the inline
/// `format` objects of `apidata.json`, so the schema loader compiles them the same way.
pub(super) fn hash_format_json(name: &str) -> Option<Value> {
    let volume = json!({ "type": "string", "format": "pve-volume-id", "optional": 1 });
    let limit = json!({ "type": "number", "minimum": "0", "optional": 1 });
    let v = match name {
        // qemu-server src/PVE/QemuServer/Network.pm ($ipconfig_fmt)
        "pve-qm-ipconfig" => json!({
            "ip": { "type": "string", "format": "pve-ipv4-config", "optional": 1 },
            "gw": { "type": "string", "format": "ipv4", "optional": 1, "requires": "ip" },
            "ip6": { "type": "string", "format": "pve-ipv6-config", "optional": 1 },
            "gw6": { "type": "string", "format": "ipv6", "optional": 1, "requires": "ip6" },
        }),
        // qemu-server src/PVE/QemuServer.pm ($boot_fmt)
        "pve-qm-boot" => json!({
            "legacy": { "type": "string", "pattern": "[acdn]{1,4}", "default_key": 1, "optional": 1 },
            "order": { "type": "string", "format": "pve-qm-bootdev-list", "optional": 1 },
        }),
        // qemu-server ($cicustom_fmt)
        "pve-qm-cicustom" => json!({ "meta": volume, "network": volume, "user": volume, "vendor": volume }),
        // qemu-server ($watchdog_fmt)
        "pve-qm-watchdog" => json!({
            "model": { "type": "string", "enum": ["i6300esb", "ib700"], "default_key": 1, "optional": 1 },
            "action": {
                "type": "string",
                "enum": ["reset", "shutdown", "poweroff", "pause", "debug", "none"],
                "optional": 1,
            },
        }),
        // qemu-server ($rng_fmt)
        "pve-qm-rng" => json!({
            "source": { "type": "string", "enum": ["/dev/urandom", "/dev/random", "/dev/hwrng"], "default_key": 1 },
            "max_bytes": { "type": "integer", "optional": 1 },
            "period": { "type": "integer", "optional": 1 },
        }),
        // pve-common JSONSchema.pm ($prune_backups_format)
        "prune-backups" => {
            let keep = json!({ "type": "integer", "minimum": 1, "optional": 1 });
            json!({
                "keep-all": { "type": "boolean", "optional": 1 },
                "keep-last": keep, "keep-hourly": keep, "keep-daily": keep,
                "keep-weekly": keep, "keep-monthly": keep, "keep-yearly": keep,
            })
        }
        // pve-common JSONSchema.pm ($bwlimit_format)
        "bwlimit" => json!({
            "default": limit, "restore": limit, "migration": limit, "clone": limit, "move": limit,
        }),
        _ => return None,
    };
    Some(v)
}

/// Rewrites the Perl-only constructs found in the dump: `(?^flags:`, atomic `(?>`, `{,n}`, `\0`.
pub(super) fn perl_to_rust(perl: &str) -> String {
    static CARET_GROUP: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\(\?\^([a-z]*):").expect("caret regex"));
    static OPEN_RANGE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{,(\d+)\}").expect("range regex"));
    let s = CARET_GROUP.replace_all(perl, "(?${1}:").replace("(?>", "(?:");
    let s = OPEN_RANGE.replace_all(&s, "{0,${1}}").into_owned();
    s.replace(r"\0", r"\x00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_formats_follow_pve_rules() {
        assert!(ipv4("10.0.0.1").is_ok());
        assert!(ipv4("10.0.0.01").is_err());
        assert!(ipv4("nope").is_err());
        assert!(ipv6("fe80::1").is_ok());
        assert!(ipv6("2001:db8::10.0.0.1").is_ok());
        assert!(ipv6("2001:db8:::1").is_err());
        assert!(ipv4_config("10.0.0.5/24").is_ok());
        assert!(ipv4_config("10.0.0.5/7").is_err());
        assert!(ipv4_config("dhcp").is_ok());
        assert!(ipv6_config("auto").is_ok());
        assert!(ipv4mask("255.255.255.0").is_ok());
        assert!(ipv4mask("255.0.255.0").is_err());
    }

    #[test]
    fn ids_and_lists() {
        assert_eq!(vmid("99"), Err("value does not look like a valid VM ID\n".to_string()));
        assert!(vmid("100").is_ok());
        assert!(dns_name("my-vm.example").is_ok());
        assert!(dns_name("my_vm").is_err());
        assert!(poolid("a/b/c").is_ok());
        assert!(poolid("a/b/c/d").is_err());
        assert!(bootdev("scsi0").is_ok() && bootdev("net31").is_ok());
        assert!(bootdev("efidisk0").is_err() && bootdev("net32").is_err());
        assert_eq!(split_list("a, b;c  d"), vec!["a", "b", "c", "d"]);
        assert_eq!(split_list("a b\0c"), vec!["a b", "c"]);
        assert!(vlan_id_or_range("10-20").is_ok());
        assert!(vlan_id_or_range("20-10").is_err());
        assert!(startup_order("order=1,up=30").is_ok());
        assert!(startup_order("later").is_err());
    }

    #[test]
    fn perl_regex_constructs_are_rewritten() {
        assert_eq!(perl_to_rust(r"(?^:\d+(?:;\d+)*)"), r"(?:\d+(?:;\d+)*)");
        assert_eq!(perl_to_rust(r"(?^i:[a-z]+)"), r"(?i:[a-z]+)");
        assert_eq!(perl_to_rust(r"^((?>[+-]?\w+,?)+)$"), r"^((?:[+-]?\w+,?)+)$");
        assert_eq!(perl_to_rust(r"[A-Z\s]{,16}"), r"[A-Z\s]{0,16}");
        assert_eq!(perl_to_rust(r"\w+(?:\0\w+)*"), r"\w+(?:\x00\w+)*");
    }

    /// Every `pattern` in the real dump must compile after rewriting (else it would go unchecked).
    #[test]
    fn every_dump_pattern_compiles() {
        let path = std::env::var("BERTH_PVE_SCHEMA")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/pve/apidata.json").into());
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipping: {path} is absent");
            return;
        };
        let dump: Value = serde_json::from_str(&text).expect("apidata.json parses");
        let mut patterns = Vec::new();
        collect_patterns(&dump, &mut patterns);
        assert!(patterns.len() > 50, "expected many patterns, found {}", patterns.len());
        for p in patterns {
            let rewritten = perl_to_rust(p);
            // This checks the syntax; size is not the point (`Pattern` compiles big ones with a high limit).
            match regex::RegexBuilder::new(&format!(r"^{rewritten}\n?\z"))
                .size_limit(1 << 16)
                .build()
            {
                Ok(_) | Err(regex::Error::CompiledTooBig(_)) => {}
                Err(e) => panic!("pattern {p:?} -> {rewritten:?}: {e}"),
            }
        }
    }

    fn collect_patterns<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(p)) = m.get("pattern") {
                    out.push(p);
                }
                m.values().for_each(|c| collect_patterns(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| collect_patterns(c, out)),
            _ => {}
        }
    }
}
