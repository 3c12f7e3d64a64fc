//! A pool user on the caller's thread: each call runs the PU core until its answer is there;
//! connections to the home registrar stay open between calls. A [`Subscription`] follows a
//! pool's changes (RFC 5352 §2.2.5-§2.2.6): pushed by a registrar that accepts it, polled from
//! one that declines.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rserpool_protocol::PeId;

use super::{Core, Options, Runner};
use crate::pu::{Config, PoolChange, PoolUser, PuEvent, SubscriptionMode};
use crate::{Action, ConnId, Error, Millis, PeInfo, Registrar, Rng};

/// A blocking pool user.
#[derive(Debug)]
pub struct Pu {
    core: PoolUser,
    runner: Runner,
    /// Changes of subscribed pools that arrived while the caller waited for something else.
    changes: VecDeque<(Vec<u8>, PoolChange)>,
}

impl Pu {
    /// A PU with the default [`Options`] (configured registrars only).
    pub fn new(config: Config) -> Self {
        Self {
            core: PoolUser::new(config, Rng::from_entropy().next_u64()),
            runner: Runner::new(Options::default()),
            changes: VecDeque::new(),
        }
    }

    /// A PU with these [`Options`]; fails if the announce socket cannot be opened.
    pub fn with_options(config: Config, options: Options) -> std::io::Result<Self> {
        Ok(Self {
            core: PoolUser::new(config, Rng::from_entropy().next_u64()),
            runner: Runner::with_announces(options)?,
            changes: VecDeque::new(),
        })
    }

    /// Resolves a pool handle (RFC 5352 §3.3) with the registrar's default number of PEs.
    pub fn resolve(&mut self, pool_handle: impl AsRef<[u8]>) -> Result<Vec<PeInfo>, Error> {
        self.resolve_items(pool_handle, None)
    }

    /// Resolves a pool handle asking for `items` PEs (RSPLIB's handle-resolution option;
    /// `u32::MAX` = all). A fresh cache entry answers without a request.
    pub fn resolve_items(
        &mut self,
        pool_handle: impl AsRef<[u8]>,
        items: Option<u32>,
    ) -> Result<Vec<PeInfo>, Error> {
        let handle = pool_handle.as_ref();
        if handle.is_empty() {
            return Err(Error::Config("the pool handle is empty".into()));
        }
        let mut events = Vec::new();
        self.runner.drain(&mut self.core, &mut events);
        self.keep_changes(&mut events);
        let id = self.core.resolve(handle, items, self.runner.now());
        loop {
            self.runner.turn(&mut self.core, &mut events);
            let mut answer = None;
            for event in events.drain(..) {
                match event {
                    PuEvent::Resolved {
                        request,
                        pool_elements,
                        ..
                    } if request == id => answer = Some(Ok(pool_elements)),
                    PuEvent::Failed { request, error, .. } if request == id => {
                        answer = Some(Err(error));
                    }
                    PuEvent::Subscription {
                        pool_handle,
                        change,
                    } => self.changes.push_back((pool_handle, change)),
                    _ => {}
                }
            }
            if let Some(answer) = answer {
                return answer;
            }
        }
    }

    /// Subscribes to the changes of a pool (RFC 5352 §2.2.5; `items` as for
    /// [`Self::resolve_items`]) and returns at once; [`Subscription::next_change`] waits for
    /// them. The first changes are the mode ([`PoolChange::Mode`]: pushed when the registrar set
    /// the A bit, else polled every [`Config::poll_interval`], transparently) and the pool's
    /// PEs (every one added) or [`PoolChange::Gone`]. A lost association subscribes again at the
    /// next registrar. Dropping the subscription ends it (RFC 5352 has no message for that: the
    /// association to the registrar is closed when no other accepted subscription and no
    /// request needs it, and the registrar stops pushing).
    pub fn subscribe(
        &mut self,
        pool_handle: impl AsRef<[u8]>,
        items: Option<u32>,
    ) -> Result<Subscription<'_>, Error> {
        let handle = pool_handle.as_ref();
        if handle.is_empty() {
            return Err(Error::Config("the pool handle is empty".into()));
        }
        let mut events = Vec::new();
        self.runner.drain(&mut self.core, &mut events);
        self.keep_changes(&mut events);
        self.core.subscribe(handle, items, self.runner.now());
        self.runner.flush(&mut self.core, &mut events);
        self.keep_changes(&mut events);
        Ok(Subscription {
            pool: handle.to_vec(),
            pu: self,
        })
    }

    /// Keeps the changes of subscribed pools among `events` for [`Subscription::next_change`];
    /// the rest answered nothing the caller waits for.
    fn keep_changes(&mut self, events: &mut Vec<PuEvent>) {
        for event in events.drain(..) {
            if let PuEvent::Subscription {
                pool_handle,
                change,
            } = event
            {
                self.changes.push_back((pool_handle, change));
            }
        }
    }

    /// The PE to use next, by the pool's overall policy over the cached list; resolves first
    /// when the cache has no fresh entry (RFC 5352 §3.3 C1-C4, RFC 5356).
    pub fn select(&mut self, pool_handle: impl AsRef<[u8]>) -> Result<PeInfo, Error> {
        let handle = pool_handle.as_ref();
        if self.core.cached(handle, self.runner.now()).is_none() {
            self.resolve(handle)?;
        }
        self.core.select(handle).ok_or_else(|| Error::UnknownPool {
            pool_handle: handle.escape_ascii().to_string(),
        })
    }

    /// The PE `pe_id` failed the application: reports it to the registrar (rate limited, RFC
    /// 5352 §3.5) and returns the next PE of the cached list by the pool's policy.
    pub fn pe_failed(&mut self, pool_handle: impl AsRef<[u8]>, pe_id: PeId) -> Option<PeInfo> {
        let next = self
            .core
            .pe_failed(pool_handle.as_ref(), pe_id, self.runner.now());
        let mut events = Vec::new();
        self.runner.flush(&mut self.core, &mut events);
        self.keep_changes(&mut events);
        next
    }

    /// The home registrar, when connected.
    pub fn registrar(&self) -> Option<Registrar> {
        self.core.registrar()
    }

    /// The sans-I/O core (cache, known registrars).
    pub fn core(&self) -> &PoolUser {
        &self.core
    }
}

/// A subscription to a pool's changes ([`Pu::subscribe`]); dropping it ends the subscription.
/// It borrows its pool user: one subscription at a time per [`Pu`] (the [`PoolUser`] core
/// itself follows any number of pools).
#[derive(Debug)]
pub struct Subscription<'a> {
    pu: &'a mut Pu,
    pool: Vec<u8>,
}

impl Subscription<'_> {
    /// The pool handle.
    pub fn pool_handle(&self) -> &[u8] {
        &self.pool
    }

    /// How the pool is followed: pushed by the registrar or polled; `None` until the registrar
    /// answered the subscription (and again after a lost association, until the next registrar
    /// did).
    pub fn mode(&self) -> Option<SubscriptionMode> {
        self.pu.core.subscription_mode(&self.pool)
    }

    /// The pool's PEs at the last answer; `None` before one or when the pool is unknown.
    pub fn elements(&self) -> Option<&[PeInfo]> {
        self.pu
            .core
            .subscription(&self.pool)
            .and_then(|t| t.elements())
    }

    /// How many answers (the first, each push or poll) and failed attempts there were, whether
    /// they changed anything or not.
    pub fn updates(&self) -> u64 {
        self.pu
            .core
            .subscription(&self.pool)
            .map_or(0, |t| t.updates())
    }

    /// The pool user, e.g. to pick a PE of the pool ([`Pu::select`]: while the registrar pushes,
    /// from the cache without a request) or to resolve another pool. Changes that arrive
    /// meanwhile wait for [`Self::next_change`].
    pub fn pu(&mut self) -> &mut Pu {
        self.pu
    }

    /// Waits at most `timeout` for the next change of the pool; `None` when nothing changed in
    /// that time. Meanwhile the pool user answers pushes, polls and hunts for registrars.
    pub fn next_change(&mut self, timeout: Duration) -> Option<PoolChange> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            if let Some(i) = self.pu.changes.iter().position(|(h, _)| *h == self.pool) {
                return self.pu.changes.remove(i).map(|(_, change)| change);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Rounded up: the turn must not end before the caller's deadline.
            let until = self.pu.runner.now() + left.as_millis() as Millis + 1;
            let mut bounded = Until {
                core: &mut self.pu.core,
                deadline: until,
            };
            self.pu.runner.turn(&mut bounded, &mut events);
            self.pu.keep_changes(&mut events);
        }
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.pu.core.unsubscribe(&self.pool);
        let mut events = Vec::new();
        self.pu.runner.flush(&mut self.pu.core, &mut events);
        self.pu.keep_changes(&mut events);
        let pool = &self.pool;
        self.pu.changes.retain(|(h, _)| h != pool);
    }
}

/// The PU core with a deadline of the caller's: the driver's turn waits no longer than it.
struct Until<'a> {
    core: &'a mut PoolUser,
    deadline: Millis,
}

impl Core for Until<'_> {
    type Event = PuEvent;
    fn poll_action(&mut self) -> Option<Action<PuEvent>> {
        self.core.poll_action()
    }
    fn poll_timeout(&self) -> Option<Millis> {
        Some(
            self.core
                .poll_timeout()
                .map_or(self.deadline, |t| t.min(self.deadline)),
        )
    }
    fn handle_timeout(&mut self, now: Millis) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
    }
    fn on_connected(&mut self, conn: ConnId, local: Option<SocketAddr>, now: Millis) {
        self.core.on_connected(conn, local, now);
    }
    fn on_connect_failed(&mut self, conn: ConnId, error: String) {
        self.core.on_connect_failed(conn, error);
    }
    fn on_message(&mut self, conn: ConnId, message: &[u8], now: Millis) {
        self.core.on_message(conn, message, now);
    }
    fn on_closed(&mut self, conn: ConnId, now: Millis) {
        self.core.on_closed(conn, now);
    }
    fn on_announce(&mut self, from: SocketAddr, datagram: &[u8], now: Millis) {
        self.core.on_announce(from, datagram, now);
    }
}
