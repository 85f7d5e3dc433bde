//! Key presses → state changes and [`Effect`]s. Pure like the rest of
//! [`App`]: the event loop carries out what this returns.
//!
//! Normal mode: 1–5 or Tab/←/→ change pane, ↑/↓ or k/j select (Backends) or
//! scroll (Events), d/m/e/w act on the selected server, r reloads, / filters
//! (on Sessions: searches a key), ? shows help, q quits, Ctrl-C quits from
//! anywhere. State-changing actions go through [`Input::Confirm`] first.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{Action, App, Effect, FlashKind, Input, Lookup, Pane};

/// Longest text accepted in the filter and search boxes.
const MAX_INPUT: usize = 256;

impl App {
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Effect> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Effect::Quit);
        }
        // A key press acknowledges the footer message.
        if self.input == Input::Normal {
            self.flash = None;
        }
        match std::mem::replace(&mut self.input, Input::Normal) {
            Input::Normal => self.normal_key(key),
            Input::Help => None,
            Input::Filter => {
                self.filter_key(key);
                None
            }
            Input::Search(text) => self.search_key(key, text),
            Input::Weight { target, text } => {
                match key.code {
                    KeyCode::Esc => self.flash(FlashKind::Info, "weight unchanged".into()),
                    KeyCode::Enter => match text.parse::<u32>() {
                        Ok(w) => self.input = Input::Confirm(Action::Weight(target, w)),
                        Err(_) => self.flash(FlashKind::Error, format!("\"{text}\" is not a weight: type a number")),
                    },
                    KeyCode::Backspace => {
                        let mut text = text;
                        text.pop();
                        self.input = Input::Weight { target, text };
                    }
                    KeyCode::Char(c) if c.is_ascii_digit() && text.len() < 6 => {
                        self.input = Input::Weight { target, text: format!("{text}{c}") };
                    }
                    _ => self.input = Input::Weight { target, text },
                }
                None
            }
            Input::Confirm(action) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    self.flash(FlashKind::Info, format!("{}: sent, waiting for the node…", action.describe()));
                    self.action_in_flight = Some(action.clone());
                    Some(Effect::Act(action))
                }
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => {
                    self.flash(FlashKind::Info, format!("{}: cancelled", action.describe()));
                    None
                }
                _ => {
                    self.input = Input::Confirm(action);
                    None
                }
            },
        }
    }

    fn normal_key(&mut self, key: KeyEvent) -> Option<Effect> {
        match key.code {
            KeyCode::Char('q') => return Some(Effect::Quit),
            KeyCode::Char(c @ '1'..='5') => return self.show(Pane::ALL[c as usize - '1' as usize]),
            KeyCode::Tab | KeyCode::Right => return self.show(Pane::ALL[(self.pane.index() + 1) % 5]),
            KeyCode::BackTab | KeyCode::Left => return self.show(Pane::ALL[(self.pane.index() + 4) % 5]),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(i64::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(i64::MAX / 2),
            KeyCode::Char('?') => self.input = Input::Help,
            KeyCode::Char('/') if self.pane == Pane::Sessions => self.input = Input::Search(String::new()),
            KeyCode::Char('/') => self.input = Input::Filter,
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.fix_selection();
            }
            KeyCode::Char('r') => self.ask(Action::Reload),
            KeyCode::Char(c @ ('d' | 'm' | 'e' | 'w')) => self.server_action(c),
            _ => {}
        }
        None
    }

    fn show(&mut self, pane: Pane) -> Option<Effect> {
        let changed = self.pane != pane;
        self.pane = pane;
        (changed && self.wants_sessions()).then_some(Effect::Refresh)
    }

    fn move_selection(&mut self, by: i64) {
        match self.pane {
            Pane::Backends => {
                let rows = self.backend_rows();
                if rows.is_empty() {
                    return;
                }
                let at = self.selected_index(&rows).unwrap_or(0) as i64;
                let to = (at + by).clamp(0, rows.len() as i64 - 1) as usize;
                self.selected = Some(self.server_ref(rows[to].0, rows[to].1));
            }
            Pane::Events => {
                let last = self.event_rows().len().saturating_sub(1) as i64;
                self.events_offset = (self.events_offset as i64 + by).clamp(0, last) as usize;
            }
            _ => {}
        }
    }

    /// Asks for confirmation, or says why the action is unavailable.
    fn ask(&mut self, action: Action) {
        match self.writes_unavailable() {
            Some(why) => self.flash(FlashKind::Error, why),
            None => self.input = Input::Confirm(action),
        }
    }

    fn server_action(&mut self, key: char) {
        if self.pane != Pane::Backends {
            self.flash(FlashKind::Info, "select a server on the Backends pane (2) first".into());
            return;
        }
        if let Some(why) = self.writes_unavailable() {
            self.flash(FlashKind::Error, why);
            return;
        }
        let Some(target) = self.selected.clone() else {
            self.flash(FlashKind::Info, "no server selected".into());
            return;
        };
        match key {
            'd' => self.ask(Action::Drain(target)),
            'm' => self.ask(Action::Maintenance(target)),
            'e' => self.ask(Action::Enable(target)),
            _ => self.input = Input::Weight { target, text: String::new() },
        }
    }

    fn filter_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Enter => {}
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Backspace => {
                self.filter.pop();
                self.input = Input::Filter;
            }
            KeyCode::Char(c) if self.filter.len() < MAX_INPUT => {
                self.filter.push(c);
                self.input = Input::Filter;
            }
            _ => self.input = Input::Filter,
        }
        self.events_offset = 0;
        self.fix_selection();
    }

    fn search_key(&mut self, key: KeyEvent, mut text: String) -> Option<Effect> {
        match key.code {
            KeyCode::Esc => None,
            KeyCode::Enter if text.trim().is_empty() => {
                self.lookup = Lookup::None;
                None
            }
            KeyCode::Enter => {
                let key = text.trim().to_string();
                self.lookup = Lookup::Pending(key.clone());
                Some(Effect::Lookup(key))
            }
            KeyCode::Backspace => {
                text.pop();
                self.input = Input::Search(text);
                None
            }
            KeyCode::Char(c) if text.len() < MAX_INPUT => {
                text.push(c);
                self.input = Input::Search(text);
                None
            }
            _ => {
                self.input = Input::Search(text);
                None
            }
        }
    }
}
