//! Identifier normalization: the same subject must give the same OPRF input whoever types it.
//!
//! Rules, by kind:
//! - every kind: Unicode NFC, then surrounding white space removed;
//! - `email`: lowercased (Unicode lowercase), exactly one `@`, non-empty local part and
//!   domain, no white space inside;
//! - `phone`: E.164 — `+`, then 8 to 15 digits, the first not 0; spaces, dots, dashes and
//!   parentheses are removed first; a leading `00` is read as `+`;
//! - `id`: an opaque identifier (national id, account number), NFC and trimmed only.
//!
//! The OPRF input is the kind's tag, a `:` and the normalized value (`email:alice@example.com`),
//! so equal strings of different kinds never collide.

use unicode_normalization::UnicodeNormalization;

/// What kind of identifier a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierKind {
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// Any other identifier, compared as text.
    Id,
}

/// Why a value is not a valid identifier of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} `{value}`: {reason}")]
pub struct NormalizeError {
    /// The kind asked for.
    pub kind: IdentifierKind,
    /// The value as given.
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl IdentifierKind {
    /// Parses `email`, `phone` or `id`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "email" => Some(IdentifierKind::Email),
            "phone" => Some(IdentifierKind::Phone),
            "id" => Some(IdentifierKind::Id),
            _ => None,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
            IdentifierKind::Id => "id",
        }
    }
}

/// The normalized value of `raw` (without the kind tag).
pub fn normalize(kind: IdentifierKind, raw: &str) -> Result<String, NormalizeError> {
    let fail = |reason| NormalizeError {
        kind,
        value: raw.to_owned(),
        reason,
    };
    let text: String = raw.nfc().collect::<String>().trim().to_owned();
    if text.is_empty() {
        return Err(fail("empty"));
    }
    match kind {
        IdentifierKind::Id => Ok(text),
        IdentifierKind::Email => {
            let lower = text.to_lowercase();
            if lower.chars().any(char::is_whitespace) {
                return Err(fail("contains white space"));
            }
            match lower.split_once('@') {
                Some((local, domain))
                    if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
                {
                    Ok(lower)
                }
                _ => Err(fail(
                    "needs exactly one @ between a local part and a domain",
                )),
            }
        }
        IdentifierKind::Phone => {
            let compact: String = text
                .chars()
                .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
                .collect();
            let digits = compact
                .strip_prefix('+')
                .or_else(|| compact.strip_prefix("00"))
                .ok_or_else(|| fail("must start with + or 00 and a country code"))?;
            if !(8..=15).contains(&digits.len())
                || !digits.chars().all(|c| c.is_ascii_digit())
                || digits.starts_with('0')
            {
                return Err(fail("E.164 is + and 8 to 15 digits, the first not 0"));
            }
            Ok(format!("+{digits}"))
        }
    }
}

/// The OPRF input for an identifier: `kind:normalized`.
pub fn oprf_input(kind: IdentifierKind, raw: &str) -> Result<Vec<u8>, NormalizeError> {
    Ok(format!("{}:{}", kind.tag(), normalize(kind, raw)?).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentifierKind::*;

    #[test]
    fn the_same_subject_normalizes_the_same() {
        let cases: &[(IdentifierKind, &str, Result<&str, &str>)] = &[
            (Email, "  Alice@Example.COM ", Ok("alice@example.com")),
            (Email, "ÉLODIE@exemple.fr", Ok("élodie@exemple.fr")),
            // "é" composed vs "e" + combining acute: NFC makes them one.
            (Email, "e\u{301}lodie@exemple.fr", Ok("élodie@exemple.fr")),
            (
                Email,
                "no-at-sign",
                Err("needs exactly one @ between a local part and a domain"),
            ),
            (
                Email,
                "a@b@c",
                Err("needs exactly one @ between a local part and a domain"),
            ),
            (Email, "al ice@example.com", Err("contains white space")),
            (Phone, "+44 (20) 7946-0958", Ok("+442079460958")),
            (Phone, "0044 20 7946 0958", Ok("+442079460958")),
            (
                Phone,
                "020 7946 0958",
                Err("must start with + or 00 and a country code"),
            ),
            (
                Phone,
                "+0123456789",
                Err("E.164 is + and 8 to 15 digits, the first not 0"),
            ),
            (
                Phone,
                "+1234567",
                Err("E.164 is + and 8 to 15 digits, the first not 0"),
            ),
            (
                Phone,
                "+12345x78901",
                Err("E.164 is + and 8 to 15 digits, the first not 0"),
            ),
            (Id, " AB-123 ", Ok("AB-123")),
            (Id, "   ", Err("empty")),
        ];
        for (kind, raw, expected) in cases {
            let got = normalize(*kind, raw);
            match expected {
                Ok(value) => assert_eq!(got.as_deref(), Ok(*value), "{kind:?} {raw:?}"),
                Err(reason) => {
                    assert_eq!(got.map_err(|e| e.reason), Err(*reason), "{kind:?} {raw:?}")
                }
            }
        }
        assert_eq!(
            oprf_input(Email, "Bob@Example.com").unwrap(),
            b"email:bob@example.com"
        );
        assert_ne!(
            oprf_input(Id, "+442079460958").unwrap(),
            oprf_input(Phone, "+442079460958").unwrap()
        );
    }
}
