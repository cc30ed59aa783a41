//! What happens to each frame on one direction of an emulated link, decided without IO
//! or a clock: the shell hands frames in with the time they arrived, asks for the frames
//! due at a time, and sleeps until [`Direction::poll_timeout`].
//!
//! The model, in the order a frame meets it:
//! 1. **Loss**: dropped with probability `loss` (independently per frame).
//! 2. **Bottleneck** (only with a `rate`): a FIFO served at `rate` bits per second whose
//!    buffer holds `queue` bytes; a frame that does not fit is tail-dropped. A frame
//!    leaves the bottleneck when its last bit is serialized.
//! 3. **Propagation**: `delay` plus a uniform sample of `[-jitter, +jitter]` (never below
//!    zero). Jitter alone does not reorder: a frame never overtakes an earlier one, as on
//!    a real path where delay varies with queueing.
//! 4. **Reordering**: with probability `reorder` a frame is held back a further
//!    `reorder_delay`, and frames sent in that time overtake it.
//!
//! Everything is drawn from one RNG seeded per direction, so a run is reproducible given
//! the same arrival times.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::{Duration, Instant};

/// One direction's behaviour. Parsed from `key=value` pairs separated by commas, e.g.
/// `delay=10ms,jitter=1ms,loss=1%,rate=100mbit,queue=256k` (see [`Params::parse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Delay varies uniformly within `delay ± jitter`.
    pub jitter: Duration,
    /// Probability that a frame is lost, 0 to 1.
    pub loss: f64,
    /// Probability that a frame is held back and overtaken, 0 to 1.
    pub reorder: f64,
    /// How long a reordered frame is held back.
    pub reorder_delay: Duration,
    /// Bottleneck rate in bits per second; `None` for no limit.
    pub rate_bps: Option<u64>,
    /// Bottleneck buffer in bytes (only with a rate).
    pub queue_bytes: u64,
    /// Frames held at once in this direction (delay line and bottleneck), a memory bound.
    pub limit_frames: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(1),
            rate_bps: None,
            queue_bytes: 256 << 10,
            limit_frames: 50_000,
        }
    }
}

/// A malformed parameter string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("link parameter {key:?}: {why}")]
pub struct ParamError {
    /// The key (or the whole item when it has no `=`).
    pub key: String,
    /// What is wrong with it.
    pub why: &'static str,
}

fn bad(key: &str, why: &'static str) -> ParamError {
    ParamError {
        key: key.into(),
        why,
    }
}

/// `10ms`, `1.5ms`, `250us`, `2s`; a bare number is milliseconds.
fn parse_duration(key: &str, v: &str) -> Result<Duration, ParamError> {
    let (num, unit) = split_unit(v);
    let n: f64 = num.parse().map_err(|_| bad(key, "not a duration"))?;
    let secs = match unit {
        "" | "ms" => n / 1e3,
        "us" => n / 1e6,
        "s" => n,
        _ => return Err(bad(key, "unit must be s, ms or us")),
    };
    if !secs.is_finite() || !(0.0..=3600.0).contains(&secs) {
        return Err(bad(key, "out of range (0 to 3600 s)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `1%` or `0.01`.
fn parse_probability(key: &str, v: &str) -> Result<f64, ParamError> {
    let p = match v.strip_suffix('%') {
        Some(pct) => pct.parse::<f64>().map(|x| x / 100.0),
        None => v.parse::<f64>(),
    }
    .map_err(|_| bad(key, "not a probability"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(bad(key, "out of range (0 to 1, or 0% to 100%)"));
    }
    Ok(p)
}

/// `100mbit`, `1gbit`, `64kbit`, `5000000` (bits per second); `0` or `none` for no limit.
fn parse_rate(key: &str, v: &str) -> Result<Option<u64>, ParamError> {
    if v == "none" {
        return Ok(None);
    }
    let (num, unit) = split_unit(v);
    let n: f64 = num.parse().map_err(|_| bad(key, "not a rate"))?;
    let mult = match unit {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(bad(key, "unit must be bit, kbit, mbit or gbit")),
    };
    let bps = n * mult;
    if !bps.is_finite() || !(0.0..=1e12).contains(&bps) {
        return Err(bad(key, "out of range"));
    }
    Ok((bps >= 1.0).then_some(bps as u64))
}

/// `256k`, `1m`, `1500` (bytes).
fn parse_size(key: &str, v: &str) -> Result<u64, ParamError> {
    let (num, unit) = split_unit(v);
    let n: u64 = num.parse().map_err(|_| bad(key, "not a size"))?;
    let mult = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        _ => return Err(bad(key, "unit must be k or m")),
    };
    n.checked_mul(mult).ok_or_else(|| bad(key, "out of range"))
}

fn split_unit(v: &str) -> (&str, &str) {
    let i = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    v.split_at(i)
}

impl Params {
    /// Parses `key=value[,key=value...]` with keys `delay`, `jitter`, `loss`, `reorder`,
    /// `reorder_delay`, `rate`, `queue`, `limit`; unnamed keys keep their defaults. An
    /// empty string is a perfect link.
    ///
    /// # Errors
    /// [`ParamError`] naming the first bad item.
    pub fn parse(s: &str) -> Result<Self, ParamError> {
        let mut p = Params::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(bad(item, "expected key=value"));
            };
            let (k, v) = (k.trim(), v.trim().to_ascii_lowercase());
            match k {
                "delay" => p.delay = parse_duration(k, &v)?,
                "jitter" => p.jitter = parse_duration(k, &v)?,
                "loss" => p.loss = parse_probability(k, &v)?,
                "reorder" => p.reorder = parse_probability(k, &v)?,
                "reorder_delay" => p.reorder_delay = parse_duration(k, &v)?,
                "rate" => p.rate_bps = parse_rate(k, &v)?,
                "queue" => p.queue_bytes = parse_size(k, &v)?,
                "limit" => {
                    p.limit_frames = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(k, "not a positive count"))?;
                }
                _ => return Err(bad(k, "unknown key")),
            }
        }
        Ok(p)
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay={}us,jitter={}us,loss={},reorder={},reorder_delay={}us,rate={},queue={},limit={}",
            self.delay.as_micros(),
            self.jitter.as_micros(),
            self.loss,
            self.reorder,
            self.reorder_delay.as_micros(),
            self.rate_bps.unwrap_or(0),
            self.queue_bytes,
            self.limit_frames
        )
    }
}

/// What became of a frame handed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Held until it is due (it may be due at once).
    Queued,
    /// Lost on the way (`loss`).
    Lost,
    /// Tail-dropped: the bottleneck buffer or the frame limit was full.
    QueueFull,
}

/// Counters of one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed in.
    pub frames: u64,
    /// Bytes handed in.
    pub bytes: u64,
    /// Frames handed out.
    pub delivered: u64,
    /// Frames dropped by `loss`.
    pub lost: u64,
    /// Frames tail-dropped.
    pub queue_drops: u64,
    /// Frames held back to be overtaken.
    pub reordered: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames={} bytes={} delivered={} lost={} queue_drops={} reordered={}",
            self.frames, self.bytes, self.delivered, self.lost, self.queue_drops, self.reordered
        )
    }
}

/// One direction of the link. Call order: [`Direction::handle_frame`] for each frame as
/// it arrives, then [`Direction::poll_transmit`] until `None`, then sleep until
/// [`Direction::poll_timeout`]. Calling `poll_transmit` early returns nothing.
pub struct Direction {
    params: Params,
    rng: StdRng,
    /// When the bottleneck finishes serializing everything accepted so far.
    link_free: Option<Instant>,
    /// The latest delivery time given to a frame that keeps its order.
    last_in_order: Option<Instant>,
    /// Frames waiting, by (due time, arrival number).
    held: BinaryHeap<Reverse<(Instant, u64, Frame)>>,
    seq: u64,
    stats: Stats,
}

/// A frame's bytes; ordered by nothing (the heap key is time and arrival number).
#[derive(Debug)]
struct Frame(Vec<u8>);

impl PartialEq for Frame {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Frame {}
impl PartialOrd for Frame {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Frame {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Direction {
    /// A direction with `params`, its random decisions drawn from `seed`.
    pub fn new(params: Params, seed: u64) -> Self {
        Self {
            params,
            rng: StdRng::seed_from_u64(seed),
            link_free: None,
            last_in_order: None,
            held: BinaryHeap::new(),
            seq: 0,
            stats: Stats::default(),
        }
    }

    /// Replaces the parameters; frames already held keep the times they were given.
    pub fn set_params(&mut self, params: Params) {
        self.params = params;
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Frames held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes a frame that arrived at `now`.
    pub fn handle_frame(&mut self, now: Instant, frame: Vec<u8>) -> Verdict {
        self.stats.frames += 1;
        self.stats.bytes += frame.len() as u64;
        let p = &self.params;
        if p.loss > 0.0 && self.rng.random::<f64>() < p.loss {
            self.stats.lost += 1;
            return Verdict::Lost;
        }
        if self.held.len() >= p.limit_frames {
            self.stats.queue_drops += 1;
            return Verdict::QueueFull;
        }
        let serialized = match p.rate_bps {
            None => now,
            Some(rate) => {
                let start = self.link_free.filter(|t| *t > now).unwrap_or(now);
                // What is still in the buffer: the time left to serialize it, at the rate.
                let backlog = (start - now).as_secs_f64() * rate as f64 / 8.0;
                if backlog + frame.len() as f64 > p.queue_bytes as f64 {
                    self.stats.queue_drops += 1;
                    return Verdict::QueueFull;
                }
                let done = start + Duration::from_secs_f64(frame.len() as f64 * 8.0 / rate as f64);
                self.link_free = Some(done);
                done
            }
        };
        let mut due = serialized + p.delay;
        if !p.jitter.is_zero() {
            let j = p.jitter.as_nanos() as i64;
            let d = self.rng.random_range(-j..=j);
            due = if d >= 0 {
                due + Duration::from_nanos(d as u64)
            } else {
                due.checked_sub(Duration::from_nanos(d.unsigned_abs()))
                    .unwrap_or(serialized)
                    .max(serialized)
            };
        }
        if p.reorder > 0.0 && self.rng.random::<f64>() < p.reorder {
            self.stats.reordered += 1;
            due += p.reorder_delay;
        } else {
            due = self.last_in_order.map_or(due, |last| due.max(last));
            self.last_in_order = Some(due);
        }
        self.seq += 1;
        self.held.push(Reverse((due, self.seq, Frame(frame))));
        Verdict::Queued
    }

    /// The next frame due at `now`, in delivery order.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let Reverse((due, _, _)) = self.held.peek()?;
        if *due > now {
            return None;
        }
        let Reverse((_, _, Frame(f))) = self.held.pop()?;
        self.stats.delivered += 1;
        Some(f)
    }

    /// When the next held frame is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse((due, _, _))| *due)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A frame carrying its number, `len` bytes long.
    fn frame(n: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(4)];
        f[..4].copy_from_slice(&n.to_be_bytes());
        f
    }

    fn number(f: &[u8]) -> u32 {
        u32::from_be_bytes([f[0], f[1], f[2], f[3]])
    }

    /// Runs `d` on a fake clock: frames arrive at the given offsets; returns each
    /// delivered frame's number and delivery offset, in delivery order.
    fn run(
        d: &mut Direction,
        t0: Instant,
        arrivals: &[(Duration, Vec<u8>)],
    ) -> Vec<(u32, Duration)> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let next_arrival = arrivals.get(i).map(|(t, _)| t0 + *t);
            let next = match (next_arrival, d.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => return out,
            };
            while let Some((t, f)) = arrivals.get(i).filter(|(t, _)| t0 + *t <= next) {
                let _ = d.handle_frame(t0 + *t, f.clone());
                i += 1;
            }
            while let Some(f) = d.poll_transmit(next) {
                out.push((number(&f), next - t0));
            }
        }
    }

    #[test]
    fn perfect_link_delivers_at_once() {
        let t0 = Instant::now();
        let mut d = Direction::new(Params::default(), 1);
        assert_eq!(d.handle_frame(t0, frame(1, 100)), Verdict::Queued);
        assert_eq!(d.poll_transmit(t0).map(|f| number(&f)), Some(1));
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.stats().delivered, 1);
    }

    #[test]
    fn delay_holds_each_frame_for_its_time_and_no_longer() {
        let t0 = Instant::now();
        let p = Params::parse("delay=10ms").unwrap();
        let mut d = Direction::new(p, 1);
        d.handle_frame(t0, frame(1, 100));
        d.handle_frame(t0 + ms(3), frame(2, 100));
        assert_eq!(
            d.poll_transmit(t0 + ms(9)),
            None,
            "early poll returns nothing"
        );
        assert_eq!(d.poll_timeout(), Some(t0 + ms(10)));
        assert_eq!(d.poll_transmit(t0 + ms(10)).map(|f| number(&f)), Some(1));
        assert_eq!(d.poll_timeout(), Some(t0 + ms(13)));
        assert_eq!(d.poll_transmit(t0 + ms(13)).map(|f| number(&f)), Some(2));
    }

    #[test]
    fn jitter_varies_delay_within_bounds_without_reordering() {
        let t0 = Instant::now();
        let p = Params::parse("delay=10ms,jitter=4ms").unwrap();
        let mut d = Direction::new(p, 7);
        let arrivals: Vec<_> = (0..2000)
            .map(|i| (Duration::from_micros(100 * i as u64), frame(i, 100)))
            .collect();
        let out = run(&mut d, t0, &arrivals);
        assert_eq!(out.len(), 2000);
        let mut spread = (Duration::MAX, Duration::ZERO);
        for (k, (n, at)) in out.iter().enumerate() {
            assert_eq!(*n as usize, k, "jitter alone must not reorder");
            let sent = Duration::from_micros(100 * u64::from(*n));
            let delay = *at - sent;
            // At most delay + jitter, unless held behind an earlier frame's later time.
            assert!(delay >= ms(6), "{delay:?}");
            assert!(delay <= ms(14), "{delay:?}");
            spread = (spread.0.min(delay), spread.1.max(delay));
        }
        assert!(spread.0 < ms(7) && spread.1 > ms(13), "{spread:?}");
    }

    #[test]
    fn loss_drops_the_configured_share_reproducibly() {
        let t0 = Instant::now();
        let p = Params::parse("loss=10%").unwrap();
        let lost = |seed| {
            let mut d = Direction::new(p.clone(), seed);
            let v: Vec<Verdict> = (0..10_000)
                .map(|i| d.handle_frame(t0, frame(i, 64)))
                .collect();
            assert_eq!(
                d.stats().lost as usize,
                v.iter().filter(|v| **v == Verdict::Lost).count()
            );
            v
        };
        let a = lost(42);
        let n = a.iter().filter(|v| **v == Verdict::Lost).count();
        assert!((900..1100).contains(&n), "{n} of 10000 lost at 10%");
        assert_eq!(a, lost(42), "same seed, same decisions");
        assert_ne!(a, lost(43), "another seed, other decisions");
    }

    #[test]
    fn rate_limit_spaces_frames_by_serialization_time() {
        let t0 = Instant::now();
        // 1000-byte frames at 8 Mbit/s: 1 ms each.
        let p = Params::parse("rate=8mbit,queue=100k").unwrap();
        let mut d = Direction::new(p, 1);
        let arrivals: Vec<_> = (0..10).map(|i| (Duration::ZERO, frame(i, 1000))).collect();
        let out = run(&mut d, t0, &arrivals);
        let times: Vec<Duration> = out.iter().map(|(_, t)| *t).collect();
        let want: Vec<Duration> = (1..=10).map(ms).collect();
        assert_eq!(times, want);
    }

    #[test]
    fn bottleneck_buffer_tail_drops_and_drains() {
        let t0 = Instant::now();
        // 1000-byte frames at 8 Mbit/s into a 5000-byte buffer.
        let p = Params::parse("rate=8mbit,queue=5000").unwrap();
        let mut d = Direction::new(p, 1);
        let v: Vec<Verdict> = (0..8).map(|i| d.handle_frame(t0, frame(i, 1000))).collect();
        assert_eq!(v.iter().filter(|v| **v == Verdict::Queued).count(), 5);
        assert_eq!(v[5..], [Verdict::QueueFull; 3]);
        assert_eq!(d.stats().queue_drops, 3);
        // Two serialization times later there is room for two more.
        assert_eq!(d.handle_frame(t0 + ms(2), frame(8, 1000)), Verdict::Queued);
        assert_eq!(d.handle_frame(t0 + ms(2), frame(9, 1000)), Verdict::Queued);
        assert_eq!(
            d.handle_frame(t0 + ms(2), frame(10, 1000)),
            Verdict::QueueFull
        );
    }

    #[test]
    fn rate_and_delay_add_up() {
        let t0 = Instant::now();
        let p = Params::parse("rate=8mbit,delay=10ms").unwrap();
        let mut d = Direction::new(p, 1);
        let out = run(&mut d, t0, &[(Duration::ZERO, frame(0, 1000))]);
        assert_eq!(out, vec![(0, ms(11))]);
    }

    #[test]
    fn reordered_frames_are_overtaken() {
        let t0 = Instant::now();
        let p = Params::parse("delay=5ms,reorder=20%,reorder_delay=3ms").unwrap();
        let mut d = Direction::new(p, 9);
        let arrivals: Vec<_> = (0..1000)
            .map(|i| (Duration::from_micros(500 * i as u64), frame(i, 100)))
            .collect();
        let out = run(&mut d, t0, &arrivals);
        assert_eq!(out.len(), 1000, "reordering loses nothing");
        let held = d.stats().reordered;
        assert!(
            (150..250).contains(&held),
            "{held} of 1000 held back at 20%"
        );
        let inversions = out.windows(2).filter(|w| w[0].0 > w[1].0).count();
        assert!(inversions > 100, "{inversions} inversions");
        for (n, at) in &out {
            let sent = Duration::from_micros(500 * u64::from(*n));
            assert!(
                *at - sent == ms(5) || *at - sent == ms(8),
                "frame {n} at {at:?}"
            );
        }
    }

    #[test]
    fn frame_limit_bounds_what_is_held() {
        let t0 = Instant::now();
        let p = Params::parse("delay=1s,limit=3").unwrap();
        let mut d = Direction::new(p, 1);
        let v: Vec<Verdict> = (0..5).map(|i| d.handle_frame(t0, frame(i, 10))).collect();
        assert_eq!(v[3..], [Verdict::QueueFull; 2]);
        assert_eq!(d.held(), 3);
    }

    #[test]
    fn new_parameters_apply_to_later_frames() {
        let t0 = Instant::now();
        let mut d = Direction::new(Params::parse("delay=10ms").unwrap(), 1);
        d.handle_frame(t0, frame(1, 10));
        d.set_params(Params::parse("loss=100%").unwrap());
        assert_eq!(d.handle_frame(t0, frame(2, 10)), Verdict::Lost);
        assert_eq!(d.poll_transmit(t0 + ms(10)).map(|f| number(&f)), Some(1));
    }

    #[test]
    fn parse_reads_every_key_and_unit() {
        let p = Params::parse(
            "delay=10ms, jitter=500us,loss=1%,reorder=0.002,reorder_delay=2,rate=1.5Gbit,queue=1m,limit=9",
        )
        .unwrap();
        assert_eq!(p.delay, ms(10));
        assert_eq!(p.jitter, Duration::from_micros(500));
        assert!((p.loss - 0.01).abs() < 1e-12);
        assert!((p.reorder - 0.002).abs() < 1e-12);
        assert_eq!(p.reorder_delay, ms(2));
        assert_eq!(p.rate_bps, Some(1_500_000_000));
        assert_eq!(p.queue_bytes, 1 << 20);
        assert_eq!(p.limit_frames, 9);
        assert_eq!(Params::parse("").unwrap(), Params::default());
        assert_eq!(Params::parse("rate=none").unwrap().rate_bps, None);
        assert_eq!(
            Params::parse("delay=2s").unwrap().delay,
            Duration::from_secs(2)
        );
        // Display round-trips.
        assert_eq!(Params::parse(&p.to_string()).unwrap().delay, p.delay);
    }

    #[test]
    fn parse_rejects_bad_items_by_name() {
        for (s, key) in [
            ("delay", "delay"),
            ("delay=abc", "delay"),
            ("delay=5h", "delay"),
            ("delay=-1ms", "delay"),
            ("delay=1e400", "delay"),
            ("loss=150%", "loss"),
            ("loss=NaN", "loss"),
            ("rate=10furlongs", "rate"),
            ("queue=99999999999999999999", "queue"),
            ("queue=18446744073709551615m", "queue"),
            ("limit=0", "limit"),
            ("colour=red", "colour"),
        ] {
            let e = Params::parse(s).expect_err(s);
            assert_eq!(e.key, key, "{s}: {e}");
        }
    }
}
