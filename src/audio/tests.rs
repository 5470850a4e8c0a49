#[test]
fn each_frame_read_knows_when_its_first_sample_was_captured() {
    use std::time::{Duration, Instant};
    let format = StreamFormat {
        sample_rate: 48_000,
        channels: 2,
    };
    let ms = Duration::from_millis;
    // A device: deliveries of 480 frames; the clock says the first frame of each entered
    // the device 10 ms apart. Packets of 240 frames fall two to a delivery.
    let (mut producer, consumer) = rtrb::RingBuffer::<i16>::new(48_000);
    let clock = Arc::new(stamp::StampCell::default());
    let mut capture = Capture::from_ring(
        consumer,
        format,
        Arc::new(AtomicU64::new(0)),
        Arc::new(DelayCell::default()),
        None,
        Box::new(()),
    )
    .with_clock(clock.clone());
    let t0 = Instant::now();
    let mut out = [0i16; 480];
    assert_eq!(capture.captured_at(), None);
    for delivery in 0..3u32 {
        clock.record(u64::from(delivery) * 480, t0 + ms(10) * delivery);
        for _ in 0..960 {
            producer.push(0).expect("ring space");
        }
        for half in 0..2u32 {
            assert_eq!(capture.next_frame(Instant::now(), &mut out), Frame::Full);
            assert_eq!(
                capture.captured_at(),
                Some(t0 + ms(10) * delivery + ms(5) * half),
                "delivery {delivery}, packet {half}"
            );
        }
    }
    // Read late, after two more deliveries: the newest stamp still places it.
    clock.record(1_440, t0 + ms(30));
    clock.record(1_920, t0 + ms(40));
    for _ in 0..1_920 {
        producer.push(0).expect("ring space");
    }
    assert_eq!(capture.next_frame(Instant::now(), &mut out), Frame::Full);
    assert_eq!(capture.captured_at(), Some(t0 + ms(30)));

    // A generator: on its own schedule, from the first read.
    let mut tone = Capture::paced(format, Box::new(|buf: &mut [i16]| buf.len()));
    let start = Instant::now();
    assert!(matches!(tone.next_frame(start, &mut out), Frame::Wait(_)));
    assert_eq!(tone.next_frame(start + ms(5), &mut out), Frame::Full);
    assert_eq!(tone.captured_at(), Some(start));
    assert_eq!(tone.next_frame(start + ms(10), &mut out), Frame::Full);
    assert_eq!(tone.captured_at(), Some(start + ms(5)));
}

/// Runs a capture whose device delivers `deliveries` callbacks of `delivery` frames every
/// `every`, signalling as the real callback does (what its ring holds after the push), and
/// reads packets of `packet` frames, polling the wake-up for as long as each wait says.
/// Gives the packets read and the polls made.
#[cfg(target_os = "linux")]
fn capture_polls(
    deliveries: usize,
    delivery: usize,
    every: std::time::Duration,
    packet: usize,
) -> (usize, usize) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let format = StreamFormat {
        sample_rate: 48_000,
        channels: 1,
    };
    let (mut producer, consumer) = rtrb::RingBuffer::<i16>::new(48_000);
    let wake = Arc::new(wake::Wake::new().expect("eventfd"));
    let mut capture = Capture::from_ring(
        consumer,
        format,
        Arc::new(AtomicU64::new(0)),
        Arc::new(DelayCell::default()),
        Some(wake.clone()),
        Box::new(()),
    );
    let signal = wake.clone();
    let device = std::thread::spawn(move || {
        let start = Instant::now();
        for n in 1..=deliveries {
            let due = start + every * u32::try_from(n).expect("few deliveries");
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            for _ in 0..delivery {
                producer.push(0).expect("ring space");
            }
            signal.notify_at(producer.buffer().capacity() - producer.slots());
        }
    });
    let packets_due = deliveries * delivery / packet;
    let (mut packets, mut polls) = (0, 0);
    let mut frame = vec![0i16; packet];
    let deadline = Instant::now() + Duration::from_secs(10);
    while packets < packets_due && Instant::now() < deadline {
        match capture.next_frame(Instant::now(), &mut frame) {
            Frame::Full => packets += 1,
            Frame::Wait(d) => {
                polls += 1;
                let ts = Timespec {
                    tv_sec: 0,
                    tv_nsec: d.min(Duration::from_millis(100)).subsec_nanos().into(),
                };
                let mut fds = [PollFd::from_borrowed_fd(wake.fd(), PollFlags::IN)];
                if poll(&mut fds, Some(&ts)).unwrap_or(0) > 0 {
                    wake.drain();
                }
            }
            other => panic!("a running capture gave {other:?}"),
        }
    }
    device.join().expect("device thread");
    assert_eq!(packets, packets_due, "every packet captured");
    (packets, polls)
}

/// A device whose callbacks (256 frames, 5.33 ms) do not divide into packets (240 frames):
/// after each packet a partial one waits. With the device's wake-up, the capture waits for
/// the next delivery: one poll per delivery. A timer set for the missing samples fires
/// before that delivery (4.67 ms against 5.33) and makes it about two.
#[cfg(target_os = "linux")]
#[test]
fn a_partial_frame_waits_for_the_devices_wake_up_not_a_timer() {
    const DELIVERIES: usize = 40;
    let every = std::time::Duration::from_micros(5_333);
    let (packets, polls) = capture_polls(DELIVERIES, 256, every, 240);
    eprintln!("{polls} polls for {DELIVERIES} deliveries, {packets} packets");
    assert!(
        polls <= DELIVERIES + DELIVERIES / 5,
        "{polls} polls for {DELIVERIES} deliveries"
    );
}

/// 20 ms packets (Opus's longest frame) over 5 ms callbacks: the callback rings only when
/// a whole packet is there, so the reader wakes once a packet, not at every callback (four
/// a packet, as it did: 185-198 wake-ups a second through PipeWire's plug-in).
#[cfg(target_os = "linux")]
#[test]
fn a_long_packet_wakes_its_reader_once_not_at_every_callback() {
    const DELIVERIES: usize = 64;
    let every = std::time::Duration::from_millis(5);
    let (packets, polls) = capture_polls(DELIVERIES, 240, every, 960);
    eprintln!("{polls} polls for {DELIVERIES} deliveries, {packets} packets");
    assert_eq!(packets, DELIVERIES / 4);
    // One poll a packet, and a few more where a guard's timer runs out on a slow machine.
    assert!(
        polls <= packets + packets / 4,
        "{polls} polls for {packets} packets of 4 deliveries each"
    );
}

#[test]
fn a_device_period_follows_the_packets_within_its_bounds() {
    use super::device_period;
    use std::time::Duration;
    let ms = |m: f64| Duration::from_secs_f64(m / 1000.0);
    // The low-latency preset's 2 ms packets (and 2.5 ms Opus frames) keep 2.5 ms callbacks;
    // the default's 5 ms packets get 5 ms callbacks, half the wake-ups; 10 ms packets no
    // more than 5 ms (the playout holds a whole callback); 20 ms packets half of theirs.
    assert_eq!(device_period(ms(2.0)), ms(2.5));
    assert_eq!(device_period(ms(2.5)), ms(2.5));
    assert_eq!(device_period(ms(5.0)), ms(5.0));
    assert_eq!(device_period(ms(10.0)), ms(5.0));
    assert_eq!(device_period(ms(20.0)), ms(10.0));
    assert_eq!(device_period(ms(60.0)), ms(10.0));
    assert_eq!(device_period(Duration::ZERO), ms(2.5));
}

#[test]
fn a_delay_cell_is_unreported_until_set() {
    use super::DelayCell;
    use std::time::Duration;
    let c = DelayCell::default();
    assert_eq!(c.get(), None);
    c.set(Duration::ZERO);
    assert_eq!(
        c.get(),
        Some(Duration::ZERO),
        "0 ms is a report, not its absence"
    );
    c.set(Duration::from_micros(3_250));
    assert_eq!(c.get(), Some(Duration::from_micros(3_250)));
    c.set(Duration::MAX);
    assert!(c.get().is_some(), "a huge delay stays a report");
}

use super::*;

#[test]
fn device_specs_parse() {
    assert_eq!(DeviceSpec::parse("default").ok(), Some(DeviceSpec::Default));
    assert_eq!(
        DeviceSpec::parse("wav:a b.wav").ok(),
        Some(DeviceSpec::Wav("a b.wav".into()))
    );
    assert_eq!(
        DeviceSpec::parse("tone:440").ok(),
        Some(DeviceSpec::Tone(440.0))
    );
    assert_eq!(DeviceSpec::parse("3").ok(), Some(DeviceSpec::Index(3)));
    assert_eq!(
        DeviceSpec::parse("alsa:micA").ok(),
        Some(DeviceSpec::Name("alsa:micA".into()))
    );
    for bad in ["wav:", "tone:x", "tone:-5", "tone:inf"] {
        assert!(DeviceSpec::parse(bad).is_err(), "{bad}");
    }
}
