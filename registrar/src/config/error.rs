//! Configuration errors and where a value came from: a profile's or a file's line, or a flag.

use std::fmt;
use std::path::PathBuf;

use super::profile_names;

/// The layer that set a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An embedded tuning profile, by name.
    Profile(&'static str),
    /// A configuration file, by the path it was given as.
    File(PathBuf),
    /// A command-line flag, e.g. `--asap`.
    Flag(&'static str),
}

impl Source {
    /// The order of the layers: profile, file, flags.
    pub(super) fn layer(&self) -> u8 {
        match self {
            Self::Profile(_) => 0,
            Self::File(_) => 1,
            Self::Flag(_) => 2,
        }
    }
}

/// Where a value was set: its layer and, in TOML, the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The layer.
    pub source: Source,
    /// The line in the profile or file; `None` for a flag.
    pub line: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Profile(name) => write!(f, "profile {name}")?,
            Source::File(path) => write!(f, "{}", path.display())?,
            Source::Flag(flag) => f.write_str(flag)?,
        }
        match self.line {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// One thing wrong with the configuration, and where the offending value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the value was set.
    pub origin: Origin,
    /// What is wrong and what to do, naming the key.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Why no configuration could be built.
#[derive(Debug)]
pub enum ConfigError {
    /// `--profile` names no embedded profile.
    UnknownProfile {
        /// The name given.
        name: String,
    },
    /// The configuration file could not be read.
    Unreadable {
        /// The path given.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// Keys or values were refused: every problem found, in the order of the layers and lines.
    Invalid(Vec<Problem>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownProfile { name } => write!(
                f,
                "--profile: unknown profile `{name}` (known profiles: {})",
                profile_names().join(", ")
            ),
            Self::Unreadable { path, error } => write!(
                f,
                "cannot read the configuration file `{}`: {error}; check the path given to --config",
                path.display()
            ),
            Self::Invalid(problems) => {
                for (i, problem) in problems.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    problem.fmt(f)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreadable { error, .. } => Some(error),
            _ => None,
        }
    }
}
