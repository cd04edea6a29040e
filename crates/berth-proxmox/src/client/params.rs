//! Request parameters as PVE expects them: an ordered list of string pairs, booleans as `1`/`0`,
//! and the `urlencoded` format (`sshkeys`) encoded once more before the form layer encodes it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Parameters of one request; sent as the query string (GET/DELETE) or a form body (POST/PUT).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

/// Parameters whose values are secrets (storage passwords and keys, a cloud-init password).
const SENSITIVE: &[&str] = &["password", "encryption-key", "keyring", "master-pubkey", "cipassword"];

/// Values of sensitive parameters print as `<redacted>`.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, v)| match SENSITIVE.contains(&k.as_str()) {
                true => (k.as_str(), "<redacted>"),
                false => (k.as_str(), v.as_str()),
            }))
            .finish()
    }
}

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }

    pub fn str(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.push((key.to_owned(), value.into()));
        self
    }

    pub fn int(self, key: &str, value: impl Into<u64>) -> Self {
        let v: u64 = value.into();
        self.str(key, v.to_string())
    }

    /// PVE's boolean type accepts only `1` and `0` in form encoding.
    pub fn bool(self, key: &str, value: bool) -> Self {
        self.str(key, if value { "1" } else { "0" })
    }

    pub fn opt_str(self, key: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    pub fn push(&mut self, key: &str, value: impl Into<String>) {
        self.0.push((key.to_owned(), value.into()));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Characters PVE's `urlencoded` format allows unescaped: `^[-%a-zA-Z0-9_.!~*'()]*$`.
const URLENCODED_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Encodes a value for a PVE `urlencoded` parameter (QEMU `sshkeys`): space as `%20` (never
/// `+`), newline as `%0A`. The form layer encodes the result again (`%2520`), as PVE expects.
pub fn pve_urlencode(value: &str) -> String {
    utf8_percent_encode(value, URLENCODED_KEEP).to_string()
}

/// Decodes a PVE `urlencoded` value (the `sshkeys` GET answers).
pub fn pve_urldecode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

/// Characters left as they are in a path segment (RFC 3986 `pchar` minus nothing we need):
/// a UPID's `:`, `@` and `!` stay readable.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b':')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=');

/// Escapes one path segment (node names, storage IDs, UPIDs).
pub fn path_segment(s: &str) -> String {
    utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let p = Params::new().str("storage", "backup").str("password", "hunter2");
        let shown = format!("{p:?}");
        assert!(shown.contains("backup") && shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn booleans_are_one_and_zero() {
        let p = Params::new()
            .bool("full", true)
            .bool("start", false)
            .int("newid", 101u32);
        assert_eq!(
            p.pairs(),
            &[
                ("full".into(), "1".into()),
                ("start".into(), "0".into()),
                ("newid".into(), "101".into())
            ]
        );
    }

    #[test]
    fn sshkeys_match_pve_urlencoded_format() {
        let keys = "ssh-ed25519 AAAAC3Nz+/= a@b\nssh-rsa AAAAB3 c:d";
        let enc = pve_urlencode(keys);
        assert_eq!(
            enc,
            "ssh-ed25519%20AAAAC3Nz%2B%2F%3D%20a%40b%0Assh-rsa%20AAAAB3%20c%3Ad"
        );
        let re = regex::Regex::new(r"^[-%a-zA-Z0-9_.!~*'()]*$").unwrap();
        assert!(re.is_match(&enc));
        // and the form layer doubles the escapes, as PVE wants (`%2520`)
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sshkeys", &enc)
            .finish();
        assert!(body.starts_with("sshkeys=ssh-ed25519%2520AAAAC3Nz%252B"), "{body}");
    }

    #[test]
    fn upid_path_segment_is_unchanged() {
        let upid = "UPID:pve1:00001234:00ABCDEF:65F0A1B2:qmclone:9000:berth@pve!agent:";
        assert_eq!(path_segment(upid), upid);
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
