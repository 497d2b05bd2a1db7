//! Values written as strings and parsed with `FromStr`. The parsing happens
//! inside the YAML deserializer, so an error carries the key and the line.

use serde::de::{Deserializer, Error, Visitor};
use std::fmt::Display;
use std::marker::PhantomData;
use std::str::FromStr;

pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    struct V<T>(PhantomData<T>);
    impl<T: FromStr> Visitor<'_> for V<T>
    where
        T::Err: Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<T, E> {
            s.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(V(PhantomData))
}

/// A list of such values; an error names the item.
pub fn deserialize_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: FromStr> Visitor<'de> for V<T>
    where
        T::Err: Display,
    {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(
                    s.parse()
                        .map_err(|e| A::Error::custom(format!("{s:?}: {e}")))?,
                );
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(PhantomData))
}
