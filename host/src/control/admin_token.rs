//! The admin API's bearer token, and the files that keep secrets in the
//! data dir (the admin token, the development JWT secret): read, or made
//! once with 32 random bytes and mode 0600.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Name of the token file in the data dir.
pub const TOKEN_FILE: &str = "admin.token";

/// The bearer token every admin call must carry.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// `given` if set; else the one in `<data_dir>/admin.token`; else a new
    /// random one written there with mode 0600.
    pub fn resolve(given: Option<String>, data_dir: &Path) -> anyhow::Result<AdminToken> {
        if let Some(token) = given.filter(|t| !t.is_empty()) {
            return Ok(AdminToken::new(&token));
        }
        let token = read_or_create_secret(&data_dir.join(TOKEN_FILE))?;
        Ok(AdminToken::new(&token))
    }

    fn new(token: &str) -> Self {
        AdminToken { digest: Sha256::digest(token.as_bytes()).into() }
    }

    /// Whether `header` is `Bearer <token>`. Both sides are hashed first so
    /// the comparison takes the same time whatever the length or content.
    pub(super) fn admits(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        given.ct_eq(&self.digest).into()
    }
}

/// The secret in `path`, trimmed; `None` when the file is missing or empty.
pub fn read_secret(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(secret) if !secret.trim().is_empty() => Ok(Some(secret.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// The secret in `path`; if there is none, 32 random bytes in hex, written
/// there readable by the owner only.
pub fn read_or_create_secret(path: &Path) -> anyhow::Result<String> {
    if let Some(secret) = read_secret(path)? {
        return Ok(secret);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let secret = hex::encode(secret);
    write_private(path, &secret)?;
    tracing::info!(path = %path.display(), "generated a secret");
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &Path, token: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, token: &str) -> anyhow::Result<()> {
    std::fs::write(path, token)?;
    Ok(())
}
