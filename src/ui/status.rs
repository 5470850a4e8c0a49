//! What the command line shows while it streams: the status line and `--stats-json`.

use std::time::Duration;

use crate::engine::{DeviceState, Stats};

/// Percent of `part` in `part + rest`.
pub(super) fn percent(part: u64, rest: u64) -> f64 {
    let total = part + rest;
    if total == 0 {
        0.0
    } else {
        100.0 * part as f64 / total as f64
    }
}

/// One line of `--stats-json`: the engine's figures with the time, role and rates added.
pub(super) fn print_stats_json(s: &Stats, client: bool, t: Duration) {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        t: f64,
        role: &'static str,
        loss_pct: f64,
        late_pct: f64,
        #[serde(flatten)]
        stats: &'a Stats,
    }
    let line = Line {
        t: (t.as_secs_f64() * 1e3).round() / 1e3,
        role: if client { "client" } else { "server" },
        loss_pct: percent(s.lost, s.packets),
        late_pct: percent(s.late, s.packets),
        stats: s,
    };
    if let Ok(text) = serde_json::to_string(&line) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// The status line: the figures a person glances at, and a lost device's state after them.
pub(super) fn status_text(s: &Stats, client: bool) -> String {
    let mut line = figures(s, client);
    if s.muted {
        line.push_str(" | muted: sending silence");
    }
    if s.device != DeviceState::Ok {
        let what = if client { "playback" } else { "capture" };
        line.push_str(&format!(
            " | {what} device {}: waiting for it",
            s.device.name()
        ));
    }
    line
}

fn figures(s: &Stats, client: bool) -> String {
    if client {
        let latency = s
            .latency_ms
            .map(|l| format!(", latency ~{l:.0} ms"))
            .unwrap_or_default();
        format!(
            "{} | {} | {:.0} kb/s, loss {:.1}%, late {:.1}%, jitter {:.1} ms, buffer {:.0}/{:.0} ms{latency}",
            s.peer,
            s.format,
            s.kbps,
            percent(s.lost, s.packets),
            percent(s.late, s.packets),
            s.jitter_ms,
            s.depth_ms,
            s.target_ms,
        )
    } else {
        format!(
            "{} | {} | {} client{}, {} packets sent ({:.0} kb/s), {} dropped",
            s.peer,
            s.format,
            s.clients,
            if s.clients == 1 { "" } else { "s" },
            s.packets,
            s.kbps,
            s.dropped
        )
    }
}
