//! What a component must import and export to run here, checked from its
//! import and export names before it is compiled.
//!
//! Compiling is the slow part of a deploy (43 s for a 12 MB JavaScript
//! component); reading the names of a component's top-level imports and
//! exports takes milliseconds, since nested core modules are skipped without
//! being parsed. A component that asks for an interface the platform does not
//! provide, or exports no handler, is refused here in plain words. Types are
//! still checked by wasmtime when the component is linked: this check only
//! moves the common refusals before the compile, and must never refuse what
//! the linker would accept (a unit test holds the list to the linker).

use wasmparser::{Chunk, Parser, Payload};

/// Interfaces the platform's linker provides (see `Runtime::new`), by
/// package, with the `major.minor` of the versions it matches: wasmtime's
/// linker takes an import of any patch release of a `0.x` package for the
/// one it has. A unit test checks every entry against the real linker.
pub(crate) const PROVIDED: &[(&str, &str, &[&str])] = &[
    ("pitstop:platform", "0.1", &["types", "keyvalue", "services", "log", "bus"]),
    ("wasi:io", "0.2", &["error", "poll", "streams"]),
    ("wasi:clocks", "0.2", &["wall-clock", "monotonic-clock"]),
    ("wasi:random", "0.2", &["random", "insecure", "insecure-seed"]),
    ("wasi:filesystem", "0.2", &["types", "preopens"]),
    ("wasi:http", "0.2", &["types", "outgoing-handler"]),
    ("wasi:keyvalue", "0.2.0-draft", &["store", "atomics", "batch"]),
    ("wasi:keyvalue", "0.2.0-draft2", &["store", "atomics", "batch"]),
    (
        "wasi:cli",
        "0.2",
        &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
    ),
    (
        "wasi:sockets",
        "0.2",
        &[
            "network",
            "instance-network",
            "ip-name-lookup",
            "tcp",
            "tcp-create-socket",
            "udp",
            "udp-create-socket",
        ],
    ),
];

/// The exports a component answers requests with, one of which it must
/// have: pitstop's own handler, or the standard `wasi:http/proxy` one.
pub(crate) const HANDLERS: &[(&str, &str, &str)] =
    &[("pitstop:platform", "0.1", "handler"), ("wasi:http", "0.2", "incoming-handler")];

/// Why a component cannot run here, found before compiling it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    /// Its imports and exports do not fit; the message says which, in plain words.
    #[error("{0}")]
    Mismatch(String),
    /// Its top-level sections do not parse (compiling would say the same).
    #[error("{0}")]
    Malformed(String),
}

/// Check the top-level imports and exports of the component `bytes` against
/// what the platform provides and what a service must export.
pub fn check(bytes: &[u8]) -> Result<(), WorldError> {
    let (imports, exports) = names(bytes).map_err(WorldError::Malformed)?;
    let missing: Vec<&str> =
        imports.iter().map(String::as_str).filter(|name| !is_provided(name)).collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "imports {}, which pitstop does not provide (it provides pitstop:platform \
             keyvalue, services, log and bus @0.1, and wasi 0.2 cli, clocks, filesystem, http, \
             io, random and sockets)",
            missing.join(", ")
        ));
    }
    if !exports.iter().any(|name| is_handler(name)) {
        let found = if exports.is_empty() {
            "it exports nothing".to_string()
        } else {
            format!("it exports {}", exports.join(", "))
        };
        problems.push(format!(
            "a service exports pitstop:platform/handler@0.1.x (or, for the wasi:http/proxy \
             world, wasi:http/incoming-handler@0.2.x); {found}"
        ));
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(WorldError::Mismatch(problems.join("; "))),
    }
}

/// The names of the component's own imports and exports, skipping the
/// modules and components nested in it.
fn names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut parser = Parser::new(0);
    let mut rest = bytes;
    loop {
        let (payload, consumed) = match parser.parse(rest, true).map_err(|e| e.to_string())? {
            Chunk::Parsed { payload, consumed } => (payload, consumed),
            // Not with `eof = true`: the parser errors on truncated input.
            Chunk::NeedMoreData(_) => unreachable!("the whole component is given"),
        };
        let mut skip = 0;
        match payload {
            Payload::ComponentImportSection(section) => {
                for import in section {
                    imports.push(import.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) => {
                for export in section {
                    exports.push(export.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            // The parser has already stepped over the nested section;
            // its bytes are left for a nested parser, which we do not run.
            Payload::ModuleSection { unchecked_range, .. }
            | Payload::ComponentSection { unchecked_range, .. } => skip = unchecked_range.len(),
            Payload::End(_) => return Ok((imports, exports)),
            _ => {}
        }
        rest = rest.get(consumed + skip..).ok_or_else(|| {
            format!("a nested module or component runs past the end of the {} bytes", bytes.len())
        })?;
    }
}

/// `package/interface@version` split into its parts; `None` for a name that
/// is not an interface (a bare function or a plain-named instance).
fn interface(name: &str) -> Option<(&str, Option<&str>, &str)> {
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    let (package, interface) = path.split_once('/')?;
    Some((package, version, interface))
}

/// Whether `version` (`major.minor.patch[-pre]`) is a release of `major.minor`,
/// or, for a pre-release (`0.2.0-draft`), that one exactly: pre-releases
/// are not compatible with each other.
fn matches(version: Option<&str>, major_minor: &str) -> bool {
    if major_minor.contains('-') {
        return version == Some(major_minor);
    }
    version
        .and_then(|v| v.strip_prefix(major_minor))
        .is_some_and(|patch| patch.strip_prefix('.').is_some_and(|p| !p.is_empty()))
}

fn is_provided(name: &str) -> bool {
    let Some((package, version, interface)) = interface(name) else { return false };
    PROVIDED.iter().any(|(p, major_minor, interfaces)| {
        *p == package && matches(version, major_minor) && interfaces.contains(&interface)
    })
}

fn is_handler(name: &str) -> bool {
    interface(name).is_some_and(|(p, version, i)| {
        HANDLERS.iter().any(|(package, major_minor, handler)| {
            p == *package && i == *handler && matches(version, major_minor)
        })
    })
}

/// The wasm magic number followed by the component-model layer (1), as
/// opposed to a core module (layer 0).
pub fn looks_like_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{
        Component, ComponentExportKind, ComponentExportSection, ComponentExternName,
        ComponentImportSection, ComponentInstanceSection, ComponentTypeRef, ComponentTypeSection,
        InstanceType,
    };

    /// A component importing an empty instance under each of `imports` and
    /// re-exporting the first one as each of `exports`.
    fn component(imports: &[&str], exports: &[&str]) -> Vec<u8> {
        let mut component = Component::new();
        let mut types = ComponentTypeSection::new();
        types.ty().instance(&InstanceType::new());
        component.section(&types);
        let mut section = ComponentImportSection::new();
        for name in imports {
            section.import(ComponentExternName::from(*name), ComponentTypeRef::Instance(0));
        }
        component.section(&section);
        let mut instances = ComponentInstanceSection::new();
        instances.export_items(Vec::<(&str, ComponentExportKind, u32)>::new());
        component.section(&instances);
        let mut section = ComponentExportSection::new();
        for name in exports {
            // The empty instance made above follows the imported ones.
            let index = imports.len() as u32;
            section.export(
                ComponentExternName::from(*name),
                ComponentExportKind::Instance,
                index,
                None,
            );
        }
        component.section(&section);
        component.finish()
    }

    #[test]
    fn a_service_passes() {
        let bytes = component(
            &["wasi:io/streams@0.2.6", "pitstop:platform/keyvalue@0.1.0"],
            &["pitstop:platform/handler@0.1.0"],
        );
        assert_eq!(check(&bytes), Ok(()));
    }

    #[test]
    fn a_wasi_http_proxy_passes() {
        let bytes = component(
            &[
                "wasi:http/types@0.2.3",
                "wasi:http/outgoing-handler@0.2.12",
                "wasi:io/streams@0.2.3",
            ],
            &["wasi:http/incoming-handler@0.2.3"],
        );
        assert_eq!(check(&bytes), Ok(()));
    }

    #[test]
    fn missing_imports_and_exports_are_named() {
        let bytes = component(
            &["wasi:http/types@0.3.0", "wasi:io/streams@0.3.0", "nowhere"],
            &["wasi:http/handler@0.3.0"],
        );
        let WorldError::Mismatch(message) = check(&bytes).unwrap_err() else { panic!() };
        assert!(
            message.starts_with(
                "imports wasi:http/types@0.3.0, wasi:io/streams@0.3.0, nowhere, \
                 which pitstop does not provide"
            ),
            "{message}"
        );
        assert!(
            message.ends_with(
                "a service exports pitstop:platform/handler@0.1.x (or, for the wasi:http/proxy \
                 world, wasi:http/incoming-handler@0.2.x); it exports wasi:http/handler@0.3.0"
            ),
            "{message}"
        );
    }

    #[test]
    fn versions_match_by_major_and_minor() {
        assert!(matches(Some("0.2.10"), "0.2"));
        assert!(matches(Some("0.2.0-rc-2023-11-10"), "0.2"));
        assert!(!matches(Some("0.20.1"), "0.2"));
        assert!(!matches(Some("0.2"), "0.2"));
        assert!(!matches(None, "0.2"));
        // A pre-release entry matches itself only.
        assert!(matches(Some("0.2.0-draft"), "0.2.0-draft"));
        assert!(!matches(Some("0.2.0-draft2"), "0.2.0-draft"));
        assert!(!matches(Some("0.2.0"), "0.2.0-draft"));
    }

    #[test]
    fn garbage_is_malformed() {
        let mut bytes = component(&[], &["pitstop:platform/handler@0.1.0"]);
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(check(&bytes), Err(WorldError::Malformed(_))));
        // Cut inside a nested module, which the check steps over unparsed.
        let mut module = wasm_encoder::Module::new();
        let padding = wasm_encoder::CustomSection { name: "pad".into(), data: vec![0; 100].into() };
        module.section(&padding);
        let mut component = Component::new();
        component.section(&wasm_encoder::ModuleSection(&module));
        let mut bytes = component.finish();
        bytes.truncate(bytes.len() - 50);
        assert!(
            matches!(check(&bytes), Err(WorldError::Malformed(m)) if m.contains("past the end")),
            "{:?}",
            check(&bytes)
        );
    }

    /// A component importing a function `()` under `name`.
    fn function_import(name: &str) -> Vec<u8> {
        let mut component = Component::new();
        let mut types = ComponentTypeSection::new();
        types.function().params(Vec::<(&str, wasm_encoder::ComponentValType)>::new()).result(None);
        component.section(&types);
        let mut section = ComponentImportSection::new();
        section.import(name, ComponentTypeRef::Func(0));
        component.section(&section);
        component.finish()
    }

    /// Every interface in [`PROVIDED`] is one the real linker has, and
    /// interfaces outside it are not. (An empty instance import would link
    /// under any name; a function import under an interface's name fails
    /// either way, but says "found instance" only where the linker has one.)
    #[test]
    fn the_list_agrees_with_the_linker() {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let linker: wasmtime::component::Linker<crate::runtime::state::ComponentState> =
            crate::runtime::platform_linker(&engine).unwrap();
        let links = |name: &str| {
            let bytes = function_import(name);
            let component = wasmtime::component::Component::new(&engine, &bytes).unwrap();
            let error = linker.instantiate_pre(&component).err().expect("a function import");
            format!("{error:#}").contains("expected function found instance")
        };
        for (package, major_minor, interfaces) in PROVIDED {
            for interface in *interfaces {
                let name = match major_minor.contains('-') {
                    true => format!("{package}/{interface}@{major_minor}"),
                    false => format!("{package}/{interface}@{major_minor}.0"),
                };
                // Holds only records: an import of it needs nothing from
                // the linker, so it links whatever the linker has.
                if name == "pitstop:platform/types@0.1.0" {
                    continue;
                }
                assert!(links(&name), "the linker does not provide {name}");
            }
        }
        assert!(!links("wasi:http/types@0.3.0"));
        assert!(!links("wasi:keyvalue/store@0.2.0-draft3"));
        assert!(!links("wasi:keyvalue/store@0.2.0"));
        assert!(!links("pitstop:platform/testing@0.1.0"));
    }
}
