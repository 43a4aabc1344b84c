//! The repository keeps the design card's layout, the library crates carry no
//! command line (only `cli/`, the `aya` binary, depends on clap, anyhow or
//! indicatif, and the service does not depend on the simulator), and Aya's
//! public wire API (`proto/aya/v1/*.proto`, and the ORCA protos under
//! `proto/xds/`) documents every message, enum,
//! field, value, service and RPC with a comment directly above it.

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
        "cli",
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

/// The library crates (directory, package name). `cli/` is the only binary crate.
const LIBRARIES: &[(&str, &str)] = &[
    ("proto", "aya-proto"),
    ("controller/policy", "aya-policy"),
    ("forecaster", "aya-forecaster"),
    ("sim", "aya-sim"),
    ("controller", "aya-controller"),
];

/// Crates for a command line: only the `aya` binary (`cli/`) may depend on them.
const CLI_ONLY: &[&str] = &["clap", "anyhow", "indicatif"];

/// Package names of the normal dependencies a manifest declares (`[dependencies]` and
/// `[target.*.dependencies]`; a `package = "..."` rename counts as that package).
fn normal_dependencies(manifest: &str) -> Result<Vec<String>, toml::de::Error> {
    let doc: toml::Table = toml::from_str(manifest)?;
    let mut tables: Vec<&toml::Table> = doc
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .into_iter()
        .collect();
    if let Some(targets) = doc.get("target").and_then(toml::Value::as_table) {
        tables.extend(
            targets
                .values()
                .filter_map(|t| t.get("dependencies").and_then(toml::Value::as_table)),
        );
    }
    let mut names = Vec::new();
    for table in tables {
        for (key, spec) in table {
            let package = spec.get("package").and_then(toml::Value::as_str);
            names.push(package.unwrap_or(key).to_string());
        }
    }
    Ok(names)
}

/// What a library manifest must not declare: a dependency on a command-line crate,
/// the service on the simulator, or a `[[bin]]` target.
fn library_violations(package: &str, manifest: &str) -> Vec<String> {
    let deps = match normal_dependencies(manifest) {
        Ok(deps) => deps,
        Err(e) => return vec![format!("{package}: Cargo.toml does not parse: {e}")],
    };
    let mut found: Vec<String> = deps
        .iter()
        .filter(|d| CLI_ONLY.contains(&d.as_str()))
        .map(|d| format!("{package} depends on {d} (command-line crates belong to aya-cli)"))
        .collect();
    if package == "aya-controller" && deps.iter().any(|d| d == "aya-sim") {
        found.push(
            "aya-controller depends on aya-sim (the simulator is the demo's, in aya-cli)".into(),
        );
    }
    if manifest.lines().any(|l| l.trim() == "[[bin]]") {
        found.push(format!(
            "{package} declares a [[bin]] (the one binary is aya-cli's `aya`)"
        ));
    }
    found
}

#[test]
fn only_the_binary_crate_has_a_command_line() {
    let root = workspace_root();
    let mut report = Vec::new();
    for (dir, package) in LIBRARIES {
        let path = root.join(dir).join("Cargo.toml");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            text.contains(&format!("name = \"{package}\"")),
            "{} is not the manifest of {package}",
            path.display()
        );
        report.extend(library_violations(package, &text));
        let main = root.join(dir).join("src/main.rs");
        if main.exists() {
            report.push(format!("{package} has a binary: {}", main.display()));
        }
    }
    assert!(
        report.is_empty(),
        "library crates with a command line:\n{}",
        report.join("\n")
    );
    let cli = root.join("cli/Cargo.toml");
    let text = fs::read_to_string(&cli).unwrap_or_else(|e| panic!("{}: {e}", cli.display()));
    assert!(
        text.contains("[[bin]]\nname = \"aya\""),
        "cli/Cargo.toml must build the `aya` binary"
    );
}

#[test]
fn the_manifest_checker_catches_command_line_dependencies() {
    let manifest = r#"
[package]
name = "aya-controller"

[dependencies]
aya-sim.workspace = true
serde = "1"
cmdline = { package = "clap", version = "4" }

[target.'cfg(unix)'.dependencies]
indicatif = "0.18"

[dev-dependencies]
anyhow = "1"
"#;
    let found = library_violations("aya-controller", manifest);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found.iter().any(|f| f.contains("depends on clap")),
        "{found:?}"
    );
    assert!(found.iter().any(|f| f.contains("indicatif")), "{found:?}");
    assert!(found.iter().any(|f| f.contains("aya-sim")), "{found:?}");
    assert!(
        !found.iter().any(|f| f.contains("anyhow")),
        "dev-dependencies are allowed: {found:?}"
    );
    assert!(library_violations("aya-sim", "[dependencies]\nserde = \"1\"\n").is_empty());
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
    // Aya's own API, and the ORCA protos written for Aya from cncf/xds.
    let mut files = Vec::new();
    for sub in [
        "proto/aya/v1",
        "proto/xds/data/orca/v3",
        "proto/xds/service/orca/v3",
    ] {
        let dir = workspace_root().join(sub);
        let before = files.len();
        files.extend(
            fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "proto")),
        );
        assert!(
            files.len() > before,
            "no .proto files under {}",
            dir.display()
        );
    }
    files.sort();
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
