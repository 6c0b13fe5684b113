//! Reads option definitions from a Nix file's syntax tree, without evaluating it.
//! (Being written: see issue 2.)

use super::{ConfigError, Settings};
use camino::Utf8Path;

pub fn read(file: &Utf8Path) -> Result<Settings, ConfigError> {
    Err(ConfigError::NixUnavailable { file: file.to_owned(), message: "static reading is not built yet".into() })
}
