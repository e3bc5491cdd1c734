//! A small HTTP/1.1 server on `std::net`, enough for one page, its JSON and its controls.
//!
//! Hand-written rather than a framework: the dashboard needs a handful of routes on a
//! loopback port, and every crate that serves HTTP brings an async runtime or dozens of
//! dependencies into a tool that must be easy to build on a NAS. What a server facing a
//! browser must bound is bounded here: the request head (8 KiB), the body (16 KiB), the time
//! a client may take to send or receive (5 s), and the connections served at once (32). One
//! request per connection (`Connection: close`); no chunked bodies.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The longest request line and headers accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// How long a client may take to send its whole request, or to take our answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 32;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, undecoded, without the `?`.
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header of this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// A plain-text error or message.
    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{text}\n"))
    }

    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n\
             Content-Security-Policy: default-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'none'\r\nConnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        out.write_all(head.as_bytes())?;
        out.write_all(&self.body)?;
        out.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Why a request could not be read, as the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub Response);

/// Reads one request from `input`, within the bounds above.
pub fn read_request(input: &mut impl Read) -> Result<Request, BadRequest> {
    let bad = |status, text: &str| BadRequest(Response::text(status, text));
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(bad(431, "request head too large"));
        }
        match input.read(&mut chunk) {
            Ok(0) => return Err(bad(400, "request cut short")),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(bad(408, "request not sent in time"));
            }
            Err(_) => return Err(bad(400, "request unreadable")),
        }
    };
    if head_end > MAX_HEAD_BYTES {
        return Err(bad(431, "request head too large"));
    }
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| bad(400, "head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(400, "HTTP/1.x only"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(400, "malformed method"));
    }
    if !target.starts_with('/') {
        return Err(bad(400, "the target must be a path"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(400, "malformed header"));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: Vec::new(),
    };
    if request.header("transfer-encoding").is_some() {
        return Err(bad(501, "chunked bodies are not accepted"));
    }
    let length = match request.header("content-length") {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| bad(400, "bad Content-Length"))?,
    };
    if length > MAX_BODY_BYTES {
        return Err(bad(413, "request body too large"));
    }
    let mut body = buffer.split_off(head_end + 4);
    if body.len() > length {
        body.truncate(length);
    }
    while body.len() < length {
        match input.read(&mut chunk) {
            Ok(0) => return Err(bad(400, "body cut short")),
            Ok(n) => body.extend_from_slice(&chunk[..n.min(length - body.len())]),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(bad(408, "body not sent in time"));
            }
            Err(_) => return Err(bad(400, "body unreadable")),
        }
    }
    request.body = body;
    Ok(request)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serves `listener` until `stop` says so, each connection on a thread of its own, at most
/// [`MAX_CONNECTIONS`] at once. Accepting blocks; a watcher sees `stop` within 100 ms and
/// wakes the accept by connecting to it.
pub fn serve(
    listener: &TcpListener,
    handler: Arc<dyn Fn(&Request) -> Response + Send + Sync>,
    stop: &(dyn Fn() -> bool + Sync),
    io_timeout: Duration,
) -> io::Result<()> {
    let mut address = listener.local_addr()?;
    if address.ip().is_unspecified() {
        // Listening everywhere: wake it through loopback.
        address.set_ip(match address {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                if stop() {
                    done.store(true, Ordering::Release);
                    let _ = TcpStream::connect_timeout(&address, Duration::from_secs(1));
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let served = accept_until(listener, &handler, &done, io_timeout);
        done.store(true, Ordering::Release);
        served
    })
}

fn accept_until(
    listener: &TcpListener,
    handler: &Arc<dyn Fn(&Request) -> Response + Send + Sync>,
    done: &AtomicBool,
    io_timeout: Duration,
) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if done.load(Ordering::Acquire) {
            return Ok(());
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // A connection reset before we took it, or out of descriptors for a moment.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = prepare(&stream, io_timeout).and_then(|()| {
                Response::text(503, "busy: too many connections").write_to(&mut &stream)
            });
            continue;
        }
        let (handler, finished) = (Arc::clone(handler), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                let _ = handle(stream, handler.as_ref(), io_timeout);
                finished.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            // The thread never ran, so it never gave its place back.
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn prepare(stream: &TcpStream, io_timeout: Duration) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))
}

/// Reads from a connection until a deadline for the whole request, however the client
/// trickles its bytes.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self
            .until
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

fn handle(
    stream: TcpStream,
    handler: &(dyn Fn(&Request) -> Response + Send + Sync),
    io_timeout: Duration,
) -> io::Result<()> {
    prepare(&stream, io_timeout)?;
    let mut reader = Deadline {
        stream: &stream,
        until: Instant::now() + io_timeout,
    };
    let response = match read_request(&mut reader) {
        Ok(request) => handler(&request),
        Err(BadRequest(response)) => response,
    };
    let mut writer = &stream;
    response.write_to(&mut writer)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Request, u16> {
        read_request(&mut &bytes[..]).map_err(|BadRequest(r)| r.status)
    }

    #[test]
    fn requests_are_parsed_with_their_query_headers_and_body() {
        let request = parse(
            b"POST /api/retry?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Token: abc\r\n\
              Content-Length: 11\r\n\r\n{\"file\":\"a\"}extra",
        )
        .unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(
            (request.path.as_str(), request.query.as_str()),
            ("/api/retry", "x=1")
        );
        assert_eq!(request.header("x-token"), Some("abc"));
        assert_eq!(request.header("host"), Some("127.0.0.1:8080"));
        assert_eq!(request.body, b"{\"file\":\"a\"");
    }

    #[test]
    fn oversized_malformed_and_cut_requests_are_refused() {
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(vec![b'a'; MAX_HEAD_BYTES + 10]);
        huge.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&huge), Err(431));
        let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
        endless.extend(vec![b'a'; 3 * MAX_HEAD_BYTES]);
        assert_eq!(
            parse(&endless),
            Err(431),
            "no end of head is ever waited for"
        );
        let too_long = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(parse(too_long.as_bytes()), Err(413));
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            Err(400)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(501)
        );
        assert_eq!(parse(b"GET /\r\n\r\n"), Err(400));
        assert_eq!(parse(b"GET http://evil/ HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(parse(b"GET / SPDY/3\r\n\r\n"), Err(400));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"), Err(400));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(400));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(400)
        );
    }

    #[test]
    fn a_client_that_trickles_its_request_is_cut_off_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        let handler: Arc<dyn Fn(&Request) -> Response + Send + Sync> =
            Arc::new(|_: &Request| Response::text(200, "ok"));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                serve(
                    &listener,
                    handler,
                    &|| stop.load(Ordering::Acquire),
                    Duration::from_millis(600),
                )
            });
            // The server stops however the checks below end, or the scope would wait for ever.
            struct StopOnDrop<'a>(&'a AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _stop = StopOnDrop(&stop);
            // A byte every 200 ms never lets a per-read timeout of 600 ms expire.
            let mut slow = TcpStream::connect(address).unwrap();
            slow.set_read_timeout(Some(Duration::from_millis(10)))
                .unwrap();
            let started = Instant::now();
            let mut answer = Vec::new();
            let mut chunk = [0u8; 256];
            for byte in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                // The answer is taken as soon as it comes, before the next byte could make
                // the closed connection reset.
                match slow.read(&mut chunk) {
                    Ok(n) if n > 0 => {
                        answer.extend_from_slice(&chunk[..n]);
                        break;
                    }
                    _ => {}
                }
                if slow.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(3) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            slow.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            while let Ok(n) = slow.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&chunk[..n]);
            }
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
            // A prompt client is still served.
            let mut quick = TcpStream::connect(address).unwrap();
            quick.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut answer = String::new();
            quick.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        });
    }

    #[test]
    fn responses_carry_their_length_and_close() {
        let mut out = Vec::new();
        Response::text(404, "no such page")
            .write_to(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Length: 13\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nno such page\n"));
    }
}
