//! TLS for the load generator and its echo server (`--tls`, `tcp+tls://` endpoints): a
//! non-blocking stream that reads and writes plaintext over a TLS session, or plain TCP, or
//! ASAP messages over a one-to-one SCTP association (kernel SCTP, or over UDP on a
//! [`crate::sctp_udp::Hub`]) as if they were a byte stream ([`SecureStream`]), and a throwaway PKI that `--tls --spawn` makes for one run (a CA, the
//! registrar's certificate for 127.0.0.1, a client certificate), written to a temporary
//! directory and removed afterwards ([`RunPki`]).

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use rserpool_net::{
    ClientTls, SCTP_BATCH_MAX, SctpClient, SctpRecvBatch, ServerTls, TlsFiles, TlsSession,
};
use rserpool_protocol::PPID_ASAP;
use rserpool_protocol::framing::{Frame, next_frame};

use crate::error::{Error, Result};
use crate::sctp_udp::{Hub, SctpUdpLink};

/// A TCP stream, plain or over TLS, with the `Read` and `Write` of a non-blocking socket: a
/// read that decrypts no plaintext yet is `WouldBlock`; a write takes all the plaintext or,
/// while earlier records still wait for the socket, nothing (`WouldBlock`).
///
/// Or a one-to-one SCTP association ([`SecureStream::sctp`]) that looks like a byte stream of
/// ASAP messages: a read receives whole messages (as many as arrived and fit, each padded to 4
/// bytes as stream framing has them, in one `recvmmsg`), a write sends each whole frame of the
/// buffer as one message with PPID 11 (in one `sendmmsg` per 64) and takes the frames that left.
#[derive(Debug)]
pub struct SecureStream {
    stream: Carrier,
    tls: Option<Box<Session>>,
    /// The socket blocks: a read waits until it has plaintext.
    blocking: bool,
}

/// A TLS session with its buffers.
#[derive(Debug)]
struct Session {
    session: TlsSession,
    /// Decrypted, not yet read.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Records not yet written.
    cipher_out: Vec<u8>,
    cipher_pos: usize,
    /// Socket reads.
    scratch: Box<[u8]>,
}

/// The socket under a [`SecureStream`].
#[derive(Debug)]
enum Carrier {
    Tcp(TcpStream),
    /// An association, with the buffers its reads receive a batch of messages into.
    Sctp(SctpClient, SctpRecvBatch),
    /// An association over UDP, on its client thread's hub.
    SctpUdp(SctpUdpLink),
}

/// The room each message of an SCTP read's batch has (a resolution's answer with a dozen PEs);
/// a longer one comes in parts, put back together in the read's buffer.
const SCTP_MESSAGE_ROOM: usize = 1024;

impl Carrier {
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_nonblocking(nonblocking),
            Self::Sctp(c, _) => c.socket().set_nonblocking(nonblocking),
            Self::SctpUdp(link) => {
                link.set_nonblocking(nonblocking);
                Ok(())
            }
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_read_timeout(timeout),
            Self::Sctp(c, _) => c.socket().set_read_timeout(timeout),
            Self::SctpUdp(link) => {
                link.set_read_timeout(timeout);
                Ok(())
            }
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_write_timeout(timeout),
            Self::Sctp(c, _) => c.socket().set_write_timeout(timeout),
            Self::SctpUdp(link) => {
                link.set_write_timeout(timeout);
                Ok(())
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Self::Tcp(s) => s.local_addr(),
            Self::Sctp(c, _) => {
                c.socket().local_addr()?.as_socket().ok_or_else(|| {
                    io::Error::new(ErrorKind::InvalidData, "not an IP socket address")
                })
            }
            Self::SctpUdp(link) => link.local_addr(),
        }
    }

    fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Self::Tcp(s) => s,
            Self::Sctp(..) | Self::SctpUdp(_) => unreachable!("TLS runs over TCP only"),
        }
    }
}

/// An error that breaks an SCTP association: what arrived is not a message stream framing reads.
fn broken(why: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, why.to_owned())
}

/// The error for an SCTP message whose start came and whose rest did not.
fn cut_off() -> io::Error {
    broken("an SCTP message cut off: its rest did not follow its start")
}

/// Pads the SCTP message of `len` bytes at the start of `message` with zeros to its frame's
/// length (the header's, rounded up to 4: the padding the sender left off) and returns that;
/// a message shorter than a header, or whose header disagrees with it, is an error.
fn pad_message(message: &mut [u8], len: usize) -> io::Result<usize> {
    let length = match message.get(2..4) {
        Some(l) if len >= 4 => usize::from(u16::from_be_bytes([l[0], l[1]])),
        _ => return Err(broken("an SCTP message shorter than an ASAP header")),
    };
    let padded = length.div_ceil(4) * 4;
    if length < 4 || length > len || padded > message.len() {
        return Err(broken(
            "an SCTP message whose length field disagrees with it",
        ));
    }
    message[length..padded].fill(0);
    Ok(padded)
}

/// The bytes of `buf` a frame occupies at its start, if a whole one is there.
pub(crate) fn whole_frame(buf: &[u8]) -> Option<usize> {
    match next_frame(buf, crate::workload::MAX_FRAME) {
        Ok(Frame::Complete { len }) if len <= buf.len() => Some(len),
        _ => None,
    }
}

impl SecureStream {
    /// The stream as it is.
    pub fn plain(stream: TcpStream) -> Self {
        Self {
            stream: Carrier::Tcp(stream),
            tls: None,
            blocking: true,
        }
    }

    /// A one-to-one SCTP association, blocking as [`SctpClient::connect`] leaves it.
    pub fn sctp(client: SctpClient) -> Self {
        Self {
            stream: Carrier::Sctp(
                client,
                SctpRecvBatch::new(SCTP_BATCH_MAX, SCTP_MESSAGE_ROOM),
            ),
            tls: None,
            blocking: true,
        }
    }

    /// An association over UDP on a client thread's hub, blocking as [`Hub::connect`] leaves
    /// it.
    pub fn sctp_udp(link: SctpUdpLink) -> Self {
        Self {
            stream: Carrier::SctpUdp(link),
            tls: None,
            blocking: true,
        }
    }

    /// TLS over `stream` with `session` (a client's: it speaks first, or a server's).
    pub fn tls(stream: TcpStream, session: TlsSession) -> Self {
        Self {
            blocking: true,
            stream: Carrier::Tcp(stream),
            tls: Some(Box::new(Session {
                session,
                plain: Vec::new(),
                plain_pos: 0,
                cipher_out: Vec::new(),
                cipher_pos: 0,
                scratch: vec![0; 64 * 1024].into_boxed_slice(),
            })),
        }
    }

    /// A client's TLS over the connected, still blocking `stream`, the handshake done.
    pub fn connect_tls(mut stream: TcpStream, client: &ClientTls) -> io::Result<Self> {
        let name = rserpool_net::server_name(None, stream.peer_addr()?.ip())?;
        let mut session = client.connect(name)?;
        let early = rserpool_net::handshake_blocking(&mut session, &mut stream)?;
        let mut secure = Self::tls(stream, session);
        if let Some(tls) = secure.tls.as_mut() {
            tls.plain = early;
        }
        Ok(secure)
    }

    /// Sets the socket non-blocking or blocking.
    pub fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        self.stream.set_nonblocking(nonblocking)?;
        self.blocking = !nonblocking;
        Ok(())
    }

    /// Bounds how long a blocking write waits.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_write_timeout(timeout)
    }

    /// Bounds how long a blocking read waits.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Receives whole SCTP messages into `buf`: at least one (or the error), then, on a
    /// non-blocking socket (`more`), more while they arrive without waiting and the room left
    /// holds them whatever their sizes. Each is padded with zeros to its frame's length, so that
    /// stream framing reads them back to back; a message cut short or longer than its header
    /// says breaks the association.
    ///
    /// A non-blocking read takes all that waits (and fits) with one `recvmmsg` into `batch`, at
    /// most as many messages as `buf` holds at [`SCTP_MESSAGE_ROOM`] bytes (and padding) each,
    /// and copies them into `buf`, a message that came in parts put back together; the rest of a
    /// message longer than the batch follows straight into `buf`. A blocking read, or one into
    /// a buffer too small for a batch, receives one message straight into `buf`.
    fn recv_sctp(
        client: &SctpClient,
        batch: &mut SctpRecvBatch,
        buf: &mut [u8],
        more: bool,
    ) -> io::Result<usize> {
        let fit = if more {
            buf.len() / (batch.message_size() + 3)
        } else {
            0
        };
        if fit == 0 {
            return Ok(Self::recv_sctp_message(client, buf, 0)?.unwrap_or(0));
        }
        loop {
            client.recv_batch(batch, fit)?;
            let mut filled = 0;
            // the bytes of a message in parts so far, at `buf[filled..]`
            let mut open = 0;
            for (part, payload) in batch.parts() {
                let Some(part) = part? else {
                    // the peer shut the association down: what came before counts first
                    return if open == 0 {
                        Ok(filled)
                    } else {
                        Err(cut_off())
                    };
                };
                // `fit` messages of at most the batch's room each, padded, fit in `buf`
                buf[filled + open..][..payload.len()].copy_from_slice(payload);
                open += part.len;
                if part.complete {
                    filled += pad_message(&mut buf[filled..], open)?;
                    open = 0;
                }
            }
            if open > 0 {
                filled += Self::recv_sctp_message(client, &mut buf[filled..], open)?
                    .ok_or_else(cut_off)?;
            }
            if filled > 0 {
                return Ok(filled);
            }
            // notifications only: what else waits (`WouldBlock` when nothing)
        }
    }

    /// Receives the rest of one SCTP message straight into `message`, after the `have` bytes
    /// of it already there, and pads it (see [`pad_message`]); returns its padded length, or
    /// `None` when the peer shut the association down before the message began.
    fn recv_sctp_message(
        client: &SctpClient,
        message: &mut [u8],
        mut have: usize,
    ) -> io::Result<Option<usize>> {
        loop {
            if have == message.len() {
                return Err(broken("an SCTP message larger than the receive buffer"));
            }
            match client.recv_part(&mut message[have..]) {
                Ok(Some(part)) => {
                    have += part.len;
                    if part.complete {
                        return pad_message(message, have).map(Some);
                    }
                }
                Ok(None) if have == 0 => return Ok(None),
                Ok(None) => return Err(cut_off()),
                Err(e) if have > 0 && e.kind() == ErrorKind::WouldBlock => return Err(cut_off()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the whole frames at the start of `buf`, each as one SCTP message with PPID 11,
    /// with one `sendmmsg` per [`SCTP_BATCH_MAX`] frames; returns the bytes of those that left
    /// (`WouldBlock` if none did). An error after some frames left comes with the next write.
    fn send_sctp(client: &SctpClient, buf: &[u8]) -> io::Result<usize> {
        let mut frames: [(u32, u16, &[u8]); SCTP_BATCH_MAX] = [(PPID_ASAP, 0, &[]); SCTP_BATCH_MAX];
        let mut sent = 0;
        loop {
            let mut end = sent;
            let mut count = 0;
            while count < SCTP_BATCH_MAX
                && let Some(len) = whole_frame(&buf[end..])
            {
                frames[count].2 = &buf[end..end + len];
                end += len;
                count += 1;
            }
            if count == 0 {
                break;
            }
            let left = match client.send_batch(&frames[..count]) {
                Ok(left) => left,
                // the frames before left; the error, if it lasts, comes with the next write
                Err(_) if sent > 0 => 0,
                Err(e) => return Err(e),
            };
            sent += frames[..left].iter().map(|f| f.2.len()).sum::<usize>();
            if left < count {
                break;
            }
        }
        if sent == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "bytes that are not a whole ASAP message cannot go out over SCTP",
            ));
        }
        Ok(sent)
    }

    /// Writes records that wait for the socket; whether any left.
    pub fn flush_records(&mut self) -> io::Result<bool> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(false);
        };
        tls.session.take_outgoing(&mut tls.cipher_out);
        let mut moved = false;
        while tls.cipher_pos < tls.cipher_out.len() {
            match self.stream.tcp().write(&tls.cipher_out[tls.cipher_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    tls.cipher_pos += n;
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if tls.cipher_pos == tls.cipher_out.len() {
            tls.cipher_out.clear();
            tls.cipher_pos = 0;
        }
        Ok(moved)
    }

    fn records_waiting(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.cipher_pos < t.cipher_out.len())
    }
}

impl Read for SecureStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_none() {
            return match &mut self.stream {
                Carrier::Tcp(s) => s.read(buf),
                Carrier::Sctp(c, batch) => Self::recv_sctp(c, batch, buf, !self.blocking),
                Carrier::SctpUdp(link) => link.read(buf),
            };
        }
        self.flush_records()?;
        loop {
            let tls = self.tls.as_mut().expect("a TLS stream");
            if tls.plain_pos < tls.plain.len() {
                break;
            }
            tls.plain.clear();
            tls.plain_pos = 0;
            let n = self.stream.tcp().read(&mut tls.scratch)?;
            if n == 0 {
                return Ok(0);
            }
            let closed = tls.session.receive(&tls.scratch[..n], &mut tls.plain)?;
            let empty = tls.plain.is_empty();
            // The handshake's answers, alerts.
            self.flush_records()?;
            match (empty, closed) {
                (false, _) => break,
                (true, true) => return Ok(0),
                (true, false) if self.blocking => {}
                (true, false) => return Err(ErrorKind::WouldBlock.into()),
            }
        }
        let tls = self.tls.as_mut().expect("a TLS stream");
        let n = buf.len().min(tls.plain.len() - tls.plain_pos);
        buf[..n].copy_from_slice(&tls.plain[tls.plain_pos..tls.plain_pos + n]);
        tls.plain_pos += n;
        Ok(n)
    }
}

impl SecureStream {
    /// The local address of the socket.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.local_addr()
    }
}

impl Write for SecureStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tls.is_none() {
            return match &mut self.stream {
                Carrier::Tcp(s) => s.write(buf),
                Carrier::Sctp(c, _) => Self::send_sctp(c, buf),
                Carrier::SctpUdp(link) => link.write(buf),
            };
        }
        self.flush_records()?;
        if self.records_waiting() {
            return Err(ErrorKind::WouldBlock.into());
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.session.seal(buf)?;
        }
        self.flush_records()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records().map(drop)
    }
}

/// The client side of `--tls`, set once at the start of a run: every connection to a
/// `tcp+tls://` endpoint (registrar or echo server) presents its certificate and trusts its CA.
static CLIENT: std::sync::OnceLock<ClientTls> = std::sync::OnceLock::new();

/// Sets the client side of `--tls` for the run (the first call counts).
pub fn set_client(client: ClientTls) {
    let _ = CLIENT.set(client);
}

/// How long an SCTP association may take to come up.
const SCTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `endpoint`: over TLS with the run's client side for a `tcp+tls://` endpoint, as
/// a one-to-one association for an `sctp://` one, as an association on a hub of its own for an
/// `sctp+udp://` one (the load driver puts a thread's associations on one hub instead).
pub fn connect(endpoint: &crate::net::Endpoint) -> io::Result<SecureStream> {
    if endpoint.transport == crate::net::StreamTransport::SctpUdp {
        return Hub::new(endpoint.addr)?
            .connect(endpoint.addr)
            .map(SecureStream::sctp_udp);
    }
    if endpoint.transport == crate::net::StreamTransport::Sctp {
        return SctpClient::connect(endpoint.addr, None, SCTP_CONNECT_TIMEOUT)
            .map(SecureStream::sctp)
            .map_err(rserpool_net::NetError::into_kernel_error);
    }
    let stream = crate::net::connect(endpoint)?;
    if !endpoint.tls {
        return Ok(SecureStream::plain(stream));
    }
    let client = CLIENT.get().ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("{endpoint} speaks TLS: run with --tls (and --spawn)"),
        )
    })?;
    SecureStream::connect_tls(stream, client)
}

/// A CA, a registrar certificate for 127.0.0.1 and a client certificate, made for one run and
/// removed with this value.
#[derive(Debug)]
pub struct RunPki {
    dir: PathBuf,
    /// The registrar's (and the echo server's) files, with the CA bundle.
    pub server: TlsFiles,
    /// The load generator's files, with the CA bundle.
    pub client: TlsFiles,
}

impl RunPki {
    /// Makes the certificates in a new temporary directory.
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "rserpool-bench-tls-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
        let ca = rserpool_net::TestPki::new(&dir, "rserpool-bench CA")
            .map_err(|e| Error::new(e.to_string()))?;
        let issue = |name: &str, san: &str| {
            ca.issue(name, &[san], name)
                .map_err(|e| Error::new(format!("cannot write test certificates: {e}")))
        };
        let server = issue("registrar", "127.0.0.1")?;
        let client = issue("rserpool-bench", "rserpool-bench")?;
        Ok(Self {
            dir,
            server,
            client,
        })
    }

    /// The registrar's `[tls]` section.
    pub fn registrar_config(&self) -> String {
        format!(
            "\n[tls]\ncertificate = {:?}\nprivate_key = {:?}\nca = {:?}\n",
            self.server.certificate, self.server.private_key, self.server.ca
        )
    }

    /// The server side (the echo server's).
    pub fn server_tls(&self) -> Result<ServerTls> {
        ServerTls::load(&self.server).map_err(|e| Error::new(e.to_string()))
    }

    /// The client side (the load's).
    pub fn client_tls(&self) -> Result<ClientTls> {
        ClientTls::load(&self.client).map_err(|e| Error::new(e.to_string()))
    }
}

impl Drop for RunPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A client and a server stream over loopback, both non-blocking, carry bytes both ways
    /// through the handshake.
    #[test]
    fn secure_streams_carry_bytes_both_ways() {
        let pki = RunPki::new().unwrap();
        let server = pki.server_tls().unwrap();
        // The client's blocking handshake runs in a thread of its own; the test thread serves.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let client_tls = pki.client_tls().unwrap();
        let connect = std::thread::spawn(move || {
            SecureStream::connect_tls(TcpStream::connect(address).unwrap(), &client_tls)
        });
        let (socket, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut server_side = SecureStream::tls(
            socket,
            server
                .accept(rserpool_net::ClientCertificate::Required)
                .unwrap(),
        );
        server_side.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !connect.is_finished() {
            assert!(std::time::Instant::now() < deadline, "no handshake");
            match server_side.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                other => panic!("nothing to read yet: {other:?}"),
            }
        }
        let mut client_side = connect.join().unwrap().unwrap();
        client_side.set_nonblocking(true).unwrap();
        assert_eq!(client_side.write(b"ping").unwrap(), 4);
        let mut got = Vec::new();
        while got.len() < 4 {
            assert!(std::time::Instant::now() < deadline, "no ping");
            match server_side.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"ping");
        assert_eq!(server_side.write(b"pong").unwrap(), 4);
        got.clear();
        while got.len() < 4 {
            assert!(std::time::Instant::now() < deadline, "no pong");
            match client_side.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"pong");
    }
}
