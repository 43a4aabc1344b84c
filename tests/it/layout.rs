//! The repository keeps the design card's layout, and Aya's public wire API
//! (`proto/aya/v1/*.proto`) documents every message, enum, field, value, service
//! and RPC with a comment directly above it.

use std::fs;

use aya_tests::workspace_root;

#[test]
fn design_card_layout_exists() {
    let root = workspace_root();
    for dir in [
        "proto",
        "controller",
        "controller/policy",
        "forecaster",
        "sim",
        "datasets",
        "notebooks",
        "tests",
    ] {
        assert!(root.join(dir).is_dir(), "missing directory {dir}/");
    }
    for file in [
        "Cargo.toml",
        "README.md",
        "rust-toolchain.toml",
        "rustfmt.toml",
        ".ci/run",
    ] {
        assert!(root.join(file).is_file(), "missing file {file}");
    }
}

/// Returns the declarations in `text` that have no `//` comment on the line
/// directly above them (blank lines break the association).
fn undocumented(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut missing = Vec::new();
    let mut depth_in_enum = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        let opens_enum = line.starts_with("enum ");
        let is_decl = line.starts_with("message ")
            || opens_enum
            || line.starts_with("service ")
            || line.starts_with("rpc ")
            || line.starts_with("oneof ")
            || is_field(line)
            || (depth_in_enum.last() == Some(&true) && is_enum_value(line));
        if line.ends_with('{') {
            depth_in_enum.push(opens_enum);
        }
        if line.starts_with('}') {
            depth_in_enum.pop();
        }
        if !is_decl {
            continue;
        }
        let documented = i > 0 && {
            let prev = lines[i - 1].trim();
            prev.starts_with("//") || prev.ends_with("*/")
        };
        // A trailing comment on the same line also documents a field or value.
        let trailing = raw.contains("; //");
        if !documented && !trailing {
            missing.push((i + 1, line.to_string()));
        }
    }
    missing
}

fn is_field(line: &str) -> bool {
    // `[repeated|optional] type name = N;` or `map<k, v> name = N;`
    if !line.ends_with(';') || !line.contains('=') || line.starts_with("option ") {
        return false;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    words.len() >= 4 && !line.starts_with("syntax") && !line.starts_with("package")
}

fn is_enum_value(line: &str) -> bool {
    let mut parts = line.splitn(2, '=');
    let name = parts.next().unwrap_or("").trim();
    let rest = parts.next().unwrap_or("").trim();
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && rest.ends_with(';')
}

#[test]
fn every_proto_declaration_is_documented() {
    let dir = workspace_root().join("proto/aya/v1");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .proto files under {}", dir.display());
    let mut report = String::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (line, decl) in undocumented(&text) {
            report.push_str(&format!("{}:{line}: undocumented: {decl}\n", f.display()));
        }
    }
    assert!(report.is_empty(), "document these declarations:\n{report}");
}

#[test]
fn the_checker_catches_an_undocumented_field() {
    let text =
        "// A message.\nmessage M {\n  // Documented.\n  string a = 1;\n  string b = 2;\n}\n";
    let missing = undocumented(text);
    assert_eq!(missing, vec![(5, "string b = 2;".to_string())]);
}
