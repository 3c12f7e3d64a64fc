//! The time bounds a chaos run holds the operating scope to: the registrar timers of the profile
//! (read from the registrar's own `--check-config` output) and every bound derived from them, with
//! the derivation printed at the start of a run.

use super::Millis;

/// The slack added where messages cross loopback and processes are scheduled on a shared
/// machine: ENRP and ASAP round trips, a worker's turn, the bench reading a pipe.
pub const MARGIN: Millis = 250;

/// The registrar timers the bounds derive from, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// `enrp.heartbeat_interval_ms`: presences (with the audit checksum) to every peer.
    pub heartbeat: Millis,
    /// `enrp.max_time_last_heard_ms`: silence before a peer is probed.
    pub max_time_last_heard: Millis,
    /// `enrp.max_time_no_response_ms`: an unanswered probe makes the peer dead.
    pub max_time_no_response: Millis,
    /// `enrp.mentor_discovery_timeout_ms`: how long a starting registrar waits for a mentor.
    pub mentor_discovery_timeout: Millis,
    /// `enrp.reconnect_interval_ms`: between attempts to reach a peer again.
    pub reconnect_interval: Millis,
    /// `timers.keep_alive_interval_ms`: between a PE's keep-alives (jittered by ±12.5 %).
    pub keep_alive_interval: Millis,
    /// `timers.keep_alive_timeout_ms`: an unanswered keep-alive removes the PE.
    pub keep_alive_timeout: Millis,
}

impl Timers {
    /// The timers in the TOML that `rserpool-registrar --check-config` prints, or which key is
    /// missing.
    pub fn parse(check_config: &str) -> Result<Self, String> {
        let mut section = "";
        let mut values = std::collections::HashMap::new();
        for line in check_config.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
            } else if let Some((key, value)) = line.split_once('=')
                && let Ok(ms) = value.trim().parse::<Millis>()
            {
                values.insert(format!("{section}.{}", key.trim()), ms);
            }
        }
        let get = |key: &str| {
            values.get(key).copied().ok_or_else(|| {
                format!("the registrar's --check-config output has no `{key}`: is it the registrar of this workspace?")
            })
        };
        Ok(Self {
            heartbeat: get("enrp.heartbeat_interval_ms")?,
            max_time_last_heard: get("enrp.max_time_last_heard_ms")?,
            max_time_no_response: get("enrp.max_time_no_response_ms")?,
            mentor_discovery_timeout: get("enrp.mentor_discovery_timeout_ms")?,
            reconnect_interval: get("enrp.reconnect_interval_ms")?,
            keep_alive_interval: get("timers.keep_alive_interval_ms")?,
            keep_alive_timeout: get("timers.keep_alive_timeout_ms")?,
        })
    }
}

/// The bounds of a run, each derived from the [`Timers`] (see [`Bounds::describe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The timers.
    pub timers: Timers,
    /// The longest gap between two presences: the heartbeat plus its 12.5 % jitter.
    pub heartbeat_max: Millis,
    /// The registrar's ENRP housekeeping tick: a quarter of its shortest ENRP timer, 10 to 500.
    pub tick: Millis,
    /// From a registrar's last message to its peers declaring it dead.
    pub dead_peer: Millis,
    /// From a registrar falling silent to a survivor owning its PEs.
    pub takeover: Millis,
    /// From a change at one registrar (a PE registered or gone, a new home) to every settled
    /// registrar: the update itself, or the audit of the next presence when it was lost.
    pub update: Millis,
    /// From a registrar's (re)start to its serving the whole handlespace.
    pub startup: Millis,
    /// From a stopped registrar's SIGCONT to its serving the scope's handlespace again.
    pub resume: Millis,
    /// From a PE's death (no deregistration) to its home registrar removing it.
    pub keep_alive_death: Millis,
    /// The registration life the PEs register with.
    pub pe_life: Millis,
    /// The shortest and longest SIGSTOP of a registrar: longer than the takeover bound.
    pub stop: (Millis, Millis),
    /// The shortest and longest pause between two registrar faults.
    pub fault_gap: (Millis, Millis),
    /// The shortest and longest pause between two PE churn events.
    pub churn_gap: (Millis, Millis),
}

impl Bounds {
    /// The bounds for these timers.
    pub fn new(timers: Timers) -> Self {
        let heartbeat_max = timers.heartbeat + timers.heartbeat / 8;
        let tick = (timers
            .heartbeat
            .min(timers.max_time_last_heard)
            .min(timers.max_time_no_response)
            / 4)
        .clamp(10, 500);
        let dead_peer = timers.max_time_last_heard + timers.max_time_no_response + 2 * tick;
        let takeover = dead_peer + MARGIN;
        let update = 2 * heartbeat_max + MARGIN;
        let startup = timers.mentor_discovery_timeout;
        let settle = startup + update;
        Self {
            timers,
            heartbeat_max,
            tick,
            dead_peer,
            takeover,
            update,
            startup,
            resume: timers.reconnect_interval + update,
            keep_alive_death: timers.keep_alive_interval
                + timers.keep_alive_interval / 8
                + timers.keep_alive_timeout
                + MARGIN,
            pe_life: (10 * takeover).div_ceil(1000) * 1000,
            stop: (takeover * 3 / 2, takeover * 5 / 2),
            fault_gap: (settle, 2 * settle),
            churn_gap: (startup / 2, startup * 3 / 2),
        }
    }

    /// How long after a PE's death without deregistration no settled registrar may serve it:
    /// its home registrar's keep-alive bound, then the update to the others; or, when its home
    /// was down meanwhile, its registration life after the takeover (the new home cannot reach
    /// a PE over TCP to check on it, docs/operating-scope.md), then the update.
    pub fn dead_pe(&self, home_disturbed: bool) -> Millis {
        if home_disturbed {
            self.pe_life + self.takeover + self.update
        } else {
            self.keep_alive_death + self.update
        }
    }

    /// The bounds and their derivation, one line each, for the start of a run.
    pub fn describe(&self) -> Vec<String> {
        let t = &self.timers;
        vec![
            format!(
                "timers      heartbeat {} ms, max-time-last-heard {} ms, max-time-no-response {} ms, \
                 mentor discovery {} ms, reconnect {} ms, keep-alive {} + {} ms; margin {MARGIN} ms",
                t.heartbeat,
                t.max_time_last_heard,
                t.max_time_no_response,
                t.mentor_discovery_timeout,
                t.reconnect_interval,
                t.keep_alive_interval,
                t.keep_alive_timeout
            ),
            format!(
                "update      {} ms = 2 x (heartbeat + 12.5 % jitter) + margin: a lost update is \
                 repaired by the next presence's audit",
                self.update
            ),
            format!(
                "takeover    {} ms = last-heard + no-response + 2 ticks of {} ms + margin",
                self.takeover, self.tick
            ),
            format!(
                "start-up    {} ms = mentor discovery timeout; resume {} ms = reconnect + update",
                self.startup, self.resume
            ),
            format!(
                "live PE     must be served by every settled registrar while it has been registered \
                 (by its own output) for the update bound, {} ms, and still is {MARGIN} ms after \
                 the answer",
                self.update
            ),
            format!(
                "dead PE     gone {} ms after its deregistration (update); {} ms after its death \
                 (keep-alive {} ms + update); {} ms if its home registrar was down meanwhile \
                 (registration life {} ms + takeover + update)",
                self.update,
                self.dead_pe(false),
                self.keep_alive_death,
                self.dead_pe(true),
                self.pe_life
            ),
            format!(
                "two homes   two settled registrars may disagree on a PE's home for the update \
                 bound, {} ms; none may name a registrar down for takeover + update, {} ms",
                self.update,
                self.takeover + self.update
            ),
            format!(
                "faults      SIGSTOP {}-{} ms; {}-{} ms between registrar faults (start-up + \
                 update, twice that); {}-{} ms between PE churn events",
                self.stop.0,
                self.stop.1,
                self.fault_gap.0,
                self.fault_gap.1,
                self.churn_gap.0,
                self.churn_gap.1
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARRIER: &str = "[enrp]\nheartbeat_interval_ms = 200\nmax_time_last_heard_ms = 400\n\
        max_time_no_response_ms = 300\nmentor_discovery_timeout_ms = 1000  # from --config\n\
        reconnect_interval_ms = 200\n[timers]\nkeep_alive_interval_ms = 300\n\
        keep_alive_timeout_ms = 300\n[metrics]\naddress = \"127.0.0.1:9\"\n";

    #[test]
    fn the_carrier_timers_give_sub_second_bounds() {
        let b = Bounds::new(Timers::parse(CARRIER).unwrap());
        assert_eq!(b.tick, 50);
        assert_eq!(b.heartbeat_max, 225);
        assert_eq!(b.update, 700);
        assert_eq!(b.takeover, 400 + 300 + 100 + MARGIN);
        assert_eq!(b.startup, 1000);
        assert_eq!(b.resume, 900);
        assert_eq!(b.keep_alive_death, 337 + 300 + MARGIN);
        assert_eq!(b.pe_life, 11_000);
        assert!(b.stop.0 > b.takeover);
        assert_eq!(b.dead_pe(true), 11_000 + 1050 + 700);
    }

    #[test]
    fn a_missing_timer_is_named() {
        let e = Timers::parse("[enrp]\nheartbeat_interval_ms = 200\n").unwrap_err();
        assert!(e.contains("enrp.max_time_last_heard_ms"), "{e}");
    }
}
