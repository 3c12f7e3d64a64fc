//! `rserpool-bench takeover`: the takeover measurement. Three spawned registrars (PR IDs 1, 2
//! and 3) peered over ENRP on loopback, `--population` PEs registered at the first and kept alive
//! by a [`Fleet`] until the other two hold them all; then the first gets SIGKILL (or SIGSTOP,
//! `--fault stop`), and both survivors resolve every pool every 10 ms until each answers every
//! PE with a survivor as its home PR. It reports that time against the bound the profile's
//! timers set, the PEs' new homes and the survivors' `rserpool_enrp_takeovers_total`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

use crate::app::population_pes;
use crate::chaos::bounds::Timers;
use crate::chaos::probe::{self, Probe, ProbeSpec};
use crate::chaos::scope::send_signal;
use crate::chaos::{Clock, Millis};
use crate::cli::{Cli, EnrpGeneration, TakeoverFault};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::report::TakeoverSummary;
use crate::target::{self, EnrpSpawn, Target};
use crate::workload::{PeIds, pool_handle};

/// The registrars' PR IDs; the PEs register at the first, which is faulted.
const IDS: [u64; 3] = [1, 2, 3];
/// How often each survivor is asked for every pool.
const ROUND: Millis = 10;
/// How often the survivors' metrics are read while the population replicates.
const METRICS_POLL: Duration = Duration::from_millis(10);

/// Runs `rserpool-bench takeover` with the registrar `bin` and the configuration file `config`.
pub fn run(cli: &Cli, bin: &Path, config: &str) -> Result<TakeoverSummary> {
    let timers = profile_timers(bin, &cli.profile)?;
    let workers = cli.was_given("workers").then_some(cli.workers);
    let listen = format!(
        "{}://127.0.0.1:0{}",
        cli.transport.scheme(),
        match cli.enrp_generation {
            EnrpGeneration::Rfc => "",
            EnrpGeneration::Ng => "?generation=ng",
        }
    );
    let mut registrars = Vec::with_capacity(IDS.len());
    let mut enrp_urls: Vec<String> = Vec::with_capacity(IDS.len());
    let mut metrics = Vec::with_capacity(IDS.len());
    for id in IDS {
        // Each registrar starts with the ones before it as peers; they learn it from its
        // first message.
        let spawn = EnrpSpawn {
            listen: listen.clone(),
            peers: enrp_urls.clone(),
            id: Some(id),
            ..EnrpSpawn::default()
        };
        // `--workers 0` is the registrar's "one per online core", the profiles' setting.
        let target = Target::spawn(
            bin,
            workers.unwrap_or(0),
            &cli.profile,
            cli.transport,
            false,
            config,
            Some(&spawn),
        )?;
        let metrics_url = target.metrics_url().map(str::to_owned).ok_or_else(|| {
            Error::new(format!(
                "PR {id} printed no `metrics` line: the bench reads its counters"
            ))
        })?;
        let enrp = target.enrp_url().unwrap_or_default().to_owned();
        note(
            cli,
            &format!(
                "started PR {id}: asap {}, enrp {enrp} (metrics {metrics_url})",
                target.endpoint()
            ),
        );
        enrp_urls.push(enrp);
        metrics.push(metrics_url);
        registrars.push(target);
    }

    let pools = cli.population_pools();
    let handles: Vec<Vec<u8>> = (0..pools).map(pool_handle).collect();
    let index: HashMap<&[u8], usize> = handles
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_slice(), i))
        .collect();
    let pes = population_pes(cli, &mut PeIds::new());
    let mut expected = vec![HashSet::new(); pools];
    for pe in &pes {
        expected[index[pe.pool.as_slice()]].insert(pe.id.0);
    }
    let registering = Instant::now();
    let fleet = Fleet::start(&registrars[0].endpoint(), cli.connections, pes)?;
    let registered = Instant::now();
    let register_s = registered.duration_since(registering).as_secs_f64();
    let connections = fleet.connections();
    note(
        cli,
        &format!(
            "registered {} PEs over {} associations at PR {} in {register_s:.2} s",
            fleet.pes(),
            connections,
            IDS[0]
        ),
    );
    let replicated = await_replication(cli, &metrics[1..], registered)?;

    let clock = Clock::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = channel();
    let probes = registrars[1..]
        .iter()
        .enumerate()
        .map(|(slot, target)| {
            let spec = ProbeSpec {
                slot,
                transport: cli.transport,
                port: target.endpoint().addr.port(),
                pools: handles.clone(),
                interval: ROUND,
            };
            probe::spawn(spec, clock.clone(), Arc::clone(&stop), tx.clone())
        })
        .collect::<Result<Vec<_>>>()?;
    // The probes hold the only senders: a gone probe shows as a disconnected channel.
    drop(tx);
    let deadline = |from: Millis| from + (cli.timeout * 1000.0) as Millis;
    let survivors = &IDS[1..];
    let fault = cli.takeover_fault();
    let measured = (|| {
        // Before the fault both survivors answer every PE as homed at the first registrar.
        let from = clock.now();
        await_homes(&rx, &expected, &clock, (from, deadline(from)), |home| {
            home == IDS[0]
        })
        .map_err(|e| {
            Error::new(format!(
                "before the fault, {e}: the survivors do not answer every PE with PR {} as its \
                 home",
                IDS[0]
            ))
        })?;
        note(cli, &format!("{} to PR {}", fault.signal(), IDS[0]));
        let signalled = clock.now();
        match fault {
            TakeoverFault::Kill => registrars[0].kill(),
            TakeoverFault::Stop => send_signal(pid(&registrars[0])?, "STOP")?,
        }
        let (done, homes) = await_homes(
            &rx,
            &expected,
            &clock,
            (signalled, deadline(signalled)),
            |home| survivors.contains(&home),
        )
        .map_err(|e| {
            Error::new(format!(
                "after {} to PR {}, {e}: no takeover within --timeout {}",
                fault.signal(),
                IDS[0],
                cli.timeout
            ))
        })?;
        Ok::<_, Error>((done - signalled, homes))
    })();
    stop.store(true, Ordering::Relaxed);
    for probe in probes {
        let _ = probe.join();
    }
    if fault == TakeoverFault::Stop
        && let Some(pid) = registrars[0].pid()
    {
        send_signal(pid, "CONT")?;
    }
    let (took, homes) = measured?;
    let takeovers = survivors
        .iter()
        .zip(&metrics[1..])
        .map(|(&id, url)| {
            let text = target::scrape(url)?;
            Ok((
                id,
                target::sample_sum(&text, "rserpool_enrp_takeovers_total") as u64,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    // No deregistrations: the registrars drop the PEs when they are killed.
    drop(fleet);
    Ok(TakeoverSummary {
        registrars: IDS
            .iter()
            .zip(&registrars)
            .zip(&enrp_urls)
            .map(|((&id, target), enrp)| (id, format!("{} (enrp {enrp})", target.endpoint())))
            .collect(),
        profile: cli.profile.clone(),
        workers,
        enrp_generation: cli.enrp_generation.name().to_owned(),
        signal: fault.signal().to_owned(),
        population: cli.population(),
        pools,
        connections,
        register_s,
        replicate_s: replicated.duration_since(registered).as_secs_f64(),
        timers_ms: (
            timers.heartbeat,
            timers.max_time_last_heard,
            timers.max_time_no_response,
        ),
        takeover_s: took as f64 / 1000.0,
        homes,
        takeovers,
    })
}

/// The ENRP timers of `profile`, from the registrar's own `--check-config` output.
fn profile_timers(bin: &Path, profile: &str) -> Result<Timers> {
    let out = Command::new(bin)
        .args(["--profile", profile, "--check-config"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::new(format!(
                "cannot run {} --check-config: {e}; build it (cargo build --release -p \
                 rserpool-registrar) or pass --registrar-bin PATH",
                bin.display()
            ))
        })?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "{} --profile {profile} --check-config failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Timers::parse(&String::from_utf8_lossy(&out.stdout)).map_err(Error::new)
}

/// The process ID of a running spawned registrar.
fn pid(target: &Target) -> Result<u32> {
    target
        .pid()
        .ok_or_else(|| Error::new("the faulted registrar is not running: it exited by itself"))
}

/// Reads the `rserpool_pool_elements` gauge at each of `metrics` every 10 ms until every one
/// holds `--population`, for at most `--timeout` seconds after `registered`; returns when.
fn await_replication(cli: &Cli, metrics: &[String], registered: Instant) -> Result<Instant> {
    let population = cli.population();
    let timeout = Duration::from_secs_f64(cli.timeout);
    loop {
        let mut short = None;
        for (id, url) in IDS[1..].iter().zip(metrics) {
            let text = target::scrape(url)?;
            let held = target::sample_sum(&text, "rserpool_pool_elements ") as usize;
            if held < population {
                short = Some((id, held));
                break;
            }
        }
        let now = Instant::now();
        let Some((id, held)) = short else {
            return Ok(now);
        };
        if now >= registered + timeout {
            return Err(Error::new(format!(
                "PR {id} held {held} of {population} PEs {:.1} s after their registration at PR \
                 {}: the scope did not replicate them within --timeout {}",
                now.duration_since(registered).as_secs_f64(),
                IDS[0],
                cli.timeout
            )));
        }
        thread::sleep(METRICS_POLL);
    }
}

/// One survivor's latest answer per pool, and which of them are complete.
struct View {
    /// (PE ID, home PR ID) of the latest answer for each pool.
    latest: Vec<Vec<(u64, u64)>>,
    /// Whether that answer had every PE of the pool, each homed where it should be.
    complete: Vec<bool>,
    /// How many pools are complete.
    count: usize,
    /// When the answer arrived that made every pool complete, while they all are.
    since: Option<Millis>,
}

/// Reads the survivors' answers from `probes` until both answered every pool of `expected`
/// with all its PEs, each with a home PR that `homed` accepts, in answers to requests sent in
/// `window` (from its start on; giving up at its end). Returns when the last survivor's answer
/// completing this arrived, and the PEs by home PR in that survivor's answers; or, in words, how
/// far each survivor got.
fn await_homes(
    probes: &Receiver<Probe>,
    expected: &[HashSet<u64>],
    clock: &Clock,
    window: (Millis, Millis),
    homed: impl Fn(u64) -> bool,
) -> std::result::Result<(Millis, Vec<(u64, usize)>), String> {
    let (from, until) = window;
    let mut views: Vec<View> = (1..IDS.len())
        .map(|_| View {
            latest: vec![Vec::new(); expected.len()],
            complete: vec![false; expected.len()],
            count: 0,
            since: None,
        })
        .collect();
    loop {
        let now = clock.now();
        if now >= until {
            let progress: Vec<String> = views
                .iter()
                .zip(&IDS[1..])
                .map(|(v, id)| {
                    format!(
                        "PR {id} answered {} of {} pools as expected",
                        v.count,
                        expected.len()
                    )
                })
                .collect();
            return Err(progress.join(" and "));
        }
        let answer = match probes.recv_timeout(Duration::from_millis(until - now)) {
            Ok(Probe::Answer(answer)) if answer.sent >= from => answer,
            Ok(_) | Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                return Err("the survivors' resolving threads are gone".into());
            }
        };
        let view = &mut views[answer.slot];
        let wanted = &expected[answer.pool];
        let complete = answer.pes.len() == wanted.len()
            && answer
                .pes
                .iter()
                .all(|&(pe, home)| wanted.contains(&pe) && homed(home));
        match (view.complete[answer.pool], complete) {
            (false, true) => view.count += 1,
            (true, false) => view.count -= 1,
            _ => {}
        }
        view.complete[answer.pool] = complete;
        view.latest[answer.pool] = answer.pes;
        view.since = match (view.count == expected.len(), view.since) {
            (true, None) => Some(answer.received),
            (true, since) => since,
            (false, _) => None,
        };
        if views.iter().all(|v| v.since.is_some()) {
            let last = views.iter().max_by_key(|v| v.since).expect("two survivors");
            let mut homes = BTreeMap::new();
            for &(_, home) in last.latest.iter().flatten() {
                *homes.entry(home).or_insert(0) += 1;
            }
            return Ok((last.since.unwrap_or(from), homes.into_iter().collect()));
        }
    }
}

fn note(cli: &Cli, line: &str) {
    if !cli.quiet {
        eprintln!("{line}");
    }
}
