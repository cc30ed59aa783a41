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
//! our peer slot). The core keeps no clock; windows are what the driver says they are.

use std::collections::HashMap;

/// Smallest cap, in datagrams per window.
const MIN_CAP: u32 = 8;
/// A cap this large is lifted.
const LIFT_AT: u32 = 4096;

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
}

impl FairShare {
    /// A window starts.
    pub fn start_window(&mut self) {
        self.counts.clear();
    }

    /// Whether transport data for `slot` may be decrypted; counts it either way.
    pub fn admit(&mut self, slot: u32) -> bool {
        let n = self.counts.entry(slot).or_insert(0);
        *n += 1;
        match self.cap {
            Some(cap) if *n > cap => {
                self.dropped += 1;
                false
            }
            _ => true,
        }
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
mod tests {
    use super::*;

    fn data(slot: u32) -> Vec<u8> {
        let mut d = vec![0u8; 48];
        d[0] = 4;
        d[4..8].copy_from_slice(&((slot << 8) | 3).to_le_bytes());
        d
    }

    /// Runs one window of `arrivals`; returns how many of each slot were admitted.
    fn window(f: &mut FairShare, arrivals: &[u32], full: bool) -> HashMap<u32, u32> {
        f.start_window();
        let mut admitted = HashMap::new();
        for &s in arrivals {
            if f.admit(s) {
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
}
