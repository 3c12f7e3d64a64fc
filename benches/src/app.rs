//! One invocation from options to report: start or reach the server, register what the scenario
//! needs, run the load, clean up, and for `--compare-echo` run the echo ceiling right after.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rserpool_protocol::Generation;

use crate::cli::{Cli, ScenarioKind};
use crate::echo::{EchoReply, EchoServer, MAX_REPLY, MIN_REPLY};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::load::{self, Outcome};
use crate::net::{self, Endpoint, Transport};
use crate::report::{RunReport, Summary};
use crate::target::{self, Target};
use crate::workload::{self, Check, ConnWork, PeIds, PeRecord, Pick, Table};

/// Runs what `cli` asks for.
pub fn run(cli: &Cli) -> Result<RunReport> {
    cli.validate().map_err(Error::new)?;
    match cli.scenario {
        ScenarioKind::Echo => {
            let reply = cli
                .echo_reply_size()
                .map_or(EchoReply::Mirror, EchoReply::Sized);
            let echo = run_echo(
                cli,
                cli.transport,
                Generation::Rfc,
                ScenarioKind::Resolve,
                reply,
            )?;
            Ok(RunReport::Single(echo))
        }
        ScenarioKind::Resolve | ScenarioKind::Register => {
            let target = open_target(cli)?;
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

fn open_target(cli: &Cli) -> Result<Target> {
    if let Some(endpoint) = cli.registrar {
        return Ok(Target::external(endpoint));
    }
    let bin = match &cli.registrar_bin {
        Some(path) => path.clone(),
        None => target::default_registrar_bin()?,
    };
    let target = Target::spawn(&bin, cli.workers, cli.transport)?;
    note(
        cli,
        &format!("started {} at {}", bin.display(), target.endpoint()),
    );
    Ok(target)
}

fn note(cli: &Cli, line: &str) {
    if !cli.quiet {
        eprintln!("{line}");
    }
}

/// The resolve or register scenario against the registrar.
fn run_target(cli: &Cli, target: &Target) -> Result<Summary> {
    let endpoint = target.endpoint();
    let name = if target.is_spawned() {
        format!("{endpoint} (spawned, {} workers)", cli.workers)
    } else {
        endpoint.to_string()
    };
    let mut ids = PeIds::new();
    let outcome = match cli.scenario {
        ScenarioKind::Resolve => {
            let fleet = Fleet::register(&endpoint, cli.pools, cli.pool_elements, &mut ids)?;
            note(
                cli,
                &format!("registered {} PEs in {} pools", fleet.pes(), cli.pools),
            );
            let work = resolve_work(cli, endpoint.generation)?;
            let outcome = load::run(
                &endpoint,
                &cli.load_spec("resolve"),
                work,
                Check::Resolution,
            );
            let keep_alives = fleet.keep_alives();
            fleet.close();
            note(
                cli,
                &format!("setup connections answered {keep_alives} keep-alives"),
            );
            outcome?
        }
        _ => {
            let ip = net::local_ip_towards(endpoint.addr)?;
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

/// The echo server under the request mix of `mimic`.
fn run_echo(
    cli: &Cli,
    transport: Transport,
    generation: Generation,
    mimic: ScenarioKind,
    reply: EchoReply,
) -> Result<Summary> {
    let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let server = EchoServer::start(transport, bind, reply)?;
    let endpoint = Endpoint {
        generation,
        ..server.endpoint()
    };
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
    let replies = match reply {
        EchoReply::Mirror => "mirrored".to_owned(),
        EchoReply::Sized(n) => format!("{n} B"),
    };
    let name = format!("{endpoint} (built-in echo, replies {replies})");
    Ok(summary(cli, "echo", name, &outcome))
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
    use super::reply_size_for;

    #[test]
    fn echo_replies_round_to_whole_frames() {
        assert_eq!(reply_size_for(196.0), 196);
        assert_eq!(reply_size_for(197.9), 196);
        assert_eq!(reply_size_for(198.1), 200);
        assert_eq!(reply_size_for(3.0), 12);
    }
}
