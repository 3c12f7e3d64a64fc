//! The ASAP procedures of a PR (RFC 5352): registration, deregistration, handle resolution,
//! endpoint keep-alive, endpoint unreachable, server announce, error replies; plus RSPLIB's
//! component status reports.

use std::net::{IpAddr, SocketAddr};

use rserpool_handlespace::{
    AssociationId, Millis, OwnedTransport, OwnedUserTransport, PeId, PeRegistration, PinnedReader,
    PoolSnapshot, RegistrationError,
};
use rserpool_protocol::asap::{self, message_type};
use rserpool_protocol::csp::{CSP_GROUP_REGISTRAR, CspReport, component_id};
use rserpool_protocol::url::Transport;
use rserpool_protocol::{
    AsapMessage, DecodeError, Decoded, EncodeError, ErrorCause, Generation, PoolElementParam,
    PoolHandle, Resolution, Seq, TransportKind, TransportParam as WireTransport, Unrecognized,
    cause, encode_policy_parameter, encode_transport_parameter,
};

use super::Protocol;
use super::access::{self, Operation};
use super::counters::{Limit, RemovalReason, RequestKind, WorkerMetrics};
use super::encoded::{EncodedPools, Part};
use super::keepalive::{Due, NextSweep, SWEEP_BUDGET};
use super::{
    Completion, Output, RFC_MAX_POOL_HANDLE, RegisterRequest, ShardWrite, Target, Worker,
    encode_into, jitter,
};
use super::{identity, refusals};

/// Why a request was refused before it reached the handlespace.
enum Refusal {
    /// Cause 0x6 (rate or limit).
    LackOfResources,
    /// Cause 0xa.
    Rejected,
    /// Cause 0x3.
    InvalidValues,
}

impl Refusal {
    fn cause(&self) -> u16 {
        match self {
            Self::LackOfResources => cause::LACK_OF_RESOURCES,
            Self::Rejected => cause::REJECTED_SECURITY,
            Self::InvalidValues => cause::INVALID_VALUES,
        }
    }
}

/// A handle resolution request: the pool, and how many PEs the PU asked for (RFC 5352 §3.3).
#[derive(Clone, Copy, Debug)]
struct Query<'a> {
    pool_handle: PoolHandle<'a>,
    items: Option<u32>,
}

impl Worker {
    /// An ASAP message on an association (RFC 5352 §3) of wire generation `generation`, which
    /// the caller found open: registrations, deregistrations, handle resolutions, keep-alive
    /// acks, unreachable reports.
    pub(super) fn on_asap_message(
        &mut self,
        reads: &PinnedReader<'_>,
        association: AssociationId,
        generation: Generation,
        msg: &[u8],
        now: Millis,
        out: &mut Output,
    ) -> RequestKind {
        let target = Target::Association(association);
        // Most traffic: a plain handle resolution, read without the general decoder.
        if let Some(r) = asap::decode_plain_handle_resolution(msg) {
            self.metrics
                .message_in(Protocol::Asap, message_type::HANDLE_RESOLUTION);
            let query = Query {
                pool_handle: r.pool_handle,
                items: r.items,
            };
            self.on_resolution(reads, association, generation, query, r.subscribe, now, out);
            return RequestKind::Resolution;
        }
        let Ok(decoded) = self.receive(target, generation, msg, out) else {
            return RequestKind::Other;
        };
        match decoded.message {
            AsapMessage::Registration {
                pool_handle,
                pool_element,
            } => {
                self.on_registration(
                    association,
                    generation,
                    pool_handle,
                    &pool_element,
                    now,
                    out,
                );
                RequestKind::Registration
            }
            AsapMessage::Deregistration { pool_handle, pe_id } => {
                self.on_deregistration(association, generation, pool_handle, pe_id, now, out);
                RequestKind::Deregistration
            }
            AsapMessage::HandleResolution {
                subscribe,
                pool_handle,
                items,
            } => {
                let query = Query { pool_handle, items };
                self.on_resolution(reads, association, generation, query, subscribe, now, out);
                RequestKind::Resolution
            }
            AsapMessage::EndpointKeepAliveAck { pool_handle, pe_id } => {
                self.on_keep_alive_ack(association, pool_handle.0, pe_id, now, out);
                RequestKind::Other
            }
            AsapMessage::EndpointUnreachable { pool_handle, pe_id } => {
                // RFC 5355 §2.13 threat 8: reports beyond the association's rate are ignored.
                if self.take_token(association, now) {
                    self.metrics.unreachable_report();
                    self.route(
                        pool_handle.0,
                        ShardWrite::Unreachable {
                            pool_handle: pool_handle.0.into(),
                            pe_id,
                        },
                        now,
                        out,
                    );
                } else {
                    self.metrics.rate_limited();
                }
                RequestKind::Other
            }
            AsapMessage::Error(causes) => {
                tracing::debug!(?association, ?causes, "ASAP_ERROR received");
                RequestKind::Other
            }
            // Messages a PR never receives from PEs or PUs (responses, keep-alives, announces,
            // PU-PE control channel messages): ignored.
            other => {
                tracing::debug!(
                    ?association,
                    message_type = other.message_type(),
                    "ASAP message not meant for a PR, ignored"
                );
                RequestKind::Other
            }
        }
    }

    /// RFC 5352 §3.3: a handle resolution within the association's request rate; with the S
    /// bit (`subscribe`, §2.2.5) also a subscription to the pool's changes.
    #[allow(clippy::too_many_arguments)]
    fn on_resolution(
        &mut self,
        reads: &PinnedReader<'_>,
        association: AssociationId,
        generation: Generation,
        query: Query<'_>,
        subscribe: bool,
        now: Millis,
        out: &mut Output,
    ) {
        let target = Target::Association(association);
        if self.take_token(association, now) {
            let subscriber = subscribe.then_some(association);
            self.resolve(reads, target, generation, query, subscriber, now, out);
        } else {
            self.metrics.rate_limited();
            self.resolution_failed(
                target,
                generation,
                query.pool_handle,
                cause::LACK_OF_RESOURCES,
                false,
                out,
            );
        }
    }

    /// Handles one datagram of a UDP ASAP listener: stateless handle resolution for PUs.
    /// Registrations need an association (RFC 5352 §3.1: SCTP) and are refused with cause 0xa;
    /// everything else is dropped.
    pub(super) fn on_asap_datagram(
        &mut self,
        reads: &PinnedReader<'_>,
        target: Target,
        generation: Generation,
        msg: &[u8],
        now: Millis,
        out: &mut Output,
    ) -> RequestKind {
        if let Some(r) = asap::decode_plain_handle_resolution(msg) {
            self.metrics
                .message_in(Protocol::Asap, message_type::HANDLE_RESOLUTION);
            let query = Query {
                pool_handle: r.pool_handle,
                items: r.items,
            };
            // RFC 5352 §2.2.5: a subscription lives as long as its association; a datagram has
            // none, so the S bit is answered with the A bit clear.
            self.resolve(reads, target, generation, query, None, now, out);
            return RequestKind::Resolution;
        }
        let Ok(decoded) = self.receive(target, generation, msg, out) else {
            return RequestKind::Other;
        };
        match decoded.message {
            AsapMessage::HandleResolution {
                pool_handle, items, ..
            } => {
                let query = Query { pool_handle, items };
                self.resolve(reads, target, generation, query, None, now, out);
                RequestKind::Resolution
            }
            AsapMessage::Registration {
                pool_handle,
                pool_element,
            } => {
                self.metrics.registration(Some(cause::REJECTED_SECURITY));
                self.send_registration_refusal(
                    target,
                    generation,
                    pool_handle.0,
                    pool_element.id,
                    &Refusal::Rejected,
                    out,
                );
                RequestKind::Registration
            }
            _ => RequestKind::Other,
        }
    }

    /// Counts and decodes a received message; answers what the codec refused, or the
    /// parameters it skipped with a report, as RFC 5354 §3-4 say. An error: nothing more to do.
    /// (The decoding is returned as the codec made it: a message moved out of it into a new
    /// value cost a copy of the whole message per request.)
    fn receive<'m>(
        &mut self,
        target: Target,
        generation: Generation,
        msg: &'m [u8],
        out: &mut Output,
    ) -> Result<Decoded<AsapMessage<'m>>, DecodeError> {
        self.metrics
            .message_in(Protocol::Asap, msg.first().copied().unwrap_or(0));
        let decoded = AsapMessage::decode(msg, generation);
        match &decoded {
            Ok(d) => self.report_unrecognized(target, generation, &d.unrecognized, msg, out),
            Err(e) => self.reply_decode_error(target, generation, e, msg, out),
        }
        decoded
    }

    /// RFC 5352 §3.1: checks what the handlespace cannot know (handle length for the
    /// generation, rate, PEs per association, addresses on the association), records the ASAP
    /// transport (rule 4) and passes the registration to the pool's shard owner.
    fn on_registration(
        &mut self,
        association: AssociationId,
        generation: Generation,
        pool_handle: PoolHandle<'_>,
        pe: &PoolElementParam<'_>,
        now: Millis,
        out: &mut Output,
    ) {
        let target = Target::Association(association);
        let handle = pool_handle.0;
        let max_handle = match generation {
            Generation::Rfc => RFC_MAX_POOL_HANDLE,
            Generation::Ng => self.config.max_pool_handle_len_ng,
        };
        let refusal = if handle.is_empty() || handle.len() > max_handle || pe.id.0 == 0 {
            Some(Refusal::InvalidValues)
        } else if !self.access_allows(target, handle, Operation::Register, now) {
            Some(Refusal::Rejected)
        } else if !self.take_token(association, now) {
            self.metrics.rate_limited();
            Some(Refusal::LackOfResources)
        } else if !self.take_registration_token(association, now) {
            self.metrics.limit_refused(Limit::RegistrationsPerIdentity);
            Some(Refusal::LackOfResources)
        } else {
            let a = &self.associations[&association];
            (!self.monitor.contains(association, handle, pe.id)
                && self.monitor.count(association) + a.pending
                    >= self.config.max_pes_per_association)
                .then(|| {
                    self.metrics.limit_refused(Limit::PesPerAssociation);
                    Refusal::LackOfResources
                })
        };
        if let Some(refusal) = refusal {
            self.metrics.registration(Some(refusal.cause()));
            self.send_registration_refusal(target, generation, handle, pe.id, &refusal, out);
            return;
        }
        let a = self
            .associations
            .get_mut(&association)
            .expect("checked above");
        let mut registration = PeRegistration::from_view(pe);
        // RFC 5352 §2.2.1: the registered addresses must belong to the association; RSPLIB
        // keeps those that do and refuses the PE when none is left.
        if let OwnedUserTransport::Transport(t) = &mut registration.user_transport {
            let on_association = |ip: &IpAddr| a.info.peer_addresses.iter().any(|p| p.ip() == *ip);
            // The usual case, every address on the association, copies nothing.
            if t.addresses.is_empty() || !t.addresses.iter().all(on_association) {
                let kept: Vec<IpAddr> =
                    t.addresses.iter().copied().filter(on_association).collect();
                if kept.is_empty() {
                    self.metrics.registration(Some(cause::REJECTED_SECURITY));
                    self.send_registration_refusal(
                        target,
                        generation,
                        handle,
                        pe.id,
                        &Refusal::Rejected,
                        out,
                    );
                    return;
                }
                t.addresses = kept.into();
            }
        }
        registration.asap_transport = Some(asap_transport(&a.info));
        a.pending += 1;
        let request = RegisterRequest {
            association,
            generation,
            pool_handle: handle.into(),
            registration,
            identity: a.identity.as_ref().map_or(0, identity::Identity::key),
        };
        if rserpool_handlespace::shard_index(handle, self.workers) == self.index {
            // This worker's own shard: no forward to box.
            self.apply_registration(request, now, out);
        } else {
            self.route(handle, ShardWrite::Register(Box::new(request)), now, out);
        }
    }

    /// At the shard owner: RFC 5352 §3.1 rules 1-5 in the handlespace, then the response back
    /// to the association's worker.
    pub(super) fn apply_registration(
        &mut self,
        request: RegisterRequest,
        now: Millis,
        out: &mut Output,
    ) {
        let RegisterRequest {
            association,
            generation,
            pool_handle,
            registration,
            identity,
        } = request;
        let pe_id = registration.id;
        let result = self.shard.register_as(
            &pool_handle,
            registration,
            self.config.pr_id,
            Some(association),
            identity,
            now,
        );
        match &result {
            Err(RegistrationError::BoundToAnotherIdentity) => {
                self.metrics.limit_refused(Limit::PeBinding);
            }
            // The shard's limits: a PE beyond `limits.max_pes_per_pool` of a pool that exists,
            // or a new pool beyond `limits.max_pools` (a refusal creates no pool).
            Err(RegistrationError::LackOfResources { .. }) => {
                let limit = if self.shard.pool_handle(&pool_handle).is_some() {
                    Limit::PesPerPool
                } else {
                    Limit::Pools
                };
                self.metrics.limit_refused(limit);
            }
            _ => {}
        }
        // RFC 5353 §3.3.1: every granted registration and re-registration goes to the peers.
        if let Ok(registered) = &result
            && self.replicates()
            && let Some(handle) = self.shard.pool_handle(&pool_handle)
        {
            self.replicate(
                rserpool_protocol::UpdateAction::AddPe,
                handle,
                registered.entry.clone(),
                now,
                out,
            );
        }
        let accepted = result.is_ok();
        if let Err(e) = &result {
            tracing::debug!(?association, %e, "registration refused");
        }
        self.metrics
            .registration(result.as_ref().err().map(RegistrationError::cause));
        let encode = |buf: &mut [u8]| {
            registration_response(generation, &pool_handle, pe_id, result.as_ref().err(), buf)
        };
        if super::worker_of(association) == self.index {
            // The association is this worker's: answer in place, no completion to forward.
            let target = Target::Association(association);
            let ty = message_type::REGISTRATION_RESPONSE;
            transmit(&self.metrics, target, ty, encode, out);
            self.registration_done(association, pool_handle, pe_id, accepted, &[], now, out);
            return;
        }
        let mut response = Vec::new();
        if encode_into(&mut response, encode).is_err() {
            response.clear();
        }
        self.deliver(
            Completion::Registered {
                association,
                pool_handle,
                pe_id,
                accepted,
                response: response.into(),
            },
            now,
            out,
        );
    }

    /// At the association's worker: send the response, monitor the PE.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn registration_done(
        &mut self,
        association: AssociationId,
        pool_handle: Box<[u8]>,
        pe_id: PeId,
        accepted: bool,
        response: &[u8],
        now: Millis,
        out: &mut Output,
    ) {
        let Some(a) = self.associations.get_mut(&association) else {
            // The association closed while the registration was on its way: undo it.
            if accepted {
                self.route(
                    &pool_handle.clone(),
                    ShardWrite::Remove {
                        association,
                        pool_handle,
                        pe_id,
                        reason: RemovalReason::AssociationClosed,
                    },
                    now,
                    out,
                );
            }
            return;
        };
        a.pending = a.pending.saturating_sub(1);
        if !response.is_empty() {
            self.metrics
                .message_out(Protocol::Asap, message_type::REGISTRATION_RESPONSE);
            out.transmit_bytes(Target::Association(association), response);
        }
        if accepted {
            // A re-registration is a sign of life: the next keep-alive waits a full interval.
            self.track(association, &pool_handle, pe_id, now);
        }
    }

    /// RFC 5352 §3.2: a PE deregisters itself, over the association it registered over.
    fn on_deregistration(
        &mut self,
        association: AssociationId,
        generation: Generation,
        pool_handle: PoolHandle<'_>,
        pe_id: PeId,
        now: Millis,
        out: &mut Output,
    ) {
        let target = Target::Association(association);
        if !self.access_allows(target, pool_handle.0, Operation::Deregister, now) {
            self.metrics.deregistration(Some(cause::REJECTED_SECURITY));
            let causes = [ErrorCause {
                code: cause::REJECTED_SECURITY,
                info: &[],
            }];
            let message = AsapMessage::DeregistrationResponse {
                pool_handle,
                pe_id,
                error: Some(Seq::from_items(&causes)),
            };
            send(&self.metrics, target, generation, &message, out);
            return;
        }
        self.route(
            pool_handle.0,
            ShardWrite::Deregister {
                association,
                generation,
                pool_handle: pool_handle.0.into(),
                pe_id,
            },
            now,
            out,
        );
    }

    /// At the shard owner: remove the PE if the association owns it. An unknown PE is answered
    /// as a success (RFC 5352 §3.2); another association's PE with cause 0xa (no
    /// deregistration by proxy, RFC 5355 §2.3.3).
    pub(super) fn apply_deregistration(
        &mut self,
        association: AssociationId,
        generation: Generation,
        pool_handle: Box<[u8]>,
        pe_id: PeId,
        now: Millis,
        out: &mut Output,
    ) {
        let result = self
            .shard
            .deregister(&pool_handle, pe_id, Some(association));
        let refused = match result {
            Ok(Some(removed)) => {
                self.metrics.pe_removed(RemovalReason::Deregistered);
                self.replicate_removal(removed, now, out);
                None
            }
            Ok(None) => None,
            Err(e) => Some(e.cause()),
        };
        self.metrics.deregistration(refused);
        let mut response = Vec::new();
        let causes = refused.map(|code| [ErrorCause { code, info: &[] }]);
        let message = AsapMessage::DeregistrationResponse {
            pool_handle: PoolHandle(&pool_handle),
            pe_id,
            error: causes.as_ref().map(|c| Seq::from_items(c)),
        };
        if encode_into(&mut response, |buf| message.encode(generation, buf)).is_err() {
            response.clear();
        }
        self.deliver(
            Completion::Deregistered {
                association,
                pool_handle,
                pe_id,
                response: response.into(),
            },
            now,
            out,
        );
    }

    /// At the association's worker: send the response, stop monitoring the PE.
    pub(super) fn deregistration_done(
        &mut self,
        association: AssociationId,
        pool_handle: &[u8],
        pe_id: PeId,
        response: &[u8],
        out: &mut Output,
    ) {
        if !self.associations.contains_key(&association) {
            return;
        }
        self.monitor.untrack(association, pool_handle, pe_id);
        if !response.is_empty() {
            self.metrics
                .message_out(Protocol::Asap, message_type::DEREGISTRATION_RESPONSE);
            out.transmit_bytes(Target::Association(association), response);
        }
    }

    /// At the association's worker: the shard removed a PE of this association. After an
    /// expiry the PE learns it from an unsolicited ASAP_DEREGISTRATION_RESPONSE (RFC 5352 §3.2).
    pub(super) fn forget(
        &mut self,
        association: AssociationId,
        pool_handle: &[u8],
        pe_id: PeId,
        reason: RemovalReason,
        out: &mut Output,
    ) {
        if !self.monitor.untrack(association, pool_handle, pe_id) {
            return;
        }
        if matches!(reason, RemovalReason::Expired) {
            let generation = self.associations[&association].info.generation;
            let message = AsapMessage::DeregistrationResponse {
                pool_handle: PoolHandle(pool_handle),
                pe_id,
                error: None,
            };
            self.send(Target::Association(association), generation, &message, out);
        }
    }

    /// RFC 5352 §3.3: select PEs by the pool policy and answer; the overall policy TLV is always
    /// included (RSPLIB's PUs need it): the policy of the first selected PE, as RSPLIB does.
    /// Unknown pool: an Operation Error with cause 0x9. With `subscriber` (the S bit on an
    /// association, §2.2.5) the subscription is admitted or refused by its limits and the
    /// answer carries the A bit accordingly; a pool that does not exist yet is subscribed too
    /// (answered with cause 0x9 and the A bit), so that a PU can watch for it to appear.
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &mut self,
        reads: &PinnedReader<'_>,
        target: Target,
        generation: Generation,
        query: Query<'_>,
        subscriber: Option<AssociationId>,
        now: Millis,
        out: &mut Output,
    ) {
        let Query { pool_handle, items } = query;
        if !self.access_allows(target, pool_handle.0, Operation::Resolve, now) {
            self.resolution_failed(
                target,
                generation,
                pool_handle,
                cause::REJECTED_SECURITY,
                false,
                out,
            );
            return;
        }
        let accepted = subscriber.is_some_and(|a| self.admit_subscription(a, pool_handle.0));
        let (sent, serial) =
            self.answer(reads, target, generation, pool_handle, items, accepted, out);
        self.metrics.resolution(sent > 0, sent);
        if let (Some(association), true) = (subscriber, accepted) {
            self.record_subscription(
                association,
                generation,
                pool_handle.0,
                items,
                serial,
                now,
                out,
            );
        }
    }

    /// Selects PEs of `pool_handle` by the pool policy (at most `items`, RFC 5352 §3.3) and
    /// sends ASAP_HANDLE_RESOLUTION_RESPONSE with the A bit `accepted` (§2.2.5-6), or cause 0x9
    /// for an unknown pool. Returns the PEs sent (0: the failure) and the serial of the pool's
    /// snapshot read (0: no pool).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer(
        &mut self,
        reads: &PinnedReader<'_>,
        target: Target,
        generation: Generation,
        pool_handle: PoolHandle<'_>,
        items: Option<u32>,
        accepted: bool,
        out: &mut Output,
    ) -> (usize, u64) {
        let n = self.config.items.for_request(items);
        let Self {
            rng,
            selection,
            views,
            encoded,
            parts,
            metrics,
            ..
        } = self;
        let found = reads.resolve(
            pool_handle.0,
            rng,
            &mut selection[..n],
            |snapshot, selected| {
                let serial = snapshot.serial();
                if let Some(sent) = respond_from_cache(
                    encoded,
                    parts,
                    metrics,
                    snapshot,
                    selected,
                    Response {
                        target,
                        generation,
                        pool_handle,
                        accepted,
                    },
                    out,
                ) {
                    return (sent, serial);
                }
                // The views borrow this snapshot; the allocation is the worker's, reused from one
                // resolution to the next (an empty vector changes its element lifetime in place).
                let mut pool_elements: Vec<PoolElementParam<'_>> = recycle(std::mem::take(views));
                pool_elements.extend(
                    snapshot
                        .entries_at(selected)
                        .filter(|e| e.fits(generation))
                        .map(|e| e.view(false)),
                );
                // Empty: only PEs this generation cannot carry (64-bit identifiers on an RFC
                // listener).
                let sent = pool_elements.len();
                if sent > 0 {
                    let message = AsapMessage::HandleResolutionResponse {
                        accepted,
                        pool_handle,
                        resolution: Resolution::Found {
                            policy: Some(pool_elements[0].policy),
                            pool_elements: Seq::from_items(&pool_elements),
                        },
                    };
                    send(metrics, target, generation, &message, out);
                }
                *views = recycle(pool_elements);
                (sent, serial)
            },
        );
        let (sent, serial) = found.unwrap_or((0, 0));
        if sent == 0 {
            self.resolution_failed(
                target,
                generation,
                pool_handle,
                cause::UNKNOWN_POOL_HANDLE,
                accepted,
                out,
            );
        }
        (sent, serial)
    }

    /// ASAP_HANDLE_RESOLUTION_RESPONSE with cause `code` and the A bit `accepted`.
    fn resolution_failed(
        &mut self,
        target: Target,
        generation: Generation,
        pool_handle: PoolHandle<'_>,
        code: u16,
        accepted: bool,
        out: &mut Output,
    ) {
        let causes = [ErrorCause { code, info: &[] }];
        let message = AsapMessage::HandleResolutionResponse {
            accepted,
            pool_handle,
            resolution: Resolution::Failed(Seq::from_items(&causes)),
        };
        self.send(target, generation, &message, out);
    }

    /// Sweeps the keep-alives of an association's PEs (RSPLIB's keep-alive cycle; RFC 5352
    /// §3.4-3.5): sends those due, removes the PEs whose ack is overdue.
    pub(super) fn keep_alive_sweep(
        &mut self,
        association: AssociationId,
        now: Millis,
        out: &mut Output,
    ) {
        let (due, next) = self.monitor.sweep(
            association,
            now,
            self.config.keep_alive_timeout,
            SWEEP_BUDGET,
        );
        let generation = self
            .associations
            .get(&association)
            .map(|a| a.info.generation);
        for due in due {
            match due {
                Due::KeepAlive(pool_handle, pe_id) => {
                    let Some(generation) = generation else {
                        continue;
                    };
                    let message = AsapMessage::EndpointKeepAlive {
                        home: false,
                        server_id: self.config.pr_id,
                        pool_handle: PoolHandle(&pool_handle),
                        pe_id: Some(pe_id),
                    };
                    match out.transmit(Target::Association(association), |buf| {
                        message.encode(generation, buf)
                    }) {
                        Ok(()) => {
                            self.metrics
                                .message_out(Protocol::Asap, message_type::ENDPOINT_KEEP_ALIVE);
                            self.metrics.keep_alive_sent();
                        }
                        Err(e) => tracing::warn!(%e, "cannot encode a keep-alive"),
                    }
                }
                Due::TimedOut(pool_handle, pe_id) => {
                    // No ack within the timeout: the PE is gone. Counted by the shard owner,
                    // when it removes the PE.
                    tracing::debug!(?association, pe_id = pe_id.0, "keep-alive timeout");
                    self.route(
                        &pool_handle,
                        ShardWrite::Remove {
                            association,
                            pool_handle: pool_handle[..].into(),
                            pe_id,
                            reason: RemovalReason::KeepAliveTimeout,
                        },
                        now,
                        out,
                    );
                }
            }
        }
        match next {
            NextSweep::Soon => {
                self.timers
                    .arm(now + 1, super::CoreTimer::KeepAliveSweep(association));
            }
            NextSweep::Later => self.arm_keep_alive_sweep(association, now),
            NextSweep::Done => {}
        }
    }

    /// RFC 5352 §3.4: the PE answered; the next keep-alive follows after the interval.
    fn on_keep_alive_ack(
        &mut self,
        association: AssociationId,
        pool_handle: &[u8],
        pe_id: PeId,
        now: Millis,
        out: &mut Output,
    ) {
        // Every ack received is counted, also one for a PE that left meanwhile.
        self.metrics.keep_alive_ack();
        let next = now + self.keep_alive_delay();
        // Only a PE with unreachable reports needs the shard owner to hear of the ack: with a
        // million PEs, a forward per ack would be 200 000 forwards a second.
        if self.monitor.ack(association, pool_handle, pe_id, next) != Some(true) {
            return;
        }
        self.route(
            pool_handle,
            ShardWrite::Refresh {
                pool_handle: pool_handle.into(),
                pe_id,
            },
            now,
            out,
        );
    }

    /// At the shard owner: count an ASAP_ENDPOINT_UNREACHABLE report; MAX-BAD-PE-REPORT reports
    /// remove the PE (RFC 5352 §3.5, RSPLIB's threshold without the immediate probe).
    pub(super) fn apply_unreachable(
        &mut self,
        pool_handle: &[u8],
        pe_id: PeId,
        now: Millis,
        out: &mut Output,
    ) {
        let Some(removed) =
            self.shard
                .report_unreachable(pool_handle, pe_id, self.config.max_bad_pe_reports)
        else {
            // Counted (reports are rare): a keep-alive ack clears the count, so the
            // association's worker learns that this PE's next ack matters.
            if let Some(association) = self
                .shard
                .entry(pool_handle, pe_id)
                .and_then(|e| e.association)
            {
                self.deliver(
                    Completion::Reported {
                        association,
                        pool_handle: pool_handle.into(),
                        pe_id,
                    },
                    now,
                    out,
                );
            }
            return;
        };
        self.metrics.pe_removed(RemovalReason::Unreachable);
        if let Some(association) = removed.entry.association {
            self.deliver(
                Completion::Forget {
                    association,
                    pool_handle: pool_handle.into(),
                    pe_id,
                    reason: RemovalReason::Unreachable,
                },
                now,
                out,
            );
        }
        self.replicate_removal(removed, now, out);
    }

    /// RFC 5352 §3.6: ASAP_SERVER_ANNOUNCE to every target, listing this PR's SCTP and TCP
    /// listeners of the target's generation that have a concrete address (none: the receiver
    /// uses the packet's source address).
    pub(super) fn announce(&mut self, now: Millis, out: &mut Output) {
        let config = std::sync::Arc::clone(&self.config);
        for target in &config.announce_targets {
            let addresses: Vec<(TransportKind, SocketAddr)> = config
                .listeners
                .iter()
                .filter(|l| l.generation == target.generation && !l.address.ip().is_unspecified())
                .filter_map(|l| match l.transport {
                    Transport::Sctp => Some((TransportKind::Sctp, l.address)),
                    Transport::Tcp | Transport::Mptcp => Some((TransportKind::Tcp, l.address)),
                    // SCTP in UDP: a Transport parameter cannot say so (RFC 5352 §3.6 names
                    // SCTP and TCP), and a kernel-SCTP PU would need encapsulation set up.
                    Transport::Udp | Transport::SctpUdp => None,
                })
                .collect();
            let ips: Vec<std::net::IpAddr> = addresses.iter().map(|(_, a)| a.ip()).collect();
            let transports: Vec<WireTransport<'_>> = addresses
                .iter()
                .zip(&ips)
                .map(|((kind, a), ip)| WireTransport {
                    kind: *kind,
                    port: a.port(),
                    transport_use: 0,
                    service_code: 0,
                    addresses: Seq::from_items(std::slice::from_ref(ip)),
                })
                .collect();
            let message = AsapMessage::ServerAnnounce {
                server_id: config.pr_id,
                transports: Seq::from_items(&transports),
            };
            self.send(
                Target::UdpSend(target.address),
                target.generation,
                &message,
                out,
            );
        }
        let next = now + jitter(&mut self.rng, config.announce_interval.max(1));
        self.timers.arm(next, super::CoreTimer::Announce);
    }

    /// RSPLIB's component status report to its `cspmonitor`.
    pub(super) fn csp_report(&mut self, now: Millis, out: &mut Output) {
        let Some((monitor, interval)) = self.config.csp else {
            return;
        };
        let started = self.started.unwrap_or(now);
        let location = format!("rserpool-registrar {:#x}", self.config.pr_id.0);
        let pools: usize = self.reader.shards().iter().map(|v| v.len()).sum();
        let status = format!("{pools} pools, {} workers", self.workers);
        let report = CspReport {
            final_report: false,
            sender_id: component_id(CSP_GROUP_REGISTRAR, self.config.pr_id.0),
            timestamp_us: now.saturating_sub(started).saturating_mul(1000),
            report_interval_us: u32::try_from(interval.saturating_mul(1000)).unwrap_or(u32::MAX),
            location: location.as_bytes(),
            status: status.as_bytes(),
            workload: 0xffff,
            associations: Seq::from_items(&[]),
        };
        if out
            .transmit(Target::UdpSend(monitor), |buf| report.encode(buf))
            .is_err()
        {
            tracing::warn!("cannot encode a CSP report");
        }
        self.timers
            .arm(now + interval.max(1), super::CoreTimer::Csp);
    }

    /// Answers a message the codec refused with the RFC 5354 cause it maps to, or drops it
    /// where the RFC says so. Errors are never answered with errors.
    fn reply_decode_error(
        &mut self,
        target: Target,
        generation: Generation,
        error: &DecodeError,
        msg: &[u8],
        out: &mut Output,
    ) {
        self.metrics.decode_error(error.reply_cause());
        tracing::debug!(?target, %error, "undecodable ASAP message");
        let Some(cause) = super::decode_error_cause(error, msg, message_type::ERROR) else {
            return;
        };
        let causes = [cause];
        self.send(
            target,
            generation,
            &AsapMessage::Error(Seq::from_items(&causes)),
            out,
        );
    }

    /// RFC 5354 §3: parameters with type bits `11` were skipped; report them, one cause each.
    fn report_unrecognized(
        &mut self,
        target: Target,
        generation: Generation,
        unrecognized: &Unrecognized,
        msg: &[u8],
        out: &mut Output,
    ) {
        let causes = super::unrecognized_causes(unrecognized, msg, message_type::ERROR);
        if causes.is_empty() {
            return;
        }
        self.send(
            target,
            generation,
            &AsapMessage::Error(Seq::from_items(&causes)),
            out,
        );
    }

    fn send_registration_refusal(
        &mut self,
        target: Target,
        generation: Generation,
        pool_handle: &[u8],
        pe_id: PeId,
        refusal: &Refusal,
        out: &mut Output,
    ) {
        let causes = [ErrorCause {
            code: refusal.cause(),
            info: &[],
        }];
        let message = AsapMessage::RegistrationResponse {
            rejected: true,
            pool_handle: PoolHandle(pool_handle),
            pe_id,
            error: Some(Seq::from_items(&causes)),
        };
        self.send(target, generation, &message, out);
    }

    /// Encodes and queues one message.
    fn send(
        &mut self,
        target: Target,
        generation: Generation,
        message: &AsapMessage<'_>,
        out: &mut Output,
    ) {
        send(&self.metrics, target, generation, message, out);
    }

    /// Whether the access rules let the peer behind `target` do `operation` in `pool_handle`
    /// (an association's addresses and TLS identity, or a datagram's sender); counts a refusal
    /// and logs it once a minute per peer.
    fn access_allows(
        &mut self,
        target: Target,
        pool_handle: &[u8],
        operation: Operation,
        now: Millis,
    ) -> bool {
        let rules = &self.config.access_rules;
        if rules.is_empty() {
            return true;
        }
        let association = match target {
            Target::Association(a) => self.associations.get(&a),
            _ => None,
        };
        let allowed = match (target, association) {
            (Target::Association(_), Some(a)) => access::allows(
                rules,
                pool_handle,
                operation,
                &a.info.peer_addresses,
                a.identity.as_ref(),
            ),
            (Target::UdpReply { to, .. }, _) => {
                access::allows(rules, pool_handle, operation, &[to], None)
            }
            _ => false,
        };
        if allowed {
            return true;
        }
        // The peer as logs name it: its certificate name over TLS, else its address.
        let peer = match (target, association) {
            (_, Some(a)) => a.identity.as_ref().map_or_else(
                || {
                    a.info
                        .peer_addresses
                        .first()
                        .map_or_else(String::new, |p| p.ip().to_string())
                },
                |identity| identity.primary().to_owned(),
            ),
            (Target::UdpReply { to, .. }, _) => to.ip().to_string(),
            _ => String::new(),
        };
        self.metrics.limit_refused(Limit::Access);
        if self.refusals.should_log(refusals::peer_key(&peer), now) {
            tracing::warn!(
                %peer,
                ?operation,
                pool_handle = %String::from_utf8_lossy(pool_handle),
                "request refused by access.rules (further refusals of this peer are counted, \
                 logged again in a minute)"
            );
        }
        false
    }

    /// Takes one registration token of the identity behind `association` (its TLS certificate
    /// name, else its source address); `false` when the identity's rate is exhausted.
    fn take_registration_token(&mut self, association: AssociationId, now: Millis) -> bool {
        let rate = self.config.max_registrations_per_second_per_identity;
        if rate == 0 {
            return true;
        }
        let Some(a) = self.associations.get(&association) else {
            return false;
        };
        let key = match (&a.identity, a.info.peer_addresses.first()) {
            (Some(identity), _) => identity.key(),
            (None, Some(address)) => refusals::peer_key(address.ip()),
            (None, None) => return true,
        };
        self.pr.registration_rates.take(key, rate, now)
    }

    /// Takes one request token of the association's rate limit; `false` when it is exhausted.
    fn take_token(&mut self, association: AssociationId, now: Millis) -> bool {
        let rate = self.config.max_requests_per_second;
        if rate == 0 {
            return true;
        }
        let Some(a) = self.associations.get_mut(&association) else {
            return false;
        };
        a.rate.take(rate, now)
    }
}

/// Encodes an ASAP message into `out` and counts it.
fn send(
    metrics: &WorkerMetrics,
    target: Target,
    generation: Generation,
    message: &AsapMessage<'_>,
    out: &mut Output,
) {
    let encode = |buf: &mut [u8]| message.encode(generation, buf);
    transmit(metrics, target, message.message_type(), encode, out);
}

/// Encodes an ASAP message of type `message_type` with `encode` into `out` and counts it.
fn transmit(
    metrics: &WorkerMetrics,
    target: Target,
    message_type: u8,
    encode: impl Fn(&mut [u8]) -> Result<usize, EncodeError>,
    out: &mut Output,
) {
    match out.transmit(target, encode) {
        Ok(()) => metrics.message_out(Protocol::Asap, message_type),
        Err(e) => tracing::warn!(?target, %e, "cannot encode an ASAP message; not sent"),
    }
}

/// Where and how a handle resolution response goes.
#[derive(Clone, Copy)]
struct Response<'a> {
    target: Target,
    generation: Generation,
    pool_handle: PoolHandle<'a>,
    /// The A bit (RFC 5352 §2.2.5): a subscription accepted, or a push.
    accepted: bool,
}

/// A handle resolution response assembled from the worker's encoded PEs
/// ([`super::encoded`]): the same bytes as encoding it (the overall policy is the first
/// PE's, as there). The number of PEs sent (0: only PEs the generation cannot carry); `None`
/// when the pool or one of the selected PEs is not cached, for the caller to encode the
/// response.
fn respond_from_cache(
    encoded: &mut EncodedPools,
    parts: &mut Vec<(u32, u32)>,
    metrics: &WorkerMetrics,
    snapshot: &PoolSnapshot,
    selected: &[u32],
    response: Response<'_>,
    out: &mut Output,
) -> Option<usize> {
    let Response {
        target,
        generation,
        pool_handle,
        accepted,
    } = response;
    let mut pool = encoded.pool(snapshot, generation, pool_handle)?;
    parts.clear();
    let mut policy = (0, 0);
    for &i in selected {
        match pool.part(snapshot, i as usize, generation) {
            Part::Encoded { pe, policy: p } => {
                if parts.is_empty() {
                    policy = p;
                }
                parts.push(pe);
            }
            Part::Unfit => {}
            Part::Uncached => return None,
        }
    }
    if parts.is_empty() {
        // Only PEs this generation cannot carry (64-bit identifiers on an RFC listener).
        return Some(0);
    }
    let bytes = pool.bytes();
    let at = |(start, end): (u32, u32)| &bytes[start as usize..end as usize];
    let encode = |buf: &mut [u8]| {
        asap::encode_resolution_response(
            accepted,
            pool.pool_handle(),
            at(policy),
            parts.iter().map(|&r| at(r)),
            buf,
        )
    };
    let ty = message_type::HANDLE_RESOLUTION_RESPONSE;
    transmit(metrics, target, ty, encode, out);
    Some(parts.len())
}

/// Empties a vector of views and hands its allocation on under another lifetime: collecting an
/// empty `into_iter` of a same-layout type reuses the buffer in place (no allocation).
fn recycle<'a, 'b>(mut views: Vec<PoolElementParam<'a>>) -> Vec<PoolElementParam<'b>> {
    views.clear();
    views
        .into_iter()
        .map(|_| unreachable!("emptied above"))
        .collect()
}

/// The ASAP transport of a PE (RFC 5352 §3.1 rule 4): the association's addresses and port.
fn asap_transport(info: &super::AssociationInfo) -> OwnedTransport {
    let kind = match info.transport {
        // SCTP in UDP is SCTP to the PE (its kernel may encapsulate it): the address is its
        // UDP one.
        Transport::Sctp | Transport::SctpUdp => TransportKind::Sctp,
        Transport::Tcp | Transport::Mptcp | Transport::Udp => TransportKind::Tcp,
    };
    OwnedTransport {
        kind,
        port: info.peer_addresses.first().map_or(0, SocketAddr::port),
        transport_use: 0,
        service_code: 0,
        addresses: info.peer_addresses.iter().map(SocketAddr::ip).collect(),
    }
}

/// ASAP_REGISTRATION_RESPONSE (RFC 5352 §2.2.3) with the cause and, for causes 0x5 and 0x7, the
/// pool's policy or transport parameter as cause info (RFC 5354 §3.12.6, §3.12.8).
fn registration_response(
    generation: Generation,
    pool_handle: &[u8],
    pe_id: PeId,
    error: Option<&RegistrationError>,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut info = [0u8; 512];
    let info_len = match error {
        Some(RegistrationError::InconsistentPolicy { pool_policy }) => {
            encode_policy_parameter(pool_policy, &mut info).unwrap_or(0)
        }
        Some(RegistrationError::InconsistentTransport {
            pool_transport: OwnedUserTransport::Transport(t),
        }) => encode_transport_parameter(&t.view(), &mut info).unwrap_or(0),
        _ => 0,
    };
    let causes = error.map(|e| {
        [ErrorCause {
            code: e.cause(),
            info: &info[..info_len],
        }]
    });
    AsapMessage::RegistrationResponse {
        rejected: error.is_some(),
        pool_handle: PoolHandle(pool_handle),
        pe_id,
        error: causes.as_ref().map(|c| Seq::from_items(c)),
    }
    .encode(generation, buf)
}
