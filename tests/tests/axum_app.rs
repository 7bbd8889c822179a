//! The README's axum program: the same text as `examples/axum_app.rs`, and that example,
//! started as a child process, serves, accepts a delivery and logs one line for it. And the
//! workspace's markdown: the README's CLI block is the CLI crate's, and every Rust snippet in
//! a markdown file is a doctest that compiles as pasted with the dependencies the file names.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use polytomic_webhook::testing::Delivery;
use support::*;

const README: &str = include_str!("../../README.md");
const PROGRAM: &str = include_str!("../../examples/axum_app.rs");

/// The fenced block of `README` that follows `opening` (e.g. "```rust,no_run\n").
fn readme_block(section: &str, opening: &str) -> &'static str {
    let section = README
        .split_once(section)
        .unwrap_or_else(|| panic!("no {section:?} in the README"))
        .1;
    section
        .split_once(opening)
        .unwrap_or_else(|| panic!("no {opening:?} block after {section:?}"))
        .1
        .split_once("```\n")
        .unwrap()
        .0
}

#[test]
fn the_readmes_axum_program_is_the_example_file() {
    let block = readme_block("## Use it with axum", "```rust,no_run\n");
    assert_eq!(
        block, PROGRAM,
        "the README's axum program and examples/axum_app.rs differ: copy one to the other"
    );
}

/// The dependencies the README lists are the ones the program uses, with the features it needs.
#[test]
fn the_readmes_dependency_block_fits_the_program() {
    let block = readme_block("## Use it with axum", "```toml\n");
    let repository = include_str!("../../Cargo.toml")
        .lines()
        .find_map(|line| line.strip_prefix("repository = "))
        .unwrap();
    for line in [
        &format!("polytomic-webhook = {{ git = {repository} }}")[..],
        "# or, from a checkout: polytomic-webhook = { path = ",
        "axum = \"0.8\"",
        "tokio = { version = \"1\", features = [\"macros\", \"rt-multi-thread\", \"net\"] }",
        "tracing-subscriber = \"0.3\"",
    ] {
        assert!(block.contains(line), "{line} missing from {block}");
    }
    for used in [
        "axum::",
        "tokio::",
        "tracing_subscriber::",
        "polytomic_webhook::",
    ] {
        assert!(PROGRAM.contains(used), "{used}");
    }
}

/// The first fenced block of `text` that follows `section` and opens with `opening`.
fn block_after<'a>(text: &'a str, section: &str, opening: &str) -> &'a str {
    let rest = text
        .split_once(section)
        .unwrap_or_else(|| panic!("no {section:?}"))
        .1;
    let rest = rest.split_once(opening).unwrap().1;
    rest.split_once("```\n").unwrap().0
}

/// The README's try-it block is the CLI crate's, which that crate's test runs command by command.
#[test]
fn the_readmes_cli_block_is_the_cli_readmes() {
    let cli = include_str!("../../crates/polytomic-webhook-cli/README.md");
    let ours = block_after(README, "### Try it without writing code", "```sh\n");
    let theirs = block_after(cli, "## Try it without writing code", "```sh\n");
    assert_eq!(
        ours, theirs,
        "the README's CLI block and crates/polytomic-webhook-cli/README.md's differ: copy one to the other"
    );
    assert!(ours.contains("cargo install --locked "), "{ours}");
}

/// The workspace's markdown files, outside build output and hidden directories.
fn markdown_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" || name == "corpus" {
            continue;
        }
        if path.is_dir() {
            markdown_files(&path, found);
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// `(info string, text)` of each fenced block of `markdown`.
fn fenced_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.push(open.take().unwrap()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The crates a snippet names: each `name::` that starts a path, less the standard library's
/// and the modules the snippet imports itself.
fn crates_named(snippet: &str) -> std::collections::BTreeSet<String> {
    let imported: Vec<&str> = snippet
        .lines()
        .filter_map(|line| line.trim().strip_prefix("use "))
        .flat_map(|path| path.split(|c: char| !c.is_alphanumeric() && c != '_'))
        .collect();
    let mut named = std::collections::BTreeSet::new();
    for (start, _) in snippet.match_indices("::") {
        let before = &snippet[..start];
        let name_start = before
            .rfind(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(0, |i| i + 1);
        let name = &before[name_start..];
        // `a::b` (b is no crate), `.collect::<..>`, `f::<T>()` (turbofish, not a path).
        let after_path = before[..name_start].ends_with([':', '.']);
        let turbofish = snippet[start + 2..].starts_with('<');
        if name.is_empty()
            || after_path
            || turbofish
            || !name.starts_with(|c: char| c.is_ascii_lowercase())
            || ["std", "core", "alloc", "crate", "self", "super"].contains(&name)
        {
            continue;
        }
        let is_use_root = snippet
            .lines()
            .any(|line| line.trim().starts_with(&format!("use {name}::")));
        if is_use_root || !imported.contains(&name) {
            named.insert(name.to_owned());
        }
    }
    named
}

/// Every file a library's `#[doc = include_str!(..)]` compiles as doctests, canonicalised.
fn doctested_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut libs: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("src/lib.rs"))
        .collect();
    libs.push(root.join("examples/src/lib.rs"));
    let mut files = Vec::new();
    for lib in libs.into_iter().filter(|lib| lib.exists()) {
        let source = std::fs::read_to_string(&lib).unwrap();
        for line in source.lines().map(str::trim) {
            let Some(rest) = line
                .strip_prefix("#[doc = include_str!(\"")
                .or_else(|| line.strip_prefix("#![doc = include_str!(\""))
            else {
                continue;
            };
            let relative = rest.split_once('"').unwrap().0;
            let path = lib.parent().unwrap().join(relative);
            files.push(path.canonicalize().unwrap_or(path));
        }
    }
    files
}

/// Every Rust snippet of every markdown file is compiled by a doctest (its file is included by
/// a library's `#[doc = include_str!(..)]`), shows no hidden `#` line that GitHub would print
/// and a reader would need, is not `ignore`d, and uses only crates that a `toml` block of the
/// same file lists: so each compiles as pasted into a new project with that block.
#[test]
fn every_markdown_snippet_is_doctested_and_pastable() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let mut files = Vec::new();
    markdown_files(root, &mut files);
    let doctested = doctested_files(root);
    let mut snippets = 0;
    for file in files {
        let markdown = std::fs::read_to_string(&file).unwrap();
        let blocks = fenced_blocks(&markdown);
        let dependencies: String = blocks
            .iter()
            .filter(|(info, _)| info == "toml")
            .map(|(_, text)| text.as_str())
            .collect();
        for (info, snippet) in blocks.iter().filter(|(info, _)| info.starts_with("rust")) {
            snippets += 1;
            let shown = file.strip_prefix(root).unwrap().display();
            assert!(
                doctested.contains(&file.canonicalize().unwrap()),
                "{shown}: no library includes it as doctests"
            );
            assert!(!info.contains("ignore"), "{shown}: an ignored snippet");
            for line in snippet.lines() {
                assert!(
                    line != "#" && !line.starts_with("# "),
                    "{shown}: hidden line {line:?}"
                );
            }
            for name in crates_named(snippet) {
                let dashed = name.replace('_', "-");
                assert!(
                    dependencies
                        .lines()
                        .any(|line| line.starts_with(&format!("{dashed} ="))
                            || line.starts_with(&format!("{name} ="))),
                    "{shown}: a snippet uses {name}, which no toml block of the file lists"
                );
            }
        }
    }
    // The README, the facade's README and guides, the store's README at least.
    assert!(snippets >= 6, "only {snippets} snippets found");
}

/// Kills the child if the test fails before it is stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_readmes_axum_program_serves_accepts_and_logs_one_line() {
    let mut child = Running(
        Command::new(example_binary("axum_app"))
            .env("POLYTOMIC_WEBHOOK_SECRET", SECRET)
            .env("POLYTOMIC_WEBHOOK_ADDR", "127.0.0.1:0")
            // Plain text: colour codes would split the fields this test looks for.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.strip_suffix(examples::WEBHOOK_PATH))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();

    let delivery = Delivery::new()
        .secret(SECRET)
        .record_json(serde_json::json!({"email": "ada@example.com"}));
    send(addr, encoded(addr, delivery.encode()))
        .await
        .assert_accepted(1);
    // Only the webhook route is behind `route_layer`: another path is axum's 404, unchecked.
    let elsewhere = http::Request::post(format!("http://{addr}/elsewhere"))
        .body(full(""))
        .unwrap();
    assert_eq!(
        send(addr, elsewhere).await.status,
        http::StatusCode::NOT_FOUND
    );

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut logs = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 1, "{logs}");
    for part in [
        " INFO polytomic_webhook.delivery{method=POST path=/webhooks/polytomic ",
        "record_count=1 ",
        "status=200 outcome=\"accepted\"}",
        ": webhook delivery accepted",
    ] {
        assert!(lines[0].contains(part), "{part} missing from {logs}");
    }
    assert!(!logs.contains("ada@example.com"), "{logs}");
}
