//! No circle of modules inside a crate: a crate's top-level modules (`src/x.rs`,
//! `src/x/…`) must import each other in one direction only, so each can be read
//! (and moved) with what it stands on below it.
//!
//! Read from the source as text: `crate::x` paths, `use crate::{x, …}` lists, and
//! names the crate root re-exports (`pub use x::Name;` in `lib.rs`, then
//! `crate::Name` means module `x`). A module's own submodules count as the module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::Result;

/// Fails naming the first circle of modules found in any crate of the workspace.
pub(crate) fn check_no_circles() -> Result {
    let root = crate::root();
    let mut checked = 0;
    for entry in
        std::fs::read_dir(&root).map_err(|e| format!("failed to list the workspace: {e}"))?
    {
        let dir = entry.map_err(|e| e.to_string())?.path();
        let src = dir.join("src");
        if !dir.join("Cargo.toml").is_file() || !src.is_dir() {
            continue;
        }
        let graph = module_graph(&src)?;
        if let Some(circle) = find_circle(&graph) {
            return Err(format!(
                "{}: its modules import each other in a circle: {} (move what they share \
                 into a module below both)",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                circle.join(" -> ")
            ));
        }
        checked += 1;
    }
    eprintln!("xtask: no module circle in {checked} crates");
    Ok(())
}

/// Each top-level module of the crate at `src` and the modules it imports.
fn module_graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    let module_of = |file: &Path| -> Option<String> {
        let rel = file.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_string())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    // Names the root re-exports, by the module they come from.
    let mut reexported: BTreeMap<String, String> = BTreeMap::new();
    for root_file in ["lib.rs", "main.rs"] {
        let Ok(text) = std::fs::read_to_string(src.join(root_file)) else {
            continue;
        };
        for statement in text.split(';') {
            let Some(rest) = statement.trim().strip_prefix("pub use ") else {
                continue;
            };
            let Some((module, names)) = rest.split_once("::") else {
                continue;
            };
            if !modules.contains(module) {
                continue;
            }
            for name in names
                .trim_matches(|c: char| c == '{' || c == '}' || c.is_whitespace())
                .split(',')
            {
                let name = name.split_whitespace().last().unwrap_or_default();
                if !name.is_empty() {
                    reexported.insert(name.to_string(), module.to_string());
                }
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("failed to read {}: {e}", file.display()))?;
        for to in referenced(&text) {
            let to = if modules.contains(&to) {
                to
            } else if let Some(m) = reexported.get(&to) {
                m.clone()
            } else {
                continue;
            };
            if to != from {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    Ok(graph)
}

/// The first path segment after every `crate::` in `text` (each name of a
/// `crate::{a, b::c}` list), comments left out.
fn referenced(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        // `runner_crate::x` or `$crate::x` are not this crate's paths.
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let list = list.split('}').next().unwrap_or_default();
            names.extend(list.split(',').map(|p| ident(p.trim())));
        } else {
            names.push(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> Result {
    for entry in
        std::fs::read_dir(dir).map_err(|e| format!("failed to list {}: {e}", dir.display()))?
    {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// A circle of the graph, as the modules along it (the first repeated at the end).
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lists_and_foreign_crates() {
        let text = "use crate::exec::Running;\nuse crate::{helper::Helper, names};\n\
                    // crate::commented\nrunner_crate::x; $crate::y; crate::DockerError";
        assert_eq!(referenced(text), ["exec", "helper", "names", "DockerError"]);
    }

    #[test]
    fn a_circle_is_found_and_a_line_is_not() {
        let graph = |edges: &[(&str, &str)]| {
            let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in edges {
                g.entry(a.to_string()).or_default().insert(b.to_string());
                g.entry(b.to_string()).or_default();
            }
            g
        };
        assert_eq!(find_circle(&graph(&[("a", "b"), ("b", "c")])), None);
        assert_eq!(
            find_circle(&graph(&[("a", "b"), ("b", "c"), ("c", "b")])),
            Some(vec!["b".to_string(), "c".into(), "b".into()])
        );
    }
}
