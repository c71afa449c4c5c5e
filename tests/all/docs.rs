//! The docs name only what exists: every source file a page names, every
//! folder and file of the architecture's layout trees, and, in the other
//! direction, every test suite and test component is named in
//! docs/testing.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::repo_root;

/// Every file under `dir`, relative to the repository, outside build output.
fn files_under(root: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "target" || name.starts_with('.') || name == "node_modules" {
            continue;
        }
        let path = dir.join(&name);
        if entry.file_type().unwrap().is_dir() {
            files_under(root, &path, found);
        } else {
            found.push(path.to_string_lossy().into_owned());
        }
    }
}

fn pages(root: &Path) -> Vec<(String, String)> {
    let mut pages: Vec<(String, String)> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
        .map(|e| {
            let name = format!("docs/{}", e.file_name().to_string_lossy());
            (name, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    pages.push(("README.md".into(), std::fs::read_to_string(root.join("README.md")).unwrap()));
    pages
}

/// The `.rs` files a page names in backticks (`runtime/commit.rs`,
/// `gateway/src/server.rs`, `draft.rs`): each must be the end of the path of
/// a file in the repository. A scaffolded crate's own `src/lib.rs` counts:
/// the services have one too.
#[test]
fn every_source_file_the_docs_name_exists() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["host", "gateway", "components", "tests", "bench", "scripts", "wit"] {
        files_under(&root, Path::new(dir), &mut files);
    }
    let mut missing = BTreeSet::new();
    for (page, text) in pages(&root) {
        for quoted in text.split('`').skip(1).step_by(2) {
            for word in quoted.split([' ', ',', '(', ')', ':', '>', '-']) {
                let word = word.trim_end_matches('.');
                let path_chars = |c: char| c.is_ascii_alphanumeric() || "_/.".contains(c);
                if !word.ends_with(".rs") || !word.chars().all(path_chars) {
                    continue;
                }
                let word = word.trim_start_matches("./");
                let exists = files.iter().any(|f| f == word || f.ends_with(&format!("/{word}")));
                if !exists {
                    missing.insert(format!("{page}: {word}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "named in the docs but not in the tree: {missing:#?}");
}

/// The layout trees of docs/architecture.md (the repository's, `gateway/src`
/// and `host/src`): every file and folder named at the start of a line,
/// nested by its indentation, exists; and every folder and top-level file
/// of `host/src` is in the tree.
#[test]
fn the_architecture_layout_is_the_tree() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let trees =
        [("## Layout", ""), ("### `gateway/src`", "gateway/src"), ("### `host/src`", "host/src")];
    let mut missing = Vec::new();
    let mut host_named = BTreeSet::new();
    for (heading, base) in trees {
        let section = text.split(heading).nth(1).unwrap_or_else(|| panic!("no {heading}"));
        let block =
            section.split("```").nth(1).unwrap_or_else(|| panic!("no tree under {heading}"));
        // (indentation, folder) of the folders the next lines may be in.
        let mut open: Vec<(usize, PathBuf)> = vec![(0, PathBuf::from(base))];
        for line in block.lines().skip(1) {
            let indent = line.len() - line.trim_start().len();
            // A line indented past a name's column continues the one above.
            if line.trim().is_empty() || indent > 8 {
                continue;
            }
            while open.len() > 1 && open.last().unwrap().0 >= indent {
                open.pop();
            }
            let parent = open.last().unwrap().1.clone();
            let names = line.trim_start().split("  ").next().unwrap();
            for name in names.split(", ") {
                let name = name.trim();
                let path = parent.join(name.trim_end_matches('/'));
                if !root.join(&path).exists() {
                    missing.push(path.display().to_string());
                }
                if let Ok(inside) = path.strip_prefix("host/src")
                    && inside.components().count() == 1
                {
                    host_named.insert(inside.display().to_string());
                }
                if name.ends_with('/') {
                    open.push((indent + 1, path));
                }
            }
        }
    }
    assert!(missing.is_empty(), "docs/architecture.md names what does not exist: {missing:?}");
    let unnamed: Vec<String> = std::fs::read_dir(root.join("host/src"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !host_named.contains(name))
        .collect();
    assert!(unnamed.is_empty(), "host/src has what docs/architecture.md leaves out: {unnamed:?}");
}

/// docs/testing.md names every suite of `tests/all` and `tests/load` (as
/// `NAME.rs`) and every crate of `tests/components` (as `` `NAME` ``).
#[test]
fn testing_md_names_every_suite_and_test_component() {
    let root = repo_root();
    let testing = std::fs::read_to_string(root.join("docs/testing.md")).unwrap();
    let mut unnamed = Vec::new();
    for dir in ["tests/all", "tests/load"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "main.rs" || !name.ends_with(".rs") {
                continue;
            }
            if !testing.contains(&format!("`{name}`")) && !testing.contains(&format!("/{name}`")) {
                unnamed.push(format!("{dir}/{name}"));
            }
        }
    }
    for entry in std::fs::read_dir(root.join("tests/components")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir()
            && name != "target"
            && !name.starts_with('.')
            && !testing.contains(&format!("`{name}`"))
        {
            unnamed.push(format!("tests/components/{name}"));
        }
    }
    assert!(unnamed.is_empty(), "docs/testing.md does not name: {unnamed:?}");
}
