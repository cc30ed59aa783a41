//! Client metadata JSON: the body of a dynamic registration request (RFC 7591 §2) and
//! a client ID metadata document (draft-ietf-oauth-client-id-metadata-document), which
//! share their field names.
//!
//! Fields are read one by one with their types checked, so an error names the field;
//! unknown fields (including localized `client_name#ja` variants) are ignored, as
//! RFC 7591 asks; `null` counts as absent. Sizes are bounded before anything is parsed.

use serde_json::{Map, Value};
use thiserror::Error;

/// Longest string field.
pub const MAX_FIELD_BYTES: usize = 2048;
/// Most entries in an array field.
pub const MAX_ARRAY_ITEMS: usize = 16;

/// Why client metadata did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetadataError {
    /// The document is larger than the caller's limit.
    #[error("client metadata is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not JSON.
    #[error("client metadata is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("client metadata must be a JSON object")]
    NotObject,
    /// A field of the wrong type.
    #[error("{field} must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// An array field with too many entries.
    #[error("{field} has more than {MAX_ARRAY_ITEMS} entries")]
    TooMany {
        /// The field.
        field: &'static str,
    },
    /// A string longer than [`MAX_FIELD_BYTES`].
    #[error("{field} is longer than {MAX_FIELD_BYTES} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
    },
}

/// The client metadata fields agentwire reads. Everything is as sent; the rules about
/// which values are acceptable are in `proto::oauth::client`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMetadata {
    /// `client_id` (metadata documents carry their own URL here).
    pub client_id: Option<String>,
    /// `redirect_uris`.
    pub redirect_uris: Option<Vec<String>>,
    /// `token_endpoint_auth_method`.
    pub token_endpoint_auth_method: Option<String>,
    /// `grant_types`.
    pub grant_types: Option<Vec<String>>,
    /// `response_types`.
    pub response_types: Option<Vec<String>>,
    /// `client_name`.
    pub client_name: Option<String>,
    /// `client_uri`.
    pub client_uri: Option<String>,
    /// `logo_uri` (kept, never displayed: a remote image on the consent page would let a
    /// client track who looks at it).
    pub logo_uri: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
    /// `contacts`.
    pub contacts: Option<Vec<String>>,
    /// `tos_uri`.
    pub tos_uri: Option<String>,
    /// `policy_uri`.
    pub policy_uri: Option<String>,
    /// `software_id`.
    pub software_id: Option<String>,
    /// `software_version`.
    pub software_version: Option<String>,
    /// `application_type` (OpenID Connect registration: `web` or `native`).
    pub application_type: Option<String>,
    /// Whether `jwks` or `jwks_uri` is present (key-based client authentication, which
    /// agentwire does not support).
    pub has_keys: bool,
    /// Whether `client_secret` is present (a metadata document must not carry one).
    pub has_secret: bool,
}

impl ClientMetadata {
    /// Parses `bytes`, refusing anything over `max_bytes`.
    ///
    /// # Errors
    /// [`MetadataError`] naming the field at fault.
    pub fn parse(bytes: &[u8], max_bytes: usize) -> Result<Self, MetadataError> {
        if bytes.len() > max_bytes {
            return Err(MetadataError::TooLarge { limit: max_bytes });
        }
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| MetadataError::NotJson(e.to_string()))?;
        let Value::Object(o) = v else {
            return Err(MetadataError::NotObject);
        };
        Ok(Self {
            client_id: string(&o, "client_id")?,
            redirect_uris: strings(&o, "redirect_uris")?,
            token_endpoint_auth_method: string(&o, "token_endpoint_auth_method")?,
            grant_types: strings(&o, "grant_types")?,
            response_types: strings(&o, "response_types")?,
            client_name: string(&o, "client_name")?,
            client_uri: string(&o, "client_uri")?,
            logo_uri: string(&o, "logo_uri")?,
            scope: string(&o, "scope")?,
            contacts: strings(&o, "contacts")?,
            tos_uri: string(&o, "tos_uri")?,
            policy_uri: string(&o, "policy_uri")?,
            software_id: string(&o, "software_id")?,
            software_version: string(&o, "software_version")?,
            application_type: string(&o, "application_type")?,
            has_keys: present(&o, "jwks") || present(&o, "jwks_uri"),
            has_secret: present(&o, "client_secret"),
        })
    }

    /// The fields that are set, as JSON (what a registration response echoes).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut s = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        };
        s("client_id", &self.client_id);
        s(
            "token_endpoint_auth_method",
            &self.token_endpoint_auth_method,
        );
        s("client_name", &self.client_name);
        s("client_uri", &self.client_uri);
        s("logo_uri", &self.logo_uri);
        s("scope", &self.scope);
        s("tos_uri", &self.tos_uri);
        s("policy_uri", &self.policy_uri);
        s("software_id", &self.software_id);
        s("software_version", &self.software_version);
        s("application_type", &self.application_type);
        let mut a = |k: &str, v: &Option<Vec<String>>| {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        };
        a("redirect_uris", &self.redirect_uris);
        a("grant_types", &self.grant_types);
        a("response_types", &self.response_types);
        a("contacts", &self.contacts);
        m
    }
}

fn present(o: &Map<String, Value>, k: &str) -> bool {
    o.get(k).is_some_and(|v| !v.is_null())
}

fn string(o: &Map<String, Value>, field: &'static str) -> Result<Option<String>, MetadataError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_FIELD_BYTES => {
            Err(MetadataError::TooLong { field })
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(MetadataError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn strings(
    o: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<String>>, MetadataError> {
    let wrong = MetadataError::WrongType {
        field,
        expected: "an array of strings",
    };
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            if items.len() > MAX_ARRAY_ITEMS {
                return Err(MetadataError::TooMany { field });
            }
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) if s.len() > MAX_FIELD_BYTES => {
                        Err(MetadataError::TooLong { field })
                    }
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(wrong.clone()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        }
        Some(_) => Err(wrong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_and_ignores_the_rest() {
        let doc = br#"{
            "redirect_uris": ["https://a.example/cb", "http://127.0.0.1/cb"],
            "client_name": "Example", "client_name#ja": "x",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "mcp", "logo_uri": null, "unknown": {"deep": [1, 2]},
            "jwks_uri": "https://a.example/jwks"
        }"#;
        let m = ClientMetadata::parse(doc, 4096).unwrap();
        assert_eq!(m.redirect_uris.as_ref().unwrap().len(), 2);
        assert_eq!(m.client_name.as_deref(), Some("Example"));
        assert_eq!(m.logo_uri, None);
        assert!(m.has_keys && !m.has_secret);
        let again = serde_json::to_vec(&m.to_json()).unwrap();
        let m2 = ClientMetadata::parse(&again, 4096).unwrap();
        assert_eq!(
            m2,
            ClientMetadata {
                has_keys: false,
                ..m
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let p = |s: &str| ClientMetadata::parse(s.as_bytes(), 1 << 16);
        assert_eq!(p("[]"), Err(MetadataError::NotObject));
        assert!(matches!(p("{"), Err(MetadataError::NotJson(_))));
        assert_eq!(
            p(r#"{"redirect_uris": "https://a.example/cb"}"#),
            Err(MetadataError::WrongType {
                field: "redirect_uris",
                expected: "an array of strings"
            })
        );
        assert_eq!(
            p(r#"{"redirect_uris": [1]}"#).unwrap_err().to_string(),
            "redirect_uris must be an array of strings"
        );
        assert_eq!(
            p(r#"{"client_name": 7}"#),
            Err(MetadataError::WrongType {
                field: "client_name",
                expected: "a string"
            })
        );
        let many = format!(r#"{{"contacts": [{}]}}"#, vec!["\"a\""; 17].join(","));
        assert_eq!(p(&many), Err(MetadataError::TooMany { field: "contacts" }));
        let long = format!(
            r#"{{"client_name": "{}"}}"#,
            "x".repeat(MAX_FIELD_BYTES + 1)
        );
        assert_eq!(
            p(&long),
            Err(MetadataError::TooLong {
                field: "client_name"
            })
        );
        assert_eq!(
            ClientMetadata::parse(b"{}", 1),
            Err(MetadataError::TooLarge { limit: 1 })
        );
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        assert!(matches!(p(&deep), Err(MetadataError::NotJson(_))));
    }
}
