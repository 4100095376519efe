//! The tus 1.0 protocol's request headers, checked: what the upload
//! routes accept before a byte is written. (The routes themselves are
//! coming; this is their first part.)
//!
//! Reference: <https://tus.io/protocols/resumable-upload> — core,
//! creation, creation-defer-length, checksum, termination, concatenation.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The one protocol version served.
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions `OPTIONS` advertises.
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,checksum,termination,expiration,concatenation";
/// `Tus-Checksum-Algorithm`.
pub const CHECKSUM_ALGORITHMS: &str = "sha256";
/// The content type of every `PATCH` body.
pub const PATCH_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// Longest `Upload-Metadata` header, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Most parts a final upload may concatenate.
pub const MAX_CONCAT_PARTS: usize = 100;
/// Longest file name kept, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// A request the protocol refuses, with the status tus prescribes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TusError {
    /// 412, with `Tus-Version` in the answer.
    #[error("Tus-Resumable must be {TUS_VERSION}")]
    UnsupportedVersion,
    /// 400.
    #[error("{header}: {reason}")]
    BadHeader {
        header: &'static str,
        reason: String,
    },
    /// 415.
    #[error("a PATCH body is {PATCH_CONTENT_TYPE}")]
    UnsupportedMediaType,
    /// 413.
    #[error("{what} is {size} bytes, more than the {max} allowed")]
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
    },
}

impl TusError {
    pub fn status(&self) -> u16 {
        match self {
            Self::UnsupportedVersion => 412,
            Self::BadHeader { .. } => 400,
            Self::UnsupportedMediaType => 415,
            Self::TooLarge { .. } => 413,
        }
    }
}

fn bad(header: &'static str, reason: impl Into<String>) -> TusError {
    TusError::BadHeader {
        header,
        reason: reason.into(),
    }
}

/// Every request but `OPTIONS` names the version it speaks.
pub fn check_resumable(value: Option<&str>) -> Result<(), TusError> {
    match value {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(TusError::UnsupportedVersion),
    }
}

/// `Upload-Offset`, `Upload-Length`: digits only (no sign, no spaces, no
/// exponent), at most `max`.
pub fn parse_size(header: &'static str, value: &str, max: u64) -> Result<u64, TusError> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(header, "is a non-negative integer"));
    }
    let size: u64 = value
        .parse()
        .map_err(|_| bad(header, "is a non-negative integer"))?;
    if size > max {
        return Err(TusError::TooLarge {
            what: header,
            size,
            max,
        });
    }
    Ok(size)
}

/// `Upload-Defer-Length`: only `1` is meaningful.
pub fn check_defer_length(value: &str) -> Result<(), TusError> {
    if value == "1" {
        Ok(())
    } else {
        Err(bad("Upload-Defer-Length", "is 1"))
    }
}

/// `Upload-Metadata`: comma-separated `key value` pairs, each value
/// base64; a key is ASCII without spaces or commas and appears once; a
/// key alone has an empty value.
pub fn parse_metadata(value: &str) -> Result<BTreeMap<String, Vec<u8>>, TusError> {
    const HEADER: &str = "Upload-Metadata";
    if value.len() > MAX_METADATA_BYTES {
        return Err(TusError::TooLarge {
            what: HEADER,
            size: value.len() as u64,
            max: MAX_METADATA_BYTES as u64,
        });
    }
    let mut metadata = BTreeMap::new();
    if value.trim().is_empty() {
        return Ok(metadata);
    }
    for pair in value.split(',') {
        let pair = pair.trim();
        let (key, encoded) = match pair.split_once(' ') {
            Some((key, encoded)) => (key, encoded.trim()),
            None => (pair, ""),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(bad(HEADER, "a key is ASCII without spaces or commas"));
        }
        let decoded = STANDARD
            .decode(encoded)
            .map_err(|_| bad(HEADER, format!("the value of {key:?} is not base64")))?;
        if metadata.insert(key.to_owned(), decoded).is_some() {
            return Err(bad(HEADER, format!("{key:?} appears twice")));
        }
    }
    Ok(metadata)
}

/// A checksum a `PATCH` body must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    Sha256([u8; 32]),
}

/// `Upload-Checksum: sha256 <base64 digest>`; another algorithm is a 400
/// (the one advertised is sha256).
pub fn parse_checksum(value: &str) -> Result<Checksum, TusError> {
    const HEADER: &str = "Upload-Checksum";
    let (algorithm, encoded) = value
        .split_once(' ')
        .ok_or_else(|| bad(HEADER, "is an algorithm and a base64 digest"))?;
    if !algorithm.eq_ignore_ascii_case("sha256") {
        return Err(bad(HEADER, format!("supports {CHECKSUM_ALGORITHMS}")));
    }
    let digest = STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad(HEADER, "the digest is not base64"))?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| bad(HEADER, "a sha256 digest is 32 bytes"))?;
    Ok(Checksum::Sha256(digest))
}

/// `Upload-Concat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Concat {
    /// A part, to be concatenated later.
    Partial,
    /// The parts' upload URLs, in order.
    Final(Vec<String>),
}

pub fn parse_concat(value: &str) -> Result<Concat, TusError> {
    const HEADER: &str = "Upload-Concat";
    if value == "partial" {
        return Ok(Concat::Partial);
    }
    let parts = value
        .strip_prefix("final;")
        .ok_or_else(|| bad(HEADER, "is `partial` or `final;<url> <url>…`"))?;
    let parts: Vec<String> = parts.split_whitespace().map(str::to_owned).collect();
    if parts.is_empty() {
        return Err(bad(HEADER, "a final upload names its parts"));
    }
    if parts.len() > MAX_CONCAT_PARTS {
        return Err(bad(HEADER, format!("at most {MAX_CONCAT_PARTS} parts")));
    }
    Ok(Concat::Final(parts))
}

/// A `PATCH` body's `Content-Type`, parameters allowed.
pub fn check_patch_content_type(value: Option<&str>) -> Result<(), TusError> {
    let essence = value
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if essence.eq_ignore_ascii_case(PATCH_CONTENT_TYPE) {
        Ok(())
    } else {
        Err(TusError::UnsupportedMediaType)
    }
}

/// A file name from a client (`Upload-Metadata: filename`), made safe to
/// show and to send back in `Content-Disposition`: one path component,
/// no control characters. Names are never used as paths on disk (bytes
/// are stored by id), so this is about what is shown, not what is opened;
/// a name that is a path (`../x`, `/etc/x`, `a/b`, `C:\x`) is refused.
pub fn file_name(raw: &[u8]) -> Result<String, TusError> {
    const HEADER: &str = "Upload-Metadata";
    let name = std::str::from_utf8(raw).map_err(|_| bad(HEADER, "filename is UTF-8"))?;
    let reason = if name.is_empty() {
        Some("filename is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("filename is at most 255 bytes")
    } else if name.chars().any(char::is_control) {
        Some("filename has no control characters")
    } else if name.contains(['/', '\\']) || name == "." || name == ".." {
        Some("filename is a name, not a path")
    } else if name.trim() != name || name.ends_with('.') {
        Some("filename neither starts nor ends with spaces or ends with a dot")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(bad(HEADER, reason)),
        None => Ok(name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_1_0_0_is_spoken() {
        assert_eq!(check_resumable(Some("1.0.0")), Ok(()));
        for other in [None, Some(""), Some("0.2.2"), Some("1.0.0 ")] {
            let error = check_resumable(other).unwrap_err();
            assert_eq!(error.status(), 412, "{other:?}");
        }
    }

    #[test]
    fn sizes_are_plain_digits_within_the_maximum() {
        assert_eq!(parse_size("Upload-Length", "0", 10), Ok(0));
        assert_eq!(parse_size("Upload-Length", "10", 10), Ok(10));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1e3",
            "0x10",
            "18446744073709551616",
            "١",
        ] {
            assert_eq!(
                parse_size("Upload-Offset", bad, u64::MAX)
                    .unwrap_err()
                    .status(),
                400,
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_size("Upload-Length", "11", 10).unwrap_err().status(),
            413
        );
        assert_eq!(check_defer_length("1"), Ok(()));
        assert!(check_defer_length("true").is_err());
    }

    #[test]
    fn metadata_is_base64_pairs_with_unique_ascii_keys() {
        let metadata =
            parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
                .unwrap();
        assert_eq!(metadata["filename"], b"world_domination_plan.pdf");
        assert_eq!(metadata["is_confidential"], b"");
        assert!(parse_metadata("").unwrap().is_empty());
        for bad in ["a b,a c", "k !!!", "ké dg==", ",", "a  b"] {
            assert_eq!(parse_metadata(bad).unwrap_err().status(), 400, "{bad:?}");
        }
        let huge = format!("k {}", "A".repeat(MAX_METADATA_BYTES));
        assert_eq!(parse_metadata(&huge).unwrap_err().status(), 413);
    }

    #[test]
    fn checksums_are_sha256_digests() {
        let digest = STANDARD.encode([7u8; 32]);
        assert_eq!(
            parse_checksum(&format!("sha256 {digest}")),
            Ok(Checksum::Sha256([7; 32]))
        );
        for bad in [
            format!("md5 {digest}"),
            "sha256".to_owned(),
            "sha256 not-base64!".to_owned(),
            format!("sha256 {}", STANDARD.encode([1u8; 20])),
        ] {
            assert_eq!(parse_checksum(&bad).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn concatenation_names_partial_or_its_parts() {
        assert_eq!(parse_concat("partial"), Ok(Concat::Partial));
        assert_eq!(
            parse_concat("final;/files/a /files/b"),
            Ok(Concat::Final(vec!["/files/a".into(), "/files/b".into()]))
        );
        assert!(parse_concat("final;").is_err());
        assert!(parse_concat("whole").is_err());
        let many: Vec<String> = (0..=MAX_CONCAT_PARTS).map(|i| format!("/f/{i}")).collect();
        assert!(parse_concat(&format!("final;{}", many.join(" "))).is_err());
    }

    #[test]
    fn a_patch_body_is_offset_octet_stream() {
        assert_eq!(
            check_patch_content_type(Some("application/offset+octet-stream")),
            Ok(())
        );
        assert_eq!(
            check_patch_content_type(Some("Application/Offset+Octet-Stream; charset=x")),
            Ok(())
        );
        for bad in [None, Some("application/octet-stream"), Some("")] {
            assert_eq!(check_patch_content_type(bad).unwrap_err().status(), 415);
        }
    }

    #[test]
    fn file_names_are_one_component_without_control_characters() {
        assert_eq!(
            file_name("report 2026.pdf".as_bytes()).unwrap(),
            "report 2026.pdf"
        );
        assert_eq!(file_name("résumé.txt".as_bytes()).unwrap(), "résumé.txt");
        for bad in [
            &b"../etc/passwd"[..],
            b"/etc/passwd",
            b"a/b",
            b"C:\\x",
            b"..",
            b"nul\0byte",
            b"bell\x07",
            b"new\nline",
            b"",
            b" lead",
            b"trail.",
            b"\xff\xfe",
        ] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
        assert!(file_name("x".repeat(256).as_bytes()).is_err());
    }
}
