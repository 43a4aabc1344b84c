//! The service's only source of time.
//!
//! Every part of the controller that needs "now" (the control ticks, ingest
//! validation, retention, the retrain schedule, durations reported as
//! metrics) asks the [`Clock`] it was given instead of the operating system.
//! Two kinds exist:
//!
//! - [`Clock::system`]: wall time from [`std::time::SystemTime`], monotonic
//!   time from [`tokio::time::Instant`]. Under `tokio::time::pause()` the
//!   monotonic part (the periodic tasks, measured durations) follows Tokio's
//!   paused clock.
//! - [`Clock::manual`]: a clock that stands still until a test (or the
//!   parity harness) moves it with [`Clock::advance`] or [`Clock::set_ms`].
//!   Wall and monotonic time move together, and the service's periodic tasks
//!   ([`Clock::sleep_until`]) wake when it passes their deadline, so a test
//!   drives the background ticks without sleeping.
//!
//! This module is the only one allowed to read the system clock
//! (`controller/clippy.toml` disallows `SystemTime::now` and
//! `Instant::now` everywhere else).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Errors of clock operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// Only a manual clock can be moved.
    #[error("the system clock cannot be moved; use Clock::manual")]
    NotManual,
    /// A manual clock never goes back (its monotonic time would).
    #[error("a manual clock cannot go back from {now_ms} ms to {to_ms} ms")]
    Backwards {
        /// The clock's time.
        now_ms: i64,
        /// The requested time.
        to_ms: i64,
    },
}

/// A source of wall and monotonic time. Cheap to clone; clones share the
/// same time (advancing one advances all).
#[derive(Clone)]
pub struct Clock {
    source: Arc<Source>,
}

enum Source {
    System {
        /// Origin of [`Clock::elapsed`].
        origin: tokio::time::Instant,
    },
    Manual {
        /// Wall time, milliseconds since the unix epoch.
        wall_ms: watch::Sender<i64>,
        /// Wall time at creation: the origin of [`Clock::elapsed`].
        start_ms: i64,
    },
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.source {
            Source::System { .. } => f.write_str("Clock::System"),
            Source::Manual { wall_ms, .. } => write!(f, "Clock::Manual({} ms)", *wall_ms.borrow()),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The operating system's clock (Tokio's for monotonic time).
    pub fn system() -> Clock {
        Clock {
            source: Arc::new(Source::System {
                origin: tokio_now(),
            }),
        }
    }

    /// A clock standing at `start_ms` (milliseconds since the unix epoch)
    /// until it is moved.
    pub fn manual(start_ms: i64) -> Clock {
        Clock {
            source: Arc::new(Source::Manual {
                wall_ms: watch::channel(start_ms).0,
                start_ms,
            }),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(&*self.source, Source::Manual { .. })
    }

    /// Wall time: milliseconds since the unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &*self.source {
            Source::System { .. } => system_now_ms(),
            Source::Manual { wall_ms, .. } => *wall_ms.borrow(),
        }
    }

    /// Wall time: seconds since the unix epoch.
    pub fn now_secs(&self) -> f64 {
        self.now_ms() as f64 / 1000.0
    }

    /// Monotonic time since the clock was created.
    pub fn elapsed(&self) -> Duration {
        match &*self.source {
            Source::System { origin } => tokio_now().saturating_duration_since(*origin),
            Source::Manual { wall_ms, start_ms } => {
                Duration::from_millis((*wall_ms.borrow() - start_ms).max(0) as u64)
            }
        }
    }

    /// Start measuring a duration on this clock.
    pub fn stopwatch(&self) -> Stopwatch {
        Stopwatch {
            clock: self.clone(),
            started: self.elapsed(),
        }
    }

    /// Move a manual clock forward by `by`.
    pub fn advance(&self, by: Duration) -> Result<(), ClockError> {
        let to = self
            .now_ms()
            .saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
        self.set_ms(to)
    }

    /// Set a manual clock to `to_ms` (milliseconds since the unix epoch;
    /// never earlier than its current time).
    pub fn set_ms(&self, to_ms: i64) -> Result<(), ClockError> {
        match &*self.source {
            Source::System { .. } => Err(ClockError::NotManual),
            Source::Manual { wall_ms, .. } => {
                let now_ms = *wall_ms.borrow();
                if to_ms < now_ms {
                    return Err(ClockError::Backwards { now_ms, to_ms });
                }
                wall_ms.send_replace(to_ms);
                Ok(())
            }
        }
    }

    /// Wait until [`elapsed`](Self::elapsed) reaches `deadline`: a Tokio
    /// timer on the system clock; on a manual clock, until it is moved past
    /// the deadline.
    pub async fn sleep_until(&self, deadline: Duration) {
        match &*self.source {
            Source::System { origin } => tokio::time::sleep_until(*origin + deadline).await,
            Source::Manual { wall_ms, start_ms } => {
                let mut rx = wall_ms.subscribe();
                let target = start_ms
                    .saturating_add(i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX));
                // The sender lives as long as `self`, so this only returns
                // once the clock has passed the deadline.
                let _ = rx.wait_for(|now| *now >= target).await;
            }
        }
    }

    /// Wait `d` on this clock.
    pub async fn sleep(&self, d: Duration) {
        self.sleep_until(self.elapsed() + d).await;
    }
}

/// A duration being measured on a [`Clock`] (see [`Clock::stopwatch`]).
#[derive(Debug, Clone)]
pub struct Stopwatch {
    clock: Clock,
    started: Duration,
}

impl Stopwatch {
    /// Time since the stopwatch started.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed().saturating_sub(self.started)
    }

    /// Seconds since the stopwatch started.
    pub fn seconds(&self) -> f64 {
        self.elapsed().as_secs_f64()
    }
}

/// A deadline on the operating system's monotonic clock, for waits on other
/// threads (such as [`Controller::close`](crate::state::Controller::close)
/// waiting for handles to drop) that must end in real time whatever clock
/// the service runs on.
#[derive(Debug, Clone, Copy)]
pub struct RealDeadline(std::time::Instant);

impl RealDeadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> RealDeadline {
        #[allow(clippy::disallowed_methods)] // reason: this module owns the system clock
        let now = std::time::Instant::now();
        RealDeadline(now + timeout)
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        #[allow(clippy::disallowed_methods)] // reason: this module owns the system clock
        let now = std::time::Instant::now();
        now >= self.0
    }
}

/// Wall time of the operating system: milliseconds since the unix epoch
/// (0 if the system clock is before 1970).
fn system_now_ms() -> i64 {
    #[allow(clippy::disallowed_methods)] // reason: this module owns the system clock
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[allow(clippy::disallowed_methods)] // reason: this module owns the system clock
fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Now on tokio's timer, for transport deadlines (socket idle and
/// handshake timeouts) that run on `tokio::time::Sleep` like the I/O they
/// guard, not on the controller's [`Clock`].
pub fn transport_now() -> tokio::time::Instant {
    tokio_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_moved_and_never_goes_back() {
        let c = Clock::manual(1_000);
        assert!(c.is_manual());
        assert_eq!(c.now_ms(), 1_000);
        assert_eq!(c.elapsed(), Duration::ZERO);
        let sw = c.stopwatch();
        let twin = c.clone();
        twin.advance(Duration::from_millis(250)).unwrap();
        assert_eq!(c.now_ms(), 1_250);
        assert_eq!(c.now_secs(), 1.25);
        assert_eq!(c.elapsed(), Duration::from_millis(250));
        assert_eq!(sw.elapsed(), Duration::from_millis(250));
        assert_eq!(
            c.set_ms(1_000),
            Err(ClockError::Backwards {
                now_ms: 1_250,
                to_ms: 1_000
            })
        );
        c.set_ms(5_000).unwrap();
        assert_eq!(sw.seconds(), 4.0);
    }

    #[test]
    fn the_system_clock_reads_the_epoch_and_cannot_be_moved() {
        let c = Clock::system();
        assert!(!c.is_manual());
        // After 2020-01-01 and monotonic.
        assert!(c.now_ms() > 1_577_836_800_000);
        let a = c.elapsed();
        assert!(c.elapsed() >= a);
        assert_eq!(
            c.advance(Duration::from_secs(1)),
            Err(ClockError::NotManual)
        );
        assert!(!RealDeadline::after(Duration::from_secs(60)).passed());
        assert!(RealDeadline::after(Duration::ZERO).passed());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sleeping_on_a_manual_clock_ends_when_it_passes_the_deadline() {
        let c = Clock::manual(0);
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move {
                c.sleep(Duration::from_secs(10)).await;
                c.now_ms()
            })
        };
        tokio::task::yield_now().await;
        c.advance(Duration::from_secs(9)).unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        c.advance(Duration::from_secs(2)).unwrap();
        assert_eq!(waiter.await.unwrap(), 11_000);
    }
}
