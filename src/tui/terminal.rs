//! Taking over the terminal and giving it back: raw mode, the alternate
//! screen and a hidden cursor on the way in; the reverse on the way out,
//! whether `top` quits, fails or panics (a panic hook restores the terminal
//! before the panic message is printed, so the message is readable and the
//! shell usable).

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crossterm::cursor::Show;
use crossterm::execute;
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// Set by the panic hook: a panic on another thread (the key reader, a
/// transport task) has restored the terminal, so the event loop must stop
/// drawing and exit.
static PANICKED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

pub fn panicked() -> bool {
    PANICKED.load(Ordering::SeqCst)
}

/// Installs the panic hook, then switches the terminal over.
pub fn enter() -> io::Result<Term> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            restore();
            previous(info);
        }));
    });
    enable_raw_mode()?;
    if let Err(e) = execute!(io::stdout(), EnterAlternateScreen) {
        restore();
        return Err(e);
    }
    let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    term.hide_cursor()?;
    term.clear()?;
    Ok(term)
}

/// Gives the terminal back. Safe to call more than once and from the panic
/// hook: each step is attempted whatever the others did.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
}
