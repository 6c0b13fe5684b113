//! Where an option's value came from: its default, or a place in a user's file.
//! Every diagnostic carries one of these so the CLI can point at the offending line.

use camino::{Utf8Path, Utf8PathBuf};
use std::fmt;

/// A position in a source file, 1-based line and column (as editors count).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: Utf8PathBuf,
    pub line: u32,
    pub column: u32,
}

impl Location {
    pub fn new(file: impl Into<Utf8PathBuf>, line: u32, column: u32) -> Self {
        Location { file: file.into(), line, column }
    }

    /// The location of byte `offset` in `text`, which was read from `file`.
    pub fn from_offset(file: &Utf8Path, text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() as u32 + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() as u32 + 1;
        Location { file: file.to_owned(), line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Origin {
    /// The option's default from the schema.
    Default,
    /// A definition at a known place in a file.
    Defined(Location),
    /// A file that gives no positions (JSON written by the Nix side).
    File { file: Utf8PathBuf },
    /// Not set here: the value of another option (a fleet host's `customInstaller.wipe` is the
    /// top-level `customInstaller.wipe`), which came from `from`.
    Inherited { option: String, from: Box<Origin> },
}

impl Origin {
    /// Where to point at: the definition, or for an inherited value the definition it came from.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Origin::Defined(location) => Some(location),
            Origin::Inherited { from, .. } => from.location(),
            _ => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Defined(location) => location.fmt(f),
            Origin::File { file } => file.fmt(f),
            Origin::Inherited { option, from } => match from.as_ref() {
                Origin::Default => write!(f, "{option}'s default"),
                Origin::File { file } => write!(f, "{option} in {file}"),
                from => write!(f, "{option} at {from}"),
            },
        }
    }
}

/// A file name as messages show it: relative to the working directory when the file is below it
/// (Nix reports absolute paths; users type relative ones), else as it is.
pub fn shown_path(path: &Utf8Path) -> Utf8PathBuf {
    let cwd = std::env::current_dir().ok().and_then(|d| Utf8PathBuf::from_path_buf(d).ok());
    match cwd.as_deref().and_then(|cwd| path.strip_prefix(cwd).ok()) {
        Some(rest) if path.is_absolute() && !rest.as_str().is_empty() => rest.to_owned(),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_columns() {
        let text = "a = 1;\n  b = 2;\n";
        let file = Utf8Path::new("f.nix");
        assert_eq!(Location::from_offset(file, text, 0), Location::new("f.nix", 1, 1));
        assert_eq!(Location::from_offset(file, text, 9), Location::new("f.nix", 2, 3));
        assert_eq!(Location::from_offset(file, text, 999).line, 3);
    }
}
