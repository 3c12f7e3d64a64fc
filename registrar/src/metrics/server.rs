//! The metrics HTTP endpoint: a plain `std` TCP listener on its own thread answering
//! `GET /metrics` with the exposition, one connection at a time, each bounded in size and time
//! so that a hostile or broken client can neither stop nor stall it for long.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{ProcessInfo, WorkerMetrics, render};

/// Largest request head read; a longer one is answered with 431.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its request head, and again to take the response.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Longest single blocking read or write, so that a stop request is noticed promptly.
const STEP: Duration = Duration::from_millis(50);
/// Pause after an accept that failed (out of descriptors and the like) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// Time spent discarding what a client still sends after the response, before closing.
const LINGER: Duration = Duration::from_millis(100);

/// Serves `GET /metrics` (and `GET /` with a short text pointing at `/metrics`; other paths 404,
/// other methods 405) from a plain std `TcpListener` on its own thread. Dropping it stops it too.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    /// Blocking: the thread sleeps in `accept` until a client comes or the listener is shut
    /// down to stop it (no polling while idle).
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and starts the serving thread. With `token`, `GET /metrics` needs the
    /// header `Authorization: Bearer <token>` (else 401).
    pub fn start(
        addr: SocketAddr,
        workers: Vec<Arc<WorkerMetrics>>,
        info: ProcessInfo,
        token: Option<String>,
    ) -> io::Result<MetricsServer> {
        let listener = Arc::new(TcpListener::bind(addr)?);
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let serving = Arc::clone(&listener);
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&serving, &workers, &info, token.as_deref(), &flag))?;
        tracing::info!(%local_addr, "metrics endpoint listening");
        Ok(MetricsServer {
            local_addr,
            listener,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the serving thread and waits for it; returns within about a tenth of a second, even
    /// with a client connected.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Signals the thread and joins it, once. Shutting the listening socket down wakes an
    /// `accept` that waits (Linux fails it with `EINVAL`).
    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.is_some()
            && let Err(e) = socket2::SockRef::from(&*self.listener).shutdown(Shutdown::Both)
        {
            tracing::warn!(error = %e, "cannot wake the metrics endpoint's accept");
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("metrics endpoint thread panicked");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The accept loop: waits in `accept` until told to stop.
fn serve(
    listener: &TcpListener,
    workers: &[Arc<WorkerMetrics>],
    info: &ProcessInfo,
    token: Option<&str>,
    stop: &AtomicBool,
) {
    let mut body = String::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = handle(stream, workers, info, token, stop, &mut body) {
                    tracing::debug!(%peer, error = %e, "metrics client");
                }
            }
            Err(_) if stop.load(Ordering::Relaxed) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint accept");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// What a request head asked for, by the answer it gets. `HEAD` gets the same status and
/// headers as `GET`, without the body.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics`.
    Metrics,
    /// `GET /`.
    Index,
    /// `GET /healthz`: the process serves (200).
    Health,
    /// `GET /readyz`: 200 once every worker runs and the ENRP start-up is over, else 503.
    Ready,
    /// `GET` of another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP request line.
    BadRequest,
    /// No end of the head within [`MAX_REQUEST`] bytes.
    TooLarge,
    /// `GET /metrics` without the bearer token the endpoint requires.
    Unauthorized,
}

/// Serves one connection: reads the request head, answers, closes.
fn handle(
    mut stream: TcpStream,
    workers: &[Arc<WorkerMetrics>],
    info: &ProcessInfo,
    token: Option<&str>,
    stop: &AtomicBool,
    body: &mut String,
) -> io::Result<()> {
    // Accepted sockets inherit non-blocking mode on some systems.
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let Some((request, head_only)) = read_request(&mut stream, token, stop)? else {
        return Ok(());
    };
    body.clear();
    let (status, extra) = match request {
        Route::Health => {
            body.push_str("ok\n");
            ("200 OK", "")
        }
        Route::Ready if workers.iter().all(|w| w.ready()) => {
            body.push_str("ready\n");
            ("200 OK", "")
        }
        Route::Ready => {
            body.push_str(
                "not ready: workers starting, or loading the handlespace from a mentor (ENRP \
                 start-up)\n",
            );
            ("503 Service Unavailable", "")
        }
        Route::Metrics => {
            render(workers, info, body);
            super::process::render(body, info.started_unix_secs);
            ("200 OK", "")
        }
        Route::Index => {
            body.push_str(
                "RSerPool registrar: GET /metrics, /healthz (alive), /readyz (serving)\n",
            );
            ("200 OK", "")
        }
        Route::NotFound => {
            body.push_str("not found; metrics are at /metrics\n");
            ("404 Not Found", "")
        }
        Route::MethodNotAllowed => {
            body.push_str("only GET and HEAD are supported\n");
            ("405 Method Not Allowed", "Allow: GET, HEAD\r\n")
        }
        Route::BadRequest => {
            body.push_str("bad request\n");
            ("400 Bad Request", "")
        }
        Route::TooLarge => {
            body.push_str("request too large\n");
            ("431 Request Header Fields Too Large", "")
        }
        Route::Unauthorized => {
            body.push_str(
                "the metrics need `Authorization: Bearer <token>` (metrics.bearer_token_file)\n",
            );
            ("401 Unauthorized", "WWW-Authenticate: Bearer\r\n")
        }
    };
    let content_type = if request == Route::Metrics {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n",
        body.len()
    );
    let deadline = Instant::now() + CLIENT_DEADLINE;
    write_all(&mut stream, head.as_bytes(), deadline, stop)?;
    if !head_only {
        write_all(&mut stream, body.as_bytes(), deadline, stop)?;
    }
    stream.shutdown(Shutdown::Write)?;
    linger(&mut stream);
    Ok(())
}

/// Reads a request head and classifies it; `None` if the client went away, took too long or the
/// server is stopping.
fn read_request(
    stream: &mut TcpStream,
    token: Option<&str>,
    stop: &AtomicBool,
) -> io::Result<Option<(Route, bool)>> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            let (route, head_only) = classify(&buf[..end]);
            return Ok(Some((authorize(route, &buf[..end], token), head_only)));
        }
        if len == buf.len() {
            return Ok(Some((Route::TooLarge, false)));
        }
        if !wait_step(stream, deadline, stop, TcpStream::set_read_timeout)? {
            return Ok(None);
        }
        match stream.read(&mut buf[len..]) {
            // The client finished sending: answer a complete request line, else give up.
            Ok(0) => {
                let line_complete = buf[..len].contains(&b'\n');
                return Ok(line_complete.then(|| {
                    let (route, head_only) = classify(&buf[..len]);
                    (authorize(route, &buf[..len], token), head_only)
                }));
            }
            Ok(n) => len += n,
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data` before `deadline`, in steps short enough to notice a stop request.
fn write_all(
    stream: &mut TcpStream,
    mut data: &[u8],
    deadline: Instant,
    stop: &AtomicBool,
) -> io::Result<()> {
    while !data.is_empty() {
        if !wait_step(stream, deadline, stop, TcpStream::set_write_timeout)? {
            return Err(io::Error::new(ErrorKind::TimedOut, "client too slow"));
        }
        match stream.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sets the next blocking step's timeout to at most [`STEP`]; false once the deadline passed or
/// the server is stopping.
fn wait_step(
    stream: &TcpStream,
    deadline: Instant,
    stop: &AtomicBool,
    set_timeout: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
) -> io::Result<bool> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || stop.load(Ordering::Relaxed) {
        return Ok(false);
    }
    set_timeout(stream, Some(left.min(STEP)))?;
    Ok(true)
}

/// Whether an I/O error only means "try again" (a step timed out or a signal arrived).
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Discards what the client still sends, briefly, so that closing with unread data does not
/// reset the connection before the client has read the response.
fn linger(stream: &mut TcpStream) {
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 1024];
    let mut budget = 64 * 1024;
    while budget > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(n) => budget -= n.min(budget),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The length of the request head up to and including the blank line, if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `GET /metrics` becomes [`Route::Unauthorized`] when `token` is set and the head has no
/// `Authorization: Bearer <token>` header (compared in constant time).
fn authorize(route: Route, head: &[u8], token: Option<&str>) -> Route {
    let Some(token) = token else {
        return route;
    };
    if route != Route::Metrics {
        return route;
    }
    let presented = head
        .split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| {
            let value = value.trim();
            let (scheme, credentials) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| credentials.trim())
        });
    let matches = presented.is_some_and(|p| {
        p.len() == token.len()
            && p.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches { route } else { Route::Unauthorized }
}

/// Classifies a request head by its request line `METHOD SP target SP HTTP/x.y`; whether it
/// is a `HEAD` (headers only).
fn classify(head: &[u8]) -> (Route, bool) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return (Route::BadRequest, false);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (Route::BadRequest, false);
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'#$%&+^`|".contains(&b))
    };
    if !token(method) || !version.starts_with("HTTP/") || target.is_empty() {
        return (Route::BadRequest, false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (Route::MethodNotAllowed, false);
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let route = match path {
        "/metrics" => Route::Metrics,
        "/" => Route::Index,
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        _ => Route::NotFound,
    };
    (route, head_only)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rserpool_protocol::asap::message_type as asap;

    fn info() -> ProcessInfo {
        ProcessInfo {
            pr_id: 7,
            version: "test",
            started_unix_secs: 1,
            driver: "epoll",
        }
    }

    fn start() -> (MetricsServer, Arc<WorkerMetrics>) {
        let worker = Arc::new(WorkerMetrics::new(0));
        let server = MetricsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            vec![Arc::clone(&worker)],
            info(),
            None,
        )
        .unwrap();
        (server, worker)
    }

    #[test]
    fn a_bearer_token_guards_the_metrics_and_nothing_else() {
        let worker = Arc::new(WorkerMetrics::new(0));
        let server = MetricsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            vec![worker],
            info(),
            Some("s3cret-token".into()),
        )
        .unwrap();
        let addr = server.local_addr();
        let (status, headers, body) = split(get(addr, "/metrics"));
        assert_eq!(status, "HTTP/1.1 401 Unauthorized");
        assert!(headers.contains("WWW-Authenticate: Bearer"), "{headers}");
        assert!(!body.contains("rserpool_"), "{body}");
        for wrong in ["Bearer s3cret-tokem", "Bearer s3cret", "Basic s3cret-token"] {
            let request = format!("GET /metrics HTTP/1.1\r\nAuthorization: {wrong}\r\n\r\n");
            let (status, _, _) = split(exchange(addr, request.as_bytes()));
            assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{wrong}");
        }
        let request =
            "GET /metrics HTTP/1.1\r\nHost: x\r\nauthorization:  bearer s3cret-token\r\n\r\n";
        let (status, _, body) = split(exchange(addr, request.as_bytes()));
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("rserpool_"), "{body}");
        let (status, _, _) = split(get(addr, "/"));
        assert_eq!(status, "HTTP/1.1 200 OK", "the index tells nothing");
        server.stop();
    }

    /// Sends `request` raw and returns the whole response.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
        )
    }

    /// Splits a response into status line, headers and body, checking `Content-Length`.
    fn split(response: String) -> (String, String, String) {
        let (head, body) = response.split_once("\r\n\r\n").expect("no end of head");
        let (status, headers) = head.split_once("\r\n").unwrap();
        let length: usize = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("no Content-Length")
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        assert!(headers.contains("Connection: close"), "{headers}");
        (status.to_owned(), headers.to_owned(), body.to_owned())
    }

    #[test]
    fn get_metrics_returns_the_exposition() {
        let (server, worker) = start();
        worker.registration(None);
        worker.message_in(crate::metrics::Protocol::Asap, asap::REGISTRATION);
        let response = get(server.local_addr(), "/metrics");
        let (status, headers, body) = split(response);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("Content-Type: text/plain; version=0.0.4"),
            "{headers}"
        );
        assert!(
            body.contains("rserpool_registrations_total{result=\"accepted\"} 1\n"),
            "{body}"
        );
        assert!(body.contains(
            "rserpool_messages_received_total{protocol=\"asap\",type=\"registration\"} 1\n"
        ));
        let mut expected = String::new();
        render(&[worker], &info(), &mut expected);
        let (registrar, process) = body.split_at(expected.len());
        assert_eq!(registrar, expected);
        assert!(process.starts_with("# HELP process_"), "{process}");
        server.stop();
    }

    #[test]
    fn index_not_found_and_wrong_method() {
        let (server, _worker) = start();
        let addr = server.local_addr();
        let (status, _, body) = split(get(addr, "/"));
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("/metrics"));
        let (status, _, _) = split(get(addr, "/metrics?x=1"));
        assert_eq!(status, "HTTP/1.1 200 OK");
        let (status, _, _) = split(get(addr, "/other"));
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let response = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        );
        let (status, headers, _) = split(response);
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        assert!(headers.contains("Allow: GET"));
        let (status, _, _) = split(exchange(addr, b"GARBAGE\r\n\r\n"));
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        server.stop();
    }

    #[test]
    fn hostile_clients_do_not_stop_the_server() {
        let (server, _worker) = start();
        let addr = server.local_addr();

        // Garbage without an end of head, more than the limit.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let junk = vec![b'x'; MAX_REQUEST + 100];
        // The server may close before taking it all; only the answer matters.
        let _ = s.write_all(&junk);
        let mut response = String::new();
        let _ = s.read_to_string(&mut response);
        assert!(
            response.is_empty() || response.starts_with("HTTP/1.1 431 "),
            "{response}"
        );
        drop(s);

        // Binary garbage, then hang up.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&[0xff, 0x00, 0xfe, b'\n', b'\n']).unwrap();
        drop(s);

        // Connect and send nothing: the server gives up after its deadline.
        let silent = TcpStream::connect(addr).unwrap();
        // Connect and hang up at once.
        drop(TcpStream::connect(addr).unwrap());

        let started = Instant::now();
        let (status, _, body) = split(get(addr, "/metrics"));
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("# TYPE rserpool_pools gauge"));
        assert!(started.elapsed() < CLIENT_DEADLINE * 3);
        drop(silent);
        server.stop();
    }

    /// The thread sleeps in a blocking `accept` while no client comes (no polling); stopping
    /// it wakes that `accept`.
    #[test]
    fn stop_wakes_the_idle_accept() {
        let (server, _worker) = start();
        thread::sleep(Duration::from_millis(60));
        let (done, stopped) = std::sync::mpsc::channel();
        let started = Instant::now();
        thread::spawn(move || {
            server.stop();
            let _ = done.send(());
        });
        assert!(
            stopped.recv_timeout(Duration::from_secs(5)).is_ok(),
            "stop did not return: the accept was not woken"
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn stop_returns_promptly_even_with_a_client_connected() {
        let (server, _worker) = start();
        let addr = server.local_addr();
        let silent = TcpStream::connect(addr).unwrap();
        // Let the server accept it and block reading.
        thread::sleep(Duration::from_millis(60));
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < Duration::from_millis(500));
        drop(silent);
    }

    #[test]
    fn requests_are_classified() {
        let route = |head: &[u8]| classify(head).0;
        assert_eq!(
            classify(b"GET /metrics HTTP/1.0\r\n"),
            (Route::Metrics, false)
        );
        assert_eq!(route(b"GET / HTTP/1.1\n"), Route::Index);
        assert_eq!(route(b"GET /metricsx HTTP/1.1"), Route::NotFound);
        assert_eq!(classify(b"HEAD /metrics HTTP/1.1"), (Route::Metrics, true));
        assert_eq!(route(b"GET /healthz HTTP/1.1"), Route::Health);
        assert_eq!(route(b"HEAD /readyz?x HTTP/1.1"), Route::Ready);
        assert_eq!(route(b"PUT /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics"), Route::BadRequest);
        assert_eq!(route(b"GET  /metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics FTP/1.1"), Route::BadRequest);
        assert_eq!(route(b"G\"T /metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(route(b"\xff /metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
