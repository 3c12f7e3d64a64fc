//! A pool element on a background thread: [`Pe::register`] registers on the caller's thread and
//! hands the PE to a thread that answers keep-alives, re-registers, fails over and deregisters
//! when the [`PeHandle`] is dropped.

use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rserpool_protocol::{PeId, Policy, PrId};

use super::{Command, Input, Options, Runner};
use crate::pe::{Config, PeEvent, PeState, PoolElement};
use crate::{Error, Registrar, Rng};

/// Events a [`PeHandle`] keeps for its application when nobody reads them, at most.
const EVENT_BACKLOG: usize = 256;

/// Registers pool elements.
#[derive(Clone, Copy, Debug)]
pub struct Pe;

/// What the background thread publishes about its PE.
#[derive(Clone, Debug)]
struct Status {
    state: PeState,
    registrar: Option<Registrar>,
    home_pr: Option<PrId>,
    policy: Policy,
    last_error: Option<Error>,
}

impl Pe {
    /// Registers a PE with the default [`Options`]; returns once a registrar accepted it.
    pub fn register(config: Config) -> Result<PeHandle, Error> {
        Self::register_with(config, Options::default())
    }

    /// Registers a PE: server hunt and registration on the caller's thread; on success the PE
    /// moves to a background thread. Fails with the registrar's cause when it refuses
    /// ([`Error::Rejected`]), with every address and OS error when no registrar can be reached
    /// ([`Error::Unreachable`]), or after MAX-REG-ATTEMPT unanswered attempts.
    pub fn register_with(config: Config, options: Options) -> Result<PeHandle, Error> {
        let drop_timeout = options.drop_timeout;
        let mut runner = Runner::with_announces(options)
            .map_err(|e| Error::Config(format!("cannot listen for announces: {e}")))?;
        let mut core = PoolElement::new(config, Rng::from_entropy().next_u64())?;
        core.start(runner.now());
        let mut events = Vec::new();
        let mut backlog = Vec::new();
        loop {
            runner.turn(&mut core, &mut events);
            let mut registered = false;
            for event in events.drain(..) {
                match event {
                    PeEvent::Registered { .. } => registered = true,
                    PeEvent::Rejected { error, .. } | PeEvent::Failed(error) => return Err(error),
                    PeEvent::ServerHuntFailed(failures) if !registered => {
                        return Err(Error::Unreachable(failures));
                    }
                    _ => {}
                }
                backlog.push(event);
            }
            if registered {
                break;
            }
        }
        let (events_tx, events_rx) = sync_channel(EVENT_BACKLOG);
        let status = Arc::new(Mutex::new(status_of(&core, None)));
        for event in backlog {
            let _ = events_tx.try_send(event);
        }
        let commands = runner.commands();
        let (done_tx, done_rx) = sync_channel(1);
        let shared = Arc::clone(&status);
        let id = core.id();
        let thread = std::thread::Builder::new()
            .name(format!("rserpool-pe-{id}"))
            .spawn(move || {
                let result = run(core, runner, &shared, &events_tx);
                let _ = done_tx.send(());
                result
            })
            .map_err(|e| Error::Config(format!("cannot start the PE thread: {e}")))?;
        Ok(PeHandle {
            id,
            commands,
            status,
            events: events_rx,
            done: done_rx,
            thread: Some(thread),
            drop_timeout,
        })
    }
}

fn status_of(core: &PoolElement, last_error: Option<Error>) -> Status {
    Status {
        state: core.state(),
        registrar: core.registrar(),
        home_pr: core.home_pr(),
        policy: core.policy(),
        last_error,
    }
}

fn lock(status: &Mutex<Status>) -> MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The background thread: runs the PE until it deregistered, failed or was aborted. Returns the
/// outcome of the deregistration (or the error that stopped the PE).
fn run(
    mut core: PoolElement,
    mut runner: Runner,
    status: &Mutex<Status>,
    events_tx: &SyncSender<PeEvent>,
) -> Result<(), Error> {
    let mut events = Vec::new();
    let mut outcome = Err(Error::Stopped);
    loop {
        let command = runner.turn(&mut core, &mut events);
        let now = runner.now();
        match command {
            Some(Command::SetPolicy(policy)) => core.set_policy(policy, now),
            Some(Command::Deregister) => core.deregister(now),
            Some(Command::Abort) => return Err(Error::Stopped),
            None => {}
        }
        runner.flush(&mut core, &mut events);
        let mut last_error = lock(status).last_error.clone();
        for event in &events {
            match event {
                PeEvent::Rejected { error, .. } | PeEvent::Failed(error) => {
                    last_error = Some(error.clone());
                    outcome = Err(error.clone());
                }
                PeEvent::Deregistered => outcome = Ok(()),
                _ => {}
            }
        }
        // The status first: an application woken by an event sees the state after it.
        *lock(status) = status_of(&core, last_error);
        for event in events.drain(..) {
            let _ = events_tx.try_send(event);
        }
        if matches!(core.state(), PeState::Deregistered | PeState::Failed) {
            return outcome;
        }
    }
}

/// A registered pool element running on its own thread. Dropping it deregisters (waiting at most
/// [`Options::drop_timeout`]).
#[derive(Debug)]
pub struct PeHandle {
    id: PeId,
    commands: Sender<Input>,
    status: Arc<Mutex<Status>>,
    events: Receiver<PeEvent>,
    done: Receiver<()>,
    thread: Option<JoinHandle<Result<(), Error>>>,
    drop_timeout: std::time::Duration,
}

impl PeHandle {
    /// The PE identifier.
    pub fn pe_id(&self) -> PeId {
        self.id
    }

    /// Where the PE stands.
    pub fn state(&self) -> PeState {
        lock(&self.status).state
    }

    /// The registrar holding the registration now.
    pub fn registrar(&self) -> Option<Registrar> {
        lock(&self.status).registrar
    }

    /// The home PR's identifier, once a keep-alive told it.
    pub fn home_pr(&self) -> Option<PrId> {
        lock(&self.status).home_pr
    }

    /// The policy values advertised.
    pub fn policy(&self) -> Policy {
        lock(&self.status).policy
    }

    /// The last error the PE met (a refused re-registration, a failure).
    pub fn last_error(&self) -> Option<Error> {
        lock(&self.status).last_error.clone()
    }

    /// What happened to the PE since the last call (registrations, failovers, home changes,
    /// errors); the oldest are kept when nobody reads them.
    pub fn events(&self) -> &Receiver<PeEvent> {
        &self.events
    }

    /// Advertises new policy values (e.g. the load of an adaptive policy) by re-registration
    /// (RFC 5352 §6.5.2).
    pub fn set_policy(&self, policy: Policy) {
        let _ = self
            .commands
            .send(Input::Command(Command::SetPolicy(policy)));
    }

    /// Deregisters and waits for the registrar's answer (T3, server hunt and retry, RFC 5352
    /// §3.2). Returns the error that had stopped the PE, if it had stopped.
    pub fn deregister(mut self) -> Result<(), Error> {
        let _ = self.commands.send(Input::Command(Command::Deregister));
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) | None => Err(Error::Stopped),
        }
    }
}

impl Drop for PeHandle {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.commands.send(Input::Command(Command::Deregister));
        match self.done.recv_timeout(self.drop_timeout) {
            Ok(()) => {
                let _ = thread.join();
            }
            Err(_) => {
                // Closing the connection makes the registrar remove the PE with it.
                let _ = self.commands.send(Input::Command(Command::Abort));
            }
        }
    }
}
