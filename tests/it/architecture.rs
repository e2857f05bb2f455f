//! The library's top-level modules are layers that import each other one way only: in
//! the graph of `crate::` paths between them (each `src/<module>.rs` or `src/<module>/`,
//! its unit tests left out) there is no cycle, and every edge points to a module that
//! `src/lib.rs` declares earlier, so the layers read bottom-up in that order
//! (docs/architecture.md). `cargo test architecture -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The first identifier of each comma-separated part of a `{...}` group at depth 0.
fn group_heads(group: &str) -> Vec<String> {
    let (mut depth, mut part, mut heads) = (0, String::new(), vec![]);
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => heads.push(std::mem::take(&mut part)),
            _ if depth == 0 => part.push(c),
            _ => {}
        }
    }
    heads.push(part);
    heads
        .iter()
        .filter_map(|p| {
            let head: String = p.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            (!head.is_empty()).then_some(head)
        })
        .collect()
}

/// Every top-level module that `text` names through a `crate::` path.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            out.extend(group_heads(&group[..end]));
        } else {
            let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(head);
        }
    }
    out
}

/// The top-level modules in the order `src/lib.rs` declares them: the layers, bottom first.
fn layers(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub ").unwrap_or(l.trim());
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_string)
        })
        .collect()
}

fn module_graph(src: &Path) -> Graph {
    let modules: BTreeSet<String> = layers(src).into_iter().collect();
    let mut graph = Graph::new();
    for entry in walkdir::WalkDir::new(src).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(src).unwrap();
        let Some(top) = rel.components().next().and_then(|c| c.as_os_str().to_str()) else { continue };
        let top = top.trim_end_matches(".rs");
        if !entry.file_type().is_file() || !modules.contains(top) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let deps = graph.entry(top.to_string()).or_default();
        deps.extend(crate_paths(code).into_iter().filter(|m| m != top && modules.contains(m)));
    }
    graph
}

/// A cycle of the graph, as a path that ends where it starts, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(n: &str, g: &Graph, state: &mut BTreeMap<String, u8>, path: &mut Vec<String>) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == m).unwrap();
                    return Some([&path[start..], &[m.clone()][..]].concat());
                }
                0 => {
                    if let Some(c) = visit(m, g, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    graph.keys().find_map(|n| {
        if state.contains_key(n) {
            return None;
        }
        visit(n, graph, &mut state, &mut vec![])
    })
}

#[test]
fn the_cycle_finder_finds_cycles_and_the_parser_reads_groups() {
    let g: Graph = [("a", &["b"][..]), ("b", &["c"][..]), ("c", &["a"][..]), ("d", &["a"][..])]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let mut acyclic = g.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);
    let paths = crate_paths("use crate::{lock, plot::{A, B}, weights};\nlet x = crate::spec::Spec::load(p);");
    assert_eq!(paths.into_iter().collect::<Vec<_>>(), ["lock", "plot", "spec", "weights"]);
}

#[test]
fn top_level_modules_import_each_other_one_way_only() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (module, deps) in &graph {
        println!("{module} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    // The parser sees the imports it must: plain paths and `use crate::{...}` groups.
    for (from, to) in [("run", "train"), ("train", "model"), ("model", "config"), ("run", "sys")] {
        assert!(graph[from].contains(to), "{from} -> {to} missing from the graph");
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the modules import each other in a circle: {}", cycle.join(" -> "));
    }
    println!("no cycle among {} modules", graph.len());
}

#[test]
fn every_import_points_down_the_layers_lib_rs_declares() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = layers(&src);
    let rank = |m: &str| order.iter().position(|o| o == m).unwrap();
    assert!(order.len() >= 8, "lib.rs declares the layers: {order:?}");
    let upward: Vec<String> = module_graph(&src)
        .iter()
        .flat_map(|(from, deps)| {
            deps.iter().filter(|to| rank(to) > rank(from)).map(move |to| format!("{from} -> {to}"))
        })
        .collect();
    println!("layers, bottom first: {}", order.join(" < "));
    assert!(upward.is_empty(), "imports that go up the layers of src/lib.rs: {}", upward.join(", "));
}

/// Functions of `text` (up to its unit tests) with their length in lines, as rustfmt
/// lays them out: from the `fn` line to the closing brace at the same indentation.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.split("#[cfg(test)]").next().unwrap_or("").lines().collect();
    let mut out = vec![];
    for (i, line) in lines.iter().enumerate() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let rest = ["pub(crate) ", "pub(super) ", "pub ", "const ", "unsafe "]
            .iter()
            .fold(body, |r, p| r.strip_prefix(p).unwrap_or(r));
        let Some(sig) = rest.strip_prefix("fn ") else { continue };
        if line.trim_end().ends_with(';') {
            continue;
        }
        let name: String = sig.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let end = lines[i + 1..].iter().position(|l| l.starts_with(&format!("{indent}}}"))).unwrap_or(lines.len());
        out.push((name, end + 2));
    }
    out
}

#[test]
fn functions_stay_short_and_main_stays_thin() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_eq!(
        function_lengths("fn a() {\n    x\n}\n\nfn b() -> u8 {\n    1\n}\n"),
        [("a".into(), 3), ("b".into(), 3)]
    );
    let (mut long, mut interpreter) = (vec![], 0);
    for entry in walkdir::WalkDir::new(&src).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let file = entry.path().strip_prefix(&src).unwrap().display().to_string();
        for (name, len) in function_lengths(&text) {
            // The pickle interpreter is one match over the opcodes, best read whole.
            if file == "model/pickle.rs" && name == "run" {
                interpreter = len;
            } else if len > 80 {
                long.push(format!("{file}: {name} ({len} lines)"));
            }
        }
    }
    assert!(interpreter > 80, "the scan measures long functions (the pickle interpreter: {interpreter} lines)");
    assert!(long.is_empty(), "functions over 80 lines: {}", long.join(", "));
    let main = std::fs::read_to_string(src.join("main.rs")).unwrap().lines().count();
    println!("main.rs: {main} lines; no function over 80 lines but the pickle interpreter");
    assert!(main <= 120, "main.rs has {main} lines");
}
