//! The operating scope's peers (RFC 5353 §3.2, §3.4.1): starting the scope, static peers and
//! peers learnt from a list, opening and closing ENRP associations, admitting a peer on its first
//! message, ENRP_LIST_REQUEST and ENRP_LIST_RESPONSE (§3.2.2.2), and whether any peer is
//! reachable (which tells every shard whether to replicate).

use std::net::{IpAddr, SocketAddr};

use rserpool_handlespace::{AssociationId, Millis, PrId};
use rserpool_protocol::{
    EnrpBody, Generation, Seq, ServerInformation, TransportKind, TransportParam as WireTransport,
};

use super::audit::AuditWork;
use super::{Peer, Phase, Scope, url_of};
use crate::core::Protocol;
use crate::core::counters::Limit;
use crate::core::{AssociationInfo, Connect, CoreTimer, Output, Worker};
use rserpool_protocol::url::{Transport, TransportUrl};

impl Worker {
    /// Starts the scope on worker 0: connects to the static peers and arms the housekeeping
    /// tick.
    pub(in crate::core) fn enrp_start(&mut self, now: Millis) {
        if self.index != 0 || !self.config.enrp.enabled() {
            return;
        }
        self.scope = Some(Box::new(Scope::new(&self.config.enrp, self.workers, now)));
        self.timers.arm(now, CoreTimer::Enrp);
    }

    /// Whether this PR has a peer to replicate to (as worker 0 last published).
    pub(in crate::core) fn replicates(&self) -> bool {
        self.pr
            .replicating
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Publishes whether any peer is reachable, for [`Self::replicates`] on every worker.
    pub(super) fn publish_replicating(&self) {
        let any = self.scope.as_ref().is_some_and(|s| {
            s.peers
                .iter()
                .any(|p| p.id.0 != 0 && p.reachable().is_some())
        });
        if self.replicates() != any {
            self.pr
                .replicating
                .store(any, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether the scope finished its start-up (always `true` without ENRP).
    pub fn enrp_live(&self) -> bool {
        self.scope.as_ref().is_none_or(|s| s.phase == Phase::Live)
    }

    /// How many peers the scope currently knows by ID (worker 0; 0 elsewhere).
    pub(in crate::core) fn enrp_peer_count(&self) -> usize {
        self.scope
            .as_ref()
            .map_or(0, |s| s.peers.iter().filter(|p| p.id.0 != 0).count())
    }

    /// Publishes each known peer's state to the metrics (worker 0, at the ENRP timer).
    pub(in crate::core) fn publish_peers(&self, now: Millis) {
        let Some(scope) = self.scope.as_ref() else {
            return;
        };
        self.metrics
            .set_peers(scope.peers.iter().filter(|p| p.id.0 != 0).map(|p| {
                crate::core::counters::PeerGauge {
                    id: p.id.0,
                    connected: p.connected,
                    heard_ago: now.saturating_sub(p.last_heard),
                }
            }));
    }

    /// The identifiers of the peers the scope currently knows (worker 0).
    pub fn enrp_peers(&self) -> Vec<PrId> {
        self.scope.as_ref().map_or_else(Vec::new, |s| {
            s.peers
                .iter()
                .filter(|p| p.id.0 != 0)
                .map(|p| p.id)
                .collect()
        })
    }

    /// Gives up outgoing associations that did not come up within the reconnect interval plus
    /// MAX-TIME-NO-RESPONSE (the kernel would keep trying a silent host for minutes): the driver
    /// aborts them, and the next attempt starts at the next tick.
    pub(super) fn abandon_connects(&mut self, now: Millis, out: &mut Output) {
        let patience = self.enrp_config().max_time_no_response;
        let stale: Vec<AssociationId> = self
            .scope()
            .peers
            .iter()
            .filter(|p| !p.connected && now >= p.reconnect_at.saturating_add(patience))
            .filter_map(|p| p.association)
            .collect();
        for association in stale {
            tracing::debug!(
                ?association,
                "ENRP peer did not accept the association in time"
            );
            out.aborts.push(association);
            self.close_association(association, now, out);
        }
    }

    /// Connects to static peers that have no association.
    pub(super) fn enrp_reconnect(&mut self, now: Millis, out: &mut Output) {
        let interval = self.enrp_config().reconnect_interval;
        let due: Vec<usize> = (0..self.scope().peers.len())
            .filter(|&i| {
                let p = &self.scope.as_ref().expect("worker 0").peers[i];
                p.association.is_none() && p.url.is_some() && now >= p.reconnect_at
            })
            .collect();
        for i in due {
            let url = self.scope().peers[i].url.expect("filtered");
            let association = self.open_association(
                AssociationInfo {
                    transport: url.transport,
                    generation: url.generation,
                    peer_addresses: vec![url.address],
                    protocol: Protocol::Enrp,
                },
                now,
            );
            let p = &mut self.scope().peers[i];
            p.association = Some(association);
            p.connected = false;
            p.reconnect_at = now + interval;
            out.connects.push(Connect { association, url });
        }
    }

    /// An outgoing ENRP association the driver was asked to open is up: introduce ourselves
    /// with a reply-required presence (RFC 5353 §3.4.1).
    pub fn connected(
        &mut self,
        association: AssociationId,
        peer_addresses: Vec<SocketAddr>,
        now: Millis,
        out: &mut Output,
    ) {
        if let Some(a) = self.associations.get_mut(&association) {
            a.info.peer_addresses = peer_addresses;
        }
        let Some(scope) = self.scope.as_mut() else {
            return;
        };
        let Some(p) = scope.peer_by_association(association) else {
            return;
        };
        p.connected = true;
        self.publish_replicating();
        self.audit_work(
            AuditWork::Presence {
                association,
                reply_required: true,
            },
            now,
            out,
        );
    }

    /// An ENRP association closed (or could not be opened): the peer is suspect until it is
    /// heard again; a static peer is reconnected.
    pub(in crate::core) fn enrp_association_closed(
        &mut self,
        association: AssociationId,
        now: Millis,
    ) {
        let Some(scope) = self.scope.as_mut() else {
            return;
        };
        scope.bound.remove(&association);
        let mut mentor_lost = false;
        for p in scope
            .peers
            .iter_mut()
            .filter(|p| p.association == Some(association))
        {
            // Reconnected at once, unless the last attempt was less than the reconnect
            // interval ago (`reconnect_at` is set when an attempt starts).
            p.association = None;
            p.connected = false;
            mentor_lost |= p.inbound.take().is_some_and(|i| i.mentor);
            p.outbound = None;
            if p.id.0 != 0 && p.probe_since.is_none() {
                p.probe_since = Some(now);
            }
        }
        if mentor_lost {
            scope.forget_mentor();
        }
        // A peer that never told its ID and has nowhere to reconnect to is gone.
        scope
            .peers
            .retain(|p| p.id.0 != 0 || p.url.is_some() || p.association.is_some());
        self.publish_replicating();
    }

    /// Binds a message's sender to a peer, adding unknown peers (RFC 5353 §3.4.1, checklist
    /// PE-07: an unknown peer is sent a reply-required presence). Returns whether the peer was
    /// known before this message.
    pub(super) fn learn_peer(
        &mut self,
        association: AssociationId,
        generation: Generation,
        sender: PrId,
        now: Millis,
        out: &mut Output,
    ) -> bool {
        let scope = self.scope();
        if let Some(p) = scope.peer_mut(sender) {
            p.last_heard = now;
            if p.association.is_none() {
                p.association = Some(association);
                p.connected = true;
                p.generation = generation;
            }
            return true;
        }
        if let Some(p) = scope.peer_by_association(association) {
            // A peer we connected to, telling its ID for the first time; a restarted static
            // peer tells a new one, and its old identity is left to be declared dead (and its
            // PEs taken over) like any silent peer.
            let old = p.id;
            p.id = sender;
            p.last_heard = now;
            p.connected = true;
            if old.0 != 0 {
                let mut gone = Peer::new(None, false, now);
                gone.id = old;
                gone.probe_since = Some(now);
                scope.peers.push(gone);
            }
            return true;
        }
        let mut p = Peer::new(None, false, now);
        p.id = sender;
        p.association = Some(association);
        p.connected = true;
        p.generation = generation;
        scope.peers.push(p);
        tracing::info!(peer = %sender, "ENRP: new peer");
        self.audit_work(
            AuditWork::Presence {
                association,
                reply_required: true,
            },
            now,
            out,
        );
        false
    }

    /// ENRP_LIST_REQUEST (RFC 5353 §3.2.2.2): the peers we know, or a reject while starting
    /// (PE-05).
    pub(super) fn on_list_request(
        &mut self,
        association: AssociationId,
        generation: Generation,
        sender: PrId,
        out: &mut Output,
    ) {
        let reject = self.scope().phase != Phase::Live;
        let listed: Vec<(PrId, TransportUrl)> = if reject {
            Vec::new()
        } else {
            self.scope()
                .peers
                .iter()
                .filter(|p| p.id.0 != 0 && p.id != sender && p.active)
                .filter(|p| generation == Generation::Ng || p.id.0 <= u64::from(u32::MAX))
                .filter_map(|p| p.url.map(|u| (p.id, u)))
                .collect()
        };
        let ips: Vec<IpAddr> = listed.iter().map(|(_, u)| u.address.ip()).collect();
        let servers: Vec<ServerInformation<'_>> = listed
            .iter()
            .zip(&ips)
            .map(|((id, u), ip)| ServerInformation {
                server_id: *id,
                transport: wire_transport(u, ip),
            })
            .collect();
        self.send_enrp(
            association,
            generation,
            sender,
            &EnrpBody::ListResponse {
                reject,
                servers: Seq::from_items(&servers),
            },
            out,
        );
    }

    /// ENRP_LIST_RESPONSE: peers we did not know are connected to (RSPLIB introduces itself to
    /// each).
    pub(super) fn on_list_response(
        &mut self,
        servers: Seq<'_, ServerInformation<'_>>,
        generation: Generation,
        now: Millis,
    ) {
        let own = self.config.pr_id;
        for s in servers.iter() {
            if s.server_id.0 == 0 || s.server_id == own {
                continue;
            }
            let scope = self.scope();
            if scope.peer(s.server_id).is_some() {
                continue;
            }
            let Some(url) = url_of(&s, generation) else {
                continue;
            };
            if scope.peers.iter().any(|p| p.url == Some(url)) {
                continue;
            }
            // RFC 5355 §2.5: a listed PR not on the allowlist is not connected to. A list names
            // plain transports only: an entry bound to a certificate name admits nothing here
            // (such a peer is reached through `enrp.peers`).
            if !super::allowlist::admits(
                &self.config.enrp.allowed_peers,
                s.server_id,
                &[url.address],
                None,
            ) {
                self.metrics.limit_refused(Limit::EnrpPeer);
                self.log_refusal(s.server_id, now, "in a peer list");
                continue;
            }
            let scope = self.scope();
            scope.peers.push(Peer::new(Some(url), false, now));
        }
    }
}

fn wire_transport<'a>(url: &TransportUrl, ip: &'a IpAddr) -> WireTransport<'a> {
    WireTransport {
        kind: match url.transport {
            Transport::Tcp | Transport::Mptcp => TransportKind::Tcp,
            Transport::Sctp | Transport::Udp | Transport::SctpUdp => TransportKind::Sctp,
        },
        port: match url.transport {
            Transport::SctpUdp => rserpool_protocol::ENRP_PORT,
            _ => url.address.port(),
        },
        transport_use: 0,
        service_code: 0,
        addresses: Seq::from_items(std::slice::from_ref(ip)),
    }
}
