//! The table of configuration keys: for each key, how a TOML value is read into a [`Config`] and
//! written back, and whether a SIGHUP reload applies it. Loading, printing and the reload check
//! all walk this one table.

use std::net::SocketAddr;
use std::ops::Range;

use clap::ValueEnum;
use rserpool_protocol::url::TransportUrl;
use toml::Spanned;
use toml::de::DeValue;

use super::layers::Origins;
use super::{AddressOrOff, Config, DriverChoice, LogFormat};

/// When a changed value takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reload {
    /// A SIGHUP reload applies it.
    Sighup,
    /// Only a restart applies it.
    Restart,
}

/// A value refused while reading TOML: the span to blame and what is wrong, phrased to follow
/// the key's name ("must be an integer, not ...").
pub(super) struct Bad {
    /// Where in the text.
    pub span: Range<usize>,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// A value as TOML text: a scalar, or the items of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Literal {
    /// One TOML value.
    Scalar(String),
    /// A list of TOML values.
    List(Vec<String>),
}

impl Literal {
    /// The value on one line, as `docs/configuration.md` shows it.
    #[cfg(test)]
    pub fn inline(&self) -> String {
        match self {
            Self::Scalar(s) => s.clone(),
            Self::List(items) => format!("[{}]", items.join(", ")),
        }
    }
}

/// One configuration key.
pub(super) struct KeyDef {
    /// `section.name`.
    pub path: &'static str,
    /// Whether SIGHUP applies a change.
    pub reload: Reload,
    /// Reads a TOML value into the configuration.
    pub set: fn(&mut Config, &Spanned<DeValue<'_>>) -> Result<(), Bad>,
    /// The configured value as TOML; `None` when the key is unset.
    pub get: fn(&Config) -> Option<Literal>,
}

impl KeyDef {
    /// The section (`timers`).
    pub fn section(&self) -> &'static str {
        self.path.split_once('.').map_or(self.path, |(s, _)| s)
    }

    /// The key inside its section (`keep_alive_interval_ms`).
    pub fn name(&self) -> &'static str {
        self.path.split_once('.').map_or(self.path, |(_, n)| n)
    }
}

/// A [`KeyDef`] for the field `config.section.name`, whose TOML key is `name` in `[section]`.
macro_rules! key {
    ($section:ident . $name:ident, $reload:ident) => {
        KeyDef {
            path: concat!(stringify!($section), ".", stringify!($name)),
            reload: Reload::$reload,
            set: |config, value| {
                config.$section.$name = TomlValue::read(value)?;
                Ok(())
            },
            get: |config| config.$section.$name.write(),
        }
    };
}

/// Every key, grouped by section in the order the sections are printed.
pub(super) const KEYS: &[KeyDef] = &[
    key!(registrar.id, Restart),
    key!(registrar.workers, Restart),
    key!(registrar.driver, Restart),
    key!(registrar.pin_workers, Restart),
    key!(registrar.busy_poll_us, Restart),
    key!(asap.listen, Restart),
    key!(asap.skip_unavailable, Restart),
    key!(enrp.listen, Restart),
    key!(enrp.skip_unavailable, Restart),
    key!(enrp.peers, Restart),
    key!(enrp.presence_targets, Restart),
    key!(enrp.heartbeat_interval_ms, Sighup),
    key!(enrp.max_time_last_heard_ms, Sighup),
    key!(enrp.max_time_no_response_ms, Sighup),
    key!(enrp.mentor_discovery_timeout_ms, Restart),
    key!(enrp.takeover_expiry_ms, Sighup),
    key!(enrp.reconnect_interval_ms, Sighup),
    key!(enrp.max_pes_per_table_response, Sighup),
    key!(enrp.takeover_suggestion, Sighup),
    key!(enrp.allowed_peers, Sighup),
    key!(announce.targets, Sighup),
    key!(announce.interval_ms, Sighup),
    key!(announce.ttl, Sighup),
    key!(timers.keep_alive_interval_ms, Sighup),
    key!(timers.keep_alive_timeout_ms, Sighup),
    key!(timers.max_bad_pe_reports, Sighup),
    key!(resolution.default_items, Sighup),
    key!(resolution.max_items, Sighup),
    key!(limits.max_pools, Restart),
    key!(limits.max_pes_per_pool, Restart),
    key!(limits.max_pes_per_association, Sighup),
    key!(limits.max_pool_handle_len, Restart),
    key!(limits.max_message_size, Restart),
    key!(limits.max_connections, Restart),
    key!(limits.max_connections_per_source, Restart),
    key!(limits.max_buffered_bytes_per_connection, Restart),
    key!(limits.max_requests_per_second, Sighup),
    key!(limits.max_registrations_per_second_per_identity, Sighup),
    key!(limits.idle_timeout_ms, Sighup),
    key!(subscriptions.max_per_association, Sighup),
    key!(subscriptions.max_total, Sighup),
    key!(subscriptions.min_push_interval_ms, Sighup),
    key!(access.rules, Sighup),
    key!(tls.certificate, Sighup),
    key!(tls.private_key, Sighup),
    key!(tls.ca, Sighup),
    key!(tls.allowed_identities, Sighup),
    key!(io.ring_entries, Restart),
    key!(io.buffer_size, Restart),
    key!(io.buffer_count, Restart),
    key!(io.socket_buffer_bytes, Restart),
    key!(io.listen_backlog, Restart),
    key!(io.max_batch, Restart),
    key!(metrics.address, Restart),
    key!(metrics.bearer_token_file, Restart),
    key!(log.level, Sighup),
    key!(log.format, Restart),
    key!(csp.monitor, Sighup),
    key!(csp.interval_ms, Sighup),
];

/// The key at `[section] name`.
pub(super) fn find(section: &str, name: &str) -> Option<&'static KeyDef> {
    KEYS.iter()
        .find(|k| k.section() == section && k.name() == name)
}

/// The sections, in order.
pub(super) fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for key in KEYS {
        if out.last() != Some(&key.section()) {
            out.push(key.section());
        }
    }
    out
}

/// The keys of one section, comma-separated, for messages.
pub(super) fn names_in(section: &str) -> String {
    let names: Vec<&str> = KEYS
        .iter()
        .filter(|k| k.section() == section)
        .map(KeyDef::name)
        .collect();
    names.join(", ")
}

/// The sections that have a key `name`.
pub(super) fn sections_with(name: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.name() == name)
        .map(KeyDef::section)
        .collect()
}

/// The configuration as TOML; with `origins`, a comment after each value that a file or a flag
/// set names where.
pub(super) fn render(config: &Config, origins: Option<&Origins>) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut section = "";
    for key in KEYS {
        if key.section() != section {
            if !lines.is_empty() {
                lines.push(String::new());
            }
            section = key.section();
            lines.push(format!("[{section}]"));
        }
        let note = origins
            .and_then(|o| o.note(key.path))
            .map(|n| format!("  # {n}"))
            .unwrap_or_default();
        let name = key.name();
        match (key.get)(config) {
            None => lines.push(format!("# {name} is not set")),
            Some(Literal::Scalar(value)) => lines.push(format!("{name} = {value}{note}")),
            Some(Literal::List(items)) if items.is_empty() => {
                lines.push(format!("{name} = []{note}"));
            }
            Some(Literal::List(items)) => {
                lines.push(format!("{name} = [{note}"));
                lines.extend(items.iter().map(|item| format!("    {item},")));
                lines.push("]".to_owned());
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// See [`Config::changes_needing_restart`].
pub(super) fn changes_needing_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.reload == Reload::Restart && (k.get)(old) != (k.get)(new))
        .map(|k| k.path)
        .collect()
}

/// A type a key can have.
trait TomlValue: Sized {
    /// Reads it from TOML.
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad>;
    /// Writes it as TOML; `None` when unset.
    fn write(&self) -> Option<Literal>;
}

/// A refusal of the whole value.
fn bad(value: &Spanned<DeValue<'_>>, message: String) -> Bad {
    Bad {
        span: value.span(),
        message,
    }
}

/// A string as a TOML string literal.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// What a value is, for messages: "the string \"5s\"", "a list".
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {}", quote(s)),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(x) => format!("the number {x}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Array(_) => "a list".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// A non-negative integer.
fn integer(value: &Spanned<DeValue<'_>>) -> Result<u64, Bad> {
    let DeValue::Integer(i) = value.get_ref() else {
        return Err(bad(
            value,
            format!(
                "must be a whole number without quotes, not {}",
                describe(value.get_ref())
            ),
        ));
    };
    u64::from_str_radix(i.as_str(), i.radix()).map_err(|_| {
        let message = if i.as_str().starts_with('-') {
            format!("must not be negative, not {i}")
        } else {
            format!("must be at most {}, not {i}", u64::MAX)
        };
        bad(value, message)
    })
}

/// A non-negative integer that fits `T`, whose largest value is `max`.
fn narrow<T: TryFrom<u64> + std::fmt::Display>(
    value: &Spanned<DeValue<'_>>,
    max: T,
) -> Result<T, Bad> {
    let n = integer(value)?;
    T::try_from(n).map_err(|_| bad(value, format!("must be at most {max}, not {n}")))
}

/// A string.
fn string<'a>(value: &'a Spanned<DeValue<'_>>, example: &str) -> Result<&'a str, Bad> {
    match value.get_ref() {
        DeValue::String(s) => Ok(s),
        other => Err(bad(
            value,
            format!(
                "must be a string in quotes, e.g. {example}, not {}",
                describe(other)
            ),
        )),
    }
}

/// One of the names of a [`ValueEnum`].
fn choice<T: ValueEnum>(value: &Spanned<DeValue<'_>>) -> Result<T, Bad> {
    let names: Vec<String> = T::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .map(|p| quote(p.get_name()))
        .collect();
    let refuse = |what: String| {
        bad(
            value,
            format!("must be one of {}, not {what}", names.join(", ")),
        )
    };
    match value.get_ref() {
        DeValue::String(s) => T::from_str(s, false).map_err(|_| refuse(quote(s))),
        other => Err(refuse(describe(other))),
    }
}

/// The name of a [`ValueEnum`] variant, quoted.
fn choice_name<T: ValueEnum>(v: &T) -> Option<Literal> {
    v.to_possible_value()
        .map(|p| Literal::Scalar(quote(p.get_name())))
}

/// A list of strings, each parsed into a `T`; `example` shows a list, `item` one string.
fn string_list<T: std::str::FromStr>(
    value: &Spanned<DeValue<'_>>,
    example: &str,
    item: &str,
) -> Result<Vec<T>, Bad>
where
    T::Err: std::fmt::Display,
{
    let DeValue::Array(items) = value.get_ref() else {
        return Err(bad(
            value,
            format!(
                "must be a list in brackets, e.g. {example}, not {}",
                describe(value.get_ref())
            ),
        ));
    };
    items
        .iter()
        .map(|one| {
            string(one, item)?
                .parse()
                .map_err(|e| bad(one, format!("has a bad item: {e}")))
        })
        .collect()
}

/// A list written as quoted strings.
fn quoted_list<T: std::fmt::Display>(items: &[T]) -> Option<Literal> {
    Some(Literal::List(
        items.iter().map(|i| quote(&i.to_string())).collect(),
    ))
}

impl TomlValue for u64 {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        integer(value)
    }
    fn write(&self) -> Option<Literal> {
        Some(Literal::Scalar(self.to_string()))
    }
}

impl TomlValue for u32 {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        narrow(value, u32::MAX)
    }
    fn write(&self) -> Option<Literal> {
        Some(Literal::Scalar(self.to_string()))
    }
}

impl TomlValue for usize {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        narrow(value, usize::MAX)
    }
    fn write(&self) -> Option<Literal> {
        Some(Literal::Scalar(self.to_string()))
    }
}

impl TomlValue for Option<u64> {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        integer(value).map(Some)
    }
    fn write(&self) -> Option<Literal> {
        self.as_ref().and_then(TomlValue::write)
    }
}

impl TomlValue for bool {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        match value.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            other => Err(bad(
                value,
                format!(
                    "must be true or false without quotes, not {}",
                    describe(other)
                ),
            )),
        }
    }
    fn write(&self) -> Option<Literal> {
        Some(Literal::Scalar(self.to_string()))
    }
}

impl TomlValue for String {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        string(value, "\"info\"").map(str::to_owned)
    }
    fn write(&self) -> Option<Literal> {
        Some(Literal::Scalar(quote(self)))
    }
}

impl TomlValue for Option<SocketAddr> {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        let s = string(value, "\"127.0.0.1:9863\" or \"off\"")?;
        s.parse::<AddressOrOff>()
            .map(|a| a.0)
            .map_err(|e| bad(value, format!("must be an address or \"off\": {e}")))
    }
    fn write(&self) -> Option<Literal> {
        Some(Literal::Scalar(quote(&AddressOrOff(*self).to_string())))
    }
}

impl TomlValue for Vec<TransportUrl> {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        string_list(
            value,
            "[\"tcp://127.0.0.1:3863\"]",
            "\"tcp://127.0.0.1:3863\"",
        )
    }
    fn write(&self) -> Option<Literal> {
        quoted_list(self)
    }
}

impl TomlValue for Vec<crate::core::AllowedPeer> {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        string_list(value, "[\"0x2a@10.0.0.0/24\"]", "\"0x2a@10.0.0.7\"")
    }
    fn write(&self) -> Option<Literal> {
        quoted_list(self)
    }
}

impl TomlValue for Vec<crate::core::access::AccessRule> {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        string_list(
            value,
            "[\"billing* register 10.1.0.0/16\", \"* resolve any\"]",
            "\"* resolve any\"",
        )
    }
    fn write(&self) -> Option<Literal> {
        quoted_list(self)
    }
}

impl TomlValue for Vec<crate::core::identity::NamePattern> {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        string_list(
            value,
            "[\"*.pe.example.net\", \"pr7.example.net\"]",
            "\"pe7.example.net\"",
        )
    }
    fn write(&self) -> Option<Literal> {
        quoted_list(self)
    }
}

impl TomlValue for DriverChoice {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        choice(value)
    }
    fn write(&self) -> Option<Literal> {
        choice_name(self)
    }
}

impl TomlValue for LogFormat {
    fn read(value: &Spanned<DeValue<'_>>) -> Result<Self, Bad> {
        choice(value)
    }
    fn write(&self) -> Option<Literal> {
        choice_name(self)
    }
}
