//! A network impairment relay on the loopback interface, for the tests (netem's job without
//! root or a network namespace): clients connect to the relay's port as if it were the
//! server's; TCP is piped through untouched, UDP datagrams are lost, delayed, jittered, held
//! back (reordered) and duplicated with a seeded generator, so a run can be repeated exactly.

use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What happens to datagrams in one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Fixed delay.
    pub delay: Duration,
    /// Extra delay, uniform between zero and this (reorders when above the packet interval).
    pub jitter: Duration,
    /// Probability that a datagram is held back by `reorder_delay` (arrives after later ones).
    pub reorder: f64,
    /// How long a held-back datagram waits.
    pub reorder_delay: Duration,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// How long after the original the copy follows.
    pub duplicate_delay: Duration,
}

impl Default for Impairment {
    fn default() -> Self {
        Self {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(25),
            duplicate: 0.0,
            duplicate_delay: Duration::from_millis(10),
        }
    }
}

/// Counters of what the relay did to datagrams travelling towards the client.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams from the server.
    pub seen: AtomicU64,
    /// Dropped.
    pub lost: AtomicU64,
    /// Held back.
    pub reordered: AtomicU64,
    /// Sent twice.
    pub duplicated: AtomicU64,
    /// The longest run of consecutive drops.
    pub longest_loss_run: AtomicU64,
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A datagram waiting for its time.
struct Due {
    at: Instant,
    order: u64,
    bytes: Vec<u8>,
    /// True: to the client (through the front socket); false: to the server.
    down: bool,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // The earliest first out of a max-heap.
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Due>,
    order: u64,
}

/// A running relay; dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// What happened to datagrams towards the client.
    pub stats: Arc<RelayStats>,
}

impl Relay {
    /// Starts a relay on `listen` (port 0: any) in front of the server at `upstream`, impairing
    /// datagrams towards the client with `down` and towards the server with `up`.
    ///
    /// # Errors
    /// The sockets cannot be bound.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        down: Impairment,
        up: Impairment,
        seed: u64,
    ) -> io::Result<Self> {
        let tcp = TcpListener::bind(listen)?;
        let addr = tcp.local_addr()?;
        let front = Arc::new(UdpSocket::bind(addr)?);
        let back = Arc::new(UdpSocket::bind((upstream.ip(), 0))?);
        back.connect(upstream)?;
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
        }
        tcp.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let queue = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));

        // TCP: a byte pipe each way per connection.
        let st = stop.clone();
        spawn("netem tcp", move || {
            while !st.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((inbound, _)) => {
                        if let Ok(outbound) = TcpStream::connect(upstream) {
                            let _ = inbound.set_nonblocking(false);
                            pipe(&inbound, &outbound);
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        })?;

        // Client to server.
        let (st, q, f, c) = (stop.clone(), queue.clone(), front.clone(), client.clone());
        spawn("netem up", move || {
            let mut rng = Rng(seed ^ 0x5555);
            let mut buf = [0u8; 2048];
            let mut run = 0;
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = f.recv_from(&mut buf) {
                    if let Ok(mut g) = c.lock() {
                        *g = Some(from);
                    }
                    impair(&up, &mut rng, &buf[..n], false, &q, None, &mut run);
                }
            }
        })?;

        // Server to client.
        let (st, q, b, s2) = (stop.clone(), queue.clone(), back.clone(), stats.clone());
        spawn("netem down", move || {
            let mut rng = Rng(seed);
            let mut buf = [0u8; 2048];
            let mut run = 0;
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = b.recv(&mut buf) {
                    impair(&down, &mut rng, &buf[..n], true, &q, Some(&s2), &mut run);
                }
            }
        })?;

        // The sender: each datagram at its time.
        let (st, q) = (stop.clone(), queue);
        spawn("netem send", move || {
            let (lock, cvar) = &*q;
            let Ok(mut g) = lock.lock() else { return };
            while !st.load(Ordering::Relaxed) {
                let now = Instant::now();
                match g.heap.peek().map(|d| d.at) {
                    Some(at) if at <= now => {
                        if let Some(d) = g.heap.pop() {
                            if d.down {
                                let to = client.lock().ok().and_then(|c| *c);
                                if let Some(to) = to {
                                    let _ = front.send_to(&d.bytes, to);
                                }
                            } else {
                                let _ = back.send(&d.bytes);
                            }
                        }
                    }
                    Some(at) => {
                        g = match cvar.wait_timeout(g, at - now) {
                            Ok((g, _)) => g,
                            Err(_) => return,
                        };
                    }
                    None => {
                        g = match cvar.wait_timeout(g, Duration::from_millis(50)) {
                            Ok((g, _)) => g,
                            Err(_) => return,
                        };
                    }
                }
            }
        })?;
        Ok(Self { addr, stop, stats })
    }

    /// Where clients connect (TCP and UDP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
}

/// Copies bytes both ways until either side closes.
fn pipe(a: &TcpStream, b: &TcpStream) {
    for (from, to) in [(a, b), (b, a)] {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
            return;
        };
        let _ = spawn("netem pipe", move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        });
    }
}

fn impair(
    how: &Impairment,
    rng: &mut Rng,
    bytes: &[u8],
    down: bool,
    queue: &(Mutex<Queue>, Condvar),
    stats: Option<&RelayStats>,
    loss_run: &mut u64,
) {
    if let Some(s) = stats {
        s.seen.fetch_add(1, Ordering::Relaxed);
    }
    if rng.unit() < how.loss {
        *loss_run += 1;
        if let Some(s) = stats {
            s.lost.fetch_add(1, Ordering::Relaxed);
            s.longest_loss_run.fetch_max(*loss_run, Ordering::Relaxed);
        }
        return;
    }
    *loss_run = 0;
    let mut at = Instant::now() + how.delay + how.jitter.mul_f64(rng.unit());
    if rng.unit() < how.reorder {
        at += how.reorder_delay;
        if let Some(s) = stats {
            s.reordered.fetch_add(1, Ordering::Relaxed);
        }
    }
    let copy = rng.unit() < how.duplicate;
    let (lock, cvar) = queue;
    let Ok(mut g) = lock.lock() else { return };
    let push = |at: Instant, g: &mut Queue| {
        g.order += 1;
        let order = g.order;
        g.heap.push(Due {
            at,
            order,
            bytes: bytes.to_vec(),
            down,
        });
    };
    push(at, &mut g);
    if copy {
        push(at + how.duplicate_delay, &mut g);
        if let Some(s) = stats {
            s.duplicated.fetch_add(1, Ordering::Relaxed);
        }
    }
    cvar.notify_one();
}
