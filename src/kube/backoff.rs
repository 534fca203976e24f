//! The one backoff policy: exponential delays with random jitter (backon's), so that
//! clients that failed together (an API server restart, a burst of 429s) do not
//! come back together.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};

/// Delays from `min`, doubling up to `max`; backon stretches each by a random
/// 0–100 %, so the mean of a step is 1.5 × its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Between attempts of one API request (429, 503, 504, a broken connection)
    /// when the server sent no `Retry-After`.
    pub(crate) const REQUEST: Backoff = Backoff {
        min: Duration::from_millis(150),
        max: Duration::from_secs(4),
    };

    /// Before a reflector lists or watches again after an error (e.g. while the API
    /// server restarts).
    pub(crate) const WATCH: Backoff = Backoff {
        min: Duration::from_millis(400),
        max: Duration::from_secs(20),
    };

    /// Between deliveries of one notification to a target that failed (a
    /// connection refused, a timeout, 429 or 5xx): the receiver is often
    /// restarting, and a minute of attempts covers that without piling up.
    pub(crate) const NOTIFY: Backoff = Backoff {
        min: Duration::from_secs(1),
        max: Duration::from_secs(30),
    };

    /// The policy as a backon builder, without a limit of attempts (for
    /// `backon::Retryable`).
    pub(crate) fn builder(self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
    }

    /// The endless sequence of delays; bound it with `take(n)`.
    pub(crate) fn delays(self) -> Delays {
        Delays {
            policy: self,
            inner: self.builder().build(),
        }
    }
}

/// The delays of one [`Backoff`]: start again from the shortest with
/// [`Delays::reset`] after a success.
#[derive(Debug)]
pub(crate) struct Delays {
    policy: Backoff,
    inner: ExponentialBackoff,
}

impl Delays {
    pub(crate) fn reset(&mut self) {
        *self = self.policy.delays();
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // Without a limit of attempts backon never ends; `max` is only a fallback.
        Some(self.inner.next().unwrap_or(self.policy.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_are_capped() {
        let policy = Backoff::REQUEST;
        let delays: Vec<Duration> = policy.delays().take(12).collect();
        for (i, d) in delays.iter().enumerate() {
            // backon computes in f32: allow for its rounding.
            let base = policy.min.saturating_mul(1 << i).min(policy.max);
            let (low, high) = (base.mul_f64(0.999), base.mul_f64(2.001));
            assert!(*d >= low && *d <= high, "step {i}: {d:?} from {base:?}");
        }
    }

    #[test]
    fn reset_starts_again_from_the_shortest() {
        let mut delays = Backoff::WATCH.delays();
        delays.by_ref().take(10).for_each(drop);
        assert!(delays.next() >= Some(Backoff::WATCH.max.mul_f64(0.999)));
        delays.reset();
        assert!(delays.next() < Some(Backoff::WATCH.min * 2));
    }

    #[test]
    fn jitter_differs_between_sequences() {
        // backon seeds its generator randomly only with its `std` feature; without
        // it every sequence would be the same and the jitter would spread nothing.
        let a: Vec<Duration> = Backoff::REQUEST.delays().take(8).collect();
        let b: Vec<Duration> = Backoff::REQUEST.delays().take(8).collect();
        assert_ne!(a, b);
    }
}
