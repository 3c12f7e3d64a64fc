//! The simulated nodes' lives and outputs: PRs started, crashed, frozen and thawed, PEs joining
//! and leaving, PUs resolving, and what each one's output becomes (transmissions, connections,
//! mailbox deliveries between a PR's workers).

use super::*;

impl World {
    // ---- nodes ----

    pub(super) fn pr_config(&self, i: usize, id: PrId) -> CoreConfig {
        let url = |j: usize, port| TransportUrl {
            transport: Transport::Tcp,
            address: SocketAddr::new(self.prs[j].address, port),
            generation: Generation::Rfc,
            tls: None,
        };
        let mut c = CoreConfig::new(id);
        c.keep_alive_interval = 1_000;
        // Longer than the worst round trip of the fault model (spike 400 ms and slow PR 300 ms
        // one way): a PE is never removed for a keep-alive that is only late.
        c.keep_alive_timeout = 2_000;
        c.listeners = vec![url(i, ASAP_PORT)];
        c.subscriptions.min_push_interval = self.scenario.push_interval;
        // Static peers, or none and presence datagrams to a multicast group to find them.
        let (peers, presence_targets) = if self.scenario.discovery {
            let group = TransportUrl {
                transport: Transport::Udp,
                address: PRESENCE_GROUP,
                generation: Generation::Rfc,
                tls: None,
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
            allowed_peers: Vec::new(),
        };
        c
    }

    /// Starts PR `i` with an empty handlespace, and with the PR ID it had (`same_id`, after a
    /// crash) or a fresh one. A start after a crash obliges it to resolve every live PE by its
    /// start-up bound.
    pub(super) fn start_pr(&mut self, i: usize, same_id: bool) {
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
        let mut cluster = InMemoryPr::new(self.prs[i].workers, config, Limits::default(), seed);
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
    pub(super) fn table_pages(&self) -> u64 {
        (self.ledger.pes.len() as u64).div_ceil(self.scenario.table_page as u64)
    }

    /// PR `i` is gone (crashed, vanished) or frozen: its PEs are to be taken over.
    pub(super) fn oblige_takeover(&mut self, i: usize) {
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
    pub(super) fn crash_pr(&mut self, i: usize, silent: bool) -> bool {
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
    pub(super) fn freeze_pr(&mut self, i: usize) {
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
    pub(super) fn thaw_record(&mut self, i: usize, revived: bool) {
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
    pub(super) fn thaw_pr(&mut self, i: usize) {
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

    pub(super) fn pe_config(&mut self, pool: usize) -> pe::Config {
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

    pub(super) fn join_pe(&mut self, pool: usize) {
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

    pub(super) fn leave_pe(&mut self, index: usize, graceful: bool) {
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

    pub(super) fn start_pu(&mut self, k: usize) {
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
            asked: BTreeMap::new(),
            pushed: BTreeMap::new(),
        });
        // RFC 5352 §2.2.5: the S bit, asking for every PE (0xffffffff; the registrar caps the
        // items at 128, above the largest pool the scenario makes) so that selection does not
        // matter when the pushed view is compared with the PR's pool.
        let now = self.now();
        for p in self.scenario.subscriptions[k].clone() {
            self.pus[k]
                .core
                .subscribe(&pool_handle(p), Some(u32::MAX), now);
        }
        self.pu_output(k);
        let first = self.now() + 1_000 + self.rng.below(1_000);
        self.net.schedule(first, Event::Resolve(k));
    }

    pub(super) fn resolve(&mut self, k: usize) {
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
    pub(super) fn pr_output(&mut self, i: usize, mut sent: Vec<Sent>, in_timer: bool) {
        loop {
            let incarnation = self.prs[i].incarnation;
            for s in sent.drain(..) {
                match s.target {
                    Target::Association(a) => {
                        self.check_sent(i, a, &s.bytes);
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
                self.note_closed(i, a);
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
    pub(super) fn schedule_mail(&mut self, i: usize) {
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
    pub(super) fn mailbox(&mut self, i: usize, incarnation: u32, from: usize, to: usize) {
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

    pub(super) fn connect_from_pr(&mut self, i: usize, c: Connect) {
        let end = End {
            node: Node::Pr(i),
            incarnation: self.prs[i].incarnation,
            handle: Some(Handle::Association(c.association)),
            open: true,
        };
        self.connect(end, c.url.address, true);
    }

    /// A connection attempt from `end` to the PR at `to`.
    pub(super) fn connect(&mut self, end: End, to: SocketAddr, enrp: bool) {
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
    pub(super) fn endpoint_action<E>(&mut self, node: Node, action: Action<E>) -> Option<E> {
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

    pub(super) fn pe_output(&mut self, index: usize) {
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
    pub(super) fn registrar_of(&self, index: usize) -> Option<usize> {
        let p = &self.pes[index];
        if p.dead || p.core.state() != PeState::Registered {
            return None;
        }
        let registrar = p.core.registrar()?;
        self.prs
            .iter()
            .position(|r| r.address == registrar.address.ip())
    }

    pub(super) fn pe_event(&mut self, index: usize, event: PeEvent) {
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

    pub(super) fn pu_output(&mut self, k: usize) {
        while let Some(action) = self.pus[k].core.poll_action() {
            if let Action::Send { conn, message } = &action
                && let Some(link) = self.net.find(Node::Pu(k), 0, Handle::Conn(*conn))
            {
                self.pu_sends(k, link, message);
            }
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

    /// A span naming PR `i` and the time around a call into it, so its own logs say who and
    /// when.
    pub(super) fn pr_span(&self, i: usize) -> tracing::span::EnteredSpan {
        tracing::debug_span!("pr", i, id = %self.prs[i].id, t = self.now()).entered()
    }
}
