//! The per-second series of a run (`per_second` in JSON): ops and latency percentiles for each
//! second of the measured window. Every client thread records each op's latency into a histogram
//! of its current second too, and hands that histogram over when its second changes (never on
//! the way of a request: the per-op cost is one histogram record, no allocation). A second is
//! summed up as soon as every thread is past it, so that a run of hours holds a few histograms,
//! not one per second.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use crate::load::latency_histogram;

/// One second of the measured window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Second {
    /// Which second: 1 for the first of the window.
    pub t: u64,
    /// Ops whose reply came in that second.
    pub ops: u64,
    /// Their median latency in microseconds (0 without ops).
    pub p50_us: f64,
    /// Their 99th percentile latency in microseconds (0 without ops).
    pub p99_us: f64,
}

impl Second {
    /// Second `index` (0-based) summed up from its histogram of nanoseconds.
    fn of(index: u64, h: &Histogram<u64>) -> Self {
        let us = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        Self {
            t: index + 1,
            ops: h.len(),
            p50_us: us(0.5),
            p99_us: us(0.99),
        }
    }
}

/// The series of a finished run: when its measured window began and its seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// The wall-clock time the measured window began.
    pub started: SystemTime,
    /// One entry per second of the window, the last one possibly partial.
    pub seconds: Vec<Second>,
}

/// What the recorders share.
struct State {
    /// Per recorder: the second it still records into (`u64::MAX` once it is dropped).
    cursors: Vec<u64>,
    /// Seconds some recorder handed a histogram for, not yet summed up.
    open: Vec<(u64, Histogram<u64>)>,
    /// Histograms of seconds summed up, reset for the next ones.
    spare: Vec<Histogram<u64>>,
    /// The seconds summed up, in the order they closed.
    done: Vec<Second>,
}

/// The per-second series being recorded: make its recorders with [`Series::recorders`] before
/// the threads start, drop them when they end, then [`Series::finish`].
pub struct Series {
    start: Instant,
    started: SystemTime,
    /// The last second an op may count in (replies read just after the window count in it).
    last: Option<u64>,
    state: Mutex<State>,
}

impl Series {
    /// A series whose second 1 begins at `start`; with `window`, ops after it count in its last
    /// second.
    pub fn new(start: Instant, window: Option<Duration>) -> Self {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let started = if start >= now {
            wall + (start - now)
        } else {
            wall - (now - start)
        };
        Self {
            start,
            started,
            last: window.map(|w| seconds_in(w).saturating_sub(1)),
            state: Mutex::new(State {
                cursors: Vec::new(),
                open: Vec::new(),
                spare: Vec::new(),
                done: Vec::new(),
            }),
        }
    }

    /// `n` recorders, one per client thread. All of them must exist before the first records:
    /// a second is summed up once every recorder made so far is past it.
    pub fn recorders(&self, n: usize) -> Vec<Recorder<'_>> {
        let mut state = self.lock();
        (0..n)
            .map(|_| {
                state.cursors.push(0);
                Recorder {
                    series: self,
                    index: state.cursors.len() - 1,
                    second: 0,
                    histogram: latency_histogram(),
                }
            })
            .collect()
    }

    /// The seconds of a window of `window` (the last one partial), every second that counted an
    /// op included; seconds without ops have 0 ops. Call it when every recorder is dropped.
    pub fn finish(self, window: Duration) -> Timeline {
        let mut state = self
            .state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let open = std::mem::take(&mut state.open);
        state
            .done
            .extend(open.iter().map(|(second, h)| Second::of(*second, h)));
        let count = state
            .done
            .iter()
            .map(|s| s.t)
            .max()
            .unwrap_or(0)
            .max(seconds_in(window));
        let mut seconds: Vec<Second> = (1..=count)
            .map(|t| Second {
                t,
                ..Second::default()
            })
            .collect();
        for s in &state.done {
            seconds[(s.t - 1) as usize] = *s;
        }
        Timeline {
            started: self.started,
            seconds,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The second (0-based) of an op at `at`.
    fn second_of(&self, at: Instant) -> u64 {
        let second = at.saturating_duration_since(self.start).as_secs();
        self.last.map_or(second, |last| second.min(last))
    }

    /// Takes recorder `index`'s histogram of second `second` (and resets it), moves its cursor
    /// to `next`, and sums up every second all recorders are past.
    fn hand_over(&self, index: usize, second: u64, histogram: &mut Histogram<u64>, next: u64) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if !histogram.is_empty() {
            let k = match state.open.iter().position(|(s, _)| *s == second) {
                Some(k) => k,
                None => {
                    let h = state.spare.pop().unwrap_or_else(latency_histogram);
                    state.open.push((second, h));
                    state.open.len() - 1
                }
            };
            // Same bounds on both sides: adding cannot fail.
            let _ = state.open[k].1.add(&*histogram);
            histogram.reset();
        }
        state.cursors[index] = next;
        let past = state.cursors.iter().copied().min().unwrap_or(u64::MAX);
        let mut k = 0;
        while k < state.open.len() {
            if state.open[k].0 < past {
                let (s, mut h) = state.open.swap_remove(k);
                state.done.push(Second::of(s, &h));
                h.reset();
                state.spare.push(h);
            } else {
                k += 1;
            }
        }
    }
}

/// The seconds a window of `window` spans: 2.5 s spans 3.
fn seconds_in(window: Duration) -> u64 {
    window.as_nanos().div_ceil(1_000_000_000) as u64
}

/// One client thread's part of a [`Series`]: the histogram of its current second.
pub struct Recorder<'a> {
    series: &'a Series,
    index: usize,
    second: u64,
    histogram: Histogram<u64>,
}

impl Recorder<'_> {
    /// Moves on to the second of `now`, handing the histogram of the one before over. Client
    /// threads call it in their loops too, so that a thread without ops does not keep the
    /// seconds open.
    pub fn advance(&mut self, now: Instant) {
        let second = self.series.second_of(now);
        if second > self.second {
            self.series
                .hand_over(self.index, self.second, &mut self.histogram, second);
            self.second = second;
        }
    }

    /// Records `count` ops of `nanos` each whose replies came at `at`.
    pub fn record(&mut self, at: Instant, nanos: u64, count: u64) {
        self.advance(at);
        // Clamped to the histogram's range like the run's histogram.
        let _ = self.histogram.record_n(
            nanos.clamp(self.histogram.low(), self.histogram.high()),
            count,
        );
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.series
            .hand_over(self.index, self.second, &mut self.histogram, u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::{Second, Series};
    use std::thread;
    use std::time::{Duration, Instant};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn seconds_sum_the_threads_and_fill_the_window() {
        let start = Instant::now();
        let series = Series::new(start, Some(Duration::from_millis(3500)));
        let mut recorders = series.recorders(2);
        let mut b = recorders.pop().unwrap();
        let mut a = recorders.pop().unwrap();
        a.record(start, 1000, 1);
        a.record(start + 900 * MS, 3000, 1);
        b.record(start + 100 * MS, 2000, 2);
        // Second 2 (index 1) stays empty; b jumps to the fourth second.
        a.record(start + 2500 * MS, 5000, 1);
        b.record(start + 3200 * MS, 7000, 1);
        // A reply read after the window counts in its last second.
        b.record(start + 4100 * MS, 9000, 1);
        drop((a, b, recorders));
        let timeline = series.finish(Duration::from_millis(3500));
        let ops: Vec<(u64, u64)> = timeline.seconds.iter().map(|s| (s.t, s.ops)).collect();
        assert_eq!(ops, [(1, 4), (2, 0), (3, 1), (4, 2)]);
        let first = timeline.seconds[0];
        assert!((first.p50_us - 2.0).abs() < 0.01, "{first:?}");
        assert!((first.p99_us - 3.0).abs() < 0.01, "{first:?}");
        assert_eq!(
            timeline.seconds[1],
            Second {
                t: 2,
                ..Second::default()
            }
        );
    }

    #[test]
    fn a_recorder_without_ops_lets_the_seconds_close() {
        let start = Instant::now();
        let series = Series::new(start, None);
        let mut recorders = series.recorders(2);
        let mut idle = recorders.pop().unwrap();
        let mut busy = recorders.pop().unwrap();
        for second in 0..5 {
            let at = start + Duration::from_secs(second);
            busy.record(at, 1000, 1);
            idle.advance(at);
            assert!(series.lock().open.len() <= 1, "second {second}");
        }
        drop((busy, idle, recorders));
        let ops: Vec<u64> = series
            .finish(Duration::from_secs(5))
            .seconds
            .iter()
            .map(|s| s.ops)
            .collect();
        assert_eq!(ops, [1; 5]);
    }

    #[test]
    fn threads_hand_over_while_others_still_record() {
        let start = Instant::now();
        let series = Series::new(start, None);
        thread::scope(|scope| {
            for mut r in series.recorders(3) {
                scope.spawn(move || {
                    for second in 0..50u64 {
                        let at = start + Duration::from_secs(second) + 10 * MS;
                        r.record(at, 1000 + second, second % 4);
                    }
                });
            }
        });
        let timeline = series.finish(Duration::from_secs(10));
        assert_eq!(timeline.seconds.len(), 50, "every second that counted ops");
        for s in &timeline.seconds {
            assert_eq!(s.ops, 3 * ((s.t - 1) % 4), "{s:?}");
        }
    }
}
