//! The authorization server's parsers and rules: form bodies and query strings, redirect
//! URIs and resource indicators, registration JSON, client ID metadata documents, token
//! requests with their client credentials and cookies. Each asserts round trips and the
//! rules' invariants, not only the absence of panics.

use crate::proto::oauth::records::{AuthMethod, ClientRecord, ClientSource, CodeState};
use crate::proto::oauth::redirect::{self, RedirectKind};
use crate::proto::oauth::{Settings, UnixTime, authorize, cimd, client, resource, token};
use crate::wire::oauth::form::{Form, FormLimits};
use crate::wire::oauth::header::{BasicCredentials, cookie};
use crate::wire::oauth::metadata::ClientMetadata;
use crate::wire::oauth::uri::Uri;
use rand::SeedableRng;

fn settings() -> Settings {
    Settings::new(
        "https://as.example",
        &["https://as.example/mcp".into(), "https://as.example".into()],
    )
}

/// Splits fuzz input at the first `0xff` into two strings.
fn two(data: &[u8]) -> (String, String) {
    let at = data.iter().position(|b| *b == 0xff).unwrap_or(data.len());
    let (a, b) = data.split_at(at);
    (
        String::from_utf8_lossy(a).into_owned(),
        String::from_utf8_lossy(b.get(1..).unwrap_or(&[])).into_owned(),
    )
}

/// Form bodies: what parses encodes to something that parses to the same pairs, within
/// the limits.
pub fn form(data: &[u8]) {
    let limits = FormLimits {
        max_bytes: 4096,
        max_fields: 16,
    };
    if let Ok(f) = Form::parse(data, &limits) {
        assert!(f.pairs().len() <= limits.max_fields);
        for (n, _) in f.pairs() {
            assert!(!n.is_empty());
            let _ = f.one(n);
        }
        let enc = f.encode();
        let again = Form::parse(
            enc.as_bytes(),
            &FormLimits {
                max_bytes: usize::MAX,
                max_fields: usize::MAX,
            },
        )
        .expect("an encoded form parses");
        assert_eq!(again, f);
    }
}

/// Redirect URIs and resource indicators: matching is exact but for loopback ports;
/// attached parameters keep a valid URI; canonical resources are fixed points.
pub fn redirect_uri(data: &[u8]) {
    let (a, b) = two(data);
    let ka = redirect::classify(&a);
    let kb = redirect::classify(&b);
    if let Ok(u) = Uri::parse(&a) {
        assert!(a.contains(u.scheme) && a.contains(u.path));
        let _ = Uri::parse(&u.without_port());
    }
    if redirect::matches(&a, &b) && a != b {
        assert_eq!(ka, Ok(RedirectKind::Loopback), "{a:?} ~ {b:?}");
        assert_eq!(kb, Ok(RedirectKind::Loopback), "{a:?} ~ {b:?}");
    }
    assert!(redirect::matches(&a, &a));
    if ka.is_ok() {
        let with = redirect::with_params(&a, &[("code", &b), ("state", "s t")]);
        if with.len() <= crate::wire::oauth::uri::MAX_URI_BYTES {
            let u = Uri::parse(&with).expect("parameters keep a valid URI");
            let q = Form::parse(u.query.unwrap_or("").as_bytes(), &FormLimits::default());
            if let (Ok(q), false) = (q, b.is_empty()) {
                assert_eq!(q.all("code").last(), Some(b.as_str()));
            }
        }
        let _ = redirect::target(&a);
    }
    if let Ok(c) = resource::canonical(&a) {
        assert_eq!(resource::canonical(&c).as_ref(), Ok(&c), "{a:?}");
    }
    if let Ok(d) = cimd::document_url(&a) {
        assert!(a.starts_with("https://") && d.target.starts_with('/'));
    }
}

fn record(uris: Vec<String>) -> ClientRecord {
    ClientRecord {
        redirect_uris: uris,
        ..ClientRecord::fixture("aw-1", &[])
    }
}

/// Registration JSON: accepted metadata has only registrable redirect URIs, and the
/// registration response registers again to the same client.
pub fn registration(data: &[u8]) {
    let s = settings();
    let Ok(meta) = ClientMetadata::parse(data, 16 << 10) else {
        return;
    };
    let Ok(v) = client::validate(&meta, ClientSource::Registered, &s) else {
        return;
    };
    assert!(!v.redirect_uris.is_empty() && v.redirect_uris.len() <= s.max_redirect_uris);
    for u in &v.redirect_uris {
        assert!(redirect::classify(u).is_ok());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let reg = client::register(UnixTime(1), v.clone(), &mut rng);
    assert_eq!(
        reg.record.secret.is_some(),
        v.auth_method != AuthMethod::None
    );
    let echoed = serde_json::to_vec(&reg.response).expect("serialises");
    let again = ClientMetadata::parse(&echoed, usize::MAX).expect("the response parses");
    let v2 = client::validate(&again, ClientSource::Registered, &s).expect("and registers");
    assert_eq!(v2, v);
}

/// Client ID metadata documents: accepted ones are public clients of that URL.
pub fn metadata_document(data: &[u8]) {
    let s = settings();
    let url = "https://app.example/client.json";
    if let Ok(v) = cimd::parse_document(data, url, &s) {
        assert_eq!(v.auth_method, AuthMethod::None);
        let rec = client::from_document(url, v, UnixTime(0), UnixTime(60), None);
        assert_eq!(rec.client_id, url);
    }
    let text = String::from_utf8_lossy(data);
    let until = cimd::cache_until(UnixTime(1000), Some(&text));
    assert!(
        until.0 >= 1000 + cimd::MIN_CACHE.as_secs() && until.0 <= 1000 + cimd::MAX_CACHE.as_secs()
    );
}

/// Token, revocation and authorization requests with their headers: no input panics,
/// and nothing is accepted that the rules forbid.
pub fn token_request(data: &[u8]) {
    let (body, header) = two(data);
    let s = settings();
    let Ok(form) = Form::parse(body.as_bytes(), &FormLimits::default()) else {
        return;
    };
    if let Ok(Some(b)) = BasicCredentials::parse(&header) {
        assert!(!b.client_id.is_empty());
        let again = BasicCredentials::parse(&b.encode()).expect("round trip");
        assert_eq!(again, Some(b));
    }
    let _ = cookie(&header, "aw_session");
    let _ = token::client_credentials(&form, Some(&header));
    let _ = token::parse_revocation(&form);
    let c = record(vec![
        "https://app.example/cb".into(),
        "http://127.0.0.1/cb".into(),
    ]);
    if let Ok(token::TokenRequest::Code {
        redirect_uri,
        verifier,
        resource,
        ..
    }) = token::parse(&form)
    {
        // A fresh code for another challenge is never accepted.
        let code = crate::proto::oauth::records::CodeRecord {
            digest: crate::proto::oauth::secret::Digest::of("x"),
            client_id: "aw-1".into(),
            redirect_uri: "https://app.example/cb".into(),
            redirect_explicit: false,
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            scope: "mcp".into(),
            resource: "https://as.example/mcp".into(),
            user: "u".into(),
            issued_at: UnixTime(0),
            expires_at: UnixTime(60),
        };
        let ok = token::check_code(
            UnixTime(1),
            redirect_uri.as_deref(),
            &verifier,
            resource.as_deref(),
            &c,
            CodeState::Fresh(code),
            &s,
        );
        if ok.is_ok() {
            assert_eq!(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        }
    }
    if let Ok(req) = authorize::validate(&form, &c, &s) {
        assert!(redirect::find(&c.redirect_uris, &req.redirect_uri).is_some());
        assert!(s.resources.contains(&req.resource));
        assert_eq!(req.code_challenge.len(), 43);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_points_run() {
        super::form(b"a=1&b=%20&c&&d=%C3%A9");
        super::form(b"a=%zz");
        super::redirect_uri(b"http://127.0.0.1:5/cb\xffhttp://127.0.0.1:6/cb");
        super::redirect_uri(b"https://a.example/cb?x=1\xffcode value");
        super::redirect_uri(b"HTTPS://A.example:443/mcp/\xff");
        super::registration(br#"{"redirect_uris":["https://a.example/cb"],"client_name":"A"}"#);
        super::registration(br#"{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none","scope":"mcp"}"#);
        super::metadata_document(
            br#"{"client_id":"https://app.example/client.json","redirect_uris":["https://app.example/cb"]}"#,
        );
        super::metadata_document(b"max-age=10");
        super::token_request(
            b"grant_type=authorization_code&code=c&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk&client_id=aw-1\xffBasic YTpi",
        );
        super::token_request(
            b"response_type=code&client_id=aw-1&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256\xffa=b",
        );
    }
}
