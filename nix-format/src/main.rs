//! nix-format: formats Nix files in the style of alejandra 3.1.0 (the library, pinned by
//! Cargo.lock), or with --check says which are not; `nix fmt` and checks.<system>.formatting run it.

mod files;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: nix-format [--check] [PATH...]

Formats the Nix files named, and every *.nix file below the directories named (not entering
hidden or cache directories nor following symbolic links), in alejandra 3.1.0's style. With no
PATH, the current directory.

  --check   write nothing; list the files checked on stdout and those not formatted on stderr

Exit status: 0 when every file is (now) formatted, 1 on an error (a file that cannot be read or
written, a syntax error, a bad argument), 2 with --check when a file is not formatted.";

/// What the command line asks for.
struct Args {
    check: bool,
    paths: Vec<PathBuf>,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut check = false;
    let mut paths = Vec::new();
    let mut options_end = false;
    for arg in args {
        match arg.as_str() {
            _ if options_end => paths.push(PathBuf::from(arg)),
            "--" => options_end = true,
            "--check" | "-c" => check = true,
            "--help" | "-h" => return Ok(None),
            option if option.starts_with('-') && option != "-" => return Err(format!("unknown option {option}")),
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if paths.is_empty() {
        paths.push(PathBuf::from("."));
    }
    Ok(Some(Args { check, paths }))
}

/// What became of one file.
enum Outcome {
    Formatted,
    /// --check: the formatter would change it.
    NotFormatted,
    /// Rewritten in the formatter's style.
    Rewritten,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("nix-format: {message}\n\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    let files = match files::nix_files(&args.paths) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("nix-format: {error}");
            return ExitCode::from(1);
        }
    };
    let (mut errors, mut not_formatted, mut rewritten) = (0, 0, 0);
    for file in &files {
        match format_file(file, args.check) {
            Ok(Outcome::Formatted) => {}
            Ok(Outcome::NotFormatted) => {
                not_formatted += 1;
                eprintln!("{}: not formatted (alejandra 3.1.0's style): `nix fmt` formats it", file.display());
            }
            Ok(Outcome::Rewritten) => {
                rewritten += 1;
                eprintln!("{}: formatted", file.display());
            }
            Err(message) => {
                errors += 1;
                eprintln!("{message}");
            }
        }
        if args.check {
            println!("{}", file.display());
        }
    }
    let count = files.len();
    if args.check {
        eprintln!("nix-format: {count} Nix files checked: {not_formatted} not formatted, {errors} with errors");
    } else {
        eprintln!("nix-format: {count} Nix files: {rewritten} formatted now, {errors} with errors");
    }
    if errors > 0 {
        ExitCode::from(1)
    } else if not_formatted > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Formats `file` (or, with `check`, compares it with its formatted text); an error is the whole
/// message: the file, and for a syntax error its line and column.
fn format_file(file: &Path, check: bool) -> Result<Outcome, String> {
    let before = std::fs::read_to_string(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let (status, after) = alejandra::format::in_memory(file.display().to_string(), before.clone());
    match status {
        alejandra::format::Status::Error(message) => {
            let (line, column) = syntax_error_position(&before);
            Err(format!("{}:{line}:{column}: not valid Nix (as alejandra 3.1.0 parses it): {message}", file.display()))
        }
        alejandra::format::Status::Changed(false) => Ok(Outcome::Formatted),
        alejandra::format::Status::Changed(true) if check => Ok(Outcome::NotFormatted),
        alejandra::format::Status::Changed(true) => {
            std::fs::write(file, after).map_err(|e| format!("{}: cannot write: {e}", file.display()))?;
            Ok(Outcome::Rewritten)
        }
    }
}

/// Line and column (from 1) of the first syntax error of `text` as rnix, alejandra's parser, finds
/// it; the end of the text for an error at the end of the file.
fn syntax_error_position(text: &str) -> (usize, usize) {
    use rnix::parser::ParseError;
    let offset = match rnix::parse(text).errors().first() {
        Some(
            ParseError::Unexpected(range)
            | ParseError::UnexpectedExtra(range)
            | ParseError::UnexpectedWanted(_, range, _)
            | ParseError::UnexpectedDoubleBind(range)
            | ParseError::DuplicatedArgs(range, _),
        ) => usize::from(range.start()),
        _ => text.len(),
    };
    line_and_column(text, offset)
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, column)
}

