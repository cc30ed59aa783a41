//! The OAuth 2.1 authorization server end to end on loopback, driven as a client and a
//! browser would: discovery, registration, sign-in, consent, code, tokens, MCP calls,
//! refresh, revocation, and every hostile case the issue names — each refused with the
//! right OAuth error, and nothing issued (checked in the store and the counters).

#![allow(clippy::disallowed_methods)]

mod oauth_support;

use agentwire::services::oauth::{OAuthStats, OAuthStore};
use oauth_support::{Harness, pkce_pair, query};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

const CB: &str = "http://127.0.0.1/callback";

#[tokio::test]
async fn discovery_documents_describe_the_server() {
    let h = Harness::start(|_| {}).await;
    let mut b = h.browser();
    let m = b.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.header("access-control-allow-origin"), Some("*"));
    let m = m.json();
    assert_eq!(m["issuer"], h.base);
    assert_eq!(
        m["authorization_endpoint"],
        format!("{}/oauth/authorize", h.base)
    );
    assert_eq!(m["token_endpoint"], format!("{}/oauth/token", h.base));
    assert_eq!(
        m["registration_endpoint"],
        format!("{}/oauth/register", h.base)
    );
    assert_eq!(m["revocation_endpoint"], format!("{}/oauth/revoke", h.base));
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(m["client_id_metadata_document_supported"], true);
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);

    // The resource's metadata lists this server, and the 401 points at it.
    let prm = b
        .get("/.well-known/oauth-protected-resource/mcp")
        .await
        .json();
    assert_eq!(prm["resource"], format!("{}/mcp", h.base));
    assert_eq!(prm["authorization_servers"], serde_json::json!([h.base]));
    assert_eq!(prm["scopes_supported"], serde_json::json!(["mcp"]));
    let r = b.mcp("/mcp", "").await;
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            h.base
        )) && challenge.contains("scope=\"mcp\""),
        "{challenge}"
    );
    let r = b.mcp("/api/experimental/mcp/http", "awat_nonsense").await;
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("oauth-protected-resource/api/experimental/mcp/http")
    );
    h.stop().await;
}

#[tokio::test]
async fn code_flow_tokens_refresh_and_revocation() {
    let h = Harness::start(|_| {}).await;
    let client = h.public_client().await;
    let mut b = h.browser();
    let (verifier, challenge) = pkce_pair();

    // Sign-in page, then consent naming the client, the user and where it goes.
    let page = b
        .authorize(
            &client,
            "http://127.0.0.1:49152/callback",
            &challenge,
            &[("resource", &format!("{}/mcp", h.base))],
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Sign in") && page.body.contains("Test App"),
        "{}",
        page.body
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let consent = b.login_token(&page, &h.alice).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(
        consent.body.contains("Allow Test App to use agentwire?"),
        "{}",
        consent.body
    );
    assert!(consent.body.contains("alice") && consent.body.contains("127.0.0.1:49152"));
    assert!(b.cookies.contains_key("aw_session"), "signed in");
    let r = b.consent(&consent, "approve").await;
    assert_eq!(r.status, 303);
    let loc = r.location();
    assert!(
        loc.starts_with("http://127.0.0.1:49152/callback?code=awac_"),
        "{loc}"
    );
    let q = query(loc);
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], h.base);

    // Token exchange.
    let t = b
        .exchange(
            &client,
            &q["code"],
            &verifier,
            "http://127.0.0.1:49152/callback",
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.header("cache-control"), Some("no-store"));
    let t = t.json();
    assert_eq!(
        (
            t["token_type"].as_str(),
            t["scope"].as_str(),
            t["expires_in"].as_u64()
        ),
        (Some("Bearer"), Some("mcp"), Some(3600))
    );
    let access = t["access_token"].as_str().unwrap().to_string();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();

    // The access token works on the MCP endpoint, as alice.
    let r = b.mcp("/mcp", &access).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("list_workspaces"));
    assert_eq!(
        b.mcp("/api/experimental/mcp/http", &access).await.status,
        200
    );

    // Refresh rotates; the old refresh token is then reuse and revokes the family.
    let r = b
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", &refresh),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = r.json();
    let access2 = r["access_token"].as_str().unwrap().to_string();
    let refresh2 = r["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh);
    assert_eq!(b.mcp("/mcp", &access2).await.status, 200);
    let reuse = b
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", &refresh),
        ])
        .await;
    assert_eq!(
        (reuse.status, reuse.error().as_str()),
        (400, "invalid_grant")
    );
    for tok in [&access, &access2] {
        let r = b.mcp("/mcp", tok).await;
        assert_eq!(r.status, 401, "every token of the family is dead");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("invalid_token")
        );
    }
    let r = b
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", &refresh2),
        ])
        .await;
    assert_eq!(
        r.error(),
        "invalid_grant",
        "the newest refresh token died with the family"
    );
    assert_eq!(OAuthStats::get(&h.oauth.stats.reuse_revocations), 1);

    // A second authorization (the browser is still signed in: straight to consent),
    // then RFC 7009 revocation: the next MCP call is 401.
    let (verifier, challenge) = pkce_pair();
    let q = b.approve(&client, CB, &challenge, &h.alice).await;
    let t = b.exchange(&client, &q["code"], &verifier, CB).await.json();
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(b.mcp("/mcp", &access).await.status, 200);
    let r = b
        .post_form_with(
            "/oauth/revoke",
            &[
                ("token", t["refresh_token"].as_str().unwrap()),
                ("client_id", &client),
                ("token_type_hint", "refresh_token"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.mcp("/mcp", &access).await.status, 401);
    let r = b
        .post_form_with(
            "/oauth/revoke",
            &[("token", "awrt_unknown"), ("client_id", &client)],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "unknown tokens are not an error (RFC 7009)");

    // Denying consent sends access_denied back, and issues nothing.
    let codes = OAuthStats::get(&h.oauth.stats.codes_issued);
    let (_, challenge) = pkce_pair();
    let page = b.authorize(&client, CB, &challenge, &[]).await;
    let r = b.consent(&page, "deny").await;
    let q = query(r.location());
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "st-123")
    );
    assert_eq!(OAuthStats::get(&h.oauth.stats.codes_issued), codes);
    h.stop().await;
}

#[tokio::test]
async fn confidential_clients_authenticate() {
    let h = Harness::start(|_| {}).await;
    for method in ["client_secret_basic", "client_secret_post"] {
        let (client, secret) = h
            .register(serde_json::json!({"redirect_uris": [CB], "token_endpoint_auth_method": method, "client_name": "Conf"}))
            .await;
        let secret = secret.expect("a confidential client gets a secret");
        assert!(secret.starts_with("awcs_"));
        let mut b = h.browser();
        let (verifier, challenge) = pkce_pair();
        let q = b.approve(&client, CB, &challenge, &h.bob).await;
        let pairs = [
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("code_verifier", &verifier),
            ("redirect_uri", CB),
        ];
        // Without the secret, or with a wrong one: invalid_client, and the code survives
        // (client authentication comes before the code is touched).
        let r = b
            .token(&[&pairs[..], &[("client_id", &client)]].concat())
            .await;
        assert_eq!(r.error(), "invalid_client");
        let basic = agentwire::wire::oauth::header::BasicCredentials {
            client_id: client.clone(),
            secret: "awcs_wrong".into(),
        }
        .encode();
        let r = b
            .post_form_with("/oauth/token", &pairs, &[("authorization", &basic)])
            .await;
        assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"));
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
        let r = if method == "client_secret_basic" {
            let basic = agentwire::wire::oauth::header::BasicCredentials {
                client_id: client.clone(),
                secret,
            }
            .encode();
            b.post_form_with("/oauth/token", &pairs, &[("authorization", &basic)])
                .await
        } else {
            b.token(
                &[
                    &pairs[..],
                    &[("client_id", &client), ("client_secret", &secret)],
                ]
                .concat(),
            )
            .await
        };
        assert_eq!(r.status, 200, "{method}: {}", r.body);
    }
    h.stop().await;
}

/// Wrong or missing PKCE verifier, reused code, expired code, wrong redirect URI, another
/// client: each refused with its error, and no grant appears.
#[tokio::test]
async fn hostile_code_exchanges() {
    let h = Harness::start(|_| {}).await;
    let client = h.public_client().await;
    let other = h.public_client().await;
    let mut b = h.browser();
    let grants = |h: &Harness| {
        let s = h.store.clone();
        async move { s.counts().await.unwrap().live_grants }
    };

    // Missing verifier: invalid_request, and the code stays usable.
    let (verifier, challenge) = pkce_pair();
    let q = b.approve(&client, CB, &challenge, &h.alice).await;
    let r = b
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", &q["code"]),
            ("redirect_uri", CB),
        ])
        .await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_request"));
    // Wrong verifier: invalid_grant, and the code is burned.
    let (wrong, _) = pkce_pair();
    let r = b.exchange(&client, &q["code"], &wrong, CB).await;
    assert_eq!(r.error(), "invalid_grant");
    let r = b.exchange(&client, &q["code"], &verifier, CB).await;
    assert_eq!(
        r.error(),
        "invalid_grant",
        "a code survives no wrong verifier"
    );
    assert_eq!(grants(&h).await, 0);

    // Another client, another redirect URI, another resource: refused.
    for (who, redirect, extra, want) in [
        (&other, CB, None, "invalid_grant"),
        (&client, "http://127.0.0.1/other", None, "invalid_grant"),
        (
            &client,
            CB,
            Some("https://evil.example/mcp"),
            "invalid_target",
        ),
    ] {
        let (verifier, challenge) = pkce_pair();
        let q = b.approve(&client, CB, &challenge, &h.alice).await;
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("client_id", who.as_str()),
            ("code", q["code"].as_str()),
            ("code_verifier", &verifier),
            ("redirect_uri", redirect),
        ];
        if let Some(res) = extra {
            pairs.push(("resource", res));
        }
        assert_eq!(
            b.token(&pairs).await.error(),
            want,
            "{who} {redirect} {extra:?}"
        );
    }
    assert_eq!(grants(&h).await, 0);

    // Reused code: the second use fails and revokes what the first made.
    let (verifier, challenge) = pkce_pair();
    let q = b.approve(&client, CB, &challenge, &h.alice).await;
    let t = b.exchange(&client, &q["code"], &verifier, CB).await.json();
    let access = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(b.mcp("/mcp", &access).await.status, 200);
    let r = b.exchange(&client, &q["code"], &verifier, CB).await;
    assert_eq!(r.error(), "invalid_grant");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    assert_eq!(
        b.mcp("/mcp", &access).await.status,
        401,
        "the first use's tokens are revoked"
    );
    let r = b
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(r.error(), "invalid_grant");
    assert_eq!(grants(&h).await, 0);

    // Expired code (codes live 60 s).
    let (verifier, challenge) = pkce_pair();
    let q = b.approve(&client, CB, &challenge, &h.alice).await;
    agentwire::runtime::clock::skew_wall_clock_for_tests(std::time::Duration::from_secs(61));
    let r = b.exchange(&client, &q["code"], &verifier, CB).await;
    assert_eq!(
        (r.error().as_str(), r.json()["error_description"].as_str()),
        ("invalid_grant", Some("authorization code expired"))
    );
    assert_eq!(grants(&h).await, 0);

    // Unknown grant types and garbage.
    assert_eq!(
        b.token(&[("grant_type", "password"), ("client_id", &client)])
            .await
            .error(),
        "unsupported_grant_type"
    );
    assert_eq!(
        b.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "aw-nobody"),
            ("code", "x"),
            ("code_verifier", &verifier)
        ])
        .await
        .error(),
        "invalid_client"
    );
    let r = b
        .request(
            http::Method::POST,
            "/oauth/token",
            Some("application/json"),
            b"{}".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.error(), "invalid_request");
    let r = b
        .request(
            http::Method::POST,
            "/oauth/token",
            Some("application/x-www-form-urlencoded"),
            b"grant_type=%zz".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.error(), "invalid_request");
    assert_eq!(grants(&h).await, 0);
    assert!(
        h.oauth
            .stats
            .errors()
            .iter()
            .any(|(c, n)| *c == "invalid_grant" && *n >= 6)
    );
    h.stop().await;
}

/// Redirect URIs that are not registered — with tricks of encoding, ports and paths —
/// are refused on a page, never redirected to; errors after that go to the client.
#[tokio::test]
async fn hostile_authorization_requests() {
    let h = Harness::start(|_| {}).await;
    let (client, _) = h
        .register(serde_json::json!({"redirect_uris": ["https://app.example/cb", CB], "token_endpoint_auth_method": "none"}))
        .await;
    let mut b = h.browser();
    let (_, challenge) = pkce_pair();
    let before = h.counts().await;
    for trick in [
        "https://evil.example/cb",
        "https://app.example/cb/",
        "https://app.example/CB",
        "https://APP.example/cb",
        "https://app.example:443/cb",
        "https://app.example:8443/cb",
        "https://app.example/c%62",
        "https://app.example/cb%2F..%2Fevil",
        "https://app.example/cb/../cb",
        "https://app.example/cb?next=https://evil.example",
        "https://app.example/cb#frag",
        "https://app.example.evil.example/cb",
        "https://app.example@evil.example/cb",
        "https://app.example\\@evil.example/cb",
        "http://app.example/cb",
        "http://localhost/callback",
        "http://127.0.0.1:49152/callback/",
        "http://127.0.0.1:49152/callback/../x",
        "http://127.0.0.2:49152/callback",
        "javascript:alert(1)",
    ] {
        let r = b.authorize(&client, trick, &challenge, &[]).await;
        assert_eq!(r.status, 400, "{trick}: {}", r.body);
        assert!(r.header("location").is_none(), "{trick}: never redirected");
        assert!(r.body.contains("This sign-in link is not valid"), "{trick}");
    }
    // Unknown client, missing client: pages too.
    let r = b.authorize("aw-nobody", CB, &challenge, &[]).await;
    assert!(r.status == 400 && r.header("location").is_none());
    let r = b.get("/oauth/authorize?response_type=code").await;
    assert!(r.status == 400 && r.header("location").is_none());

    // Once the redirect URI is the client's, errors go back to it.
    for (extra, remove_method, want) in [
        (
            vec![("resource", "https://evil.example/mcp")],
            false,
            "invalid_target",
        ),
        (
            vec![("resource", "https://other.example/mcp#x")],
            false,
            "invalid_target",
        ),
        (vec![], true, "invalid_request"),
        (vec![("scope", "bad\u{7f}scope")], false, "invalid_scope"),
    ] {
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", client.as_str()),
            ("redirect_uri", CB),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
        ];
        if !remove_method {
            pairs.push(("code_challenge_method", "S256"));
        }
        pairs.extend(extra.iter().copied());
        let r = b
            .get(&format!(
                "/oauth/authorize?{}",
                agentwire::wire::oauth::form::encode_pairs(pairs)
            ))
            .await;
        assert_eq!(r.status, 303, "{extra:?}: {}", r.body);
        let q = query(r.location());
        assert!(r.location().starts_with(CB));
        assert_eq!(
            (q["error"].as_str(), q["state"].as_str(), q["iss"].as_str()),
            (want, "s", h.base.as_str())
        );
    }
    let r = b
        .authorize(&client, CB, &challenge, &[("response_type", "token")])
        .await;
    assert_eq!(
        r.status, 303,
        "a repeated response_type goes back as invalid_request"
    );
    assert_eq!(query(r.location())["error"], "invalid_request");
    let after = h.counts().await;
    assert_eq!(
        (after.codes, after.live_grants),
        (before.codes, before.live_grants)
    );
    h.stop().await;
}

/// Consent without the CSRF token, with another's token, from another browser or from
/// another site: refused, nothing issued.
#[tokio::test]
async fn consent_needs_csrf_and_the_same_browser() {
    let h = Harness::start(|_| {}).await;
    let client = h.public_client().await;
    let (_, challenge) = pkce_pair();
    let mut victim = h.browser();
    let page = victim.authorize(&client, CB, &challenge, &[]).await;
    let page = victim.login_token(&page, &h.alice).await;
    let request = page.field("request").unwrap();
    let csrf = page.field("csrf").unwrap();
    let codes = || OAuthStats::get(&h.oauth.stats.codes_issued);

    for (what, pairs) in [
        (
            "no CSRF token",
            vec![("request", request.as_str()), ("decision", "approve")],
        ),
        (
            "an empty CSRF token",
            vec![
                ("request", request.as_str()),
                ("csrf", ""),
                ("decision", "approve"),
            ],
        ),
        (
            "a wrong CSRF token",
            vec![
                ("request", request.as_str()),
                ("csrf", "awcf_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ("decision", "approve"),
            ],
        ),
    ] {
        let r = victim.post_form("/oauth/consent", &pairs).await;
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        assert!(r.header("location").is_none());
    }
    // Another site posting the victim's own form (Origin/Sec-Fetch-Site): refused.
    let pairs = [
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "approve"),
    ];
    let r = victim
        .post_form_with(
            "/oauth/consent",
            &pairs,
            &[
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = victim
        .post_form_with("/oauth/consent", &pairs, &[("origin", "null")])
        .await;
    assert_eq!(r.status, 403);
    // The attacker's own pending request, approved in the victim's browser: the browser
    // binding does not match.
    let mut attacker = h.browser();
    let apage = attacker.authorize(&client, CB, &challenge, &[]).await;
    let mut victim_with_attackers_form = victim.clone();
    let r = victim_with_attackers_form
        .post_form(
            "/oauth/consent",
            &[
                ("request", &apage.field("request").unwrap()),
                ("csrf", &apage.field("csrf").unwrap()),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // The victim's form in the attacker's browser (with the attacker's cookies): refused.
    let r = attacker.post_form("/oauth/consent", &pairs).await;
    assert_eq!(r.status, 403);
    assert_eq!(codes(), 0, "nothing issued");
    assert!(OAuthStats::get(&h.oauth.stats.csrf_refused) >= 7);

    // The genuine submit works, once.
    let r = victim.post_form("/oauth/consent", &pairs).await;
    assert_eq!(r.status, 303);
    let r = victim.post_form("/oauth/consent", &pairs).await;
    assert_eq!(r.status, 400, "a second submit finds nothing pending");
    assert_eq!(codes(), 1);

    // A bad token at sign-in: the page again with an error, no session.
    let mut fresh = h.browser();
    let page = fresh.authorize(&client, CB, &challenge, &[]).await;
    let r = fresh.login_token(&page, "aw_not-a-token").await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("not a valid user token") && r.body.contains("role=\"alert\""));
    assert!(!fresh.cookies.contains_key("aw_session"));
    h.stop().await;
}

#[tokio::test]
async fn registration_limits() {
    let h = Harness::start(|_| {}).await;
    let mut b = h.browser();
    let before = h.counts().await.clients;
    // Oversized: refused unread, nothing stored.
    let big = serde_json::json!({"redirect_uris": [CB], "client_name": "x".repeat(20_000)});
    let r = b.post_json("/oauth/register", &big, &[]).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (413, "invalid_client_metadata")
    );
    for (meta, want) in [
        (
            serde_json::json!({"redirect_uris": ["http://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            serde_json::json!({"redirect_uris": ["https://a.example/cb#x"]}),
            "invalid_redirect_uri",
        ),
        (serde_json::json!({}), "invalid_redirect_uri"),
        (
            serde_json::json!({"redirect_uris": [CB], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            serde_json::json!({"redirect_uris": CB}),
            "invalid_client_metadata",
        ),
        (serde_json::json!([1, 2]), "invalid_client_metadata"),
    ] {
        let r = b.post_json("/oauth/register", &meta, &[]).await;
        assert_eq!((r.status, r.error()), (400, want.to_string()), "{meta}");
    }
    let r = b
        .request(
            http::Method::POST,
            "/oauth/register",
            Some("text/plain"),
            b"{}".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.error(), "invalid_client_metadata");
    assert_eq!(h.counts().await.clients, before, "nothing registered");

    // The admin can turn registration off: not advertised, refused.
    let off = Harness::start(|o| o.registration = false).await;
    let mut b = off.browser();
    let m = b
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    assert!(m.get("registration_endpoint").is_none());
    let r = b
        .post_json(
            "/oauth/register",
            &serde_json::json!({"redirect_uris": [CB]}),
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    off.stop().await;
    h.stop().await;
}

/// A token issued by one server is refused by another whose MCP endpoint is elsewhere,
/// even with a shared store: audience binding (RFC 8707).
#[tokio::test]
async fn tokens_are_bound_to_their_resource() {
    let store: Arc<dyn OAuthStore> = Arc::new(agentwire::services::oauth::MemoryStore::new());
    let users = oauth_support::users();
    let (alice, control) = (users.alice.clone(), users.control.clone());
    let a = Harness::start_with(users, store.clone(), |_| {}).await;
    let b_users = oauth_support::Users {
        alice: alice.clone(),
        bob: String::new(),
        root: String::new(),
        control,
    };
    let b = Harness::start_with(b_users, store, |_| {}).await;
    let client = a.public_client().await;
    let mut br = a.browser();
    let (verifier, challenge) = pkce_pair();
    let q = br.approve(&client, CB, &challenge, &alice).await;
    let t = br.exchange(&client, &q["code"], &verifier, CB).await.json();
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(br.mcp("/mcp", access).await.status, 200);
    let mut other = b.browser();
    let r = other.mcp("/mcp", access).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("another resource"),
        "{:?}",
        r.header("www-authenticate")
    );
    // Nor can it be refreshed into one for B: the resource must stay the grant's.
    let r = other
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ("resource", &format!("{}/mcp", b.base)),
        ])
        .await;
    assert_eq!(r.error(), "invalid_target");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn grants_are_visible_and_revocable_by_their_user_and_admins() {
    let h = Harness::start(|_| {}).await;
    let client = h.public_client().await;
    let mut tokens = Vec::new();
    for user in [&h.alice, &h.bob] {
        let mut b = h.browser();
        let (verifier, challenge) = pkce_pair();
        let q = b.approve(&client, CB, &challenge, user).await;
        tokens.push(
            b.exchange(&client, &q["code"], &verifier, CB).await.json()["access_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut api = h.browser();
    let auth = |t: &str| format!("Bearer {t}");
    let list = |b: &mut oauth_support::Browser, t: String, q: &'static str| {
        let mut b = b.clone();
        async move {
            b.request(
                http::Method::GET,
                &format!("/api/oauth/grants{q}"),
                None,
                vec![],
                &[("authorization", &auth(&t))],
            )
            .await
        }
    };
    let mine = list(&mut api, h.alice.clone(), "").await.json();
    let grants = mine["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(
        (
            grants[0]["user"].as_str(),
            grants[0]["client_name"].as_str(),
            grants[0]["status"].as_str()
        ),
        (Some("alice"), Some("Test App"), Some("active"))
    );
    assert_eq!(
        list(&mut api, h.alice.clone(), "?user=bob").await.status,
        403
    );
    assert_eq!(
        list(&mut api, h.root.clone(), "").await.json()["grants"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        list(&mut api, tokens[0].clone(), "").await.status,
        401,
        "OAuth tokens are for MCP only"
    );
    let bob_grant = list(&mut api, h.bob.clone(), "").await.json()["grants"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // alice cannot revoke bob's grant (it reads as not found); bob can.
    let api2 = api.clone();
    let del = move |t: &str, id: &str| {
        let mut b = api2.clone();
        let (t, id) = (t.to_string(), id.to_string());
        async move {
            b.request(
                http::Method::DELETE,
                &format!("/api/oauth/grants/{id}"),
                None,
                vec![],
                &[("authorization", &auth(&t))],
            )
            .await
        }
    };
    assert_eq!(del(&h.alice, &bob_grant).await.status, 404);
    assert_eq!(api.mcp("/mcp", &tokens[1]).await.status, 200);
    assert_eq!(del(&h.bob, &bob_grant).await.json()["revoked"], true);
    assert_eq!(api.mcp("/mcp", &tokens[1]).await.status, 401);

    // alice disconnects from the connected-apps page (signed in there with her token).
    let mut b = h.browser();
    let page = b.get("/oauth/grants").await;
    assert!(page.body.contains("Sign in"));
    let page = b.login_token(&page, &h.alice).await;
    assert!(
        page.body.contains("Connected apps") && page.body.contains("Test App"),
        "{}",
        page.body
    );
    let grant = page.field("grant").unwrap();
    let csrf = page.field("csrf").unwrap();
    let r = b
        .post_form(
            "/oauth/grants/revoke",
            &[("grant", &grant), ("csrf", "wrong")],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = b
        .post_form(
            "/oauth/grants/revoke",
            &[("grant", &grant), ("csrf", &csrf)],
        )
        .await;
    assert!(
        r.body.contains("Disconnected Test App") && r.body.contains("No apps are connected"),
        "{}",
        r.body
    );
    assert_eq!(api.mcp("/mcp", &tokens[0]).await.status, 401);

    // Admins list clients and delete them.
    let r = api
        .request(
            http::Method::GET,
            "/api/oauth/clients",
            None,
            vec![],
            &[("authorization", &auth(&h.root))],
        )
        .await
        .json();
    assert_eq!(r["clients"][0]["client_id"], client);
    let r = api
        .request(
            http::Method::GET,
            "/api/oauth/clients",
            None,
            vec![],
            &[("authorization", &auth(&h.alice))],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = api
        .request(
            http::Method::DELETE,
            &format!("/api/oauth/clients/{client}"),
            None,
            vec![],
            &[("authorization", &auth(&h.root))],
        )
        .await;
    assert_eq!(r.status, 200);
    let (_, challenge) = pkce_pair();
    assert_eq!(
        h.browser()
            .authorize(&client, CB, &challenge, &[])
            .await
            .status,
        400,
        "deleted clients are unknown"
    );
    h.stop().await;
}

#[tokio::test]
async fn sign_in_attempts_are_limited() {
    let h = Harness::start(|_| {}).await;
    let client = h.public_client().await;
    let (_, challenge) = pkce_pair();
    let mut b = h.browser();
    let mut page = b.authorize(&client, CB, &challenge, &[]).await;
    for _ in 0..50 {
        page = b.login_token(&page, "aw_wrong").await;
        assert_eq!(page.status, 401);
    }
    let r = b.login_token(&page, &h.alice).await;
    assert_eq!(
        r.status, 429,
        "the address is locked out for a while, even with the right token"
    );
    assert!(r.body.contains("Too many failed sign-ins"));
    assert_eq!(OAuthStats::get(&h.oauth.stats.login_limited), 1);
    assert_eq!(h.oauth.stats.login_failures.load(Relaxed), 50);
    h.stop().await;
}

#[path = "common/pki.rs"]
mod pki;

/// A TLS server on loopback publishing client ID metadata documents, counting requests.
struct DocServer {
    port: u16,
    hits: Arc<std::sync::atomic::AtomicU64>,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl DocServer {
    async fn start() -> Self {
        use axum::response::IntoResponse;
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::Ca::new(dir.path(), "docs");
        let leaf = ca.leaf(
            dir.path(),
            "docs",
            &["localhost", "127.0.0.1"],
            pki::Validity::Good,
        );
        let tls = agentwire::runtime::tls::ServerTls::load(&leaf.cert, &leaf.key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let base = format!("https://localhost:{port}");
        let doc = move |path: &str, id: &str| {
            serde_json::json!({
                "client_id": format!("{base}{id}"),
                "client_name": format!("Doc App {path}"),
                "redirect_uris": [CB],
                "token_endpoint_auth_method": "none",
            })
            .to_string()
        };
        let (good, other) = (
            doc("good", "/client.json"),
            doc("other", "/someone-else.json"),
        );
        let big = format!("{{\"client_id\":\"x\",\"pad\":\"{}\"}}", "a".repeat(6000));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            h.fetch_add(1, Relaxed);
            let (good, other, big) = (good.clone(), other.clone(), big.clone());
            async move {
                let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
                match uri.path() {
                    "/client.json" => (
                        json,
                        [(axum::http::header::CACHE_CONTROL, "max-age=600")],
                        good,
                    )
                        .into_response(),
                    "/other.json" => (json, other).into_response(),
                    "/big.json" => (json, big).into_response(),
                    "/html.json" => {
                        ([(axum::http::header::CONTENT_TYPE, "text/html")], good).into_response()
                    }
                    "/redirect.json" => (
                        axum::http::StatusCode::FOUND,
                        [(axum::http::header::LOCATION, "/client.json")],
                    )
                        .into_response(),
                    _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(agentwire::services::http::serve_tls(
            listener,
            app,
            Some(tls),
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            port,
            hits,
            ca: ca.file.clone(),
            _dir: dir,
            stop: Some(tx),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Relaxed)
    }
}

impl Drop for DocServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Client ID metadata documents: fetched over TLS, validated, cached; refused when the
/// document is wrong, and never fetched from a non-public address outside tests.
#[tokio::test]
async fn client_id_metadata_documents() {
    let docs = DocServer::start().await;
    let trust = agentwire::runtime::tls::ClientTls::with_ca_file(&docs.ca).unwrap();
    let h = Harness::start(|o| {
        o.fetch = Some(agentwire::services::oauth::FetchConfig {
            policy: agentwire::proto::oauth::cimd::AddressPolicy::AllowPrivate,
            tls: trust.clone(),
            ..Default::default()
        });
    })
    .await;
    let client = docs.url("/client.json");
    let mut b = h.browser();
    let (verifier, challenge) = pkce_pair();
    let page = b.authorize(&client, CB, &challenge, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Doc App good"));
    let consent = b.login_token(&page, &h.alice).await;
    assert!(
        consent
            .body
            .contains("<strong>localhost</strong>, which publishes its details"),
        "{}",
        consent.body
    );
    let r = b.consent(&consent, "approve").await;
    let q = query(r.location());
    let t = b.exchange(&client, &q["code"], &verifier, CB).await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(
        b.mcp("/mcp", t.json()["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );
    assert_eq!(docs.hits(), 1);
    // Cached (max-age=600): a second authorization does not fetch again.
    let page = b.authorize(&client, CB, &challenge, &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(docs.hits(), 1, "served from the cache");

    for (path, why) in [
        ("/other.json", "not the URL it was fetched from"),
        ("/big.json", "larger than"),
        ("/html.json", "not application/json"),
        ("/redirect.json", "redirects are not followed"),
        ("/missing.json", "404"),
    ] {
        let r = b.authorize(&docs.url(path), CB, &challenge, &[]).await;
        assert_eq!(r.status, 400, "{path}");
        assert!(r.body.contains(why), "{path}: {}", r.body);
        assert!(r.header("location").is_none());
    }
    let fetched = docs.hits();

    // The default policy: public addresses only. Nothing is fetched.
    let public_only = Harness::start(|o| {
        o.fetch = Some(agentwire::services::oauth::FetchConfig {
            tls: trust.clone(),
            ..Default::default()
        });
    })
    .await;
    let mut b = public_only.browser();
    for url in [
        docs.url("/client.json"),
        format!("https://127.0.0.1:{}/client.json", docs.port),
        format!("https://[::1]:{}/client.json", docs.port),
        "https://10.0.0.1/client.json".into(),
        "https://169.254.169.254/latest/meta-data".into(),
        "https://[fd00::1]/client.json".into(),
        "https://[::ffff:127.0.0.1]/client.json".into(),
    ] {
        let r = b.authorize(&url, CB, &challenge, &[]).await;
        assert_eq!(r.status, 400, "{url}");
        assert!(r.body.contains("non-public address"), "{url}: {}", r.body);
    }
    for (url, why) in [
        (
            format!("http://localhost:{}/client.json", docs.port),
            "unknown client_id",
        ),
        (
            format!("https://localhost:{}/", docs.port),
            "must have a path",
        ),
        (
            format!("https://localhost:{}/a/../client.json", docs.port),
            "dot segments",
        ),
    ] {
        let r = b.authorize(&url, CB, &challenge, &[]).await;
        assert!(r.status == 400 && r.body.contains(why), "{url}: {}", r.body);
    }
    assert_eq!(
        docs.hits(),
        fetched,
        "no request reached the document server"
    );
    assert_eq!(public_only.counts().await.clients, 0);

    // Metadata documents turned off.
    let off = Harness::start(|o| o.metadata_documents = false).await;
    let r = off.browser().authorize(&client, CB, &challenge, &[]).await;
    assert!(
        r.status == 400
            && r.body
                .contains("does not accept client ID metadata documents")
    );
    off.stop().await;
    public_only.stop().await;
    h.stop().await;
}
