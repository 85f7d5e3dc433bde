//! The README is one screen that gets a newcomer started: its first screen
//! (80×24 in a terminal pager) holds the two commands and the package
//! install, its sample configuration is one the node accepts, and its links
//! lead to files that exist.

use std::path::Path;

const README: &str = include_str!("../../README.md");

/// The lines a terminal of `width` columns shows in its first `rows` rows:
/// long lines wrap and take several rows.
fn first_screen(text: &str, width: usize, rows: usize) -> String {
    let mut used = 0;
    let mut shown = String::new();
    for line in text.lines() {
        let needs = line.chars().count().div_ceil(width).max(1);
        if used + needs > rows {
            // A wrapped line that starts on the screen shows its beginning.
            let room = (rows - used) * width;
            shown.extend(line.chars().take(room));
            break;
        }
        used += needs;
        shown.push_str(line);
        shown.push('\n');
    }
    shown
}

#[test]
fn the_first_screen_has_the_commands_and_the_install() {
    let screen = first_screen(README, 80, 24);
    for wanted in ["cargo run --release -- demo", "cargo test", "dpkg -i target/debian/", "rpm -i target/generate-rpm/"]
    {
        assert!(screen.contains(wanted), "README's first 80x24 screen lacks {wanted:?}:\n{screen}");
    }
    // The two set-up commands come first, together, as the only commands
    // of the first code block.
    let block = README.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).unwrap_or_default();
    assert_eq!(block, "cargo run --release -- demo\ncargo test\n", "the README's first commands");
}

#[test]
fn first_screen_counts_wrapped_lines() {
    let long = "x".repeat(81);
    let text = format!("{long}\na\nb\n");
    assert_eq!(first_screen(&text, 80, 3), format!("{long}\na\n"));
    assert_eq!(first_screen(&text, 80, 1), "x".repeat(80));
}

#[test]
fn the_sample_configuration_is_accepted() {
    let toml =
        README.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("README has a ```toml block");
    let lines = toml.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 14, "the README's configuration stays short ({lines} lines)");
    let config = sysmanage_node::config::parse_str(toml, "README.md", Path::new("."))
        .unwrap_or_else(|e| panic!("README's configuration is refused: {e}\n{toml}"));
    let summary = config.summary();
    assert!(summary.contains("sysmanage"), "{summary}");
}

#[test]
fn readme_links_lead_to_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for target in README.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
        if target.starts_with("http://") || target.starts_with("https://") {
            continue;
        }
        let file = target.split('#').next().unwrap_or_default();
        if !file.is_empty() && !root.join(file).exists() {
            broken.push(target.to_string());
        }
    }
    assert!(broken.is_empty(), "README links to missing files: {broken:?}");
}
