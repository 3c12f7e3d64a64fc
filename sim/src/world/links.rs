//! The simulated links: transmissions with their delays, deliveries and arrivals, associations
//! established and closed, links cut by faults, multicast and datagrams.

use super::*;

impl World {
    /// Sends on a link from `side`, with the delay of the moment; ENRP announcements may go
    /// twice.
    pub(super) fn transmit(&mut self, link: LinkId, side: usize, bytes: Vec<u8>) {
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
    pub(super) fn delay(&mut self, from: Node) -> Millis {
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
    pub(super) fn close_by(&mut self, link: LinkId, side: usize) {
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
    pub(super) fn cut_link(&mut self, link: LinkId, min: Millis, spread: Millis) {
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
    pub(super) fn multicast(&mut self, i: usize, bytes: &[u8]) {
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
    pub(super) fn datagram(&mut self, j: usize, incarnation: u32, bytes: &[u8]) {
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

    pub(super) fn side_of(&self, link: LinkId, node: Node) -> usize {
        usize::from(self.net.links[link].ends[0].node != node)
    }

    pub(super) fn alive(&self, end: &End) -> bool {
        match end.node {
            Node::Pr(i) => {
                self.prs[i].cluster.is_some() && self.prs[i].incarnation == end.incarnation
            }
            Node::Pe(i) => !self.pes[i].dead,
            Node::Pu(_) => true,
        }
    }

    pub(super) fn separated(&self, a: Node, b: Node) -> bool {
        self.cut.as_ref().is_some_and(|c| c.side(a) != c.side(b))
    }

    // ---- network events into the nodes ----

    pub(super) fn deliver(&mut self, link: LinkId, to: usize, bytes: Vec<u8>) {
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
                self.pu_receives(k, link, &bytes);
                self.pus[k].core.on_message(c, &bytes, now);
                self.pu_output(k);
            }
            _ => {}
        }
    }

    /// A connection attempt reaches its PR: accepted if the PR is up and reachable.
    pub(super) fn arrive(&mut self, link: LinkId) {
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

    pub(super) fn established(&mut self, link: LinkId) {
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
    pub(super) fn closed(&mut self, link: LinkId, side: usize) {
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
                self.note_closed(i, a);
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
}
