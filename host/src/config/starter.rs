//! `pitstop init`: a `pitstop.toml` that starts as it is (the embedded
//! store, the built-in services, no keys or servers to provide), with every
//! option of `pitstop.example.toml` in it, commented out, to uncomment one
//! at a time. Derived from the example file when this binary is built, so
//! the two never differ in what they offer.

use std::io::Write;
use std::path::Path;

/// The example file, every option set.
const EXAMPLE: &str = include_str!("../../../pitstop.example.toml");

/// What `pitstop init` writes first.
const HEADER: &str = "\
# pitstop.toml, written by `pitstop init`: it starts as it is, with the
# embedded store and the built-in services (user, order, payment):
#
#   pitstop serve --config pitstop.toml
#
# Below, every option with an example value, commented out. Uncomment an
# option together with its [section] line. docs/configuration.md says what
# each does.

";

/// The starter config: [`HEADER`], then the example file with every line
/// that sets something commented out.
pub fn starter_config() -> String {
    let mut text = String::from(HEADER);
    for line in EXAMPLE.lines() {
        let setting = !line.trim().is_empty() && !line.trim_start().starts_with('#');
        if setting {
            text.push_str("# ");
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Write the starter config to `path`, which must not exist: an operator's
/// config is never overwritten.
pub fn write_starter(path: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(starter_config().as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing in it is set: it parses to the built-in defaults.
    #[test]
    fn the_starter_config_sets_nothing() {
        let config: crate::Config = toml::from_str(&starter_config()).unwrap();
        assert!(config.routes.is_none() && config.components.is_empty());
        assert!(config.cluster.nats.is_none());
    }
}
