//! Focused scenarios: a takeover after a crash, a partition that heals, a restart that
//! resynchronises, restarts at once with the same ID, a vanished and a frozen PR taken over
//! within the liveness bound, asynchronous mailboxes, what the seeds draw (subscribers included),
//! and the determinism every replay relies on.

use rserpool_sim::invariants::takeover_bound;
use rserpool_sim::{Fault, Scenario, World, run_seed};

const WARM: u64 = 8_000;

/// A calm world; PEs re-register every 2 s, so a peer's copy of a PE lives at least 4 s after
/// the PE's death (the takeover test relies on it).
fn calm(seed: u64) -> World {
    World::new(Scenario {
        reregistration: 2_000,
        ..Scenario::calm(seed, 120_000)
    })
}

/// A calm world of static peers with `workers` workers per PR and synchronous or asynchronous
/// mailboxes.
fn world(seed: u64, workers: usize, asynchronous: bool) -> World {
    World::new(Scenario {
        workers: vec![workers; 3],
        async_mailboxes: asynchronous,
        discovery: false,
        ..Scenario::calm(seed, 120_000)
    })
}

fn run(world: &mut World, for_ms: u64) {
    let until = world.time() + for_ms;
    if let Err(failure) = world.run_until(until) {
        panic!("{failure}\n{}", failure.replay_command());
    }
}

/// The convergence invariants after a quiet phase.
fn settle(world: &mut World) {
    world.inject(Fault::Settle);
    run(world, 1);
}

#[test]
fn takeover_after_a_crash() {
    let mut taken_over = 0;
    for seed in 0..5 {
        let mut world = calm(seed);
        run(&mut world, WARM);
        // PR 0 dies with the PEs registered at it: nobody re-registers them, so only a takeover
        // gives them a living home PR.
        let (dead_id, _) = world.handlespace(0).expect("up");
        let orphans: Vec<_> = world.registered_at(0);
        taken_over += orphans.len();
        world.inject(Fault::Crash(0));
        for &pe in &orphans {
            world.inject(Fault::PeLeave {
                pe,
                graceful: false,
            });
        }
        // Detection (association abort, MAX-TIME-NO-RESPONSE 1 s), then the takeover; well
        // before the orphans' registration life (6 s) runs out.
        run(&mut world, 3_500);
        let (id1, hs1) = world.handlespace(1).expect("up");
        let (id2, hs2) = world.handlespace(2).expect("up");
        for &pe in &orphans {
            let id = world.pe_id(pe);
            let home1 = hs1.iter().find(|((_, p), _)| *p == id).map(|(_, h)| *h);
            let home2 = hs2.iter().find(|((_, p), _)| *p == id).map(|(_, h)| *h);
            assert_eq!(home1, home2, "seed {seed}: PE {id} has different homes");
            let home = home1.unwrap_or_else(|| panic!("seed {seed}: PE {id} was lost"));
            assert!(
                home == id1 || home == id2,
                "seed {seed}: PE {id} still belongs to the dead PR {dead_id}"
            );
        }
        world.inject(Fault::Restart(0));
        run(&mut world, 15_000);
        settle(&mut world);
    }
    assert!(taken_over > 0, "no PE was registered at the crashed PR");
}

#[test]
fn partition_and_heal_reconverges() {
    for seed in 0..5 {
        let mut world = calm(seed);
        run(&mut world, WARM);
        world.inject(Fault::Partition {
            prs: vec![true, false, false],
            salt: seed,
        });
        run(&mut world, 6_000);
        world.inject(Fault::Heal);
        run(&mut world, 15_000);
        settle(&mut world);
    }
}

#[test]
fn restart_resyncs() {
    for seed in 0..5 {
        let mut world = calm(seed);
        run(&mut world, WARM);
        let (old, _) = world.handlespace(2).expect("up");
        world.inject(Fault::Crash(2));
        run(&mut world, 3_000);
        world.inject(Fault::Restart(2));
        run(&mut world, 15_000);
        let (new, held) = world.handlespace(2).expect("up");
        assert_ne!(old, new, "a restarted PR has a fresh ID");
        let (_, peer) = world.handlespace(0).expect("up");
        assert_eq!(held, peer, "seed {seed}: the restarted PR resynchronised");
        settle(&mut world);
    }
}

#[test]
fn a_seed_replays_bit_for_bit() {
    assert_eq!(run_seed(7), run_seed(7));
}

#[test]
fn asynchronous_mailboxes_form_and_converge() {
    for seed in 0..3 {
        let mut world = world(seed, 2 + seed as usize, true);
        run(&mut world, WARM + 10_000);
        settle(&mut world);
        assert!(
            world.summary().mailbox_batches > 0,
            "seed {seed}: forwards went through the mailboxes"
        );
    }
    let mut sync = world(0, 3, false);
    run(&mut sync, WARM);
    assert_eq!(sync.summary().mailbox_batches, 0, "synchronous by default");
}

#[test]
fn restart_at_once_with_the_same_id_resyncs() {
    for seed in 0..4 {
        let mut world = world(seed, 1 + seed as usize, seed % 2 == 0);
        run(&mut world, WARM);
        let (old, _) = world.handlespace(2).expect("up");
        // Killed with RST or without, and started again by its supervisor at once.
        world.inject(if seed < 2 {
            Fault::Crash(2)
        } else {
            Fault::Vanish(2)
        });
        world.inject(Fault::RestartSameId(2));
        run(&mut world, 15_000);
        let (new, held) = world.handlespace(2).expect("up");
        assert_eq!(old, new, "seed {seed}: the same ID");
        let (_, peer) = world.handlespace(0).expect("up");
        assert_eq!(held, peer, "seed {seed}: the restarted PR resynchronised");
        assert!(
            world.summary().liveness_checks > 0,
            "seed {seed}: the start-up bound was judged"
        );
        settle(&mut world);
    }
}

/// The PEs of PR 0 were taken over from `dead`: none has `dead` as home at PR 1 or 2 any more.
fn assert_taken_over(world: &World, seed: u64, dead: rserpool_handlespace::PrId) {
    let (_, hs1) = world.handlespace(1).expect("up");
    let (_, hs2) = world.handlespace(2).expect("up");
    for hs in [&hs1, &hs2] {
        let left: Vec<_> = hs.iter().filter(|(_, home)| **home == dead).collect();
        assert!(
            left.is_empty(),
            "seed {seed}: {left:?} still belong to {dead}"
        );
    }
}

#[test]
fn a_vanished_pr_is_taken_over_within_the_bound() {
    let mut owned = 0;
    for seed in 0..4 {
        let mut world = world(seed, 1 + seed as usize, seed % 2 == 1);
        run(&mut world, WARM);
        let (dead, before) = world.handlespace(0).expect("up");
        owned += before.values().filter(|h| **h == dead).count();
        // No RST: the peers' associations to it stay half-open until their timers give up.
        world.inject(Fault::Vanish(0));
        run(&mut world, takeover_bound(0));
        assert_taken_over(&world, seed, dead);
        world.inject(Fault::Restart(0));
        run(&mut world, 15_000);
        settle(&mut world);
    }
    assert!(owned > 0, "the vanished PR owned PEs");
}

#[test]
fn a_frozen_pr_is_taken_over_and_goes_on() {
    for seed in 0..4 {
        let mut world = world(seed, 1 + seed as usize, seed % 2 == 0);
        run(&mut world, WARM);
        let (frozen, before) = world.handlespace(0).expect("up");
        world.inject(Fault::Freeze(0));
        run(&mut world, takeover_bound(0));
        let (_, during) = world.handlespace(0).expect("up");
        assert_eq!(before, during, "seed {seed}: a frozen PR changes nothing");
        assert_taken_over(&world, seed, frozen);
        world.inject(Fault::Thaw(0));
        run(&mut world, 15_000);
        let (id, _) = world.handlespace(0).expect("up");
        assert_eq!(id, frozen, "seed {seed}: the same process went on");
        settle(&mut world);
    }
}

#[test]
fn seeds_draw_every_fault_kind_and_print_their_parameters() {
    let seeds = 300;
    let mut workers = [0; 5];
    let (mut same_id, mut at_once_new, mut vanish, mut freeze, mut asynchronous) = (0, 0, 0, 0, 0);
    let mut subscribers = 0;
    for seed in 0..seeds {
        let s = Scenario::draw(seed);
        for &w in &s.workers {
            workers[w] += 1;
        }
        let has = |f: &dyn Fn(&Fault) -> bool| s.timeline.iter().any(|(_, x)| f(x));
        same_id += u64::from(has(&|f| matches!(f, Fault::RestartSameId(_))));
        vanish += u64::from(has(&|f| matches!(f, Fault::Vanish(_))));
        freeze += u64::from(has(&|f| matches!(f, Fault::Freeze(_))));
        asynchronous += u64::from(s.async_mailboxes);
        subscribers += u64::from(s.subscriptions.iter().any(|p| !p.is_empty()));
        // A subscriber leaves one pool out at least, which it resolves at its PR.
        assert!(s.subscriptions.iter().all(|p| p.len() < s.pools));
        // A restart with a new ID at most 200 ms after a kill.
        at_once_new += u64::from(s.timeline.windows(2).any(|w| {
            matches!(w[0].1, Fault::Crash(_) | Fault::Vanish(_))
                && matches!(w[1].1, Fault::Restart(_))
                && w[1].0 - w[0].0 <= 200
        }));
        let block = s.to_string();
        assert!(block.starts_with(&format!("seed {seed}\n")));
        for item in [
            "workers",
            "pools:",
            "PUs:",
            "table page",
            "peers:",
            "loss",
            "mailboxes:",
            "subscriptions:",
        ] {
            assert!(block.contains(item), "{item} missing from\n{block}");
        }
        assert_eq!(
            block.matches(" ms ").count(),
            s.timeline.len(),
            "one line per fault"
        );
    }
    assert!(
        workers[1..].iter().all(|&n| n > 0),
        "1-4 workers: {workers:?}"
    );
    for (name, n) in [
        ("same-ID restart", same_id),
        ("restart at once with a new ID", at_once_new),
        ("vanish", vanish),
        ("freeze", freeze),
        ("asynchronous mailboxes", asynchronous),
        ("subscribers", subscribers),
    ] {
        assert!(
            n * 10 >= seeds,
            "{name} in {n} of {seeds} seeds, fewer than 10 %"
        );
    }
}
