//! A TCP proxy that behaves like a network link of a given speed: every connection through it
//! shares one byte budget per direction (a token bucket), so parallel downloads split the link
//! as they would on a real one. The benchmarks use it to compare contenders on a link slower
//! than loopback, where reading from the registry, not the CPU, is what takes the time.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes a direction may send at once before waiting: small enough that the rate holds over
/// short transfers, large enough that the proxy costs little CPU.
const CHUNK: usize = 64 << 10;
/// How far ahead of the schedule a direction may run (one short burst, as a NIC queue has).
const BURST: Duration = Duration::from_millis(20);

/// One direction of the link: the time at which everything sent so far has gone out.
struct Pacer {
    bytes_per_sec: f64,
    busy_until: Mutex<Instant>,
    bytes: AtomicU64,
}

impl Pacer {
    fn new(bytes_per_sec: f64) -> Self {
        Self {
            bytes_per_sec,
            busy_until: Mutex::new(Instant::now()),
            bytes: AtomicU64::new(0),
        }
    }

    /// Books `n` bytes on the link; returns how long the caller must wait before sending.
    fn book(&self, n: usize) -> Duration {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let cost = Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
        let now = Instant::now();
        let mut busy = self.busy_until.lock().expect("pacer lock");
        let start = (*busy).max(now);
        *busy = start + cost;
        (*busy).saturating_duration_since(now + BURST)
    }
}

pub struct LinkProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    down: Arc<Pacer>,
    up: Arc<Pacer>,
    acceptor: Option<JoinHandle<()>>,
}

impl LinkProxy {
    /// Listens on a free 127.0.0.1 port; forwards to `upstream` (`host:port`) at `mbit_per_sec`
    /// megabits per second in each direction.
    pub fn start(upstream: &str, mbit_per_sec: f64) -> io::Result<Self> {
        Self::start_asymmetric(upstream, mbit_per_sec, mbit_per_sec)
    }

    /// Like [`LinkProxy::start`], with a speed of its own per direction: `down_mbit` for
    /// registry → client, `up_mbit` for client → registry (uploads). `f64::INFINITY` leaves a
    /// direction unpaced (the e2e tests slow only pushes, to interrupt them).
    pub fn start_asymmetric(upstream: &str, down_mbit: f64, up_mbit: f64) -> io::Result<Self> {
        if [down_mbit, up_mbit].iter().any(|m| m.is_nan() || *m <= 0.0) {
            return Err(io::Error::other("link speed must be > 0"));
        }
        let upstream: SocketAddr = upstream
            .parse()
            .map_err(|e| io::Error::other(format!("upstream {upstream:?}: {e}")))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let rate = |mbit: f64| mbit * 1e6 / 8.0;
        let (down, up) = (
            Arc::new(Pacer::new(rate(down_mbit))),
            Arc::new(Pacer::new(rate(up_mbit))),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (stop, down, up) = (stop.clone(), down.clone(), up.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                        continue;
                    };
                    let (down, up) = (down.clone(), up.clone());
                    std::thread::spawn(move || pump(server, c2, &down));
                    std::thread::spawn(move || pump(client, s2, &up));
                }
            })
        };
        Ok(Self {
            port,
            stop,
            down,
            up,
            acceptor: Some(acceptor),
        })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Bytes carried so far: (registry → client, client → registry).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.down.bytes.load(Ordering::Relaxed),
            self.up.bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` → `to` at the pacer's rate until EOF, then half-closes `to`.
fn pump(mut from: TcpStream, mut to: TcpStream, pacer: &Pacer) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let wait = pacer.book(n);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that sends `size` bytes to its first client and closes: its address and
    /// its thread.
    fn upstream_sending(size: usize) -> (String, std::thread::JoinHandle<()>) {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = server.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            s.write_all(&vec![7u8; size]).unwrap();
        });
        (upstream, t)
    }

    /// Reads all the proxy passes down: the bytes and the seconds it took.
    fn download(proxy: &LinkProxy) -> (Vec<u8>, f64) {
        let started = Instant::now();
        let mut c = TcpStream::connect(proxy.host()).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        (got, started.elapsed().as_secs_f64())
    }

    #[test]
    fn transfer_takes_as_long_as_the_link_says() {
        // An upstream that sends 4 MiB and closes.
        let size = 4usize << 20;
        let (upstream, t) = upstream_sending(size);
        // 100 Mbit/s: 4 MiB take about 0.34 s.
        let proxy = LinkProxy::start(&upstream, 100.0).unwrap();
        let (got, took) = download(&proxy);
        t.join().unwrap();
        assert_eq!(got.len(), size);
        let expected = size as f64 * 8.0 / 100e6;
        assert!(
            took > expected * 0.8 && took < expected * 3.0,
            "took {took:.3} s, link time {expected:.3} s"
        );
        assert_eq!(proxy.bytes().0, size as u64);
    }

    #[test]
    fn an_unpaced_direction_is_not_slowed() {
        let size = 4usize << 20;
        let (upstream, t) = upstream_sending(size);
        // Uploads at 1 Mbit/s, downloads unpaced: 4 MiB down take far less than 33 s.
        let proxy = LinkProxy::start_asymmetric(&upstream, f64::INFINITY, 1.0).unwrap();
        let started = Instant::now();
        let (got, _) = download(&proxy);
        t.join().unwrap();
        assert_eq!(got.len(), size);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn refuses_a_zero_speed() {
        assert!(LinkProxy::start("127.0.0.1:1", 0.0).is_err());
    }
}
