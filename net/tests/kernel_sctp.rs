//! Kernel SCTP for the socket layer's batch calls (issue 16): many messages in one `recvmmsg`
//! or `sendmmsg`, on the registrar's one-to-many listener (`SctpSocket::recv_batch`,
//! `SctpSocket::send_batch`) and on the one-to-one association (`SctpClient::recv_batch`,
//! `SctpClient::send_batch`): messages with their PPIDs, streams and associations, in order,
//! notifications among them, messages longer than their room in parts, the peer's shutdown.
//!
//! The build host has no kernel SCTP, so CI runs this target in user-mode Linux:
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/uml-run.sh cargo test -p rserpool-net --test kernel_sctp`.
//! Without kernel SCTP every test fails with the reason; none skips.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rserpool_net::{
    AssocState, SCTP_BATCH_MAX, SctpAssocId, SctpClient, SctpListener, SctpPart, SctpRecv,
    SctpRecvBatch, SctpSocket, sctp_support,
};
use rserpool_protocol::{PPID_ASAP, PPID_ENRP};

/// How long anything may take; UML's syscalls cost about 50 µs, a loopback association far less.
const WAIT: Duration = Duration::from_secs(10);

/// Runs the non-blocking `op` until it stops saying `WouldBlock`, for up to [`WAIT`].
fn wait_for<T>(what: &str, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

/// Gives what was just sent over the loopback time to reach the peer's receive queue, so that
/// one receive finds all of it.
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

/// A one-to-many listener on 127.0.0.1, failing the test with the reason if the kernel has no
/// SCTP; and its address.
fn listener() -> (SctpSocket, SocketAddr) {
    if let Err(e) = sctp_support() {
        panic!("these tests need kernel SCTP: {e}");
    }
    let server = SctpSocket::listen(&["127.0.0.1:0".parse().unwrap()], false, 16, 0)
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = server.socket().local_addr().unwrap().as_socket().unwrap();
    (server, addr)
}

/// A non-blocking one-to-one association to `addr`.
fn connect(addr: SocketAddr) -> SctpClient {
    let client = SctpClient::connect(addr, None, WAIT).unwrap_or_else(|e| panic!("{e}"));
    client.socket().set_nonblocking(true).unwrap();
    client
}

/// Receives one message on `server` (a batch of one), which must be `CommUp`; returns its
/// association.
fn comm_up(server: &SctpSocket, batch: &mut SctpRecvBatch) -> SctpAssocId {
    wait_for("the association to come up", || server.recv_batch(batch, 1)).unwrap();
    match batch.messages(server).next() {
        Some((
            Ok(SctpRecv::AssocChange {
                assoc,
                state: AssocState::CommUp,
            }),
            _,
        )) => assoc,
        other => panic!("expected CommUp, got {other:?}"),
    }
}

/// Receives batches on `client` until `count` complete messages came; their PPIDs and payloads.
fn client_messages(
    client: &SctpClient,
    batch: &mut SctpRecvBatch,
    count: usize,
) -> Vec<(u32, Vec<u8>)> {
    let mut got = Vec::new();
    while got.len() < count {
        wait_for("messages on the client", || {
            client.recv_batch(batch, SCTP_BATCH_MAX)
        })
        .unwrap();
        for (part, payload) in batch.parts() {
            let part = part.unwrap().expect("the association is up");
            assert!(part.complete, "{part:?}");
            assert_eq!(part.len, payload.len());
            got.push((part.ppid, payload.to_vec()));
        }
    }
    assert_eq!(got.len(), count, "more messages than sent");
    got
}

#[test]
fn kernel_has_sctp() {
    if let Err(e) = sctp_support() {
        panic!("{e}");
    }
}

#[test]
fn a_batch_from_a_client_arrives_in_one_receive_after_its_association_change() {
    let (server, addr) = listener();
    let client = connect(addr);
    let sent: [(u32, u16, &[u8]); 5] = [
        (PPID_ASAP, 0, b"one"),
        (PPID_ENRP, 1, b"two"),
        (PPID_ASAP, 2, b"three"),
        (99, 0, b"four"),
        (PPID_ASAP, 15, b"five"),
    ];
    assert_eq!(client.send_batch(&sent).unwrap(), 5);
    settle();

    let mut batch = SctpRecvBatch::new(16, 256);
    assert_eq!(server.recv_batch(&mut batch, 16).unwrap(), 6);
    assert_eq!(batch.len(), 6);
    let mut messages = batch.messages(&server);
    let assoc = match messages.next().unwrap() {
        (
            Ok(SctpRecv::AssocChange {
                assoc,
                state: AssocState::CommUp,
            }),
            _,
        ) => assoc,
        (other, _) => panic!("expected CommUp first, got {other:?}"),
    };
    for ((recv, payload), (ppid, stream, message)) in messages.zip(sent) {
        assert_eq!(
            recv.unwrap(),
            SctpRecv::Data {
                assoc,
                ppid,
                stream,
                len: message.len(),
                complete: true
            }
        );
        assert_eq!(payload, message);
    }

    // nothing more waits, on either side
    let e = server.recv_batch(&mut batch, 16).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    assert!(batch.is_empty());
    let e = client.recv_batch(&mut batch, 16).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    // nothing to send is no call
    assert_eq!(server.send_batch(&[]).unwrap(), 0);
    assert_eq!(client.send_batch(&[]).unwrap(), 0);
}

#[test]
fn a_batch_to_two_associations_arrives_at_each_in_order() {
    let (server, addr) = listener();
    let mut batch = SctpRecvBatch::new(SCTP_BATCH_MAX, 256);
    let a = connect(addr);
    let assoc_a = comm_up(&server, &mut batch);
    let b = connect(addr);
    let assoc_b = comm_up(&server, &mut batch);
    assert_ne!(assoc_a, assoc_b);

    // more than one sendmmsg takes, alternating between the associations, PPIDs varying
    const N: usize = SCTP_BATCH_MAX + 36;
    let payloads: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("message {i}").into_bytes())
        .collect();
    let messages: Vec<(SctpAssocId, u32, &[u8])> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let assoc = if i % 2 == 0 { assoc_a } else { assoc_b };
            (assoc, 100 + i as u32, p.as_slice())
        })
        .collect();
    assert_eq!(server.send_batch(&messages).unwrap(), N);

    for (client, parity) in [(&a, 0), (&b, 1)] {
        let want: Vec<(u32, Vec<u8>)> = (0..N)
            .filter(|i| i % 2 == parity)
            .map(|i| (100 + i as u32, payloads[i].clone()))
            .collect();
        assert_eq!(client_messages(client, &mut batch, N / 2), want);
    }
}

#[test]
fn a_message_longer_than_its_room_comes_in_parts() {
    let (server, addr) = listener();
    let mut batch = SctpRecvBatch::new(8, 64);
    let client = connect(addr);
    let assoc = comm_up(&server, &mut batch);
    let long: Vec<u8> = (0..200u8).collect();

    // to the listener: 64 + 64 + 64 + 8 bytes, then the next message whole
    client.send(PPID_ASAP, 0, &long).unwrap();
    client.send(PPID_ENRP, 0, b"after").unwrap();
    settle();
    assert_eq!(server.recv_batch(&mut batch, 8).unwrap(), 5);
    let mut joined = Vec::new();
    let mut parts = Vec::new();
    for (recv, payload) in batch.messages(&server) {
        match recv.unwrap() {
            SctpRecv::Data {
                assoc: a,
                ppid,
                len,
                complete,
                ..
            } => {
                assert_eq!(a, assoc);
                assert_eq!(len, payload.len());
                parts.push((ppid, len, complete));
                if ppid == PPID_ASAP {
                    joined.extend_from_slice(payload);
                } else {
                    assert_eq!(payload, b"after");
                }
            }
            other => panic!("expected data, got {other:?}"),
        }
    }
    assert_eq!(
        parts,
        [
            (PPID_ASAP, 64, false),
            (PPID_ASAP, 64, false),
            (PPID_ASAP, 64, false),
            (PPID_ASAP, 8, true),
            (PPID_ENRP, 5, true)
        ]
    );
    assert_eq!(joined, long);

    // to the client, into a batch of two: the rest comes with the next receive
    server.send(assoc, PPID_ASAP, 0, &long).unwrap();
    settle();
    let mut small = SctpRecvBatch::new(2, 64);
    let mut joined = Vec::new();
    let mut parts = Vec::new();
    for _ in 0..2 {
        assert_eq!(client.recv_batch(&mut small, 2).unwrap(), 2);
        for (part, payload) in small.parts() {
            let part = part.unwrap().unwrap();
            parts.push(part);
            joined.extend_from_slice(payload);
        }
    }
    let part = |len, complete| SctpPart {
        len,
        ppid: PPID_ASAP,
        complete,
    };
    assert_eq!(
        parts,
        [
            part(64, false),
            part(64, false),
            part(64, false),
            part(8, true)
        ]
    );
    assert_eq!(joined, long);
}

#[test]
fn one_to_one_batches_go_both_ways_and_report_the_peer_shutting_down() {
    if let Err(e) = sctp_support() {
        panic!("these tests need kernel SCTP: {e}");
    }
    let acceptor = SctpListener::bind("127.0.0.1:0".parse().unwrap(), 4).unwrap();
    // blocking, as connect and accept leave them, with a bound on any wait
    let client = SctpClient::connect(acceptor.local_addr().unwrap(), None, WAIT).unwrap();
    let (peer, _) = wait_for("the association to be accepted", || acceptor.accept()).unwrap();
    for side in [&client, &peer] {
        side.socket().set_read_timeout(Some(WAIT)).unwrap();
    }
    let mut batch = SctpRecvBatch::new(SCTP_BATCH_MAX, 128);

    // more than one sendmmsg takes; a blocking receive takes what waits, up to its batch
    let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
    let messages: Vec<(u32, u16, &[u8])> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u32, (i % 16) as u16, p.as_slice()))
        .collect();
    assert_eq!(client.send_batch(&messages).unwrap(), 100);
    settle();
    let want: Vec<(u32, Vec<u8>)> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u32, p.clone()))
        .collect();
    assert_eq!(client_messages(&peer, &mut batch, 100), want);

    // a blocking receive waits for the first message only (MSG_WAITFORONE)
    let answers: [(u32, u16, &[u8]); 3] =
        [(PPID_ASAP, 0, b"a"), (PPID_ASAP, 0, b"bb"), (7, 3, b"ccc")];
    assert_eq!(peer.send_batch(&answers).unwrap(), 3);
    settle();
    let start = Instant::now();
    assert_eq!(client.recv_batch(&mut batch, SCTP_BATCH_MAX).unwrap(), 3);
    assert!(
        start.elapsed() < WAIT / 2,
        "the receive waited for a full batch"
    );
    let got: Vec<(SctpPart, Vec<u8>)> = batch
        .parts()
        .map(|(part, payload)| (part.unwrap().unwrap(), payload.to_vec()))
        .collect();
    let want: Vec<(SctpPart, Vec<u8>)> = answers
        .iter()
        .map(|&(ppid, _, m)| {
            let part = SctpPart {
                len: m.len(),
                ppid,
                complete: true,
            };
            (part, m.to_vec())
        })
        .collect();
    assert_eq!(got, want);

    // the peer closes: a graceful shutdown, which a receive reports as None
    drop(peer);
    assert!(client.recv_batch(&mut batch, SCTP_BATCH_MAX).unwrap() >= 1);
    let (part, payload) = batch.parts().next().expect("the shutdown");
    assert_eq!(part.unwrap(), None);
    assert!(payload.is_empty());
}
