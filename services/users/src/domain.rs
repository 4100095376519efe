//! Input parsed once, at the edge, into types that cannot hold bad data.
//!
//! Every rule here is documented in the README (users service section); a
//! violation is a [`FieldError`] naming the field, which the gRPC layer turns
//! into `INVALID_ARGUMENT` with a field-level message.

use std::fmt;

/// One invalid field and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

fn char_len(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), FieldError> {
    let n = value.chars().count();
    if n < min {
        return Err(FieldError::new(
            field,
            if min == 1 {
                "must not be empty".to_owned()
            } else {
                format!("must be at least {min} characters")
            },
        ));
    }
    if n > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// 3–32 characters: ASCII letters, digits, `_`, `.`, `-`, starting with a
/// letter or digit. Unique without regard to case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MIN: usize = 3;
    pub const MAX: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        char_len("username", raw, Self::MIN, Self::MAX)?;
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(FieldError::new(
                "username",
                "may contain only letters, digits, '_', '.' and '-'",
            ));
        }
        if !raw.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(FieldError::new(
                "username",
                "must start with a letter or digit",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is checked on.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// An address of the form `local@domain.tld`: at most 254 characters, a
/// local part of 1–64 printable ASCII characters without spaces, quotes or
/// a second `@`, and a domain of dot-separated labels of letters, digits
/// and inner hyphens. Unique without regard to case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let invalid =
            |why: &str| FieldError::new("email", format!("is not a valid address: {why}"));
        char_len("email", raw, 3, Self::MAX)?;
        let (local, domain) = raw.split_once('@').ok_or_else(|| invalid("missing '@'"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(invalid("the part before '@' must be 1 to 64 characters"));
        }
        if !local.chars().all(|c| {
            c.is_ascii_graphic()
                && !matches!(
                    c,
                    '@' | '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | '\\' | ']'
                )
        }) || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(invalid("unexpected character before '@'"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid("the domain needs a dot"));
        }
        for label in labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(invalid("malformed domain"));
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// 8–128 characters. Never printed, never stored: only its hash is.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN: usize = 8;
    pub const MAX: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        char_len("password", raw, Self::MIN, Self::MAX)?;
        if raw.chars().all(blank) {
            return Err(FieldError::new("password", "must not be only white space"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// White space as Rust's `trim` and an OpenAPI (ECMA-262) `\s` both see
/// it, so "not only white space" means one thing to the API document and
/// to this check: Unicode White_Space (with U+0085) and U+FEFF.
fn blank(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

fn trim(raw: &str) -> &str {
    raw.trim_matches(blank)
}

/// Post titles: 1–200 characters after trimming.
pub fn parse_title(raw: &str) -> Result<String, FieldError> {
    let trimmed = trim(raw);
    char_len("title", trimmed, 1, 200)?;
    Ok(trimmed.to_owned())
}

/// Post bodies: 1–20,000 characters.
pub fn parse_post_content(raw: &str) -> Result<String, FieldError> {
    char_len("content", trim(raw), 1, 20_000)?;
    Ok(raw.to_owned())
}

/// Comment bodies: 1–5,000 characters.
pub fn parse_comment_content(raw: &str) -> Result<String, FieldError> {
    char_len("content", trim(raw), 1, 5_000)?;
    Ok(raw.to_owned())
}

/// A positive id; 0 is proto3's "unset".
pub fn parse_id(field: &'static str, raw: u64) -> Result<i64, FieldError> {
    if raw == 0 {
        return Err(FieldError::new(field, "is required"));
    }
    i64::try_from(raw).map_err(|_| FieldError::new(field, "is out of range"))
}

/// One page of a listing. `page` starts at 1; 0 (unset) means 1.
/// `per_page` 0 (unset) means [`Page::DEFAULT_PER_PAGE`]; anything above
/// [`Page::MAX_PER_PAGE`] is clamped to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub per_page: u32,
}

impl Page {
    pub const DEFAULT_PER_PAGE: u32 = 20;
    pub const MAX_PER_PAGE: u32 = 100;

    pub fn parse(page: i32, per_page: i32) -> Result<Self, FieldError> {
        let page = match page {
            0 => 1,
            p if p < 0 => return Err(FieldError::new("page", "must be 1 or more")),
            p => p.unsigned_abs(),
        };
        let per_page = match per_page {
            0 => Self::DEFAULT_PER_PAGE,
            p if p < 0 => return Err(FieldError::new("per_page", "must be 1 or more")),
            p => p.unsigned_abs().min(Self::MAX_PER_PAGE),
        };
        Ok(Self { page, per_page })
    }

    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }

    pub fn limit(&self) -> i64 {
        i64::from(self.per_page)
    }
}

/// Which part of a listing: a numbered page, or (keyset) the first
/// `limit` items with ids above `id` — stable while items are added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slice {
    Page(Page),
    After { id: i64, limit: i64 },
}

impl Slice {
    /// From a listing request's `page`, `per_page` and `after_id`.
    pub fn parse(page: i32, per_page: i32, after_id: Option<u64>) -> Result<Self, FieldError> {
        let page = Page::parse(page, per_page)?;
        match after_id {
            None => Ok(Self::Page(page)),
            Some(after) => Ok(Self::After {
                id: i64::try_from(after)
                    .map_err(|_| FieldError::new("after_id", "is out of range"))?,
                limit: page.limit(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_documented_rules() {
        assert_eq!(Username::parse("ann_92").unwrap().key(), "ann_92");
        assert_eq!(Username::parse("Ann.B").unwrap().key(), "ann.b");
        for bad in ["", "ab", "_ann", "ann b", "ännä", "a/b", &"x".repeat(33)] {
            let err = Username::parse(bad).unwrap_err();
            assert_eq!(err.field, "username", "{bad:?}");
        }
    }

    #[test]
    fn emails_follow_the_documented_rules() {
        assert_eq!(
            Email::parse("Ann@Example.COM").unwrap().key(),
            "ann@example.com"
        );
        Email::parse("a.b+tag@sub.example.org").unwrap();
        for bad in [
            "",
            "plain",
            "@example.com",
            "ann@",
            "ann@localhost",
            "ann@@example.com",
            "ann @example.com",
            "ann@exa mple.com",
            "ann@-example.com",
            "ann@example..com",
            ".ann@example.com",
            "a..b@example.com",
        ] {
            assert_eq!(Email::parse(bad).unwrap_err().field, "email", "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long).is_err());
        let huge = format!("a@{}.com", "b".repeat(300));
        assert!(
            Email::parse(&huge)
                .unwrap_err()
                .message
                .contains("at most 254")
        );
    }

    #[test]
    fn passwords_are_bounded_and_never_printed() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        assert!(Password::parse("        ").is_err());
        let ok = Password::parse("correct horse").unwrap();
        assert_eq!(format!("{ok:?}"), "Password(***)");
    }

    #[test]
    fn pages_default_and_clamp() {
        assert_eq!(
            Page::parse(0, 0).unwrap(),
            Page {
                page: 1,
                per_page: 20
            }
        );
        assert_eq!(
            Page::parse(3, 10_000).unwrap(),
            Page {
                page: 3,
                per_page: 100
            }
        );
        assert_eq!(Page::parse(3, 10).unwrap().offset(), 20);
        assert_eq!(Page::parse(-1, 10).unwrap_err().field, "page");
        assert_eq!(Page::parse(1, -5).unwrap_err().field, "per_page");
    }

    #[test]
    fn post_fields_are_bounded() {
        assert_eq!(parse_title("  Hello  ").unwrap(), "Hello");
        assert!(parse_title("   ").is_err());
        assert!(parse_title(&"t".repeat(201)).is_err());
        assert!(parse_post_content(&"c".repeat(20_001)).is_err());
        assert!(parse_comment_content("").is_err());
        assert_eq!(parse_id("id", 0).unwrap_err().message, "is required");
        assert!(parse_id("id", u64::MAX).is_err());
    }

    #[test]
    fn blank_means_what_the_api_document_says() {
        // The document's "not only white space" is ECMA-262's `[^\s]`
        // less U+0085; both it and U+FEFF count as blank here too.
        for blank in ["\u{85}", "\u{feff}", " \u{a0}\u{3000}\t"] {
            assert!(parse_title(blank).is_err(), "{blank:?}");
            assert!(parse_comment_content(blank).is_err(), "{blank:?}");
        }
        assert!(
            Password::parse("\u{85}\u{85}\u{85}\u{85}\u{feff}\u{feff}\u{feff}\u{feff}").is_err()
        );
        assert_eq!(parse_title("\u{feff}t\u{85}").unwrap(), "t");
    }
}
