//! Dependencies point down: a module may use the modules drawn below it, never one drawn
//! above it or beside it. An upward import is a sign that a type lives in the wrong module
//! (README, "Architecture"). And no file imports, through any chain of files, a file that
//! imports it: a circle means the files are one piece of code cut in two, or that a type they
//! share lives in the wrong one of them.
//!
//! This reads every `crate::…`, `super::…` and `self::…` path in `src/` (comments and string
//! literals left out; `use` groups expanded), resolves it to the module it names, relative to
//! the module it stands in (inline modules such as `mod tests` included), and takes the deepest
//! file of that module path as the file it uses. Bare paths (`decide::x` after a `use`) and
//! `mod x;` declarations are not read: the `use` that brought the name in is.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Top to bottom. `main.rs` (the binary) sits above all of them and is not checked.
const LAYERS: &[&[&str]] = &[
    &["daemon", "update"],
    &["status", "leds"],
    &["supervisor"],
    &["output", "net", "recording"],
    &["media", "clock"],
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

/// A module path: `["net", "decide"]` is `crate::net::decide`; `[]` is the crate root.
type ModPath = Vec<String>;

/// The module a file under `src/` is (`net/decide.rs` and `net/decide/mod.rs` →
/// `net::decide`, `lib.rs` → the root); `None` for the binary's `main.rs`, another crate.
fn module_of(rel: &Path) -> Option<ModPath> {
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_str().expect("utf-8 path").to_string())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    match (parts.is_empty(), stem) {
        (true, "main") => return None,
        (true, "lib") | (_, "mod") => {}
        _ => parts.push(stem.to_string()),
    }
    Some(parts)
}

/// Every library source file by the module it is, named by its path under `src/`.
fn source_files(src: &Path) -> BTreeMap<ModPath, String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(src).expect("under src");
            Some((module_of(rel)?, rel.display().to_string()))
        })
        .collect()
}

/// The file that holds what `path` names: the deepest of its prefixes that is a file's
/// module (`net::decide::Snapshot` → `net/decide.rs`; `net::decide::tests` too).
fn file_of<'a>(files: &'a BTreeMap<ModPath, String>, path: &[String]) -> Option<&'a String> {
    (0..=path.len()).rev().find_map(|n| files.get(&path[..n]))
}

/// `text` with comments, string and character literals blanked out (lines kept), so that
/// only code is read.
fn code(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied();
        let after_ident = i > 0 && is_ident(c[i - 1]);
        let end = match c[i] {
            '/' if at(i + 1) == Some('/') => Some((i..c.len()).find(|&k| c[k] == '\n')),
            '/' if at(i + 1) == Some('*') => {
                let (mut k, mut depth) = (i + 2, 1);
                while k < c.len() && depth > 0 {
                    match (c[k], at(k + 1)) {
                        ('/', Some('*')) => (depth, k) = (depth + 1, k + 1),
                        ('*', Some('/')) => (depth, k) = (depth - 1, k + 1),
                        _ => {}
                    }
                    k += 1;
                }
                Some(Some(k))
            }
            '"' => {
                let mut k = i + 1;
                while k < c.len() && c[k] != '"' {
                    k += if c[k] == '\\' { 2 } else { 1 };
                }
                Some(Some(k + 1))
            }
            // r"…", r#"…"#, br#"…"# (not r#ident).
            'r' if !after_ident || (i > 1 && c[i - 1] == 'b' && !is_ident(c[i - 2])) => {
                let hashes = (i + 1..c.len()).take_while(|&k| c[k] == '#').count();
                (at(i + 1 + hashes) == Some('"')).then(|| {
                    let close: String = std::iter::once('"')
                        .chain("#".repeat(hashes).chars())
                        .collect();
                    let body: String = c[i + 2 + hashes..].iter().collect();
                    body.find(&close)
                        .map(|b| i + 2 + hashes + body[..b].chars().count() + close.len())
                })
            }
            '\'' if at(i + 1) == Some('\\') => {
                Some((i + 3..c.len()).find(|&k| c[k] == '\'').map(|k| k + 1))
            }
            // A character, not a lifetime (`'a`).
            '\'' if at(i + 2) == Some('\'') => Some(Some(i + 3)),
            _ => None,
        };
        match end {
            None => {
                out.push(c[i]);
                i += 1;
            }
            Some(end) => {
                let end = end.unwrap_or(c.len()).min(c.len());
                out.extend(
                    c[i..end]
                        .iter()
                        .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
                );
                i = end;
            }
        }
    }
    out
}

/// Code as tokens with their line: identifiers, `::`, and single characters.
fn tokens(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() {
            if c[i].is_whitespace() {
                i += 1;
            } else if c[i].is_alphanumeric() || c[i] == '_' {
                let start = i;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push((n + 1, c[start..i].iter().collect()));
            } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
                out.push((n + 1, "::".to_string()));
                i += 2;
            } else {
                out.push((n + 1, c[i].to_string()));
                i += 1;
            }
        }
    }
    out
}

/// Reads one path (or `use` tree) at `tokens[*i]`, appending each full path it names to
/// `out` (a group `a::{b, c::{self, d}}` names `a::b`, `a::c`, `a::c::d`).
fn use_tree(
    tokens: &[(usize, String)],
    i: &mut usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let tok = |k: usize| tokens.get(k).map(|t| t.1.as_str());
    loop {
        match tok(*i) {
            Some("{") => {
                *i += 1;
                while let Some(t) = tok(*i) {
                    if t == "}" {
                        *i += 1;
                        break;
                    }
                    use_tree(tokens, i, prefix.clone(), out);
                    // Whatever follows a tree in a group (`as name`) up to its end.
                    let mut depth = 0;
                    while let Some(t) = tok(*i) {
                        match t {
                            "{" => depth += 1,
                            "}" if depth == 0 => break,
                            "}" => depth -= 1,
                            "," if depth == 0 => {
                                *i += 1;
                                break;
                            }
                            _ => {}
                        }
                        *i += 1;
                    }
                }
                return;
            }
            Some("*") => {
                *i += 1;
                break;
            }
            Some(t) if t.starts_with(|c: char| c.is_alphanumeric() || c == '_') => {
                prefix.push(t.to_string());
                *i += 1;
                if tok(*i) != Some("::") {
                    break;
                }
                *i += 1;
            }
            _ => break,
        }
    }
    out.push(prefix);
}

/// The modules named by the `crate::`, `super::` and `self::` paths in `code`, each with its
/// line, as absolute module paths. `module` is the module of the file; `super` and `self`
/// resolve against the inline module they stand in.
fn named_paths(code: &str, module: &[String]) -> Vec<(usize, ModPath)> {
    named_paths_in(code, module, true)
}

/// As `named_paths`, without the paths written inside `#[cfg(test)]` modules: a unit test
/// that borrows a test helper from a sibling file is not a dependency of the code itself.
fn code_paths(code: &str, module: &[String]) -> Vec<(usize, ModPath)> {
    named_paths_in(code, module, false)
}

fn named_paths_in(code: &str, module: &[String], with_tests: bool) -> Vec<(usize, ModPath)> {
    let tokens = tokens(code);
    let tok = |k: usize| tokens.get(k).map(|t| t.1.as_str());
    // Each inline module open at this point: its name, its brace depth, and whether it is
    // compiled only for tests.
    let mut inline: Vec<(String, usize, bool)> = Vec::new();
    let mut depth = 0;
    let mut opening = None;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].1.as_str();
        match t {
            "mod" => {
                let test_only = i >= 7
                    && (i - 7..i)
                        .map(|k| tokens[k].1.as_str())
                        .eq(["#", "[", "cfg", "(", "test", ")", "]"]);
                opening = tok(i + 1)
                    .map(|name| (name.to_string(), test_only))
                    .filter(|_| tok(i + 2) == Some("{"));
            }
            "{" => {
                depth += 1;
                if let Some((name, test_only)) = opening.take() {
                    inline.push((name, depth, test_only));
                }
            }
            "}" => {
                if inline.last().is_some_and(|(_, d, _)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            "crate" | "super" | "self"
                if tok(i + 1) == Some("::")
                    && !matches!(tok(i.wrapping_sub(1)), Some("::" | "$")) =>
            {
                let line = tokens[i].0;
                let mut here: ModPath = module.to_vec();
                here.extend(inline.iter().map(|(name, _, _)| name.clone()));
                let mut trees = Vec::new();
                use_tree(&tokens, &mut i, Vec::new(), &mut trees);
                if !with_tests && inline.iter().any(|(_, _, test_only)| *test_only) {
                    continue;
                }
                for tree in trees {
                    let mut path = match tree[0].as_str() {
                        "crate" => Vec::new(),
                        _ => here.clone(),
                    };
                    for segment in &tree {
                        match segment.as_str() {
                            "crate" | "self" => {}
                            "super" => {
                                path.pop();
                            }
                            name => path.push(name.to_string()),
                        }
                    }
                    out.push((line, path));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    // Unbalanced braces mean a literal or comment was misread, and with it the modules.
    assert_eq!(depth, 0, "braces do not balance in code read as:\n{code}");
    out
}

/// The file → file edges of `src/`: for each pair, the first line that makes it.
fn file_edges(src: &Path) -> BTreeMap<String, BTreeMap<String, (usize, ModPath)>> {
    let files = source_files(src);
    let mut edges: BTreeMap<String, BTreeMap<String, (usize, ModPath)>> = BTreeMap::new();
    for (module, from) in &files {
        let text = std::fs::read_to_string(src.join(from)).expect("read source");
        for (line, path) in code_paths(&code(&text), module) {
            let to = file_of(&files, &path).expect("the crate root is a file");
            if to != from {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_insert((line, path));
            }
        }
    }
    edges
}

/// The circles of a directed graph: one per group of nodes that reach each other (Tarjan's
/// strongly connected components), each as a shortest round trip from its first node.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<BTreeSet<&'a str>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for w in graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w.as_str()]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w.as_str()) {
                    let low = self.low[v].min(self.index[w.as_str()]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    group.insert(w);
                    if w == v {
                        break;
                    }
                }
                self.groups.push(group);
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    let mut out = Vec::new();
    for group in &t.groups {
        let start = *group.first().expect("a group has a node");
        let self_loop = graph.get(start).is_some_and(|next| next.contains(start));
        if group.len() == 1 && !self_loop {
            continue;
        }
        // Breadth first inside the group, back to `start`.
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        'search: while let Some(v) = queue.pop_front() {
            for w in graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if w == start {
                    came_from.insert(start, v);
                    break 'search;
                }
                if group.contains(w) && !came_from.contains_key(w) {
                    came_from.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        let mut cycle = vec![start.to_string()];
        let mut v = came_from[start];
        while v != start {
            cycle.push(v.to_string());
            v = came_from[v];
        }
        cycle[1..].reverse();
        out.push(cycle);
    }
    out.sort();
    out
}

#[test]
fn every_module_is_in_a_layer() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing: Vec<String> = source_files(&src)
        .keys()
        .filter_map(|m| m.first())
        .filter(|m| layer_of(m).is_none())
        .cloned()
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
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (module, file) in source_files(&src) {
        let Some(from) = module.first() else {
            continue;
        };
        let Some(from_layer) = layer_of(from) else {
            continue;
        };
        let text = std::fs::read_to_string(src.join(&file)).expect("read source");
        for (line, path) in named_paths(&code(&text), &module) {
            let Some(to) = path.first().filter(|to| *to != from) else {
                continue;
            };
            checked += 1;
            match layer_of(to) {
                Some(to_layer) if to_layer > from_layer => {}
                _ => wrong.push(format!(
                    "{file}:{line}: {from} uses crate::{}",
                    path.join("::")
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
fn no_file_imports_itself_through_others() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = file_edges(&src);
    let count: usize = edges.values().map(BTreeMap::len).sum();
    assert!(
        count > 100,
        "found only {count} imports between files: is src/ there?"
    );
    let graph = edges
        .iter()
        .map(|(from, to)| (from.clone(), to.keys().cloned().collect()))
        .collect();
    let circles: Vec<String> = cycles(&graph)
        .iter()
        .map(|cycle| {
            let mut text = format!("{} → {}", cycle.join(" → "), cycle[0]);
            for (k, from) in cycle.iter().enumerate() {
                let to = &cycle[(k + 1) % cycle.len()];
                let (line, path) = &edges[from][to];
                text.push_str(&format!(
                    "\n  {from}:{line} uses crate::{}",
                    path.join("::")
                ));
            }
            text
        })
        .collect();
    assert!(
        circles.is_empty(),
        "import circles between files (move what they share into a file below both):\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    let text = "use crate::status::Thing; // crate::daemon in a comment\n";
    let refs = named_paths(&code(text), &["supervisor".to_string()]);
    assert_eq!(
        refs,
        vec![(1, vec!["status".to_string(), "Thing".to_string()])]
    );
    assert!(layer_of("status") < layer_of("supervisor"));
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[test]
fn relative_paths_resolve_to_the_file_they_name() {
    let files: BTreeMap<ModPath, String> = [
        (vec![], "lib.rs"),
        (vec!["net"], "net/mod.rs"),
        (vec!["net", "steer"], "net/steer.rs"),
        (vec!["net", "uplinks"], "net/uplinks.rs"),
        (vec!["net", "deep"], "net/deep/mod.rs"),
        (vec!["net", "deep", "er"], "net/deep/er.rs"),
        (vec!["leds"], "leds/mod.rs"),
    ]
    .into_iter()
    .map(|(m, f)| (strings(&m), f.to_string()))
    .collect();
    let uses = |text: &str, module: &[&str]| -> Vec<(usize, String)> {
        named_paths(&code(text), &strings(module))
            .into_iter()
            .map(|(line, path)| (line, file_of(&files, &path).expect("a file").clone()))
            .collect()
    };
    assert_eq!(
        uses("use super::uplinks::Candidate;", &["net", "steer"]),
        vec![(1, "net/uplinks.rs".to_string())]
    );
    // A group: each member on its own, `self` is the group's module.
    assert_eq!(
        uses(
            "use super::{NetError, uplinks::{self, Candidate}, deep::er as e};",
            &["net", "steer"]
        ),
        [
            (1, "net/mod.rs"),
            (1, "net/uplinks.rs"),
            (1, "net/uplinks.rs"),
            (1, "net/deep/er.rs")
        ]
        .map(|(l, f)| (l, f.to_string()))
        .to_vec()
    );
    assert_eq!(
        uses(
            "use super::super::{steer, uplinks::X};",
            &["net", "deep", "er"]
        ),
        [(1, "net/steer.rs"), (1, "net/uplinks.rs")]
            .map(|(l, f)| (l, f.to_string()))
            .to_vec()
    );
    assert_eq!(
        uses("let x = 1;\nself::er::f();", &["net", "deep"]),
        vec![(2, "net/deep/er.rs".to_string())]
    );
    // The deepest file of a crate path; items and inline modules are not files.
    assert_eq!(
        uses(
            "let x = crate::net::deep::er::Thing::new(); crate::net::Nope::f()",
            &["leds"]
        ),
        [(1, "net/deep/er.rs"), (1, "net/mod.rs")]
            .map(|(l, f)| (l, f.to_string()))
            .to_vec()
    );
    // Inside `mod tests`, `super` is the file itself (no edge), `super::super` its parent.
    let text = "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    fn g() { super::super::run() }\n}\nuse super::steer;\n";
    assert_eq!(
        uses(text, &["net", "uplinks"]),
        [
            (4, "net/uplinks.rs"),
            (5, "net/mod.rs"),
            (7, "net/steer.rs")
        ]
        .map(|(l, f)| (l, f.to_string()))
        .to_vec()
    );
    // The code's own paths leave out what only its `#[cfg(test)]` modules use.
    let code_only: Vec<usize> = code_paths(&code(text), &strings(&["net", "uplinks"]))
        .into_iter()
        .map(|(line, _)| line)
        .collect();
    assert_eq!(code_only, vec![7]);
    // Comments, strings, characters and lifetimes are not paths, and do not upset the braces.
    let text = "/* super::a */ let s = \"super::steer {\"; let c = '{'; fn h<'a>(x: &'a str) {}\nlet r = r#\"crate::net\"#; crate::leds::x()";
    assert_eq!(uses(text, &["net"]), vec![(2, "leds/mod.rs".to_string())]);
}

#[test]
fn cycles_are_found_and_named() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    // a → b → c → a, with a shortcut c → b; d ↔ e; f → a and g → h hang off without a circle.
    let g = graph(&[
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "b"),
        ("c", "d"),
        ("d", "e"),
        ("e", "d"),
        ("f", "a"),
        ("g", "h"),
    ]);
    assert_eq!(
        cycles(&g),
        vec![strings(&["a", "b", "c"]), strings(&["d", "e"])]
    );
    assert!(cycles(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    assert_eq!(cycles(&graph(&[("a", "a")])), vec![strings(&["a"])]);
}
