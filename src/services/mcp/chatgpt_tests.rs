//! Tests for the chatgpt toolset: ids, terms, catalogue shapes and the bounded walk.
use super::*;

#[test]
fn fetch_ids() {
    let u = Uuid::from_u128(7);
    assert_eq!(
        FetchId::parse(&format!("workspace:{u}")),
        Some(FetchId::Workspace(u))
    );
    assert_eq!(
        FetchId::parse(&format!("file:{u}:/a:b/c")),
        Some(FetchId::File(u, "/a:b/c".into()))
    );
    for bad in [
        "".to_string(),
        "workspace:".into(),
        "workspace:nope".into(),
        format!("file:{u}"),
        format!("file:{u}:relative"),
        format!("file:{u}:/a\0"),
        format!("dir:{u}"),
    ] {
        assert_eq!(FetchId::parse(&bad), None, "{bad:?}");
    }
}

#[test]
fn terms_all_must_match() {
    let t = terms("  Main  RS ");
    assert_eq!(t, vec!["main", "rs"]);
    assert!(matches_all(&t, "src/main.rs"));
    assert!(!matches_all(&t, "src/lib.rs"));
    assert!(terms("   ").is_empty());
}

/// A directory tree where `/w` and each `dN` directory below it holds `files` files
/// (`fK.txt`, content "needle K") and one subdirectory, `depth` levels deep.
struct FakeTree {
    files: usize,
    depth: usize,
    reads: std::sync::atomic::AtomicUsize,
}

impl FakeTree {
    fn new(files: usize, depth: usize) -> Self {
        Self {
            files,
            depth,
            reads: Default::default(),
        }
    }
}

fn entry(dir: &str, name: String, kind: EntryKind, size: u64) -> DirEntry {
    DirEntry {
        path: format!("{dir}/{name}"),
        name,
        kind,
        size,
        mode: 0o644,
        mtime: 0,
        symlink_target: None,
    }
}

impl Tree for FakeTree {
    fn root(&self) -> BoxFuture<'_, Result<String, ToolError>> {
        Box::pin(async { Ok("/w".to_string()) })
    }

    fn list(&self, dir: &str) -> BoxFuture<'_, Result<Vec<DirEntry>, ToolError>> {
        let level = dir.matches("/d").count();
        let mut out: Vec<_> = (0..self.files)
            .map(|k| entry(dir, format!("f{k}.txt"), EntryKind::File, 8))
            .collect();
        if level < self.depth {
            out.push(entry(dir, format!("d{}", level + 1), EntryKind::Dir, 0));
            out.push(entry(dir, ".git".into(), EntryKind::Dir, 0));
        }
        Box::pin(async move { Ok(out) })
    }

    fn read(&self, path: &str, _limit: u64) -> BoxFuture<'_, Result<bytes::Bytes, ToolError>> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let k = path
            .rsplit('f')
            .next()
            .unwrap_or("")
            .trim_end_matches(".txt");
        let body = bytes::Bytes::from(format!("needle {k}"));
        Box::pin(async move { Ok(body) })
    }
}

fn ws() -> Workspace {
    Workspace {
        id: Uuid::from_u128(1),
        owner: "alice".into(),
        name: "dev".into(),
        shared_with: vec![],
        agents: vec![],
    }
}

async fn walk(tree: &FakeTree, limits: &SearchLimits, query: &str) -> Vec<SearchHit> {
    let terms = terms(query);
    let w = ws();
    let mut hits = Vec::new();
    Walker::new(tree, limits, &terms, &w, &mut hits)
        .run()
        .await
        .unwrap();
    hits
}

#[tokio::test]
async fn search_walk_is_bounded() {
    let tree = FakeTree::new(3, 10);
    let big = SearchLimits {
        max_results: 1000,
        max_entries: 100_000,
        max_dirs: 1000,
        max_bytes: 1 << 30,
        ..SearchLimits::default()
    };
    // Depth: levels 0..=max_depth are searched, deeper ones and .git never.
    let hits = walk(
        &tree,
        &SearchLimits {
            max_depth: 2,
            ..big.clone()
        },
        "f0",
    )
    .await;
    let paths: Vec<_> = hits
        .iter()
        .map(|h| h.id.rsplit(':').next().unwrap())
        .collect();
    assert_eq!(paths, ["/w/f0.txt", "/w/d1/f0.txt", "/w/d1/d2/f0.txt"]);
    // Results.
    let hits = walk(
        &tree,
        &SearchLimits {
            max_results: 4,
            ..big.clone()
        },
        "needle",
    )
    .await;
    assert_eq!(hits.len(), 4);
    // Entries examined.
    let hits = walk(
        &tree,
        &SearchLimits {
            max_entries: 2,
            ..big.clone()
        },
        "needle",
    )
    .await;
    assert_eq!(hits.len(), 2);
    // Bytes read for content matching: 8 bytes per file, so 3 files' worth.
    let tree = FakeTree::new(3, 10);
    let hits = walk(
        &tree,
        &SearchLimits {
            max_bytes: 24,
            ..big.clone()
        },
        "needle",
    )
    .await;
    assert_eq!(hits.len(), 3);
    assert_eq!(tree.reads.load(std::sync::atomic::Ordering::Relaxed), 3);
    // Files larger than max_file_bytes are matched by path only.
    let tree = FakeTree::new(3, 1);
    let hits = walk(
        &tree,
        &SearchLimits {
            max_file_bytes: 4,
            ..big.clone()
        },
        "needle",
    )
    .await;
    assert!(hits.is_empty());
    assert_eq!(tree.reads.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Directories listed.
    let hits = walk(
        &FakeTree::new(1, 10),
        &SearchLimits { max_dirs: 2, ..big },
        "f0",
    )
    .await;
    assert_eq!(hits.len(), 2);
}

#[test]
fn catalog_shapes_are_exact() {
    let c = catalog();
    let names: Vec<_> = c.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["search", "fetch"]);
    let s = serde_json::Value::Object(c[0].input_schema.as_ref().clone());
    assert_eq!(
        s,
        serde_json::json!({"type":"object","properties":{"query":{"type":"string","description":"Words to look for"}},"required":["query"],"additionalProperties":false})
    );
}
