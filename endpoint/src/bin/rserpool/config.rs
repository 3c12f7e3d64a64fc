//! The `rserpool` configuration file: where it is (`--config FILE`, else
//! `$XDG_CONFIG_HOME/rserpool/config.toml`, else `~/.config/rserpool/config.toml`), what it may
//! set (the registrars, discovery, TLS: the keys mirror the flags) and its errors, each naming
//! the file and line. Reading it opens no socket.
//!
//! ```toml
//! registrar = ["tcp://127.0.0.1:3863"]   # --registrar (one URL or a list)
//! discover = "udp://239.0.0.50:3863"       # --discover
//! discover_timeout_ms = 5000               # --discover-timeout
//!
//! [tls]
//! ca = "ca.pem"                            # --tls-ca (relative to this file's directory)
//! certificate = "pe.pem"                   # --tls-certificate
//! key = "pe.key"                           # --tls-key
//! server_name = "registrar.example.net"    # --tls-server-name
//! ```

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::reach::{Target, discovery_url};
use rserpool_net::TransportUrl;

/// The keys of the top level, for messages.
const TOP_KEYS: &str = "registrar, discover, discover_timeout_ms";
/// The keys of `[tls]`, for messages.
const TLS_KEYS: &str = "ca, certificate, key, server_name";
/// The longest discovery timeout: an hour.
pub const MAX_DISCOVER_TIMEOUT_MS: u64 = 3_600_000;

/// Where a value of the file was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A value with the place that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Where the file set it.
    pub origin: Origin,
}

/// What the configuration file set; every field is optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileConfig {
    /// The file read, or the default path looked for and not found (`None`: no default path, as
    /// without `$HOME`).
    pub path: Option<PathBuf>,
    /// `registrar`: the registrars.
    pub registrars: Option<Setting<Vec<Target>>>,
    /// `discover`: where to listen for announces.
    pub discover: Option<Setting<TransportUrl>>,
    /// `discover_timeout_ms`.
    pub discover_timeout_ms: Option<Setting<u64>>,
    /// `tls.ca`, made absolute against the file's directory.
    pub tls_ca: Option<Setting<PathBuf>>,
    /// `tls.certificate`, made absolute against the file's directory.
    pub tls_certificate: Option<Setting<PathBuf>>,
    /// `tls.key`, made absolute against the file's directory.
    pub tls_key: Option<Setting<PathBuf>>,
    /// `tls.server_name`.
    pub tls_server_name: Option<Setting<String>>,
}

/// The default file: `$XDG_CONFIG_HOME/rserpool/config.toml` when that variable holds an
/// absolute path (the XDG base directory rules ignore relative ones), else
/// `$HOME/.config/rserpool/config.toml`; `None` without either.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("rserpool").join("config.toml"))
}

/// Reads the file given with `--config` (which must exist), or the default one if it exists.
/// Every problem is one line of the error, `FILE:LINE: what is wrong`.
pub fn load(explicit: Option<&Path>) -> Result<FileConfig, String> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => match default_path() {
            Some(path) if path.exists() => path,
            path => {
                return Ok(FileConfig {
                    path,
                    ..FileConfig::default()
                });
            }
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read the configuration file {}: {e}{}",
            path.display(),
            if explicit.is_some() {
                " (check the path given with --config)"
            } else {
                ""
            }
        )
    })?;
    parse(&path, &text)
}

/// Parses the text of the file at `path`.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, String> {
    let file = File { path, text };
    let document = DeTable::parse(text).map_err(|e| {
        let origin = file.origin(e.span().unwrap_or(0..0));
        format!("{origin}: not valid TOML: {}", e.message())
    })?;
    let mut config = FileConfig {
        path: Some(path.to_path_buf()),
        ..FileConfig::default()
    };
    let mut problems: Vec<(Origin, String)> = Vec::new();
    for (key, value) in document.get_ref() {
        let name: &str = key.get_ref();
        let result = match name {
            "registrar" => registrars(value).map(|v| config.registrars = Some(file.set(v, value))),
            "discover" => string(value, "\"udp://239.0.0.50:3863\"").and_then(|s| {
                let url =
                    discovery_url(s).map_err(|e| (value.span(), format!("has a bad URL: {e}")))?;
                config.discover = Some(file.set(url, value));
                Ok(())
            }),
            "discover_timeout_ms" => integer(value, 1..=MAX_DISCOVER_TIMEOUT_MS)
                .map(|ms| config.discover_timeout_ms = Some(file.set(ms, value))),
            "tls" => match value.get_ref() {
                DeValue::Table(table) => {
                    file.tls(table, &mut config, &mut problems);
                    continue;
                }
                _ => Err((
                    value.span(),
                    "must be a section, `[tls]`, with the keys ca, certificate, key, server_name"
                        .into(),
                )),
            },
            _ => {
                let message = match value.get_ref() {
                    DeValue::Table(_) => {
                        format!("unknown section `[{name}]` (the only section is [tls])")
                    }
                    _ => format!(
                        "unknown key `{name}` (known keys: {TOP_KEYS}, and in [tls]: {TLS_KEYS})"
                    ),
                };
                problems.push((file.origin(key.span()), message));
                continue;
            }
        };
        if let Err((span, message)) = result {
            problems.push((file.origin(span), format!("`{name}` {message}")));
        }
    }
    if problems.is_empty() {
        return Ok(config);
    }
    problems.sort_by_key(|(origin, _)| origin.line);
    let lines: Vec<String> = problems
        .into_iter()
        .map(|(origin, message)| format!("{origin}: {message}"))
        .collect();
    Err(lines.join("\n"))
}

/// The file being read, to turn spans into origins.
struct File<'a> {
    path: &'a Path,
    text: &'a str,
}

impl File<'_> {
    /// The place of byte range `span`.
    fn origin(&self, span: Range<usize>) -> Origin {
        Origin {
            file: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
        }
    }

    /// `value` as set by `at`.
    fn set<T>(&self, value: T, at: &Spanned<DeValue<'_>>) -> Setting<T> {
        Setting {
            value,
            origin: self.origin(at.span()),
        }
    }

    /// The keys of `[tls]`; file names are taken relative to the file's directory.
    fn tls(
        &self,
        table: &DeTable<'_>,
        config: &mut FileConfig,
        problems: &mut Vec<(Origin, String)>,
    ) {
        let base = self.path.parent().unwrap_or(Path::new(""));
        let file = |value: &Spanned<DeValue<'_>>| -> Result<Setting<PathBuf>, Bad> {
            let name = string(value, "\"/etc/rserpool/ca.pem\"")?;
            if name.is_empty() {
                return Err((value.span(), "must name a file, not be empty".into()));
            }
            Ok(self.set(base.join(name), value))
        };
        for (key, value) in table {
            let name: &str = key.get_ref();
            let result = match name {
                "ca" => file(value).map(|s| config.tls_ca = Some(s)),
                "certificate" => file(value).map(|s| config.tls_certificate = Some(s)),
                "key" => file(value).map(|s| config.tls_key = Some(s)),
                "server_name" => string(value, "\"registrar.example.net\"").and_then(|name| {
                    if name.is_empty() {
                        return Err((value.span(), "must not be empty".into()));
                    }
                    config.tls_server_name = Some(self.set(name.to_owned(), value));
                    Ok(())
                }),
                _ => {
                    problems.push((
                        self.origin(key.span()),
                        format!("unknown key `{name}` in [tls] (known keys: {TLS_KEYS})"),
                    ));
                    continue;
                }
            };
            if let Err((span, message)) = result {
                problems.push((self.origin(span), format!("`tls.{name}` {message}")));
            }
        }
    }
}

/// A refusal: where in the text, and what is wrong (after the key's name).
type Bad = (Range<usize>, String);

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.bytes().filter(|&b| b == b'\n').count() + 1
}

/// What a value is, for messages.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(x) => format!("the number {x}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Array(_) => "a list".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// A string.
fn string<'a>(value: &'a Spanned<DeValue<'_>>, example: &str) -> Result<&'a str, Bad> {
    match value.get_ref() {
        DeValue::String(s) => Ok(s),
        other => Err((
            value.span(),
            format!(
                "must be a string in quotes, e.g. {example}, not {}",
                describe(other)
            ),
        )),
    }
}

/// A whole number in `range`.
fn integer(value: &Spanned<DeValue<'_>>, range: std::ops::RangeInclusive<u64>) -> Result<u64, Bad> {
    let refuse = |what: String| {
        (
            value.span(),
            format!(
                "must be a whole number of milliseconds from {} to {}, not {what}",
                range.start(),
                range.end()
            ),
        )
    };
    let DeValue::Integer(i) = value.get_ref() else {
        return Err(refuse(describe(value.get_ref())));
    };
    match u64::from_str_radix(i.as_str(), i.radix()) {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(refuse(i.to_string())),
    }
}

/// One registrar URL or a non-empty list of them.
fn registrars(value: &Spanned<DeValue<'_>>) -> Result<Vec<Target>, Bad> {
    let example = "[\"tcp://127.0.0.1:3863\"]";
    let one = |item: &Spanned<DeValue<'_>>| -> Result<Target, Bad> {
        string(item, example)?
            .parse()
            .map_err(|e| (item.span(), format!("has a bad URL: {e}")))
    };
    match value.get_ref() {
        DeValue::String(_) => Ok(vec![one(value)?]),
        DeValue::Array(items) if items.is_empty() => Err((
            value.span(),
            format!(
                "is an empty list: name at least one registrar, e.g. {example}, or leave the \
                 key out to discover registrars by their announces"
            ),
        )),
        DeValue::Array(items) => items.iter().map(one).collect(),
        other => Err((
            value.span(),
            format!(
                "must be a URL or a list of URLs, e.g. {example}, not {}",
                describe(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(Path::new("/etc/rs/config.toml"), text).unwrap_err()
    }

    #[test]
    fn reads_every_key_with_its_line_and_paths_against_the_files_directory() {
        let text = "registrar = [\"tcp://127.0.0.1:1\",\n  \"udp://127.0.0.1:2\"]\n\
                    discover = \"udp://127.0.0.1:9?generation=ng\"\n\
                    discover_timeout_ms = 250\n\
                    [tls]\nca = \"ca.pem\"\ncertificate = \"/abs/pe.pem\"\nkey = \"k\"\n\
                    server_name = \"r.example.net\"\n";
        let c = parse(Path::new("/etc/rs/config.toml"), text).unwrap();
        let registrars = c.registrars.unwrap();
        assert_eq!(registrars.value.len(), 2);
        assert_eq!(registrars.origin.to_string(), "/etc/rs/config.toml:1");
        assert_eq!(
            c.discover.unwrap().value.to_string(),
            "udp://127.0.0.1:9?generation=ng"
        );
        let timeout = c.discover_timeout_ms.unwrap();
        assert_eq!((timeout.value, timeout.origin.line), (250, 4));
        let ca = c.tls_ca.unwrap();
        assert_eq!(ca.value, Path::new("/etc/rs/ca.pem"));
        assert_eq!(ca.origin.line, 6);
        assert_eq!(c.tls_certificate.unwrap().value, Path::new("/abs/pe.pem"));
        assert_eq!(c.tls_key.unwrap().value, Path::new("/etc/rs/k"));
        assert_eq!(c.tls_server_name.unwrap().value, "r.example.net");
        let one = parse(Path::new("c.toml"), "registrar = \"tcp://127.0.0.1:1\"\n").unwrap();
        assert_eq!(one.registrars.unwrap().value.len(), 1);
    }

    #[test]
    fn every_problem_names_file_line_and_key() {
        assert_eq!(
            error("registrar = \"tcp://127.0.0.1:1\"\nregistar = 1\n"),
            "/etc/rs/config.toml:2: unknown key `registar` (known keys: registrar, discover, \
             discover_timeout_ms, and in [tls]: ca, certificate, key, server_name)"
        );
        let e = error("\n\nregistrar = [\n\"tcp://127.0.0.1:1\",\n\"http://x:1\"]\n");
        assert!(
            e.starts_with("/etc/rs/config.toml:5: `registrar` has a bad URL: bad transport URL `http://x:1`: unknown scheme `http`"),
            "{e}"
        );
        assert!(error("registrar = []\n").contains("`registrar` is an empty list"));
        assert!(error("registrar = 3\n").contains("must be a URL or a list of URLs"));
        assert!(error("discover = \"tcp://127.0.0.1:1\"\n").contains("`discover` has a bad URL"));
        assert!(
            error("discover_timeout_ms = 0\n")
                .contains("`discover_timeout_ms` must be a whole number of milliseconds from 1")
        );
        assert!(error("discover_timeout_ms = \"5s\"\n").contains("not the string \"5s\""));
        let e = error("[tls]\nca = 1\nkeyfile = \"x\"\n[tsl]\nca = \"x\"\n");
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].starts_with("/etc/rs/config.toml:2: `tls.ca` must be a string"),
            "{e}"
        );
        assert!(
            lines[1].starts_with("/etc/rs/config.toml:3: unknown key `keyfile` in [tls]"),
            "{e}"
        );
        assert!(
            lines[2].starts_with("/etc/rs/config.toml:4: unknown section `[tsl]`"),
            "{e}"
        );
        assert!(error("tls = 1\n").contains("`tls` must be a section"));
        assert!(error("[tls]\nkey = \"\"\n").contains("`tls.key` must name a file"));
        assert!(error("registrar = [\n").starts_with("/etc/rs/config.toml:"));
        assert!(error("registrar = [\n").contains("not valid TOML"));
    }
}
