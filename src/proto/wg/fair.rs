//! Each peer's fair share of the driver's decryption while its receive queue is
//! backlogged.
//!
//! All peers' datagrams arrive on one UDP socket, in arrival order. A peer that floods it
//! (at line rate, to a port nobody listens on) fills the socket's queue, and every other
//! peer's datagram then waits behind the flood's decryption: one tenant's traffic sets
//! every tenant's latency. The driver reads the socket in windows (a few `recvmmsg`
//! batches); a window in which no read found the socket empty means the queue is
//! backlogged.
//!
//! While windows end backlogged with more than one peer in them, a **cap** on what any
//! one peer may decrypt per window halves each window (from the heaviest peer's count);
//! each window that ends with the queue drained grows it back by an eighth, and it goes
//! once it is out of reach. Transport data over the cap is dropped
//! *before* decryption, which costs a header read instead of a ChaCha20-Poly1305 pass and
//! a netstack ingest, so the driver drains the queue faster than the flood fills it and
//! the others' datagrams are reached soon. Peers under the cap lose nothing; TCP inside
//! the dropped datagrams backs off as from any loss.
//!
//! A lone peer never tightens the cap (there is no one to be fair to) and nothing is
//! limited while the queue keeps up. Handshakes and discovery are not counted: only
//! transport data is costly and attributable before decryption (its receiver index names
//! our peer slot). Windows are what the driver says they are.
//!
//! The cap alone lets a flood that the driver *just* keeps up with take a whole core:
//! windows then end drained and nothing is cut. So the driver also reports what became
//! of each decrypted datagram. A peer whose decrypted datagrams are mostly **wasted** —
//! discarded by the netstack because nothing on our side is addressed (UDP to a port no
//! socket is bound to, or any packet for an address that is not ours) — is **restricted**: its transport data is decrypted at most
//! [`WASTEFUL_RATE`] a second (a token bucket, refilled from the `now` each window is
//! started with), and the rest is dropped before decryption, backlog or not. The datagrams
//! it is still allowed keep being judged, and one sample that is not mostly waste lifts
//! the restriction. Traffic to a listening socket is never waste, however heavy, so the
//! throughput paths are untouched; a queue that is merely full is not waste either.

use std::collections::HashMap;
use std::time::Instant;

/// Smallest cap, in datagrams per window.
const MIN_CAP: u32 = 8;
/// A cap this large is lifted.
const LIFT_AT: u32 = 4096;
/// Decrypted datagrams after which a peer's waste is judged (fewer while restricted,
/// since it is then allowed few).
const SAMPLE: u32 = 256;
const RESTRICTED_SAMPLE: u32 = 32;
/// Datagrams a second a restricted peer may have decrypted, and its burst: enough for
/// a mistaken peer's real connections to crawl along, a small fraction of a core.
pub const WASTEFUL_RATE: u32 = 1000;
const WASTEFUL_BURST: u32 = 64;
/// Peers judged at once; past this, those not restricted are forgotten (a sample is a
/// heuristic, and only authenticated peers are ever recorded).
const MAX_JUDGED: usize = 4096;

/// What the driver learns about a peer's decrypted datagrams.
#[derive(Debug, Default)]
struct Judged {
    decrypted: u32,
    wasted: u32,
    /// Tokens, in thousandths of a datagram, while restricted.
    restricted: Option<u64>,
}

/// Why a datagram is not to be decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Its peer is over its share of a backlogged window.
    OverShare,
    /// Its peer is restricted and out of tokens.
    Wasteful,
}

/// A change in a peer's standing, for the driver's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Most of its decrypted datagrams were addressed to nothing: now restricted.
    Restricted,
    /// A sample that was not mostly waste: no longer restricted.
    Lifted,
}

/// Which peer slot a transport-data datagram is for, read from its receiver index
/// without decrypting (the device numbers receiver indices `slot << 8 | n`). `None` for
/// any other message.
pub fn data_slot(datagram: &[u8]) -> Option<u32> {
    match datagram {
        [4, 0, 0, 0, a, b, c, d, ..] if datagram.len() >= 32 => {
            Some(u32::from_le_bytes([*a, *b, *c, *d]) >> 8)
        }
        _ => None,
    }
}

/// The per-window accounting.
#[derive(Debug, Default)]
pub struct FairShare {
    /// Datagrams each slot sent in the current window (admitted or not).
    counts: HashMap<u32, u32>,
    /// What one peer may decrypt per window, while one is imposed.
    cap: Option<u32>,
    /// Datagrams dropped, ever.
    dropped: u64,
    /// Peers whose decrypted datagrams are being judged, and those restricted.
    judged: HashMap<u32, Judged>,
    /// How many of `judged` are restricted (so the common case skips the lookup).
    restricted: usize,
    /// Datagrams dropped because their peer was restricted, ever.
    dropped_wasteful: u64,
    last_start: Option<Instant>,
}

impl FairShare {
    /// A window starts at `now`; restricted peers earn their tokens for the time since
    /// the last window.
    pub fn start_window(&mut self, now: Instant) {
        self.counts.clear();
        // Windows may be microseconds apart, so tokens are earned by the nanosecond.
        let elapsed_ns = self.last_start.map_or(0, |t| {
            now.saturating_duration_since(t)
                .as_nanos()
                .min(1_000_000_000) as u64
        });
        self.last_start = Some(now);
        if self.restricted > 0 && elapsed_ns > 0 {
            let earned = elapsed_ns * u64::from(WASTEFUL_RATE) / 1_000_000;
            let burst = u64::from(WASTEFUL_BURST) * 1000;
            for j in self.judged.values_mut() {
                if let Some(t) = j.restricted.as_mut() {
                    *t = (*t + earned).min(burst);
                }
            }
        }
    }

    /// Whether transport data for `slot` may be decrypted; counts it either way.
    pub fn admit(&mut self, slot: u32) -> Result<(), Cut> {
        let n = self.counts.entry(slot).or_insert(0);
        *n += 1;
        if let Some(cap) = self.cap
            && *n > cap
        {
            self.dropped += 1;
            return Err(Cut::OverShare);
        }
        if self.restricted > 0
            && let Some(t) = self
                .judged
                .get_mut(&slot)
                .and_then(|j| j.restricted.as_mut())
        {
            if *t < 1000 {
                self.dropped_wasteful += 1;
                return Err(Cut::Wasteful);
            }
            *t -= 1000;
        }
        Ok(())
    }

    /// A datagram for `slot` was decrypted, and the netstack kept it (`wasted == false`)
    /// or discarded it as addressed to nothing. Returns a change in the peer's standing.
    pub fn decrypted(&mut self, slot: u32, wasted: bool) -> Option<Standing> {
        // A peer is judged from its first wasted datagram on; until then (the common case,
        // on every packet of the data path) this is one check.
        if !wasted && (self.judged.is_empty() || !self.judged.contains_key(&slot)) {
            return None;
        }
        if !self.judged.contains_key(&slot) && self.judged.len() >= MAX_JUDGED {
            self.judged.retain(|_, j| j.restricted.is_some());
        }
        let j = self.judged.entry(slot).or_default();
        j.decrypted += 1;
        j.wasted += u32::from(wasted);
        let enough = if j.restricted.is_some() {
            RESTRICTED_SAMPLE
        } else {
            SAMPLE
        };
        if j.decrypted < enough {
            return None;
        }
        let wasteful = j.wasted * 2 > j.decrypted;
        j.decrypted = 0;
        j.wasted = 0;
        match (wasteful, j.restricted.is_some()) {
            (true, false) => {
                j.restricted = Some(u64::from(WASTEFUL_BURST) * 1000);
                self.restricted += 1;
                Some(Standing::Restricted)
            }
            (false, true) => {
                self.judged.remove(&slot);
                self.restricted -= 1;
                Some(Standing::Lifted)
            }
            _ => None,
        }
    }

    /// Peers restricted now.
    pub fn restricted(&self) -> usize {
        self.restricted
    }

    /// Datagrams dropped because their peer was restricted, ever.
    pub fn dropped_wasteful(&self) -> u64 {
        self.dropped_wasteful
    }

    /// The window ended; `full` if the socket still had datagrams queued (no read in it
    /// found the socket empty).
    pub fn end_window(&mut self, full: bool) {
        let heaviest = self.counts.values().copied().max().unwrap_or(0);
        if full && self.counts.len() > 1 {
            let from = self.cap.unwrap_or(heaviest).min(heaviest);
            self.cap = Some((from / 2).max(MIN_CAP));
        } else if !full {
            self.cap = self.cap.map(|c| c + c / 8 + 1).filter(|&c| c < LIFT_AT);
        }
    }

    /// The cap in force, if any.
    pub fn cap(&self) -> Option<u32> {
        self.cap
    }

    /// Datagrams dropped over the cap, ever.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a fixed origin for the windows' times
mod tests {
    use super::*;
    use std::time::Duration;

    fn data(slot: u32) -> Vec<u8> {
        let mut d = vec![0u8; 48];
        d[0] = 4;
        d[4..8].copy_from_slice(&((slot << 8) | 3).to_le_bytes());
        d
    }

    /// Runs one window of `arrivals`; returns how many of each slot were admitted.
    fn window(f: &mut FairShare, arrivals: &[u32], full: bool) -> HashMap<u32, u32> {
        f.start_window(Instant::now());
        let mut admitted = HashMap::new();
        for &s in arrivals {
            if f.admit(s).is_ok() {
                *admitted.entry(s).or_insert(0) += 1;
            }
        }
        f.end_window(full);
        admitted
    }

    #[test]
    fn the_slot_comes_from_the_receiver_index() {
        assert_eq!(data_slot(&data(7)), Some(7));
        assert_eq!(data_slot(&data(0xff_ffff)), Some(0xff_ffff));
        // Handshakes, short datagrams and garbage name no slot.
        let mut init = data(7);
        init[0] = 1;
        assert_eq!(data_slot(&init), None);
        assert_eq!(data_slot(&data(7)[..31]), None);
        assert_eq!(data_slot(&[]), None);
        let mut bad = data(7);
        bad[2] = 1;
        assert_eq!(data_slot(&bad), None);
    }

    #[test]
    fn a_flooding_peer_is_cut_and_the_quiet_one_is_untouched() {
        let mut f = FairShare::default();
        // Backlogged windows: the flood (slot 1) fills each, the quiet peer (2) sends 2.
        let mut arrivals = vec![1; 100];
        arrivals.push(2);
        arrivals.extend(vec![1; 26]);
        arrivals.push(2);
        let a = window(&mut f, &arrivals, true);
        assert_eq!(a[&1], 126, "nothing is cut before a backlog is seen");
        let mut flood = Vec::new();
        for _ in 0..12 {
            let a = window(&mut f, &arrivals, true);
            assert_eq!(a[&2], 2, "the quiet peer lost datagrams");
            flood.push(a[&1]);
        }
        // The cap halves per backlogged window, down to its floor.
        assert_eq!(&flood[..5], &[63, 31, 15, 8, 8]);
        assert_eq!(*flood.last().unwrap(), MIN_CAP);
        assert!(f.dropped() > 600);
    }

    #[test]
    fn a_lone_peer_is_never_limited() {
        let mut f = FairShare::default();
        for _ in 0..5 {
            let a = window(&mut f, &[9; 128], true);
            assert_eq!(a[&9], 128);
        }
        assert_eq!(f.dropped(), 0);
        assert_eq!(f.cap(), None);
    }

    #[test]
    fn nothing_is_limited_while_the_queue_keeps_up() {
        let mut f = FairShare::default();
        let mut arrivals = vec![1; 120];
        arrivals.extend([2; 8]);
        for _ in 0..3 {
            let a = window(&mut f, &arrivals, false);
            assert_eq!((a[&1], a[&2]), (120, 8));
        }
        assert_eq!(f.cap(), None);
    }

    #[test]
    fn the_cap_grows_back_and_lifts_once_the_queue_drains() {
        let mut f = FairShare::default();
        let mut arrivals = vec![1; 120];
        arrivals.extend([2; 8]);
        for _ in 0..20 {
            window(&mut f, &arrivals, true);
        }
        assert_eq!(f.cap(), Some(MIN_CAP));
        // A lone flood keeps the cap (the quiet peer may be between calls) but does not
        // tighten it.
        window(&mut f, &[1; 128], true);
        assert_eq!(f.cap(), Some(MIN_CAP));
        let mut drained = 0;
        while f.cap().is_some() {
            window(&mut f, &[1; 64], false);
            drained += 1;
            assert!(drained < 100, "the cap never lifted");
        }
        let a = window(&mut f, &arrivals, false);
        assert_eq!(a[&1], 120);
    }

    /// Offers `per_ms` datagrams from `slot` every millisecond for `ms` milliseconds, in
    /// drained windows, and reports each admitted one as wasted or not. Returns how many
    /// were admitted.
    fn stream(
        f: &mut FairShare,
        t: &mut Instant,
        slot: u32,
        per_ms: u32,
        ms: u32,
        wasted: bool,
    ) -> u32 {
        let mut admitted = 0;
        for _ in 0..ms {
            *t += Duration::from_millis(1);
            f.start_window(*t);
            for _ in 0..per_ms {
                if f.admit(slot).is_ok() {
                    admitted += 1;
                    f.decrypted(slot, wasted);
                }
            }
            f.end_window(false);
        }
        admitted
    }

    #[test]
    fn a_peer_whose_traffic_is_addressed_to_nothing_is_held_to_the_wasteful_rate() {
        let mut f = FairShare::default();
        let mut t = Instant::now();
        // A flood the driver keeps up with (every window drained): the backlog cap never
        // engages, but the waste does, after one sample.
        let first = stream(&mut f, &mut t, 1, 300, 1, true);
        assert_eq!(first, 300);
        assert_eq!(f.restricted(), 1);
        assert_eq!(f.cap(), None);
        // Over the next second, 300 000 offered, about WASTEFUL_RATE (plus the burst)
        // decrypted.
        let second = stream(&mut f, &mut t, 1, 300, 1000, true);
        assert!(
            (WASTEFUL_RATE..=WASTEFUL_RATE + WASTEFUL_BURST).contains(&second),
            "{second} decrypted in a second"
        );
        assert!(f.dropped_wasteful() >= 298_000);
        // Another peer's traffic, even heavy, is untouched.
        assert_eq!(stream(&mut f, &mut t, 2, 300, 100, false), 30_000);
    }

    #[test]
    fn a_restricted_peer_is_lifted_by_one_sample_of_real_traffic() {
        let mut f = FairShare::default();
        let mut t = Instant::now();
        stream(&mut f, &mut t, 1, 300, 1, true);
        assert_eq!(f.restricted(), 1);
        // It stops wasting: within a few samples at the restricted rate it is free again.
        let mut ms = 0;
        while f.restricted() > 0 {
            stream(&mut f, &mut t, 1, 300, 1, false);
            ms += 1;
            assert!(ms < 200, "still restricted after {ms} ms of real traffic");
        }
        assert_eq!(stream(&mut f, &mut t, 1, 300, 10, false), 3000);
    }

    #[test]
    fn a_heavy_peer_with_some_waste_or_a_full_queue_is_not_restricted() {
        let mut f = FairShare::default();
        let mut t = Instant::now();
        // Half its datagrams wasted (not more than half): kept.
        for _ in 0..100 {
            t += Duration::from_millis(1);
            f.start_window(t);
            for i in 0..512u32 {
                assert!(f.admit(1).is_ok());
                assert_eq!(f.decrypted(1, i % 2 == 0), None);
            }
            f.end_window(false);
        }
        assert_eq!(f.restricted(), 0);
        assert_eq!(f.dropped_wasteful(), 0);
    }

    #[test]
    fn the_judged_peers_stay_bounded() {
        let mut f = FairShare::default();
        // Peers that never waste are not recorded at all.
        for slot in 0..1000 {
            f.decrypted(slot, false);
        }
        assert!(f.judged.is_empty());
        for slot in 0..100_000 {
            f.decrypted(slot, true);
        }
        assert!(f.judged.len() <= MAX_JUDGED);
        // Restricted peers are kept through the pruning.
        for _ in 0..SAMPLE {
            f.decrypted(1 << 20, true);
        }
        for slot in 0..100_000 {
            f.decrypted(slot, true);
        }
        assert_eq!(f.restricted(), 1);
        assert!(
            f.judged
                .get(&(1 << 20))
                .is_some_and(|j| j.restricted.is_some())
        );
    }

    #[test]
    fn tokens_are_earned_across_windows_microseconds_apart() {
        let mut f = FairShare::default();
        let mut t = Instant::now();
        stream(&mut f, &mut t, 1, 300, 1, true);
        let mut admitted = 0;
        for _ in 0..100_000 {
            t += Duration::from_micros(10);
            f.start_window(t);
            for _ in 0..3 {
                if f.admit(1).is_ok() {
                    admitted += 1;
                    f.decrypted(1, true);
                }
            }
            f.end_window(false);
        }
        assert!(
            (WASTEFUL_RATE - 1..=WASTEFUL_RATE + WASTEFUL_BURST).contains(&admitted),
            "{admitted} decrypted in a second of 10 us windows"
        );
    }
}
