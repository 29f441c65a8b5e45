//! `api.headerTimeout` without a tokio timer per request.
//!
//! hyper asks its timer for a fresh sleep each time it starts reading a
//! request head; tokio's sleep registers in the runtime's timer wheel when
//! first polled and leaves it when dropped, under the driver's lock, on
//! every request of a kept-alive connection. Here the sleep is only a
//! deadline that hyper's polls compare with the clock; each connection
//! has one [`Watchdog`] ticking every quarter of the timeout to make
//! hyper look again when the client is silent. A slow or idle client is
//! therefore cut off between 1 and 1.25 times the timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// hyper's timer for connections: deadlines without registrations.
#[derive(Clone, Copy)]
pub struct Deadlines;

impl Timer for Deadlines {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Deadline {
            at: deadline,
            polled: false,
        })
    }
}

/// Ready once its time has come; it never wakes anyone itself (the
/// connection's [`Watchdog`] does). Its first poll, which hyper makes as it
/// starts waiting for a head, does not read the clock: the deadline was
/// made from a fresh reading a moment before, and the watchdog's next tick
/// polls it again in any case.
struct Deadline {
    at: Instant,
    polled: bool,
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if !std::mem::replace(&mut self.polled, true) {
            return Poll::Pending;
        }
        if Instant::now() >= self.at {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Sleep for Deadline {}

/// Wakes a connection every quarter of the header timeout so that hyper
/// checks its [`Deadline`] even when the client sends nothing.
pub struct Watchdog(Option<tokio::time::Interval>);

impl Watchdog {
    pub fn new(timeout: Option<Duration>) -> Self {
        Watchdog(timeout.map(|t| {
            let period = (t / 4).max(Duration::from_millis(10));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        }))
    }

    /// The next tick; never, without a timeout.
    #[cfg(test)]
    pub async fn tick(&mut self) {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Ready when a tick is due (and then registered for the next one
    /// only by polling again); never, without a timeout.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(t) => t.poll_tick(cx).map(drop),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deadline_is_ready_only_once_passed() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut past = Deadlines.sleep(Duration::ZERO);
        // The first poll never reads the clock (see `Deadline`).
        assert!(past.as_mut().poll(&mut cx).is_pending());
        assert!(past.as_mut().poll(&mut cx).is_ready());
        let mut soon = Deadlines.sleep(Duration::from_millis(50));
        assert!(soon.as_mut().poll(&mut cx).is_pending());
        assert!(soon.as_mut().poll(&mut cx).is_pending());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(soon.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_ticks_every_quarter_of_the_timeout() {
        let mut dog = Watchdog::new(Some(Duration::from_millis(200)));
        let started = tokio::time::Instant::now();
        dog.tick().await;
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        dog.tick().await;
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        let mut off = Watchdog::new(None);
        let never = tokio::time::timeout(Duration::from_secs(3600), off.tick()).await;
        assert!(never.is_err());
    }
}
