//! A whole PR driven from one thread: its workers, with forwarded writes delivered at once. Used
//! by tests and the simulator; the daemon runs each [`Worker`] on its own thread instead.
//! Besides the messages each call returns, it collects the associations the workers abort and
//! the ENRP associations they ask to open, for the caller to take ([`Cluster::take_aborts`],
//! [`Cluster::take_connects`]).

use std::sync::Arc;

use rserpool_handlespace::{AssociationId, Handlespace, Limits, Millis};

use super::{AssociationInfo, Connect, CoreConfig, Output, Target, Worker, worker_of};
use crate::metrics::WorkerMetrics;

/// A PR of `N` workers in one thread.
#[derive(Debug)]
pub struct Cluster {
    workers: Vec<Worker>,
    metrics: Vec<Arc<WorkerMetrics>>,
    out: Output,
    aborts: Vec<AssociationId>,
    connects: Vec<Connect>,
}

/// A message the PR sent, copied out of the workers' outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Where it goes.
    pub target: Target,
    /// The encoded message.
    pub bytes: Vec<u8>,
}

impl Cluster {
    /// A PR of `workers` workers with the given configuration and handlespace limits; `seed`
    /// makes its random choices reproducible.
    pub fn new(workers: usize, config: CoreConfig, limits: Limits, seed: u64) -> Self {
        let workers = workers.max(1);
        let (shards, reader) = Handlespace::new(workers, limits).into_shards();
        let config = Arc::new(config);
        let metrics: Vec<_> = (0..workers)
            .map(|i| Arc::new(WorkerMetrics::new(i)))
            .collect();
        let replicating = Worker::replication_flag();
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
                    Arc::clone(&replicating),
                )
            })
            .collect();
        Self {
            workers,
            metrics,
            out: Output::default(),
            aborts: Vec::new(),
            connects: Vec::new(),
        }
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
        self.settle(now)
    }

    /// Delivers a message on an association; returns everything sent until the workers are idle.
    pub fn message(&mut self, association: AssociationId, msg: &[u8], now: Millis) -> Vec<Sent> {
        let w = worker_of(association);
        self.workers[w].on_message(association, msg, now, &mut self.out);
        self.settle(now)
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
        self.workers[worker].on_datagram(
            &reader.pin(),
            0,
            generation,
            from,
            msg,
            now,
            &mut self.out,
        );
        self.settle(now)
    }

    /// Delivers an ENRP datagram (a presence to the ENRP UDP endpoint) to worker 0.
    pub fn enrp_datagram(
        &mut self,
        generation: rserpool_protocol::Generation,
        msg: &[u8],
        now: Millis,
    ) -> Vec<Sent> {
        self.workers[0].on_enrp_datagram(generation, msg, now, &mut self.out);
        self.settle(now)
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
        self.settle(now)
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
            sent.extend(self.settle(now));
        }
        sent
    }

    /// The earliest timer of any worker.
    pub fn next_timeout(&self) -> Option<Millis> {
        self.workers.iter().filter_map(Worker::next_timeout).min()
    }

    /// Collects the output and delivers forwarded writes until none is left.
    fn settle(&mut self, now: Millis) -> Vec<Sent> {
        let mut sent = Vec::new();
        let mut queue = std::collections::VecDeque::new();
        loop {
            sent.extend(self.out.transmits().map(|(target, bytes)| Sent {
                target,
                bytes: bytes.to_vec(),
            }));
            self.aborts.extend_from_slice(self.out.aborts());
            self.connects.extend_from_slice(self.out.connects());
            queue.extend(self.out.take_forwards());
            self.out.clear();
            let Some((to, forward)) = queue.pop_front() else {
                return sent;
            };
            self.workers[to].on_forward(forward, now, &mut self.out);
        }
    }
}
