//! UIDL strings from a template in Dovecot's `pop3_uidl_format` syntax, so
//! that users who moved from Dovecot's own POP3 keep their UIDLs.
//!
//! Supported: `%u` (IMAP UID), `%v` (UIDVALIDITY), `%%`; a zero-padded width
//! (`%08u`); the hex modifier `X` (Dovecot prints lower-case digits); the case
//! modifiers `L` and `U`, which change nothing for numbers.

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var { var: Var, hex: bool, width: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Uid,
    UidValidity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidlTemplate {
    source: String,
    parts: Vec<Part>,
}

pub const DEFAULT_UIDL_FORMAT: &str = "%08Xu%08Xv";

impl Default for UidlTemplate {
    fn default() -> Self {
        DEFAULT_UIDL_FORMAT
            .parse()
            .expect("the default template is valid")
    }
}

impl std::fmt::Display for UidlTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

use serde::Deserialize;

impl<'de> Deserialize<'de> for UidlTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed inside the visitor, so that a YAML error carries the line.
        struct Template;
        impl serde::de::Visitor<'_> for Template {
            type Value = UidlTemplate;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a UIDL template")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<UidlTemplate, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Template)
    }
}

impl std::str::FromStr for UidlTemplate {
    type Err = String;

    fn from_str(source: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                if !('\x21'..='\x7e').contains(&c) {
                    return Err(format!(
                        "{c:?} cannot appear in a UIDL (RFC 1939 allows 0x21 to 0x7E)"
                    ));
                }
                text.push(c);
                continue;
            }
            if chars.peek() == Some(&'%') {
                chars.next();
                text.push('%');
                continue;
            }
            let mut digits = String::new();
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                digits.push(d);
            }
            if !digits.is_empty() && !digits.starts_with('0') {
                return Err(format!(
                    "width %{digits} truncates values and can make UIDLs collide; \
                     use a zero-padded width such as %0{digits}"
                ));
            }
            let width: usize = if digits.is_empty() {
                0
            } else {
                digits.parse().map_err(|_| "width too large".to_string())?
            };
            let mut hex = false;
            let var = loop {
                match chars.next() {
                    Some('X') => hex = true,
                    Some('L' | 'U') => {}
                    Some('u') => break Var::Uid,
                    Some('v') => break Var::UidValidity,
                    Some(other) => {
                        return Err(format!(
                            "%{other} is not supported: popgate knows %u (UID) and %v (UIDVALIDITY)"
                        ))
                    }
                    None => return Err("template ends inside a %-variable".into()),
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Var { var, hex, width });
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let t = UidlTemplate {
            source: source.to_string(),
            parts,
        };
        t.check()?;
        Ok(t)
    }
}

impl UidlTemplate {
    /// Refuses templates that could give two messages the same UIDL or
    /// break RFC 1939's limit of 70 characters.
    fn check(&self) -> Result<(), String> {
        if !self
            .parts
            .iter()
            .any(|p| matches!(p, Part::Var { var: Var::Uid, .. }))
        {
            return Err("the template must contain %u, or every message gets the same UIDL".into());
        }
        let mut max_len = 0;
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Text(t) => max_len += t.len(),
                Part::Var { hex, width, .. } => {
                    let digits = if *hex { 8 } else { 10 };
                    max_len += digits.max(*width);
                    // A variable-width number directly followed by another
                    // number is ambiguous: 1|23 and 12|3.
                    let fixed = *width >= digits;
                    let next_is_number = match self.parts.get(i + 1) {
                        Some(Part::Var { .. }) => true,
                        Some(Part::Text(t)) => t.starts_with(|c: char| c.is_ascii_hexdigit()),
                        None => false,
                    };
                    if !fixed && next_is_number {
                        return Err(format!(
                            "a variable-width number followed by more digits makes UIDLs collide \
                             (1|23 and 12|3); pad it (%0{digits}{}) or add a separator",
                            if *hex { "X" } else { "" }
                        ));
                    }
                }
            }
        }
        if max_len > 70 {
            return Err(format!(
                "UIDLs could reach {max_len} characters; RFC 1939 allows 70"
            ));
        }
        Ok(())
    }

    /// The longest UIDL the template can make.
    pub fn max_len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Var { hex, width, .. } => (if *hex { 8 } else { 10 }).max(*width),
            })
            .sum()
    }

    pub fn render(&self, uid: u32, uid_validity: u32, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var { var, hex, width } => {
                    let n = match var {
                        Var::Uid => uid,
                        Var::UidValidity => uid_validity,
                    };
                    let _ = if *hex {
                        write!(out, "{n:0width$x}")
                    } else {
                        write!(out, "{n:0width$}")
                    };
                }
            }
        }
    }

    pub fn uidl(&self, uid: u32, uid_validity: u32) -> String {
        let mut s = String::with_capacity(24);
        self.render(uid, uid_validity, &mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_config_value_that_is_no_string_says_what_was_expected() {
        let e = serde_yaml::from_str::<UidlTemplate>("[1, 2]").unwrap_err();
        assert!(e.to_string().contains("expected a UIDL template"), "{e}");
    }

    #[test]
    fn default_matches_dovecot() {
        // Dovecot's POP3 prints UID 1 in a mailbox with UIDVALIDITY 0x6b02e9d9
        // as this (lower-case hex despite the upper-case X).
        assert_eq!(
            UidlTemplate::default().uidl(1, 0x6b02e9d9),
            "000000016b02e9d9"
        );
    }

    #[test]
    fn other_templates() {
        let t: UidlTemplate = "%v.%u".parse().unwrap();
        assert_eq!(t.uidl(12, 3), "3.12");
        let t: UidlTemplate = "x%%%010u".parse().unwrap();
        assert_eq!(t.uidl(7, 1), "x%0000000007");
    }

    #[test]
    fn unsafe_or_unsupported_templates_are_refused() {
        for bad in [
            "%u%v", "%v%u", "%m", "%f", "%g", "%v", "%3u", "%u %v", "%08Xu%", "%u5",
        ] {
            assert!(bad.parse::<UidlTemplate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_70_character_bound_counts_every_part() {
        // A number first, then text: 10 + 1 + 59 is allowed, one more is not.
        let at_limit = format!("%u.{}", "x".repeat(59));
        assert!(at_limit.parse::<UidlTemplate>().is_ok());
        let over = format!("%u.{}", "x".repeat(60));
        let err = over.parse::<UidlTemplate>().unwrap_err();
        assert!(err.contains("71 characters"), "{err}");
    }

    #[test]
    fn max_len_is_the_longest_uidl_a_template_makes() {
        for source in [
            "%u",
            "%Xu",
            "%08Xu%08Xv",
            "%v.%u",
            "x%%%012u",
            "uid-%u-of-%Xv",
        ] {
            let t: UidlTemplate = source.parse().unwrap();
            let longest = t.uidl(u32::MAX, u32::MAX).len();
            assert_eq!(t.max_len(), longest, "{source}");
        }
    }

    proptest! {
        #[test]
        fn default_is_injective_and_valid(a: (u32, u32), b: (u32, u32)) {
            let t = UidlTemplate::default();
            let (ua, ub) = (t.uidl(a.0, a.1), t.uidl(b.0, b.1));
            prop_assert_eq!(ua == ub, a == b);
            prop_assert!(ua.len() <= 70 && ua.bytes().all(|c| (0x21..=0x7e).contains(&c)));
        }
    }
}
