//! The documentation against the repository: every module under `src/`
//! says what it owns and is in the module map of `docs/architecture.md`,
//! and every relative link of the Markdown documents (and its `#anchor`)
//! resolves inside the repository. The config keys and the metric names are
//! checked against the code by unit tests (`src/config/doc_coverage.rs`,
//! `src/metrics.rs`), which see the schema and the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, relative to it, with `/` separators.
fn rust_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().expect("name").to_string_lossy().to_string();
        if p.is_dir() {
            rust_files(&p, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".rs") {
            out.push(format!("{prefix}{name}"));
        }
    }
}

fn src_modules() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), "", &mut files);
    assert!(files.len() > 50, "src/ has only {} files", files.len());
    files
}

#[test]
fn every_module_says_what_it_owns() {
    let missing: Vec<String> = src_modules()
        .into_iter()
        .filter(|f| {
            let text = read(&root().join("src").join(f));
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these modules have no `//!` doc comment at the top saying what they own: {missing:?}"
    );
}

#[test]
fn the_module_map_names_every_module() {
    let doc = read(&root().join("docs/architecture.md"));
    let mapped: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let files: BTreeSet<String> = src_modules().into_iter().collect();
    let unmapped: Vec<&String> = files.difference(&mapped).collect();
    let gone: Vec<&String> = mapped
        .iter()
        .filter(|m| m.ends_with(".rs") && !files.contains(*m))
        .collect();
    assert!(
        unmapped.is_empty() && gone.is_empty(),
        "docs/architecture.md's module map is out of step with src/:\n  not in the map: \
         {unmapped:?}\n  in the map but not in src/: {gone:?}"
    );
}

/// The Markdown documents a reader of the repository follows.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"]
        .iter()
        .map(|f| root().join(f))
        .collect();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    docs.extend(pages);
    docs
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (but
/// `-` and `_`), spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown text's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            out.insert(slug(&line[hashes..]));
        }
    }
    out
}

/// The targets of inline links `[text](target)` outside code blocks and
/// code spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans hold examples, not links.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// `path` with `.` and `..` resolved lexically; `None` if it climbs above
/// its start.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            _ => return None,
        }
    }
    Some(out)
}

#[test]
fn links_resolve_inside_the_repository() {
    let root = root();
    let mut texts = BTreeMap::new();
    for d in documents() {
        texts.insert(d.clone(), read(&d));
    }
    let mut broken = Vec::new();
    for (doc, text) in &texts {
        let rel_doc = doc.strip_prefix(&root).expect("under the root");
        let dir = rel_doc.parent().unwrap_or(Path::new(""));
        for target in links(text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                Some(rel_doc.to_path_buf())
            } else {
                lexical(&dir.join(file))
            };
            let Some(resolved) = resolved else {
                broken.push(format!(
                    "{}: {target} points outside the repository",
                    rel_doc.display()
                ));
                continue;
            };
            let full = root.join(&resolved);
            if !full.exists() {
                broken.push(format!("{}: {target}: no such file", rel_doc.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let heads = match texts.get(&full) {
                    Some(t) => anchors(t),
                    None if full.extension().is_some_and(|e| e == "md") => anchors(&read(&full)),
                    None => continue,
                };
                if !heads.contains(anchor) {
                    broken.push(format!(
                        "{}: {target}: no heading with that anchor",
                        rel_doc.display()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_link_checker_sees_links_and_anchors() {
    let text = "# Top `x` level\n\n```sh\n# not a heading [a](b)\n```\n\
                See [one](a.md#b-c) and `[code](d)`, [two](#top-x-level).\n## `listen`\n";
    assert_eq!(links(text), ["a.md#b-c", "#top-x-level"]);
    let heads = anchors(text);
    assert!(
        heads.contains("top-x-level") && heads.contains("listen"),
        "{heads:?}"
    );
    assert_eq!(
        slug("/health unhealthy: a route"),
        "health-unhealthy-a-route"
    );
    assert_eq!(lexical(Path::new("docs/../x")), Some(PathBuf::from("x")));
    assert_eq!(lexical(Path::new("../x")), None);
}
