//! A throwaway PKI for tests and benchmarks (feature `test-pki`): a CA and the certificates it
//! signs, made with rcgen and written as PEM files to a directory of the caller's. Nothing here
//! is for production certificates, and no key is ever committed: every run makes its own.

use std::io;
use std::path::{Path, PathBuf};

use crate::tls::TlsFiles;

/// A test CA whose certificate is `<dir>/<name>.pem`.
pub struct TestPki {
    dir: PathBuf,
    name: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn pki_error(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("cannot make a test certificate: {e}"))
}

impl TestPki {
    /// A new CA called `name`, its certificate written to `dir` (created if missing).
    pub fn new(dir: &Path, name: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut params = rcgen::CertificateParams::new(Vec::new()).map_err(pki_error)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().map_err(pki_error)?;
        let cert = params.self_signed(&key).map_err(pki_error)?;
        let pki = Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            issuer: rcgen::Issuer::new(params, key),
        };
        std::fs::write(pki.ca_file(), cert.pem())?;
        Ok(pki)
    }

    /// The CA's certificate (the bundle to trust).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// A certificate with common name `name` and the subject alternative names `sans` (DNS
    /// names, or IP addresses such as `127.0.0.1`), signed by this CA and written as
    /// `<file>.pem` and `<file>.key`; its files, with this CA as the bundle.
    pub fn issue(&self, name: &str, sans: &[&str], file: &str) -> io::Result<TlsFiles> {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(sans).map_err(pki_error)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().map_err(pki_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(pki_error)?;
        let files = TlsFiles {
            certificate: self.dir.join(format!("{file}.pem")),
            private_key: self.dir.join(format!("{file}.key")),
            ca: self.ca_file(),
        };
        std::fs::write(&files.certificate, cert.pem())?;
        std::fs::write(&files.private_key, key.serialize_pem())?;
        Ok(files)
    }
}
