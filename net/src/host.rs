//! What the host offers the registrar's workers: the cores this process may use (its affinity
//! mask and cgroup CPU quota), pinning a thread to one of them, busy polling, open files.

use std::io;

use socket2::Socket;

use crate::sys;

/// The number of online CPUs (at least 1), whether this process may use them or not.
pub fn online_cores() -> usize {
    sys::online_cpus().unwrap_or(1)
}

/// How many cores this process may keep busy (at least 1): the CPUs of its affinity mask
/// (`taskset`, a cgroup cpuset), fewer under a cgroup CPU quota (`cpu.max`, as
/// `std::thread::available_parallelism` reads it). What "one worker per core" means.
pub fn usable_cores() -> usize {
    let allowed = allowed_cores().len().max(1);
    std::thread::available_parallelism().map_or(allowed, |n| n.get().min(allowed))
}

/// The CPUs this process may run on, ascending (all online ones when the mask cannot be read).
pub fn allowed_cores() -> Vec<usize> {
    sys::allowed_cpus()
        .ok()
        .filter(|cpus| !cpus.is_empty())
        .unwrap_or_else(|| (0..online_cores()).collect())
}

/// Raises this process's soft limit of open files to its hard limit (each TCP connection and
/// each SCTP association has a descriptor of its own) and returns the limit now in force.
pub fn raise_open_file_limit() -> io::Result<u64> {
    sys::raise_open_file_limit()
}

/// Binds the calling thread to CPU `core` (numbered as the kernel does, from 0).
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    sys::set_thread_affinity(core).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot pin the thread to core {core}: {e}; this host has {} online cores, and \
                 taskset or a cgroup cpuset may allow fewer: choose a core this process may run on",
                online_cores()
            ),
        )
    })
}

/// Sets `SO_BUSY_POLL` on `sock`: a blocking receive spins on the device queue for up to `usec`
/// microseconds before sleeping (needs `CAP_NET_ADMIN` to raise it above `net.core.busy_read`).
pub fn set_busy_poll(sock: &Socket, usec: u32) -> io::Result<()> {
    sock.set_busy_poll(usec).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot set SO_BUSY_POLL to {usec} µs: {e}; it needs CAP_NET_ADMIN, or leave busy \
                 polling off"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_cores_are_those_of_the_affinity_mask_at_most() {
        let allowed = allowed_cores();
        assert!(!allowed.is_empty());
        assert!(allowed.windows(2).all(|w| w[0] < w[1]), "{allowed:?}");
        assert!(allowed.iter().all(|&c| c < 1024));
        let usable = usable_cores();
        assert!(
            usable >= 1 && usable <= allowed.len(),
            "{usable} of {allowed:?}"
        );
        // A thread restricted to one allowed core sees exactly it.
        let first = allowed[0];
        std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            assert_eq!(allowed_cores(), [first]);
            assert_eq!(usable_cores(), 1);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pins_to_an_online_core_and_refuses_a_missing_one() {
        assert!(online_cores() >= 1);
        std::thread::spawn(|| {
            // a CI machine's taskset may leave out core 0: any core this process may run on will do
            assert!((0..online_cores()).any(|core| pin_current_thread(core).is_ok()));
            let e = pin_current_thread(4096).unwrap_err();
            assert!(e.to_string().contains("core 4096"), "{e}");
            let e = pin_current_thread(1000).unwrap_err();
            assert!(e.to_string().contains("online cores"), "{e}");
        })
        .join()
        .unwrap();
    }
}
