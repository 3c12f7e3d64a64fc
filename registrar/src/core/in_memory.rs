//! A whole PR driven from one thread: its workers and the forwarded writes between them. Used
//! by tests and the simulator; the daemon runs each [`Worker`] on its own thread instead.
//! Besides the messages each call returns, it collects the associations the workers abort and
//! the ENRP associations they ask to open, for the caller to take ([`InMemoryPr::take_aborts`],
//! [`InMemoryPr::take_connects`]).
//!
//! Forwards are delivered at once, recursively, inside the call that made them (the default),
//! or, in the asynchronous mode ([`InMemoryPr::set_asynchronous`]), queued in one FIFO mailbox per
//! (sender, receiver) pair of workers until the caller delivers them
//! ([`InMemoryPr::deliver_mailbox`]), as the daemon's worker threads do a loop turn later: network
//! events and timers then interleave with the forwards in flight.

use std::collections::VecDeque;
use std::sync::Arc;

use rserpool_handlespace::{AssociationId, Handlespace, Limits, Millis};

use super::{
    AssociationInfo, Connect, CoreConfig, Forward, Output, PrShared, Protocol, Received, Target,
    Worker, worker_of,
};
use crate::core::counters::WorkerMetrics;

/// A PR of `N` workers in one thread.
#[derive(Debug)]
pub struct InMemoryPr {
    workers: Vec<Worker>,
    metrics: Vec<Arc<WorkerMetrics>>,
    out: Output,
    aborts: Vec<AssociationId>,
    connects: Vec<Connect>,
    /// Queue forwards in `mailboxes` instead of delivering them at once.
    asynchronous: bool,
    /// The asynchronous mode's mailboxes, by `sender * workers + receiver`.
    mailboxes: Vec<VecDeque<Forward>>,
}

/// A message the PR sent, copied out of the workers' outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Where it goes.
    pub target: Target,
    /// The encoded message.
    pub bytes: Vec<u8>,
}

impl InMemoryPr {
    /// A PR of `workers` workers with the given configuration and handlespace limits; `seed`
    /// makes its random choices reproducible.
    pub fn new(workers: usize, config: CoreConfig, limits: Limits, seed: u64) -> Self {
        let workers = workers.max(1);
        let (shards, reader) = Handlespace::new(workers, limits).into_shards();
        let config = Arc::new(config);
        let metrics: Vec<_> = (0..workers)
            .map(|i| Arc::new(WorkerMetrics::new(i)))
            .collect();
        let pr = Arc::new(PrShared::default());
        let workers = shards
            .into_iter()
            .enumerate()
            .map(|(i, shard)| {
                Worker::new(
                    i,
                    workers,
                    Arc::clone(&config),
                    shard,
                    reader.clone(),
                    Arc::clone(&metrics[i]),
                    seed.wrapping_add(i as u64),
                    Arc::clone(&pr),
                )
            })
            .collect::<Vec<_>>();
        let mailboxes = (0..workers.len() * workers.len())
            .map(|_| VecDeque::new())
            .collect();
        Self {
            workers,
            metrics,
            out: Output::default(),
            aborts: Vec::new(),
            connects: Vec::new(),
            asynchronous: false,
            mailboxes,
        }
    }

    /// Switches between delivering forwards at once, inside the call that made them (`false`,
    /// the default), and queueing them in per-pair FIFO mailboxes for [`Self::deliver_mailbox`]
    /// (`true`). Switching back does not deliver what is queued.
    pub fn set_asynchronous(&mut self, asynchronous: bool) {
        self.asynchronous = asynchronous;
    }

    /// Whether forwards wait in mailboxes for [`Self::deliver_mailbox`].
    pub fn is_asynchronous(&self) -> bool {
        self.asynchronous
    }

    /// Whether a mailbox holds a forward.
    pub fn pending_forwards(&self) -> bool {
        self.mailboxes.iter().any(|m| !m.is_empty())
    }

    /// The (sender, receiver) pairs whose mailbox holds a forward, in order.
    pub fn pending_mailboxes(&self) -> Vec<(usize, usize)> {
        let n = self.workers.len();
        (0..self.mailboxes.len())
            .filter(|&k| !self.mailboxes[k].is_empty())
            .map(|k| (k / n, k % n))
            .collect()
    }

    /// Delivers the forwards queued from worker `from` to worker `to`, in the order they were
    /// made, as one batch (what the receiver drains in a loop turn); the forwards their handling
    /// makes are queued, not delivered. Returns what the receiver sent.
    pub fn deliver_mailbox(&mut self, from: usize, to: usize, now: Millis) -> Vec<Sent> {
        let n = self.workers.len();
        let batch = std::mem::take(&mut self.mailboxes[from * n + to]);
        let mut sent = Vec::new();
        for forward in batch {
            self.workers[to].on_forward(forward, now, &mut self.out);
            sent.extend(self.settle(to, now));
        }
        sent
    }

    /// Delivers one batch from every mailbox that holds a forward, pairs in order (one loop turn
    /// of every worker); returns what the workers sent.
    pub fn deliver_forwards(&mut self, now: Millis) -> Vec<Sent> {
        let mut sent = Vec::new();
        for (from, to) in self.pending_mailboxes() {
            sent.extend(self.deliver_mailbox(from, to, now));
        }
        sent
    }

    /// The workers.
    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    /// The workers, to drive one by one (tests interleaving events).
    pub fn workers_mut(&mut self) -> &mut [Worker] {
        &mut self.workers
    }

    /// The workers' metrics.
    pub fn metrics(&self) -> &[Arc<WorkerMetrics>] {
        &self.metrics
    }

    /// Starts every worker's periodic work.
    pub fn start(&mut self, now: Millis) -> Vec<Sent> {
        for w in &mut self.workers {
            w.start(now);
        }
        self.on_timer(now)
    }

    /// Opens an association on `worker`.
    pub fn open(&mut self, worker: usize, info: AssociationInfo, now: Millis) -> AssociationId {
        self.workers[worker].open_association(info, now)
    }

    /// Closes an association.
    pub fn close(&mut self, association: AssociationId, now: Millis) -> Vec<Sent> {
        let w = worker_of(association);
        self.workers[w].close_association(association, now, &mut self.out);
        self.settle(w, now)
    }

    /// Delivers a message on an association; returns everything sent until the workers are idle.
    pub fn message(&mut self, association: AssociationId, msg: &[u8], now: Millis) -> Vec<Sent> {
        let w = worker_of(association);
        self.workers[w].on_message(association, msg, now, &mut self.out);
        self.settle(w, now)
    }

    /// Delivers a datagram to UDP listener 0 on `worker`.
    pub fn datagram(
        &mut self,
        worker: usize,
        generation: rserpool_protocol::Generation,
        from: std::net::SocketAddr,
        msg: &[u8],
        now: Millis,
    ) -> Vec<Sent> {
        let reader = self.workers[worker].reader().clone();
        let received = Received::Datagram {
            listener: 0,
            protocol: Protocol::Asap,
            generation,
            from,
            message: msg,
        };
        self.workers[worker].handle(&reader.pin(), received, now, &mut self.out);
        self.settle(worker, now)
    }

    /// Delivers an ENRP datagram (a presence to the ENRP UDP endpoint) to worker 0.
    pub fn enrp_datagram(
        &mut self,
        generation: rserpool_protocol::Generation,
        msg: &[u8],
        now: Millis,
    ) -> Vec<Sent> {
        let reader = self.workers[0].reader().clone();
        let received = Received::Datagram {
            listener: 0,
            protocol: Protocol::Enrp,
            generation,
            from: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            message: msg,
        };
        self.workers[0].handle(&reader.pin(), received, now, &mut self.out);
        self.settle(0, now)
    }

    /// An outgoing ENRP association (one of [`Self::take_connects`]) is up
    /// ([`Worker::connected`]); returns everything sent until the workers are idle.
    pub fn connected(
        &mut self,
        association: AssociationId,
        peer_addresses: Vec<std::net::SocketAddr>,
        now: Millis,
    ) -> Vec<Sent> {
        let w = worker_of(association);
        self.workers[w].connected(association, peer_addresses, now, &mut self.out);
        self.settle(w, now)
    }

    /// The TLS handshake of `association` ended with a peer certificate naming `names`
    /// ([`Worker::authenticated`]); returns everything sent until the workers are idle.
    pub fn authenticated(
        &mut self,
        association: AssociationId,
        names: &[&str],
        now: Millis,
    ) -> Vec<Sent> {
        let w = worker_of(association);
        let identity = crate::core::identity::Identity::new(names.iter().map(|n| (*n).to_owned()));
        self.workers[w].authenticated(association, identity, now, &mut self.out);
        self.settle(w, now)
    }

    /// Takes the associations the workers asked to abort since the last call (after the
    /// messages returned before them); the caller closes each with [`Self::close`].
    pub fn take_aborts(&mut self) -> Vec<AssociationId> {
        std::mem::take(&mut self.aborts)
    }

    /// Takes the ENRP associations the workers asked to open since the last call; the caller
    /// answers each with [`Self::connected`] or [`Self::close`].
    pub fn take_connects(&mut self) -> Vec<Connect> {
        std::mem::take(&mut self.connects)
    }

    /// Runs every worker's timers due by `now`.
    pub fn on_timer(&mut self, now: Millis) -> Vec<Sent> {
        let mut sent = Vec::new();
        for w in 0..self.workers.len() {
            self.workers[w].on_timer(now, &mut self.out);
            sent.extend(self.settle(w, now));
        }
        sent
    }

    /// The earliest timer of any worker.
    pub fn next_timeout(&self) -> Option<Millis> {
        self.workers.iter().filter_map(Worker::next_timeout).min()
    }

    /// Collects the output of a call into worker `from`; forwards are delivered until none is
    /// left, or, in the asynchronous mode, queued in their (sender, receiver) mailbox.
    fn settle(&mut self, from: usize, now: Millis) -> Vec<Sent> {
        let n = self.workers.len();
        let mut sent = Vec::new();
        let mut queue = VecDeque::new();
        let mut from = from;
        loop {
            // As a driver before output leaves: publish, and tell subscribers' workers.
            self.workers[from].publish_turn(now, &mut self.out);
            sent.extend(self.out.transmits().map(|(target, bytes)| Sent {
                target,
                bytes: bytes.to_vec(),
            }));
            self.aborts.extend_from_slice(self.out.aborts());
            self.connects.extend_from_slice(self.out.connects());
            for (to, forward) in self.out.take_forwards() {
                if self.asynchronous {
                    self.mailboxes[from * n + to].push_back(forward);
                } else {
                    queue.push_back((to, forward));
                }
            }
            self.out.clear();
            let Some((to, forward)) = queue.pop_front() else {
                return sent;
            };
            from = to;
            self.workers[to].on_forward(forward, now, &mut self.out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use rserpool_handlespace::{Limits, PeId, PrId, shard_index};
    use rserpool_protocol::asap::message_type;
    use rserpool_protocol::{
        AsapMessage, Generation, Policy, PoolElementParam, PoolHandle, Seq, TransportKind,
        TransportParam, UserTransport,
    };

    use super::{InMemoryPr, Sent};
    use crate::core::Protocol;
    use crate::core::{AssociationInfo, CoreConfig, Target};
    use rserpool_protocol::url::Transport as UrlTransport;

    fn registration(handle: &[u8]) -> Vec<u8> {
        let ip = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))];
        let message = AsapMessage::Registration {
            pool_handle: PoolHandle(handle),
            pool_element: PoolElementParam {
                id: PeId(7),
                home_pr: PrId(0),
                registration_life: 5_000,
                user_transport: UserTransport::Transport(TransportParam {
                    kind: TransportKind::Tcp,
                    port: 7,
                    transport_use: 0,
                    service_code: 0,
                    addresses: Seq::from_items(&ip),
                }),
                policy: Policy::RoundRobin,
                asap_transport: None,
            },
        };
        let mut buf = vec![0; 4_096];
        let n = message
            .encode(Generation::Rfc, &mut buf)
            .expect("encodable");
        buf.truncate(n);
        buf
    }

    fn responses(sent: &[Sent]) -> usize {
        sent.iter()
            .filter(|s| s.bytes.first() == Some(&message_type::REGISTRATION_RESPONSE))
            .count()
    }

    /// A registration for another worker's shard: answered inside the call by default; in the
    /// asynchronous mode only once the request and then the completion were delivered, each
    /// from its own mailbox.
    #[test]
    fn asynchronous_mailboxes_hold_forwards_until_delivered() {
        let handle = (0..)
            .map(|i| format!("pool-{i}").into_bytes())
            .find(|h| shard_index(h, 2) == 1)
            .expect("some handle is in shard 1");
        let info = AssociationInfo {
            transport: UrlTransport::Tcp,
            generation: Generation::Rfc,
            peer_addresses: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 1)],
            protocol: Protocol::Asap,
        };
        let config = || CoreConfig::new(PrId(1));

        let mut sync = InMemoryPr::new(2, config(), Limits::default(), 1);
        let a = sync.open(0, info.clone(), 0);
        assert_eq!(responses(&sync.message(a, &registration(&handle), 0)), 1);
        assert!(!sync.pending_forwards());

        let mut pr = InMemoryPr::new(2, config(), Limits::default(), 1);
        pr.set_asynchronous(true);
        assert!(pr.is_asynchronous());
        let a = pr.open(0, info, 0);
        assert!(pr.message(a, &registration(&handle), 0).is_empty());
        assert_eq!(pr.pending_mailboxes(), [(0, 1)]);
        assert!(pr.deliver_mailbox(0, 1, 1).is_empty());
        assert_eq!(pr.pending_mailboxes(), [(1, 0)]);
        let sent = pr.deliver_forwards(2);
        assert_eq!(responses(&sent), 1);
        assert!(sent.iter().all(|s| s.target == Target::Association(a)));
        assert!(!pr.pending_forwards());
    }
}
