//! OAuth error responses (RFC 6749 §4.1.2.1 and §5.2, RFC 7009 §2.2.1, RFC 7591 §3.2.2,
//! RFC 8707 §2).

use std::fmt;

/// An OAuth `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Missing, repeated or malformed parameter.
    InvalidRequest,
    /// Client authentication failed, or the client is unknown.
    InvalidClient,
    /// The code or refresh token is invalid, expired, revoked, reused, or was issued to
    /// another client or redirect URI; or the PKCE verifier does not match.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// Not `authorization_code` or `refresh_token`.
    UnsupportedGrantType,
    /// A malformed scope, or one beyond what was granted.
    InvalidScope,
    /// A resource that is not this server's (RFC 8707).
    InvalidTarget,
    /// Not `code`.
    UnsupportedResponseType,
    /// The user said no.
    AccessDenied,
    /// The server failed.
    ServerError,
    /// The server is overloaded or its store unavailable.
    TemporarilyUnavailable,
    /// A redirect URI that may not be registered (RFC 7591).
    InvalidRedirectUri,
    /// Client metadata that may not be registered (RFC 7591).
    InvalidClientMetadata,
}

impl ErrorCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
        }
    }

    /// The HTTP status of a JSON error response with this code.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidClient => 401,
            Self::ServerError => 500,
            Self::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// An OAuth error: a code and a description for the developer reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The code.
    pub code: ErrorCode,
    /// `error_description`: printable ASCII only, as RFC 6749 requires.
    pub description: String,
}

impl OAuthError {
    /// An error with this code and description (non-ASCII and `"`/`\` are replaced).
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        let description = description
            .into()
            .chars()
            .map(|c| {
                if (' '..='~').contains(&c) && c != '"' && c != '\\' {
                    c
                } else {
                    '\''
                }
            })
            .take(300)
            .collect();
        Self { code, description }
    }

    /// `invalid_request`.
    pub fn request(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }

    /// `invalid_grant`.
    pub fn grant(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }

    /// `invalid_client`.
    pub fn client(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, d)
    }

    /// `invalid_target`.
    pub fn target(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidTarget, d)
    }

    /// The JSON body of an error response.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        })
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl std::error::Error for OAuthError {}

impl From<crate::wire::oauth::form::FormError> for OAuthError {
    fn from(e: crate::wire::oauth::form::FormError) -> Self {
        Self::request(e.to_string())
    }
}

/// A request refused: the error to answer, and a grant to revoke because the request
/// proved its tokens are in the wrong hands (a reused code or refresh token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What to answer.
    pub error: OAuthError,
    /// The grant (token family) to revoke, and why.
    pub revoke: Option<(String, &'static str)>,
}

impl From<OAuthError> for Refusal {
    fn from(error: OAuthError) -> Self {
        Self {
            error,
            revoke: None,
        }
    }
}
