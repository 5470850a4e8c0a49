//! The profile's round trip, its merge into a user's file, and its errors.

use super::*;

#[test]
fn written_profile_reads_back_identically() {
    let mut p = Profile {
        role: Role::Client,
        server_address: "host \"quoted\"".into(),
        password: "p@ss=word#1".into(),
        device: "wav:/tmp/a b.wav".into(),
        ..Profile::default()
    };
    p.audio.target_latency_ms = 40;
    let text = p.to_toml();
    assert_eq!(
        Profile::parse(&text, Path::new("p.toml")).expect("parses"),
        p
    );
    assert_eq!(
        Profile::parse("", Path::new("p.toml")).expect("empty is defaults"),
        Profile::default()
    );
}

#[test]
fn saving_keeps_the_users_comments_and_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("profile.toml");
    let mine = "# my studio laptop\nport = 5000   # the firewall allows this one\n\n\
                # the USB mic\ndevice = \"tone:440\"\n\n[audio]\n# keep it low\ntarget_latency_ms = 20\n";
    std::fs::write(&path, mine).expect("write");
    let mut p = Profile::load(&path).expect("loads");
    p.port = 5001;
    p.role = Role::Client;
    p.audio.frame_ms = 10;
    p.save(&path).expect("saves");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(
        text.starts_with("# my studio laptop\nport = 5001   # the firewall allows this one\n"),
        "{text}"
    );
    assert!(
        text.contains("# the USB mic\ndevice = \"tone:440\""),
        "{text}"
    );
    assert!(
        text.contains("# keep it low\ntarget_latency_ms = 20"),
        "{text}"
    );
    assert!(text.contains("role = \"client\""), "{text}");
    assert_eq!(Profile::load(&path).expect("reloads"), p);
    // Unchanged values stay out of a file that did not have them.
    assert!(!text.contains("encryption"), "{text}");

    // A broken file is never replaced.
    std::fs::write(&path, "port = \n").expect("write");
    assert!(matches!(
        p.save(&path),
        Err(StoreError::Profile { line: 1, .. })
    ));
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "port = \n");
}

#[test]
fn bad_values_name_line_and_key() {
    let text = "version = 1\nrole = \"server\"\nport = \"abc\"\n";
    let e = Profile::parse(text, Path::new("p.toml")).expect_err("bad port type");
    match e {
        StoreError::Profile { line, key, .. } => {
            assert_eq!((line, key.as_deref()), (3, Some("port")))
        }
        other => panic!("unexpected {other:?}"),
    }
    let e = Profile::parse("\n\nport = 0\n", Path::new("p.toml")).expect_err("port 0");
    assert!(e.to_string().contains("line 3, key `port`"), "{e}");
    let e = Profile::parse("[audio]\nframe_ms = 99\n", Path::new("p.toml")).expect_err("range");
    assert!(e.to_string().contains("line 2, key `frame_ms`"), "{e}");
    let opus = "[audio]\ncodec = \"opus\"\nframe_ms = 7\n";
    let e = Profile::parse(opus, Path::new("p.toml")).expect_err("opus frame");
    assert!(e.to_string().contains("line 3, key `frame_ms`"), "{e}");
    let ok = Profile::parse("[audio]\ncodec = \"opus\"\nframe_ms = 20\n", Path::new("p"))
        .expect("opus at 20 ms is fine");
    assert_eq!(
        (ok.audio.codec, ok.audio.bitrate_kbps),
        (CodecName::Opus, 128)
    );
    let e = Profile::parse("prot = 5\n", Path::new("p.toml")).expect_err("typo");
    assert!(e.to_string().contains("line 1, key `prot`"), "{e}");
    let e = Profile::parse("role = \"boss\"\n", Path::new("p.toml")).expect_err("enum");
    assert!(e.to_string().contains("key `role`"), "{e}");
}

#[test]
fn every_key_is_written_once_with_its_comment() {
    let values = text::table(&Profile::default());
    let mut serialised: Vec<String> = Vec::new();
    for (k, v) in &values {
        match v.as_table() {
            Some(t) => serialised.extend(t.keys().map(|sub| format!("{k}.{sub}"))),
            None => serialised.push(k.clone()),
        }
    }
    let mut written: Vec<String> = text::KEYS.iter().map(|(k, _)| (*k).to_owned()).collect();
    serialised.sort();
    written.sort();
    assert_eq!(serialised, written, "KEYS and the Profile struct disagree");
    let toml = Profile::default().to_toml();
    for (path, comment) in text::KEYS {
        let key = path.rsplit('.').next().unwrap_or(path);
        let line = toml
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} not written in\n{toml}"));
        assert!(line.ends_with(comment), "{line}");
    }
}
