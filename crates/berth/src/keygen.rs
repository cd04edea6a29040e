//! `berth keygen`: an Ed25519 key pair in OpenSSH format. The private key file is created with
//! mode 0600 from the start (never written first and chmod'ed later) and never overwritten.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;

use crate::cli::{KeygenArgs, OutputFormat};

pub fn run(args: &KeygenArgs, out: OutputFormat) -> anyhow::Result<ExitCode> {
    let (private, public) = write_key_pair(&args.out, &args.comment)?;
    let paths = serde_json::json!({ "private_key": private, "public_key": public });
    crate::api_cmd::show(out, &paths, |_| {
        format!("private key: {}\npublic key:  {}", private.display(), public.display())
    })
}

/// Writes `path` (private, 0600) and `path.pub` (public, 0644). Fails if either exists.
pub fn write_key_pair(path: &Path, comment: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    for p in [path, pub_path.as_path()] {
        if p.exists() {
            bail!("{} already exists; refusing to overwrite a key", p.display());
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let public_line = public_key_line(&key, comment);
    let private_pem = private_key_pem(&key, comment)?;
    write_new(path, private_pem.as_bytes(), 0o600)?;
    write_new(&pub_path, format!("{public_line}\n").as_bytes(), 0o644)?;
    Ok((path.to_owned(), pub_path))
}

pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn put_string(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s);
}

fn public_blob(key: &SigningKey) -> Vec<u8> {
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-ed25519");
    put_string(&mut blob, key.verifying_key().as_bytes());
    blob
}

pub fn public_key_line(key: &SigningKey, comment: &str) -> String {
    format!("ssh-ed25519 {} {comment}", B64.encode(public_blob(key)))
}

/// The `openssh-key-v1` format, unencrypted (cipher and KDF "none").
fn private_key_pem(key: &SigningKey, comment: &str) -> anyhow::Result<String> {
    let mut check = [0u8; 4];
    getrandom::fill(&mut check).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let mut private = Vec::new();
    private.extend_from_slice(&check);
    private.extend_from_slice(&check);
    put_string(&mut private, b"ssh-ed25519");
    put_string(&mut private, key.verifying_key().as_bytes());
    let mut secret = key.to_bytes().to_vec();
    secret.extend_from_slice(key.verifying_key().as_bytes());
    put_string(&mut private, &secret);
    put_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut body = b"openssh-key-v1\0".to_vec();
    put_string(&mut body, b"none");
    put_string(&mut body, b"none");
    put_string(&mut body, b"");
    body.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut body, &public_blob(key));
    put_string(&mut body, &private);
    let b64 = B64.encode(&body);
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(70) {
        pem.push_str(std::str::from_utf8(chunk)?);
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_pair_ssh_keygen_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_berth");
        let (private, public) = write_key_pair(&path, "test@berth").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let pub_line = std::fs::read_to_string(&public).unwrap();
        berth_core::SshPublicKey::parse(pub_line.trim()).expect("our public key parses as an SSH key");
        assert!(write_key_pair(&path, "again").is_err(), "never overwrites");

        // ssh-keygen derives the public key from our private key file: proves the format.
        match std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&private)
            .output()
        {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "ssh-keygen: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let derived = String::from_utf8(out.stdout).unwrap();
                let mine: Vec<_> = pub_line.split_whitespace().take(2).collect();
                let theirs: Vec<_> = derived.split_whitespace().take(2).collect();
                assert_eq!(mine, theirs);
            }
            Err(e) => eprintln!("skipping the ssh-keygen cross-check: {e}"),
        }
    }
}
