//! The one way this tool runs another program: found on PATH with `which`, stdin closed,
//! stdout and stderr captured, and a failure that keeps the command line, status and stderr.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// A program and its arguments, ready to run.
#[derive(Debug, Clone)]
pub struct Command {
    program: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    /// Killed, and an error, after this long.
    timeout: Option<std::time::Duration>,
}

/// What a finished program printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{program}` was not found on PATH{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    NotFound { program: String, hint: Option<String> },
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}){}", if stderr.trim().is_empty() { String::new() } else { format!(":\n{}", stderr.trim_end()) })]
    Failed { command: String, status: String, stderr: String },
    #[error("`{command}` did not finish within {} s and was killed", seconds)]
    TimedOut { command: String, seconds: u64 },
}

impl Command {
    pub fn new(program: impl Into<String>) -> Self {
        Command { program: program.into(), args: Vec::new(), env: Vec::new(), stdin: None, timeout: None }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = A>, A: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Feeds `bytes` to the program's standard input (otherwise it is closed).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Kills the program and fails if it has not finished after `limit`.
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Finds the program: a path is taken as it is, a bare name is looked up on PATH.
    pub fn resolve(&self) -> Result<PathBuf, CommandError> {
        if self.program.contains('/') {
            return Ok(PathBuf::from(&self.program));
        }
        which::which(&self.program).map_err(|_| CommandError::NotFound { program: self.program.clone(), hint: None })
    }

    /// Runs it to completion; a non-zero exit is an error holding stderr.
    pub fn run(&self) -> Result<Output, CommandError> {
        let path = self.resolve()?;
        let mut expression = duct::cmd(path, &self.args).stdout_capture().stderr_capture().unchecked();
        expression = match &self.stdin {
            Some(bytes) => expression.stdin_bytes(bytes.clone()),
            None => expression.stdin_null(),
        };
        for (k, v) in &self.env {
            expression = expression.env(k, v);
        }
        let spawn = |source| CommandError::Spawn { command: self.to_string(), source };
        let output = match self.timeout {
            None => expression.run().map_err(spawn)?,
            Some(limit) => {
                let handle = expression.start().map_err(spawn)?;
                match handle.wait_timeout(limit).map_err(spawn)? {
                    Some(output) => output.clone(),
                    None => {
                        let _ = handle.kill();
                        return Err(CommandError::TimedOut { command: self.to_string(), seconds: limit.as_secs() });
                    }
                }
            }
        };
        if output.status.success() {
            Ok(Output { stdout: output.stdout, stderr: output.stderr })
        } else {
            Err(CommandError::Failed {
                command: self.to_string(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }
}

impl fmt::Display for Command {
    /// The command line as a shell would take it, for messages and dry runs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", shell_quote(&arg.to_string_lossy()))?;
        }
        Ok(())
    }
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_keeps_command_status_and_stderr() {
        let err = Command::new("sh").args(["-c", "echo oops >&2; exit 3"]).run().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`sh -c 'echo oops >&2; exit 3'` failed"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.ends_with("oops"), "{text}");
    }

    #[test]
    fn a_program_past_its_time_is_killed() {
        let start = std::time::Instant::now();
        let err = Command::new("sleep").arg("30").timeout(std::time::Duration::from_millis(300)).run().unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }) && start.elapsed().as_secs() < 5, "{err}");
        assert_eq!(Command::new("echo").arg("hi").timeout(std::time::Duration::from_secs(5)).run().expect("echo").stdout_text(), "hi\n");
    }

    #[test]
    fn success_captures_stdout_and_missing_programs_are_named() {
        let out = Command::new("echo").arg("hi").run().expect("echo runs");
        assert_eq!(out.stdout_text(), "hi\n");
        let err = Command::new("no-such-program-xyz").run().unwrap_err();
        assert!(matches!(err, CommandError::NotFound { .. }), "{err}");
    }
}
