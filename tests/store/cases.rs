//! The store through its own API and through `ControlPlane`, as the MCP front end and
//! the coordinator see it.

use super::{Case, Ctx};
use agentwire::services::control::{
    AgentChoice, ControlConfig, ControlPlane, Principal, ResolveError, ToolCallRecord, ToolOutcome,
    User, hash_token,
};
use agentwire::services::store::model::{AuditFilter, TokenStatus};
use agentwire::services::store::{StoreError, StoreOptions, TokenHolder, migrations};
use agentwire::wire::addr::NodeId;
use std::time::{Duration, Instant, SystemTime};

pub const ALL: &[(&str, Case)] = &[
    ("users", |c| Box::pin(users(c))),
    ("workspaces_and_shares", |c| {
        Box::pin(workspaces_and_shares(c))
    }),
    ("agents_and_tokens", |c| Box::pin(agents_and_tokens(c))),
    ("token_expiry_and_last_use", |c| {
        Box::pin(token_expiry_and_last_use(c))
    }),
    ("writes_reach_the_cache_at_once", |c| {
        Box::pin(writes_reach_the_cache(c))
    }),
    ("another_process_changes_it", |c| {
        Box::pin(another_process(c))
    }),
    ("nothing_half_written", |c| {
        Box::pin(nothing_half_written(c))
    }),
    ("import", |c| Box::pin(import(c))),
    ("passwords", |c| Box::pin(passwords(c))),
    ("audit_log", |c| Box::pin(audit_log(c))),
    ("oauth_records", |c| Box::pin(oauth_records(c))),
    ("concurrent_migration", |c| {
        Box::pin(concurrent_migration(c))
    }),
    ("schema_too_new", |c| Box::pin(schema_too_new(c))),
];

fn user(name: &str) -> User {
    User {
        name: name.into(),
        admin: false,
    }
}

fn field(e: &StoreError) -> Option<&'static str> {
    e.field()
}

async fn users(ctx: Ctx) {
    let (s, _) = ctx.store().await;
    let a = s.create_user("alice", false, None).await.unwrap();
    assert_eq!(
        (a.name.as_str(), a.admin, a.has_password),
        ("alice", false, false)
    );
    let dup = s.create_user("alice", true, None).await.unwrap_err();
    assert_eq!(dup.status(), 409);
    assert_eq!(field(&dup), Some("name"));
    assert!(dup.to_string().contains("alice"), "{dup}");
    let bad = s.create_user("al ice", false, None).await.unwrap_err();
    assert_eq!((bad.status().as_u16(), field(&bad)), (400, Some("name")));
    s.create_user("root", true, None).await.unwrap();
    let names: Vec<_> = s
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "root"]);
    // The only admin stays one.
    let e = s.set_admin("root", false).await.unwrap_err();
    assert_eq!(e.status(), 409);
    let e = s.delete_user("root", false).await.unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(s.set_admin("alice", true).await.unwrap().admin);
    s.set_admin("root", false).await.unwrap();
    // A user who owns workspaces goes only with cascade, and takes them along.
    s.create_user("bob", false, None).await.unwrap();
    s.create_workspace("bob", "dev", &[]).await.unwrap();
    let e = s.delete_user("bob", false).await.unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("bob/dev"), "{e}");
    s.delete_user("bob", true).await.unwrap();
    assert_eq!(s.workspaces(None).await.unwrap().len(), 0);
    assert_eq!(s.user("bob").await.unwrap_err().status(), 404);
    s.close().await;
}

async fn workspaces_and_shares(ctx: Ctx) {
    let (s, _) = ctx.store().await;
    for u in ["alice", "bob", "carol"] {
        s.create_user(u, false, None).await.unwrap();
    }
    s.create_user("root", true, None).await.unwrap();
    let w = s
        .create_workspace("alice", "dev", &["bob".into()])
        .await
        .unwrap();
    assert_eq!(
        (w.full_name.as_str(), w.shared_with.clone()),
        ("alice/dev", vec!["bob".to_string()])
    );
    let e = s.create_workspace("alice", "dev", &[]).await.unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (409, Some("name")));
    let e = s.create_workspace("nobody", "x", &[]).await.unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("owner")));
    let e = s
        .create_workspace("alice", "bad name", &[])
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("name")));
    let agent = s
        .create_agent("alice/dev", "main", None, None)
        .await
        .unwrap();
    let id = agent.agent.id;

    // Resolution and authorization as the MCP front end asks.
    let r = s.resolve_workspace(&user("alice"), "dev").await.unwrap();
    assert_eq!(
        (r.workspace.full_name(), r.agent.id),
        ("alice/dev".into(), id)
    );
    assert!(s.resolve_workspace(&user("bob"), "alice/dev").await.is_ok());
    assert!(matches!(
        s.resolve_workspace(&user("carol"), "alice/dev").await,
        Err(ResolveError::Forbidden { .. })
    ));
    assert!(matches!(
        s.resolve_workspace(&user("carol"), "dev").await,
        Err(ResolveError::NotFound { .. })
    ));
    let root = User {
        name: "root".into(),
        admin: true,
    };
    assert!(s.resolve_workspace(&root, "alice/dev").await.is_ok());
    let bob = Principal::User(user("bob"));
    let carol = Principal::User(user("carol"));
    assert!(s.may_use_agent(&bob, id).await);
    assert!(!s.may_use_agent(&carol, id).await);
    assert!(s.may_use_agent(&Principal::Service, id).await);
    assert!(!s.may_use_agent(&Principal::Service, NodeId::random()).await);
    assert_eq!(
        s.list_workspaces(&user("bob"), None).await.unwrap().len(),
        1
    );
    assert!(
        s.list_workspaces(&user("carol"), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.workspace_by_agent(id)
            .await
            .unwrap()
            .map(|w| w.full_name()),
        Some("alice/dev".into())
    );
    assert_eq!(
        s.workspace_by_id(w.id).await.unwrap().map(|w| w.name),
        Some("dev".into())
    );

    // By id (the chatgpt toolset), with the same authorization.
    let by_id = s
        .resolve_workspace_id(&user("bob"), w.id, AgentChoice::Default)
        .await
        .unwrap();
    assert_eq!(by_id.agent.id, id);
    assert!(matches!(
        s.resolve_workspace_id(&user("carol"), w.id, AgentChoice::Only)
            .await,
        Err(ResolveError::Forbidden { .. })
    ));

    // Shares change at once.
    s.share("alice/dev", "carol").await.unwrap();
    assert!(s.may_use_agent(&carol, id).await);
    s.unshare("alice/dev", "bob").await.unwrap();
    assert!(!s.may_use_agent(&bob, id).await);
    let e = s.unshare("alice/dev", "bob").await.unwrap_err();
    assert_eq!(e.status(), 404);
    let e = s.share("alice/dev", "alice").await.unwrap_err();
    assert_eq!(e.status(), 400);
    let e = s.share("alice/dev", "nobody").await.unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("user")));

    // Deleting the workspace takes its agent and the agent's token.
    s.delete_workspace("alice/dev").await.unwrap();
    assert!(s.authenticate(&agent.token.token).await.unwrap().is_none());
    assert!(!s.may_use_agent(&carol, id).await);
    assert!(s.workspace_by_agent(id).await.unwrap().is_none());
    assert_eq!(
        s.delete_workspace("alice/dev").await.unwrap_err().status(),
        404
    );
    s.close().await;
}

async fn agents_and_tokens(ctx: Ctx) {
    let (s, _) = ctx.store().await;
    s.create_user("alice", false, None).await.unwrap();
    s.create_workspace("alice", "dev", &[]).await.unwrap();
    let id = NodeId::random();
    let a = s
        .create_agent("alice/dev", "main", Some(id), None)
        .await
        .unwrap();
    assert_eq!(
        (a.agent.id, a.agent.full_name.as_str()),
        (id, "alice/dev.main")
    );
    assert!(a.token.token.starts_with("aw_"));
    match s.authenticate(&a.token.token).await.unwrap() {
        Some(Principal::Agent {
            agent_id,
            workspace,
        }) => {
            assert_eq!((agent_id, workspace.full_name()), (id, "alice/dev".into()));
        }
        other => panic!("{other:?}"),
    }
    let e = s
        .create_agent("alice/dev", "main", None, None)
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (409, Some("name")));
    let e = s
        .create_agent("alice/dev", "gpu", Some(id), None)
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (409, Some("id")));
    let e = s
        .create_agent("alice/nope", "gpu", None, None)
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("workspace")));
    s.create_agent("alice/dev", "gpu", None, None)
        .await
        .unwrap();
    assert_eq!(s.agent(&id.to_string()).await.unwrap().name, "main");
    assert_eq!(s.agent("alice/dev.gpu").await.unwrap().name, "gpu");
    let e = s.agent("alice/dev").await.unwrap_err();
    assert_eq!(e.status(), 400, "two agents, none named: {e}");
    assert_eq!(s.agents(Some("alice/dev")).await.unwrap().len(), 2);

    // User tokens: issued once, stored as digests, listed, revoked, deleted.
    let t = s
        .create_token(&TokenHolder::User("alice".into()), "laptop", None)
        .await
        .unwrap();
    assert_eq!(t.info.status, TokenStatus::Active);
    assert!(matches!(
        s.authenticate(&t.token).await.unwrap(),
        Some(Principal::User(u)) if u.name == "alice"
    ));
    let listed = s.tokens(Some("alice"), None, false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        !serde_json::to_string(&listed).unwrap().contains(&t.token),
        "no secret listed"
    );
    let e = s
        .create_token(&TokenHolder::User("nobody".into()), "x", None)
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("user")));
    let e = s
        .create_token(&TokenHolder::User("alice".into()), "", None)
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("name")));
    let e = s
        .create_token(
            &TokenHolder::User("alice".into()),
            "x",
            Some(Duration::ZERO),
        )
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("expires_in")));
    let revoked = s.revoke_token(t.info.id).await.unwrap();
    assert_eq!(revoked.status, TokenStatus::Revoked);
    assert!(s.authenticate(&t.token).await.unwrap().is_none());
    assert!(
        s.tokens(Some("alice"), None, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.tokens(Some("alice"), None, true).await.unwrap().len(), 1);
    s.delete_token(t.info.id).await.unwrap();
    assert_eq!(s.token(t.info.id).await.unwrap_err().status(), 404);

    // An agent's extra token, and revoking all of an agent's tokens.
    let t2 = s
        .create_token(
            &TokenHolder::Agent("alice/dev.main".into()),
            "rotated",
            None,
        )
        .await
        .unwrap();
    assert!(s.authenticate(&t2.token).await.unwrap().is_some());
    assert_eq!(s.revoke_agent_tokens("alice/dev.main").await.unwrap(), 2);
    assert!(s.authenticate(&t2.token).await.unwrap().is_none());
    assert!(s.authenticate(&a.token.token).await.unwrap().is_none());
    s.delete_agent("alice/dev.gpu").await.unwrap();
    assert_eq!(s.agents(None).await.unwrap().len(), 1);
    s.close().await;
}

async fn token_expiry_and_last_use(ctx: Ctx) {
    let (s, _) = ctx.store().await;
    s.create_user("alice", false, None).await.unwrap();
    let t = s
        .create_token(
            &TokenHolder::User("alice".into()),
            "short",
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(t.info.expires_at.is_some());
    assert!(
        s.authenticate(&t.token).await.unwrap().is_some(),
        "valid now"
    );
    s.flush_last_used().await;
    let shown = s.token(t.info.id).await.unwrap();
    assert!(shown.last_used_at.is_some(), "last use recorded");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Expiry needs no write: the cached entry is checked against the clock.
    assert!(s.authenticate(&t.token).await.unwrap().is_none(), "expired");
    assert_eq!(
        s.token(t.info.id).await.unwrap().status,
        TokenStatus::Expired
    );
    s.close().await;
}

async fn writes_reach_the_cache(ctx: Ctx) {
    let (s, _) = ctx.store().await;
    s.create_user("alice", false, None).await.unwrap();
    let t = s
        .create_token(&TokenHolder::User("alice".into()), "t", None)
        .await
        .unwrap();
    // Warm the cache, then revoke: the very next lookup says no.
    for _ in 0..3 {
        assert!(s.authenticate(&t.token).await.unwrap().is_some());
    }
    let mut changes = s.changes().expect("a store announces changes");
    changes.borrow_and_update();
    s.revoke_user_tokens("alice").await.unwrap();
    assert!(changes.has_changed().unwrap(), "the change was announced");
    assert!(s.authenticate(&t.token).await.unwrap().is_none());
    // An unknown token, then that token created: seen at once (the write clears the cache).
    assert!(s.authenticate("aw_not_yet").await.unwrap().is_none());
    let fresh = s
        .create_token(&TokenHolder::User("alice".into()), "t2", None)
        .await
        .unwrap();
    assert!(s.authenticate(&fresh.token).await.unwrap().is_some());
    s.close().await;
}

async fn another_process(ctx: Ctx) {
    let url = ctx.database_url().await;
    let opts = StoreOptions {
        poll: Duration::from_millis(100),
        ..StoreOptions::default()
    };
    let a = ctx.open(&url, opts.clone()).await;
    let b = ctx.open(&url, opts).await;
    a.create_user("alice", false, None).await.unwrap();
    let t = a
        .create_token(&TokenHolder::User("alice".into()), "t", None)
        .await
        .unwrap();
    assert!(
        b.authenticate(&t.token).await.unwrap().is_some(),
        "b sees a's token"
    );
    let mut changes = b.changes().unwrap();
    // Let b's poller catch up with a's writes so far: the change awaited below is the
    // revocation's.
    tokio::time::sleep(Duration::from_millis(400)).await;
    changes.borrow_and_update();
    let t0 = Instant::now();
    a.revoke_token(t.info.id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), changes.changed())
        .await
        .expect("b noticed within 1 s")
        .unwrap();
    println!(
        "  change by another process seen after {} ms",
        t0.elapsed().as_millis()
    );
    assert!(b.authenticate(&t.token).await.unwrap().is_none());
    a.close().await;
    b.close().await;
}

async fn nothing_half_written(ctx: Ctx) {
    let (s, _) = ctx.store().await;
    s.create_user("alice", false, None).await.unwrap();
    // The share to an unknown user fails after the workspace row would have been written.
    let e = s
        .create_workspace("alice", "dev", &["bob".into(), "nobody".into()])
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("shared_with")));
    assert!(
        s.workspaces(None).await.unwrap().is_empty(),
        "no workspace left behind"
    );
    // An import whose last entry collides writes none of the earlier ones.
    let cfg: ControlConfig = toml::from_str(&format!(
        r#"
[[users]]
name = "carol"
token_sha256 = "{}"
[[users]]
name = "dave"
token_sha256 = "{}"
"#,
        hash_token("carol-token"),
        hash_token("alice-existing")
    ))
    .unwrap();
    let existing = s
        .create_token(&TokenHolder::User("alice".into()), "t", None)
        .await
        .unwrap();
    let cfg = ControlConfig {
        users: cfg
            .users
            .into_iter()
            .map(|mut u| {
                if u.name == "dave" {
                    u.token_sha256 = Some(hash_token(&existing.token));
                }
                u
            })
            .collect(),
        ..cfg
    };
    let e = s.import(&cfg).await.unwrap_err();
    assert_eq!(e.status(), 409, "{e}");
    assert_eq!(
        s.user("carol").await.unwrap_err().status(),
        404,
        "carol not kept"
    );
    assert!(s.authenticate("carol-token").await.unwrap().is_none());
    s.close().await;
}

const CONFIG: &str = r#"
[[users]]
name = "alice"
token = "alice-token"

[[users]]
name = "bob"
token = "bob-token"

[[users]]
name = "ops"
token = "ops-token"
admin = true

[[workspaces]]
owner = "alice"
name = "dev"
shared_with = ["bob"]
[[workspaces.agents]]
id = "11111111-1111-4111-8111-111111111111"
token = "agent-dev"
"#;

async fn import(ctx: Ctx) {
    let (s, _) = ctx.store().await;
    let cfg: ControlConfig = toml::from_str(CONFIG).unwrap();
    let r = s.import(&cfg).await.unwrap();
    assert_eq!(
        (
            r.users_created,
            r.workspaces_created,
            r.agents_created,
            r.tokens_added
        ),
        (3, 1, 1, 4)
    );
    assert!(matches!(
        s.authenticate("ops-token").await.unwrap(),
        Some(Principal::User(User { admin: true, .. }))
    ));
    assert!(s.resolve_workspace(&user("bob"), "alice/dev").await.is_ok());
    // Again: nothing changes.
    let again = s.import(&cfg).await.unwrap();
    assert_eq!(again, Default::default(), "importing twice changes nothing");
    // What the CLI added stays; a token the file no longer lists is revoked; shares follow
    // the file.
    let extra = s
        .create_token(&TokenHolder::User("alice".into()), "cli", None)
        .await
        .unwrap();
    let changed: ControlConfig = toml::from_str(
        &CONFIG
            .replace("alice-token", "alice-token-2")
            .replace("shared_with = [\"bob\"]", "shared_with = []"),
    )
    .unwrap();
    let r = s.import(&changed).await.unwrap();
    assert_eq!(
        (r.tokens_added, r.tokens_revoked, r.shares_changed),
        (1, 1, 1)
    );
    assert!(s.authenticate("alice-token").await.unwrap().is_none());
    assert!(s.authenticate("alice-token-2").await.unwrap().is_some());
    assert!(s.authenticate(&extra.token).await.unwrap().is_some());
    assert!(
        s.resolve_workspace(&user("bob"), "alice/dev")
            .await
            .is_err()
    );
    // An invalid file is refused as a whole, naming it.
    let bad: ControlConfig =
        toml::from_str("[[workspaces]]\nowner = \"nobody\"\nname = \"x\"\n").unwrap();
    let e = s.import(&bad).await.unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("config")));
    s.close().await;
}

async fn passwords(ctx: Ctx) {
    let (s, _) = ctx.store().await;
    s.create_user("alice", false, Some("correct horse"))
        .await
        .unwrap();
    s.create_user("bob", false, None).await.unwrap();
    assert!(s.user("alice").await.unwrap().has_password);
    let ok = s.verify_password("alice", "correct horse").await.unwrap();
    assert_eq!(ok.map(|u| u.name), Some("alice".into()));
    assert!(
        s.verify_password("alice", "wrong horse")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.verify_password("bob", "anything at all")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.verify_password("nobody", "anything at all")
            .await
            .unwrap()
            .is_none()
    );
    let e = s.set_password("bob", Some("short")).await.unwrap_err();
    assert_eq!((e.status().as_u16(), field(&e)), (400, Some("password")));
    s.set_password("bob", Some("battery staple")).await.unwrap();
    assert!(
        s.verify_password("bob", "battery staple")
            .await
            .unwrap()
            .is_some()
    );
    s.set_password("alice", None).await.unwrap();
    assert!(
        s.verify_password("alice", "correct horse")
            .await
            .unwrap()
            .is_none()
    );
    s.close().await;
}

fn record(
    user: &str,
    workspace: Option<&str>,
    at: SystemTime,
    outcome: ToolOutcome,
) -> ToolCallRecord {
    ToolCallRecord {
        at,
        user: user.into(),
        workspace: workspace.map(str::to_string),
        agent: workspace.map(|_| "main".to_string()),
        agent_id: workspace.map(|_| NodeId::random()),
        tool: "workspace_read_file".into(),
        args_bytes: 42,
        result_bytes: 4096,
        outcome,
        detail: (outcome == ToolOutcome::Error).then(|| "no such file".to_string()),
        duration: Duration::from_micros(1500),
    }
}

async fn audit_log(ctx: Ctx) {
    let url = ctx.database_url().await;
    let s = ctx.open(&url, StoreOptions::default()).await;
    let now = SystemTime::now();
    let old = now - Duration::from_secs(3 * 3600);
    s.audit(record("alice", Some("alice/dev"), old, ToolOutcome::Ok));
    for i in 0..300 {
        let outcome = if i % 10 == 0 {
            ToolOutcome::Error
        } else {
            ToolOutcome::Ok
        };
        s.audit(record(
            if i % 2 == 0 { "alice" } else { "bob" },
            Some("alice/dev"),
            now,
            outcome,
        ));
    }
    s.audit(record("bob", None, now, ToolOutcome::Invalid));
    assert!(
        s.flush_audit(Duration::from_secs(10)).await,
        "audit written"
    );
    assert_eq!(s.audit_stats().written, 302);
    let all = s
        .audit_log(AuditFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 302);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let e = all.iter().find(|e| e.outcome == "error").unwrap();
    assert_eq!(
        (
            e.args_bytes,
            e.result_bytes,
            e.detail.as_deref(),
            e.duration_ms
        ),
        (42, 4096, Some("no such file"), 1.5)
    );
    let alice = s
        .audit_log(AuditFilter {
            user: Some("alice".into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(alice.len(), 151);
    let recent = s
        .audit_log(AuditFilter {
            user: Some("alice".into()),
            since_ms: Some(agentwire::services::store::now_ms() - 3_600_000),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 150, "the 3-hour-old call is before --since");
    let no_ws = s
        .audit_log(AuditFilter {
            workspace: Some("alice/dev".into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(no_ws.len(), 301);
    let page = s
        .audit_log(AuditFilter {
            limit: Some(10),
            before_id: Some(all[9].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.first().map(|e| e.id), Some(all[10].id), "paging");
    s.close().await;
    // Retention: a store keeping one hour deletes the old entry when it starts.
    let kept = ctx
        .open(
            &url,
            StoreOptions {
                audit_retention: Some(Duration::from_secs(3600)),
                ..StoreOptions::default()
            },
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = kept
            .audit_log(AuditFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .len();
        if n == 301 {
            break;
        }
        assert!(Instant::now() < deadline, "retention applied ({n} entries)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Records arriving one at a time (as calls end) are still written a batch at a time.
    let before = kept.audit_stats();
    for _ in 0..20 {
        kept.audit(record("alice", None, now, ToolOutcome::Ok));
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    assert!(kept.flush_audit(Duration::from_secs(10)).await);
    let after = kept.audit_stats();
    assert_eq!(after.written - before.written, 20);
    let batches = after.batches - before.batches;
    assert!(
        batches <= 5,
        "20 records over ~100 ms took {batches} transactions"
    );
    kept.close().await;

    // A full queue drops and counts instead of waiting.
    let small = ctx
        .open(
            &url,
            StoreOptions {
                audit_queue: 4,
                ..StoreOptions::default()
            },
        )
        .await;
    for _ in 0..2000 {
        small.audit(record("alice", None, now, ToolOutcome::Ok));
    }
    assert!(small.flush_audit(Duration::from_secs(10)).await);
    let st = small.audit_stats();
    assert_eq!(st.written + st.dropped_queue_full, 2000, "{st:?}");
    assert!(st.dropped_queue_full > 0, "some were dropped: {st:?}");
    let metrics = small.metrics();
    assert!(metrics.iter().any(|m| {
        m.name == "agentwire_audit_dropped_total"
            && m.samples
                .iter()
                .any(|(l, v)| l.contains("queue_full") && *v > 0.0)
    }));
    small.close().await;
}

async fn concurrent_migration(ctx: Ctx) {
    let url = ctx.database_url().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let (ctx, url) = (ctx.clone(), url.clone());
            tokio::spawn(async move { ctx.open(&url, StoreOptions::default()).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.expect("opened"));
    }
    for s in &stores {
        assert_eq!(s.schema_version().await.unwrap(), migrations::latest());
    }
    // Writers racing for the same name: exactly one wins, the others get a 409.
    let tries: Vec<_> = stores
        .iter()
        .map(|s| s.create_user("shared", false, None))
        .collect();
    let results = futures_util::future::join_all(tries).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.status() == 409),
        "{results:?}"
    );
    for s in stores {
        s.close().await;
    }
}

async fn schema_too_new(ctx: Ctx) {
    let (s, url) = ctx.store().await;
    s.close().await;
    drop(s);
    // Another (newer) agentwire recorded a migration this one does not know.
    bump_schema(&ctx, &url).await;
    let err =
        agentwire::services::store::Store::open(&Ctx::location(&url), StoreOptions::default())
            .await
            .unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");
}

/// Records a migration beyond this binary's in the database at `url`.
pub async fn bump_schema(ctx: &Ctx, url: &str) {
    let v = migrations::latest() + 1;
    let sql = format!(
        "INSERT INTO schema_migrations (version, name, applied_ms, agentwire_version) \
         VALUES ({v}, 'from the future', 0, '99.0.0')"
    );
    if ctx.is_postgres() {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client.batch_execute(&sql).await.unwrap();
        drop(client);
        let _ = task.await;
    } else {
        let path = url.strip_prefix("sqlite:").unwrap();
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(&sql).unwrap();
    }
}

/// The authorization server's records behave on this backend as the in-memory store's
/// do (the same conformance check, every operation).
async fn oauth_records(ctx: Ctx) {
    let (s, _) = ctx.store().await;
    agentwire::services::oauth::store_tests::contract(&s).await;
}
