//! The behaviour every [`OAuthStore`] must have, as one check any implementation runs:
//! the in-memory store's unit test and each database backend's store suite (public so a
//! store an embedder brings can run it too). It panics on the first difference.

use super::store::{GrantFilter, OAuthStore, Retention};
use crate::proto::oauth::UnixTime;
use crate::proto::oauth::records::{
    AccessRecord, AuthMethod, AuthorizationRequest, ClientRecord, ClientSource, CodeRecord,
    CodeState, GrantRecord, PendingRecord, SessionRecord, TokenLookup,
};
use crate::proto::oauth::secret::Digest;
use std::time::Duration;

fn client(id: &str, source: ClientSource, at: u64) -> ClientRecord {
    ClientRecord {
        client_id: id.into(),
        source,
        auth_method: AuthMethod::ClientSecretPost,
        secret: Some(Digest::of("secret")),
        redirect_uris: vec!["https://a.example/cb".into(), "http://127.0.0.1/cb".into()],
        refresh_tokens: true,
        name: Some("App ü".into()),
        client_uri: Some("https://a.example".into()),
        metadata: r#"{"client_name":"App ü"}"#.into(),
        created_at: UnixTime(at),
        fetched_until: (source == ClientSource::MetadataDocument).then_some(UnixTime(at + 60)),
    }
}

fn code(tag: &str, client: &str) -> CodeRecord {
    CodeRecord {
        digest: Digest::of(tag),
        client_id: client.into(),
        redirect_uri: "https://a.example/cb".into(),
        redirect_explicit: true,
        code_challenge: "c".repeat(43),
        scope: "mcp".into(),
        resource: "https://as.example/mcp".into(),
        user: "alice".into(),
        issued_at: UnixTime(100),
        expires_at: UnixTime(160),
    }
}

fn grant(id: &str, client: &str, user: &str, refresh: &str, at: u64) -> GrantRecord {
    GrantRecord {
        id: id.into(),
        client_id: client.into(),
        user: user.into(),
        scope: "mcp".into(),
        resource: "https://as.example/mcp".into(),
        created_at: UnixTime(at),
        refreshed_at: UnixTime(at),
        refresh: Some(Digest::of(refresh)),
        refresh_expires_at: UnixTime(at + 1000),
        revoked: None,
    }
}

fn access(tag: &str, grant: &str, exp: u64) -> AccessRecord {
    AccessRecord {
        digest: Digest::of(tag),
        grant_id: grant.into(),
        expires_at: UnixTime(exp),
    }
}

/// Runs every operation of `s` (which must start empty) and checks the results.
pub async fn contract(s: &dyn OAuthStore) {
    // Clients.
    let c1 = client("aw-1", ClientSource::Registered, 10);
    let c2 = client(
        "https://b.example/c.json",
        ClientSource::MetadataDocument,
        20,
    );
    s.put_client(&c1).await.unwrap();
    s.put_client(&c2).await.unwrap();
    assert_eq!(
        s.client("aw-1").await.unwrap(),
        Some(c1.clone()),
        "round trip"
    );
    assert_eq!(s.client("nope").await.unwrap(), None);
    assert_eq!(s.clients().await.unwrap().len(), 2);
    assert_eq!(s.registered_clients().await.unwrap(), 1);
    let mut c2b = c2.clone();
    c2b.fetched_until = Some(UnixTime(999));
    s.put_client(&c2b).await.unwrap();
    assert_eq!(
        s.client(&c2.client_id).await.unwrap(),
        Some(c2b),
        "replaced"
    );

    // Browser flows.
    let pending = PendingRecord {
        id: Digest::of("p1"),
        request: AuthorizationRequest {
            client_id: "aw-1".into(),
            redirect_uri: "http://127.0.0.1:5000/cb".into(),
            redirect_explicit: true,
            code_challenge: "c".repeat(43),
            scope: "mcp".into(),
            resource: "https://as.example/mcp".into(),
            state: Some("st".into()),
        },
        browser: Digest::of("b"),
        csrf: Digest::of("x"),
        expires_at: UnixTime(500),
    };
    s.put_pending(&pending).await.unwrap();
    let id = Digest::of("p1");
    assert_eq!(
        s.pending(&id, UnixTime(499)).await.unwrap(),
        Some(pending.clone())
    );
    assert_eq!(
        s.pending(&id, UnixTime(500)).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        s.take_pending(&id, UnixTime(1)).await.unwrap(),
        Some(pending.clone())
    );
    assert_eq!(
        s.take_pending(&id, UnixTime(1)).await.unwrap(),
        None,
        "taken once"
    );
    let session = SessionRecord {
        id: Digest::of("s1"),
        user: "alice".into(),
        created_at: UnixTime(1),
        expires_at: UnixTime(100),
    };
    s.put_session(&session).await.unwrap();
    assert_eq!(
        s.session(&session.id, UnixTime(99)).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(s.session(&session.id, UnixTime(100)).await.unwrap(), None);
    s.delete_session(&session.id).await.unwrap();
    assert_eq!(s.session(&session.id, UnixTime(1)).await.unwrap(), None);

    // Codes: used once, then remembered as used with the grant they made.
    let k1 = code("k1", "aw-1");
    s.put_code(&k1).await.unwrap();
    assert_eq!(
        s.use_code(&k1.digest).await.unwrap(),
        CodeState::Fresh(k1.clone())
    );
    assert_eq!(
        s.use_code(&k1.digest).await.unwrap(),
        CodeState::Used {
            code: k1.clone(),
            grant: None
        }
    );
    assert_eq!(
        s.use_code(&Digest::of("nope")).await.unwrap(),
        CodeState::Unknown
    );
    let k2 = code("k2", "aw-1");
    s.put_code(&k2).await.unwrap();
    assert!(matches!(
        s.use_code(&k2.digest).await.unwrap(),
        CodeState::Fresh(_)
    ));
    let g1 = grant("g1", "aw-1", "alice", "r1", 100);
    s.create_grant(&g1, &access("a1", "g1", 200), &k2.digest)
        .await
        .unwrap();
    assert_eq!(
        s.use_code(&k2.digest).await.unwrap(),
        CodeState::Used {
            code: k2.clone(),
            grant: Some("g1".into())
        }
    );

    // Refresh rotation: compare-and-swap on the current token.
    let r = s.find_refresh(&Digest::of("r1")).await.unwrap().unwrap();
    assert!(r.current && r.grant == g1);
    let mut g1b = g1.clone();
    g1b.refresh = Some(Digest::of("r2"));
    g1b.refreshed_at = UnixTime(150);
    assert!(
        s.rotate(&Digest::of("r1"), &g1b, &access("a2", "g1", 250))
            .await
            .unwrap()
    );
    assert!(
        !s.rotate(&Digest::of("r1"), &g1b, &access("a3", "g1", 250))
            .await
            .unwrap(),
        "lost race"
    );
    assert!(
        s.access(&Digest::of("a3")).await.unwrap().is_none(),
        "loser's token not stored"
    );
    let old = s.find_refresh(&Digest::of("r1")).await.unwrap().unwrap();
    assert!(!old.current, "retired");
    assert!(
        s.find_refresh(&Digest::of("r2"))
            .await
            .unwrap()
            .unwrap()
            .current
    );
    assert!(s.find_refresh(&Digest::of("zz")).await.unwrap().is_none());
    let (a, g) = s.access(&Digest::of("a2")).await.unwrap().unwrap();
    assert_eq!((a.expires_at, g), (UnixTime(250), g1b.clone()));
    assert!(matches!(
        s.find_token(&Digest::of("a1")).await.unwrap(),
        Some(TokenLookup::Access(_))
    ));
    assert!(matches!(
        s.find_token(&Digest::of("r1")).await.unwrap(),
        Some(TokenLookup::Refresh(_))
    ));
    assert!(s.find_token(&Digest::of("zz")).await.unwrap().is_none());

    // Grants: listing, filtering, revoking.
    s.put_client(&client("aw-2", ClientSource::Registered, 30))
        .await
        .unwrap();
    let g2 = grant("g2", "aw-2", "alice", "r3", 300);
    let g3 = grant("g3", "aw-1", "bob", "r4", 400);
    s.create_grant(&g2, &access("a4", "g2", 900), &Digest::of("none"))
        .await
        .unwrap();
    s.create_grant(&g3, &access("a5", "g3", 900), &Digest::of("none"))
        .await
        .unwrap();
    let ids = |v: Vec<GrantRecord>| v.into_iter().map(|g| g.id).collect::<Vec<_>>();
    let all = GrantFilter::default();
    assert_eq!(
        ids(s.grants(&all).await.unwrap()),
        ["g3", "g2", "g1"],
        "newest first"
    );
    let alice = GrantFilter {
        user: Some("alice".into()),
        ..Default::default()
    };
    assert_eq!(ids(s.grants(&alice).await.unwrap()), ["g2", "g1"]);
    let aw1 = GrantFilter {
        client_id: Some("aw-1".into()),
        ..Default::default()
    };
    assert_eq!(ids(s.grants(&aw1).await.unwrap()), ["g3", "g1"]);
    assert!(
        s.revoke_grant("g1", UnixTime(600), "by test")
            .await
            .unwrap()
    );
    assert!(
        !s.revoke_grant("g1", UnixTime(601), "again").await.unwrap(),
        "already revoked"
    );
    assert!(!s.revoke_grant("nope", UnixTime(601), "x").await.unwrap());
    let g = s.grant("g1").await.unwrap().unwrap();
    let rv = g.revoked.unwrap();
    assert_eq!((rv.at, rv.reason.as_str()), (UnixTime(600), "by test"));
    assert!(
        !s.rotate(&Digest::of("r2"), &g1b, &access("a6", "g1", 900))
            .await
            .unwrap(),
        "revoked grants do not rotate"
    );
    assert_eq!(ids(s.grants(&alice).await.unwrap()), ["g2"]);
    let with_revoked = GrantFilter {
        include_revoked: true,
        ..alice.clone()
    };
    assert_eq!(ids(s.grants(&with_revoked).await.unwrap()), ["g2", "g1"]);
    assert_eq!(
        s.revoke_grants(&alice, UnixTime(700), "user")
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.counts().await.unwrap().live_grants, 1);
    assert!(s.delete_client("aw-1", UnixTime(800)).await.unwrap());
    assert!(!s.delete_client("aw-1", UnixTime(800)).await.unwrap());
    assert_eq!(
        s.grant("g3")
            .await
            .unwrap()
            .unwrap()
            .revoked
            .unwrap()
            .reason,
        "client deleted"
    );
    assert_eq!(s.counts().await.unwrap().live_grants, 0);

    // Purge: expired codes, tokens, browser records; grants and unused clients after
    // their retention.
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.codes, counts.access_tokens), (2, 4));
    s.put_client(&client("aw-unused", ClientSource::Registered, 1000))
        .await
        .unwrap();
    let retention = Retention {
        codes: Duration::from_secs(10),
        grants: Duration::from_secs(100),
        unused_clients: Duration::from_secs(50),
    };
    let p = s.purge(UnixTime(850), retention).await.unwrap();
    assert_eq!(p.codes, 2);
    assert_eq!(
        p.access_tokens, 2,
        "a1 and a2 expired (a4 went with its grant)"
    );
    assert_eq!(p.grants, 2, "g1 and g2 revoked long enough ago");
    assert_eq!(p.clients, 1, "aw-2: its only grant is gone");
    assert_eq!(
        s.grant("g3").await.unwrap().map(|g| g.id),
        Some("g3".into()),
        "revoked at 800"
    );
    assert!(s.client("aw-unused").await.unwrap().is_some());
    let p = s.purge(UnixTime(1100), retention).await.unwrap();
    assert_eq!(
        (p.grants, p.clients),
        (1, 1),
        "g3, and aw-unused after its retention"
    );
    assert!(
        s.find_refresh(&Digest::of("r1")).await.unwrap().is_none(),
        "purged with its grant"
    );
    assert_eq!(
        s.clients().await.unwrap().len(),
        1,
        "metadata documents are kept"
    );
}
