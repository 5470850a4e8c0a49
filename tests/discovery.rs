//! LAN discovery (issue 20): servers announce themselves over mDNS (multicast, which reaches
//! other processes on this machine through loopback as it reaches the LAN); `--discover` lists
//! them with what a client needs to know, a server run with `--no-discovery` stays unlisted, a
//! client connects by a server's announced name, and a server that exits is gone from the list.

mod common;
use common::*;

/// The servers `--discover` lists: one line each.
fn discover(sb: &Sandbox) -> String {
    let (code, out, err) = sb.run(&["--discover"], SECS(20));
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// The name a server announced, from its log.
fn announced(server: &mut Proc) -> String {
    server.wait_for("announced on the local network as", SECS(10));
    let err = server.stderr();
    let line = err
        .lines()
        .find(|l| l.contains("announced on the local network as"))
        .expect("the line waited for");
    line.split('"').nth(1).expect("a quoted name").to_owned()
}

#[test]
fn servers_are_found_by_name_unless_asked_not_to_be_and_are_gone_once_they_exit() {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let mut server = sb.spawn(&["-u", &port, "-d", "tone:440", "-p", "secret"]);
    server.wait_for("listening on", SECS(10));
    let name = announced(&mut server);
    assert!(
        name.starts_with("EchoWarp on ") && name.ends_with(&format!(" port {port}")),
        "{name}"
    );
    let hidden_port = free_port().to_string();
    let mut hidden = sb.spawn(&["-u", &hidden_port, "-d", "tone:440", "--no-discovery"]);
    hidden.wait_for("listening on", SECS(10));

    let listed = discover(&sb);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&format!("{name}\t")))
        .unwrap_or_else(|| panic!("{name:?} is not listed:\n{listed}"));
    let fields: Vec<&str> = line.split('\t').collect();
    assert!(
        fields[1].contains("127.0.0.1") && fields[1].ends_with(&format!(" port {port}")),
        "{line}"
    );
    assert_eq!(fields[2], "protocol 1.1, send, password", "{line}");
    assert!(
        !listed.contains(&format!(" port {hidden_port}")),
        "--no-discovery was announced:\n{listed}"
    );
    assert!(
        !hidden.stderr().contains("announced"),
        "{}",
        hidden.stderr()
    );

    // A client that names the server as it announces itself finds and joins it.
    let rec = sb.path("by-name.wav");
    let rec_arg = format!("wav:{}", rec.display());
    let mut client = sb.spawn(&["-c", "-a", &name, "-p", "secret", "-d", &rec_arg]);
    client.wait_for("connected to", SECS(15));
    std::thread::sleep(SECS(1));
    client.stop();
    assert!(
        std::fs::metadata(&rec).map(|m| m.len()).unwrap_or(0) > 44,
        "nothing recorded from the server found by name"
    );

    // Gone once it exits (its goodbye, and it answers no query).
    server.stop();
    let listed = discover(&sb);
    assert!(
        !listed.contains(&format!("{name}\t")),
        "{name:?} is listed after its exit:\n{listed}"
    );
    hidden.stop();
}
