//! The simulated network and clock: the event queue ordered by (time, sequence number), so a run
//! is the same bit for bit for the same seed, and the associations between nodes, which keep the
//! order of each direction (like SCTP streams and TCP) and break instead of losing messages.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rserpool_endpoint::ConnId;
use rserpool_handlespace::{AssociationId, Millis};

/// A node of the simulation, by its index among its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// A pool registrar.
    Pr(usize),
    /// A pool element.
    Pe(usize),
    /// A pool user.
    Pu(usize),
}

/// The index of a link in [`Net::links`].
pub type LinkId = usize;

/// What happens at a point of simulated time.
#[derive(Debug)]
pub enum Event {
    /// A message arrives at side `to` of a link.
    Deliver {
        /// The link.
        link: LinkId,
        /// The receiving side (0: initiator, 1: acceptor).
        to: usize,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A connection attempt reaches the acceptor.
    Arrive(LinkId),
    /// The initiator learns that its connection is up.
    Established(LinkId),
    /// Side `side` learns that the link is gone (or that its attempt failed).
    Closed {
        /// The link.
        link: LinkId,
        /// The side told.
        side: usize,
    },
    /// A node's timers are due.
    Timer(Node),
    /// A pool user resolves a pool handle.
    Resolve(usize),
    /// A scheduled fault or phase change.
    Fault(crate::faults::Fault),
    /// A presence datagram reaches PR `to` (if it is still incarnation `incarnation`).
    Datagram {
        /// The PR's index.
        to: usize,
        /// Its incarnation when the datagram left.
        incarnation: u32,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// Worker `to` of PR `pr` drains its mailbox from worker `from` (asynchronous mailboxes).
    Mailbox {
        /// The PR's index.
        pr: usize,
        /// Its incarnation when the forwards were queued.
        incarnation: u32,
        /// The sending worker.
        from: usize,
        /// The receiving worker.
        to: usize,
    },
    /// The deadline of liveness obligation `k` (an index into the world's obligations).
    Check(usize),
}

struct Scheduled {
    at: Millis,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed: the earliest (time, sequence) is the greatest, for the max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// How a node names its end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handle {
    /// A PR's association.
    Association(AssociationId),
    /// An endpoint's connection.
    Conn(ConnId),
}

/// One end of a link.
#[derive(Clone, Copy, Debug)]
pub struct End {
    /// The node.
    pub node: Node,
    /// The node's incarnation when the end was made (a restarted PR's old links are dead).
    pub incarnation: u32,
    /// Its name for the link; `None` on the acceptor until the attempt arrives.
    pub handle: Option<Handle>,
    /// The node still uses the link.
    pub open: bool,
}

/// An association (SCTP) or connection (TCP) between two nodes.
#[derive(Debug)]
pub struct Link {
    /// Initiator (0) and acceptor (1).
    pub ends: [End; 2],
    /// Cut by a crash or a partition: messages in flight are dropped.
    pub broken: bool,
    /// The initiator was told the link is up.
    pub established: bool,
    /// Between two PRs.
    pub enrp: bool,
    /// Arrival time of the last message scheduled in each direction (index: receiving side).
    pub last_arrival: [Millis; 2],
}

impl Link {
    /// Whether a message can still reach side `to`.
    pub fn delivers_to(&self, to: usize) -> bool {
        !self.broken && self.ends[to].open && self.ends[to].handle.is_some()
    }
}

/// The clock, the event queue and the links.
#[derive(Default)]
pub struct Net {
    now: Millis,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    /// Every link ever made (closed ones stay, so IDs are never reused).
    pub links: Vec<Link>,
    /// The links not yet done with (not broken, an end still open), in ID order.
    active: BTreeSet<LinkId>,
    by_handle: BTreeMap<(Node, u32, u64), LinkId>,
}

impl Net {
    /// The current simulated time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Schedules `event` at `at` (not before now); events at the same time run in the order
    /// they were scheduled.
    pub fn schedule(&mut self, at: Millis, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            event,
        });
    }

    /// The next event, advancing the clock to it; `None` once nothing is due by `until`.
    pub fn pop(&mut self, until: Millis) -> Option<Event> {
        if self.queue.peek()?.at > until {
            return None;
        }
        let s = self.queue.pop()?;
        self.now = s.at;
        Some(s.event)
    }

    /// A new link from `initiator` (with its handle) to `acceptor`.
    pub fn open(
        &mut self,
        initiator: End,
        acceptor: Node,
        acceptor_incarnation: u32,
        enrp: bool,
    ) -> LinkId {
        let id = self.links.len();
        self.links.push(Link {
            ends: [
                initiator,
                End {
                    node: acceptor,
                    incarnation: acceptor_incarnation,
                    handle: None,
                    open: true,
                },
            ],
            broken: false,
            established: false,
            enrp,
            last_arrival: [self.now; 2],
        });
        self.bind(id, 0);
        self.active.insert(id);
        id
    }

    /// The links not yet done with, in ID order.
    pub fn active(&self) -> Vec<LinkId> {
        self.active.iter().copied().collect()
    }

    /// Iterates the links not yet done with.
    pub fn active_links(&self) -> impl Iterator<Item = &Link> + '_ {
        self.active.iter().map(|&l| &self.links[l])
    }

    /// Forgets `link` from the active set once it is broken or closed at both ends.
    pub fn retire(&mut self, link: LinkId) {
        let l = &self.links[link];
        if l.broken || (!l.ends[0].open && !l.ends[1].open) {
            self.active.remove(&link);
        }
    }

    /// Registers side `side`'s handle for lookups.
    pub fn bind(&mut self, link: LinkId, side: usize) {
        let e = self.links[link].ends[side];
        if let Some(h) = e.handle {
            self.by_handle.insert((e.node, e.incarnation, raw(h)), link);
        }
    }

    /// The link a node names by `handle`.
    pub fn find(&self, node: Node, incarnation: u32, handle: Handle) -> Option<LinkId> {
        self.by_handle
            .get(&(node, incarnation, raw(handle)))
            .copied()
    }

    /// Sends `bytes` from side `from` of `link`, arriving `delay` from now but never before an
    /// earlier message of the same direction. Returns the arrival time.
    pub fn send(&mut self, link: LinkId, from: usize, bytes: Vec<u8>, delay: Millis) -> Millis {
        let to = 1 - from;
        let l = &mut self.links[link];
        let at = (self.now + delay).max(l.last_arrival[to]);
        l.last_arrival[to] = at;
        self.schedule(at, Event::Deliver { link, to, bytes });
        at
    }
}

fn raw(h: Handle) -> u64 {
    match h {
        Handle::Association(a) => a.get(),
        Handle::Conn(c) => c.0,
    }
}
