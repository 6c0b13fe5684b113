//! Which files a run formats: every `*.nix` file below the directories it is given, and each file
//! it is named explicitly; sorted, so that runs and their output are the same on every machine.

use std::path::{Path, PathBuf};

/// Why a path given on the command line gives no files.
#[derive(Debug)]
pub struct NotFound {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

/// The Nix files of `paths`: a file is taken as it is named, a directory is searched. The search
/// does not enter hidden directories (`.git`), does not follow symbolic links (`result` points into
/// the Nix store) and skips cache directories (a CACHEDIR.TAG in them: cargo's `target/`), so
/// `nix-format .` in a work tree formats the project's files and nothing a build left there.
pub fn nix_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, NotFound> {
    let mut found = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|error| NotFound { path: path.clone(), error })?;
        if meta.is_dir() {
            search(path, &mut found).map_err(|(path, error)| NotFound { path, error })?;
        } else {
            found.push(path.clone());
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn search(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), (PathBuf, std::io::Error)> {
    if dir.join("CACHEDIR.TAG").exists() {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_owned(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_owned(), e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = shown(&dir.join(&name));
        let kind = entry.file_type().map_err(|e| (path.clone(), e))?;
        if kind.is_dir() {
            search(&path, found)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "nix") {
            found.push(path);
        }
    }
    Ok(())
}

/// `./a/b.nix` as `a/b.nix`: the names a user (and `git ls-files`) would write.
fn shown(path: &Path) -> PathBuf {
    path.strip_prefix(".").map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}
