use super::*;

const AGENT_DEV: &str = "11111111-1111-4111-8111-111111111111";
const AGENT_GPU: &str = "22222222-2222-4222-8222-222222222222";
const AGENT_BOB: &str = "33333333-3333-4333-8333-333333333333";

fn config() -> String {
    format!(
        r#"
service_token = "svc"

[[users]]
name = "alice"
token_sha256 = "{alice}"

[[users]]
name = "bob"
token = "bob-token"

[[users]]
name = "root"
token = "root-token"
admin = true

[[workspaces]]
owner = "alice"
name = "dev"
shared_with = ["bob"]
[[workspaces.agents]]
id = "{AGENT_DEV}"
token = "agent-dev"
[[workspaces.agents]]
name = "gpu"
id = "{AGENT_GPU}"
token_sha256 = "{gpu}"

[[workspaces]]
owner = "bob"
name = "secret"
[[workspaces.agents]]
id = "{AGENT_BOB}"
token = "agent-bob"
"#,
        alice = hash_token("alice-token"),
        gpu = hash_token("agent-gpu"),
    )
}

fn cp() -> InMemoryControlPlane {
    InMemoryControlPlane::from_toml(&config()).unwrap()
}

fn user(cp: &InMemoryControlPlane, name: &str) -> User {
    cp.users().iter().find(|u| u.name == name).unwrap().clone()
}

#[tokio::test]
async fn authenticates_every_kind_of_token() {
    let cp = cp();
    let p = cp.authenticate("alice-token").await.unwrap().unwrap();
    assert_eq!(
        p,
        Principal::User(User {
            name: "alice".into(),
            admin: false
        })
    );
    let Principal::Agent {
        agent_id,
        workspace,
    } = cp.authenticate("agent-gpu").await.unwrap().unwrap()
    else {
        panic!()
    };
    assert_eq!(agent_id, AGENT_GPU.parse().unwrap());
    assert_eq!(workspace.full_name(), "alice/dev");
    assert_eq!(
        cp.authenticate("svc").await.unwrap(),
        Some(Principal::Service)
    );
    assert_eq!(cp.authenticate("nope").await.unwrap(), None);
    assert_eq!(cp.authenticate("").await.unwrap(), None);
    assert_eq!(cp.authenticate("alice-token ").await.unwrap(), None);
}

#[tokio::test]
async fn resolves_own_shared_and_admin_workspaces() {
    let cp = cp();
    let (alice, bob, root) = (user(&cp, "alice"), user(&cp, "bob"), user(&cp, "root"));

    let r = cp.resolve_workspace(&alice, "dev.gpu").await.unwrap();
    assert_eq!(
        (r.workspace.full_name(), r.agent.name.as_str()),
        ("alice/dev".into(), "gpu")
    );
    let err = cp.resolve_workspace(&alice, "dev").await.unwrap_err();
    assert!(matches!(err, ResolveError::AmbiguousAgent { .. }), "{err}");
    assert!(err.to_string().contains("main, gpu"));

    // Shared with bob; bob must name the owner.
    assert!(cp.resolve_workspace(&bob, "alice/dev.main").await.is_ok());
    assert!(matches!(
        cp.resolve_workspace(&bob, "dev").await,
        Err(ResolveError::NotFound { .. })
    ));

    // Alice may not use bob's workspace, and cannot tell it exists.
    let forbidden = cp
        .resolve_workspace(&alice, "bob/secret")
        .await
        .unwrap_err();
    let missing = cp
        .resolve_workspace(&alice, "bob/nothing")
        .await
        .unwrap_err();
    assert!(matches!(forbidden, ResolveError::Forbidden { .. }));
    assert!(matches!(missing, ResolveError::NotFound { .. }));
    assert_eq!(
        forbidden.to_string().replace("secret", "X"),
        missing.to_string().replace("nothing", "X")
    );

    // Admins may use everything.
    let r = cp.resolve_workspace(&root, "bob/secret").await.unwrap();
    assert_eq!(r.agent.id, AGENT_BOB.parse().unwrap());
    assert!(matches!(
        cp.resolve_workspace(&root, "a/b/c").await,
        Err(ResolveError::InvalidSpec { .. })
    ));
}

#[tokio::test]
async fn lists_only_usable_workspaces() {
    let cp = cp();
    let names = |v: Vec<Workspace>| v.iter().map(Workspace::full_name).collect::<Vec<_>>();
    let (alice, bob, root) = (user(&cp, "alice"), user(&cp, "bob"), user(&cp, "root"));
    assert_eq!(
        names(cp.list_workspaces(&alice, None).await.unwrap()),
        ["alice/dev"]
    );
    assert_eq!(
        names(cp.list_workspaces(&bob, None).await.unwrap()),
        ["alice/dev", "bob/secret"]
    );
    assert_eq!(
        names(cp.list_workspaces(&bob, Some("bob")).await.unwrap()),
        ["bob/secret"]
    );
    assert!(
        cp.list_workspaces(&alice, Some("bob"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(cp.list_workspaces(&root, None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn agent_use_follows_workspace_access() {
    let cp = cp();
    let dev: NodeId = AGENT_DEV.parse().unwrap();
    let secret: NodeId = AGENT_BOB.parse().unwrap();
    let alice = Principal::User(user(&cp, "alice"));
    let bob = Principal::User(user(&cp, "bob"));
    assert!(cp.may_use_agent(&alice, dev).await);
    assert!(!cp.may_use_agent(&alice, secret).await);
    assert!(cp.may_use_agent(&bob, dev).await);
    assert!(!cp.may_use_agent(&alice, NodeId::random()).await);
    assert!(cp.may_use_agent(&Principal::Service, secret).await);
    let agent = cp.authenticate("agent-dev").await.unwrap().unwrap();
    assert!(!cp.may_use_agent(&agent, secret).await);
    assert_eq!(
        cp.workspace_by_agent(secret)
            .await
            .unwrap()
            .unwrap()
            .full_name(),
        "bob/secret"
    );
    let ws = cp.workspace_by_agent(dev).await.unwrap().unwrap();
    assert_eq!(cp.workspace_by_id(ws.id).await.unwrap(), Some(ws.clone()));
    // Derived ids are stable across loads.
    assert_eq!(
        InMemoryControlPlane::from_toml(&config())
            .unwrap()
            .workspaces()[0]
            .id,
        ws.id
    );
}

#[test]
fn rejects_inconsistent_configs() {
    let bad = [
        ("[[users]]\nname = \"a\"\n", "needs token"),
        ("[[users]]\nname = \"a b\"\ntoken = \"t\"\n", "valid name"),
        (
            "[[users]]\nname = \"a\"\ntoken = \"t\"\ntoken_sha256 = \"00\"\n",
            "not both",
        ),
        (
            "[[users]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\n",
            "64 hex",
        ),
        (
            "[[users]]\nname = \"a\"\ntoken = \"t\"\n[[users]]\nname = \"a\"\ntoken = \"u\"\n",
            "twice",
        ),
        (
            "[[users]]\nname = \"a\"\ntoken = \"t\"\n[[users]]\nname = \"b\"\ntoken = \"t\"\n",
            "share a token",
        ),
        (
            "[[workspaces]]\nowner = \"ghost\"\nname = \"w\"\n",
            "not a user",
        ),
        (
            "[[users]]\nname = \"a\"\ntoken = \"t\"\n[[workspaces]]\nowner = \"a\"\nname = \"w\"\nshared_with = [\"ghost\"]\n",
            "not a user",
        ),
        (
            "[[users]]\nname = \"a\"\ntoken = \"t\"\n[[workspaces]]\nowner = \"a\"\nname = \"w.x\"\n",
            "valid name",
        ),
        (
            "[[users]]\nname = \"a\"\ntoken = \"t\"\nrole = \"x\"\n",
            "unknown field",
        ),
    ];
    for (text, want) in bad {
        let err = InMemoryControlPlane::from_toml(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
    let dup_agent = format!(
        "[[users]]\nname = \"a\"\ntoken = \"t\"\n[[workspaces]]\nowner = \"a\"\nname = \"w\"\n\
         [[workspaces.agents]]\nid = \"{AGENT_DEV}\"\ntoken = \"x\"\n\
         [[workspaces.agents]]\nname = \"b\"\nid = \"{AGENT_DEV}\"\ntoken = \"y\"\n"
    );
    let err = InMemoryControlPlane::from_toml(&dup_agent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("used twice"), "{err}");
}

#[test]
fn load_reports_the_path() {
    let err = InMemoryControlPlane::load(Path::new("/nonexistent/control.toml")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/control.toml"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.toml");
    std::fs::write(&path, config()).unwrap();
    assert_eq!(
        InMemoryControlPlane::load(&path)
            .unwrap()
            .workspaces()
            .len(),
        2
    );
}

#[tokio::test]
async fn demo_setup_works_end_to_end() {
    let (cp, creds) = DemoSetup::default().build().unwrap();
    assert!(creds.user_token.0.starts_with("aw_"));
    assert_eq!(creds.user_token.0.len(), 3 + 43);
    assert_ne!(creds.user_token, creds.agent_token);
    let Some(Principal::User(u)) = cp.authenticate(&creds.user_token.0).await.unwrap() else {
        panic!()
    };
    let r = cp.resolve_workspace(&u, "demo").await.unwrap();
    assert_eq!(r.agent.id, creds.agent_id);
    assert_eq!(r.workspace.full_name(), creds.workspace);
    assert!(matches!(
        cp.authenticate(&creds.agent_token.0).await.unwrap(),
        Some(Principal::Agent { agent_id, .. }) if agent_id == creds.agent_id
    ));
    assert_eq!(
        cp.authenticate(&creds.service_token.0).await.unwrap(),
        Some(Principal::Service)
    );
    assert!(!format!("{creds:?}").contains(&creds.user_token.0));

    let given = DemoSetup {
        user_token: Some(Secret("same".into())),
        agent_token: Some(Secret("same".into())),
        ..Default::default()
    };
    assert!(given.build().is_err());
}

#[test]
fn token_helpers() {
    assert_eq!(
        hash_token("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_ne!(generate_token(), generate_token());
    let a = digest("x");
    let mut b = a;
    assert!(ct_eq(&a, &b));
    b[31] ^= 1;
    assert!(!ct_eq(&a, &b));
}

#[test]
fn documented_example_loads() {
    let doc = include_str!("../../../docs/config.md");
    let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
    let len = doc[start..].find("```").unwrap();
    let cp = InMemoryControlPlane::from_toml(&doc[start..start + len]).unwrap();
    assert_eq!(cp.users().len(), 3);
    assert_eq!(cp.workspaces()[0].agents.len(), 2);
}
