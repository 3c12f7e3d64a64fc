//! The socket layer's error: what failed, the kernel's answer, and what the user can do about it.

use std::{fmt, fs, io};

/// What a socket is opened for: the advice of an unavailable transport differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketUse {
    /// A listener (the registrar's ASAP and ENRP endpoints).
    Listen,
    /// A connection to a peer (a PE's or PU's association, an ENRP peer).
    Connect,
}

/// Why a socket could not be opened or set up.
#[derive(Debug)]
pub enum NetError {
    /// The kernel cannot create SCTP sockets.
    SctpUnavailable {
        /// The `socket()` call that failed, e.g. `socket(AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP)`.
        call: &'static str,
        /// What the socket was for.
        used_for: SocketUse,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The kernel refuses MPTCP sockets (no MPTCP support, or `net.mptcp.enabled = 0`).
    MptcpUnavailable {
        /// The `socket()` call that failed.
        call: &'static str,
        /// Whether MPTCP is switched off by the sysctl `net.mptcp.enabled = 0` (rather than absent).
        disabled: bool,
        /// What the socket was for.
        used_for: SocketUse,
        /// The kernel's answer.
        source: io::Error,
    },
    /// io_uring cannot be used by this process (the registrar's probe of its io_uring driver).
    IoUringUnavailable {
        /// The likely cause and the remedy, in words.
        cause: String,
        /// The error of `io_uring_setup`.
        source: io::Error,
    },
    /// A socket call failed.
    Io {
        /// What was being done, e.g. `bind tcp://127.0.0.1:3863`.
        action: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A listener's port is held by another registrar or another process ([`crate::PortClaim`]).
    PortTaken {
        /// The listener.
        url: rserpool_protocol::url::TransportUrl,
        /// Another `rserpool-registrar` serves the same listener (rather than some other socket
        /// holding the port).
        by_registrar: bool,
    },
    /// The request cannot be carried out as given (a transport the function does not open, no
    /// address); the text says what to give instead.
    InvalidRequest(String),
    /// A TLS certificate, private key or CA bundle cannot be used; the text names the file, what
    /// is wrong with it and what to give instead.
    Tls(String),
}

impl NetError {
    /// Wraps a failed socket call with what was being done.
    pub fn io(action: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }

    /// The error for a refused MPTCP `socket()` call; reads `net.mptcp.enabled` to tell a switched
    /// off MPTCP from a missing one.
    pub(crate) fn mptcp_unavailable(
        call: &'static str,
        used_for: SocketUse,
        source: io::Error,
    ) -> Self {
        let disabled = source.raw_os_error() == Some(libc::ENOPROTOOPT)
            || fs::read_to_string("/proc/sys/net/mptcp/enabled").is_ok_and(|v| v.trim() == "0");
        Self::MptcpUnavailable {
            call,
            disabled,
            used_for,
            source,
        }
    }

    /// For a caller whose own message names what was being done (and where): a failed socket
    /// call as the kernel's answer alone, without the action; any other error as
    /// [`io::Error::from`] gives it, with its whole message.
    pub fn into_kernel_error(self) -> io::Error {
        match self {
            Self::Io { source, .. } => source,
            other => other.into(),
        }
    }

    /// Whether the kernel lacks the transport (SCTP, MPTCP) or the address and port are taken:
    /// what an endpoint marked "skip if unavailable" may be skipped for.
    pub fn unavailable_or_in_use(&self) -> bool {
        match self {
            Self::SctpUnavailable { .. } | Self::MptcpUnavailable { .. } => true,
            Self::Io { .. } => self.in_use(),
            Self::PortTaken { .. } => true,
            Self::IoUringUnavailable { .. } | Self::InvalidRequest(_) | Self::Tls(_) => false,
        }
    }

    /// Whether the address and port are taken (`EADDRINUSE`).
    pub fn in_use(&self) -> bool {
        match self {
            Self::Io { source, .. } => source.raw_os_error() == Some(libc::EADDRINUSE),
            Self::PortTaken { .. } => true,
            _ => false,
        }
    }
}

/// What to do about a failed socket call, by errno; empty when there is nothing specific to say.
fn hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            "; another socket already uses this address and port: stop the other process, choose \
             another port, or open every listener on it with reuse_port"
        }
        Some(libc::EADDRNOTAVAIL) => {
            "; the address is not assigned to a local interface: use one that `ip address` lists, \
             or 0.0.0.0 / [::]"
        }
        Some(libc::EACCES) => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE, and a security policy may \
             forbid the call: use a port of 1024 or above, or grant the capability"
        }
        Some(libc::EMFILE | libc::ENFILE) => {
            "; too many open files: raise the limit (`ulimit -n`, systemd LimitNOFILE=)"
        }
        Some(libc::ENOBUFS | libc::ENOMEM) => "; the kernel is out of memory for sockets",
        Some(libc::EEXIST) => {
            "; SCTP sockets that share a port through SO_REUSEPORT must all be bound to the same \
             set of addresses: give every listener on the port the same addresses"
        }
        _ => "",
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SctpUnavailable {
                call,
                used_for,
                source,
            } => {
                let (why, remedy) = match source.raw_os_error() {
                    Some(libc::EACCES | libc::EPERM) => (
                        "a security policy (seccomp, SELinux, AppArmor) forbids SCTP sockets",
                        "allow SCTP sockets for this process",
                    ),
                    Some(libc::EAFNOSUPPORT) => (
                        "the kernel has no support for this address family",
                        "enable IPv6 in the kernel or use an IPv4 address",
                    ),
                    _ => (
                        "the kernel has no SCTP support",
                        "load the sctp module (modprobe sctp; check that it is not blacklisted in \
                         /etc/modprobe.d)",
                    ),
                };
                let instead = match used_for {
                    SocketUse::Listen => "remove the sctp:// listener",
                    SocketUse::Connect => "connect over tcp:// or mptcp:// instead",
                };
                write!(
                    f,
                    "SCTP is not available: {why} ({call} failed with {source}); {remedy}, or \
                     {instead}"
                )
            }
            Self::MptcpUnavailable {
                call,
                disabled,
                used_for,
                source,
            } => {
                let why = if *disabled {
                    "MPTCP is disabled (sysctl net.mptcp.enabled = 0); enable it with \
                     `sysctl -w net.mptcp.enabled=1`"
                } else {
                    "the kernel has no MPTCP support (it needs Linux 5.6 or later built with \
                     CONFIG_MPTCP); use such a kernel"
                };
                let instead = match used_for {
                    SocketUse::Listen => "use a tcp:// listener instead",
                    SocketUse::Connect => "connect over tcp:// instead",
                };
                write!(
                    f,
                    "MPTCP is not available: {call} failed with {source}: {why}, or {instead}"
                )
            }
            Self::IoUringUnavailable { cause, source } => write!(
                f,
                "io_uring is not available: io_uring_setup failed with {source}: {cause}"
            ),
            Self::Io { action, source } => write!(f, "cannot {action}: {source}{}", hint(source)),
            Self::PortTaken {
                url,
                by_registrar: true,
            } => write!(
                f,
                "{url} is already served by another rserpool-registrar on this host: stop it \
                 first (e.g. `systemctl stop rserpool-registrar`), or give this one another \
                 port; two registrars never share a listener"
            ),
            Self::PortTaken {
                url,
                by_registrar: false,
            } => write!(
                f,
                "{url} is in use by another process (`ss -lnp` or `ss -lunp` shows which): stop \
                 it, or choose another port; the registrar shares its ports with its own \
                 workers only"
            ),
            Self::InvalidRequest(what) | Self::Tls(what) => f.write_str(what),
        }
    }
}

/// For callers whose errors are `io::Error`s: the kind of the kernel's answer (`InvalidInput`
/// for a request that cannot be carried out), and this error's message.
impl From<NetError> for io::Error {
    fn from(e: NetError) -> Self {
        let kind = match &e {
            NetError::SctpUnavailable { source, .. }
            | NetError::MptcpUnavailable { source, .. }
            | NetError::IoUringUnavailable { source, .. }
            | NetError::Io { source, .. } => source.kind(),
            NetError::PortTaken { .. } => io::ErrorKind::AddrInUse,
            NetError::InvalidRequest(_) | NetError::Tls(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::SctpUnavailable { source, .. }
            | Self::MptcpUnavailable { source, .. }
            | Self::IoUringUnavailable { source, .. }
            | Self::Io { source, .. } => Some(source),
            Self::PortTaken { .. } | Self::InvalidRequest(_) | Self::Tls(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn mptcp_messages_tell_disabled_from_absent() {
        let call = "socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)";
        let disabled = NetError::MptcpUnavailable {
            call,
            disabled: true,
            used_for: SocketUse::Listen,
            source: os(libc::ENOPROTOOPT),
        }
        .to_string();
        assert!(
            disabled.starts_with("MPTCP is not available: socket(AF_INET"),
            "{disabled}"
        );
        assert!(
            disabled.contains("sysctl -w net.mptcp.enabled=1"),
            "{disabled}"
        );
        assert!(
            disabled.ends_with("or use a tcp:// listener instead"),
            "{disabled}"
        );
        let absent = NetError::MptcpUnavailable {
            call,
            disabled: false,
            used_for: SocketUse::Connect,
            source: os(libc::EPROTONOSUPPORT),
        }
        .to_string();
        assert!(absent.contains("CONFIG_MPTCP"), "{absent}");
        assert!(
            absent.ends_with("or connect over tcp:// instead"),
            "{absent}"
        );
        assert!(matches!(
            NetError::mptcp_unavailable(call, SocketUse::Listen, os(libc::ENOPROTOOPT)),
            NetError::MptcpUnavailable { disabled: true, .. }
        ));
    }

    #[test]
    fn sctp_messages_name_the_cause_and_the_remedy() {
        let call = "socket(AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP)";
        let text = |errno, used_for| {
            NetError::SctpUnavailable {
                call,
                used_for,
                source: os(errno),
            }
            .to_string()
        };
        let listen = SocketUse::Listen;
        assert!(text(libc::ESOCKTNOSUPPORT, listen).contains("no SCTP support"));
        assert!(text(libc::EPERM, listen).contains("seccomp"));
        assert!(text(libc::EAFNOSUPPORT, listen).contains("address family"));
        assert!(text(libc::EPROTONOSUPPORT, listen).ends_with("or remove the sctp:// listener"));
        let client = text(libc::EPROTONOSUPPORT, SocketUse::Connect);
        assert!(client.contains("modprobe sctp"), "{client}");
        assert!(
            client.ends_with("or connect over tcp:// or mptcp:// instead"),
            "{client}"
        );
    }

    #[test]
    fn io_errors_keep_the_kind_and_the_message() {
        let e = io::Error::from(NetError::io(
            "connect to tcp://127.0.0.1:1",
            os(libc::ECONNREFUSED),
        ));
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(
            e.to_string()
                .starts_with("cannot connect to tcp://127.0.0.1:1: "),
            "{e}"
        );
        let e = io::Error::from(NetError::InvalidRequest("give an address".into()));
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "give an address");
    }

    #[test]
    fn socket_errors_carry_the_action_and_a_hint() {
        let e = NetError::io("bind tcp://127.0.0.1:80", os(libc::EACCES));
        let text = e.to_string();
        assert!(
            text.starts_with("cannot bind tcp://127.0.0.1:80: "),
            "{text}"
        );
        assert!(text.contains("CAP_NET_BIND_SERVICE"), "{text}");
        assert!(std::error::Error::source(&e).is_some());
        let text = NetError::io("listen on sctp://127.0.0.1:1", os(libc::EEXIST)).to_string();
        assert!(text.contains("same set of addresses"), "{text}");
        let text = NetError::io("bind udp://[::1]:1", os(libc::EINTR)).to_string();
        assert!(text.ends_with("(os error 4)"), "{text}");
    }
}
