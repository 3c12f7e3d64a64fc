//! The built-in echo server answers every framed message, however the stream splits it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use rserpool_bench::echo::{EchoReply, EchoServer};
use rserpool_bench::net::{self, StreamTransport};
use rserpool_bench::workload::{MAX_FRAME, resolution_table};
use rserpool_protocol::framing::Frames;
use rserpool_protocol::{AsapMessage, Generation};

fn client(server: &EchoServer) -> TcpStream {
    let stream = net::connect(&server.endpoint()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn sized_replies_answer_each_frame() {
    let server = EchoServer::start(
        StreamTransport::Tcp,
        "127.0.0.1:0".parse().unwrap(),
        EchoReply::Sized(64),
        None,
    )
    .unwrap();
    let mut stream = client(&server);
    let requests = resolution_table(3, Generation::Rfc).unwrap();
    stream.write_all(requests.all()).unwrap();
    let replies = read_exactly(&mut stream, 3 * 64);
    let frames: Vec<&[u8]> = Frames::new(&replies, MAX_FRAME).collect();
    assert_eq!(frames.len(), 3);
    for f in frames {
        assert_eq!(f.len(), 64);
        assert!(matches!(
            AsapMessage::decode(f, Generation::Rfc).unwrap().message,
            AsapMessage::HandleResolution { .. }
        ));
    }
    server.stop().unwrap();
}

#[test]
fn mirrored_replies_are_the_requests_even_when_split() {
    let server = EchoServer::start(
        StreamTransport::Tcp,
        "127.0.0.1:0".parse().unwrap(),
        EchoReply::Mirror,
        None,
    )
    .unwrap();
    let mut stream = client(&server);
    let requests = resolution_table(2, Generation::Rfc).unwrap();
    let all = requests.all();
    // The first message and a half, then the rest: only whole frames come back at first.
    let cut = requests.get(0).len() + 7;
    stream.write_all(&all[..cut]).unwrap();
    assert_eq!(
        read_exactly(&mut stream, requests.get(0).len()),
        requests.get(0)
    );
    thread::sleep(Duration::from_millis(20));
    stream.write_all(&all[cut..]).unwrap();
    assert_eq!(
        read_exactly(&mut stream, requests.get(1).len()),
        requests.get(1)
    );
    server.stop().unwrap();
}

#[test]
fn a_broken_stream_is_closed_and_others_keep_being_served() {
    let server = EchoServer::start(
        StreamTransport::Tcp,
        "127.0.0.1:0".parse().unwrap(),
        EchoReply::Mirror,
        None,
    )
    .unwrap();
    let mut bad = client(&server);
    // Length field 2: below the 4-byte minimum.
    bad.write_all(&[5, 0, 0, 2]).unwrap();
    let mut buf = [0; 16];
    assert_eq!(
        bad.read(&mut buf).unwrap_or(0),
        0,
        "closed without an answer"
    );
    let mut good = client(&server);
    let requests = resolution_table(1, Generation::Rfc).unwrap();
    good.write_all(requests.all()).unwrap();
    assert_eq!(
        read_exactly(&mut good, requests.all().len()),
        requests.all()
    );
    server.stop().unwrap();
}

#[test]
fn mptcp_is_served_where_the_kernel_has_it() {
    let Ok(server) = EchoServer::start(
        StreamTransport::Mptcp,
        "127.0.0.1:0".parse().unwrap(),
        EchoReply::Sized(32),
        None,
    ) else {
        eprintln!("skipped: no MPTCP in this kernel");
        return;
    };
    let mut stream = client(&server);
    let requests = resolution_table(1, Generation::Rfc).unwrap();
    stream.write_all(requests.all()).unwrap();
    assert_eq!(read_exactly(&mut stream, 32).len(), 32);
    server.stop().unwrap();
}

/// Over TLS (`--tls`): the client's handshake, its certificate, then sized replies as in plain
/// TCP.
#[test]
fn tls_echo_answers_each_frame_over_a_verified_session() {
    let pki = rserpool_bench::tls::RunPki::new().unwrap();
    let server = EchoServer::start(
        StreamTransport::Tcp,
        "127.0.0.1:0".parse().unwrap(),
        EchoReply::Sized(64),
        Some(pki.server_tls().unwrap()),
    )
    .unwrap();
    assert!(server.endpoint().tls);
    assert!(server.endpoint().to_string().starts_with("tcp+tls://"));
    rserpool_bench::tls::set_client(pki.client_tls().unwrap());
    let mut stream = rserpool_bench::tls::connect(&server.endpoint()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let requests = resolution_table(3, Generation::Rfc).unwrap();
    stream.write_all(requests.all()).unwrap();
    let mut replies = vec![0; 3 * 64];
    stream.read_exact(&mut replies).unwrap();
    let frames: Vec<&[u8]> = Frames::new(&replies, MAX_FRAME).collect();
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.len() == 64));
    // A plain client gets nothing it can frame: the server speaks TLS only.
    let mut plain = TcpStream::connect(server.endpoint().addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(requests.all()).unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        Frames::new(&got, MAX_FRAME)
            .next()
            .is_none_or(|f| f[0] != 0x03),
        "no handle resolution back over plain TCP"
    );
    server.stop().unwrap();
}
