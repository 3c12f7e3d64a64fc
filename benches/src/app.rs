//! One invocation from options to report: start or reach the server, register what the scenario
//! needs, run the load (for `churn` two loads at once, for `keepalive` the keep-alive measurement,
//! for `resync` a second registrar brought in sync by the first, and with `--restart` brought in
//! sync again after a SIGKILL and a restart; `takeover` is [`crate::takeover`]'s, `chaos`
//! [`crate::chaos`]'s, `hostile` [`crate::hostile`]'s, `sweep` [`crate::sweep`]'s, which runs
//! [`run_target`] once per point), clean up, and for `--compare-echo` run the echo ceiling right
//! after.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rserpool_protocol::Generation;

use crate::chaos;
use crate::chaos::scope::free_ports;
use crate::cli::{Cli, EnrpGeneration, RESYNC_KEEP_ALIVE_MS, RestartKind, ScenarioKind};
use crate::echo::{EchoReply, EchoServer, MAX_REPLY, MIN_REPLY};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::hostile;
use crate::load::{self, LoadSpec, Outcome, Poll};
use crate::net::{Endpoint, StreamTransport};
use crate::population::{self, PopulationOutcome, PopulationSpec, Share};
use crate::report::{KeepAliveInfo, PopulationInfo, ResyncSummary, RunReport, Summary};
use crate::subscribe;
use crate::takeover;
use crate::target::{self, EnrpSpawn, Target};
use crate::tls::{self, RunPki};
use crate::workload::{self, Check, ConnWork, PeIds, PeRecord, Pick, Table};

/// Runs what `cli` asks for.
pub fn run(cli: &Cli) -> Result<RunReport> {
    cli.validate().map_err(Error::new)?;
    let pki = if cli.tls {
        let pki = RunPki::new()?;
        tls::set_client(pki.client_tls()?);
        Some(pki)
    } else {
        None
    };
    let pki = pki.as_ref();
    match cli.scenario {
        ScenarioKind::Echo => {
            let reply = cli
                .echo_reply_size()
                .map_or(EchoReply::Mirror, EchoReply::Sized);
            let echo = run_echo(
                cli,
                pki,
                cli.transport,
                Generation::Rfc,
                ScenarioKind::Resolve,
                reply,
            )?;
            Ok(RunReport::Single(echo))
        }
        ScenarioKind::Churn => run_churn(cli, &open_target(cli, pki)?),
        ScenarioKind::Keepalive => {
            run_keepalive(cli, &open_target(cli, pki)?).map(RunReport::Single)
        }
        ScenarioKind::Resync => run_resync(cli).map(RunReport::Resync),
        ScenarioKind::Takeover => {
            takeover::run(cli, &registrar_bin(cli)?, &spawn_config(cli)).map(RunReport::Takeover)
        }
        ScenarioKind::Chaos => chaos::run(cli).map(|r| RunReport::Chaos(Box::new(r))),
        ScenarioKind::Hostile => hostile::run(cli).map(|r| RunReport::Hostile(Box::new(r))),
        ScenarioKind::Subscribe => {
            let target = open_target(cli, pki)?;
            subscribe::run(cli, &target.endpoint()).map(RunReport::Subscribe)
        }
        ScenarioKind::Sweep => Err(Error::new(
            "sweep reports a table of runs, not one run: run it with sweep::run",
        )),
        ScenarioKind::Resolve | ScenarioKind::Register | ScenarioKind::Storm => {
            let target = open_target(cli, pki)?;
            let endpoint = target.endpoint();
            let scenario = run_target(cli, &target)?;
            // The registrar must not compete with the echo server for the cores.
            drop(target);
            if !cli.compare_echo {
                return Ok(RunReport::Single(scenario));
            }
            if scenario.ops == 0 {
                return Err(Error::new(format!(
                    "{} got no replies: nothing to size the echo comparison by",
                    scenario.scenario
                )));
            }
            let size = reply_size_for(scenario.mean_reply_bytes);
            let echo = run_echo(
                cli,
                pki,
                endpoint.transport,
                endpoint.generation,
                cli.scenario,
                EchoReply::Sized(size),
            )?;
            Ok(RunReport::Compared { scenario, echo })
        }
    }
}

/// The echo reply size standing in for replies of `mean` bytes: the nearest multiple of 4 within
/// the echo server's range.
pub fn reply_size_for(mean: f64) -> usize {
    let size = ((mean / 4.0).round() as usize) * 4;
    size.clamp(MIN_REPLY, MAX_REPLY)
}

fn open_target(cli: &Cli, pki: Option<&RunPki>) -> Result<Target> {
    if let Some(endpoint) = cli.registrar {
        return Ok(Target::external(endpoint));
    }
    let bin = registrar_bin(cli)?;
    let mut config = spawn_config(cli);
    if let Some(pki) = pki {
        config.push_str(&pki.registrar_config());
    }
    let target = Target::spawn(
        &bin,
        cli.workers,
        &cli.profile,
        cli.transport,
        pki.is_some(),
        &config,
        None,
    )?;
    note(
        cli,
        &format!(
            "started {} at {} (metrics {})",
            bin.display(),
            target.endpoint(),
            target.metrics_url().unwrap_or("unknown")
        ),
    );
    Ok(target)
}

/// The registrar binary to spawn: `--registrar-bin` or the one next to this executable.
fn registrar_bin(cli: &Cli) -> Result<PathBuf> {
    match &cli.registrar_bin {
        Some(path) => Ok(path.clone()),
        None => target::default_registrar_bin(),
    }
}

/// The profile's `limits.max_pools`, raised when `--pools` asks for more.
const PROFILE_MAX_POOLS: usize = 100_000;
/// The profile's `limits.max_connections` (per worker), raised when `--connections` needs more.
const PROFILE_MAX_CONNECTIONS: usize = 1024;
/// The profiles' `subscriptions.max_per_association`, raised when a `subscribe` run needs more.
const PROFILE_SUBSCRIPTIONS_PER_ASSOCIATION: usize = 64;
/// The smallest `subscriptions.max_total` of the profiles, raised when a `subscribe` run needs more.
const PROFILE_MAX_SUBSCRIPTIONS: usize = 100_000;
/// Connections a run opens besides `--connections` and `--churners`: setup associations and
/// metrics scrapes.
const SETUP_ROOM: usize = 64;
/// How often a `resync` run reads the new registrar's metrics.
const RESYNC_POLL: Duration = Duration::from_millis(10);
/// The PR ID of a `resync` run's new registrar when it is to be restarted.
const NEWCOMER_ID: u64 = 2;
/// The PR ID the new registrar is restarted with by `--restart new-id`.
const NEWCOMER_NEW_ID: u64 = 3;
/// The registrar's per-worker busy time (handling events, not waiting for them).
const BUSY: &str = "rserpool_worker_busy_seconds_total{";

/// The configuration file of a spawned registrar: room for as many PEs on one association and in
/// one pool as the scenario puts there and for `--pools` pools (never below the profile's limits),
/// the keep-alive interval asked for, for `resync` the page size, and for `takeover` no limit on
/// requests per association.
pub fn spawn_config(cli: &Cli) -> String {
    let pools = cli.population_pools().max(1);
    let setup = cli.pools * cli.pool_elements;
    let (per_association, per_pool) = match cli.scenario {
        ScenarioKind::Keepalive
        | ScenarioKind::Resync
        | ScenarioKind::Takeover
        | ScenarioKind::Storm => (
            cli.population().div_ceil(cli.connections.max(1)),
            cli.population().div_ceil(pools),
        ),
        ScenarioKind::Register if cli.registers_new_pes() => (
            cli.population().div_ceil(cli.connections.max(1)),
            cli.population().div_ceil(pools),
        ),
        ScenarioKind::Register => (
            cli.pes_per_connection,
            (cli.connections * cli.pes_per_connection).div_ceil(pools),
        ),
        ScenarioKind::Resolve
        | ScenarioKind::Sweep
        | ScenarioKind::Churn
        | ScenarioKind::Echo
        | ScenarioKind::Chaos
        | ScenarioKind::Hostile => (
            setup.div_ceil(16),
            cli.pool_elements + cli.churners.div_ceil(pools),
        ),
        // One changing association holds a PE in every pool.
        ScenarioKind::Subscribe => (cli.pools, 1),
    };
    // Every association of the bench comes from one address, one identity to the registrar:
    // the limit per identity (the carrier profile's) would meter the whole load.
    let mut config = format!(
        "[limits]\nmax_pes_per_association = {}\nmax_pes_per_pool = {}\n\
         max_registrations_per_second_per_identity = 0\n",
        per_association.max(1000),
        per_pool.max(10_000)
    );
    // The profile allows 1024 connections per worker; a storm of a thousand associations on one
    // worker needs the room (and the fleets of setup connections some more).
    let connections = cli.connections + cli.churners + SETUP_ROOM;
    if connections > PROFILE_MAX_CONNECTIONS {
        config.push_str(&format!("max_connections = {connections}\n"));
    }
    // A takeover run resolves every pool at each survivor every 10 ms over one association: more
    // than `carrier`'s 1000 requests per second per association.
    if cli.scenario == ScenarioKind::Takeover {
        config.push_str("max_requests_per_second = 0\n");
    }
    // The registrar splits `max_pools` evenly over its shards, and pool handles do not split
    // exactly evenly: an eighth more leaves room for the fullest shard.
    let room = pools + pools / 8 + 64;
    if room > PROFILE_MAX_POOLS {
        config.push_str(&format!("max_pools = {room}\n"));
    }
    let keep_alive = match cli.scenario {
        ScenarioKind::Resync => Some(cli.keep_alive_interval.unwrap_or(RESYNC_KEEP_ALIVE_MS)),
        _ => cli.keep_alive_interval,
    };
    if let Some(ms) = keep_alive {
        config.push_str(&format!("[timers]\nkeep_alive_interval_ms = {ms}\n"));
    }
    if cli.scenario == ScenarioKind::Resync {
        config.push_str(&format!(
            "[enrp]\nmax_pes_per_table_response = {}\n",
            cli.page
        ));
    }
    // Room for each association's share of the subscriptions, and for all of them.
    if cli.scenario == ScenarioKind::Subscribe {
        let per = cli.subscribers.div_ceil(cli.connections.max(1));
        config.push_str("[subscriptions]\n");
        if per > PROFILE_SUBSCRIPTIONS_PER_ASSOCIATION {
            config.push_str(&format!("max_per_association = {per}\n"));
        }
        if cli.subscribers > PROFILE_MAX_SUBSCRIPTIONS {
            config.push_str(&format!("max_total = {}\n", cli.subscribers));
        }
    }
    config
}

fn note(cli: &Cli, line: &str) {
    if !cli.quiet {
        eprintln!("{line}");
    }
}

/// The resolve, register or storm scenario against the registrar.
pub fn run_target(cli: &Cli, target: &Target) -> Result<Summary> {
    let endpoint = target.endpoint();
    let name = target_name(cli, target);
    if cli.registers_new_pes() || cli.scenario == ScenarioKind::Storm {
        return run_population(cli, target, name);
    }
    let mut ids = PeIds::new();
    let outcome = match cli.scenario {
        ScenarioKind::Resolve => {
            let fleet = register_fleet(cli, &endpoint, &mut ids)?;
            let work = resolve_work(cli, endpoint.generation)?;
            let outcome = load::run(
                &endpoint,
                &cli.load_spec("resolve"),
                work,
                Check::Resolution,
            );
            let keep_alives = fleet.keep_alives();
            let setup = fleet.close();
            note(
                cli,
                &format!("setup connections answered {keep_alives} keep-alives"),
            );
            let mut s = summary(cli, cli.scenario.name(), name, &outcome?);
            s.setup = Some(setup);
            return Ok(s);
        }
        _ => {
            let ip = rserpool_net::local_ip_towards(endpoint.addr)?;
            let work = register_work(cli, endpoint.generation, ip, &mut ids)?;
            load::run(
                &endpoint,
                &cli.load_spec("register"),
                work,
                Check::Registration,
            )?
        }
    };
    Ok(summary(cli, cli.scenario.name(), name, &outcome))
}

/// Registers `--pools` × `--pool-elements` PEs that keep the pools resolvable while a scenario
/// runs (resolve, churn), and says so.
fn register_fleet(cli: &Cli, endpoint: &Endpoint, ids: &mut PeIds) -> Result<Fleet> {
    let fleet = Fleet::register(endpoint, cli.pools, cli.pool_elements, cli.policy, ids)?;
    note(
        cli,
        &format!("registered {} PEs in {} pools", fleet.pes(), cli.pools),
    );
    Ok(fleet)
}

/// The name of the target in reports.
fn target_name(cli: &Cli, target: &Target) -> String {
    let endpoint = target.endpoint();
    if target.is_spawned() {
        format!("{endpoint} (spawned, {} workers)", cli.workers)
    } else {
        endpoint.to_string()
    }
}

/// The churn scenario: PEs registered before it keep every pool resolvable; `--churners` PE
/// associations cycle register, re-register, deregister at `--rate` operations per second in the
/// open loop, one operation in flight each, while `--connections` pool users resolve in the closed
/// loop.
fn run_churn(cli: &Cli, target: &Target) -> Result<RunReport> {
    let endpoint = target.endpoint();
    let name = target_name(cli, target);
    let generation = endpoint.generation;
    let mut ids = PeIds::new();
    let fleet = register_fleet(cli, &endpoint, &mut ids)?;
    let ip = rserpool_net::local_ip_towards(endpoint.addr)?;
    let churn_work = (0..cli.churners)
        .map(|c| {
            let pe = PeRecord {
                pool: workload::pool_handle(c % cli.pools),
                id: ids.fresh(),
                policy: cli.policy.for_pe(c),
            };
            let port = workload::pe_port(c);
            let table = workload::churn_table(&pe, ip, port, cli.reregistrations, generation)?;
            Ok(ConnWork {
                requests: Arc::new(table),
                pick: Pick::Cycle,
                pes: vec![pe],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let resolve = resolve_work(cli, generation)?;
    let churn_spec = LoadSpec {
        pipeline: 1,
        threads: 1,
        poll: Poll::Spin,
        ..cli.load_spec("churn")
    };
    let resolve_spec = LoadSpec {
        rate: None,
        ..cli.load_spec("resolve")
    };
    let (churned, resolved) = thread::scope(|scope| {
        let churn = scope.spawn(|| load::run(&endpoint, &churn_spec, churn_work, Check::Churn));
        let resolved = load::run(&endpoint, &resolve_spec, resolve, Check::Resolution);
        (churn.join(), resolved)
    });
    let setup = fleet.close();
    let churned = churned.map_err(|_| Error::new("the churn thread panicked"))??;
    let churn = Summary::new(
        "churn",
        name.clone(),
        (cli.churners, 1, 1),
        cli.rate,
        &churned,
    );
    let mut resolve = summary(cli, "resolve", name, &resolved?);
    resolve.rate = None;
    resolve.setup = Some(setup);
    Ok(RunReport::Churn { churn, resolve })
}

/// The keepalive scenario: `--population` PEs registered over `--connections` associations, then
/// the keep-alives the registrar sends answered and timed; with the registrar's metrics known (it
/// was spawned), also what it counted as sent in the measured window.
fn run_keepalive(cli: &Cli, target: &Target) -> Result<Summary> {
    let endpoint = target.endpoint();
    let mut ids = PeIds::new();
    let mut fleet = Fleet::start(&endpoint, cli.connections, population_pes(cli, &mut ids))?;
    note(
        cli,
        &format!(
            "registered {} PEs over {} associations",
            fleet.pes(),
            fleet.connections()
        ),
    );
    let metrics = target.metrics_url();
    let mut marks = Vec::new();
    let outcome = fleet.measure_keep_alives(&cli.load_spec("keepalive"), || {
        if let Some(url) = metrics {
            marks.push(
                target::scrape(url)
                    .map(|t| target::sample_sum(&t, "rserpool_keep_alives_sent_total")),
            );
        }
    });
    let connections = fleet.connections();
    let totals = fleet.close();
    let registrar_sent = match marks.as_slice() {
        [Ok(before), Ok(after)] => Some((after - before).max(0.0) as u64),
        _ => None,
    };
    let mut s = Summary::new(
        "keepalive",
        target_name(cli, target),
        (connections, 1, 1),
        None,
        &outcome,
    );
    s.keep_alives = outcome.stats.ops;
    s.totals = totals;
    s.keep_alive = Some(KeepAliveInfo {
        population: cli.population(),
        interval_ms: cli.keep_alive_interval,
        registrar_sent,
    });
    Ok(s)
}

/// The `--population` PEs of `keepalive`, `resync` and `takeover`, dealt out over their pools.
pub fn population_pes(cli: &Cli, ids: &mut PeIds) -> Vec<PeRecord> {
    let pools = cli.population_pools();
    (0..cli.population())
        .map(|n| PeRecord {
            pool: workload::pool_handle(n % pools),
            id: ids.fresh(),
            policy: cli.policy.for_pe(n),
        })
        .collect()
}

/// The resync scenario: a registrar (the mentor) is started and `--population` PEs register
/// there over `--connections` associations, kept alive by a [`Fleet`]; then a second registrar is
/// started with the mentor as its ENRP peer and no state, and its `rserpool_pool_elements` gauge
/// is read every 10 ms until it holds the whole population, for at most `--timeout` seconds. The
/// population is spread over pools of `--pool-elements` PEs. Also read: the pages the mentor
/// sent and both registrars' worker busy time meanwhile. With `--restart`, the second registrar
/// (started with fixed ports and a fixed `--id`) is then SIGKILLed, restarted at once with the
/// same command line (`new-id`: but for `--id`) and timed again until it holds the population.
fn run_resync(cli: &Cli) -> Result<ResyncSummary> {
    let bin = registrar_bin(cli)?;
    let config = spawn_config(cli);
    let enrp_url = |port: u16| {
        format!(
            "{}://127.0.0.1:{port}{}",
            cli.transport.scheme(),
            match cli.enrp_generation {
                EnrpGeneration::Rfc => "",
                EnrpGeneration::Ng => "?generation=ng",
            }
        )
    };
    let spawn = |role: &str, enrp: EnrpSpawn| {
        let target = Target::spawn(
            &bin,
            cli.workers,
            &cli.profile,
            cli.transport,
            false,
            &config,
            Some(&enrp),
        )?;
        let enrp = target.enrp_url().unwrap_or_default().to_owned();
        let metrics = target.metrics_url().map(str::to_owned).ok_or_else(|| {
            Error::new(format!(
                "the {role} registrar printed no `metrics` line: the bench reads its counters"
            ))
        })?;
        note(
            cli,
            &format!(
                "started the {role} registrar {}: asap {}, enrp {enrp} (metrics {metrics})",
                bin.display(),
                target.endpoint()
            ),
        );
        Ok::<_, Error>((target, enrp, metrics))
    };
    let (mentor, mentor_enrp, mentor_metrics) = spawn(
        "mentor",
        EnrpSpawn {
            listen: enrp_url(0),
            ..EnrpSpawn::default()
        },
    )?;
    let population = cli.population();
    let registering = Instant::now();
    let fleet = Fleet::start(
        &mentor.endpoint(),
        cli.connections,
        population_pes(cli, &mut PeIds::new()),
    )?;
    let register_s = registering.elapsed().as_secs_f64();
    let connections = fleet.connections();
    note(
        cli,
        &format!(
            "registered {} PEs over {connections} associations in {register_s:.2} s",
            fleet.pes()
        ),
    );
    // The mentor's pages sent and its workers' busy seconds.
    let mentor_counters = || {
        let text = target::scrape(&mentor_metrics)?;
        Ok::<_, Error>((
            target::sample_sum(
                &text,
                "rserpool_messages_sent_total{protocol=\"enrp\",type=\"handle_table_response\"}",
            ) as u64,
            target::sample_sum(&text, BUSY),
        ))
    };
    let (pages_before, mentor_busy_before) = mentor_counters()?;
    // A registrar to be restarted keeps its ports and its ID: the same command line.
    let newcomer_spawn = match cli.restart {
        None => EnrpSpawn {
            listen: enrp_url(0),
            peers: vec![mentor_enrp.clone()],
            ..EnrpSpawn::default()
        },
        Some(_) => {
            let ports = free_ports(3)?;
            EnrpSpawn {
                listen: enrp_url(ports[0]),
                peers: vec![mentor_enrp.clone()],
                id: Some(NEWCOMER_ID),
                asap_port: ports[1],
                metrics_port: ports[2],
            }
        }
    };
    let (mut newcomer, newcomer_enrp, newcomer_metrics) = spawn("new", newcomer_spawn)?;
    let (started, listening) = newcomer.started().expect("a spawned registrar");
    let (synced, newcomer_busy_s) =
        await_population(cli, &newcomer_metrics, started, "the new registrar")?;
    let (pages_after, mentor_busy_after) = mentor_counters()?;
    let restart = match cli.restart {
        None => None,
        Some(kind) => {
            let id = match kind {
                RestartKind::SameId => None,
                RestartKind::NewId => Some(NEWCOMER_NEW_ID),
            };
            newcomer.restart(id).map_err(|e| {
                Error::new(format!(
                    "the new registrar did not come back after SIGKILL and a restart with the \
                     same command line ({}): {e}",
                    kind.name()
                ))
            })?;
            let (restarted, _) = newcomer.started().expect("a spawned registrar");
            note(
                cli,
                &format!(
                    "restarted the new registrar ({}) at asap {}",
                    kind.name(),
                    newcomer.endpoint()
                ),
            );
            let (resynced, _) =
                await_population(cli, &newcomer_metrics, restarted, "the restarted registrar")?;
            Some((
                kind.name().to_owned(),
                resynced.duration_since(restarted).as_secs_f64(),
            ))
        }
    };
    drop(newcomer);
    // No deregistrations: the mentor drops the PEs with their associations when it is killed.
    drop(fleet);
    Ok(ResyncSummary {
        mentor: format!("{} (enrp {mentor_enrp})", mentor.endpoint()),
        newcomer: newcomer_enrp,
        workers: cli.workers,
        enrp_generation: cli.enrp_generation.name().to_owned(),
        page: cli.page,
        population,
        pools: cli.population_pools(),
        connections,
        register_s,
        start_s: listening.duration_since(started).as_secs_f64(),
        sync_s: synced.duration_since(started).as_secs_f64(),
        pages: pages_after.saturating_sub(pages_before),
        mentor_busy_s: (mentor_busy_after - mentor_busy_before).max(0.0),
        newcomer_busy_s,
        restart,
    })
}

/// Reads the `rserpool_pool_elements` gauge at `metrics` every 10 ms until it reaches
/// `--population`, at most `--timeout` seconds after `started`; returns when it did and the
/// registrar's worker busy seconds then. `who` names the registrar in progress lines and errors.
fn await_population(
    cli: &Cli,
    metrics: &str,
    started: Instant,
    who: &str,
) -> Result<(Instant, f64)> {
    let population = cli.population();
    let timeout = Duration::from_secs_f64(cli.timeout);
    let mut next_note = started + Duration::from_secs(1);
    loop {
        let text = target::scrape(metrics)?;
        let held = target::sample_sum(&text, "rserpool_pool_elements ") as usize;
        let now = Instant::now();
        if held >= population {
            return Ok((now, target::sample_sum(&text, BUSY)));
        }
        if now >= started + timeout {
            return Err(Error::new(format!(
                "{who} held {held} of {population} PEs {:.1} s after its start: not in sync \
                 within --timeout {}",
                now.duration_since(started).as_secs_f64(),
                cli.timeout
            )));
        }
        if now >= next_note {
            note(
                cli,
                &format!(
                    "resync {:>4.1}s {who} holds {held} PEs",
                    now.duration_since(started).as_secs_f64()
                ),
            );
            next_note += Duration::from_secs(1);
        }
        thread::sleep(RESYNC_POLL);
    }
}

/// The echo server under the request mix of `mimic`.
fn run_echo(
    cli: &Cli,
    pki: Option<&RunPki>,
    transport: StreamTransport,
    generation: Generation,
    mimic: ScenarioKind,
    reply: EchoReply,
) -> Result<Summary> {
    let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let server = EchoServer::start(
        transport,
        bind,
        reply,
        pki.map(RunPki::server_tls).transpose()?,
    )?;
    let endpoint = Endpoint {
        generation,
        ..server.endpoint()
    };
    if cli.registers_new_pes() || mimic == ScenarioKind::Storm {
        let mut shares = population_shares(cli, generation, bind.ip())?;
        // The echo server keeps no PEs: nothing to answer for or deregister.
        shares.iter_mut().for_each(|s| s.pes.clear());
        let spec = population_spec(cli, "echo", Duration::ZERO);
        let outcome = population::run(&endpoint, &spec, shares, Check::Echo, || {}, || {})?;
        server.stop()?;
        let name = format!(
            "{endpoint} (built-in echo, replies {})",
            echo_replies(reply)
        );
        return Ok(population_summary(cli, "echo", name, &outcome, None));
    }
    let work = match mimic {
        ScenarioKind::Register => {
            let mut work = register_work(cli, generation, bind.ip(), &mut PeIds::new())?;
            // The echo server keeps no PEs: nothing to answer for or deregister.
            work.iter_mut().for_each(|w| w.pes.clear());
            work
        }
        _ => resolve_work(cli, generation)?,
    };
    let outcome = load::run(&endpoint, &cli.load_spec("echo"), work, Check::Echo)?;
    server.stop()?;
    let name = format!(
        "{endpoint} (built-in echo, replies {})",
        echo_replies(reply)
    );
    Ok(summary(cli, "echo", name, &outcome))
}

/// The echo server's replies as in reports: `mirrored` or `196 B`.
fn echo_replies(reply: EchoReply) -> String {
    match reply {
        EchoReply::Mirror => "mirrored".to_owned(),
        EchoReply::Sized(n) => format!("{n} B"),
    }
}

/// How long a spawned registrar may settle after the last answer before its memory is read.
const RSS_SETTLE: Duration = Duration::from_secs(1);

/// `register --population` or `storm` against the registrar: the population registered, its
/// tenths timed, refusals counted by cause; for a spawned registrar its VmRSS read after the
/// associations connected and a second after the last answer, and then its PE count (the
/// `rserpool_pool_elements` gauge).
fn run_population(cli: &Cli, target: &Target, name: String) -> Result<Summary> {
    let endpoint = &target.endpoint();
    let pid = target.pid();
    let ip = rserpool_net::local_ip_towards(endpoint.addr)?;
    let shares = population_shares(cli, endpoint.generation, ip)?;
    let settle = if pid.is_some() {
        RSS_SETTLE
    } else {
        Duration::ZERO
    };
    let spec = population_spec(cli, cli.scenario.name(), settle);
    let read_rss = || {
        pid.map(target::rss_bytes).transpose().unwrap_or_else(|e| {
            eprintln!("warning: {e}: no memory figure");
            None
        })
    };
    let read_pes = || {
        let text = target::scrape(target.metrics_url()?).map_err(|e| {
            eprintln!("warning: {e}: no PE count");
        });
        Some(target::sample_sum(&text.ok()?, "rserpool_pool_elements ") as u64)
    };
    let (mut before, mut after, mut registrar_pes) = (None, None, None);
    let outcome = population::run(
        endpoint,
        &spec,
        shares,
        Check::Registration,
        || before = read_rss(),
        || {
            after = read_rss();
            registrar_pes = read_pes();
        },
    )?;
    let mut s = population_summary(cli, cli.scenario.name(), name, &outcome, before.zip(after));
    if let Some(p) = s.population.as_mut() {
        p.registrar_pes = registrar_pes;
    }
    Ok(s)
}

/// The load shape of a population run; `settle` is the time the associations stay after the
/// last answer.
fn population_spec(cli: &Cli, label: &str, settle: Duration) -> PopulationSpec {
    PopulationSpec {
        window: match cli.scenario {
            ScenarioKind::Storm => None,
            _ => Some(cli.pipeline),
        },
        threads: cli.threads,
        limit: cli.population_limit(),
        settle,
        poll: cli.poll,
        progress: !cli.quiet,
        label: label.to_owned(),
    }
}

/// The population of `register --population` and `storm`: `--population` new PEs, PE `n` in
/// pool `n mod pools` (so that every pool grows toward `--pool-elements` at the same pace) and
/// on association `n mod --connections`, its registration encoded with its address `ip`.
fn population_shares(cli: &Cli, generation: Generation, ip: IpAddr) -> Result<Vec<Share>> {
    let pools = cli.population_pools();
    let connections = cli.connections;
    let mut ids = PeIds::new();
    let mut shares: Vec<Share> = (0..connections).map(|_| Share::default()).collect();
    for n in 0..cli.population() {
        let pe = PeRecord {
            pool: workload::pool_handle(n % pools),
            id: ids.fresh(),
            policy: cli.policy.for_pe(n),
        };
        let share = &mut shares[n % connections];
        workload::push_registration(
            &mut share.registrations,
            &pe,
            ip,
            workload::pe_port(n),
            generation,
        )?;
        share.pes.push(pe);
    }
    Ok(shares)
}

/// The summary of a population run; `rss` is a spawned registrar's VmRSS before and after.
fn population_summary(
    cli: &Cli,
    scenario: &str,
    target: String,
    outcome: &PopulationOutcome,
    rss: Option<(u64, u64)>,
) -> Summary {
    let all_at_once = cli.scenario == ScenarioKind::Storm;
    let pipeline = if all_at_once {
        cli.population().div_ceil(cli.connections)
    } else {
        cli.pipeline
    };
    let timed = Outcome {
        stats: outcome.stats.clone(),
        elapsed: Duration::from_secs_f64(outcome.seconds),
        timeline: outcome.timeline.clone(),
    };
    let mut s = Summary::new(
        scenario,
        target,
        (outcome.connections, pipeline, cli.threads),
        None,
        &timed,
    );
    let limit = cli.population_limit().as_secs_f64();
    s.population = Some(PopulationInfo {
        population: outcome.population,
        pools: cli.population_pools(),
        pool_elements: cli.pool_elements,
        policy: cli.policy.name().to_owned(),
        all_at_once,
        answered: outcome.answered,
        seconds: outcome.seconds,
        completed: outcome.completed,
        limit: if all_at_once {
            format!("--timeout {limit} s")
        } else {
            format!("--duration {limit} s")
        },
        bands: outcome.bands.clone(),
        rss,
        registrar_pes: None,
    });
    s
}

fn summary(cli: &Cli, scenario: &str, target: String, outcome: &Outcome) -> Summary {
    Summary::new(
        scenario,
        target,
        (cli.connections, cli.pipeline, cli.threads),
        cli.rate,
        outcome,
    )
}

/// Every connection resolves random pools out of one shared table.
fn resolve_work(cli: &Cli, generation: Generation) -> Result<Vec<ConnWork>> {
    let table = Arc::new(workload::resolution_table(cli.pools, generation)?);
    Ok((0..cli.connections)
        .map(|_| ConnWork {
            requests: Arc::clone(&table),
            pick: Pick::Random,
            pes: Vec::new(),
        })
        .collect())
}

/// Every connection re-registers its own PEs, reachable at `ip`, in turn.
fn register_work(
    cli: &Cli,
    generation: Generation,
    ip: IpAddr,
    ids: &mut PeIds,
) -> Result<Vec<ConnWork>> {
    let per = cli.pes_per_connection;
    (0..cli.connections)
        .map(|c| {
            let mut table = Table::default();
            let pes: Vec<PeRecord> = (0..per)
                .map(|j| PeRecord {
                    pool: workload::pool_handle((c * per + j) % cli.pools),
                    id: ids.fresh(),
                    policy: cli.policy.for_pe(c * per + j),
                })
                .collect();
            for (j, pe) in pes.iter().enumerate() {
                let port = workload::pe_port(c * per + j);
                workload::push_registration(&mut table, pe, ip, port, generation)?;
            }
            Ok(ConnWork {
                requests: Arc::new(table),
                pick: Pick::Cycle,
                pes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{reply_size_for, spawn_config};
    use crate::Cli;

    fn cli(args: &[&str]) -> Cli {
        Cli::from_args(args).unwrap()
    }

    #[test]
    fn a_spawned_registrar_gets_room_for_the_scenario_and_the_interval() {
        let big = spawn_config(&cli(&[
            "keepalive",
            "--spawn",
            "--population",
            "50000",
            "--connections",
            "10",
            "--pools",
            "2",
            "--keep-alive-interval",
            "250",
        ]));
        assert!(big.contains("max_pes_per_association = 5000\n"), "{big}");
        assert!(big.contains("max_pes_per_pool = 25000\n"), "{big}");
        assert!(
            big.contains("[timers]\nkeep_alive_interval_ms = 250\n"),
            "{big}"
        );
        let small = spawn_config(&cli(&["resolve", "--spawn"]));
        assert!(
            small.contains("max_pes_per_association = 1000\n"),
            "never below the profile: {small}"
        );
        assert!(small.contains("max_pes_per_pool = 10000\n"), "{small}");
        assert!(!small.contains("[timers]"), "{small}");
        assert!(!small.contains("max_pools"), "{small}");
        let resync = spawn_config(&cli(&["resync", "--pool-elements", "5", "--page", "512"]));
        let takeover = spawn_config(&cli(&["takeover", "--population", "40000", "-c", "4"]));
        assert!(
            takeover.contains("max_pes_per_association = 10000\n"),
            "{takeover}"
        );
        assert!(
            takeover.contains("max_requests_per_second = 0\n"),
            "{takeover}"
        );
        assert!(
            !takeover.contains("[timers]") && !takeover.contains("[enrp]"),
            "the profile's timers: {takeover}"
        );
        for line in [
            "max_pes_per_association = 62500\n",
            "max_pes_per_pool = 10000\n",
            "max_pools = 225064\n",
            "[timers]\nkeep_alive_interval_ms = 3600000\n",
            "[enrp]\nmax_pes_per_table_response = 512\n",
        ] {
            assert!(resync.contains(line), "{line} missing in {resync}");
        }
    }

    #[test]
    fn echo_replies_round_to_whole_frames() {
        assert_eq!(reply_size_for(196.0), 196);
        assert_eq!(reply_size_for(197.9), 196);
        assert_eq!(reply_size_for(198.1), 200);
        assert_eq!(reply_size_for(3.0), 12);
    }
}
