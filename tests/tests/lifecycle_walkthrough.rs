//! `docs/lifecycle.md` walks a SIGTERM through the code, file by file. This keeps the
//! walk true: every function a step names (written `name()` or `Type::name()`) is
//! defined in that step's file, and the path crosses no more than four files.

use std::path::{Path, PathBuf};

/// The workspace's root (this crate is `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The numbered steps of the section: (file, the step's text).
fn steps(doc: &str) -> Vec<(String, String)> {
    let section = doc
        .split("## How a SIGTERM travels")
        .nth(1)
        .expect("docs/lifecycle.md has the walk-through")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let mut steps: Vec<(String, String)> = Vec::new();
    for line in section.lines() {
        let numbered = line
            .split_once(". **`")
            .filter(|(number, _)| !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()));
        if let Some((_, rest)) = numbered {
            let (file, text) = rest.split_once('`').unwrap_or((rest, ""));
            steps.push((file.to_string(), text.to_string()));
        } else if let Some((_, text)) = steps.last_mut() {
            text.push(' ');
            text.push_str(line.trim());
        }
    }
    steps
}

/// The functions a step names: backquoted `name()` or `Type::name()`.
fn functions(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| quoted.strip_suffix("()"))
        .map(|path| path.rsplit("::").next().unwrap_or(path).to_string())
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect()
}

/// Whether `source` defines a function `name` (free, or a method of any impl).
fn defines(source: &str, name: &str) -> bool {
    source.lines().any(|line| {
        let line = line.trim_start();
        [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) async fn ",
        ]
        .iter()
        .any(|prefix| {
            line.strip_prefix(prefix).is_some_and(|rest| {
                rest.strip_prefix(name)
                    .is_some_and(|after| after.starts_with('(') || after.starts_with('<'))
            })
        })
    })
}

#[test]
fn the_sigterm_walkthrough_names_four_files_and_the_functions_they_define() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/lifecycle.md")).expect("docs/lifecycle.md");
    let steps = steps(&doc);
    assert!(!steps.is_empty(), "the walk-through has numbered steps");
    assert!(steps.len() <= 4, "at most four files on the path: {steps:?}");
    let mut named = 0;
    for (file, text) in &steps {
        let source = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|error| panic!("{file}, named by the walk-through: {error}"));
        let names = functions(text);
        assert!(!names.is_empty(), "the step of {file} names its functions");
        for name in names {
            assert!(
                defines(&source, &name),
                "`{name}()` is defined in {file}, as the walk-through says"
            );
            named += 1;
        }
    }
    assert!(
        named >= 15,
        "the walk-through names the path's functions ({named})"
    );
}

#[test]
fn the_walkthrough_reader_finds_a_misplaced_function() {
    // The checker itself: a function named under the wrong file is caught.
    let source = "impl Drain for ServerDrain {\n    fn start_draining(&mut self) {}\n}\n";
    assert!(defines(source, "start_draining"));
    assert!(!defines(source, "drive"));
    assert_eq!(
        functions("`drive()` polls, `ServerDrain::close()`, `Drain::close`, `phase.rs`"),
        ["drive", "close"]
    );
}
