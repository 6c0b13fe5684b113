//! The error every subcommand returns; the CLI renders it once, with the whole chain.

use crate::command::CommandError;
use crate::config::ConfigError;
use camino::Utf8PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{path}: {source}")]
    Io {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem stated in full by the module that found it.
    #[error("{0}")]
    Message(String),
}

impl Error {
    pub fn io(path: impl Into<Utf8PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
