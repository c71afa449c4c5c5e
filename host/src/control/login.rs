//! `pitstop login URL`: where the CLI finds the server from any directory.
//!
//! The admin commands take `--admin-url` (`PITSTOP_ADMIN_URL`) and
//! `--admin-token` (`PITSTOP_ADMIN_TOKEN`). Without them they use the login
//! saved here, in the user's config directory (`$XDG_CONFIG_HOME/pitstop/
//! login.toml`, else `~/.config/pitstop/login.toml`, readable by the owner
//! only); without that, `http://127.0.0.1:8081` and the token file of
//! `--data-dir` (`./data`), which works in the server's own directory.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The admin API the CLI talks to when nothing else names one.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8081";

/// The admin API and token a command uses: `url` and `token` as given
/// (flags or environment), else the saved login's, else the default URL and
/// no token (the data dir's token file). A saved token goes only to its own
/// URL.
pub fn resolve(
    url: Option<String>,
    token: Option<String>,
    saved: Option<Login>,
) -> (String, Option<String>) {
    let url = url.filter(|u| !u.is_empty());
    let url = url.or_else(|| saved.as_ref().map(|s| s.admin_url.clone()));
    let url = url.unwrap_or_else(|| DEFAULT_ADMIN_URL.to_string());
    let same = |saved: &Login| saved.admin_url.trim_end_matches('/') == url.trim_end_matches('/');
    let token = token
        .filter(|t| !t.is_empty())
        .or_else(|| saved.filter(same).map(|saved| saved.admin_token));
    (url, token)
}

/// A saved login: one admin API and its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The admin API, e.g. `http://127.0.0.1:8081`.
    pub admin_url: String,
    /// Its bearer token.
    pub admin_token: String,
}

/// Where the login is kept; `None` without a home directory.
pub fn path() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config.join("pitstop").join("login.toml"))
}

/// The saved login, if there is one.
pub fn load() -> anyhow::Result<Option<Login>> {
    let Some(path) = path() else { return Ok(None) };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .with_context(|| format!("reading the login in {}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Save `login`, replacing any other; the file it went to.
pub fn save(login: &Login) -> anyhow::Result<PathBuf> {
    let path = path().context("no home directory to keep the login in (set HOME)")?;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = toml::to_string(login)?;
    // Written beside it and renamed: never a half-written login, and the
    // token is never readable by others, not even for a moment.
    let partial = dir.join("login.toml.partial");
    // Left by a save that died, or made by someone else: created afresh,
    // so the mode below is what it gets.
    match std::fs::remove_file(&partial) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("removing {}", partial.display()));
        }
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(&partial).with_context(|| format!("creating {}", partial.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Forget the saved login; whether there was one.
pub fn forget() -> anyhow::Result<bool> {
    let Some(path) = path() else { return Ok(false) };
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_a_saved_token_goes_only_to_its_url() {
        let saved = Login { admin_url: "http://h:1".into(), admin_token: "s".into() };
        let some = |s: &str| Some(s.to_string());
        assert_eq!(resolve(None, None, Some(saved.clone())), ("http://h:1".into(), some("s")));
        assert_eq!(resolve(some("http://h:1/"), None, Some(saved.clone())).1, some("s"));
        assert_eq!(resolve(some("http://other:2"), None, Some(saved.clone())).1, None);
        assert_eq!(resolve(None, some("t"), Some(saved)), ("http://h:1".into(), some("t")));
        assert_eq!(resolve(None, None, None), (DEFAULT_ADMIN_URL.into(), None));
    }
}
