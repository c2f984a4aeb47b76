//! `docs/ARCHITECTURE.md` names our functions as `name()` or `Type::name()`; each must exist,
//! so the walk-through cannot drift from the code unnoticed.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
}

/// Every `name()` / `Type::name()` in backticks.
fn named_functions(doc: &str) -> Vec<String> {
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.ends_with("()"))
        .map(|s| s.trim_end_matches("()").to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "_:".contains(c)))
        .collect()
}

#[test]
fn every_function_the_architecture_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let names = named_functions(&doc);
    assert!(names.len() > 20, "found only {names:?}");
    let mut missing = Vec::new();
    for name in names {
        let (owner, func) = match name.rsplit_once("::") {
            Some((owner, func)) => (Some(owner.rsplit("::").next().unwrap()), func),
            None => (None, name.as_str()),
        };
        let needle = format!("fn {func}(");
        let needle_generic = format!("fn {func}<");
        let found = files.iter().any(|(_, text)| {
            (text.contains(&needle) || text.contains(&needle_generic))
                && owner.is_none_or(|o| {
                    text.contains(&format!("impl {o}"))
                        || text.contains(&format!("for {o}"))
                        || text.contains(&format!("impl<'a> {o}"))
                        || text.contains(&format!("impl {o}<"))
                        || text.contains(&format!("for {o}<"))
                })
        });
        if !found {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "named in docs/ARCHITECTURE.md but not in src/: {missing:?}"
    );
}
