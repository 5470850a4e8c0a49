//! One device's supervision, for the thread that uses it (the server's media thread for its
//! capture, a client's playout thread for its playback): a loss is said once, the device is
//! looked for again on the [`Retry`] schedule, a device opened again is on probation until it
//! has run for [`Retry::PROBATION`], and its return is said once.
//!
//! Pure bookkeeping on a clock it is given: the thread opens and drops devices itself, and asks
//! here when to try. Tested below against a device that fails on command.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::{DeviceCell, DeviceState, Event};
use crate::audio::health::Retry;

/// What a thread hears back from [`Supervisor::failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// A new loss: it was said.
    New,
    /// The device failed again while on probation: the same loss goes on, unsaid.
    Again,
}

/// Watches one device.
#[derive(Debug)]
pub(crate) struct Supervisor {
    playback: bool,
    /// The device's name as the log and the front ends show it (the last one opened).
    name: String,
    state: Arc<DeviceCell>,
    events: Option<Sender<Event>>,
    /// While the device is away: the schedule, and when to try next.
    lost: Option<(Retry, Instant)>,
    /// A device opened again counts as back at this time, if it has not failed by then.
    probation: Option<Instant>,
}

impl Supervisor {
    /// Supervision of the playback device (else the capture device) named `name`.
    pub(crate) fn new(
        playback: bool,
        name: String,
        state: Arc<DeviceCell>,
        events: Option<Sender<Event>>,
    ) -> Self {
        Self {
            playback,
            name,
            state,
            events,
            lost: None,
            probation: None,
        }
    }

    fn what(&self) -> &'static str {
        if self.playback {
            "playback"
        } else {
            "capture"
        }
    }

    fn tell(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    /// The running device failed (`why`); `stays` says what goes on meanwhile, for the log.
    pub(crate) fn failed(&mut self, why: &str, stays: &str, now: Instant) -> Loss {
        if self.probation.take().is_some() {
            // It opens, so what it needs is coming back: look again soon.
            tracing::debug!("{} device failed again at once: {why}", self.what());
            self.state.set(DeviceState::Reopening);
            self.schedule_from_start(now);
            return Loss::Again;
        }
        tracing::warn!(
            "the {} device {} is lost ({why}); {stays} while it is looked for again",
            self.what(),
            self.name
        );
        self.state.set(DeviceState::Lost);
        self.tell(Event::DeviceLost {
            playback: self.playback,
            device: self.name.clone(),
        });
        self.schedule_from_start(now);
        Loss::New
    }

    fn schedule_from_start(&mut self, now: Instant) {
        let mut retry = Retry::default();
        let next = now + retry.next_delay();
        self.lost = Some((retry, next));
    }

    /// Whether the device is away (lost, and not yet opened again).
    pub(crate) fn away(&self) -> bool {
        self.lost.is_some() && self.probation.is_none()
    }

    /// When to try opening the device again, while it is away.
    pub(crate) fn next_attempt(&self) -> Option<Instant> {
        self.lost
            .as_ref()
            .filter(|_| self.probation.is_none())
            .map(|(_, next)| *next)
    }

    /// Whether it is time to try opening the device again.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.next_attempt().is_some_and(|next| now >= next)
    }

    /// An attempt to open the device failed. The first opening after the device was let go
    /// on purpose (nobody listened) begins a loss, said once.
    pub(crate) fn open_failed(&mut self, error: &str, stays: &str, now: Instant) {
        if self.lost.is_none() {
            self.failed(error, stays, now);
            self.state.set(DeviceState::Reopening);
            return;
        }
        tracing::debug!("{} device: {error}", self.what());
        self.state.set(DeviceState::Reopening);
        if let Some((retry, next)) = self.lost.as_mut() {
            *next = now + retry.next_delay();
        }
    }

    /// The device opened (`name`). After a loss it is on probation; else nothing to say.
    pub(crate) fn opened(&mut self, name: String, now: Instant) {
        self.name = name;
        if self.lost.is_some() {
            self.probation = Some(now + Retry::PROBATION);
        }
    }

    /// When a device on probation counts as back.
    pub(crate) fn probation_ends(&self) -> Option<Instant> {
        self.probation
    }

    /// Says the device's return once its probation has passed; true when it did now.
    pub(crate) fn tick(&mut self, now: Instant) -> bool {
        if self.probation.is_none_or(|t| now < t) {
            return false;
        }
        self.probation = None;
        self.lost = None;
        tracing::info!("the {} device is back: {}", self.what(), self.name);
        self.state.set(DeviceState::Ok);
        self.tell(Event::DeviceBack {
            playback: self.playback,
            device: self.name.clone(),
        });
        true
    }

    /// The device was let go on purpose (nobody listens): a probation in course ends.
    pub(crate) fn released(&mut self) {
        self.probation = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A device that opens or fails as the test says, and the events the supervisor sent.
    struct Bench {
        sup: Supervisor,
        events: crossbeam_channel::Receiver<Event>,
        state: Arc<DeviceCell>,
        t: Instant,
    }

    impl Bench {
        fn new() -> Self {
            let (tx, events) = crossbeam_channel::unbounded();
            let state = Arc::new(DeviceCell::default());
            Self {
                sup: Supervisor::new(true, "Headset".into(), state.clone(), Some(tx)),
                events,
                state,
                t: Instant::now(),
            }
        }

        fn told(&self) -> Vec<String> {
            self.events
                .try_iter()
                .map(|e| match e {
                    Event::DeviceLost { device, .. } => format!("lost {device}"),
                    Event::DeviceBack { device, .. } => format!("back {device}"),
                    other => format!("{other:?}"),
                })
                .collect()
        }

        /// Runs the thread's loop for `secs` of simulated time, in 10 ms steps, with the
        /// device able to open from `opens_at` on and failing at its first callbacks until
        /// `steady_at`. Returns the times of the attempts to open it.
        fn run(&mut self, secs: f64, opens_at: f64, steady_at: f64) -> Vec<f64> {
            let start = self.t;
            let at = |t: Instant| t.duration_since(start).as_secs_f64();
            let mut attempts = Vec::new();
            let mut running_since: Option<Instant> = None;
            while at(self.t) < secs {
                let now = self.t;
                if let Some(since) = running_since {
                    if at(since) < steady_at && at(now) >= at(since) + 0.05 {
                        running_since = None;
                        self.sup.failed("I/O error", "the session stays", now);
                    }
                }
                if self.sup.due(now) {
                    attempts.push(at(now));
                    if at(now) >= opens_at {
                        self.sup.opened("Headset".into(), now);
                        running_since = Some(now);
                    } else {
                        self.sup
                            .open_failed("no such device", "the session stays", now);
                    }
                }
                self.sup.tick(now);
                self.t += Duration::from_millis(10);
            }
            attempts
        }
    }

    #[test]
    fn a_loss_is_told_once_and_its_return_once() {
        let mut b = Bench::new();
        assert_eq!(b.sup.failed("gone", "the session stays", b.t), Loss::New);
        assert_eq!(b.state.get(), DeviceState::Lost);
        b.run(10.0, 3.0, 0.0);
        assert_eq!(b.told(), ["lost Headset", "back Headset"]);
        assert_eq!(b.state.get(), DeviceState::Ok);
        assert!(!b.sup.away());
    }

    #[test]
    fn attempts_back_off_from_a_fifth_of_a_second_to_one_second() {
        let mut b = Bench::new();
        b.sup.failed("gone", "the session stays", b.t);
        let attempts = b.run(12.0, 100.0, 0.0);
        let gaps: Vec<u64> = attempts
            .windows(2)
            .map(|w| ((w[1] - w[0]) * 1000.0).round() as u64)
            .collect();
        assert_eq!(
            attempts.first().map(|a| (a * 1000.0).round() as u64),
            Some(200)
        );
        assert_eq!(gaps[..3], [400, 800, 1000]);
        assert!(gaps[3..].iter().all(|&g| g == 1000), "{gaps:?}");
        // No busy loop: 12 s away cost 13 attempts (0.2, 0.6, 1.4, then 2.4 to 11.4 s).
        assert_eq!(attempts.len(), 13, "{attempts:?}");
        assert_eq!(b.told(), ["lost Headset"]);
        assert_eq!(b.state.get(), DeviceState::Reopening);
    }

    #[test]
    fn a_device_that_fails_at_once_after_opening_is_the_same_loss_and_is_tried_again_soon() {
        let mut b = Bench::new();
        b.sup.failed("gone", "the session stays", b.t);
        // It opens from 3 s on but fails at its first callbacks until 4 s.
        let attempts = b.run(8.0, 3.0, 4.0);
        assert_eq!(b.told(), ["lost Headset", "back Headset"], "{attempts:?}");
        let back_by = attempts.last().copied().unwrap_or(f64::MAX);
        assert!(
            back_by < 4.5,
            "the last attempt, the one that stayed, came at {back_by} s: {attempts:?}"
        );
    }

    #[test]
    fn a_device_that_cannot_be_opened_again_after_a_release_is_one_loss() {
        let mut b = Bench::new();
        let stays = "the clients stay connected";
        b.sup.open_failed("no such device", stays, b.t);
        b.sup
            .open_failed("no such device", stays, b.t + Duration::from_millis(200));
        assert!(b.sup.away());
        b.sup.opened("Headset".into(), b.t + Duration::from_secs(1));
        assert!(!b.sup.tick(b.t + Duration::from_millis(1_200)));
        assert!(b.sup.tick(b.t + Duration::from_millis(1_600)));
        assert_eq!(b.told(), ["lost Headset", "back Headset"]);
    }
}
