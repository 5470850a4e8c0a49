//! The tray menu's view: what it shows for each state, and what a click asks for.

use super::*;
use crate::engine::{EngineError, Outcome, Stats};

fn texts(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            Item::Label(t)
            | Item::Button { text: t, .. }
            | Item::Check { text: t, .. }
            | Item::Submenu { text: t, .. } => t.clone(),
            Item::Separator => "---".into(),
        })
        .collect()
}

fn submenu<'a>(items: &'a [Item], name: &str) -> &'a [Item] {
    items
        .iter()
        .find_map(|i| match i {
            Item::Submenu { text, items } if text == name => Some(items.as_slice()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {name} submenu in {:?}", texts(items)))
}

#[test]
fn a_stopped_server_offers_start_and_shows_no_bans() {
    let v = TrayView::new(Role::Server, "default");
    let m = v.menu();
    assert_eq!(
        texts(&m),
        [
            "EchoWarp Server: stopped",
            "---",
            "Start",
            "Mute (send silence)",
            "Role",
            "Servers on this network",
            "Connect to a server…",
            "Password…",
            "Device",
            "Latency",
            "Banned clients",
            "---",
            "Start at login",
            "Edit profile",
            "Open logs folder",
            "---",
            "Quit"
        ]
    );
    assert_eq!(submenu(&m, "Banned clients"), [Item::Label("None".into())]);
    assert_eq!(
        submenu(&m, "Servers on this network"),
        [Item::Label("None found".into())]
    );
    // A client of the second of two servers found: it is ticked, and a password shows.
    let mut c = TrayView::new(Role::Client, "default");
    c.servers = vec![
        ("EchoWarp on a".into(), false),
        ("EchoWarp on b".into(), true),
    ];
    c.server_address = "EchoWarp on b".into();
    let join = |name: &str, text: &str, checked| Item::Check {
        text: text.into(),
        action: Action::JoinServer(name.into()),
        checked,
    };
    assert_eq!(
        submenu(&c.menu(), "Servers on this network"),
        [
            join("EchoWarp on a", "EchoWarp on a", false),
            join("EchoWarp on b", "EchoWarp on b (password)", true)
        ]
    );
    let login = |v: &TrayView| {
        v.menu().into_iter().find_map(|i| match i {
            Item::Check {
                text,
                action: Action::ToggleAutostart,
                checked,
            } if text == "Start at login" => Some(checked),
            _ => None,
        })
    };
    assert_eq!(login(&v), Some(false));
    let mut on = v.clone();
    on.autostart = true;
    assert_eq!(login(&on), Some(true), "the check follows the profile");
    let roles = submenu(&m, "Role");
    assert!(matches!(&roles[0], Item::Check { checked: true, .. }));
    assert!(matches!(&roles[1], Item::Check { checked: false, .. }));
}

#[test]
fn a_client_has_no_ban_menu_and_ticks_its_device() {
    let mut v = TrayView::new(Role::Client, "alsa:speakerB");
    v.devices = vec![
        ("alsa:speakerB".into(), "Speaker B".into()),
        ("alsa:hdmi".into(), "HDMI".into()),
    ];
    let m = v.menu();
    assert!(!texts(&m).contains(&"Banned clients".to_owned()));
    let devices = submenu(&m, "Device");
    let ticked: Vec<String> = devices
        .iter()
        .filter_map(|i| match i {
            Item::Check {
                text,
                checked: true,
                ..
            } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ticked, ["Speaker B"]);
    assert!(devices.contains(&Item::Button {
        text: "Refresh".into(),
        action: Action::RefreshDevices,
        enabled: true
    }));
}

#[test]
fn a_server_without_a_password_says_so_in_its_status_line_until_it_stops() {
    let mut v = TrayView::new(Role::Server, "default");
    v.running = true;
    assert!(v.apply(&Event::NoPassword { anyone: false }));
    v.apply(&Event::Listening("[::]:4415".parse().expect("addr")));
    assert_eq!(
        v.status_line(),
        "EchoWarp Server: connecting · no password: local networks only · listening on port 4415"
    );
    v.apply(&Event::Stats(Stats::default()));
    assert!(
        v.status_line().contains("no password"),
        "{}",
        v.status_line()
    );
    v.apply(&Event::Stopped(Ok(crate::engine::Outcome::Stopped)));
    assert!(!v.status_line().contains("password"));
    v.apply(&Event::NoPassword { anyone: true });
    assert!(v.status_line().contains("no password: anyone can listen"));
}

#[test]
fn engine_events_drive_state_status_and_bans() {
    let mut v = TrayView::new(Role::Server, "default");
    v.running = true;
    assert!(v.apply(&Event::Listening("[::]:4415".parse().expect("addr"))));
    assert_eq!(v.state, TrayState::Connecting);
    let stats = Stats {
        clients: 1,
        format: "48000 Hz 2 ch pcm encrypted".into(),
        ..Stats::default()
    };
    assert!(v.apply(&Event::Stats(stats.clone())));
    assert_eq!(v.state, TrayState::Streaming);
    assert_eq!(
        v.status_line(),
        "EchoWarp Server: streaming · 1 client · 48000 Hz 2 ch pcm encrypted"
    );
    assert!(!v.apply(&Event::Stats(stats)), "same figures: no redraw");
    assert_eq!(texts(&v.menu())[2], "Stop");
    let ip: std::net::IpAddr = "10.0.0.7".parse().expect("ip");
    assert!(v.apply(&Event::Banned(ip)), "a ban changes the menu");
    assert!(!v.apply(&Event::Banned(ip)), "the same ban twice does not");
    let m = v.menu();
    let bans = submenu(&m, "Banned clients");
    assert_eq!(texts(bans), ["Unban 10.0.0.7", "---", "Clear all"]);
    let net: ipnet::IpNet = "10.0.1.0/24".parse().expect("net");
    assert!(v.apply(&Event::BannedNetwork(net)), "a network's ban too");
    let m = v.menu();
    let bans = submenu(&m, "Banned clients");
    assert_eq!(
        texts(bans),
        ["Unban 10.0.0.7", "Unban 10.0.1.0/24", "---", "Clear all"]
    );
    let in_use = std::io::Error::new(std::io::ErrorKind::AddrInUse, "port in use");
    let e = EngineError::io("cannot listen on port 4999")(in_use);
    assert!(v.apply(&Event::Stopped(Err(e))));
    assert_eq!((v.state, v.running), (TrayState::Error, false));
    assert!(
        v.status_line()
            .ends_with("cannot listen on port 4999: port in use"),
        "{}",
        v.status_line()
    );
    v.apply(&Event::Stopped(Ok(Outcome::Stopped)));
    assert_eq!(v.state.icon_name(), "idle");
}

#[test]
fn a_client_shows_reconnecting_and_loss() {
    let mut v = TrayView::new(Role::Client, "default");
    v.apply(&Event::Connecting { attempt: 2, of: 5 });
    assert_eq!(
        v.status_line(),
        "EchoWarp Client: connecting · attempt 2 of 5"
    );
    v.apply(&Event::Connected {
        peer: "192.0.2.1:4415".parse().expect("addr"),
        format: "48000 Hz 2 ch pcm encrypted".into(),
    });
    assert_eq!(v.state, TrayState::Streaming);
    v.apply(&Event::Stats(Stats {
        packets: 990,
        lost: 10,
        format: "48000 Hz".into(),
        latency_ms: Some(17.6),
        ..Stats::default()
    }));
    assert_eq!(v.detail, "48000 Hz · 1.0% loss · ~18 ms");
    v.apply(&Event::ConnectionLost("the server stopped".into()));
    assert_eq!(v.state, TrayState::Connecting);
}

#[test]
fn mute_is_ticked_crosses_the_icon_out_and_shows_in_the_status_line() {
    let mut v = TrayView::new(Role::Server, "default");
    let mute = |v: &TrayView| {
        v.menu().into_iter().find(|i| {
            matches!(
                i,
                Item::Check {
                    action: Action::ToggleMute,
                    ..
                }
            )
        })
    };
    assert_eq!(
        mute(&v),
        Some(Item::Check {
            text: "Mute (send silence)".into(),
            action: Action::ToggleMute,
            checked: false
        })
    );
    assert_eq!(v.icon_name(), "idle");
    v.muted = true;
    assert!(matches!(mute(&v), Some(Item::Check { checked: true, .. })));
    assert_eq!(v.icon_name(), "idle-muted");
    assert_eq!(v.status_line(), "EchoWarp Server: stopped · muted");
    v.apply(&Event::ClientJoined(
        "192.0.2.7:5000".parse().expect("addr"),
    ));
    assert_eq!(v.icon_name(), "streaming-muted");
    // Its row stays the same for a client (rows below keep their places).
    let c = TrayView::new(Role::Client, "default");
    let row = |v: &TrayView| {
        v.menu().iter().position(|i| {
            matches!(
                i,
                Item::Check {
                    action: Action::ToggleMute,
                    ..
                }
            )
        })
    };
    assert_eq!(row(&c), row(&v));
}
