//! Discovery documents: RFC 8414 authorization server metadata, and the fields the
//! RFC 9728 protected-resource metadata adds when this server is its authorization
//! server.

use super::{SCOPE_MCP, Settings};
use serde_json::{Value, json};

/// Path of the authorization endpoint.
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/oauth/token";
/// Path of the revocation endpoint.
pub const REVOKE_PATH: &str = "/oauth/revoke";
/// Path of the registration endpoint.
pub const REGISTER_PATH: &str = "/oauth/register";
/// Where RFC 8414 metadata is served (with the issuer's path, if any, appended).
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// Where users see and revoke the apps they connected.
pub const GRANTS_PATH: &str = "/oauth/grants";

/// The authorization server metadata document.
pub fn authorization_server_metadata(s: &Settings) -> Value {
    let auth_methods = ["none", "client_secret_basic", "client_secret_post"];
    let mut m = json!({
        "issuer": s.issuer,
        "authorization_endpoint": s.endpoint(AUTHORIZE_PATH),
        "token_endpoint": s.endpoint(TOKEN_PATH),
        "revocation_endpoint": s.endpoint(REVOKE_PATH),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "scopes_supported": [SCOPE_MCP],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": s.metadata_documents,
    });
    if s.registration {
        m["registration_endpoint"] = s.endpoint(REGISTER_PATH).into();
    }
    m
}

/// The fields added to protected-resource metadata: where to get tokens and for what.
pub fn resource_fields(s: &Settings) -> [(&'static str, Value); 2] {
    [
        ("authorization_servers", json!([s.issuer])),
        ("scopes_supported", json!([SCOPE_MCP])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_every_endpoint() {
        let mut s = Settings::new(
            "https://mcp.example.com",
            &["https://mcp.example.com/mcp".into()],
        );
        let m = authorization_server_metadata(&s);
        assert_eq!(m["issuer"], "https://mcp.example.com");
        assert_eq!(m["token_endpoint"], "https://mcp.example.com/oauth/token");
        assert_eq!(
            m["registration_endpoint"],
            "https://mcp.example.com/oauth/register"
        );
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(m["client_id_metadata_document_supported"], true);
        s.registration = false;
        s.metadata_documents = false;
        let m = authorization_server_metadata(&s);
        assert!(m.get("registration_endpoint").is_none());
        assert_eq!(m["client_id_metadata_document_supported"], false);
        let [(k, v), _] = resource_fields(&s);
        assert_eq!(
            (k, v),
            ("authorization_servers", json!(["https://mcp.example.com"]))
        );
    }
}
