//! The layers point down (issue 15): every `crate::` path in `src/` names a
//! module of the same or a lower layer, and the module graph has no cycle.
//! Layers, bottom to top: source, section, config, runtime, serve, tools.
//! Comments (doc links included) are not imports and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 6] = ["source", "section", "config", "runtime", "serve", "tools"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/runtime/hub.rs` -> `runtime::hub`; `src/section.rs` -> `section`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("::")
}

/// Every path the file's code (not its comments, not its `#[cfg(test)]`
/// module) names through `crate::`, `super::` or `self::`, as a path from
/// the crate root (`a::b`), for the file of module `module`. A group
/// (`super::{a::X, b}`) gives one path per member.
fn crate_paths_in(code: &str, module: &str) -> Vec<String> {
    let parts: Vec<&str> = if module.is_empty() { Vec::new() } else { module.split("::").collect() };
    // A file's module; `super::` is its parent, `self::` itself. In `src/a.rs`
    // and `src/a/b.rs` alike, the file is the module named by its path.
    let parent = parts[..parts.len().saturating_sub(1)].join("::");
    let this = parts.join("::");
    let join = |base: &str, rest: &str| if base.is_empty() { rest.to_owned() } else { format!("{base}::{rest}") };
    let mut out = Vec::new();
    let code = code.split("#[cfg(test)]\nmod tests").next().unwrap_or(code);
    for line in code.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
        let mut rest = line;
        loop {
            let found = ["crate::", "super::", "self::"]
                .iter()
                .filter_map(|k| rest.find(k).map(|i| (i, *k)))
                // `self::` inside `super::self::`-like words is not a path start.
                .filter(|(i, _)| {
                    *i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_'
                })
                .min();
            let Some((i, keyword)) = found else { break };
            rest = &rest[i + keyword.len()..];
            let base = match keyword {
                "crate::" => String::new(),
                "super::" => parent.clone(),
                _ => this.clone(),
            };
            let path: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            let path = path.trim_end_matches(':');
            let after = &rest[path.len()..].trim_start_matches(':');
            if after.starts_with('{') {
                // One level of grouping: each member's leading path.
                let group = &after[1..after.find('}').unwrap_or(after.len())];
                for member in group.split(',') {
                    let member: String = member
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let member = member.trim_end_matches(':');
                    let full = [path, member]
                        .iter()
                        .filter(|p| !p.is_empty() && **p != "self")
                        .copied()
                        .collect::<Vec<_>>()
                        .join("::");
                    out.push(join(&base, &full));
                }
            } else {
                out.push(join(&base, path));
            }
        }
    }
    out
}

/// Every `crate::a::b` path in code at the crate root, as `a::b`.
fn crate_paths(code: &str) -> Vec<String> {
    crate_paths_in(code, "")
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        if from == "lib" || from == "main" {
            continue; // the table of contents and the binary sit above everything
        }
        let code = std::fs::read_to_string(file).expect("read");
        let targets: &mut BTreeSet<String> = edges.entry(from.clone()).or_default();
        for path in crate_paths_in(&code, &from) {
            // The longest prefix that is a module file; a root item (SCHEMA_SQL) is `lib`.
            let parts: Vec<&str> = path.split("::").collect();
            let target = (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|m| modules.contains(m))
                .unwrap_or_else(|| "lib".to_owned());
            if target != from {
                targets.insert(target);
            }
        }
    }
    edges
}

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or_default();
    LAYERS.iter().position(|l| *l == top).unwrap_or(LAYERS.len())
}

#[test]
fn every_import_points_to_the_same_or_a_lower_layer() {
    let mut upward = Vec::new();
    for (from, targets) in graph() {
        for to in targets {
            // Only the binary's tools may use the crate root (its schema constants).
            let allowed = if to == "lib" { layer(&from) == layer("tools") } else { layer(&to) <= layer(&from) };
            if !allowed {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports that point up a layer: {upward:#?}");
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search with colours; a grey node reached again closes a cycle.
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match colour.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| (*s).to_owned()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            _ => {}
        }
        colour.insert(node, 1);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, colour, stack) {
                return Some(c);
            }
        }
        stack.pop();
        colour.insert(node, 2);
        None
    }
    let mut colour = BTreeMap::new();
    edges.keys().find_map(|node| visit(node, edges, &mut colour, &mut Vec::new()))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let cycle = find_cycle(&graph());
    assert!(cycle.is_none(), "an import cycle: {}", cycle.unwrap_or_default().join(" -> "));
}

#[test]
fn the_checks_see_a_cycle_and_an_upward_import() {
    // The parser finds paths in code and skips comments.
    let code = "use crate::runtime::mirror::X;\n/// [`crate::serve::http`]\nlet a = crate::source::db::open();";
    assert_eq!(crate_paths(code), ["runtime::mirror::X", "source::db::open"]);
    // `super::` and `self::` resolve from the file's module, groups give each member,
    // and the file's test module is not part of the graph.
    let code = "use super::{handle::MirrorHandle, budget};\nuse self::inner::Y;\nlet a = myself::z();\n\
                #[cfg(test)]\nmod tests { use super::*; }";
    assert_eq!(
        crate_paths_in(code, "runtime::builder"),
        ["runtime::handle::MirrorHandle", "runtime::budget", "runtime::builder::inner::Y"]
    );
    assert_eq!(crate_paths_in("use super::table::SETTINGS;", "config"), ["table::SETTINGS"]);
    assert!(layer("serve::envelope") > layer("runtime::mirror"));
    assert!(layer("section") < layer("runtime::actor"));
    // The search finds the kind of cycle this crate used to have (envelope <-> mirror).
    let edge = |a: &str, b: &str| (a.to_owned(), BTreeSet::from([b.to_owned()]));
    let cyclic = BTreeMap::from([edge("envelope", "mirror"), edge("mirror", "envelope"), edge("db", "time")]);
    assert_eq!(find_cycle(&cyclic), Some(vec!["envelope".into(), "mirror".into(), "envelope".into()]));
    let acyclic = BTreeMap::from([edge("envelope", "mirror"), edge("mirror", "db"), edge("db", "time")]);
    assert_eq!(find_cycle(&acyclic), None);
}

/// One idea per room (issue 32): no file in `src/` is over 500 lines, so a
/// file that grows past it is split where its ideas part, not left to grow.
#[test]
fn no_source_file_is_over_500_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "found the sources: {}", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).expect("read source").lines().count();
            (lines > 500).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these where their ideas part: {long:?}");
}
