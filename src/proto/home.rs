//! Choosing the home DERP region by measured latency, with hysteresis.
//!
//! Inputs are rounds of latency measurements (STUN round trips from endpoint discovery,
//! or HTTP latency checks where UDP is blocked): [`HomeChooser::handle_round`]. The
//! choice is the region with the lowest recent latency, where each region's recent
//! latency is its best over the last [`WINDOW`] rounds (one slow answer does not move a
//! node). A node changes home only when the current home stopped answering for
//! [`MISSED_TO_LEAVE`] rounds, or another region is clearly faster: below
//! [`SWITCH_RATIO`] of the home's latency and at least [`MIN_GAIN`] faster. Moving home
//! costs every peer a node update and a new relay connection, so flapping is worse than
//! a few milliseconds.
//!
//! Sans-IO: no clock, no sockets; the shell feeds rounds and reads [`HomeChooser::home`].

use std::collections::BTreeMap;
use std::time::Duration;

/// Rounds a region's best latency is remembered over.
pub const WINDOW: usize = 3;
/// A faster region must be below this share of the home's latency.
pub const SWITCH_RATIO: f64 = 2.0 / 3.0;
/// ... and faster by at least this much.
pub const MIN_GAIN: Duration = Duration::from_millis(10);
/// Rounds without an answer from the home before it is left.
pub const MISSED_TO_LEAVE: usize = 2;

#[derive(Debug, Clone, Default)]
struct Region {
    /// The latest rounds' answers, newest last (`None`: no answer that round).
    recent: Vec<Option<Duration>>,
}

impl Region {
    fn push(&mut self, v: Option<Duration>) {
        self.recent.push(v);
        if self.recent.len() > WINDOW {
            self.recent.remove(0);
        }
    }

    fn best(&self) -> Option<Duration> {
        self.recent.iter().flatten().min().copied()
    }

    fn missed(&self) -> usize {
        self.recent.iter().rev().take_while(|v| v.is_none()).count()
    }
}

/// The home-region machine.
#[derive(Debug, Clone, Default)]
pub struct HomeChooser {
    home: Option<u16>,
    regions: BTreeMap<u16, Region>,
    changes: u64,
}

impl HomeChooser {
    /// A chooser starting at `home` (the map's default) for these candidate regions.
    pub fn new(home: Option<u16>, regions: impl IntoIterator<Item = u16>) -> Self {
        Self {
            home,
            regions: regions
                .into_iter()
                .map(|r| (r, Region::default()))
                .collect(),
            changes: 0,
        }
    }

    /// The current home region.
    pub fn home(&self) -> Option<u16> {
        self.home
    }

    /// How many times the home changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Each candidate region's recent best latency, for diagnostics.
    pub fn latencies(&self) -> Vec<(u16, Option<Duration>)> {
        self.regions.iter().map(|(r, s)| (*r, s.best())).collect()
    }

    /// One round of measurements: the regions that answered and their latency. Regions
    /// that are candidates but absent did not answer this round; regions that are not
    /// candidates are ignored. Returns the new home if it changed.
    pub fn handle_round(&mut self, answers: &[(u16, Duration)]) -> Option<u16> {
        if answers.is_empty() {
            // Nothing answered at all (offline, or the probes were blocked): no evidence
            // against the home in particular.
            return None;
        }
        for (id, r) in &mut self.regions {
            let got = answers
                .iter()
                .filter(|(a, _)| a == id)
                .map(|(_, d)| *d)
                .min();
            r.push(got);
        }
        let best = self
            .regions
            .iter()
            .filter_map(|(id, r)| r.best().filter(|_| r.missed() == 0).map(|b| (*id, b)))
            .min_by_key(|(id, b)| (*b, *id))?;
        let next = match self.home.and_then(|h| self.regions.get(&h).map(|r| (h, r))) {
            None => best.0,
            Some((h, _)) if h == best.0 => h,
            Some((_, r)) if r.missed() >= MISSED_TO_LEAVE => best.0,
            Some((h, r)) => match r.best() {
                None => best.0,
                Some(cur) => {
                    let clearly = best.1.as_secs_f64() < cur.as_secs_f64() * SWITCH_RATIO
                        && cur.saturating_sub(best.1) >= MIN_GAIN;
                    if clearly { best.0 } else { h }
                }
            },
        };
        (Some(next) != self.home).then(|| {
            self.home = Some(next);
            self.changes += 1;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn first_round_picks_the_fastest_then_holds_against_small_gains() {
        let mut c = HomeChooser::new(Some(1), [1, 2, 3]);
        assert_eq!(
            c.handle_round(&[(1, ms(40)), (2, ms(20)), (3, ms(90))]),
            Some(2)
        );
        // Region 1 is now a little faster: not enough to move.
        assert_eq!(
            c.handle_round(&[(1, ms(15)), (2, ms(20)), (3, ms(90))]),
            None
        );
        assert_eq!(c.home(), Some(2));
        // Clearly faster (below 2/3 and 10 ms better) on its best sample: move.
        assert_eq!(
            c.handle_round(&[(1, ms(5)), (2, ms(20)), (3, ms(90))]),
            Some(1)
        );
        assert_eq!(c.changes(), 2);
    }

    #[test]
    fn a_small_absolute_gain_never_moves_even_at_a_large_ratio() {
        let mut c = HomeChooser::new(Some(1), [1, 2]);
        c.handle_round(&[(1, ms(6)), (2, ms(9))]);
        assert_eq!(c.home(), Some(1));
        assert_eq!(
            c.handle_round(&[(1, ms(9)), (2, ms(2))]),
            None,
            "7 ms is noise"
        );
    }

    #[test]
    fn one_slow_answer_from_home_does_not_move_it() {
        let mut c = HomeChooser::new(Some(1), [1, 2]);
        c.handle_round(&[(1, ms(10)), (2, ms(30))]);
        // A spike at home: its best of the window is still 10 ms.
        assert_eq!(c.handle_round(&[(1, ms(200)), (2, ms(30))]), None);
        assert_eq!(c.home(), Some(1));
    }

    #[test]
    fn a_silent_home_is_left_after_two_rounds() {
        let mut c = HomeChooser::new(Some(1), [1, 2]);
        c.handle_round(&[(1, ms(10)), (2, ms(50))]);
        assert_eq!(c.handle_round(&[(2, ms(50))]), None);
        assert_eq!(c.handle_round(&[(2, ms(50))]), Some(2));
        // It comes back faster but not clearly so: stay.
        assert_eq!(c.handle_round(&[(1, ms(40)), (2, ms(50))]), None);
    }

    #[test]
    fn no_answers_at_all_changes_nothing() {
        let mut c = HomeChooser::new(Some(1), [1, 2]);
        c.handle_round(&[(1, ms(10)), (2, ms(50))]);
        for _ in 0..5 {
            assert_eq!(c.handle_round(&[]), None);
        }
        assert_eq!(c.home(), Some(1));
        // Unknown regions are ignored.
        assert_eq!(c.handle_round(&[(9, ms(1)), (1, ms(10))]), None);
    }

    #[test]
    fn no_home_yet_takes_the_fastest() {
        let mut c = HomeChooser::new(None, [3, 4]);
        assert_eq!(c.handle_round(&[(3, ms(30)), (4, ms(30))]), Some(3));
    }
}
