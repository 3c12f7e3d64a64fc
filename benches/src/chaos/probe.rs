//! The PUs of a chaos run: one thread per registrar that resolves every pool there over ASAP
//! (TCP or MPTCP) every round, asking for all PEs, and reports each answer's PE IDs and home PR
//! IDs with the times the request left and the answer arrived.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread;
use std::time::Duration;

use rserpool_protocol::framing::{Frame, next_frame};
use rserpool_protocol::{AsapMessage, Generation, PoolHandle, Resolution};

use super::checker::Observation;
use super::{Clock, Millis};
use crate::error::Result;
use crate::net::{self, Endpoint, StreamTransport};
use crate::workload::{MAX_FRAME, Table};

/// PEs asked for per resolution: every PE of a pool (`resolution.max_items`).
const ITEMS: u32 = 128;
/// How long a round waits for its answers before it gives up on the connection.
const ANSWER_TIMEOUT: Millis = 1000;

/// What a PU thread reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An answer.
    Answer(Observation),
    /// A round that got no (complete) answer: the registrar was down, stopped or slow.
    Unanswered {
        /// The registrar's slot.
        slot: usize,
    },
}

/// A PU: which registrar, which pools, how often.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    /// The registrar's slot.
    pub slot: usize,
    /// ASAP over TCP or MPTCP.
    pub transport: StreamTransport,
    /// The registrar's ASAP port on 127.0.0.1.
    pub port: u16,
    /// The pool handles to resolve.
    pub pools: Vec<Vec<u8>>,
    /// Time from the start of one round to the next.
    pub interval: Millis,
}

/// Starts the PU `spec`: every interval it resolves each pool, until `stop` is set, and sends
/// what it saw to `out`.
pub fn spawn(
    spec: ProbeSpec,
    clock: Clock,
    stop: Arc<AtomicBool>,
    out: Sender<Probe>,
) -> Result<thread::JoinHandle<()>> {
    let ProbeSpec {
        slot,
        transport,
        port,
        pools,
        interval,
    } = spec;
    let mut requests = Table::default();
    for handle in &pools {
        requests.push(
            &AsapMessage::HandleResolution {
                subscribe: false,
                pool_handle: PoolHandle(handle),
                items: Some(ITEMS),
            },
            Generation::Rfc,
        )?;
    }
    let endpoint = Endpoint::new(transport, SocketAddr::from(([127, 0, 0, 1], port)));
    Ok(thread::spawn(move || {
        let mut conn: Option<TcpStream> = None;
        while !stop.load(Ordering::Relaxed) {
            let round = clock.now();
            if conn.is_none() {
                conn = net::connect(&endpoint).ok();
            }
            if let Some(stream) = &mut conn {
                match resolve_all(stream, &requests, &pools, slot, &clock) {
                    Some(answers) => {
                        for a in answers {
                            let _ = out.send(Probe::Answer(a));
                        }
                    }
                    None => {
                        conn = None;
                        let _ = out.send(Probe::Unanswered { slot });
                    }
                }
            } else {
                let _ = out.send(Probe::Unanswered { slot });
            }
            let next = round + interval;
            let now = clock.now();
            if next > now {
                thread::sleep(Duration::from_millis(next - now));
            }
        }
    }))
}

/// Sends every resolution in one write and reads the answers; `None` if the connection failed
/// or not every answer came within [`ANSWER_TIMEOUT`].
fn resolve_all(
    stream: &mut TcpStream,
    requests: &Table,
    pools: &[Vec<u8>],
    slot: usize,
    clock: &Clock,
) -> Option<Vec<Observation>> {
    let sent = clock.now();
    stream.write_all(requests.all()).ok()?;
    let deadline = sent + ANSWER_TIMEOUT;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 65_536];
    let mut answers = Vec::with_capacity(pools.len());
    while answers.len() < pools.len() {
        let now = clock.now();
        if now >= deadline {
            return None;
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(deadline - now)))
            .ok()?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        let received = clock.now();
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Frame::Complete { len }) = next_frame(&buf, MAX_FRAME) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            answers.push(observation(&frame, pools, slot, sent, received)?);
        }
    }
    Some(answers)
}

/// The observation a HANDLE_RESOLUTION_RESPONSE makes; `None` for anything else.
fn observation(
    frame: &[u8],
    pools: &[Vec<u8>],
    slot: usize,
    sent: Millis,
    received: Millis,
) -> Option<Observation> {
    let decoded = AsapMessage::decode(frame, Generation::Rfc).ok()?;
    let AsapMessage::HandleResolutionResponse {
        pool_handle,
        resolution,
        ..
    } = decoded.message
    else {
        return None;
    };
    let pool = pools.iter().position(|p| p.as_slice() == pool_handle.0)?;
    let pes = match resolution {
        Resolution::Found { pool_elements, .. } => pool_elements
            .iter()
            .map(|pe| (pe.id.0, pe.home_pr.0))
            .collect(),
        Resolution::Failed(_) => Vec::new(),
    };
    Some(Observation {
        slot,
        pool,
        sent,
        received,
        pes,
    })
}
