//! `man/sysmanage-node.1` is generated from the clap definitions
//! (clap_mangen) and the hand-written parts in `man/sysmanage-node.1.in`, so
//! that the page cannot drift from the command line. This test fails when
//! the committed page differs from what would be generated; to regenerate:
//!
//! ```sh
//! UPDATE_MAN=1 cargo test --test tools man_pages
//! ```
//!
//! The template is roff with two marker lines replaced here:
//! `.\" @generated header@` (title, NAME, SYNOPSIS) and
//! `.\" @generated commands@` (COMMANDS, with every option of every command,
//! and OPTIONS).

use clap::CommandFactory;
use clap_mangen::Man;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man/sysmanage-node.1");
const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man/sysmanage-node.1.in");
const HEADER_MARK: &str = ".\\\" @generated header@";
const COMMANDS_MARK: &str = ".\\\" @generated commands@";

fn command() -> clap::Command {
    let mut cmd = sysmanage_node::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `-h` and `-V` are described once, for the program, not per command.
fn without_help_and_version(cmd: &clap::Command) -> clap::Command {
    let mut cmd = cmd.clone();
    for id in ["help", "version"] {
        if cmd.get_arguments().any(|a| a.get_id() == id) {
            cmd = cmd.mut_arg(id, |a| a.hide(true));
        }
    }
    cmd
}

fn render(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    f(&mut out).expect("rendering to memory");
    String::from_utf8(out).expect("roff is UTF-8")
}

/// The string definitions the roff crate puts before every rendering; the
/// page needs them once, at the top.
const PREAMBLE: [&str; 2] = [".ie \\n(.g .ds Aq \\(aq", ".el .ds Aq '"];

/// A section rendered by clap_mangen, without its `.SH` line and preamble.
fn body(section: String) -> String {
    section.lines().filter(|l| !l.starts_with(".SH ") && !PREAMBLE.contains(l)).map(|l| format!("{l}\n")).collect()
}

fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

fn synopsis_line(cmd: &clap::Command) -> String {
    body(render(|w| Man::new(without_help_and_version(cmd)).render_synopsis_section(w)))
}

fn header(cmd: &clap::Command) -> String {
    let version = cmd.get_version().unwrap_or_default();
    let man = Man::new(cmd.clone())
        .title("SYSMANAGE-NODE")
        .section("1")
        .source(format!("sysmanage-node {version}"))
        .manual("User Commands");
    let mut s = format!("{}\n{}\n", PREAMBLE[0], PREAMBLE[1]);
    // An empty date must stay an argument of its own.
    s.push_str(&body(render(|w| man.render_title(w))).replacen(" 1  \"", " 1 \"\" \"", 1));
    s.push_str(".SH NAME\n");
    s.push_str(&body(render(|w| man.render_name_section(w))));
    s.push_str(".SH SYNOPSIS\n");
    for sub in visible(cmd) {
        s.push_str(&synopsis_line(sub));
        s.push_str(".br\n");
    }
    s.push_str(&body(render(|w| man.render_synopsis_section(w))));
    s
}

fn commands(cmd: &clap::Command) -> String {
    let mut s = String::from(".SH COMMANDS\n");
    for sub in visible(cmd) {
        let sub_man = Man::new(without_help_and_version(sub));
        s.push_str(&format!(".SS \"{}\"\n", sub.get_bin_name().unwrap_or(sub.get_name())));
        s.push_str(&synopsis_line(sub));
        s.push_str(".PP\n");
        s.push_str(&body(render(|w| sub_man.render_description_section(w))));
        if without_help_and_version(sub).get_arguments().any(|a| !a.is_hide_set()) {
            s.push_str(&body(render(|w| sub_man.render_options_section(w))));
        }
        if visible(sub).next().is_some() {
            s.push_str(".PP\nActions:\n");
            for action in visible(sub) {
                s.push_str(".TP\n");
                s.push_str(&action_line(action));
                if let Some(about) = action.get_about() {
                    s.push_str(&format!("{}\n", escape(&about.to_string())));
                }
            }
        }
    }
    let top = Man::new(cmd.clone());
    s.push_str(&body(render(|w| top.render_options_section(w))).replacen("", ".SH OPTIONS\n", 1));
    s
}

/// `sysmanage-node ctl drain POOL SERVER`: an action with its arguments
/// (the parent's options are described with the parent).
fn action_line(action: &clap::Command) -> String {
    let mut line = format!("\\fB{}\\fR", escape(action.get_bin_name().unwrap_or(action.get_name())));
    let value = |arg: &clap::Arg| {
        let name = arg.get_value_names().and_then(|v| v.first()).map(|v| v.to_string());
        escape(&name.unwrap_or_else(|| arg.get_id().as_str().to_uppercase()))
    };
    for arg in action.get_arguments().filter(|a| !a.is_positional() && !a.is_global_set() && !a.is_hide_set()) {
        let Some(long) = arg.get_long().filter(|l| !["help", "version"].contains(l)) else { continue };
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let value = if takes_value { format!(" \\fI{}\\fR", value(arg)) } else { String::new() };
        line.push_str(&format!(" [\\fB\\-\\-{}\\fR{value}]", escape(long)));
    }
    for arg in action.get_positionals() {
        line.push_str(&format!(" \\fI{}\\fR", value(arg)));
    }
    line.push('\n');
    line
}

/// Plain text for a roff text line (as clap_mangen does for its text).
fn escape(text: &str) -> String {
    let t = text.replace('\\', "\\\\").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

fn generate() -> String {
    let cmd = command();
    let template = std::fs::read_to_string(TEMPLATE).expect("man/sysmanage-node.1.in");
    assert!(template.contains(HEADER_MARK) && template.contains(COMMANDS_MARK), "template markers missing");
    let mut out = String::new();
    for line in template.lines() {
        match line {
            HEADER_MARK => out.push_str(&header(&cmd)),
            COMMANDS_MARK => out.push_str(&commands(&cmd)),
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[test]
fn man_page_matches_the_command_line() {
    let generated = generate();
    if std::env::var_os("UPDATE_MAN").is_some() {
        std::fs::write(PAGE, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(PAGE).unwrap_or_default();
    if committed != generated {
        let first = committed.lines().zip(generated.lines()).position(|(a, b)| a != b);
        let line = first.unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "man/sysmanage-node.1 is out of date (first difference at line {}):\n  committed: {:?}\n  generated: {:?}\n\
             regenerate it with: UPDATE_MAN=1 cargo test --test tools man_pages",
            line + 1,
            committed.lines().nth(line).unwrap_or("<end>"),
            generated.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

#[test]
fn man_page_documents_every_command_and_option() {
    let page = generate();
    let cmd = command();
    for sub in visible(&cmd) {
        assert!(page.contains(&format!(".SS \"sysmanage-node {}\"", sub.get_name())), "{}", sub.get_name());
        let actions: Vec<&clap::Command> = visible(sub).collect();
        for c in std::iter::once(sub).chain(actions) {
            let documented = |a: &&clap::Arg| !a.is_hide_set() && !["help", "version"].contains(&a.get_id().as_str());
            for long in c.get_arguments().filter(documented).filter_map(|a| a.get_long()) {
                let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(page.contains(&escaped), "--{long} of {}", c.get_name());
            }
        }
    }
    for section in ["EXIT STATUS", "SIGNALS", "FILES"] {
        assert!(page.contains(&format!(".SH {section}")), "hand-written section {section} kept");
    }
}
