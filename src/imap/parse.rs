//! Parsers for the few IMAP responses popgate needs (RFC 9051 section 7).
//! They work on one whole response as it came off the wire, literals inline
//! (`{n}\r\n` and the n octets), and allocate only for what they return.

/// A tagged or untagged status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Bye,
    Preauth,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Response<'a> {
    Tagged {
        tag: &'a [u8],
        status: Status,
        text: StatusText<'a>,
    },
    Untagged(Untagged<'a>),
    Continuation,
}

/// The text of a status response with its optional `[CODE args]`.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct StatusText<'a> {
    pub code: Option<&'a [u8]>,
    pub code_args: Option<&'a [u8]>,
    pub text: &'a [u8],
}

impl StatusText<'_> {
    pub fn code_is(&self, name: &str) -> bool {
        self.code
            .is_some_and(|c| c.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Capabilities carried in a `[CAPABILITY ...]` code.
    pub fn capabilities(&self) -> Option<Vec<String>> {
        self.code_is("CAPABILITY")
            .then(|| atoms(self.code_args.unwrap_or_default()))
    }

    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(self.text)
            .chars()
            .take(200)
            .collect()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Untagged<'a> {
    Status(Status, StatusText<'a>),
    Capability(Vec<String>),
    Exists(u32),
    Expunge(u32),
    Fetch(Fetch<'a>),
    Other,
}

/// The attributes of a FETCH response that popgate uses.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Fetch<'a> {
    pub seq: u32,
    pub uid: Option<u32>,
    pub size: Option<u64>,
    pub deleted: bool,
    /// The flag list as sent, without its parentheses.
    pub flags: &'a [u8],
    /// The first `BODY[...]` value (literal or quoted contents).
    pub body: Option<&'a [u8]>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed IMAP response")]
pub struct ParseError;

pub fn response(input: &[u8]) -> Result<Response<'_>, ParseError> {
    let mut t = Tokens::new(input);
    let tag = t.atom()?;
    if tag == b"+" {
        return Ok(Response::Continuation);
    }
    if tag != b"*" {
        t.space()?;
        let status = match status(t.atom()?) {
            Some(s @ (Status::Ok | Status::No | Status::Bad)) => s,
            _ => return Err(ParseError),
        };
        return Ok(Response::Tagged {
            tag,
            status,
            text: status_text(&mut t),
        });
    }
    t.space()?;
    let word = t.atom()?;
    if let Some(st) = status(word) {
        return Ok(Response::Untagged(Untagged::Status(
            st,
            status_text(&mut t),
        )));
    }
    if word.eq_ignore_ascii_case(b"CAPABILITY") {
        return Ok(Response::Untagged(Untagged::Capability(atoms(t.rest()))));
    }
    let Some(n) = number(word) else {
        return Ok(Response::Untagged(Untagged::Other));
    };
    let n = u32::try_from(n).map_err(|_| ParseError)?;
    t.space()?;
    let kind = t.atom()?;
    let parsed = if kind.eq_ignore_ascii_case(b"EXISTS") {
        Untagged::Exists(n)
    } else if kind.eq_ignore_ascii_case(b"EXPUNGE") {
        Untagged::Expunge(n)
    } else if kind.eq_ignore_ascii_case(b"FETCH") {
        t.space()?;
        Untagged::Fetch(fetch(n, &mut t)?)
    } else {
        Untagged::Other
    };
    Ok(Response::Untagged(parsed))
}

fn status(word: &[u8]) -> Option<Status> {
    Some(match word.to_ascii_uppercase().as_slice() {
        b"OK" => Status::Ok,
        b"NO" => Status::No,
        b"BAD" => Status::Bad,
        b"BYE" => Status::Bye,
        b"PREAUTH" => Status::Preauth,
        _ => return None,
    })
}

fn status_text<'a>(t: &mut Tokens<'a>) -> StatusText<'a> {
    let mut out = StatusText::default();
    let mut rest = t.rest();
    if let Some(r) = rest.strip_prefix(b" ") {
        rest = r;
    }
    if let Some(inner) = rest.strip_prefix(b"[") {
        if let Some(close) = memchr::memchr(b']', inner) {
            let code = &inner[..close];
            match memchr::memchr(b' ', code) {
                Some(sp) => {
                    out.code = Some(&code[..sp]);
                    out.code_args = Some(&code[sp + 1..]);
                }
                None => out.code = Some(code),
            }
            rest = inner[close + 1..]
                .strip_prefix(b" ")
                .unwrap_or(&inner[close + 1..]);
        }
    }
    out.text = rest;
    out
}

fn atoms(s: &[u8]) -> Vec<String> {
    s.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
        .collect()
}

fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn fetch<'a>(seq: u32, t: &mut Tokens<'a>) -> Result<Fetch<'a>, ParseError> {
    let mut f = Fetch {
        seq,
        ..Fetch::default()
    };
    t.expect(b'(')?;
    loop {
        t.eat(b' ');
        if t.eat(b')') {
            return Ok(f);
        }
        let name = t.atom()?;
        t.space()?;
        if name.eq_ignore_ascii_case(b"UID") {
            f.uid = Some(
                number(t.atom()?)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or(ParseError)?,
            );
        } else if name.eq_ignore_ascii_case(b"RFC822.SIZE") {
            f.size = Some(number(t.atom()?).ok_or(ParseError)?);
        } else if name.eq_ignore_ascii_case(b"FLAGS") {
            t.expect(b'(')?;
            let start = t.pos;
            loop {
                t.eat(b' ');
                if t.eat(b')') {
                    f.flags = &t.s[start..t.pos - 1];
                    break;
                }
                let flag = t.atom()?;
                f.deleted |= flag.eq_ignore_ascii_case(b"\\Deleted");
            }
        } else if name.len() >= 5 && name[..5].eq_ignore_ascii_case(b"BODY[") {
            let value = t.nstring()?;
            if f.body.is_none() {
                f.body = value;
            }
        } else {
            t.skip_value()?;
        }
    }
}

/// A cursor over one response.
struct Tokens<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a [u8]) -> Self {
        Tokens { s, pos: 0 }
    }

    fn rest(&mut self) -> &'a [u8] {
        let r = &self.s[self.pos..];
        self.pos = self.s.len();
        r
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    fn expect(&mut self, b: u8) -> Result<(), ParseError> {
        self.eat(b).then_some(()).ok_or(ParseError)
    }

    fn space(&mut self) -> Result<(), ParseError> {
        self.expect(b' ')
    }

    /// An atom; a `[...]` section inside it may hold spaces and parentheses.
    fn atom(&mut self) -> Result<&'a [u8], ParseError> {
        let start = self.pos;
        let mut depth = 0u32;
        while let Some(b) = self.peek() {
            match b {
                b'[' => depth += 1,
                b']' if depth > 0 => depth -= 1,
                b' ' | b'(' | b')' | b'"' | b'{' | b'\r' | b'\n' if depth == 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(ParseError);
        }
        Ok(&self.s[start..self.pos])
    }

    /// NIL, a quoted string (returned with escapes in place), or a literal.
    fn nstring(&mut self) -> Result<Option<&'a [u8]>, ParseError> {
        match self.peek() {
            Some(b'"') => self.quoted().map(Some),
            Some(b'{') => self.literal().map(Some),
            _ => {
                let a = self.atom()?;
                a.eq_ignore_ascii_case(b"NIL")
                    .then_some(None)
                    .ok_or(ParseError)
            }
        }
    }

    fn quoted(&mut self) -> Result<&'a [u8], ParseError> {
        self.expect(b'"')?;
        let start = self.pos;
        while let Some(b) = self.peek() {
            match b {
                b'\\' => self.pos += 2,
                b'"' => {
                    let s = &self.s[start..self.pos];
                    self.pos += 1;
                    return Ok(s);
                }
                _ => self.pos += 1,
            }
        }
        Err(ParseError)
    }

    fn literal(&mut self) -> Result<&'a [u8], ParseError> {
        self.expect(b'{')?;
        let close = memchr::memchr(b'}', &self.s[self.pos..]).ok_or(ParseError)?;
        let digits = &self.s[self.pos..self.pos + close];
        let digits = digits.strip_suffix(b"+").unwrap_or(digits);
        let n = number(digits)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(ParseError)?;
        self.pos += close + 1;
        if !self.s[self.pos..].starts_with(b"\r\n") {
            return Err(ParseError);
        }
        self.pos += 2;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.s.len())
            .ok_or(ParseError)?;
        let data = &self.s[self.pos..end];
        self.pos = end;
        Ok(data)
    }

    fn skip_value(&mut self) -> Result<(), ParseError> {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                while !self.eat(b')') {
                    if !self.eat(b' ') {
                        self.skip_value()?;
                    }
                }
                Ok(())
            }
            Some(b'"') => self.quoted().map(drop),
            Some(b'{') => self.literal().map(drop),
            _ => self.atom().map(drop),
        }
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
