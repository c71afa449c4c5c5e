//! `pitstop new`: a service crate in a new directory, ready to build, test
//! as wasm and deploy, with no path into a pitstop checkout.
//!
//! The guest SDK and its WIT are compiled into this binary and written into
//! the crate as `pitstop-sdk/` (vendored, since the SDK is not on a
//! registry): what the new service builds against is exactly what this
//! pitstop serves. The crate's own files come from `templates/`, with
//! `{{name}}`-style placeholders and `{{if events}} / {{else}} / {{end}}`
//! lines choosing what `--events` adds.

use std::path::{Path, PathBuf};

use crate::naming::is_valid_name;

/// What to create.
#[derive(Debug, Clone)]
pub struct NewService {
    /// The service's name: component name, crate name and route.
    pub name: String,
    /// Where the crate goes; must not exist yet.
    pub dir: PathBuf,
    /// Also publish and subscribe to events.
    pub events: bool,
    /// How `.cargo/config.toml` names the test runner: `pitstop` when this
    /// binary is the one on `PATH`, else its absolute path.
    pub runner: String,
}

/// Why nothing was created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not a valid component name.
    #[error("invalid service name {0:?}: a lower-case letter, then up to 62 of a-z, 0-9 and '-'")]
    InvalidName(String),
    /// A valid component name that cargo, Rust or the platform keeps for
    /// itself.
    #[error(
        "{0:?} is taken: a Rust keyword, a crate the service uses, a built-in service (its \
         deploy would replace it) or a gateway path; pick another"
    )]
    ReservedName(String),
    /// Something is in the way.
    #[error("{0} already exists; pick another name or remove it")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The SDK's files, as this binary was built with them: (path in the
/// vendored crate, contents).
const SDK: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../components/sdk/Cargo.toml")),
    ("wit/platform.wit", include_str!("../../../wit/platform.wit")),
    ("src/access.rs", include_str!("../../../components/sdk/src/access.rs")),
    ("src/lib.rs", include_str!("../../../components/sdk/src/lib.rs")),
    ("src/bindings.rs", include_str!("../../../components/sdk/src/bindings.rs")),
    ("src/events.rs", include_str!("../../../components/sdk/src/events.rs")),
    ("src/headers.rs", include_str!("../../../components/sdk/src/headers.rs")),
    ("src/http.rs", include_str!("../../../components/sdk/src/http.rs")),
    ("src/id.rs", include_str!("../../../components/sdk/src/id.rs")),
    ("src/kv.rs", include_str!("../../../components/sdk/src/kv.rs")),
    ("src/log.rs", include_str!("../../../components/sdk/src/log.rs")),
    ("src/services.rs", include_str!("../../../components/sdk/src/services.rs")),
    ("src/testing.rs", include_str!("../../../components/sdk/src/testing.rs")),
];

/// The service crate's own files: (path, template).
const TEMPLATES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("templates/Cargo.toml")),
    (".cargo/config.toml", include_str!("templates/cargo-config.toml")),
    (".gitignore", include_str!("templates/gitignore")),
    ("README.md", include_str!("templates/README.md")),
    ("src/lib.rs", include_str!("templates/lib.rs")),
];

/// Valid component names cargo refuses as a package name, or that would
/// clash with a crate the new one uses, a built-in service or a path the
/// gateway answers itself: Rust's keywords (strict and reserved), the
/// standard crates, the vendored SDK and serde, user, order, payment,
/// health, ready.
const RESERVED: &[&str] = &[
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "alloc",
    "core",
    "std",
    "test",
    "proc-macro",
    "pitstop-sdk",
    "serde",
    "serde-json",
    "user",
    "order",
    "payment",
    "health",
    "ready",
];

/// The versions the shipped services build with, so the new crate starts
/// from dependencies pitstop was tested with (cargo drops what it does not
/// need and adds what is missing).
const LOCKFILE: &str = include_str!("../../../components/Cargo.lock");

/// Create the crate; returns the files written, relative to `dir`. Nothing
/// is left behind when it fails.
pub fn create(service: &NewService) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !is_valid_name(&service.name) {
        return Err(ScaffoldError::InvalidName(service.name.clone()));
    }
    if RESERVED.contains(&service.name.as_str()) {
        return Err(ScaffoldError::ReservedName(service.name.clone()));
    }
    // `create_dir`, not `create_dir_all`: an existing directory (or file)
    // is refused atomically, never written into.
    if let Some(parent) = service.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| write_error(parent, source))?;
    }
    std::fs::create_dir(&service.dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(service.dir.clone()),
        _ => write_error(&service.dir, source),
    })?;
    let written = write_all(service);
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&service.dir);
    }
    written
}

fn write_all(service: &NewService) -> Result<Vec<PathBuf>, ScaffoldError> {
    let mut files: Vec<(PathBuf, String)> = TEMPLATES
        .iter()
        .map(|(path, template)| (PathBuf::from(path), render(template, service)))
        .collect();
    files.extend(
        SDK.iter().map(|(path, text)| (Path::new("pitstop-sdk").join(path), text.to_string())),
    );
    files.push((PathBuf::from("Cargo.lock"), LOCKFILE.to_string()));
    for (path, text) in &files {
        let full = service.dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|source| write_error(parent, source))?;
        }
        std::fs::write(&full, text).map_err(|source| write_error(&full, source))?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

fn write_error(path: &Path, source: std::io::Error) -> ScaffoldError {
    ScaffoldError::Write { path: path.to_path_buf(), source }
}

/// The file cargo builds for `name`: the crate name with `-` as `_`.
pub fn wasm_file_stem(name: &str) -> String {
    name.replace('-', "_")
}

/// `template` with its placeholders filled and its `{{if events}}` blocks
/// kept or dropped. A marker is a line of its own.
fn render(template: &str, service: &NewService) -> String {
    let mut out = String::new();
    // Whether the lines here are kept: false inside the branch not taken.
    let mut keep = true;
    for line in template.lines() {
        match line.trim() {
            "{{if events}}" => keep = service.events,
            "{{else}}" => keep = !service.events,
            "{{end}}" => keep = true,
            _ if keep => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    out.replace("{{name}}", &service.name)
        .replace("{{file}}", &wasm_file_stem(&service.name))
        .replace("{{runner}}", &toml_string(&service.runner))
        .replace("{{runner_shown}}", &service.runner)
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// How the crate should name the test runner: `pitstop` when running
/// `pitstop` from `PATH` finds this very binary, else this binary's
/// absolute path (a checkout's `target/debug/pitstop`, say).
pub fn runner_for(this: &Path) -> String {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("pitstop")).find(|p| p.is_file())
    });
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
    match on_path {
        Some(found) if same(&found, this) => "pitstop".to_string(),
        _ => this.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &Path, events: bool) -> NewService {
        NewService {
            name: "stock-keeper".into(),
            dir: dir.join("stock-keeper"),
            events,
            runner: "/opt/pitstop \"x\"/pitstop".into(),
        }
    }

    #[test]
    fn every_placeholder_and_marker_is_resolved() {
        for events in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let service = service(tmp.path(), events);
            for (path, template) in TEMPLATES {
                let text = render(template, &service);
                assert!(!text.contains("{{"), "{path} (events: {events}):\n{text}");
            }
            let lib = render(include_str!("templates/lib.rs"), &service);
            assert_eq!(lib.contains("user.created"), events);
            assert!(lib.contains("[\"stock-keeper\"]"), "{lib}");
            let config = render(include_str!("templates/cargo-config.toml"), &service);
            let parsed: toml::Table = toml::from_str(&config).unwrap();
            let runner = &parsed["target"]["wasm32-wasip2"]["runner"];
            assert_eq!(runner[0].as_str(), Some("/opt/pitstop \"x\"/pitstop"), "{config}");
        }
    }

    #[test]
    fn the_sdk_is_vendored_with_its_wit_beside_it() {
        let bindings = SDK.iter().find(|(path, _)| *path == "src/bindings.rs").unwrap().1;
        assert!(bindings.contains("path: \"wit\""), "the SDK reads wit/ beside it");
        let lib = SDK.iter().find(|(path, _)| *path == "src/lib.rs").unwrap().1;
        for module in
            lib.lines().filter_map(|l| l.strip_prefix("pub mod ").or(l.strip_prefix("mod ")))
        {
            let file = format!("src/{}.rs", module.trim_end_matches(';'));
            assert!(SDK.iter().any(|(path, _)| *path == file), "{file} is not vendored");
        }
    }

    #[test]
    fn bad_names_and_existing_directories_are_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", "Upper", "1st", "has_underscore", "x/../y", &"n".repeat(64)] {
            let bad = NewService { name: name.into(), ..service(tmp.path(), false) };
            assert!(matches!(create(&bad), Err(ScaffoldError::InvalidName(_))), "{name:?}");
        }
        for name in ["fn", "test", "pitstop-sdk", "user", "ready"] {
            let bad = NewService { name: name.into(), ..service(tmp.path(), false) };
            assert!(matches!(create(&bad), Err(ScaffoldError::ReservedName(_))), "{name:?}");
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing written");
        let good = service(tmp.path(), false);
        let files = create(&good).unwrap();
        assert!(files.contains(&PathBuf::from("pitstop-sdk/wit/platform.wit")));
        std::fs::write(good.dir.join("src/lib.rs"), "mine").unwrap();
        assert!(matches!(create(&good), Err(ScaffoldError::Exists(_))));
        let lib = std::fs::read_to_string(good.dir.join("src/lib.rs")).unwrap();
        assert_eq!(lib, "mine", "an existing crate is never written into");
    }
}
