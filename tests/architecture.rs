//! The shape of the crate, checked from its source: which top-level module uses which (from
//! `crate::…` paths outside comments and unit tests), no import cycles, the data flow's arrows
//! in one direction (capture → encode → flv → ring → rtmp, nothing upstream imports what is
//! downstream), the pure modules (adapt, schedule, flv, media, platform signing) free of I/O
//! and of the network-facing modules, and no source file over 800 lines. Prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The top-level library modules and their files (the binaries' own files are not the
/// library: `main.rs`, `cli.rs`, `bin/`).
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut mods = BTreeMap::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if ["lib", "main", "cli", "bin"].contains(&name.as_str()) {
            continue;
        }
        let files = if path.is_dir() {
            rust_files(&path)
        } else {
            vec![path]
        };
        mods.insert(name, files);
    }
    mods
}

/// A file's code: unit tests (`tests.rs` files, and an inline `mod tests { … }`, which by
/// convention ends the file) and comments left out.
fn code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which top-level modules `text` uses through `crate::` paths (`crate::x`, `crate::{x, y}`).
fn uses(text: &str, mods: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|s| s.trim().split("::").next().unwrap_or(""))
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        out.extend(
            names
                .into_iter()
                .filter(|n| mods.contains(*n))
                .map(String::from),
        );
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(m, files)| {
            let mut deps = BTreeSet::new();
            for f in files {
                deps.extend(uses(&code(f), &names));
            }
            deps.remove(m);
            (m.clone(), deps)
        })
        .collect()
}

fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(m) = stack.pop() {
        for d in &g[&m] {
            if d == to {
                return true;
            }
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    false
}

#[test]
fn the_module_graph_has_no_cycles() {
    let g = graph();
    for (m, deps) in &g {
        eprintln!(
            "{m:>10} -> {}",
            deps.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    let cycles: Vec<(String, String)> = g
        .iter()
        .flat_map(|(m, deps)| deps.iter().map(move |d| (m.clone(), d.clone())))
        .filter(|(m, d)| reaches(&g, d, m))
        .collect();
    assert!(cycles.is_empty(), "import cycles through: {cycles:?}");
}

#[test]
fn the_data_flow_runs_one_way() {
    let g = graph();
    // Upstream never imports downstream; the wiring (broadcast) and the lifecycle (service)
    // import the stages, never the other way round.
    let flow = ["capture", "encode", "flv", "ring", "rtmp"];
    for (i, up) in flow.iter().enumerate() {
        for down in &flow[i + 1..] {
            assert!(!reaches(&g, up, down), "{up} depends on {down}");
        }
    }
    for stage in flow
        .iter()
        .chain(&["record", "adapt", "platform", "schedule", "media"])
    {
        for wiring in ["broadcast", "service"] {
            assert!(!reaches(&g, stage, wiring), "{stage} depends on {wiring}");
        }
    }
    // Layers own their settings: none of them imports the config that composes them.
    for layer in [
        "adapt", "schedule", "capture", "encode", "flv", "ring", "rtmp", "record", "status",
        "media",
    ] {
        assert!(!reaches(&g, layer, "config"), "{layer} depends on config");
    }
}

#[test]
fn the_pure_modules_do_no_io_and_know_no_network() {
    let g = graph();
    let network = [
        "rtmp",
        "platform",
        "status",
        "service",
        "broadcast",
        "notify",
    ];
    let allowed: [(&str, &[&str]); 6] = [
        ("adapt", &["setting"]),
        ("health", &["setting"]),
        ("schedule", &["setting"]),
        ("flv", &["media"]),
        ("media", &[]),
        ("throttle", &[]),
    ];
    for (m, ok) in allowed {
        let deps: Vec<&String> = g[m].iter().filter(|d| !ok.contains(&d.as_str())).collect();
        assert!(deps.is_empty(), "{m} imports {deps:?}");
        assert!(
            !network.iter().any(|n| reaches(&g, m, n)),
            "{m} reaches the network"
        );
    }
    let io = [
        "std::fs",
        "std::net",
        "tokio::net",
        "tokio::fs",
        "reqwest",
        "stdout",
        "stderr",
        "::now()",
        "std::thread",
        "tokio::spawn",
        "tokio::time::sleep",
    ];
    let mods = modules();
    let mut pure: Vec<PathBuf> = ["adapt", "schedule", "flv", "media", "throttle", "setting"]
        .iter()
        .flat_map(|m| mods[*m].clone())
        .collect();
    pure.push(src().join("platform/sign.rs"));
    for f in &pure {
        let text = code(f);
        for needle in io {
            assert!(
                !text.contains(needle),
                "{}: {needle} in a pure module",
                f.display()
            );
        }
    }
    let sign = code(&src().join("platform/sign.rs"));
    assert!(
        !sign.contains("crate::"),
        "signing depends on nothing of ours"
    );
}

#[test]
fn no_source_file_is_over_800_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = rust_files(&root.join("src"));
    files.extend(rust_files(&root.join("benches")));
    let long: Vec<(String, usize)> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (f.strip_prefix(root).unwrap().display().to_string(), n)
        })
        .filter(|(_, n)| *n > 800)
        .collect();
    assert!(long.is_empty(), "over 800 lines: {long:?}");
}

#[test]
fn every_module_says_what_it_owns() {
    let missing: Vec<String> = rust_files(&src())
        .into_iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "no //! at the top: {missing:?}");
}
