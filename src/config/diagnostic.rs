//! Problems found while reading a configuration, each tied to where it is in the user's file,
//! and rendered by the CLI with the offending line.

use crate::origin::Origin;
use camino::Utf8PathBuf;
use std::fmt;

/// One problem with a configuration: where, which option, what is wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub origin: Origin,
    pub option: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(origin: Origin, message: impl Into<String>) -> Self {
        Diagnostic { origin, option: None, message: message.into(), hint: None }
    }

    pub fn option(mut self, path: impl Into<String>) -> Self {
        self.option = Some(path.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::Default => {}
            origin => write!(f, "{origin}: ")?,
        }
        if let Some(option) = &self.option {
            write!(f, "{option}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Problems in the file's contents; every one is reported.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    /// `nix eval` failed; its own message is kept whole.
    #[error("evaluating {file} with `{command}` failed:\n{stderr}")]
    Eval { file: Utf8PathBuf, command: String, stderr: String },
    #[error("cannot evaluate {file}: {message}")]
    NixUnavailable { file: Utf8PathBuf, message: String },
}

impl ConfigError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(d) => d,
            _ => &[],
        }
    }
}

impl From<Diagnostic> for ConfigError {
    fn from(d: Diagnostic) -> Self {
        ConfigError::Invalid(vec![d])
    }
}
