//! What the host offers the I/O drivers: its cores and thread pinning, io_uring, busy polling.

use std::{fs, io};

use socket2::Socket;

use super::{NetError, sys};

/// The number of online CPUs (at least 1).
pub fn online_cores() -> usize {
    sys::online_cpus().unwrap_or(1)
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

/// Checks that this process may create an io_uring with `IORING_SETUP_SINGLE_ISSUER` and
/// `IORING_SETUP_DEFER_TASKRUN`, the flags the io_uring driver uses.
///
/// [`NetError::IoUringUnavailable`] names the likely cause: a seccomp filter (container runtimes'
/// default profiles), the sysctl `kernel.io_uring_disabled`, an old kernel, or the memlock limit.
pub fn io_uring_support() -> Result<(), NetError> {
    let mut builder: io_uring::Builder = io_uring::IoUring::builder();
    builder.setup_single_issuer().setup_defer_taskrun();
    match builder.build(2) {
        Ok(_) => Ok(()),
        Err(source) => Err(NetError::IoUringUnavailable {
            cause: io_uring_cause(
                &source,
                fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                    .ok()
                    .as_deref()
                    .map(str::trim),
            ),
            source,
        }),
    }
}

/// Why `io_uring_setup` failed with `e`, given the value of `kernel.io_uring_disabled`, and what to do.
fn io_uring_cause(e: &io::Error, disabled_sysctl: Option<&str>) -> String {
    const OR_EPOLL: &str = ", or run the epoll driver";
    let cause = match (e.raw_os_error(), disabled_sysctl) {
        (Some(libc::EPERM), Some("2")) => {
            "the sysctl kernel.io_uring_disabled = 2 disables io_uring: set it to 0"
        }
        (Some(libc::EPERM), Some("1")) => {
            "the sysctl kernel.io_uring_disabled = 1 allows io_uring only to the group in \
             kernel.io_uring_group: add the registrar's user to that group or set the sysctl to 0"
        }
        (Some(libc::EPERM), _) => {
            "a seccomp filter forbids io_uring_setup (the default profiles of Docker 25+ and \
             containerd 2 do): allow the io_uring_* syscalls for this container"
        }
        (Some(libc::ENOSYS), _) => {
            "the kernel has no io_uring (older than 5.1 or built without CONFIG_IO_URING), or a \
             seccomp filter hides it: use a kernel with io_uring or allow the io_uring_* syscalls"
        }
        (Some(libc::EACCES), _) => {
            "a security module (SELinux, AppArmor) denies io_uring to this process: allow it"
        }
        (Some(libc::EINVAL), _) => {
            "the kernel is older than 6.1 and lacks IORING_SETUP_SINGLE_ISSUER or \
             IORING_SETUP_DEFER_TASKRUN: upgrade the kernel"
        }
        (Some(libc::ENOMEM), _) => {
            "the ring does not fit the locked-memory limit (kernels before 5.12 count it against \
             RLIMIT_MEMLOCK): raise `ulimit -l`"
        }
        _ => "an unexpected error",
    };
    format!("{cause}{OR_EPOLL}")
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
    fn io_uring_is_available_here() {
        io_uring_support().unwrap();
    }

    #[test]
    fn io_uring_causes_name_the_remedy() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert!(io_uring_cause(&e(libc::EPERM), Some("2")).contains("io_uring_disabled = 2"));
        assert!(io_uring_cause(&e(libc::EPERM), Some("1")).contains("io_uring_group"));
        assert!(io_uring_cause(&e(libc::EPERM), Some("0")).contains("seccomp"));
        assert!(io_uring_cause(&e(libc::ENOSYS), None).contains("older than 5.1"));
        assert!(io_uring_cause(&e(libc::EINVAL), None).contains("6.1"));
        assert!(io_uring_cause(&e(libc::EIO), None).ends_with("epoll driver"));
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
