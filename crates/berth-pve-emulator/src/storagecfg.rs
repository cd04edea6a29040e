//! Cluster storage definitions (`storage.cfg`) as pve-storage's plugins model them: per type the
//! options it knows, which are fixed (create-only) or required, the content types it can hold,
//! and the sensitive options kept outside the file (never read back).

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

/// One storage definition with the capacity the emulator gives it.
pub(crate) struct StorageDef {
    pub id: String,
    /// PVE plugin type: dir, lvmthin, nfs, cifs, zfspool, pbs.
    pub kind: String,
    pub content: Vec<String>,
    /// Shared by nature (nfs, cifs, pbs) or marked `shared 1`.
    pub shared: bool,
    /// Capacity per node (local) or in total (shared), bytes.
    pub total: u64,
    /// Nodes it applies to: its `nodes` option, or every node of the cluster.
    pub nodes: Vec<String>,
    /// Every other option as written in `storage.cfg` (`path`, `server`, `nodes`, `disable`, …).
    pub cfg: BTreeMap<String, String>,
    /// Sensitive options, kept apart as PVE keeps them in `/etc/pve/priv/storage/`.
    pub secrets: BTreeMap<String, String>,
}

impl StorageDef {
    /// A definition of `kind` with its plugin's default content, on `nodes`.
    pub fn new(id: &str, kind: &str, total: u64, nodes: Vec<String>) -> StorageDef {
        let plugin = Plugin::of(kind);
        StorageDef {
            id: id.to_string(),
            kind: kind.to_string(),
            content: plugin
                .map(|p| p.default_content.iter().map(|c| c.to_string()).collect())
                .unwrap_or_default(),
            shared: plugin.is_some_and(|p| p.shared),
            total,
            nodes,
            cfg: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }
    pub fn supports(&self, content: &str) -> bool {
        self.content.iter().any(|c| c == content)
    }
    /// Default image format: raw on block storages, qcow2 on file storages.
    pub fn default_format(&self) -> &'static str {
        if self.is_file_based() { "qcow2" } else { "raw" }
    }
    pub fn is_file_based(&self) -> bool {
        !matches!(self.kind.as_str(), "lvmthin" | "lvm" | "zfspool")
    }
    /// Scope key for volumes: "" for shared storages, else the node.
    pub fn scope(&self, node: &str) -> String {
        if self.shared { String::new() } else { node.to_string() }
    }
    pub fn content_string(&self) -> String {
        self.content.join(",")
    }
    pub fn disabled(&self) -> bool {
        self.cfg.get("disable").is_some_and(|v| v == "1")
    }
    /// Its section in `storage.cfg`, as the file holds it.
    fn section(&self) -> String {
        let mut s = format!("{}: {}\n\tcontent {}\n", self.kind, self.id, self.content_string());
        for (k, v) in &self.cfg {
            s.push_str(&format!("\t{k} {v}\n"));
        }
        s
    }
    /// The `GET /storage/{storage}` view: the file's options, never the secrets.
    pub fn config_json(&self, digest: &str) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("storage".into(), self.id.clone().into());
        m.insert("type".into(), self.kind.clone().into());
        m.insert("content".into(), self.content_string().into());
        m.insert("digest".into(), digest.into());
        for (k, v) in &self.cfg {
            let value = match Plugin::BOOLEAN.contains(&k.as_str()) {
                true => serde_json::Value::from(v.parse::<u64>().unwrap_or(0)),
                false => v.clone().into(),
            };
            m.insert(k.clone(), value);
        }
        serde_json::Value::Object(m)
    }
}

/// `digest` of the whole `storage.cfg` (PVE uses SHA-1 of the file; 40 hex chars of SHA-256 here).
pub(crate) fn file_digest(storages: &[StorageDef]) -> String {
    let mut h = Sha256::new();
    for s in storages {
        h.update(s.section());
        h.update("\n");
    }
    hex::encode(h.finalize())[..40].to_string()
}

/// What one storage type accepts.
pub(crate) struct Plugin {
    pub kind: &'static str,
    /// Required and create-only.
    pub fixed: &'static [&'static str],
    /// Required on create, changeable later.
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
    pub content: &'static [&'static str],
    pub default_content: &'static [&'static str],
    /// Shared by nature (no `shared` option).
    pub shared: bool,
}

const FILE_CONTENT: &[&str] = &["images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"];
const FILE_OPTIONS: &[&str] = &[
    "nodes",
    "disable",
    "prune-backups",
    "max-protected-backups",
    "content-dirs",
    "format",
    "mkdir",
    "create-base-path",
    "create-subdirs",
    "bwlimit",
    "preallocation",
];
const NETFS_OPTIONS: &[&str] = &[
    "nodes",
    "disable",
    "prune-backups",
    "max-protected-backups",
    "content-dirs",
    "format",
    "mkdir",
    "create-base-path",
    "create-subdirs",
    "bwlimit",
    "preallocation",
    "options",
];

const PLUGINS: &[Plugin] = &[
    Plugin {
        kind: "dir",
        fixed: &["path"],
        required: &[],
        optional: FILE_OPTIONS,
        content: FILE_CONTENT,
        default_content: &["images", "rootdir"],
        shared: false,
    },
    Plugin {
        kind: "lvmthin",
        fixed: &["vgname", "thinpool"],
        required: &[],
        optional: &["nodes", "disable", "bwlimit"],
        content: &["images", "rootdir"],
        default_content: &["images", "rootdir"],
        shared: false,
    },
    Plugin {
        kind: "nfs",
        fixed: &["server", "export", "path"],
        required: &[],
        optional: NETFS_OPTIONS,
        content: FILE_CONTENT,
        default_content: &["images"],
        shared: true,
    },
    Plugin {
        kind: "cifs",
        fixed: &["server", "share", "path"],
        required: &[],
        optional: &[
            "nodes",
            "disable",
            "prune-backups",
            "max-protected-backups",
            "content-dirs",
            "format",
            "mkdir",
            "create-base-path",
            "create-subdirs",
            "bwlimit",
            "preallocation",
            "options",
            "username",
            "password",
            "domain",
            "smbversion",
            "subdir",
        ],
        content: FILE_CONTENT,
        default_content: &["images"],
        shared: true,
    },
    Plugin {
        kind: "zfspool",
        fixed: &["pool"],
        required: &[],
        optional: &["nodes", "disable", "blocksize", "sparse", "mountpoint", "bwlimit"],
        content: &["images", "rootdir"],
        default_content: &["images", "rootdir"],
        shared: false,
    },
    Plugin {
        kind: "pbs",
        fixed: &["datastore", "server"],
        required: &[],
        optional: &[
            "nodes",
            "disable",
            "prune-backups",
            "max-protected-backups",
            "namespace",
            "port",
            "username",
            "password",
            "encryption-key",
            "master-pubkey",
            "fingerprint",
        ],
        content: &["backup"],
        default_content: &["backup"],
        shared: true,
    },
];

impl Plugin {
    /// Options kept out of `storage.cfg` (pve-storage `sensitive_properties`).
    pub const SENSITIVE: &'static [&'static str] = &["password", "encryption-key", "keyring", "master-pubkey"];
    /// Options the file stores as 0/1 (returned as numbers).
    const BOOLEAN: &'static [&'static str] = &[
        "disable",
        "shared",
        "mkdir",
        "create-base-path",
        "create-subdirs",
        "is_mountpoint",
        "sparse",
    ];
    /// Parameters that steer the call itself and are never stored.
    pub const CALL_ONLY: &'static [&'static str] = &["storage", "type", "digest", "delete"];

    pub fn of(kind: &str) -> Option<&'static Plugin> {
        PLUGINS.iter().find(|p| p.kind == kind)
    }
    /// Whether this type knows option `k` at all (`shared` only where it is not shared by nature).
    pub fn knows(&self, k: &str) -> bool {
        self.fixed.contains(&k)
            || self.required.contains(&k)
            || self.optional.contains(&k)
            || k == "content"
            || (k == "shared" && !self.shared && matches!(self.kind, "dir"))
    }
    /// pve-storage's `decode_value` for `content`: types the plugin cannot hold are dropped
    /// (with a warning), `none` stands alone, and something must remain.
    pub fn check_content(&self, list: &str) -> Result<Vec<String>, String> {
        let none_valid = self.kind == "dir";
        let mut out = Vec::new();
        let mut none = false;
        for c in list.split([',', ';', ' ']).filter(|c| !c.is_empty()) {
            match c {
                "none" if none_valid => none = true,
                c if self.content.contains(&c) && !out.iter().any(|o| o == c) => out.push(c.to_string()),
                _ => {} // "storage does not support content type 'c'" is only a warning
            }
        }
        if none && !out.is_empty() {
            return Err("unable to combine 'none' with other content types".into());
        }
        if out.is_empty() && !none {
            return Err("storage does not support content type 'none'".into());
        }
        Ok(out)
    }
    /// Capacity the emulator gives a new storage of this type.
    pub fn capacity(&self) -> u64 {
        const GIB: u64 = 1 << 30;
        match self.kind {
            "dir" => 100 * GIB,
            "lvmthin" | "zfspool" => 400 * GIB,
            _ => 2048 * GIB,
        }
    }
}
