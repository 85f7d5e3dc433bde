//! Every config key the parser accepts is in `config::KEYS`, is described in
//! the config reference (`man/sysmanage-node.toml.5`) and appears, usable, in
//! the commented `node.toml` that `init` writes.
//!
//! The accepted keys are not read from `KEYS` alone: a recording serde
//! deserializer walks `RawConfig` and collects the field names serde itself
//! would accept, so a field added to `config/raw.rs` without documentation
//! fails here.

use std::collections::BTreeSet;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use sysmanage_node::config::raw::RawConfig;
use sysmanage_node::config::KEYS;

/// Answers every request with a plausible value and records the fields of
/// every struct it is asked for, under the current key path.
struct Recorder<'a> {
    path: String,
    keys: &'a std::cell::RefCell<BTreeSet<String>>,
}

#[derive(Debug)]
struct Error(String);
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Error {}
impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // Untagged enums (`expect_status`) land here: a number fits them all.
        v.visit_i64(0)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bool(false)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_i64(0)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("")
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_str("")
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_seq(OneElement { recorder: Some(self) })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_map(Fields { parent: self.path, keys: self.keys, fields, next: 0 })
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct map enum identifier ignored_any
    }
}

struct OneElement<'a> {
    recorder: Option<Recorder<'a>>,
}

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        self.recorder.take().map(|r| seed.deserialize(r)).transpose()
    }
}

struct Fields<'a> {
    parent: String,
    keys: &'a std::cell::RefCell<BTreeSet<String>>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.get(self.next) else { return Ok(None) };
        seed.deserialize(field.into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let field = self.fields[self.next];
        self.next += 1;
        let path = if self.parent.is_empty() { field.to_string() } else { format!("{}.{field}", self.parent) };
        self.keys.borrow_mut().insert(path.clone());
        seed.deserialize(Recorder { path, keys: self.keys })
    }
}

/// The keys serde accepts for `RawConfig`.
fn accepted_keys() -> BTreeSet<String> {
    let keys = std::cell::RefCell::new(BTreeSet::new());
    let recorder = Recorder { path: String::new(), keys: &keys };
    <RawConfig as serde::Deserialize>::deserialize(recorder).expect("the recorder satisfies every field");
    keys.into_inner()
}

#[test]
fn keys_list_matches_what_the_parser_accepts() {
    let accepted = accepted_keys();
    let listed: BTreeSet<String> = KEYS.iter().map(|k| k.path.to_string()).collect();
    assert_eq!(listed.len(), KEYS.len(), "config::KEYS has duplicates");
    let missing: Vec<_> = accepted.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&accepted).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "src/config/keys.rs is out of date: accepted by the parser but not listed: {missing:?}; \
         listed but not accepted: {extra:?}"
    );
    // The recorder really walks nested tables (a sanity check of the test).
    assert!(accepted.contains("pools.checks.type"));
    assert!(accepted.contains("listeners.tls.certificates.names"));
}

/// The `.SH` section of the man page for a top-level key, e.g. `[[pools]]`.
fn man_section<'a>(man: &'a str, top: &str) -> Option<&'a str> {
    let heads = [format!(".SH [{top}]"), format!(".SH [[{top}]]")];
    let start = heads.iter().filter_map(|h| man.find(&format!("{h}\n"))).next()?;
    let body = &man[start + 1..];
    let end = body.find("\n.SH ").map(|i| i + 1).unwrap_or(body.len());
    Some(&body[..end])
}

/// Whether `section` has a tagged paragraph or bold word naming `leaf`
/// (`.B leaf`, `.BR leaf ...`, or a dotted form such as `.BR tls.cert`).
fn documents(section: &str, leaf: &str) -> bool {
    section.lines().any(|line| {
        let Some(rest) = line.strip_prefix(".BR ").or_else(|| line.strip_prefix(".B ")) else { return false };
        let word = rest.split_whitespace().next().unwrap_or("").trim_matches('"');
        let word = word.replace("\\-", "-");
        word == leaf
            || word.ends_with(&format!(".{leaf}"))
            || word.ends_with(&format!("]{leaf}"))
            || word.starts_with(&format!("{leaf}="))
    })
}

#[test]
fn every_key_is_in_the_config_man_page() {
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/sysmanage-node.toml.5")).unwrap();
    let mut undocumented = Vec::new();
    for key in accepted_keys() {
        let mut parts = key.split('.');
        let top = parts.next().unwrap();
        let Some(section) = man_section(&man, top) else {
            undocumented.push(format!("{key} (no section .SH [{top}] or [[{top}]])"));
            continue;
        };
        if let Some(leaf) = key.rsplit('.').next().filter(|_| key.contains('.')) {
            if !documents(section, leaf) {
                undocumented.push(key);
            }
        }
    }
    assert!(undocumented.is_empty(), "keys missing from man/sysmanage-node.toml.5: {undocumented:?}");
}

/// The `node.toml` that `init` writes with every `#key = ...` line and
/// `#[table]` header uncommented: the optional keys shown commented out.
fn init_config_uncommented() -> String {
    let text = sysmanage_node::init::render_config(&sysmanage_node::init::Layout::in_dir("/etc/x".as_ref()), "lb1");
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Dotted key paths of a TOML value (arrays of tables without index).
fn toml_keys(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.insert(path.clone());
                toml_keys(&path, v, out);
            }
        }
        toml::Value::Array(items) => {
            for item in items.iter().filter(|i| i.is_table()) {
                toml_keys(prefix, item, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_key_is_in_the_config_init_writes() {
    let text = init_config_uncommented();
    let value: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    // Uncommented, it is still something the parser accepts key by key.
    let _: RawConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    let mut present = BTreeSet::new();
    toml_keys("", &value, &mut present);
    let missing: Vec<_> = accepted_keys().into_iter().filter(|k| !present.contains(k)).collect();
    assert!(missing.is_empty(), "keys missing from assets/init.toml (as a line or a #commented line): {missing:?}");
}
