//! The simulated operating scope: the PRs ([`InMemoryPr`]s), PEs and PUs, how their outputs become
//! network events and how events become their inputs (and, with asynchronous mailboxes, how the
//! forwards between a PR's workers are delivered), the faults as they happen (a frozen PR's
//! backlog, a vanished host's half-open associations), the invariant checks after every step,
//! the liveness obligations a fault starts, judged at their deadline, and the PUs' subscriptions
//! (RFC 5352 §2.2.5-6) as they see them on the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rserpool_endpoint::pe::{self, PeEvent, PeState, PoolElement};
use rserpool_endpoint::pu::{self, PoolUser, PuEvent};
use rserpool_endpoint::{Action, ConnId, Registrar, Timers};
use rserpool_handlespace::{AssociationId, Limits, Millis, PeId, PrId, Rng};
use rserpool_protocol::url::{Transport, TransportUrl};
use rserpool_protocol::{Generation, Policy};
use rserpool_registrar::core::in_memory::{InMemoryPr, Sent};
use rserpool_registrar::core::{AssociationInfo, Connect, CoreConfig, EnrpConfig, Target};
use rserpool_registrar::metrics::Protocol;

use crate::Failure;
use crate::faults::{Fault, Scenario};
use crate::invariants::{
    self, Entries, HEARTBEAT_INTERVAL, Ledger, MAX_TIME_LAST_HEARD, MAX_TIME_NO_RESPONSE,
    MENTOR_DISCOVERY_TIMEOUT, PeRecord, PrView, RECONNECT_INTERVAL, REGISTRATION_LIFE,
    RegisteredPe, TAKEOVER_EXPIRY,
};
use crate::net::{End, Event, Handle, LinkId, Net, Node};

mod checks;
mod links;
mod nodes;
mod subscribers;

/// Port of every PR's ASAP listener.
const ASAP_PORT: u16 = 3863;
/// Port of every PR's ENRP endpoint.
const ENRP_PORT: u16 = 9901;
/// The multicast group presences go to when PRs find each other by datagrams (RSPLIB's).
const PRESENCE_GROUP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 0, 0, 51)), 9901);

/// How long a connection attempt to a host that is gone waits for an answer before it fails
/// (the endpoint driver's connect timeout, scaled like the simulation's other timers).
const CONNECT_TIMEOUT: Millis = 1_000;

/// ENRP message types RSPLIB sends twice (individually and by SCTP_SENDALL): presence, handle
/// update, init takeover, takeover server.
const DUPLICATED_TYPES: [u8; 4] = [1, 4, 7, 9];

struct Pr {
    address: IpAddr,
    workers: usize,
    /// Bumped by every crash: links of an older incarnation are dead.
    incarnation: u32,
    cluster: Option<InMemoryPr>,
    id: PrId,
    timer_at: Option<Millis>,
    /// SIGSTOPped: what reaches this incarnation waits in `backlog`.
    frozen: bool,
    backlog: Vec<Event>,
    /// Killed without FIN/RST and not started again: connection attempts to it time out.
    vanished: bool,
    /// The (sender, receiver) mailboxes with a delivery queued.
    mail_due: BTreeSet<(usize, usize)>,
}

struct Pe {
    core: PoolElement,
    address: IpAddr,
    pool: usize,
    /// Crashed: the core is gone for good.
    dead: bool,
    timer_at: Option<Millis>,
    /// The PR it is registered at and since when, as last seen.
    registered_since: Option<(usize, Millis)>,
}

struct Pu {
    core: PoolUser,
    timer_at: Option<Millis>,
    /// Per link, the pools it asked for with the S bit on it.
    asked: BTreeMap<LinkId, BTreeSet<Vec<u8>>>,
    /// Per subscribed pool, the latest answer or push with the A bit over the association it
    /// subscribed on last; absent while unknown (not answered there yet).
    pushed: BTreeMap<Vec<u8>, subscribers::Pushed>,
}

/// Which side of a partition each node is on.
struct Cut {
    prs: Vec<bool>,
    salt: u64,
}

impl Cut {
    fn side(&self, node: Node) -> bool {
        match node {
            Node::Pr(i) => self.prs[i],
            Node::Pe(i) | Node::Pu(i) => {
                let kind = if matches!(node, Node::Pe(_)) { 1 } else { 2 };
                let mut r = Rng::seed(self.salt ^ (kind << 32) ^ i as u64);
                r.below(2) == 0
            }
        }
    }
}

/// What a finished run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events processed.
    pub events: u64,
    /// Handle resolutions answered.
    pub resolutions: u64,
    /// PR crashes.
    pub crashes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Settle points checked.
    pub settles: u64,
    /// Presence datagrams lost.
    pub datagrams_lost: u64,
    /// PR freezes (SIGSTOP).
    pub freezes: u64,
    /// Mailbox batches delivered between workers (asynchronous mailboxes).
    pub mailbox_batches: u64,
    /// Liveness obligations judged at their deadline (the others were cut short by a
    /// partition, a freeze or another PR's crash or restart).
    pub liveness_checks: u64,
    /// Handle resolution responses with the A bit PUs received (answers to subscriptions and
    /// pushes, RFC 5352 §2.2.6).
    pub pushes: u64,
    /// Subscribers' views compared with their PR's answer at the end of quiet phases.
    pub subscription_checks: u64,
}

/// What a fault obliges the scope to do by a deadline (see the bounds in [`invariants`]).
#[derive(Clone, Debug)]
enum Obligation {
    /// PR `pr` started again (as `incarnation`) at `since`: it resolves every live PE.
    Startup {
        pr: usize,
        incarnation: u32,
        since: Millis,
    },
    /// PR `pr` (ID `dead`) died, vanished or froze at `since`: its PEs are taken over.
    Takeover {
        pr: usize,
        dead: PrId,
        since: Millis,
    },
    /// PE `id` of `pool` deregistered at `since` from a whole scope: it is gone everywhere.
    Deregistered {
        id: PeId,
        pool: Vec<u8>,
        since: Millis,
    },
}

impl Obligation {
    fn since(&self) -> Millis {
        match self {
            Self::Startup { since, .. }
            | Self::Takeover { since, .. }
            | Self::Deregistered { since, .. } => *since,
        }
    }
}

/// What a step touched, for the cheap invariants.
enum Touched {
    /// Nothing to check (deferred to a frozen PR, or a liveness check).
    Nothing,
    /// One node.
    Node(Node),
    /// Possibly every node.
    All,
}

/// The whole simulation of one seed.
pub struct World {
    scenario: Scenario,
    net: Net,
    rng: Rng,
    prs: Vec<Pr>,
    pes: Vec<Pe>,
    pus: Vec<Pu>,
    ledger: Ledger,
    cut: Option<Cut>,
    spike: Millis,
    slow: Option<(usize, Millis)>,
    duplicates: bool,
    failure: Option<(&'static str, String)>,
    summary: Summary,
    started: bool,
    /// The liveness obligations, by index (`Event::Check`).
    obligations: Vec<Obligation>,
    /// Each PR's crashes, restarts, freezes and thaws: (time, PR index, the PR ID a restart or
    /// a thaw brought back).
    pr_changes: Vec<(Millis, usize, Option<PrId>)>,
    /// Partitions (start, end); the end is `Millis::MAX` while one lasts.
    partitions: Vec<(Millis, Millis)>,
    /// Freezes (start, end); the end is `Millis::MAX` while it lasts.
    freezes: Vec<(Millis, Millis, usize)>,
    /// The most extra one-way delay from each time on (spike plus slow PR).
    delays: Vec<(Millis, Millis)>,
    /// The associations each PR incarnation was told closed or aborted: (PR index,
    /// incarnation, association ID) -> since when.
    closed_associations: BTreeMap<(usize, u32, u64), Millis>,
    /// Per (PR index, pool handle), the serial of the pool's published snapshot (0: none) and
    /// since when it has been the current one.
    pool_changes: BTreeMap<(usize, Vec<u8>), (u64, Millis)>,
}

impl World {
    /// The world of `scenario`, before anything started.
    pub fn new(scenario: Scenario) -> Self {
        let rng = Rng::seed(scenario.seed);
        let prs = scenario
            .workers
            .iter()
            .enumerate()
            .map(|(i, &workers)| Pr {
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)),
                workers,
                incarnation: 0,
                cluster: None,
                id: PrId(0),
                timer_at: None,
                frozen: false,
                backlog: Vec::new(),
                vanished: false,
                mail_due: BTreeSet::new(),
            })
            .collect();
        Self {
            scenario,
            net: Net::default(),
            rng,
            prs,
            pes: Vec::new(),
            pus: Vec::new(),
            ledger: Ledger::default(),
            cut: None,
            spike: 0,
            slow: None,
            duplicates: false,
            failure: None,
            summary: Summary::default(),
            started: false,
            obligations: Vec::new(),
            pr_changes: Vec::new(),
            partitions: Vec::new(),
            freezes: Vec::new(),
            delays: vec![(0, 0)],
            closed_associations: BTreeMap::new(),
            pool_changes: BTreeMap::new(),
        }
    }

    /// Runs the scenario to its end or to the first broken invariant.
    pub fn run(mut self) -> Result<Summary, Failure> {
        let end = self.scenario.end;
        self.run_until(end)?;
        Ok(self.summary)
    }

    /// Runs every event due by `until` (starting the nodes and scheduling the scenario's
    /// timeline on the first call), stopping at the first broken invariant.
    pub fn run_until(&mut self, until: Millis) -> Result<(), Failure> {
        if !self.started {
            self.started = true;
            for i in 0..self.prs.len() {
                self.start_pr(i, false);
            }
            for i in 0..self.scenario.pes {
                self.join_pe(i % self.scenario.pools);
            }
            for k in 0..self.scenario.pus {
                self.start_pu(k);
            }
            for (at, fault) in std::mem::take(&mut self.scenario.timeline) {
                self.net.schedule(at, Event::Fault(fault));
            }
        }
        while let Some(event) = self.net.pop(until) {
            self.summary.events += 1;
            let touched = self.step(event);
            // Only a PR's step changes what it publishes.
            match touched {
                Touched::Node(Node::Pr(i)) => self.track_pools(Some(i)),
                Touched::All => self.track_pools(None),
                Touched::Nothing | Touched::Node(_) => {}
            }
            if self.failure.is_none() {
                match touched {
                    Touched::Nothing => {}
                    Touched::Node(n) => self.check_step(Some(n)),
                    Touched::All => self.check_step(None),
                }
            }
            if let Some((invariant, detail)) = self.failure.take() {
                return Err(Failure {
                    seed: self.scenario.seed,
                    at: self.net.now(),
                    invariant,
                    detail,
                });
            }
        }
        Ok(())
    }

    /// Schedules `fault` now (focused tests drive their own faults).
    pub fn inject(&mut self, fault: Fault) {
        let now = self.now();
        self.net.schedule(now, Event::Fault(fault));
    }

    /// The simulated time.
    pub fn time(&self) -> Millis {
        self.now()
    }

    /// What the run did so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The scenario being run (its timeline is scheduled, and emptied, by the first run).
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// PR `i`'s current ID and every PE it holds with its home PR; `None` while it is down.
    pub fn handlespace(&self, i: usize) -> Option<(PrId, Entries)> {
        let pr = &self.prs[i];
        let cluster = pr.cluster.as_ref()?;
        let view = PrView {
            index: i,
            id: pr.id,
            cluster,
        };
        Some((pr.id, view.entries()))
    }

    /// The indices of the live PEs registered at PR `i`.
    pub fn registered_at(&self, i: usize) -> Vec<usize> {
        self.registered_pes(Some(Node::Pr(i)))
            .iter()
            .map(|p| p.index)
            .collect()
    }

    /// The ID of PE `index`.
    pub fn pe_id(&self, index: usize) -> PeId {
        self.pes[index].core.id()
    }

    fn now(&self) -> Millis {
        self.net.now()
    }

    fn fail(&mut self, invariant: &'static str, result: Result<(), String>) {
        if let Err(detail) = result
            && self.failure.is_none()
        {
            self.failure = Some((invariant, detail));
        }
    }

    /// Runs one event (or keeps it for a frozen PR); returns what it touched.
    fn step(&mut self, event: Event) -> Touched {
        if let Some(i) = self.frozen_recipient(&event) {
            match event {
                Event::Timer(_) => self.prs[i].timer_at = None,
                Event::Mailbox { from, to, .. } => {
                    self.prs[i].mail_due.remove(&(from, to));
                }
                e => self.prs[i].backlog.push(e),
            }
            return Touched::Nothing;
        }
        let touched = match &event {
            Event::Deliver { link, to, .. } => Touched::Node(self.net.links[*link].ends[*to].node),
            Event::Arrive(link) => Touched::Node(self.net.links[*link].ends[1].node),
            Event::Established(link) => Touched::Node(self.net.links[*link].ends[0].node),
            Event::Closed { link, side } => Touched::Node(self.net.links[*link].ends[*side].node),
            Event::Timer(node) => Touched::Node(*node),
            Event::Resolve(k) => Touched::Node(Node::Pu(*k)),
            Event::Fault(_) => Touched::All,
            Event::Datagram { to, .. } => Touched::Node(Node::Pr(*to)),
            Event::Mailbox { pr, .. } => Touched::Node(Node::Pr(*pr)),
            Event::Check(_) => Touched::Nothing,
        };
        match event {
            Event::Deliver { link, to, bytes } => self.deliver(link, to, bytes),
            Event::Arrive(link) => self.arrive(link),
            Event::Established(link) => self.established(link),
            Event::Closed { link, side } => self.closed(link, side),
            Event::Timer(node) => self.timer(node),
            Event::Resolve(k) => self.resolve(k),
            Event::Fault(f) => self.fault(f),
            Event::Datagram {
                to,
                incarnation,
                bytes,
            } => self.datagram(to, incarnation, &bytes),
            Event::Mailbox {
                pr,
                incarnation,
                from,
                to,
            } => self.mailbox(pr, incarnation, from, to),
            Event::Check(k) => self.check_obligation(k),
        }
        touched
    }

    /// The frozen PR an event is for, if it is for the current incarnation of a frozen PR (a
    /// connection attempt is accepted by its kernel all the same).
    fn frozen_recipient(&self, event: &Event) -> Option<usize> {
        let pr_end = |link: LinkId, side: usize| {
            let e = self.net.links[link].ends[side];
            match e.node {
                Node::Pr(i) => Some((i, e.incarnation)),
                _ => None,
            }
        };
        let (i, incarnation) = match *event {
            Event::Deliver { link, to, .. } => pr_end(link, to)?,
            Event::Closed { link, side } => pr_end(link, side)?,
            Event::Established(link) => pr_end(link, 0)?,
            Event::Timer(Node::Pr(i)) => (i, self.prs[i].incarnation),
            Event::Datagram {
                to, incarnation, ..
            } => (to, incarnation),
            Event::Mailbox {
                pr, incarnation, ..
            } => (pr, incarnation),
            _ => return None,
        };
        let pr = &self.prs[i];
        (pr.frozen && pr.incarnation == incarnation && pr.cluster.is_some()).then_some(i)
    }

    // ---- timers ----

    fn next_timeout(&self, node: Node) -> Option<Millis> {
        match node {
            Node::Pr(i) => self.prs[i].cluster.as_ref()?.next_timeout(),
            Node::Pe(i) => {
                let pe = &self.pes[i];
                (!pe.dead).then(|| pe.core.poll_timeout()).flatten()
            }
            Node::Pu(k) => self.pus[k].core.poll_timeout(),
        }
    }

    fn timer_slot(&mut self, node: Node) -> &mut Option<Millis> {
        match node {
            Node::Pr(i) => &mut self.prs[i].timer_at,
            Node::Pe(i) => &mut self.pes[i].timer_at,
            Node::Pu(k) => &mut self.pus[k].timer_at,
        }
    }

    /// Makes sure a timer event is queued for the node's next deadline (after a timer fired: not
    /// before the next millisecond, as a core's deadline is only a lower bound).
    fn reschedule(&mut self, node: Node, in_timer: bool) {
        let Some(deadline) = self.next_timeout(node) else {
            return;
        };
        let now = self.now();
        let at = deadline.max(now + u64::from(in_timer));
        let slot = self.timer_slot(node);
        if slot.is_some_and(|t| t <= at && t >= now) {
            return;
        }
        *slot = Some(at);
        self.net.schedule(at, Event::Timer(node));
    }

    fn timer(&mut self, node: Node) {
        let now = self.now();
        if *self.timer_slot(node) != Some(now) {
            return;
        }
        *self.timer_slot(node) = None;
        match node {
            Node::Pr(i) => {
                let _span = self.pr_span(i);
                let Some(cluster) = self.prs[i].cluster.as_mut() else {
                    return;
                };
                let sent = cluster.on_timer(now);
                self.pr_output(i, sent, true);
            }
            Node::Pe(i) => {
                if self.pes[i].dead {
                    return;
                }
                self.pes[i].core.handle_timeout(now);
                self.pe_output(i);
                self.reschedule(node, true);
            }
            Node::Pu(k) => {
                self.pus[k].core.handle_timeout(now);
                self.pu_output(k);
                self.reschedule(node, true);
            }
        }
    }

    // ---- faults ----

    fn fault(&mut self, fault: Fault) {
        let now = self.now();
        tracing::debug!(t = now, ?fault, "fault");
        match fault {
            Fault::Crash(i) | Fault::Vanish(i) => {
                let silent = matches!(fault, Fault::Vanish(_));
                if self.prs[i].cluster.is_some() && !self.prs[i].frozen {
                    self.oblige_takeover(i);
                }
                self.crash_pr(i, silent);
            }
            Fault::Restart(i) | Fault::RestartSameId(i) => {
                if self.prs[i].cluster.is_none() {
                    self.start_pr(i, matches!(fault, Fault::RestartSameId(_)));
                }
            }
            Fault::Freeze(i) => self.freeze_pr(i),
            Fault::Thaw(i) => self.thaw_pr(i),
            Fault::Partition { prs, salt } => {
                if self.cut.is_some() {
                    return;
                }
                self.summary.partitions += 1;
                self.partitions.push((now, Millis::MAX));
                self.cut = Some(Cut { prs, salt });
                for link in self.net.active() {
                    let l = &self.net.links[link];
                    if !l.broken && self.separated(l.ends[0].node, l.ends[1].node) {
                        // Heartbeats find out.
                        self.cut_link(link, 300, 1_700);
                    }
                }
            }
            Fault::Heal => self.heal(),
            Fault::Spike(extra) => {
                self.spike = extra;
                self.record_delays();
            }
            Fault::SpikeEnd => {
                self.spike = 0;
                self.record_delays();
            }
            Fault::Slow { pr, extra } => {
                self.slow = Some((pr, extra));
                self.record_delays();
            }
            Fault::SlowEnd => {
                self.slow = None;
                self.record_delays();
            }
            Fault::Duplicates(on) => self.duplicates = on,
            Fault::PeLeave { pe, graceful } => self.leave_pe(pe, graceful),
            Fault::PeJoin { pool } => self.join_pe(pool),
            Fault::Quiet => {
                self.heal();
                self.spike = 0;
                self.slow = None;
                self.record_delays();
                self.duplicates = false;
                for i in 0..self.prs.len() {
                    self.thaw_pr(i);
                    if self.prs[i].cluster.is_none() {
                        self.start_pr(i, false);
                    }
                }
            }
            Fault::Settle => {
                self.summary.settles += 1;
                self.check_settled();
            }
        }
    }

    fn heal(&mut self) {
        if self.cut.take().is_some()
            && let Some(p) = self.partitions.last_mut()
        {
            p.1 = self.net.now();
        }
    }

    fn record_delays(&mut self) {
        let extra = self.spike + self.slow.map_or(0, |(_, e)| e);
        self.delays.push((self.net.now(), extra));
    }
}

fn pool_handle(pool: usize) -> Vec<u8> {
    format!("pool-{pool}").into_bytes()
}

fn endpoint_end(node: Node, conn: ConnId) -> End {
    End {
        node,
        incarnation: 0,
        handle: Some(Handle::Conn(conn)),
        open: true,
    }
}

/// RFC 5352 timers scaled to the simulation; a PE never gives up.
fn endpoint_timers() -> Timers {
    Timers {
        t1_request: 1_500,
        t2_registration: 1_500,
        t3_deregistration: 1_500,
        t5_server_hunt: 1_000,
        t7_announce: 5_000,
        retran_max: 4_000,
        max_reg_attempt: u32::MAX,
        max_request_retransmit: 2,
        ..Timers::default()
    }
}
