//! Profiles through the binary: save and load, bad values, the EchoWarp 0.4 INI example,
//! interactive setup on end of input.
//!
//! Needs: nothing but the binary.

mod common;
use common::*;

#[test]
fn save_config_then_f_reproduces_the_settings() {
    let sb = Sandbox::new();
    let args = [
        "-c",
        "-a",
        "10.9.8.7",
        "-u",
        "5555",
        "-d",
        "wav:rec.wav",
        "-p",
        "pw#1 \"x\"",
        "-r",
        "9",
        "-b",
        "65536",
        "-l",
        "-s",
        "saved.toml",
        "--show-config",
    ];
    let (code, first, err) = sb.run(&args, SECS(10));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("settings saved to saved.toml"), "{err}");
    let (code, second, err) = sb.run(&["-f", "saved.toml", "--show-config"], SECS(10));
    assert_eq!(code, 0, "{err}");
    assert_eq!(first, second);
    for line in [
        "role = \"client\"",
        "port = 5555",
        "server_address = \"10.9.8.7\"",
        "reconnect_attempts = 9",
        "error_log = true",
    ] {
        assert!(second.contains(line), "{line} missing in\n{second}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sb.path("saved.toml"))
            .expect("saved")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the profile may hold a password");
    }
    // Flags beside -f override it.
    let (_, third, _) = sb.run(
        &["-f", "saved.toml", "-u", "6000", "--show-config"],
        SECS(10),
    );
    assert!(third.contains("port = 6000"));
}

#[test]
fn the_saved_profile_is_the_default() {
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["-u", "7777", "--save-config", "--show-config"], SECS(10));
    assert_eq!(code, 0, "{err}");
    assert!(sb.path("config/echowarp/profile.toml").exists());
    let (_, out, _) = sb.run(&["--show-config"], SECS(10));
    assert!(out.contains("port = 7777"), "{out}");
}

#[test]
fn a_bad_value_exits_2_naming_line_and_key() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path("bad.toml"),
        "version = 1\nrole = \"server\"\nport = \"four\"\n",
    )
    .expect("write");
    let (code, _, err) = sb.run(&["-f", "bad.toml"], SECS(10));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 3, key `port`"), "{err}");
    std::fs::write(sb.path("bad2.toml"), "[audio]\nframe_ms = 500\n").expect("write");
    let (code, _, err) = sb.run(&["-f", "bad2.toml"], SECS(10));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 2, key `frame_ms`"), "{err}");
    // A broken saved profile is an error too, never silently replaced.
    std::fs::create_dir_all(sb.path("config/echowarp")).expect("mkdir");
    std::fs::write(sb.path("config/echowarp/profile.toml"), "port = [\n").expect("write");
    let (code, _, err) = sb.run(&["--show-config"], SECS(10));
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        std::fs::read_to_string(sb.path("config/echowarp/profile.toml")).expect("read"),
        "port = [\n"
    );
}

#[test]
fn the_echowarp_0_4_readme_ini_loads() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path("config.conf"),
        "[echowarp_conf]\nis_server=False\nudp_port=6532\nsocket_buffer_size=10240\ndevice_id=1\npassword=mysecretpassword\ndevice_encoding_names=cp1251\nis_error_log=True\nserver_address=192.168.1.5\nreconnect_attempt=15\nis_ssl=True\nis_integrity_control=True\n",
    )
    .expect("write");
    let (code, out, err) = sb.run(&["--config_file", "config.conf", "--show-config"], SECS(10));
    assert_eq!(code, 0, "{err}");
    for line in [
        "role = \"client\"",
        "port = 6532",
        "server_address = \"192.168.1.5\"",
        "password = \"mysecretpassword\"",
        "reconnect_attempts = 15",
        "socket_buffer_size = 10240",
    ] {
        assert!(out.contains(line), "{line} missing in\n{out}");
    }
}

#[test]
fn interactive_setup_ends_cleanly_on_end_of_input() {
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["-I"], SECS(20));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing was saved"), "{err}");
    assert!(!sb.path("config/echowarp/profile.toml").exists());
}

#[test]
fn interactive_setup_answers_then_runs() {
    let sb = Sandbox::new();
    let mut cmd = sb.command(&["-I"]);
    cmd.stdin(std::process::Stdio::piped());
    let mut p = Proc::spawn(cmd, &["-I"]);
    let answers = "server\n4999\nwav:missing.wav\nn\nnone\ny\n2\n0\ny\n";
    std::io::Write::write_all(p.child.stdin.as_mut().expect("stdin"), answers.as_bytes())
        .expect("answer");
    let status = p.wait_timeout(SECS(20));
    // It saved, then ran the server, which fails on the missing file: proof it used the answers.
    assert_eq!(status.code(), Some(1), "{}", p.stderr());
    assert!(p.stderr().contains("missing.wav"), "{}", p.stderr());
    let saved = std::fs::read_to_string(sb.path("config/echowarp/profile.toml")).expect("saved");
    assert!(
        saved.contains("port = 4999") && saved.contains("max_clients = 2"),
        "{saved}"
    );
}

#[test]
fn list_devices_works_without_a_sound_card() {
    let sb = Sandbox::new();
    let (code, out, err) = sb.run(&["--list-devices"], SECS(30));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("index") && out.contains("wav:PATH"), "{out}");
}

#[test]
fn bad_usage_exits_2() {
    let sb = Sandbox::new();
    assert_eq!(sb.run(&["--udp-port", "notaport"], SECS(10)).0, 2);
    let (code, _, err) = sb.run(&["-c", "-d", "null"], SECS(10));
    assert_eq!(code, 2, "a client without an address: {err}");
    let (code, _, err) = sb.run(&["-d", "tone:abc"], SECS(10));
    assert_eq!(code, 2, "{err}");
}

/// `mute = true`: the server streams silence on the stream's clock (the client connects and
/// records it), and `--stats-json` says it is muted.
#[test]
fn a_muted_profile_serves_silence_and_says_so() {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    std::fs::write(sb.path("muted.toml"), "mute = true\n").expect("write");
    let mut server = sb.spawn(&[
        "-f",
        "muted.toml",
        "-u",
        &port,
        "-d",
        "tone:1000",
        "--stats-json",
    ]);
    server.wait_for("server on", SECS(10));
    let mut client = sb.spawn(&["-c", "-a", "127.0.0.1", "-u", &port, "-d", "wav:rec.wav"]);
    client.wait_for("connected to", SECS(10));
    let deadline = std::time::Instant::now() + SECS(10);
    while !server.stdout().contains("\"muted\":true") {
        assert!(std::time::Instant::now() < deadline, "{}", server.stdout());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    client.signal("TERM");
    assert!(client.wait_timeout(SECS(10)).success());
    let (_, samples) = read_wav(&sb.path("rec.wav"));
    assert!(samples.len() > 48_000, "{} samples", samples.len());
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert_eq!(peak, 0, "a muted server sent sound");
    server.stop();
}
