//! Dependencies point down: a module may use the modules drawn below it, never one drawn
//! above it or beside it. An upward import is a sign that a type lives in the wrong module
//! (README, "Architecture"). This reads every `crate::…` path in `src/` and checks it against
//! the layers.

use std::path::{Path, PathBuf};

/// Top to bottom. `main.rs` (the binary) sits above all of them and is not checked.
const LAYERS: &[&[&str]] = &[
    &["daemon"],
    &["status", "leds"],
    &["supervisor"],
    &["output", "net"],
    &["media"],
    &["config"],
    &["secret", "recorder"],
    &["lock"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`src/output/whip/peer.rs` → output).
fn owner(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Every `crate::x` module named in code (comments left out).
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
        }
    }
    out
}

#[test]
fn every_module_is_in_a_layer() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut missing: Vec<String> = files
        .iter()
        .filter_map(|f| owner(&src, f))
        .filter(|m| layer_of(m).is_none())
        .collect();
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "modules without a layer (add them to LAYERS and README): {missing:?}"
    );
}

#[test]
fn dependencies_point_down() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(from) = owner(&src, file) else {
            continue;
        };
        let Some(from_layer) = layer_of(&from) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, to) in crate_refs(&text) {
            if to == from {
                continue;
            }
            checked += 1;
            match layer_of(&to) {
                Some(to_layer) if to_layer > from_layer => {}
                _ => wrong.push(format!(
                    "{}:{line}: {from} uses crate::{to}",
                    file.strip_prefix(&src).unwrap_or(file).display()
                )),
            }
        }
    }
    assert!(
        checked > 20,
        "found only {checked} crate paths: is src/ there?"
    );
    assert!(
        wrong.is_empty(),
        "imports that do not point down:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    let refs = crate_refs("use crate::status::Thing; // crate::daemon in a comment\n");
    assert_eq!(refs, vec![(1, "status".to_string())]);
    assert!(layer_of("status") < layer_of("supervisor"));
}
