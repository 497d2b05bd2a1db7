//! Finds where a key path stands in the YAML text. The checks that run after
//! deserialization know the key, not the line; this walks the document once
//! more with the YAML parser and stops at the key, so the parser's own mark
//! gives the line and column.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a key path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A key in the config, as `session.max_connections` or
/// `listeners[0].proxy_trusted`; map keys may contain dots (domains).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    pub fn new(keys: &[&str]) -> KeyPath {
        KeyPath(keys.iter().map(|k| Segment::Key(k.to_string())).collect())
    }

    pub fn index(mut self, i: usize) -> KeyPath {
        self.0.push(Segment::Index(i));
        self
    }

    pub fn key(mut self, k: &str) -> KeyPath {
        self.0.push(Segment::Key(k.to_string()));
        self
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Line and column (from 1) of the value at `path`, or of the nearest
/// enclosing key that the text holds when the key itself is absent.
pub fn locate(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    (1..=path.0.len()).rev().find_map(|n| {
        let de = serde_yaml::Deserializer::from_str(text);
        let err = Probe(&path.0[..n]).deserialize(de).err()?;
        if err.to_string().contains(HERE) {
            err.location().map(|l| (l.line(), l.column()))
        } else {
            None
        }
    })
}

const HERE: &str = "popgate-key-found";
const ABSENT: &str = "popgate-key-absent";

struct Probe<'a>(&'a [Segment]);

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0.split_first() {
            None => d.deserialize_any(Found),
            Some((Segment::Key(k), rest)) => d.deserialize_map(InMap(k, rest)),
            Some((Segment::Index(i), rest)) => d.deserialize_seq(InSeq(*i, rest)),
        }
    }
}

/// At the key: fails on the value's first event, which carries its mark.
struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(HERE))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(HERE))
    }
}

struct InMap<'a>(&'a str, &'a [Segment]);

impl<'de> Visitor<'de> for InMap<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == self.0 {
                return map.next_value_seed(Probe(self.1));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom(ABSENT))
    }
}

struct InSeq<'a>(usize, &'a [Segment]);

impl<'de> Visitor<'de> for InSeq<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.0 {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(ABSENT));
            }
        }
        seq.next_element_seed(Probe(self.1))?;
        Err(de::Error::custom(ABSENT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "a: 1\nlist:\n  - x: 1\n  - x: 2\n    y: \"s\"\nmap:\n  d.org:\n    k: v\n";

    #[test]
    fn finds_keys_indices_and_dotted_names() {
        assert_eq!(locate(DOC, &KeyPath::new(&["a"])), Some((1, 4)));
        let y = KeyPath::new(&["list"]).index(1).key("y");
        assert_eq!(locate(DOC, &y), Some((5, 8)));
        assert_eq!(y.to_string(), "list[1].y");
        let k = KeyPath::new(&["map", "d.org", "k"]);
        assert_eq!(locate(DOC, &k), Some((8, 8)));
    }

    #[test]
    fn an_absent_key_points_at_its_parent() {
        let k = KeyPath::new(&["map", "d.org", "missing"]);
        assert_eq!(locate(DOC, &k).map(|l| l.0), Some(8));
        assert_eq!(locate(DOC, &KeyPath::new(&["nothing"])), None);
    }
}
