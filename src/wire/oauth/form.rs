//! `application/x-www-form-urlencoded`, as OAuth uses it for request bodies, query
//! strings and redirect parameters (WHATWG URL §5, RFC 6749 appendix B).
//!
//! Stricter than browsers on purpose: a `%` not followed by two hex digits and a name or
//! value that does not decode to UTF-8 are errors rather than passed through, because
//! an authorization server that guesses what a malformed parameter meant can be made to
//! disagree with the client about it. Input size and field count are bounded.

use thiserror::Error;

/// Bounds on one form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormLimits {
    /// Largest encoded input.
    pub max_bytes: usize,
    /// Most `name=value` pairs.
    pub max_fields: usize,
}

impl Default for FormLimits {
    fn default() -> Self {
        Self {
            max_bytes: 16 << 10,
            max_fields: 64,
        }
    }
}

/// Why a form did not parse, or a parameter could not be read from it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormError {
    /// Over [`FormLimits::max_bytes`].
    #[error("form is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Over [`FormLimits::max_fields`].
    #[error("form has more than {limit} fields")]
    TooManyFields {
        /// The limit.
        limit: usize,
    },
    /// A `%` not followed by two hexadecimal digits.
    #[error("malformed percent-encoding at byte {at}")]
    BadEscape {
        /// Offset of the `%` in the input.
        at: usize,
    },
    /// A name or value that does not decode to UTF-8.
    #[error("a form field is not valid UTF-8")]
    NotUtf8,
    /// A pair with an empty name (`=x`).
    #[error("a form field has an empty name")]
    EmptyName,
    /// A parameter that must appear at most once appeared again (RFC 6749 §3.1).
    #[error("parameter {0:?} is repeated")]
    Repeated(String),
}

/// A parsed form: its pairs in order, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Parses `input` (a body, or a query string without its `?`). Empty pieces between
    /// `&`s are skipped; a piece without `=` has an empty value.
    ///
    /// # Errors
    /// [`FormError`] for oversized input, too many fields, bad escapes, non-UTF-8 text
    /// or an empty name.
    pub fn parse(input: &[u8], limits: &FormLimits) -> Result<Self, FormError> {
        if input.len() > limits.max_bytes {
            return Err(FormError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        let mut pairs = Vec::new();
        let mut offset = 0;
        for piece in input.split(|b| *b == b'&') {
            let start = offset;
            offset += piece.len() + 1;
            if piece.is_empty() {
                continue;
            }
            if pairs.len() == limits.max_fields {
                return Err(FormError::TooManyFields {
                    limit: limits.max_fields,
                });
            }
            let (name, value, value_at) = match piece.iter().position(|b| *b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..], start + i + 1),
                None => (piece, &[][..], start + piece.len()),
            };
            if name.is_empty() {
                return Err(FormError::EmptyName);
            }
            pairs.push((decode(name, start)?, decode(value, value_at)?));
        }
        Ok(Self { pairs })
    }

    /// A form of these pairs (for building responses and in tests).
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        Self {
            pairs: pairs
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }

    /// The pairs, in input order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The value of a parameter that may appear at most once. An empty value counts as
    /// absent ("parameters sent without a value MUST be treated as if they were omitted",
    /// RFC 6749 §3.1).
    ///
    /// # Errors
    /// [`FormError::Repeated`] when the name appears more than once.
    pub fn one(&self, name: &str) -> Result<Option<&str>, FormError> {
        let mut found = None;
        for (n, v) in &self.pairs {
            if n == name {
                if found.is_some() {
                    return Err(FormError::Repeated(name.to_string()));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found.filter(|v| !v.is_empty()))
    }

    /// Every non-empty value of a parameter that may repeat (RFC 8707 `resource`).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Encodes the pairs (`%20` for spaces, every byte outside the unreserved set
    /// escaped), so that parsing the result gives back the same pairs.
    pub fn encode(&self) -> String {
        encode_pairs(self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }
}

/// Encodes `name=value` pairs joined by `&`.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (n, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        escape_into(n, &mut out);
        out.push('=');
        escape_into(v, &mut out);
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, &mut out);
    out
}

fn escape_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one name or value; `at` is its offset in the whole input, for errors.
fn decode(raw: &[u8], at: usize) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex);
                let lo = raw.get(i + 2).copied().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(FormError::BadEscape { at: at + i });
                };
                out.push(hi << 4 | lo);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

/// Percent-decodes a URI component (no `+` rule), as RFC 6749 §2.3.1 asks for the two
/// halves of HTTP Basic client credentials.
///
/// # Errors
/// [`FormError::BadEscape`] or [`FormError::NotUtf8`].
pub fn percent_decode(raw: &str) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(FormError::BadEscape { at: i });
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Form, FormError> {
        Form::parse(s.as_bytes(), &FormLimits::default())
    }

    #[test]
    fn decodes_pairs() {
        let f = parse("a=1&b=x+y%20z&&c&d=%C3%A9&e=a%3Db%26c").unwrap();
        assert_eq!(f.one("a"), Ok(Some("1")));
        assert_eq!(f.one("b"), Ok(Some("x y z")));
        assert_eq!(f.one("c"), Ok(None), "no value counts as absent");
        assert_eq!(f.one("d"), Ok(Some("é")));
        assert_eq!(f.one("e"), Ok(Some("a=b&c")));
        assert_eq!(f.one("missing"), Ok(None));
        assert_eq!(f.pairs().len(), 5);
    }

    #[test]
    fn repeated_parameters_are_refused_where_they_must_be_single() {
        let f = parse("resource=a&resource=b&state=1&state=2").unwrap();
        assert_eq!(f.one("state"), Err(FormError::Repeated("state".into())));
        assert_eq!(f.all("resource").collect::<Vec<_>>(), ["a", "b"]);
        // Even a repeat with an empty value is a repeat.
        let f = parse("code=x&code=").unwrap();
        assert!(f.one("code").is_err());
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(parse("a=%"), Err(FormError::BadEscape { at: 2 }));
        assert_eq!(parse("a=%4"), Err(FormError::BadEscape { at: 2 }));
        assert_eq!(parse("x=1&a=%zz"), Err(FormError::BadEscape { at: 6 }));
        assert_eq!(parse("a=%ff"), Err(FormError::NotUtf8));
        assert_eq!(parse("=x"), Err(FormError::EmptyName));
        assert!(Form::parse(&[b'a', b'=', 0xff], &FormLimits::default()).is_err());
    }

    #[test]
    fn limits_hold() {
        let limits = FormLimits {
            max_bytes: 10,
            max_fields: 2,
        };
        assert_eq!(
            Form::parse(b"a=12345678901", &limits),
            Err(FormError::TooLarge { limit: 10 })
        );
        assert_eq!(
            Form::parse(b"a&b&c", &limits),
            Err(FormError::TooManyFields { limit: 2 })
        );
        assert!(
            Form::parse(b"a&&&&b", &limits).is_ok(),
            "empty pieces are free"
        );
    }

    #[test]
    fn encoding_round_trips() {
        let f = Form::from_pairs([
            ("redirect_uri", "https://a.example/cb?x=1&y=2"),
            ("s", "é +"),
        ]);
        let enc = f.encode();
        assert_eq!(
            enc,
            "redirect_uri=https%3A%2F%2Fa.example%2Fcb%3Fx%3D1%26y%3D2&s=%C3%A9%20%2B"
        );
        assert_eq!(parse(&enc).unwrap(), f);
    }

    #[test]
    fn percent_decoding_for_basic_credentials() {
        assert_eq!(percent_decode("a%3Ab+c").unwrap(), "a:b+c");
        assert!(percent_decode("%g0").is_err());
        assert!(percent_decode("%").is_err());
    }
}
