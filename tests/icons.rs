//! The installers' icons are what they claim to be: every image inside `echowarp.ico` and
//! `echowarp.icns` is a PNG that decodes to the size its entry states, and the tray's state
//! icons are 64x64 RGBA (what `tray.rs` loads).
//!
//! Needs: nothing but the repository.

use std::path::Path;

fn read(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("icons")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Decodes a PNG; returns (width, height, colour type).
fn png_size(bytes: &[u8]) -> (u32, u32, png::ColorType) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("PNG data decodes");
    (info.width, info.height, info.color_type)
}

fn u16le(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32le(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

#[test]
fn the_ico_holds_16_to_256_pixel_pngs() {
    let ico = read("echowarp.ico");
    assert_eq!((u16le(&ico, 0), u16le(&ico, 2)), (0, 1), "an icon resource");
    let count = u16le(&ico, 4);
    let mut sizes = Vec::new();
    for i in 0..count {
        let e = 6 + 16 * i;
        let stated = |b: u8| if b == 0 { 256 } else { u32::from(b) };
        let (w, h) = (stated(ico[e]), stated(ico[e + 1]));
        let (len, offset) = (u32le(&ico, e + 8), u32le(&ico, e + 12));
        assert!(offset + len <= ico.len(), "entry {i} runs past the file");
        let (pw, ph, colour) = png_size(&ico[offset..offset + len]);
        assert_eq!((pw, ph), (w, h), "entry {i}");
        assert_eq!(colour, png::ColorType::Rgba);
        sizes.push(w);
    }
    assert_eq!(sizes, [16, 32, 48, 256]);
}

#[test]
fn the_icns_holds_16_to_512_pixel_pngs() {
    let icns = read("echowarp.icns");
    assert_eq!(&icns[..4], b"icns");
    let u32be = |at: usize| {
        u32::from_be_bytes([icns[at], icns[at + 1], icns[at + 2], icns[at + 3]]) as usize
    };
    assert_eq!(u32be(4), icns.len(), "the header states the file's length");
    let mut at = 8;
    let mut seen = Vec::new();
    while at < icns.len() {
        let kind = &icns[at..at + 4];
        let len = u32be(at + 4);
        assert!(len > 8 && at + len <= icns.len(), "element at {at}");
        let want = match kind {
            b"icp4" => 16,
            b"icp5" => 32,
            b"ic07" => 128,
            b"ic08" => 256,
            b"ic09" => 512,
            other => panic!("unexpected element {:?}", String::from_utf8_lossy(other)),
        };
        let (w, h, _) = png_size(&icns[at + 8..at + len]);
        assert_eq!((w, h), (want, want));
        seen.push(want);
        at += len;
    }
    assert_eq!(seen, [16, 32, 128, 256, 512]);
}

#[test]
fn tray_and_theme_icons_have_their_sizes() {
    for state in ["idle", "connecting", "streaming", "error"] {
        for name in [format!("{state}.png"), format!("{state}-muted.png")] {
            assert_eq!(
                png_size(&read(&name)),
                (64, 64, png::ColorType::Rgba),
                "{name}"
            );
        }
    }
    for size in [48, 128, 256] {
        let (w, h, _) = png_size(&read(&format!("echowarp-{size}.png")));
        assert_eq!((w, h), (size, size));
    }
}
