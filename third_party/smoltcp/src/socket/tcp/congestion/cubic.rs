use crate::{
    socket::tcp::RttEstimator,
    time::{Duration, Instant},
};

use super::Controller;

// Constants for the Cubic congestion control algorithm.
// See RFC 9438.
const BETA_CUBIC: f64 = 0.7;
const C: f64 = 0.4;
// RFC 9438 §4.3: α_cubic = 3(1-β)/(1+β). ~0.5294 for β=0.7.
const ALPHA_CUBIC: f64 = 3.0 * (1.0 - BETA_CUBIC) / (1.0 + BETA_CUBIC);

const DEFAULT_MSS: usize = 1024;

// agentwire patch: round trips the delivery-rate estimate of the rate floor remembers.
const BW_SAMPLES: usize = 10;
// agentwire patch: the floor is this many bandwidth-delay products. The window a flow
// holds sits a little above one (the estimate lags a growing window by a round trip, and
// a real RTT is above the smallest), so a floor of exactly one still cut a little at
// every random loss and held the window at a few dozen segments; BBR keeps two.
const RATE_FLOOR_GAIN: f64 = 1.25;
// agentwire patch: RTT samples this much above the smallest (ms, or a quarter of it if
// more) still count as a path without a queue: millisecond samples on a path with
// jitter vary by this much on their own.
const QUEUE_SLACK_MS: u32 = 2;
// agentwire patch: slow start ends when this many delay samples in a row lie above the
// smallest by an eighth of it, at least 4 and at most 16 ms (RFC 9406's bounds).
const SS_DELAY_SAMPLES: u8 = 3;
const SS_DELAY_MIN_THRESH_US: i64 = 4_000;
const SS_DELAY_MAX_THRESH_US: i64 = 16_000;

#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cubic {
    w_max: usize, // window size prior to loss
    cwnd: usize,
    mss: usize,
    ssthresh: usize,
    rwnd: usize,
    k: f64,            // cubic curve offset in seconds; depends only on w_max and mss
    w_est: f64,        // RFC 9438 §4.3 reno-friendly window, integrated per ACK
    cwnd_prior: usize, // cwnd at the most recent congestion event; gates α_cubic

    recovery_start: Option<Instant>,
    in_fast_recovery: bool,
    // Set on RTO, cleared when new data is ACKed. While set, further RTOs
    // are retransmissions of the same segment and must not reduce ssthresh
    // again (RFC 5681 section 3.1).
    in_rto_recovery: bool,
    idle_start: Option<Instant>, // RFC 9438 §4.2: when in-flight last hit 0

    // agentwire patch: the delivery-rate floor of the loss response (see `on_loss`).
    rate_floor: bool,
    /// agentwire patch: nothing was acknowledged or lost yet (see `set_mss`).
    initial: bool,
    /// Delivery rate samples, bytes per second, one per smoothed round trip; the
    /// estimate is their maximum (as BBR's bandwidth filter), so it follows a growing
    /// window without lag, and a loss that leaves the rate where it was cuts nothing.
    bw_samples: [f64; BW_SAMPLES],
    bw_next: usize,
    bw_start: Option<Instant>,
    bw_acked: usize,
    /// agentwire patch: the largest window of the current interval, bytes.
    bw_cwnd: usize,
    /// Smallest RTT sample seen, ms.
    min_rtt_ms: u32,
    /// agentwire patch: smallest delay sample, µs (0 before one).
    delay_min_us: i64,
    /// agentwire patch: delay samples in a row above the slow-start threshold.
    delay_high: u8,
}

impl Cubic {
    pub fn new() -> Cubic {
        let mut cubic = Cubic {
            w_max: DEFAULT_MSS * 2,
            cwnd: DEFAULT_MSS * 2,
            mss: DEFAULT_MSS,
            rwnd: 64 * DEFAULT_MSS,
            ssthresh: usize::MAX,
            k: 0.0,
            w_est: (DEFAULT_MSS * 2) as f64,
            cwnd_prior: DEFAULT_MSS * 2,

            recovery_start: None,
            in_fast_recovery: false,
            in_rto_recovery: false,
            idle_start: None,

            rate_floor: false,
            initial: true,
            bw_samples: [0.0; BW_SAMPLES],
            bw_next: 0,
            bw_start: None,
            bw_acked: 0,
            bw_cwnd: 0,
            min_rtt_ms: 0,
            delay_min_us: 0,
            delay_high: 0,
        };
        cubic.recompute_k();
        cubic
    }

    // K = cbrt(w_max * (1 - beta) / C) ^ 1/3
    /// agentwire patch: whether a loss may cut the window below the estimated
    /// bandwidth-delay product (the highest delivery rate of the last round trips times
    /// the smallest RTT seen), as TCP Westwood+ does (with BBR's estimate). A loss with no queue behind it (random loss on a lossy path) then
    /// leaves the window where the path's capacity puts it, while a loss from a queue
    /// the flow filled still cuts it to the capacity, draining the queue. Off by default.
    pub(crate) fn set_rate_floor(&mut self, on: bool) {
        self.rate_floor = on;
    }

    /// agentwire patch: whether the rate floor is on.
    pub(crate) fn rate_floor(&self) -> bool {
        self.rate_floor
    }

    /// agentwire patch: the estimated bandwidth-delay product, bytes (0 before samples).
    fn rate_floor_bytes(&self) -> usize {
        let bw = self.bw_samples.iter().copied().fold(0.0, f64::max);
        (RATE_FLOOR_GAIN * bw * self.min_rtt_ms as f64 / 1000.0) as usize
    }

    /// agentwire patch: while the path shows no queue, the window is not below the rate
    /// floor either. Under random loss a loss-based sender's window is set by how fast
    /// it grows between losses: about a segment per round trip in congestion avoidance,
    /// which at 20 ms takes seconds to fill a path of a few hundred segments. Holding
    /// the window at `RATE_FLOOR_GAIN` times the measured bandwidth-delay product makes
    /// it grow by up to that factor per round trip for as long as the delivery rate
    /// follows it, which it does until a bottleneck queue builds; the RTT then rises, and
    /// CUBIC's own rules (with the floor at losses) take over. The gate is the latest RTT
    /// sample, taken within the last two smoothed round trips (samples are suppressed in
    /// a recovery, and an old one says nothing about the queue now), no more than a
    /// quarter (or `QUEUE_SLACK_MS`) above the smallest. Not in a recovery, nor in the
    /// slow start after a timeout, whose flight may be largely delivered already.
    fn hold_rate_floor(&mut self, now: Instant, rtt: &RttEstimator) {
        let min = self.min_rtt_ms;
        let Some((latest, at)) = rtt.latest() else {
            return;
        };
        let fresh = now >= at && (now - at).total_millis() <= u64::from(rtt.smoothed_rtt()) * 2;
        if min == 0 || !fresh || latest > min + (min / 4).max(QUEUE_SLACK_MS) {
            return;
        }
        if self.in_fast_recovery
            || self.in_rto_recovery
            || (self.ssthresh != usize::MAX && self.cwnd < self.ssthresh)
        {
            return;
        }
        let floor = self.rate_floor_bytes().min(self.rwnd);
        if floor > self.cwnd {
            self.cwnd = floor;
            // The Reno-friendly estimate would pull the window back down to where it
            // was on the next ACK in congestion avoidance.
            self.w_est = self.w_est.max(floor as f64);
        }
    }

    /// agentwire patch: one delivery-rate sample per smoothed round trip.
    fn sample_rate(&mut self, now: Instant, len: usize, rtt: &RttEstimator) {
        self.min_rtt_ms = rtt.min_rtt();
        // The ACK that opens an interval marks its start; what it acknowledged was
        // delivered before it.
        let Some(start) = self.bw_start else {
            self.bw_start = Some(now);
            return;
        };
        self.bw_acked += len;
        self.bw_cwnd = self.bw_cwnd.max(self.cwnd);
        let elapsed_us = (now - start).total_micros();
        let period_us = u64::from(rtt.smoothed_rtt().max(1)) * 1000;
        if elapsed_us >= period_us {
            // agentwire patch: a flow delivers at most a window per round trip. More in one interval
            // means the ACKs caught up with data delivered earlier (a hole repaired
            // under data that was not reported, or resent after a timeout), which is
            // not the path's rate; without this bound one such ACK could put the
            // floor far above what the path holds.
            let bound = self.bw_cwnd as f64 * 1e6 / period_us as f64;
            self.bw_samples[self.bw_next] =
                (self.bw_acked as f64 * 1e6 / elapsed_us as f64).min(bound);
            self.bw_cwnd = 0;
            self.bw_next = (self.bw_next + 1) % BW_SAMPLES;
            self.bw_start = Some(now);
            self.bw_acked = 0;
        }
    }

    fn recompute_k(&mut self) {
        let c_as_bytes = C * self.mss as f64;
        let k3 = (self.w_max as f64) * (1.0 - BETA_CUBIC) / c_as_bytes;
        self.k = cube_root(k3);
    }

    // RFC 9438 §4.2: subtract the most recent idle period from t by sliding
    // recovery_start forward by the idle duration.
    fn absorb_idle(&mut self, now: Instant) {
        if let (Some(idle), Some(start)) = (self.idle_start, self.recovery_start)
            && now >= idle
        {
            self.recovery_start = Some(start + (now - idle));
        }
        self.idle_start = None;
    }
}

impl Controller for Cubic {
    fn window(&self) -> usize {
        self.cwnd
    }

    // agentwire patch
    fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    fn on_ack(&mut self, now: Instant, len: usize, in_flight: usize, rtt: &RttEstimator) {
        let segment = len.min(self.mss);
        // agentwire patch: congestion avoidance counts the bytes an ACK covers (RFC 9438
        // integrates per segment acknowledged; RFC 3465), not one segment per ACK: a
        // receiver that ACKs every other segment otherwise halves the growth, which at
        // 1 % loss roughly halves the window the sender holds. Slow start keeps
        // upstream's one segment per ACK.
        let acked = len.min(self.cwnd.max(self.mss));

        self.absorb_idle(now);

        if in_flight == 0 {
            self.idle_start = Some(now);
        }

        // RFC 9438 only acts on ACKs of new data. The socket also notifies us
        // of accepted segments that acknowledge nothing (window updates, data
        // segments from the remote): those must not exit fast recovery nor
        // grow the window.
        if len == 0 {
            return;
        }

        // New data was ACKed: a timer-based loss episode, if any, is over.
        self.in_rto_recovery = false;
        self.initial = false; // agentwire patch

        // First new-data-ack exits fast recovery and deflates `cwnd`
        if self.in_fast_recovery {
            self.in_fast_recovery = false;
            self.cwnd = self.ssthresh;
            self.w_est = self.cwnd as f64;
            return;
        } else if self.cwnd < self.ssthresh {
            // Slow start: increase `cwnd` by 1 MSS per ACK.
            self.cwnd = self
                .cwnd
                .saturating_add(segment)
                .min(self.rwnd)
                .max(self.mss);
            return;
        }

        // ca: RFC 9438 §4.2 and §4.3: Calculate W_cubic and W_est. Use whichever grows faster.
        let recovery_start = match self.recovery_start {
            Some(t) => t,
            None => {
                // RFC 9438 §4.8: set W_max = cwnd and K = 0 at start of CA
                self.w_max = self.cwnd;
                self.k = 0.0;
                self.w_est = self.cwnd as f64;
                self.recovery_start = Some(now);
                now
            }
        };

        // Elapsed time since the start of the recovery phase, in microseconds so the
        // cubic curve still advances between ACKs on sub-millisecond-RTT links.
        let t = now.total_micros() - recovery_start.total_micros();
        if t < 0 {
            return;
        }

        // RFC 9438 §4.3: use cubic function to get suggested cwnd.
        // W_cubic(t) = C(t - K)^3 + w_max, evaluated at the current time t.
        let c_as_bytes = C * self.mss as f64;
        let w_cubic = c_as_bytes * (t as f64 / 1_000_000.0 - self.k).powi(3) + self.w_max as f64;

        // RFC 9438 §4.3: advance our reno-like suggested cwnd.
        // When cwnd exceeds prior cwnd, change α_cubic to match Reno's AIMD.
        let w_est = {
            let alpha = if self.w_est >= self.cwnd_prior as f64 {
                1.0
            } else {
                ALPHA_CUBIC
            };

            self.w_est += alpha * self.mss as f64 * acked as f64 / self.cwnd as f64;
            self.w_est
        };

        // RFC 9438 §4.3: use the suggested window that grows fastest.
        if w_cubic < w_est {
            self.cwnd = (w_est as usize).min(self.rwnd).max(self.mss);
            return;
        }

        // RFC 9438 §4.2: the congestion window target is W_cubic one RTT into the future.
        let w_cubic_target = {
            // srtt is in millis so floor at 1ms to ensure sub-ms RTTs don't ruin the lookahead.
            let srtt = (rtt.smoothed_rtt() as u64 * 1000).max(1000);

            let t_ahead = (t as f64 + srtt as f64) / 1_000_000.0;
            let raw = c_as_bytes * (t_ahead - self.k).powi(3) + self.w_max as f64;
            raw.min(1.5 * self.cwnd as f64) // clamp to avoid increasing faster than slow-start would
        };

        // TODO: clamps to 0 on small w_cubic_target (i.e. close to plateau)
        // add additional counter (linux `cwnd_cnt`?) to track "lost" bytes
        let increment = (w_cubic_target as usize).saturating_sub(self.cwnd) * acked / self.cwnd;
        self.cwnd = (self.cwnd + increment).min(self.rwnd).max(self.mss);
    }

    fn on_delivered(&mut self, now: Instant, bytes: usize, rtt: &RttEstimator) {
        // agentwire patch: the rate floor's estimate, and the floor held.
        if self.rate_floor {
            self.sample_rate(now, bytes, rtt);
            self.hold_rate_floor(now, rtt);
        }
    }

    /// agentwire patch: a delay test for slow start, as HyStart's (RFC 9406). Doubling
    /// the window each round trip, slow start overfills a bottleneck's buffer within the
    /// round in which the window passes the path's capacity: at 300 Mbit/s and 20 ms
    /// with 4 MiB buffers, about a thousand segments dropped at once, a recovery longer
    /// than the transfer's first second and half the throughput. The queue shows in
    /// the round trip before it overflows; a few samples in a row above the smallest by
    /// the threshold end slow start where the window is (`ssthresh = cwnd`), and
    /// congestion avoidance takes it from there. Unlike RFC 9406, which compares the
    /// smallest of each round's first samples with the last round's, samples are judged
    /// as they come: with pacing the queue builds within a round, and a round's first
    /// samples saw the previous one, which had none.
    fn on_delay_sample(&mut self, _now: Instant, rtt: Duration) {
        let us = rtt.total_micros() as i64;
        if self.delay_min_us == 0 || us < self.delay_min_us {
            self.delay_min_us = us.max(1);
        }
        if self.cwnd >= self.ssthresh || self.in_fast_recovery || self.in_rto_recovery {
            self.delay_high = 0;
            return;
        }
        let thresh = (self.delay_min_us / 8).clamp(SS_DELAY_MIN_THRESH_US, SS_DELAY_MAX_THRESH_US);
        if us >= self.delay_min_us + thresh {
            self.delay_high += 1;
            if self.delay_high >= SS_DELAY_SAMPLES {
                self.ssthresh = self.cwnd;
                self.delay_high = 0;
            }
        } else {
            self.delay_high = 0;
        }
    }

    fn on_dup_ack(&mut self, _now: Instant, len: usize, _in_flight: usize, sacked: bool) {
        if self.in_fast_recovery {
            // agentwire patch: a duplicate ACK that reports what the remote holds has
            // already lowered the pipe by that segment, so inflating the window as well
            // lets the recovery send two segments per ACK. That probes for more of the
            // path, which a path losing at random rewards, but unbounded (only the
            // receive window stopped it) it overfills a bottleneck once windows are
            // large: 4 MiB windows dropped 450-1 700 segments at once at a simulated
            // 300 Mbit/s bottleneck. Up to a quarter above ssthresh keeps the probe
            // (six seeds at 1 % loss, 20 ms, with an earlier growth policy: no
            // bottleneck 275 -> 314 Mbit/s on average; the bottleneck 158 -> 212
            // Mbit/s, and no drops there).
            let cap = if sacked {
                self.ssthresh.saturating_add(self.ssthresh / 4).max(self.cwnd)
            } else {
                usize::MAX
            };
            self.cwnd = self
                .cwnd
                .saturating_add(len)
                .min(self.rwnd)
                .min(cap)
                .max(self.mss);
        }
    }

    fn post_transmit(&mut self, now: Instant, _len: usize) {
        self.absorb_idle(now);
    }

    fn on_loss(&mut self, now: Instant, in_flight: usize) {
        self.idle_start = None;
        self.initial = false; // agentwire patch
        // Only cut window size on first entrance to fast recovery.
        if !self.in_fast_recovery {
            // RFC 9438 §4.3: remember the cwnd at this congestion event so W_est can
            // detect when it has recovered and switch α_cubic to 1.
            self.cwnd_prior = self.cwnd;

            // TODO: Make this optional?
            // RFC recommends (SHOULD) disabling if only a single CUBIC flow is on a network.
            //
            // RFC 9483.4.7: Fast Convergence
            // If loss happened at a smaller cwnd than before, it indicates a new flow.
            // Reduce the cubic plateau more than usual to create headroom.
            self.w_max = if self.cwnd < self.w_max {
                ((self.cwnd as f64) * (1.0 + BETA_CUBIC) / 2.0) as usize
            } else {
                self.cwnd
            };

            self.ssthresh = ((in_flight as f64 * BETA_CUBIC) as usize).max(2 * self.mss);
            // agentwire patch: not below the estimated bandwidth-delay product (nor above
            // the window: Westwood+ takes min(cwnd, BDP)); the cubic curve then starts
            // from where the window really is (RFC 9438 4.2: K from W_max - cwnd_epoch).
            // The window, not the flight: the flight is measured after the ACKs of the
            // batch that brought the loss and before the sends they allow.
            let floor = if self.rate_floor {
                self.rate_floor_bytes().min(self.cwnd)
            } else {
                0
            };
            let floored = floor > self.ssthresh;
            if floored {
                self.ssthresh = floor;
            }
            self.cwnd = self.ssthresh.min(self.rwnd).saturating_add(3 * self.mss);

            self.recovery_start = Some(now);
            self.in_fast_recovery = true;
            if floored {
                let c_as_bytes = C * self.mss as f64;
                self.k = cube_root(self.w_max.saturating_sub(self.ssthresh) as f64 / c_as_bytes);
            } else {
                self.recompute_k();
            }
        }
    }

    fn on_rto(&mut self, _now: Instant, in_flight: usize) {
        // RFC 5681: when the retransmission timer fires for a segment that has
        // already been retransmitted by the timer (no new data was ACKed since
        // the previous RTO), ssthresh is held constant.
        if !self.in_rto_recovery {
            self.ssthresh = ((in_flight as f64 * BETA_CUBIC) as usize).max(2 * self.mss);
            self.in_rto_recovery = true;
        }

        self.cwnd = self.mss;
        self.cwnd_prior = in_flight;
        self.initial = false; // agentwire patch

        // RFC 9438 §4.8: defer W_max and K reset to the start of the next CA stage.
        self.recovery_start = None;
        self.in_fast_recovery = false;
        self.idle_start = None;
    }

    fn set_mss(&mut self, mss: usize) {
        self.mss = mss;
        // agentwire patch: before anything was sent, the initial window of RFC 6928
        // (ten segments, at most 14 600 bytes unless two segments are more), as Linux
        // uses, rather than two 1024-byte segments whatever the MSS: a reply of a few
        // kilobytes on a new connection then leaves in the first round trip instead of
        // waiting a round trip per two segments.
        if self.initial {
            let iw = (10 * mss).min((2 * mss).max(14_600));
            self.cwnd = iw;
            self.w_max = iw;
            self.w_est = iw as f64;
            self.cwnd_prior = iw;
        }
        self.recompute_k();
    }

    fn set_remote_window(&mut self, remote_window: usize) {
        if self.rwnd < remote_window {
            // agentwire patch: a receive window that grows (a receiver autotuning its
            // buffer) lifts a cap the window may have sat at for many round trips, while
            // the cubic curve's clock ran on. Congestion avoidance would then chase that
            // curve at 1.5 windows per round trip with nothing to stop it short of a
            // full queue. Slow start towards the new window instead, where the delay
            // test ends it as soon as a queue builds, and a fresh epoch after it. (A
            // guard: in the simulated and emulated runs the window never sat at the
            // cap when a receiver grew its buffer.)
            let capped = self.cwnd >= self.rwnd;
            if capped
                && self.cwnd >= self.ssthresh
                && !self.in_fast_recovery
                && !self.in_rto_recovery
            {
                self.ssthresh = remote_window;
                self.recovery_start = None;
            }
            self.rwnd = remote_window;
        }
    }
}

/// Efficient cube root using f64 bit tricks and Newton-Raphson.
///
/// a = mantissa * 2^e
///
/// cbrt(a) = cbrt(mantissa * 2^e)
/// cbrt(a) = cbrt(mantissa) * cbrt(2^e)
/// -> cbrt(2^e) = 2^(e/3)
///     -> e = 3q + r
///   -> 2^(e/3) = 2^(3q + r)
///   -> 2^(e/3) = 2^q * 2^(r/3)
/// cbrt(a) = cbrt(mantissa) * 2^q * 2^(r/3)
///
/// Floats are constructed from a mantissa and expontnet component.
/// Cbrt of a float can be achieved by cbrt of these two components.
///
/// The mantissa is always between 1 and 2, putting the cbrt between 1
/// and 1.2599. The slope of the curve between those two points is
/// almost a straight line, so a linear interpolatoin between those
/// two points gives an error less than 2%.
///
///
/// The exponent `e` of `2^e` has two parts, tt's quotient and remainder: `e = 3q + r`.
/// Which means cbrt `2^e` is cbrt `2^3q * 2^r` which becomes `2^q * 2^(r/3)`.
///
/// The remainder operation means `r` can only be 0, 1, or 2, so we can calaculate
/// `2^(r/3)` ahead of time.
///
/// Multiplying everything gets us a pretty close answer to the true cbrt.
/// `cbrt(a) = cbrt(mantissa) * 2^q * 2^(r/3)`
///
/// One or two Newton-Raphson iterations reduce any error enough not to matter.
fn cube_root(a: f64) -> f64 {
    if !(a >= f64::MIN_POSITIVE && a.is_finite()) {
        return 0.0;
    }

    const POW2_REM_OVER_3: [f64; 3] = [1.0, 1.2599210498948732, 1.5874010519681994];

    // decompose a into IEEE-754 components
    let bits = a.to_bits();

    // extract mantissa, get rough cbrt using linear interpolation
    let m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    let cbrt_m = m.mul_add(0.2599, 0.7401);

    // extract exponent, break into quotient and remainder
    // e = 3q + r where r ∈ {0, 1, 2}
    let e = (((bits >> 52) & 0x7FF) as i64) - 1023;
    let q = e.div_euclid(3);
    let r = e.rem_euclid(3) as usize;

    // calculate 2^q efficiently by constructing f64 from bits
    let pow2q = f64::from_bits(((q + 1023) as u64) << 52);

    // add cbrt mantissa and other component back in:
    // cbrt mantiassa * 2^q * 2^(r/3)
    let x = cbrt_m * pow2q * POW2_REM_OVER_3[r];

    // a single iteration should bring us close enough
    (2.0 * x + a / (x * x)) / 3.0
}

#[cfg(test)]
mod test {
    use crate::{socket::tcp::RttEstimator, time::Instant};

    use super::*;

    const MSS: usize = 1024;

    fn ack(cubic: &mut Cubic, len: usize, now: Instant) {
        cubic.on_ack(now, len, cubic.window().saturating_sub(MSS), &rtte())
    }

    fn rtte() -> RttEstimator {
        RttEstimator::default()
    }

    /// agentwire patch: slow start ends on three delay samples in a row at least 4 ms
    /// (on a 20 ms path) above the smallest; one or two high samples (a delayed ACK,
    /// jitter) do not end it, nor samples just under the threshold.
    #[test]
    fn slow_start_ends_when_the_delay_rises() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        let now = Instant::from_millis(0);
        let sample = |c: &mut Cubic, ms: f64| {
            c.on_delay_sample(now, Duration::from_micros((ms * 1000.0) as u64))
        };
        for _ in 0..100 {
            ack(&mut cubic, MSS, now);
        }
        sample(&mut cubic, 20.0);
        for ms in [24.5, 25.0, 20.3, 23.9, 23.9, 23.9, 23.9, 30.0, 30.0, 20.0] {
            sample(&mut cubic, ms);
            assert!(cubic.in_slow_start(), "{ms} ms");
        }
        let window = cubic.window();
        for ms in [24.0, 26.0] {
            sample(&mut cubic, ms);
            assert!(cubic.in_slow_start());
        }
        sample(&mut cubic, 24.1);
        assert!(!cubic.in_slow_start());
        assert_eq!(cubic.ssthresh, window);
        // Congestion avoidance grows slowly from there.
        ack(&mut cubic, MSS, now);
        assert!(cubic.window() < window + MSS);
    }

    /// agentwire patch: a receiver that acknowledges every other segment does not halve
    /// the growth in congestion avoidance (byte counting).
    #[test]
    fn growth_counts_bytes_acknowledged_not_acks() {
        let grow = |per_ack: usize| {
            let mut cubic = Cubic::new();
            cubic.set_mss(MSS);
            cubic.cwnd = MSS * 20;
            cubic.w_max = MSS * 20;
            cubic.recompute_k();
            cubic.ssthresh = cubic.cwnd;
            cubic.w_est = cubic.cwnd as f64;
            cubic.cwnd_prior = cubic.cwnd;
            cubic.recovery_start = Some(Instant::from_millis(0));
            let start = cubic.window();
            // One window's worth of bytes acknowledged over one 100 ms round trip.
            let acks = 20 * MSS / per_ack;
            for i in 0..acks {
                let now = Instant::from_millis(1000 + (100 * i / acks) as i64);
                cubic.on_ack(now, per_ack, MSS * 10, &rtte());
            }
            cubic.window() - start
        };
        let every = grow(MSS);
        let other = grow(2 * MSS);
        assert!(every > 0, "no growth");
        assert!(
            other * 10 >= every * 9,
            "{other} bytes with an ACK per two segments, {every} with one per segment"
        );
    }

    /// agentwire patch: with the rate floor, a loss cuts the window no lower than the
    /// delivery rate times the smallest RTT; without it, to beta times the flight.
    #[test]
    fn the_rate_floor_bounds_the_cut_by_the_measured_path() {
        let cut = |floor: bool, bdp_segments: usize| {
            let mut rtt = RttEstimator::default();
            rtt.sample(20);
            let mut cubic = Cubic::new();
            cubic.set_mss(MSS);
            cubic.set_rate_floor(floor);
            cubic.cwnd = MSS * 40;
            cubic.ssthresh = MSS * 20;
            // Delivery at `bdp_segments` per 20 ms round trip for 10 round trips.
            for i in 0..=100 {
                let now = Instant::from_millis(2 * i);
                cubic.on_ack(now, bdp_segments * MSS / 10, MSS * 40, &rtt);
                cubic.on_delivered(now, bdp_segments * MSS / 10, &rtt);
            }
            let window = cubic.window();
            cubic.on_loss(Instant::from_millis(300), MSS * 40);
            (cubic.ssthresh, window)
        };
        // No floor: 0.7 of the 40 segments in flight.
        assert_eq!(cut(false, 40).0, (40.0 * MSS as f64 * BETA_CUBIC) as usize);
        // The path carried all 40 per round trip: no cut (the window, which grew a
        // little meanwhile, is below 1.25 times that).
        let (kept, window) = cut(true, 40);
        assert_eq!(kept, window);
        // The path carried 20 (a queue holds the rest): the usual cut, the floor (25) is
        // lower.
        assert_eq!(cut(true, 20).0, (40.0 * MSS as f64 * BETA_CUBIC) as usize);
    }

    #[test]
    fn congestion_avoidance_works() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        cubic.w_max = MSS * 32;
        cubic.recompute_k();

        // Post-fast-recovery state: cwnd = ssthresh ≈ w_max * beta.
        cubic.cwnd = (MSS * 32 * 7) / 10;
        cubic.ssthresh = cubic.cwnd;
        cubic.recovery_start = Some(Instant::from_millis(0));

        // CA at small time intervals should grow by less than 1 MSS per ACK.
        for i in 1..10 {
            let initial_cwnd = cubic.window();
            ack(&mut cubic, MSS, Instant::from_millis(i));
            assert!(cubic.window() < initial_cwnd + MSS);
        }

        // CA approaches w_max as t approaches K, and exceeds it past K.
        let pre = cubic.window();
        for i in 0..60 {
            ack(&mut cubic, MSS, Instant::from_millis(i * 100));
        }
        assert!(cubic.window() >= cubic.w_max);
        assert!(cubic.window() > pre);

        // RFC 9438 §4.2: the target is clamped to 1.5 * cwnd
        let pre = cubic.window();
        ack(&mut cubic, MSS, Instant::from_millis(100_000));
        assert!(cubic.window() <= pre + MSS);

        // CA should still cap at the receive window once enough ACKs accrue.
        for i in 0..200 {
            ack(&mut cubic, MSS, Instant::from_millis(100_000 + i * 100));
        }
        assert_eq!(cubic.window(), cubic.rwnd);
    }

    // agentwire patch
    #[test]
    fn sacked_duplicate_acks_inflate_the_window_a_quarter_past_ssthresh_at_most() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        cubic.set_remote_window(MSS * 10_000);
        cubic.cwnd = MSS * 400;
        cubic.on_loss(Instant::from_millis(0), MSS * 400);
        let ssthresh = cubic.ssthresh;
        for i in 0..400 {
            cubic.on_dup_ack(Instant::from_millis(i), MSS, MSS * 400, true);
        }
        assert_eq!(cubic.window(), ssthresh + ssthresh / 4);
        // Without SACK the inflation is what lets the sender send at all.
        let mut reno_like = Cubic::new();
        reno_like.set_mss(MSS);
        reno_like.set_remote_window(MSS * 10_000);
        reno_like.cwnd = MSS * 400;
        reno_like.on_loss(Instant::from_millis(0), MSS * 400);
        let start = reno_like.window();
        for i in 0..400 {
            reno_like.on_dup_ack(Instant::from_millis(i), MSS, MSS * 400, false);
        }
        assert_eq!(reno_like.window(), start + 400 * MSS);
    }

    // agentwire patch
    #[test]
    fn a_receive_window_that_grows_past_a_capped_window_restarts_slow_start() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        cubic.set_remote_window(MSS * 100);
        cubic.cwnd = MSS * 100;
        cubic.ssthresh = MSS * 50;
        cubic.recovery_start = Some(Instant::from_millis(0));
        assert!(!cubic.in_slow_start());
        cubic.set_remote_window(MSS * 400);
        assert!(cubic.in_slow_start());
        assert_eq!(cubic.ssthresh, MSS * 400);
        assert_eq!(cubic.recovery_start, None);
        // Not when the window was below the receive window (the path set it).
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        cubic.set_remote_window(MSS * 100);
        cubic.cwnd = MSS * 60;
        cubic.ssthresh = MSS * 50;
        cubic.set_remote_window(MSS * 400);
        assert_eq!(cubic.ssthresh, MSS * 50);
    }

    #[test]
    fn fast_recovery_works() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        cubic.cwnd = MSS * 32;

        // duplicate ACKs before fast recovery should do nothing
        let initial_cwnd = cubic.window();
        for _ in 0..3 {
            cubic.on_dup_ack(Instant::from_millis(0), MSS, initial_cwnd, false);
        }
        assert_eq!(cubic.window(), initial_cwnd);

        // we enter fast recovery upon minor loss (three duplicate ACKs).
        // ssthresh = flight_size * beta_cubic, cwnd = ssthresh + 3*MSS, recovery_start = now.
        // w_max = cwnd since the prior w_max (initial 2*MSS) is below cwnd.
        let in_flight = initial_cwnd / 2;
        let expected_ssthresh = (in_flight as f64 * BETA_CUBIC) as usize;
        cubic.on_loss(Instant::from_millis(0), in_flight);
        assert_eq!(cubic.ssthresh, expected_ssthresh);
        assert_eq!(cubic.cwnd, expected_ssthresh + 3 * MSS);
        assert_eq!(cubic.w_max, initial_cwnd);
        assert!(cubic.in_fast_recovery);
        assert_eq!(cubic.recovery_start, Some(Instant::from_millis(0)));

        // in fast recovery, each dup-ACK should increase the cwnd by 1 MSS
        let initial_cwnd = cubic.window();
        for i in 0..3 {
            for _ in 0..3 {
                let initial_cwnd = cubic.window();
                cubic.on_dup_ack(Instant::from_millis(i), MSS, initial_cwnd, false);
                assert_eq!(cubic.window(), initial_cwnd + MSS);
            }

            // multiple loss events (trip-dup-ack) should not trigger additional fast recovery reductions
            let initial_cwnd = cubic.window();
            let initial_ssthresh = cubic.ssthresh;
            let initial_w_max = cubic.w_max;
            cubic.on_loss(Instant::from_millis(i), initial_cwnd);
            assert_eq!(cubic.window(), initial_cwnd);
            assert_eq!(cubic.ssthresh, initial_ssthresh);
            assert_eq!(cubic.w_max, initial_w_max);
        }
        assert_eq!(cubic.window(), initial_cwnd + MSS * 9);

        // a non-duplicate ACK exits fast recovery and deflates cwnd to ssthresh
        ack(&mut cubic, MSS, Instant::from_millis(10));
        assert_eq!(cubic.window(), cubic.ssthresh);
        assert!(!cubic.in_fast_recovery);
    }

    #[test]
    fn zero_length_ack_does_not_exit_fast_recovery() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        cubic.cwnd = MSS * 32;

        cubic.on_loss(Instant::from_millis(0), cubic.cwnd);
        assert!(cubic.in_fast_recovery);

        let cwnd = cubic.window();
        let ssthresh = cubic.ssthresh;

        // Accepted segments that acknowledge no new data (window updates,
        // data segments from the remote) must not end fast recovery or
        // change the window.
        ack(&mut cubic, 0, Instant::from_millis(1));
        assert!(cubic.in_fast_recovery);
        assert_eq!(cubic.window(), cwnd);
        assert_eq!(cubic.ssthresh, ssthresh);

        // The first ACK of new data still exits and deflates.
        ack(&mut cubic, MSS, Instant::from_millis(2));
        assert!(!cubic.in_fast_recovery);
        assert_eq!(cubic.window(), ssthresh);
    }

    #[test]
    fn repeated_rto_holds_ssthresh() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        cubic.cwnd = MSS * 32;

        // First RTO reduces ssthresh based on the flight size.
        cubic.on_rto(Instant::from_millis(0), MSS * 32);
        let ssthresh = cubic.ssthresh;
        assert_eq!(ssthresh, (32.0 * MSS as f64 * BETA_CUBIC) as usize);

        // Until new data is ACKed, further RTOs are retransmissions of the
        // same segment and must hold ssthresh constant instead of collapsing
        // it towards the minimum.
        cubic.on_rto(Instant::from_millis(1), MSS);
        assert_eq!(cubic.ssthresh, ssthresh);

        // Once new data is ACKed, the next RTO is a fresh loss detection
        // and reduces ssthresh again.
        ack(&mut cubic, MSS, Instant::from_millis(2));
        cubic.on_rto(Instant::from_millis(3), MSS * 4);
        assert_eq!(cubic.ssthresh, (4.0 * MSS as f64 * BETA_CUBIC) as usize);
    }

    #[test]
    fn slow_start_works() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        cubic.cwnd = MSS * 32;
        cubic.ssthresh = MSS * 16;

        // we enter slow start upon major loss (an RTO)
        // window resets to MSS, ssthresh becomes a fraction of the inflight bytes,
        // recovery_start is cleared so any later CA uses a fresh epoch,
        // and w_max is preserved (RFC 9438 §4.8 defers it to the next CA stage).
        let w_max_before_rto = cubic.w_max;
        let inflight = cubic.window();
        cubic.on_rto(Instant::from_millis(0), inflight);
        assert_eq!(cubic.ssthresh, (inflight as f64 * BETA_CUBIC) as usize);
        assert_eq!(cubic.window(), MSS);
        assert!(!cubic.in_fast_recovery);
        assert_eq!(cubic.recovery_start, None);
        assert_eq!(cubic.w_max, w_max_before_rto);

        // slow start grows by at most the MSS per ack
        let initial_cwnd = cubic.window();
        for i in 0..10 {
            let initial_cwnd = cubic.window();
            let now = Instant::from_millis(i);
            ack(&mut cubic, MSS * 2, now);
            assert_eq!(cubic.window(), initial_cwnd + MSS);
        }
        assert_eq!(cubic.window(), initial_cwnd + MSS * 10);

        // slow start uses the number of ACKed bytes if they're less than the MSS
        let initial_cwnd = cubic.window();
        for i in 0..10 {
            let initial_cwnd = cubic.window();
            let now = Instant::from_millis(10 + i);
            ack(&mut cubic, MSS / 2, now);
            assert_eq!(cubic.window(), initial_cwnd + MSS / 2);
        }
        assert_eq!(cubic.window(), initial_cwnd + MSS / 2 * 10);

        // slow start transitions to congestion avoidance at ssthresh
        let initial_cwnd = cubic.window();
        cubic.ssthresh = initial_cwnd + MSS;
        ack(&mut cubic, MSS, Instant::from_millis(30));
        assert_eq!(cubic.window(), initial_cwnd + MSS);
        assert_eq!(cubic.ssthresh, initial_cwnd + MSS);
    }

    #[test]
    fn progress_to_ca_via_rto() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);

        let mut time = 0;

        // slow start from default state
        let initial_cwnd = cubic.window();
        for _ in 0..30 {
            time += 1;
            ack(&mut cubic, MSS, Instant::from_millis(time));
        }
        assert_eq!(cubic.window(), initial_cwnd + MSS * 30);
        assert!(cubic.window() < cubic.ssthresh);

        // rto: cwnd resets to MSS and sstresh reduces
        let rto_cwnd = cubic.window();
        cubic.on_rto(Instant::from_millis(time), rto_cwnd);
        assert_eq!(cubic.window(), MSS);
        assert_eq!(cubic.ssthresh, (rto_cwnd as f64 * BETA_CUBIC) as usize);

        // slow start again until cwnd reaches new ssthresh
        while cubic.window() < cubic.ssthresh {
            time += 1;
            let initial_cwnd = cubic.window();
            ack(&mut cubic, MSS, Instant::from_millis(time));
            assert_eq!(cubic.window(), initial_cwnd + MSS);
        }
        assert!(cubic.window() >= cubic.ssthresh);
        assert!(cubic.window() < cubic.ssthresh + MSS);

        // ca: first CA ACK starts a fresh epoch with W_max = cwnd and K = 0.
        time += 1;
        let cwnd_at_ca_entry = cubic.window();
        ack(&mut cubic, MSS, Instant::from_millis(time));
        assert_eq!(cubic.w_max, cwnd_at_ca_entry);
        assert_eq!(cubic.k, 0.0);
        assert!(cubic.window() >= cwnd_at_ca_entry);
    }

    #[test]
    fn progress_to_ca_via_loss() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);

        let mut time = 0;

        // slow start from default state
        let initial_cwnd = cubic.window();
        for _ in 0..30 {
            time += 1;
            ack(&mut cubic, MSS, Instant::from_millis(time));
        }
        assert_eq!(cubic.window(), initial_cwnd + MSS * 30);
        assert!(cubic.window() < cubic.ssthresh);

        // dup ACKs: ssthresh = cwnd * beta, cwnd = ssthresh + 3*MSS, recovery_start = now
        time += 1;
        let loss_cwnd = cubic.window();
        let expected_ssthresh = (loss_cwnd as f64 * BETA_CUBIC) as usize;
        cubic.on_loss(Instant::from_millis(time), loss_cwnd);
        assert_eq!(cubic.ssthresh, expected_ssthresh);
        assert_eq!(cubic.window(), expected_ssthresh + 3 * MSS);
        assert!(cubic.in_fast_recovery);
        assert_eq!(cubic.recovery_start, Some(Instant::from_millis(time)));

        // inflate cwnd on each duplicate ACK
        for _ in 0..9 {
            time += 1;
            let initial_cwnd = cubic.window();
            cubic.on_dup_ack(Instant::from_millis(time), MSS, cubic.cwnd, false);
            assert_eq!(cubic.window(), initial_cwnd + MSS);
        }

        // non-duplicate ACK deflates cwnd to ssthresh
        time += 1;
        ack(&mut cubic, MSS, Instant::from_millis(time));
        assert_eq!(cubic.window(), expected_ssthresh);
        assert!(!cubic.in_fast_recovery);

        // ca: subsequent ACKs follow the cubic curve
        time += 1;
        let initial_cwnd = cubic.window();
        ack(&mut cubic, MSS, Instant::from_millis(time));
        assert!(cubic.window() >= initial_cwnd);
    }

    #[test]
    fn fast_convergence_reduces_w_max() {
        let mut cubic = Cubic::new();
        cubic.set_mss(MSS);
        cubic.w_max = MSS * 50;
        cubic.cwnd = MSS * 30;

        // Loss while cwnd < w_max (a new competing flow) should pull w_max down.
        let w_max_prev = cubic.w_max;
        cubic.on_loss(Instant::from_millis(0), cubic.cwnd);
        assert!(cubic.w_max < w_max_prev);
    }

    #[test]
    fn test_cube_root() {
        let mut max_err = 0.0;
        let mut max_err_at = 0;
        let mut max_err_expected = 0.0;
        let mut max_err_found = 0.0;

        for i in (1..1_000_000).step_by(99) {
            let found = cube_root(i as f64);
            let expected = (i as f64).cbrt();
            let err = (found - expected).abs() / expected;

            if err > max_err {
                max_err = err;
                max_err_at = i;
                max_err_found = found;
                max_err_expected = expected;
            }
        }

        assert!(
            max_err < 0.0005,
            "cube_root({max_err_at}) = {max_err_found}, expected ~{max_err_expected}, rel err {max_err:.3e}"
        );
    }
}
