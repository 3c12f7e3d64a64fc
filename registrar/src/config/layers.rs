//! Layering: the embedded profile, then the configuration file, then the flags, each setting only
//! the keys it names, and a record of where every key was set last (for error messages and for
//! `--check-config`).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use rserpool_protocol::url::TransportUrl;
use toml::de::{DeTable, DeValue};

use super::keys::{self, KEYS};
use super::{
    AnnounceConfig, AsapConfig, Config, ConfigError, CspConfig, DriverChoice, EnrpConfig, IoConfig,
    Layers, LimitsConfig, LogConfig, LogFormat, MetricsConfig, Origin, Overrides, Problem,
    RegistrarConfig, ResolutionConfig, Source, TimerConfig, profile_text, validate,
};

/// Where each key was set last, and each item of a list key.
#[derive(Debug)]
pub(super) struct Origins {
    /// The profile underneath everything.
    profile: &'static str,
    /// By key path.
    keys: HashMap<&'static str, Origin>,
    /// By list key path, one per item.
    items: HashMap<&'static str, Vec<Origin>>,
}

impl Origins {
    /// Where `path` was set; a key nobody set is the profile's.
    pub fn of(&self, path: &str) -> Origin {
        self.keys.get(path).cloned().unwrap_or(Origin {
            source: Source::Profile(self.profile),
            line: None,
        })
    }

    /// Where item `index` of the list `path` was set.
    pub fn item(&self, path: &str, index: usize) -> Origin {
        self.items
            .get(path)
            .and_then(|items| items.get(index))
            .cloned()
            .unwrap_or_else(|| self.of(path))
    }

    /// For `--check-config`: where `path` was set, unless the profile set it.
    pub fn note(&self, path: &str) -> Option<String> {
        let origin = self.keys.get(path)?;
        match origin.source {
            Source::Profile(_) => None,
            Source::File(_) | Source::Flag(_) => Some(format!("from {origin}")),
        }
    }

    /// The flags that set something, sorted, for `--check-config`'s header.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut flags: Vec<&'static str> = self
            .keys
            .values()
            .filter_map(|origin| match origin.source {
                Source::Flag(flag) => Some(flag),
                Source::Profile(_) | Source::File(_) => None,
            })
            .collect();
        flags.sort_unstable();
        flags.dedup();
        flags
    }

    /// Records that `origin` set `path` and, for a list, every item.
    fn set(&mut self, path: &'static str, origin: Origin, items: Option<Vec<Origin>>) {
        self.keys.insert(path, origin);
        match items {
            Some(items) => self.items.insert(path, items),
            None => self.items.remove(path),
        };
    }
}

/// The configuration of `layers`, with the origin of every key.
pub(super) fn load(layers: &Layers) -> Result<(Config, Origins), ConfigError> {
    match &layers.file {
        None => build(&layers.profile, None, &layers.overrides),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Unreadable {
                path: path.clone(),
                error,
            })?;
            build(&layers.profile, Some((path, &text)), &layers.overrides)
        }
    }
}

/// See [`Config::from_layers`]; also returns the origin of every key.
pub(super) fn build(
    profile_name: &str,
    file: Option<(&Path, &str)>,
    overrides: &Overrides,
) -> Result<(Config, Origins), ConfigError> {
    let (profile, text) =
        profile_text(profile_name).ok_or_else(|| ConfigError::UnknownProfile {
            name: profile_name.to_owned(),
        })?;
    let mut config = blank();
    let mut origins = Origins {
        profile,
        keys: HashMap::new(),
        items: HashMap::new(),
    };
    let problems = apply_toml(&mut config, &mut origins, &Source::Profile(profile), text);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let missing: Vec<Problem> = KEYS
        .iter()
        .filter(|k| !origins.keys.contains_key(k.path) && (k.get)(&config).is_some())
        .map(|k| Problem {
            origin: origins.of(k.path),
            message: format!(
                "the embedded profile does not set `{}`; every profile must set every key (a bug: \
                 please report it, and set the key in a --config file meanwhile)",
                k.path
            ),
        })
        .collect();
    if !missing.is_empty() {
        return Err(ConfigError::Invalid(missing));
    }
    if let Some((path, text)) = file {
        let source = Source::File(path.to_owned());
        let problems = apply_toml(&mut config, &mut origins, &source, text);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
    }
    apply_overrides(&mut config, &mut origins, overrides);
    let problems = validate::check(&config, &origins);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok((config, origins))
}

/// The starting point under the profile, which sets every key but the optional ones.
fn blank() -> Config {
    Config {
        registrar: RegistrarConfig {
            id: None,
            workers: 0,
            driver: DriverChoice::Auto,
            pin_workers: false,
            busy_poll_us: 0,
        },
        asap: AsapConfig {
            listen: Vec::new(),
            skip_unavailable: false,
        },
        enrp: EnrpConfig {
            listen: Vec::new(),
            skip_unavailable: false,
            peers: Vec::new(),
            presence_targets: Vec::new(),
            heartbeat_interval_ms: 0,
            max_time_last_heard_ms: 0,
            max_time_no_response_ms: 0,
            mentor_discovery_timeout_ms: 0,
            takeover_expiry_ms: 0,
            reconnect_interval_ms: 0,
            max_pes_per_table_response: 0,
            takeover_suggestion: false,
            allowed_peers: Vec::new(),
        },
        announce: AnnounceConfig {
            targets: Vec::new(),
            interval_ms: 0,
            ttl: 0,
        },
        timers: TimerConfig {
            keep_alive_interval_ms: 0,
            keep_alive_timeout_ms: 0,
            max_bad_pe_reports: 0,
        },
        resolution: ResolutionConfig {
            default_items: 0,
            max_items: 0,
        },
        limits: LimitsConfig {
            max_pools: 0,
            max_pes_per_pool: 0,
            max_pes_per_association: 0,
            max_pool_handle_len: 0,
            max_message_size: 0,
            max_connections: 0,
            max_connections_per_source: 0,
            max_buffered_bytes_per_connection: 0,
            max_requests_per_second: 0,
            max_registrations_per_second_per_identity: 0,
            idle_timeout_ms: 0,
        },
        subscriptions: super::SubscriptionsConfig {
            max_per_association: 0,
            max_total: 0,
            min_push_interval_ms: 0,
        },
        io: IoConfig {
            ring_entries: 0,
            buffer_size: 0,
            buffer_count: 0,
            socket_buffer_bytes: 0,
            listen_backlog: 0,
            max_batch: 0,
        },
        metrics: MetricsConfig {
            address: None,
            bearer_token_file: String::new(),
        },
        log: LogConfig {
            level: String::new(),
            format: LogFormat::Text,
        },
        csp: CspConfig {
            monitor: None,
            interval_ms: 0,
        },
        access: super::AccessConfig { rules: Vec::new() },
        tls: super::TlsConfig {
            certificate: String::new(),
            private_key: String::new(),
            ca: String::new(),
            allowed_identities: Vec::new(),
        },
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.bytes().filter(|&b| b == b'\n').count() + 1
}

/// Reads one TOML document over `config`: every key it names replaces the value below. Returns
/// every problem found, by line.
fn apply_toml(
    config: &mut Config,
    origins: &mut Origins,
    source: &Source,
    text: &str,
) -> Vec<Problem> {
    let at = |span: Range<usize>| Origin {
        source: source.clone(),
        line: Some(line_of(text, span.start)),
    };
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(e) => {
            return vec![Problem {
                origin: at(e.span().unwrap_or(0..0)),
                message: format!("not valid TOML: {}", e.message()),
            }];
        }
    };
    let mut problems = Vec::new();
    let sections = keys::sections();
    for (section, body) in document.get_ref() {
        let section_name: &str = section.get_ref();
        let DeValue::Table(table) = body.get_ref() else {
            problems.push(Problem {
                origin: at(section.span()),
                message: stray_key(section_name, &sections),
            });
            continue;
        };
        if !sections.contains(&section_name) {
            problems.push(Problem {
                origin: at(section.span()),
                message: format!(
                    "unknown section `[{section_name}]` (known sections: {})",
                    sections.join(", ")
                ),
            });
            continue;
        }
        for (key, value) in table {
            let Some(def) = keys::find(section_name, key.get_ref()) else {
                problems.push(Problem {
                    origin: at(key.span()),
                    message: unknown_key(section_name, key.get_ref()),
                });
                continue;
            };
            match (def.set)(config, value) {
                Ok(()) => {
                    let items = match value.get_ref() {
                        DeValue::Array(items) => Some(items.iter().map(|i| at(i.span())).collect()),
                        _ => None,
                    };
                    origins.set(def.path, at(key.span()), items);
                }
                Err(bad) => problems.push(Problem {
                    origin: at(bad.span),
                    message: format!("`{}` {}", def.path, bad.message),
                }),
            }
        }
    }
    problems.sort_by_key(|p| p.origin.line);
    problems
}

/// The sections that have a key `name`, as "`[asap]` or `[enrp]`"; `None` if none has.
fn home_of(name: &str) -> Option<String> {
    let homes: Vec<String> = keys::sections_with(name)
        .iter()
        .map(|s| format!("`[{s}]`"))
        .collect();
    (!homes.is_empty()).then(|| homes.join(" or "))
}

/// The message for a key outside any section.
fn stray_key(name: &str, sections: &[&str]) -> String {
    match home_of(name) {
        Some(home) => format!("`{name}` is outside any section; it belongs under {home}"),
        None => format!(
            "unknown key `{name}` outside any section (known sections: {})",
            sections.join(", ")
        ),
    }
}

/// The message for a key its section does not have.
fn unknown_key(section: &str, name: &str) -> String {
    let elsewhere = home_of(name)
        .map(|home| format!("; `{name}` belongs under {home}"))
        .unwrap_or_default();
    format!(
        "unknown key `{section}.{name}`{elsewhere} (known keys in [{section}]: {})",
        keys::names_in(section)
    )
}

/// The origin of a value from flag `name`.
fn flag(name: &'static str) -> Origin {
    Origin {
        source: Source::Flag(name),
        line: None,
    }
}

/// Replaces the list at `path` with `given`, if the flag `name` gave one; says whether it did.
fn replace_list(
    origins: &mut Origins,
    (path, name): (&'static str, &'static str),
    target: &mut Vec<TransportUrl>,
    given: Option<&Vec<TransportUrl>>,
) -> bool {
    let Some(urls) = given else {
        return false;
    };
    target.clone_from(urls);
    origins.set(path, flag(name), Some(vec![flag(name); urls.len()]));
    true
}

/// Applies the flags.
fn apply_overrides(config: &mut Config, origins: &mut Origins, overrides: &Overrides) {
    let asap = overrides.asap.as_ref();
    if replace_list(
        origins,
        ("asap.listen", "--asap"),
        &mut config.asap.listen,
        asap,
    ) {
        config.asap.skip_unavailable = false;
        origins.set("asap.skip_unavailable", flag("--asap"), None);
    }
    let enrp = overrides.enrp.as_ref();
    if replace_list(
        origins,
        ("enrp.listen", "--enrp"),
        &mut config.enrp.listen,
        enrp,
    ) {
        config.enrp.skip_unavailable = false;
        origins.set("enrp.skip_unavailable", flag("--enrp"), None);
    }
    let peers = overrides.peers.as_ref();
    replace_list(
        origins,
        ("enrp.peers", "--peer"),
        &mut config.enrp.peers,
        peers,
    );
    let announce = overrides.announce.as_ref();
    let targets = &mut config.announce.targets;
    replace_list(
        origins,
        ("announce.targets", "--announce"),
        targets,
        announce,
    );
    if let Some(id) = overrides.id {
        config.registrar.id = Some(id);
        origins.set("registrar.id", flag("--id"), None);
    }
    if let Some(workers) = overrides.workers {
        config.registrar.workers = workers;
        origins.set("registrar.workers", flag("--workers"), None);
    }
    if let Some(address) = overrides.metrics {
        config.metrics.address = address.0;
        origins.set("metrics.address", flag("--metrics"), None);
    }
    if let Some(driver) = overrides.driver {
        config.registrar.driver = driver;
        origins.set("registrar.driver", flag("--driver"), None);
    }
    if let Some(level) = &overrides.log_level {
        config.log.level.clone_from(level);
        origins.set("log.level", flag("--log-level"), None);
    }
}
