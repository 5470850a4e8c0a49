//! What the desktop is told, and how often: engine events become notices, and a rate limit
//! turns a storm (a password-guessing script) into a summary instead of a hundred popups.
//! Plain logic with `now` passed in, tested without a notification service.

use std::time::{Duration, Instant};

use crate::engine::{EngineError, Event};

/// One desktop notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The title.
    pub summary: String,
    /// The text.
    pub body: String,
}

/// At most this many notices per window; the rest are counted and summarised.
pub const BURST: usize = 3;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Turns engine events into notices, rate-limited.
#[derive(Debug, Default)]
pub struct Notifier {
    sent: Vec<Instant>,
    suppressed: usize,
    lost_connection: bool,
}

/// The words for a side's device, in a summary and at the start of a sentence.
fn device_words(playback: bool) -> (&'static str, &'static str) {
    if playback {
        ("playback device", "Playback device")
    } else {
        ("capture device", "Capture device")
    }
}

impl Notifier {
    /// A notifier with nothing sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn notice_for(&mut self, event: &Event) -> Option<Notice> {
        let n = |summary: &str, body: String| {
            Some(Notice {
                summary: summary.to_owned(),
                body,
            })
        };
        match event {
            Event::AuthFailed {
                ip,
                count,
                threshold,
            } => {
                let limit = if *threshold == 0 {
                    "bans are off".to_owned()
                } else {
                    format!("{count} of {threshold} before a ban")
                };
                n(
                    "EchoWarp: failed login",
                    format!("Wrong password from {ip} ({limit})"),
                )
            }
            Event::Banned(ip) => n(
                "EchoWarp: client banned",
                format!("{ip} is banned after repeated failed logins; unban it from the tray menu"),
            ),
            Event::NoPassword { anyone } => n(
                "EchoWarp: no password",
                if *anyone {
                    "Anyone who can reach this computer can listen. Set a password in the profile.".to_owned()
                } else {
                    "Anyone on your local networks can listen; others are refused. Set a password in the profile.".to_owned()
                },
            ),
            Event::BannedNetwork(net) => n(
                "EchoWarp: network banned",
                format!("{net} is banned: failed logins from several of its addresses; unban it from the tray menu"),
            ),
            Event::VersionMismatch { peer, detail } => {
                n("EchoWarp: version mismatch", format!("{peer}: {detail}"))
            }
            Event::ConnectionLost(why) => {
                self.lost_connection = true;
                n("EchoWarp: connection lost", format!("{why}; reconnecting"))
            }
            Event::Connecting { attempt, of } if *attempt > 1 => {
                let of = if *of == 0 {
                    "unlimited".to_owned()
                } else {
                    of.to_string()
                };
                n(
                    "EchoWarp: reconnecting",
                    format!("Attempt {attempt} of {of}"),
                )
            }
            Event::Connected { peer, .. } if self.lost_connection => {
                self.lost_connection = false;
                n(
                    "EchoWarp: reconnected",
                    format!("Streaming again from {peer}"),
                )
            }
            Event::DeviceLost { playback, device } => {
                let (summary, what) = device_words(*playback);
                n(
                    &format!("EchoWarp: {summary} lost"),
                    format!("{what} '{device}' lost: waiting for it"),
                )
            }
            Event::DeviceBack { playback, device } => {
                let (summary, what) = device_words(*playback);
                n(
                    &format!("EchoWarp: {summary} back"),
                    format!("{what} '{device}' is back"),
                )
            }
            Event::Stopped(Err(e @ EngineError::ConnectFailed { .. })) => {
                n("EchoWarp: gave up", e.to_string())
            }
            Event::Stopped(Err(
                e @ (EngineError::Unauthorized
                | EngineError::NotConfirmed(_)
                | EngineError::Banned
                | EngineError::PasswordRequired
                | EngineError::VersionMismatch { .. }),
            )) => n("EchoWarp: cannot connect", e.to_string()),
            Event::Stopped(Err(e)) => n("EchoWarp stopped", super::display_chain(e)),
            _ => None,
        }
    }

    /// The notices to show now for `event` (none, one, or a summary of suppressed ones first).
    pub fn on_event(&mut self, event: &Event, now: Instant) -> Vec<Notice> {
        let Some(notice) = self.notice_for(event) else {
            return Vec::new();
        };
        self.limit(notice, now)
    }

    /// A notice from the tray itself (a bad profile, say), under the same limit.
    pub fn limit(&mut self, notice: Notice, now: Instant) -> Vec<Notice> {
        self.sent.retain(|t| now.duration_since(*t) < WINDOW);
        if self.sent.len() >= BURST {
            self.suppressed += 1;
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.suppressed > 0 {
            out.push(Notice {
                summary: "EchoWarp: more events".into(),
                body: format!(
                    "{} more notification{} held back in the last {} s; see the log",
                    self.suppressed,
                    if self.suppressed == 1 { "" } else { "s" },
                    WINDOW.as_secs()
                ),
            });
            self.suppressed = 0;
        }
        self.sent.push(now);
        out.push(notice);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_login_names_the_ip_and_the_count() {
        let mut n = Notifier::new();
        let got = n.on_event(
            &Event::AuthFailed {
                ip: "192.0.2.9".parse().expect("ip"),
                count: 2,
                threshold: 5,
            },
            Instant::now(),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].body,
            "Wrong password from 192.0.2.9 (2 of 5 before a ban)"
        );
    }

    #[test]
    fn a_storm_becomes_a_summary() {
        let mut n = Notifier::new();
        let t0 = Instant::now();
        let ip = "192.0.2.9".parse().expect("ip");
        let mut shown = 0;
        for i in 0..100 {
            shown += n
                .on_event(
                    &Event::AuthFailed {
                        ip,
                        count: i,
                        threshold: 0,
                    },
                    t0 + Duration::from_millis(i as u64),
                )
                .len();
        }
        assert_eq!(shown, BURST, "a hundred failures, {BURST} popups");
        let later = n.on_event(&Event::Banned(ip), t0 + WINDOW + Duration::from_secs(1));
        assert_eq!(later.len(), 2);
        assert!(
            later[0].body.starts_with("97 more notifications"),
            "{:?}",
            later[0]
        );
        assert_eq!(later[1].summary, "EchoWarp: client banned");
    }

    #[test]
    fn reconnection_is_told_once_lost() {
        let mut n = Notifier::new();
        let t0 = Instant::now();
        let peer = "192.0.2.1:4415".parse().expect("addr");
        assert!(
            n.on_event(
                &Event::Connected {
                    peer,
                    format: String::new()
                },
                t0
            )
            .is_empty(),
            "first connection: no popup"
        );
        assert_eq!(
            n.on_event(&Event::ConnectionLost("server stopped".into()), t0)[0].summary,
            "EchoWarp: connection lost"
        );
        assert_eq!(
            n.on_event(&Event::Connecting { attempt: 2, of: 5 }, t0)[0].body,
            "Attempt 2 of 5"
        );
        assert_eq!(
            n.on_event(
                &Event::Connected {
                    peer,
                    format: String::new()
                },
                t0 + WINDOW
            )[0]
            .summary,
            "EchoWarp: reconnected"
        );
        assert!(n.on_event(&Event::Stats(Default::default()), t0).is_empty());
        let lost = n.on_event(
            &Event::DeviceLost {
                playback: true,
                device: "Headset".into(),
            },
            t0,
        );
        assert_eq!(
            (lost[0].summary.as_str(), lost[0].body.as_str()),
            (
                "EchoWarp: playback device lost",
                "Playback device 'Headset' lost: waiting for it"
            )
        );
        let back = n.on_event(
            &Event::DeviceBack {
                playback: false,
                device: "USB mic".into(),
            },
            t0,
        );
        assert_eq!(back[0].body, "Capture device 'USB mic' is back");
    }
}
