//! `hostile`: an HTTP/1.1 server on 127.0.0.1 whose every answer is chosen by the test, to play
//! a hostile or broken registry (or token server): endless and giant bodies, one byte at a
//! time, declared lengths it never sends, loops of `Link`s, answers that never come. It records
//! every request it received, headers included, so a test can prove which credentials reached
//! which host.
//!
//! One request per connection (`Connection: close` on every answer): plain threads, no async,
//! so a misbehaving answer never holds up another connection.
//!
//! ```ignore
//! let server = HostileServer::start(|req: &Request| match req.path.as_str() {
//!     "/v2/" => Reply::status(200),
//!     _ => Reply::endless(b"x".repeat(64 << 10)),
//! })?;
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target, query included (`/v2/repo/tags/list?n=10`).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without its query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

#[derive(Debug, Clone)]
enum Body {
    Fixed(Vec<u8>),
    /// Chunked, this chunk again and again until the client goes away (or the server stops).
    Endless(Vec<u8>),
    /// `Content-Length` of these bytes, sent one byte every `every`.
    Drip(Vec<u8>, Duration),
    /// `Content-Length: declared`, then `sent` and silence until the client goes away.
    Short {
        declared: u64,
        sent: Vec<u8>,
    },
}

/// An answer. Without a body it is empty with `Content-Length: 0`.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    /// Close the connection without writing anything.
    hang_up: bool,
    /// Wait this long before the first byte of the answer.
    delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Fixed(Vec::new()),
            hang_up: false,
            delay: Duration::ZERO,
        }
    }

    /// `200` with a JSON body and its content type.
    pub fn json(value: &serde_json::Value) -> Self {
        Self::status(200)
            .header("Content-Type", "application/json")
            .body(value.to_string())
    }

    /// `200` with a body that never ends (chunked), made of `chunk` repeated.
    pub fn endless(chunk: impl Into<Vec<u8>>) -> Self {
        let mut chunk = chunk.into();
        if chunk.is_empty() {
            chunk.push(b'x');
        }
        Self {
            body: Body::Endless(chunk),
            ..Self::status(200)
        }
    }

    /// The connection is closed without an answer.
    pub fn close() -> Self {
        Self {
            hang_up: true,
            ..Self::status(200)
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Fixed(bytes.into());
        self
    }

    /// These bytes, one every `every`, with their true `Content-Length`.
    pub fn drip(mut self, bytes: impl Into<Vec<u8>>, every: Duration) -> Self {
        self.body = Body::Drip(bytes.into(), every);
        self
    }

    /// Declares `declared` bytes, sends the body set so far (if any), then stays silent.
    pub fn declared_length(mut self, declared: u64) -> Self {
        let sent = match std::mem::replace(&mut self.body, Body::Fixed(Vec::new())) {
            Body::Fixed(b) | Body::Drip(b, _) | Body::Short { sent: b, .. } => b,
            Body::Endless(_) => Vec::new(),
        };
        self.body = Body::Short { declared, sent };
        self
    }

    /// Waits this long before answering at all.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    requests: Mutex<Vec<Request>>,
    stop: AtomicBool,
    bytes_sent: AtomicU64,
}

/// The server; stops (and ends every answer still being written) on drop.
pub struct HostileServer {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl HostileServer {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            bytes_sent: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &shared);
                    });
                }
            })
        };
        Ok(Self {
            port,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request received so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Body bytes written so far, over all answers.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::Relaxed)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

const MAX_HEAD: usize = 64 << 10;
const MAX_REQUEST_BODY: usize = 64 << 20;

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other(format!("bad request line {line:?}")));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    let mut head_size = line.len();
    loop {
        let mut h = String::new();
        head_size += reader.read_line(&mut h)?;
        if head_size > MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let body = if let Some(len) = request.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::other("bad content-length"))?;
        if len > MAX_REQUEST_BODY {
            return Err(io::Error::other("request body too large"));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    } else if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        read_chunked(reader)?
    } else {
        Vec::new()
    };
    Ok(Some(Request { body, ..request }))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::other("bad chunk size"))?;
        if body.len() + size > MAX_REQUEST_BODY {
            return Err(io::Error::other("request body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = String::new();
        reader.read_line(&mut crlf)?;
        if size == 0 {
            return Ok(body);
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(request) = read_request(&mut reader)? else {
        return Ok(());
    };
    let reply = (shared.handler)(&request);
    shared.requests.lock().unwrap().push(request);
    let mut out = stream;
    if !reply.delay.is_zero() && !sleep_unless_stopped(reply.delay, shared) {
        return Ok(());
    }
    if reply.hang_up {
        let _ = out.shutdown(Shutdown::Both);
        return Ok(());
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &reply.body {
        Body::Fixed(b) | Body::Drip(b, _) => {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()))
        }
        Body::Short { declared, .. } => head.push_str(&format!("Content-Length: {declared}\r\n")),
        Body::Endless(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("Connection: close\r\n\r\n");
    out.write_all(head.as_bytes())?;
    let sent = |n: usize| {
        shared.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    };
    match &reply.body {
        Body::Fixed(b) => {
            out.write_all(b)?;
            sent(b.len());
        }
        Body::Drip(b, every) => {
            for byte in b {
                out.write_all(std::slice::from_ref(byte))?;
                out.flush()?;
                sent(1);
                if !sleep_unless_stopped(*every, shared) {
                    return Ok(());
                }
            }
        }
        Body::Short { sent: b, .. } => {
            out.write_all(b)?;
            out.flush()?;
            sent(b.len());
            // Silence until the client gives up (its read fails ours with a reset) or we stop.
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                let mut probe = [0u8; 1];
                out.set_read_timeout(Some(Duration::from_millis(1)))?;
                match out.read(&mut probe) {
                    Ok(0) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                    _ => return Ok(()),
                }
            }
        }
        Body::Endless(chunk) => {
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            while !shared.stop.load(Ordering::SeqCst) {
                out.write_all(&framed)?;
                sent(chunk.len());
            }
        }
    }
    out.flush()?;
    let _ = out.shutdown(Shutdown::Write);
    Ok(())
}

/// Sleeps in small steps; false when the server stopped meanwhile.
fn sleep_unless_stopped(total: Duration, shared: &Shared) -> bool {
    let until = Instant::now() + total;
    while Instant::now() < until {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    true
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(host: &str, path: &str, auth: Option<&str>) -> io::Result<(String, Vec<u8>)> {
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n")?;
        let mut all = Vec::new();
        s.read_to_end(&mut all)?;
        let split = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| io::Error::other("no head"))?;
        Ok((
            String::from_utf8_lossy(&all[..split]).into_owned(),
            all[split + 4..].to_vec(),
        ))
    }

    #[test]
    fn answers_as_told_and_records_headers() {
        let server = HostileServer::start(|req| match req.path_only() {
            "/v2/" => Reply::status(401).header("WWW-Authenticate", "Basic realm=\"x\""),
            _ => Reply::status(200).body("hello"),
        })
        .unwrap();
        let (head, _) = get(&server.host(), "/v2/", None).unwrap();
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        assert!(head.contains("WWW-Authenticate: Basic"), "{head}");
        let (head, body) = get(&server.host(), "/v2/a/manifests/x?q=1", Some("Basic abc")).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"hello");
        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].header("authorization"), None);
        assert_eq!(seen[1].header("Authorization"), Some("Basic abc"));
        assert_eq!(seen[1].path, "/v2/a/manifests/x?q=1");
        assert_eq!(seen[1].path_only(), "/v2/a/manifests/x");
    }

    #[test]
    fn an_endless_body_goes_on_until_the_client_leaves() {
        let server = HostileServer::start(|_| Reply::endless(vec![b'z'; 4096])).unwrap();
        let mut s = TcpStream::connect(server.host()).unwrap();
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        // The client reads the framing too (head, chunk sizes, CRLFs: 8 bytes per 4 KiB chunk)
        // while the server counts payload only, so read 9 MiB to have sent at least 8.
        while got < 9 << 20 {
            got += s.read(&mut buf).unwrap();
        }
        drop(s);
        // The server counts a chunk once its write returns, which may be just after the client
        // has read it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while server.bytes_sent() < 8 << 20 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(server.bytes_sent() >= 8 << 20, "{}", server.bytes_sent());
    }

    #[test]
    fn a_drip_sends_one_byte_at_a_time() {
        let server = HostileServer::start(|_| {
            Reply::status(200).drip(b"abcd".to_vec(), Duration::from_millis(100))
        })
        .unwrap();
        let started = Instant::now();
        let (head, body) = get(&server.host(), "/", None).unwrap();
        assert!(head.contains("Content-Length: 4"), "{head}");
        assert_eq!(body, b"abcd");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn a_short_body_declares_more_than_it_sends() {
        let server =
            HostileServer::start(|_| Reply::status(200).body("ab").declared_length(1 << 40))
                .unwrap();
        let mut s = TcpStream::connect(server.host()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut all = Vec::new();
        let err = s.read_to_end(&mut all).unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        let text = String::from_utf8_lossy(&all);
        assert!(text.contains("Content-Length: 1099511627776"), "{text}");
        assert!(text.ends_with("\r\n\r\nab"), "{text}");
    }

    #[test]
    fn an_http_client_reads_json_and_chunked_answers() {
        let server = HostileServer::start(|req| match req.path_only() {
            "/json" => Reply::json(&serde_json::json!({"token": "t"})),
            _ => Reply::endless(vec![b'y'; 1000]),
        })
        .unwrap();
        let client = reqwest::blocking::Client::new();
        let json = client
            .get(format!("http://{}/json", server.host()))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["token"], "t");
        let mut endless = client
            .get(format!("http://{}/endless", server.host()))
            .send()
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < 1 << 20 {
            got += endless.read(&mut buf).unwrap();
        }
        assert!(got >= 1 << 20);
    }

    #[test]
    fn close_answers_nothing() {
        let server = HostileServer::start(|_| Reply::close()).unwrap();
        let err = get(&server.host(), "/", None);
        assert!(err.is_err() || err.unwrap().0.is_empty());
        assert_eq!(server.requests().len(), 1);
    }
}
