//! `cargo xtask layers`: the module graph of `stoq-common` and `stoq`, checked.
//!
//! Reads the crates' sources (no compiler, no extra tool), and takes each `crate::…` and
//! `super::…` path in non-test code as an edge between top-level modules. It fails when the
//! graph has a cycle, or when a module of the sans-IO protocol layer (`conn`, `crypto`,
//! `handshake`, `frame`, `codec`) reaches up into the I/O, engine or async layers. Comments
//! and doc links are not dependencies and are skipped, as are test modules (a test may use
//! anything).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::util::Fail;

/// The crates checked, by source root.
const CRATES: [(&str, &str); 2] = [
    ("stoq-common", "stoq-common/src"),
    ("stoq", "stoq-userspace/src"),
];

/// The protocol layer of `stoq`, and what it must never import.
const PROTOCOL: [&str; 6] = ["conn", "nat", "crypto", "handshake", "frame", "codec"];
const ABOVE_PROTOCOL: [&str; 6] = ["io", "engine", "api", "xdp", "sim", "os"];

/// A crate's module graph: top-level module → the top-level modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

pub(crate) fn check(root: &Path) -> Result<(), Fail> {
    let mut failures = Vec::new();
    for (name, src) in CRATES {
        let graph = graph(&root.join(src))?;
        println!("{name}:");
        for (m, deps) in &graph {
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            println!("  {m:<12} -> {}", deps.join(", "));
        }
        for cycle in cycles(&graph) {
            failures.push(format!("{name}: import cycle: {}", cycle.join(" -> ")));
        }
        if name == "stoq" {
            for m in PROTOCOL {
                for d in graph.get(m).into_iter().flatten() {
                    if ABOVE_PROTOCOL.contains(&d.as_str()) {
                        failures.push(format!(
                            "stoq: protocol module `{m}` imports `{d}` (the sans-IO core must not \
                             reach the I/O, engine or async layers)"
                        ));
                    }
                }
            }
        }
    }
    if failures.is_empty() {
        println!("layers: no import cycle; the protocol layer imports nothing above it");
        Ok(())
    } else {
        Err(Fail(failures.join("\n")))
    }
}

/// Builds the graph of the crate whose sources are under `src`.
fn graph(src: &Path) -> Result<Graph, Fail> {
    let mut files = Vec::new();
    walk(src, &mut files)?;
    let mut g = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("walked under src");
        let Some(module) = module_path(rel) else {
            continue;
        };
        let text = fs::read_to_string(&file)
            .map_err(|e| Fail(format!("reading {}: {e}", file.display())))?;
        let top = module.first().cloned();
        let deps = imports(&code_of(&text), &module);
        if let Some(top) = top {
            let entry = g.entry(top.clone()).or_default();
            entry.extend(deps.into_iter().filter(|d| *d != top));
        }
    }
    // Only modules of this crate count (a `crate::Name` re-export at the root is not one).
    let known: BTreeSet<String> = g.keys().cloned().collect();
    for deps in g.values_mut() {
        deps.retain(|d| known.contains(d));
    }
    Ok(g)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Fail> {
    let entries = fs::read_dir(dir).map_err(|e| Fail(format!("{}: {e}", dir.display())))?;
    for e in entries {
        let path = e.map_err(|e| Fail(e.to_string()))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// The module path of a source file (`conn/endpoint/stateless.rs` → conn, endpoint,
/// stateless), or `None` for test-only files (under a `tests` directory or named
/// `tests.rs`) and binaries.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    if parts.iter().any(|p| p == "tests" || p == "bin") || file == "tests.rs" {
        return None;
    }
    let stem = file.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// `text` without comments, string literals' contents or a trailing `#[cfg(test)] mod`.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod ") && n.contains('{'))
        {
            // A test module: skip to its closing brace at the same indentation.
            let indent = line.len() - t.len();
            let close = format!("{}}}", " ".repeat(indent));
            for l in lines.by_ref() {
                if l == close {
                    break;
                }
            }
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The top-level modules that `code`, in module `module`, names through `crate::` or
/// `super::` paths, grouped imports (`crate::{a, b::c}`) included.
fn imports(code: &str, module: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        if !at_word_start {
            i += 1;
            continue;
        }
        // Inside a multi-byte character (a string literal's `§`): not a path's start.
        let Some(rest) = code.get(i..) else {
            i += 1;
            continue;
        };
        if let Some(r) = rest.strip_prefix("crate::") {
            collect(r, &mut out);
            i += "crate::".len();
        } else if rest.starts_with("super::") {
            let mut depth = 0;
            let mut r = rest;
            while let Some(next) = r.strip_prefix("super::") {
                depth += 1;
                r = next;
            }
            // `mod.rs` files are their directory's module: `super` leaves the directory.
            if depth >= module.len() {
                collect(r, &mut out);
            } else if let Some(top) = module.first() {
                out.insert(top.clone());
            }
            i += depth * "super::".len();
        } else {
            i += 1;
        }
    }
    out
}

/// The first path segment(s) of `r` (after `crate::`): one identifier, or a `{…}` group.
fn collect(r: &str, out: &mut BTreeSet<String>) {
    if let Some(group) = r.strip_prefix('{') {
        let mut depth = 0;
        let mut seg = String::new();
        let mut at_start = true;
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => at_start = true,
                c if at_start && depth == 0 && (c.is_alphanumeric() || c == '_') => seg.push(c),
                _ if !seg.is_empty() => {
                    out.insert(std::mem::take(&mut seg));
                    at_start = false;
                }
                _ => {}
            }
        }
        if !seg.is_empty() {
            out.insert(seg);
        }
    } else {
        let id: String = r
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !id.is_empty() {
            out.insert(id);
        }
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every cycle of `g`, one per strongly connected component of more than one module.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut reported = BTreeSet::new();
    for start in g.keys() {
        if reported.contains(start) {
            continue;
        }
        // A path back to `start`, by depth-first search.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for d in g.get(&node).into_iter().flatten() {
                if d == start {
                    let mut cycle = path.clone();
                    cycle.push(start.clone());
                    reported.extend(path.iter().cloned());
                    out.push(cycle);
                    stack.clear();
                    break;
                }
                if seen.insert(d.clone()) {
                    let mut p = path.clone();
                    p.push(d.clone());
                    stack.push((d.clone(), p));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_crate_and_super_paths() {
        let m = vec!["conn".to_string(), "endpoint".to_string()];
        let code = "use crate::{io::X, engine};\nuse super::Foo;\nlet a = crate::api::b();";
        assert_eq!(imports(code, &m), set(&["io", "engine", "conn", "api"]));
        let m = vec!["wire".to_string(), "stoq".to_string()];
        assert_eq!(
            imports("use super::super::classify::Y;", &m),
            set(&["classify"])
        );
    }

    #[test]
    fn comments_and_tests_are_not_imports() {
        let text = "/// See [`crate::io`].\nuse crate::frame;\n\n#[cfg(test)]\nmod tests {\n    use crate::engine;\n}\n";
        assert_eq!(imports(&code_of(text), &["conn".into()]), set(&["frame"]));
    }

    #[test]
    fn finds_a_cycle() {
        let mut g = Graph::new();
        g.insert("a".into(), set(&["b"]));
        g.insert("b".into(), set(&["c"]));
        g.insert("c".into(), set(&["a"]));
        g.insert("d".into(), set(&["a"]));
        let c = cycles(&g);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].first(), c[0].last());
        g.get_mut("c").unwrap().clear();
        assert!(cycles(&g).is_empty());
    }
}
