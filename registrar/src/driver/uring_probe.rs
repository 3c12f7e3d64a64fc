//! Whether this process may use io_uring, as the daemon's driver choice asks (io_uring is the
//! registrar's alone; the sockets and the other host probes are `rserpool-net`'s).

use std::{fs, io};

use rserpool_net::NetError;

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
}
