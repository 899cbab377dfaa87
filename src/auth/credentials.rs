//! Parsing of the `authorization` header into [`Credentials`].
//!
//! Clients differ in small ways: ADBC's Go driver sends Basic credentials in
//! base64 without padding, some send the scheme in lowercase, Tableau-style
//! clients put a token in the password of Basic auth. All of that is
//! accepted here, once, so the rest of airlock sees one shape.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::AuthError;

/// The user name under which a token may be sent as a Basic password.
pub const TOKEN_USER: &str = "token";

/// Standard base64 that accepts input with or without `=` padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What a client presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Bearer <token>`, or Basic with user `token`.
    Token(String),
    /// Basic user and password.
    Password {
        /// User name.
        user: String,
        /// Password (never logged).
        password: String,
    },
}

// Hand-written so that a stray `{:?}` can never print a secret.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Password { user, .. } => write!(f, "Password({user}, <redacted>)"),
        }
    }
}

impl Credentials {
    /// The user name of password credentials (for the audit of a failed
    /// login); tokens have none.
    pub fn user(&self) -> Option<&str> {
        match self {
            Credentials::Token(_) => None,
            Credentials::Password { user, .. } => Some(user),
        }
    }
}

/// The `Authorization` value of Basic credentials, as clients send them
/// (for front ends that receive user and password separately).
pub fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Parses an `authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Credentials, AuthError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::MalformedHeader(
        "expected '<scheme> <credentials>'",
    ))?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(AuthError::MalformedHeader("empty bearer token"));
        }
        return Ok(Credentials::Token(rest.to_string()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::MalformedHeader(
            "unsupported scheme; use 'Basic' or 'Bearer'",
        ));
    }
    let decoded = LENIENT_BASE64
        .decode(rest)
        .map_err(|_| AuthError::MalformedHeader("Basic credentials are not valid base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| AuthError::MalformedHeader("Basic credentials are not UTF-8"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or(AuthError::MalformedHeader("Basic credentials lack ':'"))?;
    if user == TOKEN_USER {
        return Ok(Credentials::Token(password.to_string()));
    }
    Ok(Credentials::Password {
        user: user.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use base64::prelude::{BASE64_STANDARD, BASE64_STANDARD_NO_PAD};

    use super::*;

    #[test]
    fn bearer_in_any_case() {
        assert_eq!(
            parse_authorization("Bearer abc.def").unwrap(),
            Credentials::Token("abc.def".into())
        );
        assert_eq!(
            parse_authorization("bearer  abc").unwrap(),
            Credentials::Token("abc".into())
        );
    }

    #[test]
    fn basic_with_and_without_padding() {
        // "admin:pw" is 8 bytes: 12 characters with one '=' of padding.
        for engine_output in [
            BASE64_STANDARD.encode("admin:pw"),
            BASE64_STANDARD_NO_PAD.encode("admin:pw"),
        ] {
            assert_eq!(
                parse_authorization(&format!("Basic {engine_output}")).unwrap(),
                Credentials::Password {
                    user: "admin".into(),
                    password: "pw".into()
                }
            );
        }
        assert!(BASE64_STANDARD.encode("admin:pw").ends_with('='));
    }

    #[test]
    fn password_may_contain_colons_and_token_user_means_token() {
        let header = format!("Basic {}", BASE64_STANDARD.encode("admin:a:b"));
        assert_eq!(
            parse_authorization(&header).unwrap(),
            Credentials::Password {
                user: "admin".into(),
                password: "a:b".into()
            }
        );
        let header = format!("Basic {}", BASE64_STANDARD.encode("token:eyJ.x.y"));
        assert_eq!(
            parse_authorization(&header).unwrap(),
            Credentials::Token("eyJ.x.y".into())
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        for bad in ["Bearer", "Bearer ", "Digest abc", "Basic !!!", "Basic YWJj"] {
            let err = parse_authorization(bad).unwrap_err();
            assert!(matches!(err, AuthError::MalformedHeader(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_never_prints_secrets() {
        let creds = Credentials::Password {
            user: "admin".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Token("secret".into())).contains("secret"));
    }
}
