//! A pool user on the caller's thread: each call runs the PU core until its answer is there;
//! connections to the home registrar stay open between calls.

use rserpool_protocol::PeId;

use super::{Options, Runner};
use crate::pu::{Config, PoolUser, PuEvent};
use crate::{Error, PeInfo, Registrar, Rng};

/// A blocking pool user.
#[derive(Debug)]
pub struct Pu {
    core: PoolUser,
    runner: Runner,
}

impl Pu {
    /// A PU with the default [`Options`] (configured registrars only).
    pub fn new(config: Config) -> Self {
        Self {
            core: PoolUser::new(config, Rng::from_entropy().next_u64()),
            runner: Runner::new(Options::default()),
        }
    }

    /// A PU with these [`Options`]; fails if the announce socket cannot be opened.
    pub fn with_options(config: Config, options: Options) -> std::io::Result<Self> {
        Ok(Self {
            core: PoolUser::new(config, Rng::from_entropy().next_u64()),
            runner: Runner::with_announces(options)?,
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
        let id = self.core.resolve(handle, items, self.runner.now());
        loop {
            self.runner.turn(&mut self.core, &mut events);
            for event in events.drain(..) {
                match event {
                    PuEvent::Resolved {
                        request,
                        pool_elements,
                        ..
                    } if request == id => return Ok(pool_elements),
                    PuEvent::Failed { request, error, .. } if request == id => return Err(error),
                    _ => {}
                }
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
