//! The DERP mesh between relays of one region: three relays on 127.0.0.1 meshed with a
//! key, library clients homed on different relays.

mod derp_support;

use agentwire::proto::backoff::Backoff;
use agentwire::proto::derp::server::DropReason;
use agentwire::runtime::derp::DerpClientOptions;
use agentwire::services::derp::{Admission, DerpServerConfig, Mesh, MeshConfig, MeshPeer};
use agentwire::wire::derp::PeerGoneReason;
use agentwire::wire::key::{NodePrivate, NodePublic};
use derp_support::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MESH_KEY: &str = "0123456789abcdef0123456789abcdef";

/// A relay with its mesh.
struct Relay {
    srv: TestServer,
    mesh: Option<Mesh>,
}

impl Relay {
    fn mesh(&self) -> &Mesh {
        self.mesh.as_ref().expect("meshed")
    }

    /// Stops the mesh (waiting for its tasks), then the server.
    async fn stop(mut self) {
        if let Some(m) = self.mesh.take() {
            within("mesh shutdown", m.shutdown()).await;
        }
        self.srv.stop().await;
    }
}

fn mesh_config(key: &str, self_url: &str) -> MeshConfig {
    let mut cfg = MeshConfig::new(key, Default::default());
    cfg.self_url = Some(self_url.to_owned());
    cfg.backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    cfg
}

/// Keys the relays admit: only the test's clients, so a mesh link gets in by its
/// mesh key alone.
#[derive(Clone, Default)]
struct Admitted(Arc<Mutex<HashSet<NodePublic>>>);

impl Admitted {
    fn add(&self, key: &NodePrivate) {
        self.0.lock().unwrap().insert(key.public());
    }

    fn config(&self) -> DerpServerConfig {
        let set = self.0.clone();
        DerpServerConfig {
            admission: Some(Admission::new(move |k| set.lock().unwrap().contains(k))),
            admit_wait: Duration::from_millis(200),
            ..DerpServerConfig::default()
        }
    }
}

/// `n` relays, each meshed with all the others (its own URL is in the list too, and
/// skipped).
async fn relays(n: usize, admitted: &Admitted) -> Vec<Relay> {
    let mut out = Vec::new();
    for _ in 0..n {
        let srv = TestServer::start(admitted.config()).await;
        let mesh = srv.server.start_mesh(mesh_config(MESH_KEY, &srv.url()));
        out.push(Relay {
            srv,
            mesh: Some(mesh),
        });
    }
    let peers: Vec<MeshPeer> = out
        .iter()
        .enumerate()
        .map(|(i, r)| MeshPeer {
            id: format!("relay{i}"),
            url: r.srv.url(),
        })
        .collect();
    for r in &out {
        r.mesh().set_peers(peers.clone());
    }
    for r in &out {
        eventually("every mesh link up", || {
            r.srv.stats().mesh_links == n - 1 && r.mesh().stats().links_up == n - 1
        })
        .await;
        assert_eq!(r.mesh().stats().peers, n - 1, "own URL skipped");
    }
    out
}

async fn client(url: &str, key: &NodePrivate, admitted: &Admitted) -> Peer {
    admitted.add(key);
    let mut cfg = config(url, false);
    cfg.private = key.clone();
    peer_with(cfg, DerpClientOptions::default()).await
}

async fn expect_packet(to: &mut Peer, from: &NodePublic, data: &[u8]) {
    let got = to.recv().await;
    assert_eq!((got.src, &got.packet[..]), (*from, data));
}

#[tokio::test]
async fn clients_on_different_relays_exchange_packets() {
    let admitted = Admitted::default();
    let r = relays(3, &admitted).await;
    let (ka, kb) = (NodePrivate::generate(), NodePrivate::generate());
    let mut a = client(&r[0].srv.url(), &ka, &admitted).await;
    let mut b = client(&r[2].srv.url(), &kb, &admitted).await;
    eventually("relay 1 forwards to b", || {
        r[0].srv.server.forwards(&kb.public())
    })
    .await;
    eventually("relay 3 forwards to a", || {
        r[2].srv.server.forwards(&ka.public())
    })
    .await;
    assert!(r[1].srv.server.forwards(&ka.public()) && r[1].srv.server.forwards(&kb.public()));
    for i in 0..20u8 {
        a.client.send(kb.public(), &[i; 100]).unwrap();
        expect_packet(&mut b, &ka.public(), &[i; 100]).await;
        b.client.send(ka.public(), &[i; 1000]).unwrap();
        expect_packet(&mut a, &kb.public(), &[i; 1000]).await;
    }
    let (s1, s3) = (r[0].srv.stats(), r[2].srv.stats());
    assert_eq!(
        (s1.counters.forwarded_out, s1.counters.forwarded_in),
        (20, 20)
    );
    assert_eq!(
        (s3.counters.forwarded_out, s3.counters.forwarded_in),
        (20, 20)
    );
    assert_eq!(r[1].srv.stats().counters.forwarded_in, 0);
    assert_eq!(
        r[0].mesh()
            .stats()
            .links
            .iter()
            .map(|l| l.forwarded)
            .sum::<u64>(),
        20
    );
    // Mesh links got in without being admitted; nobody was refused.
    for x in &r {
        let s = x.srv.stats();
        assert_eq!(s.counters.dropped(DropReason::NotAdmitted), 0);
        assert_eq!(s.counters.dropped(DropReason::MeshDenied), 0);
        assert_eq!(s.watchers, 2);
    }
    a.client.shutdown().await;
    b.client.shutdown().await;
    for x in r {
        x.stop().await;
    }
}

#[tokio::test]
async fn packets_follow_a_client_to_its_newest_relay() {
    let admitted = Admitted::default();
    let r = relays(3, &admitted).await;
    let (ka, kb) = (NodePrivate::generate(), NodePrivate::generate());
    let a = client(&r[0].srv.url(), &ka, &admitted).await;
    let mut b_old = client(&r[2].srv.url(), &kb, &admitted).await;
    eventually("relay 1 forwards to b", || {
        r[0].srv.server.forwards(&kb.public())
    })
    .await;
    a.client.send(kb.public(), b"to relay 3").unwrap();
    expect_packet(&mut b_old, &ka.public(), b"to relay 3").await;
    // b also logs in at relay 2 while its relay 3 connection lingers: the newer wins.
    let mut b_new = client(&r[1].srv.url(), &kb, &admitted).await;
    // Relay 1 hears about both; once its watch stream from relay 2 arrives, the
    // newer connection wins.
    within("packets moved to relay 2", async {
        loop {
            a.client.send(kb.public(), b"moving").unwrap();
            if let Ok(Some(got)) =
                tokio::time::timeout(Duration::from_millis(100), b_new.rx.recv()).await
            {
                assert_eq!(got.src, ka.public());
                break;
            }
        }
    })
    .await;
    while b_old.rx.try_recv().is_ok() {}
    a.client.send(kb.public(), b"newest").unwrap();
    let got = b_new.recv().await;
    assert_eq!(&got.packet[..], b"newest");
    assert!(b_old.rx.try_recv().is_err(), "the older relay gets nothing");
    // The newer connection goes: the previous forwarder takes over.
    b_new.client.shutdown().await;
    eventually("relay 1 hears b left relay 2", || {
        r[0].srv.server.forwards(&kb.public()) && !r[1].srv.server.is_connected(&kb.public())
    })
    .await;
    within("packets back at relay 3", async {
        loop {
            a.client.send(kb.public(), b"back").unwrap();
            if let Ok(Some(got)) =
                tokio::time::timeout(Duration::from_millis(100), b_old.rx.recv()).await
            {
                assert_eq!(&got.packet[..], b"back");
                break;
            }
        }
    })
    .await;
    a.client.shutdown().await;
    b_old.client.shutdown().await;
    for x in r {
        x.stop().await;
    }
}

#[tokio::test]
async fn a_stopped_relay_takes_its_forwarders_with_it() {
    let admitted = Admitted::default();
    let mut r = relays(3, &admitted).await;
    let (ka, kb) = (NodePrivate::generate(), NodePrivate::generate());
    let a = client(&r[0].srv.url(), &ka, &admitted).await;
    let mut b = client(&r[2].srv.url(), &kb, &admitted).await;
    eventually("relay 1 forwards to b", || {
        r[0].srv.server.forwards(&kb.public())
    })
    .await;
    a.client.send(kb.public(), b"hi").unwrap();
    expect_packet(&mut b, &ka.public(), b"hi").await;
    let relay3 = r.pop().unwrap();
    within("relay 3 stops", relay3.stop()).await;
    eventually("relay 3's forwarders gone", || {
        !r[0].srv.server.forwards(&kb.public())
            && r[0].srv.stats().forwarded_keys == 0
            && r[0].srv.stats().mesh_links == 1
            && r[1].srv.stats().mesh_links == 1
    })
    .await;
    // a exchanged packets with b, so it hears b is gone; sending more is refused
    // promptly, not queued anywhere.
    eventually("a told b is gone", || {
        a.client
            .status()
            .last_peer_gone
            .is_some_and(|(k, why)| k == kb.public() && why == PeerGoneReason::Disconnected)
    })
    .await;
    let before = r[0].srv.stats().counters.dropped(DropReason::NoSuchPeer);
    a.client.send(kb.public(), b"anyone?").unwrap();
    eventually("dropped as not here", || {
        r[0].srv.stats().counters.dropped(DropReason::NoSuchPeer) > before
    })
    .await;
    // The survivors still mesh: links to the stopped relay keep retrying, reported down.
    eventually("the link to relay 3 reports down", || {
        let m = r[0].mesh().stats();
        (m.peers, m.links_up) == (2, 1) && m.links.iter().any(|l| !l.up && l.last_error.is_some())
    })
    .await;
    a.client.shutdown().await;
    b.client.shutdown().await;
    for x in r {
        x.stop().await;
    }
}

#[tokio::test]
async fn a_wrong_mesh_key_is_refused() {
    let admitted = Admitted::default();
    let good = relays(1, &admitted).await.pop().unwrap();
    // A relay with another key tries to mesh with it.
    let bad_srv = TestServer::start(DerpServerConfig::default()).await;
    let bad = bad_srv
        .server
        .start_mesh(mesh_config("not-the-mesh-key", &bad_srv.url()));
    bad.set_peers(vec![MeshPeer {
        id: "good".into(),
        url: good.srv.url(),
    }]);
    // Not admitted by key and not a mesh peer: refused at login, counted.
    eventually("bad mesh login refused", || {
        good.srv.stats().counters.dropped(DropReason::NotAdmitted) >= 2
    })
    .await;
    assert_eq!(good.srv.stats().watchers, 0);
    assert_eq!(bad_srv.stats().mesh_links, 0);
    assert_eq!(bad.stats().links_up, 0);
    // Without an admission check it logs in, but WatchConns needs the key.
    let open = TestServer::start(DerpServerConfig {
        mesh_key: Some(MESH_KEY.into()),
        ..DerpServerConfig::default()
    })
    .await;
    bad.set_peers(vec![MeshPeer {
        id: "open".into(),
        url: open.url(),
    }]);
    eventually("WatchConns refused", || {
        open.stats().counters.dropped(DropReason::MeshDenied) >= 2
    })
    .await;
    assert_eq!(open.stats().watchers, 0);
    // Logged in but never watching: not a link, no forwarders.
    let s = bad_srv.stats();
    assert_eq!((s.mesh_links, s.forwarded_keys), (0, 0));
    assert_eq!(bad.stats().links_up, 0);
    within("mesh shutdown", bad.shutdown()).await;
    assert_eq!(bad_srv.stats().mesh_links, 0);
    open.stop().await;
    bad_srv.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn peer_set_changes_and_drop_stop_links_at_once() {
    let admitted = Admitted::default();
    let mut r = relays(3, &admitted).await;
    let kb = NodePrivate::generate();
    let b = client(&r[2].srv.url(), &kb, &admitted).await;
    eventually("relay 1 forwards to b", || {
        r[0].srv.server.forwards(&kb.public())
    })
    .await;
    assert_eq!(r[0].mesh().tasks(), 2);
    // Relay 3 leaves relay 1's peer set: its link and forwarders go at once.
    let keep: Vec<MeshPeer> = r[0]
        .mesh()
        .peers()
        .into_iter()
        .filter(|p| p.url != r[2].srv.url())
        .collect();
    assert_eq!(keep.len(), 1);
    r[0].mesh().set_peers(keep);
    assert!(!r[0].srv.server.forwards(&kb.public()));
    assert_eq!(r[0].mesh().stats().peers, 1);
    eventually("link task ended", || r[0].mesh().tasks() == 1).await;
    // Dropping a mesh removes its links from the registry before any task ends.
    let m = r[1].mesh.take().unwrap();
    assert!(r[1].srv.server.forwards(&kb.public()));
    drop(m);
    let s = r[1].srv.stats();
    assert_eq!((s.mesh_links, s.forwarded_keys), (0, 0));
    // Relay 1 still has relay 3 watching it; relay 3 has nobody left.
    eventually("relay 2's links closed at its peers", || {
        r[0].srv.stats().watchers == 1 && r[2].srv.stats().watchers == 0
    })
    .await;
    // Restarting a mesh on the same relay re-watches from scratch.
    let m = r[1]
        .srv
        .server
        .start_mesh(mesh_config(MESH_KEY, &r[1].srv.url()));
    m.set_peers(vec![MeshPeer {
        id: "relay2".into(),
        url: r[2].srv.url(),
    }]);
    eventually("relay 2 forwards to b again", || {
        r[1].srv.server.forwards(&kb.public())
    })
    .await;
    r[1].mesh = Some(m);
    b.client.shutdown().await;
    eventually("b's forwarder gone", || {
        r[1].srv.stats().forwarded_keys == 0
    })
    .await;
    for x in r {
        x.stop().await;
    }
}

/// Two hubs (relay plus coordinator, which admits only registered nodes) meshed.
#[tokio::test]
async fn hub_mesh_passes_verify_clients_and_survives_a_relay_restart() {
    use agentwire::services::control::InMemoryControlPlane;
    use agentwire::services::hub::Hub;
    let mut hubs = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let control = Arc::new(InMemoryControlPlane::from_toml("service_token = \"s\"").unwrap());
        let hub = Arc::new(Hub::new(control, addr, NodePrivate::generate()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(agentwire::services::http::serve(
            listener,
            hub.router(),
            async move {
                let _ = rx.await;
            },
        ));
        hubs.push((hub, format!("http://{addr}/derp"), tx, task));
    }
    let peers: Vec<MeshPeer> = hubs
        .iter()
        .enumerate()
        .map(|(i, h)| MeshPeer {
            id: format!("hub{i}"),
            url: h.1.clone(),
        })
        .collect();
    for (hub, url, _, _) in &hubs {
        hub.start_mesh(mesh_config(MESH_KEY, url));
        hub.set_mesh_peers(peers.clone());
    }
    let linked = |hub: &Hub| {
        let s = hub.derp().stats();
        s.mesh_links == 1 && s.watchers == 1 && hub.mesh_stats().is_some_and(|m| m.links_up == 1)
    };
    for (hub, ..) in &hubs {
        eventually("hub mesh links up", || linked(hub)).await;
        // No coordinator knows the relays' keys: the mesh key let them in.
        assert_eq!(
            hub.derp().stats().counters.dropped(DropReason::NotAdmitted),
            0
        );
    }
    // A relay restart keeps the mesh: the fresh relay has the mesh key and links again.
    hubs[0].0.restart_derp().await;
    for (hub, ..) in &hubs {
        eventually("hub mesh links up after a relay restart", || linked(hub)).await;
    }
    assert_eq!(hubs[0].0.mesh_stats().unwrap().peers, 1);
    for (hub, _, tx, task) in hubs {
        hub.shutdown().await;
        assert!(hub.mesh_stats().is_none());
        assert_eq!(hub.derp().stats().mesh_links, 0);
        let _ = tx.send(());
        within("hub stop", task).await.unwrap().unwrap();
    }
}
