//! The library's top-level modules are layers that import each other one way only: in
//! the graph of `crate::` paths between them (each `src/<module>.rs` or `src/<module>/`,
//! its unit tests left out) there is no cycle, and every edge points to a module that
//! `src/lib.rs` declares earlier, so the layers read bottom-up in that order
//! (docs/architecture.md). `cargo test architecture -- --nocapture` prints the graph.
//!
//! The same file holds the codebase's other rules: short functions, a thin `main`, a
//! trainer whose fields are private, a library that prints nothing (only `src/cli/` and
//! `src/main.rs` do), and no layer importing another layer's test helpers (they live in
//! `src/testing.rs`). Unit-test code is left out of every scan: what follows a
//! `#[cfg(test)]` in a file, a file named `tests.rs`, and the modules `src/lib.rs`
//! declares for tests only.

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

/// The modules `src/lib.rs` declares under `#[cfg(test)]`: test code as a whole.
fn test_only_modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let lines: Vec<&str> = lib.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| w[1].strip_prefix("mod ")?.strip_suffix(';').map(str::to_string))
        .collect()
}

/// The code of a source file that is not unit-test code: the part before its first
/// `#[cfg(test)]`, nothing of a `tests.rs` or of a test-only module.
fn non_test_code<'a>(rel: &Path, text: &'a str, test_only: &BTreeSet<String>) -> &'a str {
    let top = rel.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or("").trim_end_matches(".rs");
    if rel.file_name().is_some_and(|n| n == "tests.rs") || test_only.contains(top) {
        return "";
    }
    text.split("#[cfg(test)]").next().unwrap_or("")
}

/// Every `.rs` file under `src`: its path relative to `src` and its text.
fn sources(src: &Path) -> Vec<(std::path::PathBuf, String)> {
    walkdir::WalkDir::new(src)
        .sort_by_file_name()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| (e.path().strip_prefix(src).unwrap().to_path_buf(), std::fs::read_to_string(e.path()).unwrap()))
        .collect()
}

fn module_graph(src: &Path) -> Graph {
    let modules: BTreeSet<String> = layers(src).into_iter().collect();
    let test_only = test_only_modules(src);
    let mut graph = Graph::new();
    for (rel, text) in sources(src) {
        let Some(top) = rel.components().next().and_then(|c| c.as_os_str().to_str()) else { continue };
        let top = top.trim_end_matches(".rs");
        if !modules.contains(top) || test_only.contains(top) {
            continue;
        }
        let code = non_test_code(&rel, &text, &test_only);
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
    let test_only = test_only_modules(&src);
    for (rel, text) in sources(&src) {
        let file = rel.display().to_string();
        for (name, len) in function_lengths(non_test_code(&rel, &text, &test_only)) {
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

/// The fields of `struct name` in `text`, each with its visibility (`""` when private).
fn struct_fields(text: &str, name: &str) -> Vec<(String, String)> {
    let Some(start) = text.find(&format!("pub struct {name} {{")).or_else(|| text.find(&format!("struct {name} {{")))
    else {
        return vec![];
    };
    let body = &text[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap_or(body.len())];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with('#') && l.contains(':'))
        .map(|l| {
            let (vis, rest) = if l.starts_with("pub(") {
                l.split_at(l.find(')').unwrap() + 1)
            } else if l.starts_with("pub ") {
                l.split_at(3)
            } else {
                ("", l)
            };
            let field: String = rest.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            (field, vis.to_string())
        })
        .collect()
}

#[test]
fn the_trainer_keeps_its_fields_to_itself() {
    assert_eq!(
        struct_fields(
            "pub struct T {\n    /// a: doc\n    pub a: u8,\n    pub(crate) b: u8,\n    c: Vec<u8>,\n}\n",
            "T"
        ),
        [("a".into(), "pub".into()), ("b".into(), "pub(crate)".into()), ("c".into(), String::new())]
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let text = std::fs::read_to_string(src.join("train/mod.rs")).unwrap();
    let fields = struct_fields(&text, "Trainer");
    assert!(fields.len() >= 10, "the scan reads the trainer's fields: {fields:?}");
    let open: Vec<String> =
        fields.iter().filter(|(_, vis)| !vis.is_empty()).map(|(f, vis)| format!("{vis} {f}")).collect();
    println!("Trainer: {} fields, {} not private", fields.len(), open.len());
    assert!(open.is_empty(), "the trainer is built by Trainer::from_spec and changed through its methods: {open:?}");
}

/// The lines (1-based) of `code` that print with a macro of std.
fn print_lines(code: &str) -> Vec<usize> {
    code.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start();
            !l.starts_with("//")
                && ["println!", "eprintln!", "print!", "eprint!", "dbg!"].iter().any(|m| {
                    l.match_indices(m)
                        .any(|(i, _)| i == 0 || !l[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
                })
        })
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn only_the_binary_prints() {
    assert_eq!(print_lines("let a = 1;\n    println!(\"x\");\n// eprintln!(\"y\")\nwriteln!(f, \"z\");\n"), [2]);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let test_only = test_only_modules(&src);
    let (mut binary, mut found) = (0, vec![]);
    for (rel, text) in sources(&src) {
        let lines = print_lines(non_test_code(&rel, &text, &test_only));
        if rel.starts_with("cli") || rel == Path::new("main.rs") {
            binary += lines.len();
        } else {
            found.extend(lines.into_iter().map(|l| format!("{}:{l}", rel.display())));
        }
    }
    println!("print macros: {binary} in the binary, {} in the library", found.len());
    assert!(binary > 10, "the scan finds the binary's prints ({binary})");
    assert!(found.is_empty(), "the library reports through sys::reporter, it does not print: {}", found.join(", "));
}

/// Test helpers: the items a file declares under `#[cfg(test)]` other than a `mod`, by name.
fn test_helpers(text: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| {
            let rest = ["pub(crate) ", "pub(super) ", "pub "].iter().fold(w[1], |r, p| r.strip_prefix(p).unwrap_or(r));
            let rest = ["fn ", "const ", "static ", "struct ", "enum "].iter().find_map(|k| rest.strip_prefix(k))?;
            Some(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
        })
        .collect()
}

/// The `crate::` paths of `text`, each as its identifiers (`crate::a::{b, c}` gives a, b, c).
fn crate_path_names(text: &str) -> Vec<Vec<String>> {
    text.match_indices("crate::")
        .map(|(i, _)| {
            let rest = &text[i + "crate::".len()..];
            let end = rest.find([';', '(', ')', '\n']).unwrap_or(rest.len());
            rest[..end]
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Uses of a top-level module's test helpers from another top-level module, as `file: path`.
fn borrowed_helpers(files: &[(std::path::PathBuf, String)]) -> Vec<String> {
    let top =
        |rel: &Path| rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
    let mut helpers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        helpers.entry(top(rel)).or_default().extend(test_helpers(text));
    }
    let mut out = vec![];
    for (rel, text) in files {
        for path in crate_path_names(text) {
            let Some(owner) = path.first() else { continue };
            if *owner == top(rel) || owner == "testing" {
                continue;
            }
            // The fuzz harness runs each layer's own fuzz entry point (`fuzz_*`, `fuzz`), as a
            // layer's unit tests would: those stay beside the private code they reach.
            let fuzz_entry = |name: &str| rel == Path::new("fuzz.rs") && name.starts_with("fuzz");
            if path[1..].iter().any(|name| helpers.get(owner).is_some_and(|h| h.contains(name)) && !fuzz_entry(name)) {
                out.push(format!("{}: crate::{}", rel.display(), path.join("::")));
            }
        }
    }
    out
}

#[test]
fn test_helpers_live_in_testing_and_no_layer_borrows_another_layers() {
    // The scan catches what issue 30 found: data/augment.rs importing train/'s fixture reader.
    let seeded = [
        ("train/mod.rs".into(), "#[cfg(test)]\npub(crate) fn toolkit_fixture() -> u8 { 1 }\n".to_string()),
        (
            "data/augment.rs".into(),
            "#[cfg(test)]\nmod tests {\n    use crate::train::{floats, toolkit_fixture};\n}\n".to_string(),
        ),
        ("data/mod.rs".into(), "fn f() { crate::testing::toolkit_fixture(); }\n".to_string()),
        ("sweep/halving.rs".into(), "#[cfg(test)]\npub(crate) fn fuzz_journal(b: &[u8]) {}\n".to_string()),
        ("fuzz.rs".into(), "fn run() { crate::sweep::halving::fuzz_journal(input) }\n".to_string()),
    ];
    assert_eq!(borrowed_helpers(&seeded), ["data/augment.rs: crate::train::floats::toolkit_fixture"]);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    let helpers: usize = files.iter().map(|(_, t)| test_helpers(t).len()).sum();
    println!("{helpers} test helpers declared under #[cfg(test)] outside test modules");
    let borrowed = borrowed_helpers(&files);
    assert!(borrowed.is_empty(), "test helpers shared across layers belong in src/testing.rs: {}", borrowed.join(", "));
}

/// `pub` items and fields, `pub(crate)`/`pub(super)` ones, and long functions, of `code`.
fn surface(code: &str) -> [usize; 4] {
    let mut n = [0; 4];
    for l in code.lines().map(str::trim_start) {
        let kinds = ["fn ", "struct ", "enum ", "trait ", "type ", "const ", "static ", "mod ", "use "];
        if let Some(rest) = l.strip_prefix("pub ") {
            let rest = ["async ", "unsafe "].iter().fold(rest, |r, p| r.strip_prefix(p).unwrap_or(r));
            if kinds.iter().any(|k| rest.starts_with(k)) {
                n[0] += 1;
            } else if rest.split_once(':').is_some_and(|(f, _)| f.chars().all(|c| c.is_alphanumeric() || c == '_')) {
                n[1] += 1;
            }
        } else if l.starts_with("pub(crate) ") || l.starts_with("pub(super) ") {
            n[2] += 1;
        }
    }
    n[3] = function_lengths(code).iter().filter(|(_, len)| *len > 60).count();
    n
}

#[test]
fn public_surface_and_sizes() {
    assert_eq!(surface("pub fn a() {\n}\npub struct S {\n    pub x: u8,\n}\npub(crate) fn b() {\n}\n"), [2, 1, 1, 0]);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let test_only = test_only_modules(&src);
    let (mut total, mut big) = ([0; 4], vec![]);
    for (rel, text) in sources(&src) {
        if !rel.starts_with("cli") && rel != Path::new("main.rs") {
            let n = surface(non_test_code(&rel, &text, &test_only));
            (0..4).for_each(|i| total[i] += n[i]);
        }
        let lines = text.lines().count();
        if lines > 600 {
            big.push(format!("{} ({lines})", rel.display()));
        }
    }
    println!(
        "library: {} pub items, {} pub fields, {} pub(crate)/pub(super) items and fields, {} functions over 60 lines",
        total[0], total[1], total[2], total[3]
    );
    println!("files over 600 lines: {}", big.join(", "));
    assert!(total[0] > 100 && total[2] > 100, "the scan counts the library's items: {total:?}");
    // A file past 800 lines holds more than one concern: split it (the pickle interpreter's is one).
    let over: Vec<&String> = big
        .iter()
        .filter(|f| f.rsplit('(').next().unwrap().trim_end_matches(')').parse::<usize>().unwrap() > 800)
        .collect();
    assert!(over.is_empty(), "files over 800 lines: {over:?}");
}
