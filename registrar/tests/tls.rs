//! TLS as operators run it (issue 17, RFC 5355): the registrar daemon on the default profile with
//! a `tcp+tls://` listener that requires client certificates, certificates made here by a test
//! CA (nothing committed), and PEs that speak through the project's client connection. Each
//! scenario runs on both I/O drivers. Shown: a certified PE registers, and is resolvable over
//! plain TCP; a PE without a certificate, or with one of another CA, fails its handshake; an
//! identity the access rules do not allow in a pool is refused with cause 0xa; an identity
//! cannot re-register another identity's PE ID; `tls.allowed_identities` aborts the others; and a
//! SIGHUP loads new certificates. Every refusal is counted in the metrics.

mod common;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, eventually, registration, resolution, resolved};
use rserpool_net::{ClientTls, Connection, TestPki, TlsFiles, Transport};
use rserpool_protocol::{AsapMessage, Generation, cause};

const RFC: Generation = Generation::Rfc;
const NG: Generation = Generation::Ng;
const WAIT: Duration = Duration::from_secs(5);

common::on_both_drivers!(
    certified_pes_register_and_the_others_are_refused_and_counted,
    allowed_identities_abort_the_others_and_sighup_loads_new_certificates,
    registrars_peer_over_tls_and_the_allowlist_binds_pr_ids_to_certificates,
);

/// A test CA in `dir` whose certificates (`issue`) name themselves and, for registrars
/// (`registrar…`, `pr…`), also 127.0.0.1, the address their peers connect to.
struct Pki(TestPki);

impl Pki {
    fn new(dir: &Path, name: &str) -> Self {
        Self(TestPki::new(dir, name).unwrap())
    }

    fn ca_file(&self) -> PathBuf {
        self.0.ca_file()
    }

    fn issue(&self, name: &str, file: &str) -> TlsFiles {
        let mut sans = vec![name];
        if name.starts_with("registrar") || name.starts_with("pr") {
            sans.push("127.0.0.1");
        }
        self.0.issue(name, &sans, file).unwrap()
    }
}

/// A directory for one scenario on one driver.
fn scratch(scenario: &str, driver: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rserpool-tls-{scenario}-{driver}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Writes the configuration file `dir/name`: the `[tls]` keys of `files`, then `rest` (more
/// `[tls]` keys, or sections).
fn config_file(dir: &Path, name: &str, files: &TlsFiles, rest: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(
        &file,
        format!(
            "[tls]\ncertificate = {:?}\nprivate_key = {:?}\nca = {:?}\n{rest}",
            files.certificate, files.private_key, files.ca
        ),
    )
    .unwrap();
    file
}

/// The daemon on the default profile and `driver`, two workers, a TLS listener and a plain TCP
/// one, with the `[tls]` keys of `server` and the rest of `config`.
fn daemon(dir: &Path, driver: &str, server: &TlsFiles, config: &str) -> Daemon {
    let file = config_file(dir, "registrar.toml", server, config);
    Daemon::start(&[
        "--profile",
        "default",
        "--config",
        file.to_str().unwrap(),
        "--driver",
        driver,
        "--workers",
        "2",
        "--asap",
        "tcp+tls://127.0.0.1:0",
        "--asap",
        "tcp://127.0.0.1:0",
        "--asap",
        "mptcp+tls://127.0.0.1:0?generation=ng",
        "--asap",
        "tcp+tls://127.0.0.1:0?client_certificate=optional",
        "--metrics",
        "127.0.0.1:0",
    ])
}

/// The address of `d`'s listener whose URL ends with `suffix`.
fn listener_ending(d: &Daemon, scheme: &str, suffix: &str) -> SocketAddr {
    let url = d
        .listeners
        .iter()
        .find(|u| u.starts_with(scheme) && u.ends_with(suffix))
        .unwrap_or_else(|| panic!("no {scheme}...{suffix} in {:?}", d.listeners));
    url[scheme.len()..url.len() - suffix.len()].parse().unwrap()
}

/// A registrar with PR ID `id` on `driver` in an operating scope over TLS: its certificate
/// `files`, an ENRP endpoint on an ephemeral `tcp+tls://` port, the static peers `peers`, the
/// carrier profile's ENRP timers (shortened) and `enrp_extra` in `[enrp]`.
fn registrar(
    dir: &Path,
    driver: &str,
    id: u32,
    files: &TlsFiles,
    peers: &[&str],
    enrp_extra: &str,
) -> Daemon {
    let file = config_file(
        dir,
        &format!("registrar-{id}.toml"),
        files,
        &format!("\n{}{enrp_extra}", common::CARRIER_ENRP),
    );
    let id = id.to_string();
    let mut args = vec![
        "--profile",
        "default",
        "--config",
        file.to_str().unwrap(),
        "--driver",
        driver,
        "--workers",
        "2",
        "--id",
        &id,
        "--asap",
        "tcp://127.0.0.1:0",
        "--enrp",
        "tcp+tls://127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ];
    for peer in peers {
        args.extend(["--peer", peer]);
    }
    Daemon::start(&args)
}

/// The PE IDs a plain TCP PU gets for `pool` at `d`, sorted; empty while it is unknown.
fn pe_ids(d: &Daemon, pool: &[u8]) -> Vec<u64> {
    let mut ids = resolve(d, pool).unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// A PE's TLS connection with the certificate `files` (or none).
fn connect(address: SocketAddr, files: &TlsFiles) -> Result<Connection, rserpool_net::NetError> {
    connect_over(Transport::Tcp, address, files)
}

/// [`connect`] over `transport`.
fn connect_over(
    transport: Transport,
    address: SocketAddr,
    files: &TlsFiles,
) -> Result<Connection, rserpool_net::NetError> {
    let client = ClientTls::load(files)?;
    let conn = Connection::open_tls(transport, address, WAIT, &client, None)?;
    conn.set_read_timeout(Some(WAIT)).unwrap();
    Ok(conn)
}

/// Sends `request` and reads the first reply that is not a keep-alive.
fn request(conn: &Connection, request: &[u8]) -> io::Result<Vec<u8>> {
    conn.send(request)?;
    let mut reply = None;
    conn.read_messages(|m| {
        if m.first() == Some(&0x07) {
            // ENDPOINT_KEEP_ALIVE: not what was asked.
            return true;
        }
        reply = Some(m.to_vec());
        false
    })?;
    reply.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed without a reply"))
}

/// The registration response's verdict: `Ok(())` or the first cause.
fn registered(reply: &[u8]) -> Result<(), u16> {
    match AsapMessage::decode(reply, RFC).unwrap().message {
        AsapMessage::RegistrationResponse {
            rejected: false, ..
        } => Ok(()),
        AsapMessage::RegistrationResponse { error, .. } => {
            Err(error.and_then(|e| e.iter().next()).map_or(0, |c| c.code))
        }
        other => panic!("not a registration response: {other:?}"),
    }
}

/// What a plain TCP PU gets for `pool`.
fn resolve(d: &Daemon, pool: &[u8]) -> Result<Vec<u64>, u16> {
    let mut pu = common::StreamClient::tcp(d.address("tcp://", false), RFC);
    pu.send_raw(&resolution(pool, Some(16), RFC));
    resolved(&pu.recv_bytes(), RFC)
}

fn refusals(d: &Daemon, limit: &str) -> f64 {
    d.metric(&format!(
        "rserpool_limit_refusals_total{{limit=\"{limit}\"}}"
    ))
}

fn certified_pes_register_and_the_others_are_refused_and_counted(driver: &str) {
    let dir = scratch("pes", driver);
    let pki = Pki::new(&dir, "test-ca");
    let stranger_ca = Pki::new(&dir, "stranger-ca");
    let server = pki.issue("registrar.example.net", "registrar");
    let d = daemon(
        &dir,
        driver,
        &server,
        "\n[access]\nrules = [\"billing register,deregister identity:*.billing.example.net\", \
         \"* resolve any\"]\n",
    );
    let tls = d.address("tcp+tls://", false);

    // A PE whose certificate the access rules allow in the pool.
    let pe1_files = pki.issue("pe1.billing.example.net", "pe1");
    let pe1 = connect(tls, &pe1_files).unwrap();
    let reply = request(&pe1, &registration(b"billing", 7, 60_000, RFC)).unwrap();
    assert_eq!(registered(&reply), Ok(()));
    assert_eq!(resolve(&d, b"billing"), Ok(vec![7]));

    // No client certificate, or one of another CA: the handshake fails, with an alert.
    let anonymous = TlsFiles {
        ca: pki.ca_file(),
        ..TlsFiles::default()
    };
    let strangers = {
        let mut f = stranger_ca.issue("pe9.billing.example.net", "pe9");
        f.ca = pki.ca_file();
        f
    };
    for (who, files) in [("no certificate", &anonymous), ("another CA", &strangers)] {
        let refused = connect(tls, files)
            .map_err(io::Error::from)
            .and_then(|c| request(&c, &registration(b"billing", 66, 60_000, RFC)));
        let e = refused.expect_err(who);
        assert!(
            e.to_string().contains("alert") || e.kind() == io::ErrorKind::UnexpectedEof,
            "{who}: {e}"
        );
    }
    assert!(
        eventually(WAIT, || refusals(&d, "tls_handshake") >= 2.0),
        "both failed handshakes counted"
    );

    // An identity the rules do not allow in this pool.
    let payroll = connect(tls, &pki.issue("pe1.payroll.example.net", "payroll")).unwrap();
    let reply = request(&payroll, &registration(b"billing", 8, 60_000, RFC)).unwrap();
    assert_eq!(registered(&reply), Err(cause::REJECTED_SECURITY));
    assert!(refusals(&d, "access") >= 1.0);

    // Another allowed identity, from the same host over a newer connection, takes PE ID 7: the
    // same host could without TLS, but the ID is bound to pe1's identity.
    let pe2 = connect(tls, &pki.issue("pe2.billing.example.net", "pe2")).unwrap();
    let reply = request(&pe2, &registration(b"billing", 7, 60_000, RFC)).unwrap();
    assert_eq!(registered(&reply), Err(cause::REJECTED_SECURITY));
    assert!(refusals(&d, "pe_binding") >= 1.0);
    // pe2 registers its own PE; pe1, reconnected, re-registers its own.
    let reply = request(&pe2, &registration(b"billing", 9, 60_000, RFC)).unwrap();
    assert_eq!(registered(&reply), Ok(()));
    let pe1_again = connect(tls, &pe1_files).unwrap();
    let reply = request(&pe1_again, &registration(b"billing", 7, 60_000, RFC)).unwrap();
    assert_eq!(registered(&reply), Ok(()));
    let mut pes = resolve(&d, b"billing").unwrap();
    pes.sort_unstable();
    assert_eq!(pes, [7, 9]);

    // A listener where client certificates are optional: a PU without one resolves, and as
    // it has no identity the access rules give it no registration.
    let optional = listener_ending(&d, "tcp+tls://", "?client_certificate=optional");
    let pu = connect(optional, &anonymous).unwrap();
    let reply = request(&pu, &resolution(b"billing", Some(16), RFC)).unwrap();
    let mut pes = resolved(&reply, RFC).unwrap();
    pes.sort_unstable();
    assert_eq!(pes, [7, 9]);
    let reply = request(&pu, &registration(b"billing", 10, 60_000, RFC)).unwrap();
    assert_eq!(registered(&reply), Err(cause::REJECTED_SECURITY));

    // The NG generation over MPTCP and TLS: a 64-bit PE ID.
    let ng = listener_ending(&d, "mptcp+tls://", "?generation=ng");
    let pe_ng = connect_over(Transport::Mptcp, ng, &pe1_files).unwrap();
    let id = 0x1_0000_0007;
    pe_ng
        .send(&registration(b"billing", id, 60_000, NG))
        .unwrap();
    let mut reply = None;
    pe_ng
        .read_messages(|m| {
            reply = Some(m.to_vec());
            false
        })
        .unwrap();
    match AsapMessage::decode(&reply.unwrap(), NG).unwrap().message {
        AsapMessage::RegistrationResponse {
            rejected, pe_id, ..
        } => assert!(!rejected && pe_id.0 == id),
        other => panic!("{other:?}"),
    }
    drop((pe1, pe1_again, pe2, payroll, pu, pe_ng));
    let _ = std::fs::remove_dir_all(&dir);
}

fn allowed_identities_abort_the_others_and_sighup_loads_new_certificates(driver: &str) {
    let dir = scratch("reload", driver);
    let old_ca = Pki::new(&dir, "old-ca");
    let server = old_ca.issue("registrar.example.net", "registrar");
    let d = daemon(
        &dir,
        driver,
        &server,
        "allowed_identities = [\"*.pe.example.net\"]\n",
    );
    let tls = d.address("tcp+tls://", false);
    let allowed = connect(tls, &old_ca.issue("a.pe.example.net", "a")).unwrap();
    let reply = request(&allowed, &registration(b"pool", 1, 60_000, RFC)).unwrap();
    assert_eq!(registered(&reply), Ok(()));
    // Certified by the CA, but not among the allowed names: aborted once its handshake ends.
    let other = connect(tls, &old_ca.issue("intruder.example.net", "intruder")).unwrap();
    let refused = request(&other, &registration(b"pool", 2, 60_000, RFC));
    assert!(refused.is_err(), "{refused:?}");
    assert!(eventually(WAIT, || refusals(&d, "tls_identity") >= 1.0));
    assert_eq!(resolve(&d, b"pool"), Ok(vec![1]));

    // New CA, new registrar certificate, same files; SIGHUP. A client of the old CA keeps a
    // copy of it.
    let old_trust = dir.join("old-ca-kept.pem");
    std::fs::copy(old_ca.ca_file(), &old_trust).unwrap();
    let old_client = TlsFiles {
        ca: old_trust,
        ..old_ca.issue("b.pe.example.net", "b")
    };
    let new_ca = Pki::new(&dir, "new-ca");
    let renewed = new_ca.issue("registrar.example.net", "registrar-new");
    std::fs::copy(&renewed.certificate, &server.certificate).unwrap();
    std::fs::copy(&renewed.private_key, &server.private_key).unwrap();
    std::fs::copy(new_ca.ca_file(), old_ca.ca_file()).unwrap();
    d.signal("HUP");
    let new_client = new_ca.issue("c.pe.example.net", "c");
    // Kept open: a PE leaves with its connection.
    let mut registered_pe = None;
    assert!(
        eventually(WAIT, || {
            let Ok(c) = connect(tls, &new_client) else {
                return false;
            };
            let ok = request(&c, &registration(b"pool", 3, 60_000, RFC))
                .is_ok_and(|r| registered(&r).is_ok());
            registered_pe = ok.then_some(c);
            ok
        }),
        "a client of the new CA gets in after SIGHUP"
    );
    let e = connect(tls, &old_client).expect_err("the old CA vouches for no one now");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // The connection opened before the reload keeps its session.
    let reply = request(&allowed, &registration(b"pool", 1, 60_000, RFC)).unwrap();
    assert_eq!(registered(&reply), Ok(()));
    let mut pes = resolve(&d, b"pool").unwrap();
    pes.sort_unstable();
    assert_eq!(pes, [1, 3]);
    drop(registered_pe);
    let _ = std::fs::remove_dir_all(&dir);
}

fn registrars_peer_over_tls_and_the_allowlist_binds_pr_ids_to_certificates(driver: &str) {
    // RFC 5353 §6.3, RFC 5355 §2.5. A (PR 51) admits PR 53 bound to its certificate name only;
    // B (PR 52, certified by the same CA) and C (PR 53) both name A as their peer over TLS.
    let dir = scratch("scope", driver);
    let pki = Pki::new(&dir, "scope-ca");
    let a = registrar(
        &dir,
        driver,
        51,
        &pki.issue("pr51.example.net", "pr51"),
        &[],
        "allowed_peers = [\"53@identity:pr53.example.net\"]\n",
    );
    assert!(a.enrp[0].starts_with("tcp+tls://"), "{:?}", a.enrp);
    let b = registrar(
        &dir,
        driver,
        52,
        &pki.issue("pr52.example.net", "pr52"),
        &[&a.enrp[0]],
        "",
    );
    let c = registrar(
        &dir,
        driver,
        53,
        &pki.issue("pr53.example.net", "pr53"),
        &[&a.enrp[0]],
        "",
    );
    let mut pe = common::StreamClient::tcp(a.address("tcp://", false), RFC);
    pe.send_raw(&registration(b"scope", 61, 60_000, RFC));
    assert!(common::accepted(&pe.recv_answering_keep_alives(), RFC));
    let mut intruder_pe = common::StreamClient::tcp(b.address("tcp://", false), RFC);
    intruder_pe.send_raw(&registration(b"scope", 62, 60_000, RFC));
    assert!(common::accepted(
        &intruder_pe.recv_answering_keep_alives(),
        RFC
    ));
    assert!(
        eventually(Duration::from_secs(10), || pe_ids(&c, b"scope") == [61]),
        "replicated over TLS to the admitted peer"
    );
    assert!(eventually(WAIT, || {
        a.metric("rserpool_limit_refusals_total{limit=\"enrp_peer\"}") >= 1.0
    }));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(a.metric("rserpool_enrp_peers"), 1.0, "C only");
    assert!(eventually(WAIT, || a
        .metric("rserpool_enrp_peer_connected{peer=\"0x00000035\"}")
        == 1.0));
    assert!(a.metric("rserpool_enrp_peer_last_heard_seconds{peer=\"0x00000035\"}") < 5.0);
    assert!(
        !a.scrape().contains("peer=\"0x00000034\""),
        "the refused PR 52 is no peer"
    );
    assert_eq!(pe_ids(&a, b"scope"), [61], "B's PE never reached A");
    assert_eq!(pe_ids(&b, b"scope"), [62], "A's PE never reached B");
    let _ = std::fs::remove_dir_all(&dir);
}
