//! ENRP_PRESENCE and peer liveness (RFC 5353 §3.4): the scope's housekeeping tick (the start-up
//! timeout of §3.2.2, reconnections, heartbeats of §3.4.2, probes of silent peers and dead peers
//! of §3.4.3, expired takeovers), presences received over associations (which also choose the
//! start-up mentor, §3.2.2-3.2.3, and feed the audit, §3.6.1), and presence datagrams (RSPLIB's
//! multicast discovery).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rserpool_handlespace::{AssociationId, Millis, PrId};
use rserpool_protocol::{
    EnrpBody, EnrpMessage, Generation, Seq, ServerInformation, TransportKind,
    TransportParam as WireTransport,
};

use super::audit::AuditWork;
use super::{Inbound, Peer, Phase, url_of};
use crate::core::Protocol;
use crate::core::counters::Limit;
use crate::core::{CoreTimer, Output, Target, Worker, jitter};
use rserpool_protocol::url::Transport;

impl Worker {
    /// The housekeeping tick (RFC 5353 §3.2, §3.4, §3.5): start-up timeout, reconnections,
    /// heartbeats, probes of silent peers, dead peers, expired takeovers.
    pub(in crate::core) fn enrp_tick(&mut self, now: Millis, out: &mut Output) {
        let config = Arc::clone(&self.config);
        let c = &config.enrp;
        if let Phase::Starting { until, .. } = self.scope().phase
            && now >= until
        {
            tracing::info!("ENRP start-up: no mentor finished a handle table transfer; serving");
            self.scope().phase = Phase::Live;
        }
        self.abandon_connects(now, out);
        self.abandon_transfers(now);
        self.enrp_reconnect(now, out);
        if now >= self.scope().next_heartbeat {
            self.scope().next_heartbeat = now + jitter(&mut self.rng, c.heartbeat_interval.max(1));
            self.heartbeat(now, out);
        }
        // RFC 5353 §3.4.3: probe peers silent for MAX-TIME-LAST-HEARD; a probe unanswered for
        // MAX-TIME-NO-RESPONSE means the peer is dead.
        let mut probes = Vec::new();
        let mut dead = Vec::new();
        for p in self
            .scope()
            .peers
            .iter_mut()
            .filter(|p| p.id.0 != 0 && p.active)
        {
            match p.probe_since {
                Some(since) if now.saturating_sub(since) >= c.max_time_no_response => {
                    dead.push(p.id)
                }
                Some(_) => {}
                None if now.saturating_sub(p.last_heard) >= c.max_time_last_heard => {
                    p.probe_since = Some(now);
                    if let Some(a) = p.reachable() {
                        probes.push(a);
                    }
                }
                None => {}
            }
        }
        for association in probes {
            self.audit_work(
                AuditWork::Presence {
                    association,
                    reply_required: true,
                },
                now,
                out,
            );
        }
        // A takeover acknowledged to another PR that never finished it.
        let patience = c.takeover_expiry + c.max_time_no_response;
        for p in self.scope().peers.iter_mut() {
            if p.yielded_at
                .is_some_and(|t| now.saturating_sub(t) >= patience)
            {
                p.yielded_at = None;
                dead.push(p.id);
            }
        }
        for id in dead {
            self.peer_dead(id, now, out);
        }
        let expired: Vec<PrId> = self
            .scope()
            .takeovers
            .iter()
            .filter(|t| now >= t.expires)
            .map(|t| t.target)
            .collect();
        for target in expired {
            // RSPLIB: a takeover without every acknowledgement is dropped with the dead peer;
            // its PEs keep their home PR and expire by their registration life.
            tracing::warn!(target = %target, "ENRP takeover: not every peer acknowledged; dropped");
            self.scope().takeovers.retain(|t| t.target != target);
            let scope = self.scope.as_mut().expect("worker 0");
            scope.drop_peer(target, now, c.reconnect_interval, &mut out.aborts);
        }
        // The next tick, or the next heartbeat if that comes first (heartbeats keep their
        // period instead of waiting for a tick).
        let next = (now + c.tick()).min(self.scope().next_heartbeat.max(now + 1));
        self.timers.arm(next, CoreTimer::Enrp);
        self.publish_replicating();
    }

    /// Sends every peer a presence (RFC 5353 §3.4.2, checklist PE-06), and the presence
    /// datagrams.
    fn heartbeat(&mut self, now: Millis, out: &mut Output) {
        let mut work: Vec<AuditWork> = self
            .scope()
            .peers
            .iter()
            .filter_map(Peer::reachable)
            .map(|association| AuditWork::Presence {
                association,
                reply_required: false,
            })
            .collect();
        work.extend(
            self.config
                .enrp
                .presence_targets
                .iter()
                .map(|t| AuditWork::PresenceDatagram(t.address, t.generation)),
        );
        for w in work {
            self.scope().queued.push(w);
        }
        self.start_round(now, out);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_presence(
        &mut self,
        target: Target,
        generation: Generation,
        transport: Transport,
        receiver: PrId,
        reply_required: bool,
        checksum: u64,
        out: &mut Output,
    ) {
        let local = self
            .config
            .enrp
            .local
            .iter()
            .find(|l| l.transport == transport && l.generation == generation)
            .or_else(|| self.config.enrp.local.first())
            .copied();
        let ip = local.map(|l| l.address.ip());
        let ips: Vec<IpAddr> = ip.into_iter().filter(|ip| !ip.is_unspecified()).collect();
        let server_information = local.map(|l| ServerInformation {
            server_id: self.config.pr_id,
            transport: WireTransport {
                kind: match l.transport {
                    Transport::Sctp | Transport::Udp | Transport::SctpUdp => TransportKind::Sctp,
                    Transport::Tcp | Transport::Mptcp => TransportKind::Tcp,
                },
                // SCTP in UDP: the SCTP port inside (a kernel-SCTP peer encapsulates to its
                // configured UDP port).
                port: match l.transport {
                    Transport::SctpUdp => rserpool_protocol::ENRP_PORT,
                    _ => l.address.port(),
                },
                transport_use: 0,
                service_code: 0,
                addresses: Seq::from_items(&ips),
            },
        });
        // A Transport parameter needs an address: a wildcard listener sends none.
        let server_information = server_information.filter(|_| !ips.is_empty());
        let message = EnrpMessage {
            sender: self.config.pr_id,
            receiver,
            body: EnrpBody::Presence {
                reply_required,
                checksum: Some(checksum),
                server_information,
            },
        };
        self.transmit_enrp(target, generation, &message, out);
    }

    /// ENRP_PRESENCE (RFC 5353 §3.4): the peer is alive (a takeover of it stops, §3.5.1); a
    /// reply-required presence is answered (PE-08); its checksum is audited (§3.6.1).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_presence(
        &mut self,
        association: AssociationId,
        sender: PrId,
        reply_required: bool,
        checksum: Option<u64>,
        server_information: Option<ServerInformation<'_>>,
        now: Millis,
        out: &mut Output,
    ) {
        let starting_without_mentor =
            matches!(self.scope().phase, Phase::Starting { mentor: None, .. });
        let scope = self.scope();
        if scope.takeovers.iter().any(|t| t.target == sender) {
            tracing::info!(peer = %sender, "ENRP takeover aborted: the peer is alive");
            scope.takeovers.retain(|t| t.target != sender);
        }
        let Some(p) = scope.peer_mut(sender) else {
            return;
        };
        p.probe_since = None;
        p.active = true;
        p.yielded_at = None;
        if p.url.is_none()
            && let Some(url) = server_information.and_then(|s| url_of(&s, p.generation))
        {
            p.url = Some(url);
        }
        let generation = p.generation;
        let list = !p.listed;
        p.listed = true;
        if reply_required {
            self.audit_work(
                AuditWork::Presence {
                    association,
                    reply_required: false,
                },
                now,
                out,
            );
        }
        // RSPLIB asks every new peer for its peer list once.
        if list {
            self.send_enrp(association, generation, sender, &EnrpBody::ListRequest, out);
        }
        if starting_without_mentor {
            // RFC 5353 §3.2.2-3.2.3 (PE-03): the first peer heard is the mentor; download the
            // whole handlespace from it.
            if let Phase::Starting { until, .. } = self.scope().phase {
                self.scope().phase = Phase::Starting {
                    until,
                    mentor: Some(sender),
                };
            }
            let p = self.scope().peer_mut(sender).expect("known");
            p.inbound = Some(Inbound {
                association,
                asked: now,
                own_children_only: false,
                mentor: true,
                seen: None,
            });
            self.send_enrp(
                association,
                generation,
                sender,
                &EnrpBody::HandleTableRequest {
                    own_children_only: false,
                },
                out,
            );
            return;
        }
        if self.scope().taken_over.contains_key(&sender) {
            // A PR we took over is back (it was hung): whatever its checksum says, what it
            // still holds goes back to it and what it lost goes away ([`TakenOver`]).
            if self.repair(sender, now, out) {
                tracing::info!(peer = %sender, "ENRP: a PR taken over by this one is back; repairing its PEs");
                self.scope().taken_over.remove(&sender);
            }
            return;
        }
        if let Some(checksum) = checksum {
            self.audit_work(
                AuditWork::Audit {
                    peer: sender,
                    checksum,
                },
                now,
                out,
            );
        }
    }

    /// A peer did not answer its probe (RFC 5353 §3.4.3): it stops being probed, and a
    /// checksum round tells whether it owns PEs here.
    fn peer_dead(&mut self, id: PrId, now: Millis, out: &mut Output) {
        tracing::warn!(peer = %id, "ENRP peer did not answer; declared dead");
        self.metrics.enrp_peer_dead();
        let scope = self.scope();
        let Some(p) = scope.peer_mut(id) else {
            return;
        };
        // Its association stays open until the takeover ends: a hung peer that wakes up gets
        // the ENRP_INIT_TAKEOVER and can object with a presence (RFC 5353 §3.5.1).
        p.active = false;
        self.audit_work(AuditWork::Dead(id), now, out);
    }

    /// A datagram on an ENRP UDP endpoint: presences announce peers (RSPLIB's multicast
    /// discovery); a new one is connected to. Audits only run over associations (RSPLIB).
    pub(in crate::core) fn on_enrp_datagram(
        &mut self,
        generation: Generation,
        from: SocketAddr,
        msg: &[u8],
        now: Millis,
        out: &mut Output,
    ) {
        self.metrics
            .message_in(Protocol::Enrp, msg.first().copied().unwrap_or(0));
        if self.scope.is_none() {
            return;
        }
        let Ok(decoded) = EnrpMessage::decode(msg, generation) else {
            self.metrics.decode_error(None);
            return;
        };
        let message = decoded.message;
        let EnrpBody::Presence {
            server_information: Some(info),
            ..
        } = message.body
        else {
            return;
        };
        if message.sender == self.config.pr_id || message.sender.0 == 0 {
            return;
        }
        // RFC 5355 §2.5: a PR not on the allowlist is not heard, let alone connected to.
        // A datagram carries no TLS identity: an entry bound to a certificate name admits
        // nothing here.
        if !super::allowlist::admits(
            &self.config.enrp.allowed_peers,
            message.sender,
            &[from],
            None,
        ) {
            self.metrics.limit_refused(Limit::EnrpPeer);
            self.log_refusal(message.sender, now, "in a presence datagram");
            return;
        }
        let scope = self.scope();
        if let Some(p) = scope.peer_mut(message.sender) {
            p.last_heard = now;
            return;
        }
        let Some(url) = url_of(&info, generation) else {
            return;
        };
        if scope.peers.iter().any(|p| p.url == Some(url)) {
            return;
        }
        tracing::info!(peer = %message.sender, %url, "ENRP: peer announced by presence datagram");
        scope.peers.push(Peer::new(Some(url), false, now));
        self.enrp_reconnect(now, out);
    }
}
