//! Focused scenarios: a takeover after a crash, a partition that heals, a restart that
//! resynchronises, and the determinism every replay relies on.

use rserpool_sim::{Fault, Scenario, World, run_seed};

const WARM: u64 = 8_000;

fn calm(seed: u64) -> World {
    World::new(Scenario::calm(seed, 120_000))
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
