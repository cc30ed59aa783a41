use super::*;
use crate::proto::oauth::records::Revocation;
use crate::wire::oauth::form::FormLimits;
use rand::SeedableRng;

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const RESOURCE: &str = "https://as.example/mcp";

fn settings() -> Settings {
    Settings::new("https://as.example", &[RESOURCE.into()])
}

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(42)
}

fn client(id: &str, method: AuthMethod, secret: Option<&str>) -> ClientRecord {
    ClientRecord {
        auth_method: method,
        secret: secret.map(Digest::of),
        ..ClientRecord::fixture(id, &["https://app.example/cb"])
    }
}

fn form(pairs: &[(&str, &str)]) -> Form {
    let enc = Form::from_pairs(pairs.iter().copied()).encode();
    Form::parse(enc.as_bytes(), &FormLimits::default()).unwrap()
}

fn code(client_id: &str, explicit: bool) -> CodeRecord {
    CodeRecord {
        digest: Digest::of("awac_x"),
        client_id: client_id.into(),
        redirect_uri: "https://app.example/cb".into(),
        redirect_explicit: explicit,
        code_challenge: CHALLENGE.into(),
        scope: "mcp".into(),
        resource: RESOURCE.into(),
        user: "alice".into(),
        issued_at: UnixTime(100),
        expires_at: UnixTime(160),
    }
}

fn refused(r: Result<CodeRecord, Refusal>) -> (ErrorCode, Option<(String, &'static str)>) {
    let e = r.unwrap_err();
    (e.error.code, e.revoke)
}

#[test]
fn client_credentials_forms() {
    let basic = BasicCredentials {
        client_id: "aw-1".into(),
        secret: "s".into(),
    }
    .encode();
    let c = client_credentials(&form(&[]), Some(&basic)).unwrap();
    assert!(c.is_basic() && c.client_id() == "aw-1");
    let c = client_credentials(&form(&[("client_id", "aw-1")]), Some(&basic)).unwrap();
    assert!(c.is_basic());
    let c = client_credentials(
        &form(&[("client_id", "aw-1"), ("client_secret", "s")]),
        None,
    )
    .unwrap();
    assert!(matches!(c, ClientCredentials::Post { .. }));
    let c = client_credentials(&form(&[("client_id", "aw-1")]), None).unwrap();
    assert_eq!(c, ClientCredentials::Id("aw-1".into()));
    // A bearer header is not client authentication; the body's id is used.
    let c = client_credentials(&form(&[("client_id", "aw-1")]), Some("Bearer x")).unwrap();
    assert_eq!(c, ClientCredentials::Id("aw-1".into()));

    let err = |f: Form, h: Option<&str>| client_credentials(&f, h).unwrap_err().code;
    assert_eq!(err(form(&[]), None), ErrorCode::InvalidClient);
    assert_eq!(
        err(form(&[("client_secret", "s")]), None),
        ErrorCode::InvalidClient
    );
    assert_eq!(
        err(form(&[("client_id", "aw-2")]), Some(&basic)),
        ErrorCode::InvalidClient
    );
    assert_eq!(
        err(form(&[("client_secret", "s")]), Some(&basic)),
        ErrorCode::InvalidRequest
    );
    assert_eq!(err(form(&[]), Some("Basic !!")), ErrorCode::InvalidClient);
    assert_eq!(
        err(form(&[("client_id", "a"), ("client_id", "a")]), None),
        ErrorCode::InvalidRequest
    );
    assert!(
        !format!(
            "{:?}",
            client_credentials(&form(&[]), Some(&basic)).unwrap()
        )
        .contains("\"s\"")
    );
}

#[test]
fn client_authentication() {
    let public = client("aw-1", AuthMethod::None, None);
    let conf = client("aw-2", AuthMethod::ClientSecretBasic, Some("right"));
    let id = |i: &str| ClientCredentials::Id(i.into());
    let post = |s: &str| ClientCredentials::Post {
        client_id: "aw-2".into(),
        secret: s.into(),
    };
    let basic = |s: &str| ClientCredentials::Basic {
        client_id: "aw-2".into(),
        secret: s.into(),
    };
    assert!(authenticate(&id("aw-1"), &public).is_ok());
    assert!(
        authenticate(&post("x"), &public).is_err(),
        "a public client has no secret"
    );
    assert!(authenticate(&basic("right"), &conf).is_ok());
    assert!(
        authenticate(&post("right"), &conf).is_ok(),
        "either secret method"
    );
    assert!(authenticate(&basic("wrong"), &conf).is_err());
    assert!(authenticate(&post(""), &conf).is_err());
    assert!(
        authenticate(&id("aw-2"), &conf).is_err(),
        "confidential clients must authenticate"
    );
}

#[test]
fn token_request_parsing() {
    let r = parse(&form(&[
        ("grant_type", "authorization_code"),
        ("code", "c"),
        ("code_verifier", VERIFIER),
        ("redirect_uri", "https://app.example/cb"),
        ("resource", RESOURCE),
    ]))
    .unwrap();
    assert!(
        matches!(r, TokenRequest::Code { ref resource, .. } if resource.as_deref() == Some(RESOURCE))
    );
    let r = parse(&form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", "r"),
        ("scope", "mcp"),
    ]))
    .unwrap();
    assert!(matches!(r, TokenRequest::Refresh { .. }));

    let err = |pairs: &[(&str, &str)]| parse(&form(pairs)).unwrap_err();
    assert_eq!(err(&[]).code, ErrorCode::InvalidRequest);
    assert_eq!(
        err(&[("grant_type", "password")]).code,
        ErrorCode::UnsupportedGrantType
    );
    assert_eq!(
        err(&[("grant_type", "client_credentials")]).code,
        ErrorCode::UnsupportedGrantType
    );
    let missing = err(&[("grant_type", "authorization_code"), ("code", "c")]);
    assert_eq!(
        missing.code,
        ErrorCode::InvalidRequest,
        "a missing verifier is a bad request"
    );
    assert!(missing.description.contains("code_verifier"));
    assert_eq!(
        err(&[
            ("grant_type", "authorization_code"),
            ("code_verifier", VERIFIER)
        ])
        .code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        err(&[
            ("grant_type", "authorization_code"),
            ("code", "a"),
            ("code", "b"),
            ("code_verifier", VERIFIER)
        ])
        .code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        err(&[
            ("grant_type", "authorization_code"),
            ("code", "a"),
            ("code_verifier", VERIFIER),
            ("resource", RESOURCE),
            ("resource", "https://other.example/mcp")
        ])
        .code,
        ErrorCode::InvalidTarget
    );
    assert_eq!(
        err(&[("grant_type", "refresh_token")]).code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        err(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "r"),
            ("scope", "a  b")
        ])
        .code,
        ErrorCode::InvalidScope
    );
}

#[test]
fn code_exchange_rules() {
    let s = settings();
    let c = client("aw-1", AuthMethod::None, None);
    let now = UnixTime(120);
    let redirect = Some("https://app.example/cb");
    let check = |now, redirect, verifier, resource, client: &ClientRecord, state| {
        check_code(now, redirect, verifier, resource, client, state, &s)
    };
    // The good case, with and without the optional parameters.
    assert!(
        check(
            now,
            redirect,
            VERIFIER,
            Some(RESOURCE),
            &c,
            CodeState::Fresh(code("aw-1", true))
        )
        .is_ok()
    );
    assert!(
        check(
            now,
            None,
            VERIFIER,
            None,
            &c,
            CodeState::Fresh(code("aw-1", false))
        )
        .is_ok()
    );

    use ErrorCode::*;
    let fresh = || CodeState::Fresh(code("aw-1", true));
    assert_eq!(
        refused(check(now, redirect, VERIFIER, None, &c, CodeState::Unknown)),
        (InvalidGrant, None)
    );
    assert_eq!(
        refused(check(
            now,
            redirect,
            VERIFIER,
            None,
            &c,
            CodeState::Used {
                code: code("aw-1", true),
                grant: Some("g1".into())
            }
        )),
        (
            InvalidGrant,
            Some(("g1".into(), "authorization code reused"))
        )
    );
    assert_eq!(
        refused(check(UnixTime(160), redirect, VERIFIER, None, &c, fresh())),
        (InvalidGrant, None),
        "expired"
    );
    let other = client("aw-2", AuthMethod::None, None);
    assert_eq!(
        refused(check(now, redirect, VERIFIER, None, &other, fresh())),
        (InvalidGrant, None)
    );
    assert_eq!(
        refused(check(now, None, VERIFIER, None, &c, fresh())),
        (InvalidGrant, None),
        "redirect_uri must be repeated"
    );
    for wrong in [
        "https://app.example/cb/",
        "https://app.example/other",
        "http://127.0.0.1/cb",
    ] {
        assert_eq!(
            refused(check(now, Some(wrong), VERIFIER, None, &c, fresh())),
            (InvalidGrant, None),
            "{wrong}"
        );
    }
    let mut wrong_verifier = VERIFIER.to_string();
    wrong_verifier.replace_range(0..1, "x");
    assert_eq!(
        refused(check(now, redirect, &wrong_verifier, None, &c, fresh())),
        (InvalidGrant, None)
    );
    assert_eq!(
        refused(check(now, redirect, CHALLENGE, None, &c, fresh())),
        (InvalidGrant, None)
    );
    assert_eq!(
        refused(check(now, redirect, "short", None, &c, fresh())),
        (InvalidGrant, None)
    );
    assert_eq!(
        refused(check(
            now,
            redirect,
            VERIFIER,
            Some("https://evil.example/mcp"),
            &c,
            fresh()
        )),
        (InvalidTarget, None)
    );
}

#[test]
fn issuing_and_refreshing() {
    let s = settings();
    let c = client("aw-1", AuthMethod::None, None);
    let mut rng = rng();
    let t0 = UnixTime(1000);
    let first = issue_for_code(t0, &code("aw-1", true), &c, &s, &mut rng);
    let body = &first.response;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "mcp");
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    assert!(secret::looks_like(access, SecretKind::AccessToken));
    assert!(secret::looks_like(refresh, SecretKind::RefreshToken));
    assert_eq!(first.access.digest, Digest::of(access));
    assert_eq!(first.grant.refresh, Some(Digest::of(refresh)));
    assert_eq!(first.access.expires_at, t0.plus(s.access_ttl));
    assert_eq!(first.grant.user, "alice");

    // Refresh with the current token: allowed, and rotates.
    let t1 = UnixTime(2000);
    let lookup = |g: &GrantRecord, current| {
        Some(RefreshLookup {
            grant: g.clone(),
            current,
        })
    };
    let g = check_refresh(
        t1,
        Some("mcp"),
        Some(RESOURCE),
        &c,
        lookup(&first.grant, true),
        &s,
    )
    .unwrap();
    let second = issue_for_refresh(t1, g, &s, &mut rng);
    assert_eq!(second.grant.id, first.grant.id, "same family");
    assert_ne!(second.grant.refresh, first.grant.refresh, "rotated");
    assert_eq!(second.grant.refresh_expires_at, t1.plus(s.refresh_ttl));
    assert_ne!(
        second.response["access_token"],
        first.response["access_token"]
    );

    // The retired token again: the whole family goes.
    let r = check_refresh(t1, None, None, &c, lookup(&first.grant, false), &s).unwrap_err();
    assert_eq!(r.error.code, ErrorCode::InvalidGrant);
    assert_eq!(
        r.revoke,
        Some((first.grant.id.clone(), "refresh token reused"))
    );

    use ErrorCode::*;
    let code_of = |r: Result<GrantRecord, Refusal>| {
        let e = r.unwrap_err();
        assert!(e.revoke.is_none());
        e.error.code
    };
    let g = &second.grant;
    assert_eq!(
        code_of(check_refresh(t1, None, None, &c, None, &s)),
        InvalidGrant
    );
    let mut revoked = g.clone();
    revoked.revoked = Some(Revocation {
        at: t1,
        reason: "x".into(),
    });
    assert_eq!(
        code_of(check_refresh(
            t1,
            None,
            None,
            &c,
            lookup(&revoked, true),
            &s
        )),
        InvalidGrant
    );
    let other = client("aw-2", AuthMethod::None, None);
    assert_eq!(
        code_of(check_refresh(t1, None, None, &other, lookup(g, true), &s)),
        InvalidGrant
    );
    assert_eq!(
        code_of(check_refresh(
            g.refresh_expires_at,
            None,
            None,
            &c,
            lookup(g, true),
            &s
        )),
        InvalidGrant
    );
    assert_eq!(
        code_of(check_refresh(
            t1,
            Some("mcp admin"),
            None,
            &c,
            lookup(g, true),
            &s
        )),
        InvalidScope
    );
    assert_eq!(
        code_of(check_refresh(
            t1,
            None,
            Some("https://evil.example/mcp"),
            &c,
            lookup(g, true),
            &s
        )),
        InvalidTarget
    );

    // A client that did not register refresh_token gets none.
    let mut no_refresh = c.clone();
    no_refresh.refresh_tokens = false;
    let only = issue_for_code(t0, &code("aw-1", true), &no_refresh, &s, &mut rng);
    assert!(only.response.get("refresh_token").is_none() && only.grant.refresh.is_none());
}

#[test]
fn revocation_and_access() {
    let s = settings();
    let c = client("aw-1", AuthMethod::None, None);
    let mut rng = rng();
    let issued = issue_for_code(UnixTime(0), &code("aw-1", true), &c, &s, &mut rng);
    let g = issued.grant.clone();
    assert_eq!(
        parse_revocation(&form(&[("token", "t"), ("token_type_hint", "whatever")])).unwrap(),
        "t"
    );
    assert_eq!(
        parse_revocation(&form(&[])).unwrap_err().code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        check_revocation(&c, None),
        Ok(None),
        "unknown tokens are not an error"
    );
    assert_eq!(
        check_revocation(&c, Some(&TokenLookup::Refresh(g.clone()))),
        Ok(Some(g.id.clone()))
    );
    let other = client("aw-2", AuthMethod::None, None);
    assert_eq!(
        check_revocation(&other, Some(&TokenLookup::Access(g.clone())))
            .unwrap_err()
            .code,
        ErrorCode::UnauthorizedClient
    );

    let found = Some((issued.access.clone(), g.clone()));
    assert_eq!(
        check_access(UnixTime(10), found.clone(), &s).unwrap().user,
        "alice"
    );
    assert_eq!(
        check_access(UnixTime(10), None, &s),
        Err(AccessRefused::Unknown)
    );
    assert_eq!(
        check_access(UnixTime(3600), found.clone(), &s),
        Err(AccessRefused::Expired)
    );
    let mut revoked = g.clone();
    revoked.revoked = Some(Revocation {
        at: UnixTime(5),
        reason: "user".into(),
    });
    assert_eq!(
        check_access(UnixTime(10), Some((issued.access.clone(), revoked)), &s),
        Err(AccessRefused::Revoked)
    );
    // The same token at a server whose MCP endpoint is elsewhere: wrong audience.
    let elsewhere = Settings::new(
        "https://other.example",
        &["https://other.example/mcp".into()],
    );
    assert_eq!(
        check_access(UnixTime(10), found, &elsewhere),
        Err(AccessRefused::WrongAudience)
    );
}
