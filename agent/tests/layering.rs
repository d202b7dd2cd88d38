//! Imports run downward only: a module may use modules of its own layer or of a lower one,
//! never of a higher one. The table is README's layout section; a new top-level module must be
//! given a layer here before this test passes.
//!
//! Read from the source text (comments and string literals removed): every `crate::X` and
//! `kvs_edge_agent::X` path, in code and unit tests alike, is an import of top-level module `X`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. `cli` and `main` are the binary.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "utilities and data models",
        &[
            "clock",
            "stop",
            "backoff",
            "ticker",
            "input",
            "path_error",
            "logging",
            "media",
            "schedule",
            "edge_config",
            "secrets",
        ],
    ),
    ("state", &["catalog", "store", "health", "stats"]),
    ("jobs", &["recorder", "uploader", "janitor", "export"]),
    ("supervisor", &["supervisor"]),
    ("edges", &["control", "aws", "service", "settings", "http"]),
    ("composition root", &["agent"]),
    ("binary", &["cli", "main"]),
];

/// Upward imports tolerated for now, as (importing module, imported path prefix); each must
/// still occur, so that an entry goes once its import has.
const ALLOWED: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// One import: the file, the path as written, the top-level module it names.
#[derive(Debug)]
struct Import {
    file: PathBuf,
    /// Byte offset in the code, for ordering.
    at: usize,
    path: String,
    target: String,
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under src",
        files.len()
    );

    let mut unknown = BTreeSet::new();
    let mut violations = Vec::new();
    let mut used = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let module = top_module(rel);
        if module == "lib" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            unknown.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for import in imports(&code_only(&text)) {
            let import = Import {
                file: rel.to_owned(),
                ..import
            };
            if import.target == module {
                continue;
            }
            let Some(theirs) = layer_of(&import.target) else {
                unknown.insert(import.target.clone());
                continue;
            };
            if theirs <= own {
                continue;
            }
            if let Some(allowed) = ALLOWED
                .iter()
                .find(|(from, prefix)| *from == module && import.path.starts_with(prefix))
            {
                used.insert(*allowed);
                continue;
            }
            violations.push(format!(
                "{}: {module} ({}) imports {} ({})",
                import.file.display(),
                LAYERS[own].0,
                import.path,
                LAYERS[theirs].0
            ));
        }
    }
    assert!(
        unknown.is_empty(),
        "modules without a layer in LAYERS: {unknown:?}"
    );
    let stale: Vec<_> = ALLOWED.iter().filter(|a| !used.contains(*a)).collect();
    assert!(
        stale.is_empty(),
        "allowed imports no longer made; remove them: {stale:?}"
    );
    assert!(
        violations.is_empty(),
        "imports of a higher layer:\n{}",
        violations.join("\n")
    );
}

/// The detector itself: paths in braces, in macros and after `kvs_edge_agent::` count; those
/// in comments and strings do not.
#[test]
fn imports_are_read_from_code_only() {
    let text = r##"
        use crate::{clock::Clock, store::{self, Store}};
        use kvs_edge_agent::catalog::Catalog;
        // crate::commented::Out
        /* crate::block /* nested */ crate::still_comment */
        let s = "crate::in_a_string \" crate::escaped";
        let r = r#"crate::raw"#;
        let c = '"'; let l: &'static str = ""; crate::after_char::x();
        $crate::input::quote(s);
    "##;
    let found: Vec<(String, String)> = imports(&code_only(text))
        .into_iter()
        .map(|i| (i.path, i.target))
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        found,
        pairs(&[
            ("crate::clock::Clock", "clock"),
            ("crate::store::{self, Store}", "store"),
            ("kvs_edge_agent::catalog::Catalog", "catalog"),
            ("crate::after_char::x", "after_char"),
            ("crate::input::quote", "input"),
        ])
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `aws/metrics/tests.rs` is in `aws`, `clock.rs` is `clock`.
fn top_module(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    first.trim_end_matches(".rs").to_owned()
}

/// The text with comments and the contents of string and character literals removed, so that
/// only code is left.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        if at(i) == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if at(i) == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some((open, hashes)) =
            raw_string_at(&c, i).filter(|_| i == 0 || !is_ident(c[i - 1]))
        {
            i += open;
            while i < c.len() && !(c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#')) {
                i += 1;
            }
            i += 1 + hashes;
            out.push_str("\"\"");
        } else if at(i) == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if at(i) == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A character literal; a lifetime (`'a`) has no closing quote after one character.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// At a raw string (`r"`, `r#"`, `br##"`...): the length of its opening and its `#` count.
fn raw_string_at(c: &[char], i: usize) -> Option<(usize, usize)> {
    let prefix = match (c.get(i), c.get(i + 1)) {
        (Some('r'), _) => 1,
        (Some('b'), Some('r')) => 2,
        _ => return None,
    };
    let hashes = c[i + prefix..].iter().take_while(|&&ch| ch == '#').count();
    (c.get(i + prefix + hashes) == Some(&'"')).then_some((prefix + hashes + 1, hashes))
}

/// Every `crate::` and `kvs_edge_agent::` path in `code` in order, a braced group split into
/// its items.
fn imports(code: &str) -> Vec<Import> {
    let mut out = Vec::new();
    for root in ["crate::", "kvs_edge_agent::"] {
        for (start, _) in code.match_indices(root) {
            let before = code[..start].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' || before == ':' {
                continue;
            }
            let rest = &code[start + root.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let body = &group[..matching_brace(group)];
                for item in split_top_level(body) {
                    push(&mut out, start, root, item.trim());
                }
            } else {
                let len = rest
                    .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == ':'))
                    .unwrap_or(rest.len());
                let mut path = &rest[..len];
                // `crate::store::{self, Store}`: the group stays with its path.
                if path.ends_with("::") && rest[len..].starts_with('{') {
                    let group = &rest[len + 1..];
                    path = &rest[..len + 1 + matching_brace(group) + 1];
                }
                push(&mut out, start, root, path.trim_end_matches(':'));
            }
        }
    }
    out.sort_by_key(|i| i.at);
    out
}

fn push(out: &mut Vec<Import>, at: usize, root: &str, item: &str) {
    let target: String = item
        .chars()
        .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
        .collect();
    if target.is_empty() || target == "self" {
        return;
    }
    out.push(Import {
        file: PathBuf::new(),
        at,
        path: format!("{root}{item}"),
        target,
    });
}

/// The index of the `}` closing a group whose `{` was just before `s`.
fn matching_brace(s: &str) -> usize {
    let mut depth = 1;
    for (i, ch) in s.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// `a::b, c::{d, e}` into `a::b` and `c::{d, e}`.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, ch) in s.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}
