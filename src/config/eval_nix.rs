//! Reads option definitions by evaluating a Nix file with `nix eval --json`.
//! (Being written: see issue 2.)

use super::{ConfigError, Settings};
use camino::Utf8Path;

pub fn nix_available() -> bool {
    which::which("nix").is_ok()
}

pub fn read(file: &Utf8Path) -> Result<Settings, ConfigError> {
    Err(ConfigError::NixUnavailable { file: file.to_owned(), message: "evaluation is not built yet".into() })
}
