//! The simulated operating scope: the PRs ([`Cluster`]s), PEs and PUs, how their outputs become
//! network events and how events become their inputs (and, with asynchronous mailboxes, how the
//! forwards between a PR's workers are delivered), the faults as they happen (a frozen PR's
//! backlog, a vanished host's half-open associations), the invariant checks after every step,
//! and the liveness obligations a fault starts, judged at their deadline.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rserpool_endpoint::pe::{self, PeEvent, PeState, PoolElement};
use rserpool_endpoint::pu::{self, PoolUser, PuEvent};
use rserpool_endpoint::{Action, ConnId, Registrar, Timers};
use rserpool_handlespace::{Limits, Millis, PeId, PrId, Rng};
use rserpool_protocol::{Generation, Policy};
use rserpool_registrar::core::cluster::{Cluster, Sent};
use rserpool_registrar::core::{AssociationInfo, Connect, CoreConfig, EnrpConfig, Target};
use rserpool_registrar::metrics::Protocol;
use rserpool_registrar::url::{Transport, TransportUrl};

use crate::Failure;
use crate::faults::{Fault, Scenario};
use crate::invariants::{
    self, Entries, HEARTBEAT_INTERVAL, Ledger, MAX_TIME_LAST_HEARD, MAX_TIME_NO_RESPONSE,
    MENTOR_DISCOVERY_TIMEOUT, PeRecord, PrView, RECONNECT_INTERVAL, REGISTRATION_LIFE,
    RegisteredPe, TAKEOVER_EXPIRY,
};
use crate::net::{End, Event, Handle, LinkId, Net, Node};

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
    cluster: Option<Cluster>,
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

    // ---- nodes ----

    fn pr_config(&self, i: usize, id: PrId) -> CoreConfig {
        let url = |j: usize, port| TransportUrl {
            transport: Transport::Tcp,
            address: SocketAddr::new(self.prs[j].address, port),
            generation: Generation::Rfc,
        };
        let mut c = CoreConfig::new(id);
        c.keep_alive_interval = 1_000;
        // Longer than the worst round trip of the fault model (spike 400 ms and slow PR 300 ms
        // one way): a PE is never removed for a keep-alive that is only late.
        c.keep_alive_timeout = 2_000;
        c.listeners = vec![url(i, ASAP_PORT)];
        // Static peers, or none and presence datagrams to a multicast group to find them.
        let (peers, presence_targets) = if self.scenario.discovery {
            let group = TransportUrl {
                transport: Transport::Udp,
                address: PRESENCE_GROUP,
                generation: Generation::Rfc,
            };
            (Vec::new(), vec![group])
        } else {
            let peers = (0..self.prs.len())
                .filter(|&j| j != i)
                .map(|j| url(j, ENRP_PORT))
                .collect();
            (peers, Vec::new())
        };
        c.enrp = EnrpConfig {
            local: vec![url(i, ENRP_PORT)],
            peers,
            presence_targets,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            max_time_last_heard: MAX_TIME_LAST_HEARD,
            max_time_no_response: MAX_TIME_NO_RESPONSE,
            mentor_discovery_timeout: MENTOR_DISCOVERY_TIMEOUT,
            takeover_expiry: TAKEOVER_EXPIRY,
            reconnect_interval: RECONNECT_INTERVAL,
            max_pes_per_table_response: self.scenario.table_page,
            takeover_suggestion: false,
        };
        c
    }

    /// Starts PR `i` with an empty handlespace, and with the PR ID it had (`same_id`, after a
    /// crash) or a fresh one. A start after a crash obliges it to resolve every live PE by its
    /// start-up bound.
    fn start_pr(&mut self, i: usize, same_id: bool) {
        let id = if same_id && self.prs[i].id.0 != 0 {
            self.prs[i].id
        } else {
            loop {
                let id = PrId(1 + self.rng.below(u64::from(u32::MAX) - 1));
                if self.prs.iter().all(|p| p.id != id) {
                    break id;
                }
            }
        };
        let config = self.pr_config(i, id);
        let seed = self.rng.next_u64();
        let _span = tracing::debug_span!("pr", i, %id).entered();
        let mut cluster = Cluster::new(self.prs[i].workers, config, Limits::default(), seed);
        cluster.set_asynchronous(self.scenario.async_mailboxes);
        let now = self.now();
        let sent = cluster.start(now);
        tracing::debug!(t = now, pr = i, %id, "PR starts");
        let pr = &mut self.prs[i];
        pr.id = id;
        pr.cluster = Some(cluster);
        pr.timer_at = None;
        pr.vanished = false;
        if pr.incarnation > 0 {
            let incarnation = pr.incarnation;
            self.pr_changes.push((now, i, Some(id)));
            let pages = self.table_pages();
            self.oblige(
                Obligation::Startup {
                    pr: i,
                    incarnation,
                    since: now,
                },
                invariants::startup_bound(0, pages),
            );
        }
        self.pr_output(i, sent, false);
    }

    /// Handle table pages a whole transfer of every PE ever started takes.
    fn table_pages(&self) -> u64 {
        (self.ledger.pes.len() as u64).div_ceil(self.scenario.table_page as u64)
    }

    /// PR `i` is gone (crashed, vanished) or frozen: its PEs are to be taken over.
    fn oblige_takeover(&mut self, i: usize) {
        let now = self.now();
        self.pr_changes.push((now, i, None));
        let dead = self.prs[i].id;
        self.oblige(
            Obligation::Takeover {
                pr: i,
                dead,
                since: now,
            },
            invariants::takeover_bound(0),
        );
    }

    /// PR `i` dies; its kernel aborts its associations at once, or (`silent`: the host is
    /// gone) nothing tells their other ends, which stay half-open. Returns whether it was up.
    fn crash_pr(&mut self, i: usize, silent: bool) -> bool {
        if self.prs[i].cluster.is_none() {
            return false;
        }
        tracing::debug!(t = self.now(), pr = i, id = %self.prs[i].id, silent, "PR crashes");
        self.summary.crashes += 1;
        if self.prs[i].frozen {
            self.thaw_record(i, false);
        }
        let incarnation = self.prs[i].incarnation;
        let pr = &mut self.prs[i];
        pr.cluster = None;
        pr.incarnation += 1;
        pr.timer_at = None;
        pr.frozen = false;
        pr.backlog.clear();
        pr.mail_due.clear();
        pr.vanished = silent;
        for link in self.net.active() {
            let l = &self.net.links[link];
            if l.broken {
                continue;
            }
            for side in 0..2 {
                let e = l.ends[side];
                if e.node == Node::Pr(i) && e.incarnation == incarnation {
                    self.net.links[link].ends[side].open = false;
                    if silent {
                        self.net.retire(link);
                    } else {
                        // The kernel aborts the dead process's associations at once.
                        self.cut_link(link, 1, 20);
                    }
                    break;
                }
            }
        }
        true
    }

    /// PR `i` stops processing (SIGSTOP).
    fn freeze_pr(&mut self, i: usize) {
        if self.prs[i].cluster.is_none() || self.prs[i].frozen {
            return;
        }
        tracing::debug!(t = self.now(), pr = i, id = %self.prs[i].id, "PR frozen");
        self.summary.freezes += 1;
        self.prs[i].frozen = true;
        self.freezes.push((self.now(), Millis::MAX, i));
        self.oblige_takeover(i);
    }

    /// Ends the record of PR `i`'s freeze, which it survived (`revived`) or not.
    fn thaw_record(&mut self, i: usize, revived: bool) {
        let now = self.now();
        if let Some(f) = self
            .freezes
            .iter_mut()
            .find(|f| f.1 == Millis::MAX && f.2 == i)
        {
            f.1 = now;
        }
        let id = self.prs[i].id;
        self.pr_changes.push((now, i, revived.then_some(id)));
    }

    /// A frozen PR goes on (SIGCONT): what waited for it is handled now, in arrival order, then
    /// its timers and mailboxes (a daemon's loop turn reads its sockets first).
    fn thaw_pr(&mut self, i: usize) {
        if !self.prs[i].frozen {
            return;
        }
        tracing::debug!(t = self.now(), pr = i, id = %self.prs[i].id, backlog = self.prs[i].backlog.len(), "PR thawed");
        self.thaw_record(i, true);
        self.prs[i].frozen = false;
        let now = self.now();
        for event in std::mem::take(&mut self.prs[i].backlog) {
            self.net.schedule(now, event);
        }
        self.prs[i].timer_at = None;
        self.reschedule(Node::Pr(i), false);
        self.schedule_mail(i);
    }

    fn pe_config(&mut self, pool: usize) -> pe::Config {
        let mut registrars: Vec<Registrar> = self
            .prs
            .iter()
            .map(|p| Registrar::tcp(SocketAddr::new(p.address, ASAP_PORT)))
            .collect();
        let r = self.rng.below(registrars.len() as u64) as usize;
        registrars.rotate_left(r);
        let mut c = pe::Config::new(registrars, pool_handle(pool));
        c.registration_life = REGISTRATION_LIFE;
        c.reregistration_interval = Some(self.scenario.reregistration);
        c.policy = Policy::RoundRobin;
        c.timers = endpoint_timers();
        c.transport.port = 7_000;
        let id = loop {
            let id = PeId(1 + self.rng.below(u64::from(u32::MAX) - 1));
            if !self.ledger.pes.contains_key(&id) {
                break id;
            }
        };
        c.pe_id = Some(id);
        c
    }

    fn join_pe(&mut self, pool: usize) {
        let index = self.pes.len();
        let mut config = self.pe_config(pool);
        let address = IpAddr::V4(Ipv4Addr::new(
            10,
            1,
            (index / 250) as u8,
            (index % 250) as u8 + 1,
        ));
        config.transport.addresses = vec![address];
        let core = PoolElement::new(config, 0).expect("valid PE configuration");
        let now = self.now();
        tracing::debug!(t = now, pe = index, id = %core.id(), pool, "PE starts");
        self.ledger.pes.insert(
            core.id(),
            PeRecord {
                pool: pool_handle(pool),
                started: now,
                gone: None,
            },
        );
        self.pes.push(Pe {
            core,
            address,
            pool,
            dead: false,
            timer_at: None,
            registered_since: None,
        });
        self.pes[index].core.start(now);
        self.pe_output(index);
    }

    fn leave_pe(&mut self, index: usize, graceful: bool) {
        let now = self.now();
        let Some(pe) = self.pes.get_mut(index) else {
            return;
        };
        let id = pe.core.id();
        if pe.dead || self.ledger.pes[&id].gone.is_some() {
            return;
        }
        tracing::debug!(t = now, pe = index, %id, graceful, "PE leaves");
        self.ledger.pes.get_mut(&id).expect("started").gone = Some(now);
        if graceful && self.scope_whole_for(index) {
            self.oblige(
                Obligation::Deregistered {
                    id,
                    pool: pool_handle(self.pes[index].pool),
                    since: now,
                },
                invariants::deregistration_bound(0),
            );
        }
        if graceful {
            self.pes[index].core.deregister(now);
            self.pe_output(index);
            return;
        }
        self.pes[index].dead = true;
        self.pes[index].timer_at = None;
        for link in self.net.active() {
            let l = &self.net.links[link];
            if !l.broken && l.ends[0].node == Node::Pe(index) && l.ends[0].open {
                self.net.links[link].ends[0].open = false;
                self.cut_link(link, 1, 20);
            }
        }
    }

    fn start_pu(&mut self, k: usize) {
        let mut registrars: Vec<Registrar> = self
            .prs
            .iter()
            .map(|p| Registrar::tcp(SocketAddr::new(p.address, ASAP_PORT)))
            .collect();
        let r = self.rng.below(registrars.len() as u64) as usize;
        registrars.rotate_left(r);
        let mut config = pu::Config::new(registrars);
        config.timers = endpoint_timers();
        config.cache_stale = 0;
        let seed = self.rng.next_u64();
        self.pus.push(Pu {
            core: PoolUser::new(config, seed),
            timer_at: None,
        });
        let first = self.now() + 1_000 + self.rng.below(1_000);
        self.net.schedule(first, Event::Resolve(k));
    }

    fn resolve(&mut self, k: usize) {
        let now = self.now();
        let pool = self.rng.below(self.scenario.pools as u64) as usize;
        self.pus[k].core.resolve(&pool_handle(pool), None, now);
        self.pu_output(k);
        let next = now + 700 + self.rng.below(600);
        self.net.schedule(next, Event::Resolve(k));
    }

    // ---- outputs into the network ----

    /// Carries out a PR's output: messages, then aborts (after their messages), then new ENRP
    /// associations; closing an aborted association may send more.
    fn pr_output(&mut self, i: usize, mut sent: Vec<Sent>, in_timer: bool) {
        loop {
            let incarnation = self.prs[i].incarnation;
            for s in sent.drain(..) {
                match s.target {
                    Target::Association(a) => {
                        if let Some(link) =
                            self.net
                                .find(Node::Pr(i), incarnation, Handle::Association(a))
                        {
                            let side = self.side_of(link, Node::Pr(i));
                            self.transmit(link, side, s.bytes);
                        }
                    }
                    Target::UdpSend(to) if to == PRESENCE_GROUP => self.multicast(i, &s.bytes),
                    _ => {}
                }
            }
            let Some(cluster) = self.prs[i].cluster.as_mut() else {
                return;
            };
            let aborts = cluster.take_aborts();
            let connects = cluster.take_connects();
            if aborts.is_empty() && connects.is_empty() {
                break;
            }
            let now = self.net.now();
            for a in aborts {
                if let Some(link) = self
                    .net
                    .find(Node::Pr(i), incarnation, Handle::Association(a))
                {
                    let side = self.side_of(link, Node::Pr(i));
                    self.close_by(link, side);
                }
                let _span = self.pr_span(i);
                let cluster = self.prs[i].cluster.as_mut().expect("up");
                sent.extend(cluster.close(a, now));
            }
            for c in connects {
                self.connect_from_pr(i, c);
            }
        }
        self.schedule_mail(i);
        self.reschedule(Node::Pr(i), in_timer);
    }

    /// Queues a delivery 0-2 ms from now for every mailbox of PR `i` that holds forwards and
    /// has none queued (asynchronous mailboxes; FIFO per pair, pairs in any order).
    fn schedule_mail(&mut self, i: usize) {
        let pr = &self.prs[i];
        if pr.frozen {
            return;
        }
        let Some(cluster) = pr.cluster.as_ref() else {
            return;
        };
        let incarnation = pr.incarnation;
        for (from, to) in cluster.pending_mailboxes() {
            if self.prs[i].mail_due.insert((from, to)) {
                let at = self.now() + self.rng.below(invariants::MAILBOX_DELAY + 1);
                self.net.schedule(
                    at,
                    Event::Mailbox {
                        pr: i,
                        incarnation,
                        from,
                        to,
                    },
                );
            }
        }
    }

    /// Worker `to` of PR `i` drains its mailbox from worker `from`.
    fn mailbox(&mut self, i: usize, incarnation: u32, from: usize, to: usize) {
        if self.prs[i].incarnation != incarnation {
            return;
        }
        self.prs[i].mail_due.remove(&(from, to));
        self.summary.mailbox_batches += 1;
        let now = self.now();
        let sent = {
            let _span = self.pr_span(i);
            let Some(cluster) = self.prs[i].cluster.as_mut() else {
                return;
            };
            cluster.deliver_mailbox(from, to, now)
        };
        self.pr_output(i, sent, false);
    }

    fn connect_from_pr(&mut self, i: usize, c: Connect) {
        let end = End {
            node: Node::Pr(i),
            incarnation: self.prs[i].incarnation,
            handle: Some(Handle::Association(c.association)),
            open: true,
        };
        self.connect(end, c.url.address, true);
    }

    /// A connection attempt from `end` to the PR at `to`.
    fn connect(&mut self, end: End, to: SocketAddr, enrp: bool) {
        let target = self.prs.iter().position(|p| p.address == to.ip());
        let (node, incarnation) = match target {
            Some(t) => (Node::Pr(t), self.prs[t].incarnation),
            None => (end.node, end.incarnation),
        };
        let link = self.net.open(end, node, incarnation, enrp);
        let delay = self.delay(end.node);
        if target.is_none() {
            self.net.links[link].broken = true;
            self.net.retire(link);
            self.net
                .schedule(self.now() + delay, Event::Closed { link, side: 0 });
            return;
        }
        self.net.schedule(self.now() + delay, Event::Arrive(link));
    }

    /// Carries out an endpoint core's connect, send or close on the network; returns its event.
    fn endpoint_action<E>(&mut self, node: Node, action: Action<E>) -> Option<E> {
        match action {
            Action::Connect { conn, registrar } => {
                self.connect(endpoint_end(node, conn), registrar.address, false)
            }
            Action::Send { conn, message } => {
                if let Some(link) = self.net.find(node, 0, Handle::Conn(conn)) {
                    self.transmit(link, 0, message);
                }
            }
            Action::Close { conn } => {
                if let Some(link) = self.net.find(node, 0, Handle::Conn(conn)) {
                    self.close_by(link, 0);
                }
            }
            Action::Event(e) => return Some(e),
        }
        None
    }

    fn pe_output(&mut self, index: usize) {
        while let Some(action) = self.pes[index].core.poll_action() {
            if let Some(e) = self.endpoint_action(Node::Pe(index), action) {
                self.pe_event(index, e);
            }
        }
        let registrar = self.registrar_of(index);
        let pe = &mut self.pes[index];
        if pe.registered_since.map(|(pr, _)| pr) != registrar {
            pe.registered_since = registrar.map(|pr| (pr, self.net.now()));
        }
        self.reschedule(Node::Pe(index), false);
    }

    /// The PR PE `index` is registered at, as it sees it.
    fn registrar_of(&self, index: usize) -> Option<usize> {
        let p = &self.pes[index];
        if p.dead || p.core.state() != PeState::Registered {
            return None;
        }
        let registrar = p.core.registrar()?;
        self.prs
            .iter()
            .position(|r| r.address == registrar.address.ip())
    }

    fn pe_event(&mut self, index: usize, event: PeEvent) {
        let now = self.now();
        let id = self.pes[index].core.id();
        tracing::debug!(t = now, pe = index, %id, ?event, "PE event");
        if matches!(
            event,
            PeEvent::Failed(_) | PeEvent::Rejected { kept: false, .. }
        ) && let Some(r) = self.ledger.pes.get_mut(&id)
            && r.gone.is_none()
        {
            r.gone = Some(now);
        }
    }

    fn pu_output(&mut self, k: usize) {
        while let Some(action) = self.pus[k].core.poll_action() {
            let Some(event) = self.endpoint_action(Node::Pu(k), action) else {
                continue;
            };
            match event {
                PuEvent::Resolved {
                    pool_handle,
                    pool_elements,
                    cached,
                    ..
                } => {
                    self.summary.resolutions += 1;
                    let ids: Vec<PeId> = pool_elements.iter().map(|p| p.id).collect();
                    tracing::debug!(t = self.now(), pu = k, pool = %String::from_utf8_lossy(&pool_handle), ?ids, cached, "resolved");
                    let result = invariants::resolution_returns_only_registered_pes(
                        &self.ledger,
                        &pool_handle,
                        &ids,
                        self.now(),
                    );
                    self.fail("resolution_returns_only_registered_pes", result);
                }
                e => tracing::debug!(t = self.now(), pu = k, ?e, "PU event"),
            }
        }
        self.reschedule(Node::Pu(k), false);
    }

    /// Sends on a link from `side`, with the delay of the moment; ENRP announcements may go
    /// twice.
    fn transmit(&mut self, link: LinkId, side: usize, bytes: Vec<u8>) {
        let l = &self.net.links[link];
        if l.broken || !l.ends[side].open {
            return;
        }
        let from = l.ends[side].node;
        let duplicate = l.enrp
            && self.duplicates
            && bytes.first().is_some_and(|t| DUPLICATED_TYPES.contains(t))
            && self.rng.below(3) == 0;
        let delay = self.delay(from);
        if duplicate {
            self.net.send(link, side, bytes.clone(), delay);
        }
        self.net.send(link, side, bytes, delay);
    }

    /// A message's delay from `from`: 1-5 ms, plus the spike and the slow PR's extra.
    fn delay(&mut self, from: Node) -> Millis {
        let mut d = 1 + self.rng.below(5);
        if self.spike > 0 {
            d += self.rng.below(self.spike);
        }
        if let Some((pr, extra)) = self.slow
            && from == Node::Pr(pr)
        {
            d += self.rng.below(extra);
        }
        d
    }

    /// The owner of side `side` closes it; the other side learns after the messages in flight
    /// to it.
    fn close_by(&mut self, link: LinkId, side: usize) {
        let other = 1 - side;
        let l = &mut self.net.links[link];
        if !l.ends[side].open {
            return;
        }
        l.ends[side].open = false;
        if l.broken || !l.ends[other].open || l.ends[other].handle.is_none() {
            self.net.retire(link);
            return;
        }
        let at = l.last_arrival[other] + 1;
        l.last_arrival[other] = at;
        self.net.schedule(at, Event::Closed { link, side: other });
    }

    /// The link breaks: messages in flight are lost; each side still using it learns after
    /// `min..min+spread` ms.
    fn cut_link(&mut self, link: LinkId, min: Millis, spread: Millis) {
        self.net.links[link].broken = true;
        for side in 0..2 {
            let e = self.net.links[link].ends[side];
            if e.open && (e.handle.is_some() || side == 0) {
                let at = self.now() + min + self.rng.below(spread);
                self.net.schedule(at, Event::Closed { link, side });
            }
        }
        self.net.retire(link);
    }

    /// A presence datagram from PR `i` to the multicast group: each other PR on its side of a
    /// partition gets it after the usual delay, unless it is lost (`datagram_loss` percent).
    fn multicast(&mut self, i: usize, bytes: &[u8]) {
        for j in 0..self.prs.len() {
            if j == i || self.prs[j].cluster.is_none() || self.separated(Node::Pr(i), Node::Pr(j)) {
                continue;
            }
            if self.rng.below(100) < self.scenario.datagram_loss {
                self.summary.datagrams_lost += 1;
                continue;
            }
            let at = self.now() + self.delay(Node::Pr(i));
            let incarnation = self.prs[j].incarnation;
            self.net.schedule(
                at,
                Event::Datagram {
                    to: j,
                    incarnation,
                    bytes: bytes.to_vec(),
                },
            );
        }
    }

    /// A presence datagram arrives at PR `j`.
    fn datagram(&mut self, j: usize, incarnation: u32, bytes: &[u8]) {
        if self.prs[j].incarnation != incarnation || self.prs[j].cluster.is_none() {
            return;
        }
        let now = self.now();
        let sent = {
            let _span = self.pr_span(j);
            let cluster = self.prs[j].cluster.as_mut().expect("up");
            cluster.enrp_datagram(Generation::Rfc, bytes, now)
        };
        self.pr_output(j, sent, false);
    }

    /// A span naming PR `i` and the time around a call into it, so its own logs say who and
    /// when.
    fn pr_span(&self, i: usize) -> tracing::span::EnteredSpan {
        tracing::debug_span!("pr", i, id = %self.prs[i].id, t = self.now()).entered()
    }

    fn side_of(&self, link: LinkId, node: Node) -> usize {
        usize::from(self.net.links[link].ends[0].node != node)
    }

    fn alive(&self, end: &End) -> bool {
        match end.node {
            Node::Pr(i) => {
                self.prs[i].cluster.is_some() && self.prs[i].incarnation == end.incarnation
            }
            Node::Pe(i) => !self.pes[i].dead,
            Node::Pu(_) => true,
        }
    }

    fn separated(&self, a: Node, b: Node) -> bool {
        self.cut.as_ref().is_some_and(|c| c.side(a) != c.side(b))
    }

    // ---- network events into the nodes ----

    fn deliver(&mut self, link: LinkId, to: usize, bytes: Vec<u8>) {
        let l = &self.net.links[link];
        let end = l.ends[to];
        if let Node::Pr(i) = end.node
            && !l.broken
            && end.incarnation != self.prs[i].incarnation
            && self.prs[i].cluster.is_some()
        {
            // The host is up again and its kernel does not know the association: it answers
            // with a RST (ABORT), which breaks a half-open association left by a vanished PR.
            let delay = self.delay(Node::Pr(i));
            self.cut_link(link, delay, 1);
            return;
        }
        if !l.delivers_to(to) || !self.alive(&end) {
            return;
        }
        let now = self.now();
        match (end.node, end.handle) {
            (Node::Pr(i), Some(Handle::Association(a))) => {
                let _span = self.pr_span(i);
                let cluster = self.prs[i].cluster.as_mut().expect("alive");
                let sent = cluster.message(a, &bytes, now);
                self.pr_output(i, sent, false);
            }
            (Node::Pe(i), Some(Handle::Conn(c))) => {
                self.pes[i].core.on_message(c, &bytes, now);
                self.pe_output(i);
            }
            (Node::Pu(k), Some(Handle::Conn(c))) => {
                self.pus[k].core.on_message(c, &bytes, now);
                self.pu_output(k);
            }
            _ => {}
        }
    }

    /// A connection attempt reaches its PR: accepted if the PR is up and reachable.
    fn arrive(&mut self, link: LinkId) {
        let l = &self.net.links[link];
        let initiator = l.ends[0];
        if l.broken || !initiator.open || !self.alive(&initiator) {
            self.net.links[link].broken = true;
            self.net.retire(link);
            return;
        }
        let Node::Pr(t) = l.ends[1].node else {
            return;
        };
        let enrp = l.enrp;
        let reachable =
            self.prs[t].cluster.is_some() && !self.separated(initiator.node, Node::Pr(t));
        let delay = self.delay(Node::Pr(t));
        let now = self.now();
        if !reachable {
            // Refused; or, by a host that is gone, never answered until the attempt times out.
            let wait = if self.prs[t].vanished && self.prs[t].cluster.is_none() {
                CONNECT_TIMEOUT
            } else {
                delay
            };
            self.net.links[link].broken = true;
            self.net.retire(link);
            self.net
                .schedule(now + wait, Event::Closed { link, side: 0 });
            return;
        }
        let from = match initiator.node {
            Node::Pr(i) => SocketAddr::new(self.prs[i].address, ENRP_PORT),
            Node::Pe(i) => SocketAddr::new(self.pes[i].address, 5_000),
            Node::Pu(k) => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 2, 0, k as u8 + 1)), 5_000),
        };
        let pr = &mut self.prs[t];
        let worker = if enrp {
            0
        } else {
            self.rng.below(pr.workers as u64) as usize
        };
        let info = AssociationInfo {
            transport: Transport::Tcp,
            generation: Generation::Rfc,
            peer_addresses: vec![from],
            protocol: if enrp { Protocol::Enrp } else { Protocol::Asap },
        };
        let association = pr.cluster.as_mut().expect("up").open(worker, info, now);
        let incarnation = pr.incarnation;
        let l = &mut self.net.links[link];
        l.ends[1].handle = Some(Handle::Association(association));
        l.ends[1].incarnation = incarnation;
        let at = now + delay;
        l.last_arrival[0] = at;
        self.net.bind(link, 1);
        self.net.schedule(at, Event::Established(link));
    }

    fn established(&mut self, link: LinkId) {
        let l = &self.net.links[link];
        let initiator = l.ends[0];
        if l.broken || !initiator.open || !self.alive(&initiator) {
            return;
        }
        self.net.links[link].established = true;
        let Node::Pr(t) = self.net.links[link].ends[1].node else {
            return;
        };
        let now = self.now();
        match (initiator.node, initiator.handle) {
            (Node::Pr(i), Some(Handle::Association(a))) => {
                let peer = SocketAddr::new(self.prs[t].address, ENRP_PORT);
                let _span = self.pr_span(i);
                let cluster = self.prs[i].cluster.as_mut().expect("alive");
                let sent = cluster.connected(a, vec![peer], now);
                self.pr_output(i, sent, false);
            }
            (Node::Pe(i), Some(Handle::Conn(c))) => {
                let local = SocketAddr::new(self.pes[i].address, 5_000);
                self.pes[i].core.on_connected(c, Some(local), now);
                self.pe_output(i);
            }
            (Node::Pu(k), Some(Handle::Conn(c))) => {
                self.pus[k].core.on_connected(c, None, now);
                self.pu_output(k);
            }
            _ => {}
        }
    }

    /// Side `side` learns that the link is gone (or, for an initiator never told it was up,
    /// that the attempt failed).
    fn closed(&mut self, link: LinkId, side: usize) {
        let l = &self.net.links[link];
        let end = l.ends[side];
        let attempt_failed = side == 0 && !l.established;
        if !end.open || !self.alive(&end) {
            return;
        }
        self.net.links[link].ends[side].open = false;
        self.net.retire(link);
        let now = self.now();
        match (end.node, end.handle) {
            (Node::Pr(i), Some(Handle::Association(a))) => {
                let _span = self.pr_span(i);
                let cluster = self.prs[i].cluster.as_mut().expect("alive");
                let sent = cluster.close(a, now);
                self.pr_output(i, sent, false);
            }
            (Node::Pe(i), Some(Handle::Conn(c))) => {
                if attempt_failed {
                    self.pes[i].core.on_connect_failed(c, "refused".into());
                } else {
                    self.pes[i].core.on_closed(c, now);
                }
                self.pe_output(i);
            }
            (Node::Pu(k), Some(Handle::Conn(c))) => {
                if attempt_failed {
                    self.pus[k].core.on_connect_failed(c, "refused".into());
                } else {
                    self.pus[k].core.on_closed(c, now);
                }
                self.pu_output(k);
            }
            _ => {}
        }
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

    // ---- liveness obligations ----

    /// Records an obligation and judges it `bound` from now (later if delay faults stretch the
    /// bound meanwhile).
    fn oblige(&mut self, obligation: Obligation, bound: Millis) {
        let k = self.obligations.len();
        self.obligations.push(obligation);
        let at = self.now() + bound;
        self.net.schedule(at, Event::Check(k));
    }

    /// The most extra one-way delay in effect at some time in `from..=to`.
    fn max_extra_delay(&self, from: Millis, to: Millis) -> Millis {
        let before = self
            .delays
            .iter()
            .rev()
            .find(|(t, _)| *t <= from)
            .map_or(0, |(_, e)| *e);
        self.delays
            .iter()
            .filter(|(t, _)| *t > from && *t <= to)
            .map(|(_, e)| *e)
            .fold(before, Millis::max)
    }

    /// Whether one of `intervals` overlaps `from..=to`.
    fn overlaps(intervals: &[(Millis, Millis)], from: Millis, to: Millis) -> bool {
        intervals.iter().any(|&(a, b)| a <= to && b >= from)
    }

    /// Whether a PR was frozen at some time in `from..=to`.
    fn frozen_between(&self, from: Millis, to: Millis) -> bool {
        self.freezes.iter().any(|&(a, b, _)| a <= to && b >= from)
    }

    /// Whether a PR other than `except` crashed, started, froze or thawed in `from..=to`.
    fn others_changed(&self, except: Option<usize>, from: Millis, to: Millis) -> bool {
        self.pr_changes
            .iter()
            .any(|&(t, i, _)| t >= from && t <= to && Some(i) != except)
    }

    /// Whether PR ID `id` came back (a thaw, a restart with the same ID) after `from`.
    fn revived(&self, id: PrId, from: Millis) -> bool {
        self.pr_changes
            .iter()
            .any(|&(t, _, back)| t >= from && back == Some(id))
    }

    /// Whether the scope is whole for PE `index`'s deregistration: no partition, every PR up,
    /// not frozen, live and knowing the others; the PE registered over an intact association;
    /// and every PR holding it with its registrar as home.
    fn scope_whole_for(&self, index: usize) -> bool {
        if self.cut.is_some() || self.prs.iter().any(|p| p.frozen) {
            return false;
        }
        let Some(registrar) = self.registrar_of(index) else {
            return false;
        };
        if !self.association_intact(index, registrar) {
            return false;
        }
        let views = self.views();
        if invariants::scope_formed(&views, self.prs.len()).is_err() {
            return false;
        }
        let pe = &self.pes[index];
        let (pool, id) = (pool_handle(pe.pool), pe.core.id());
        let home = self.prs[registrar].id;
        views.iter().all(|v| {
            v.cluster
                .workers()
                .iter()
                .find_map(|w| w.shard().entry(&pool, id).map(|e| e.home_pr))
                == Some(home)
        })
    }

    /// Judges obligation `k` at its deadline, unless a partition, a freeze or another PR's
    /// crash or restart got in the way (then its bound does not apply).
    fn check_obligation(&mut self, k: usize) {
        let now = self.now();
        let obligation = self.obligations[k].clone();
        let since = obligation.since();
        // A message sent after a delay fault ended still arrives after those sent before it on
        // its association: the delays of the last longest one-way delay before count too.
        let extra = self.max_extra_delay(since.saturating_sub(invariants::MAX_ONE_WAY), now);
        let bound = match &obligation {
            Obligation::Startup { .. } => invariants::startup_bound(extra, self.table_pages()),
            Obligation::Takeover { .. } => invariants::takeover_bound(extra),
            Obligation::Deregistered { .. } => invariants::deregistration_bound(extra),
        };
        if now < since + bound {
            self.net.schedule(since + bound, Event::Check(k));
            return;
        }
        if Self::overlaps(&self.partitions, since, now) {
            return;
        }
        match obligation {
            Obligation::Startup {
                pr,
                incarnation,
                since,
            } => {
                if self.prs[pr].incarnation != incarnation
                    || self.prs[pr].cluster.is_none()
                    || self.frozen_between(since, now)
                {
                    return;
                }
                let settled = now - invariants::replication_bound(extra);
                let live: Vec<RegisteredPe> = self
                    .registered_pes(None)
                    .into_iter()
                    .filter(|p| {
                        p.since <= settled
                            && !self.prs[p.registrar].frozen
                            && self.association_intact(p.index, p.registrar)
                    })
                    .collect();
                self.summary.liveness_checks += 1;
                let views = self.views();
                let view = views.iter().find(|v| v.index == pr).expect("up");
                let r = invariants::restarted_pr_resolves_live_pes(view, &live, since, now);
                drop(views);
                self.fail("restarted_pr_resolves_live_pes", r);
            }
            Obligation::Takeover { pr, dead, since } => {
                // The other PRs were whole from a detection time before: a death not yet
                // detected, or a peer still frozen, blocks a takeover until it expires
                // (every live peer must acknowledge it, RFC 5353 §3.5.1).
                let calm =
                    since.saturating_sub(invariants::takeover_bound(invariants::MAX_EXTRA_DELAY));
                if self.revived(dead, since)
                    || self.others_changed(Some(pr), calm, now)
                    || self.freezes.iter().any(|&(a, b, i)| {
                        // Its own freeze is the fault; a later incarnation's is another PR's.
                        a <= now && b >= calm && !(i == pr && a <= since)
                    })
                    || Self::overlaps(&self.partitions, calm, now)
                {
                    return;
                }
                self.summary.liveness_checks += 1;
                let views: Vec<PrView<'_>> =
                    self.views().into_iter().filter(|v| v.index != pr).collect();
                let r = invariants::dead_pr_pes_taken_over(&views, dead, since, now);
                drop(views);
                self.fail("dead_pr_pes_taken_over", r);
            }
            Obligation::Deregistered { id, pool, since } => {
                if self.others_changed(None, since, now) || self.frozen_between(since, now) {
                    return;
                }
                self.summary.liveness_checks += 1;
                let views = self.views();
                let r = invariants::deregistered_pe_gone(&views, &pool, id, since, now);
                drop(views);
                self.fail("deregistered_pe_gone", r);
            }
        }
    }

    // ---- invariants ----

    fn views(&self) -> Vec<PrView<'_>> {
        self.prs
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                p.cluster.as_ref().map(|cluster| PrView {
                    index,
                    id: p.id,
                    cluster,
                })
            })
            .collect()
    }

    /// The PEs registered at a PR, all of them or those the last step touched (`only`: a PE, or
    /// the PEs registered at a PR).
    fn registered_pes(&self, only: Option<Node>) -> Vec<RegisteredPe> {
        let mut registered = Vec::new();
        for (i, p) in self.pes.iter().enumerate() {
            if only.is_some_and(|n| matches!(n, Node::Pe(j) if j != i)) {
                continue;
            }
            let Some(pr) = self.registrar_of(i) else {
                continue;
            };
            if only.is_some_and(|n| matches!(n, Node::Pr(k) if k != pr)) {
                continue;
            }
            registered.push(RegisteredPe {
                id: p.core.id(),
                pool: pool_handle(p.pool),
                index: i,
                registrar: pr,
                since: p.registered_since.map_or(self.net.now(), |(_, t)| t),
            });
        }
        registered
    }

    /// Whether PE `pe` has an intact association (established, unbroken, open at both ends) with
    /// the current incarnation of PR `pr`.
    fn association_intact(&self, pe: usize, pr: usize) -> bool {
        let incarnation = self.prs[pr].incarnation;
        self.net.active_links().any(|l| {
            l.ends[0].node == Node::Pe(pe)
                && l.ends[0].open
                && l.established
                && !l.broken
                && l.ends[1].open
                && l.ends[1].node == Node::Pr(pr)
                && l.ends[1].incarnation == incarnation
        })
    }

    /// The cheap invariants, over what the last step touched (`None`: everything): a PR's
    /// handlespace is checked after every step of that PR (each PR runs its timers at least
    /// every ENRP tick, so a PE held too long is found within a tick), a PE after every step
    /// of that PE.
    fn check_step(&mut self, touched: Option<Node>) {
        if matches!(touched, Some(Node::Pu(_))) {
            return;
        }
        let now = self.now();
        let views: Vec<PrView<'_>> = self
            .views()
            .into_iter()
            .filter(|v| !matches!(touched, Some(Node::Pr(i)) if i != v.index))
            .collect();
        // A frozen PR answers no resolution and runs no expiry timer until it goes on.
        let r = if matches!(touched, Some(Node::Pe(_))) {
            Ok(())
        } else {
            let running: Vec<PrView<'_>> = views
                .iter()
                .filter(|v| !self.prs[v.index].frozen)
                .map(|v| PrView {
                    index: v.index,
                    id: v.id,
                    cluster: v.cluster,
                })
                .collect();
            invariants::handlespaces_hold_only_registered_pes(&self.ledger, &running, now)
        };
        let registered = self.registered_pes(touched);
        let r2 = invariants::registrars_hold_their_pes(&registered, &views, |pe| {
            self.association_intact(pe.index, pe.registrar)
        });
        drop(views);
        self.fail("handlespaces_hold_only_registered_pes", r);
        self.fail("registrars_hold_their_pes", r2);
    }

    fn check_settled(&mut self) {
        let views = self.views();
        let registered = self.registered_pes(None);
        let checks = [
            (
                "scope_formed",
                invariants::scope_formed(&views, self.prs.len()),
            ),
            (
                "live_pes_resolvable_everywhere",
                invariants::live_pes_resolvable_everywhere(&self.ledger, &registered, &views),
            ),
            ("no_pe_owned_twice", invariants::no_pe_owned_twice(&views)),
            (
                "handlespaces_converge",
                invariants::handlespaces_converge(&views),
            ),
        ];
        drop(views);
        for (name, result) in checks {
            self.fail(name, result);
        }
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
