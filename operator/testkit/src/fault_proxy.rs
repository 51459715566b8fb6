//! `fault_proxy`: an HTTP/1.1 proxy on 127.0.0.1 that sits between a registry client and a real
//! registry and injects faults chosen by a seeded RNG: 500/503 answers, 429 with `Retry-After`,
//! connections reset before the request reaches the registry or after it took effect (the
//! answer is lost), stalls in the middle of an answer, and answer bodies cut short at a random
//! byte.
//!
//! One request per connection: the proxy reads the request (head and `Content-Length` body),
//! decides its fate, forwards it with `Connection: close` and relays the answer until the
//! registry closes. The `Host` header is forwarded unchanged, so the registry's upload
//! `Location`s point back at the proxy. The fault sequence is a function of the seed and of the
//! order requests arrive in (parallel requests can arrive in a different order from run to run).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Forwarded untouched.
    None,
    /// `500 Internal Server Error`, not forwarded.
    Status500,
    /// `503 Service Unavailable`, not forwarded.
    Status503,
    /// `429 Too Many Requests` with `Retry-After`, not forwarded.
    TooManyRequests,
    /// The connection is reset before the request is forwarded.
    ResetBefore,
    /// The request is forwarded (and takes effect), then the connection is reset: the answer
    /// is lost.
    ResetAfter,
    /// The answer stops for a while half way through, then continues.
    Stall,
    /// The answer's body is cut at a random byte (GET answers with a body only).
    Truncate,
}

const FAULTS: [Fault; 7] = [
    Fault::Status500,
    Fault::Status503,
    Fault::TooManyRequests,
    Fault::ResetBefore,
    Fault::ResetAfter,
    Fault::Stall,
    Fault::Truncate,
];

#[derive(Debug, Clone)]
pub struct FaultConfig {
    pub seed: u64,
    /// Probability that a request gets a fault (0.0–1.0).
    pub fault_rate: f64,
    /// The `Retry-After` value of 429 answers, in seconds.
    pub retry_after_secs: u64,
    /// How long a stall lasts.
    pub stall: Duration,
}

impl FaultConfig {
    pub fn new(seed: u64, fault_rate: f64) -> Self {
        Self {
            seed,
            fault_rate,
            retry_after_secs: 1,
            stall: Duration::from_millis(700),
        }
    }
}

/// xorshift64*: small, seeded, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Shared {
    config: FaultConfig,
    upstream: SocketAddr,
    rng: Mutex<Rng>,
    /// `(request line, fault)` in arrival order.
    log: Mutex<Vec<(String, Fault)>>,
}

pub struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port and proxies to `upstream` (`host:port`).
    pub fn start(upstream: &str, config: FaultConfig) -> io::Result<Self> {
        let upstream: SocketAddr = upstream
            .parse()
            .map_err(|e| io::Error::other(format!("upstream {upstream:?}: {e}")))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            rng: Mutex::new(Rng::new(config.seed)),
            config,
            upstream,
            log: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let stop = stop.clone();
            let shared = shared.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = handle(&shared, conn);
                    });
                }
            })
        };
        Ok(Self {
            port,
            stop,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request seen so far with its fault, in arrival order.
    pub fn log(&self) -> Vec<(String, Fault)> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Number of requests that got a fault.
    pub fn faults_injected(&self) -> usize {
        self.log().iter().filter(|(_, f)| *f != Fault::None).count()
    }

    /// One line per fault kind: `kind=count`.
    pub fn summary(&self) -> String {
        let mut counts = std::collections::BTreeMap::new();
        for (_, f) in self.log() {
            *counts.entry(f).or_insert(0usize) += 1;
        }
        counts
            .iter()
            .map(|(f, n)| format!("{f:?}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Closes with RST instead of FIN (SO_LINGER 0), like a crashed peer or a middlebox.
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized, initialised `linger` value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads until the end of an HTTP head; returns (head, bytes read after it).
fn read_head(stream: &mut TcpStream) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = find_head_end(&buf) {
            let rest = buf.split_off(end);
            return Ok(Some((buf, rest)));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Err(io::Error::other("HTTP head too large"));
        }
    }
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn reply(mut client: TcpStream, status: &str, extra: &str) {
    let body = format!("{{\"errors\":[{{\"code\":\"FAULT\",\"message\":\"injected {status}\"}}]}}");
    let _ = write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Both);
}

fn handle(shared: &Shared, mut client: TcpStream) -> io::Result<()> {
    let Some((head, mut body)) = read_head(&mut client)? else {
        return Ok(());
    };
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let request_line = head_text.lines().next().unwrap_or_default().to_string();
    let method = request_line
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    if header_value(&head_text, "transfer-encoding").is_some() {
        reply(client, "501 Not Implemented", "");
        return Ok(());
    }
    let length: usize = header_value(&head_text, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(1 << 20)];
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }

    let (fault, cut) = {
        let mut rng = shared.rng.lock().unwrap();
        let fault = if rng.unit() < shared.config.fault_rate {
            match FAULTS[(rng.next() % FAULTS.len() as u64) as usize] {
                Fault::Truncate if method != "GET" => Fault::Status503,
                f => f,
            }
        } else {
            Fault::None
        };
        (fault, rng.unit())
    };
    shared
        .log
        .lock()
        .unwrap()
        .push((request_line.clone(), fault));

    match fault {
        Fault::Status500 => {
            reply(client, "500 Internal Server Error", "");
            return Ok(());
        }
        Fault::Status503 => {
            reply(client, "503 Service Unavailable", "");
            return Ok(());
        }
        Fault::TooManyRequests => {
            let extra = format!("Retry-After: {}\r\n", shared.config.retry_after_secs);
            reply(client, "429 Too Many Requests", &extra);
            return Ok(());
        }
        Fault::ResetBefore => {
            reset(client);
            return Ok(());
        }
        _ => {}
    }

    // Forward with Connection: close, so the registry closes after its answer.
    let mut forwarded = Vec::with_capacity(head.len() + 20);
    for (i, line) in head_text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0
            && line
                .split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        forwarded.extend_from_slice(line.as_bytes());
        forwarded.extend_from_slice(b"\r\n");
    }
    forwarded.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect(shared.upstream)?;
    upstream.write_all(&forwarded)?;
    upstream.write_all(&body)?;

    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    match fault {
        Fault::ResetAfter => reset(client),
        Fault::Stall => {
            let half = answer.len() / 2;
            client.write_all(&answer[..half])?;
            client.flush()?;
            std::thread::sleep(shared.config.stall);
            client.write_all(&answer[half..])?;
        }
        Fault::Truncate => {
            let end = find_head_end(&answer).unwrap_or(answer.len());
            let body_len = answer.len() - end;
            if body_len == 0 {
                client.write_all(&answer)?;
            } else {
                let keep = end + ((body_len as f64 * cut) as usize).min(body_len - 1);
                client.write_all(&answer[..keep])?;
                client.flush()?;
                reset(client);
            }
        }
        _ => client.write_all(&answer)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server answering every request with `body`.
    fn server(body: &'static [u8]) -> (String, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            for c in l.incoming().take(64) {
                let mut c = c.unwrap();
                let _ = read_head(&mut c);
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(body);
            }
        });
        (addr, t)
    }

    fn get(host: &str) -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(host)?;
        write!(
            s,
            "GET /v2/x HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n"
        )?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn same_seed_same_faults_and_clean_passthrough() {
        let (upstream, _t) = server(b"hello world");
        let clean = FaultProxy::start(&upstream, FaultConfig::new(7, 0.0)).unwrap();
        let answer = get(&clean.host()).unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        assert!(answer.ends_with(b"hello world"));
        assert_eq!(clean.faults_injected(), 0);

        let mut runs = Vec::new();
        for _ in 0..2 {
            let mut config = FaultConfig::new(42, 1.0);
            config.stall = Duration::from_millis(10);
            let p = FaultProxy::start(&upstream, config).unwrap();
            for _ in 0..12 {
                let a = get(&p.host()).unwrap_or_default();
                let f = p.log().last().unwrap().1;
                match f {
                    Fault::Status500 => assert!(a.starts_with(b"HTTP/1.1 500")),
                    Fault::Status503 => assert!(a.starts_with(b"HTTP/1.1 503")),
                    Fault::TooManyRequests => {
                        assert!(String::from_utf8_lossy(&a).contains("Retry-After: 1"))
                    }
                    Fault::ResetBefore | Fault::ResetAfter => assert!(a.is_empty()),
                    Fault::Stall => assert!(a.ends_with(b"hello world")),
                    Fault::Truncate => assert!(!a.ends_with(b"hello world")),
                    Fault::None => unreachable!("rate 1.0"),
                }
            }
            runs.push(p.log());
        }
        assert_eq!(runs[0], runs[1]);
        assert!(
            runs[0]
                .iter()
                .map(|(_, f)| *f)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 3
        );
    }
}
