//! `rserpool-bench` over SCTP over UDP (`--transport sctp-udp`, `sctp+udp://`) against its own
//! echo server (one UDP socket, one user-space SCTP endpoint), until the registrar serves
//! sctp+udp: the client threads' hubs (one socket each holding all their associations) get
//! every request answered, mirrored or sized as a registrar's answer; a stream on a hub reads
//! back exactly what it wrote. Answers are checked, not the speed.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use rserpool_bench::echo::{EchoReply, EchoServer};
use rserpool_bench::net::StreamTransport;
use rserpool_bench::tls;
use rserpool_bench::workload::resolution_table;
use rserpool_protocol::Generation;
use serde_json::Value;

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {v}"))
}

/// `echo --transport sctp-udp` over two client threads of three associations each, eight
/// requests in flight on each: every request answered, no errors.
fn echo_run(extra: &[&str]) -> Value {
    let mut args = vec![
        "echo",
        "--transport",
        "sctp-udp",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--connections",
        "6",
        "--threads",
        "2",
        "--pipeline",
        "8",
    ];
    args.extend(extra);
    let v = common::report(&args);
    assert!(u(&v, "ops") > 0, "{v}");
    assert_eq!(u(&v, "errors"), 0, "{v}");
    assert!(
        v["target"].as_str().unwrap().starts_with("sctp+udp://"),
        "{v}"
    );
    v
}

#[test]
fn the_sctp_udp_echo_server_mirrors_every_request() {
    let v = echo_run(&[]);
    assert_eq!(v["mean_reply_bytes"], 20.0, "mirrored: {v}");
}

#[test]
fn the_sctp_udp_echo_server_answers_with_the_size_asked() {
    let v = echo_run(&["--reply-size", "196"]);
    assert_eq!(v["mean_reply_bytes"], 196.0, "sized: {v}");
}

/// A stream on a hub of its own: requests written back to back come back whole and in order,
/// blocking reads wait and non-blocking ones say `WouldBlock` when nothing is there.
#[test]
fn a_stream_over_sctp_udp_reads_back_what_it_wrote() {
    let server = EchoServer::start(
        StreamTransport::SctpUdp,
        "127.0.0.1:0".parse().unwrap(),
        EchoReply::Mirror,
        None,
    )
    .unwrap();
    let mut stream = tls::connect(&server.endpoint()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let requests = resolution_table(200, Generation::Rfc).unwrap();
    stream.write_all(requests.all()).unwrap();
    let mut back = vec![0; requests.all().len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, requests.all());
    stream.set_nonblocking(true).unwrap();
    let e = stream.read(&mut back).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    assert_eq!(
        stream.local_addr().unwrap().ip(),
        server.endpoint().addr.ip()
    );
    drop(stream);
    server.stop().unwrap();
}
