//! The last lines of the installer's console, for the `failed` report: standard output (the
//! console under init) goes through a pipe to a thread that passes every byte on to the console
//! and keeps the last lines. What the programs the installer runs print is in it too, since they
//! inherit the pipe as their standard output.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Standard output, captured until [`ConsoleTail::finish`].
pub struct ConsoleTail {
    /// The console: the original standard output, put back by `finish`.
    console: OwnedFd,
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
}

fn os_error(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl ConsoleTail {
    /// Starts passing standard output through, keeping the last `keep` lines.
    pub fn capture(keep: usize) -> std::io::Result<ConsoleTail> {
        let _ = std::io::stdout().flush();
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors this function then owns.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(os_error("pipe2"));
        }
        // SAFETY: both are new descriptors nothing else owns.
        let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: dup of standard output into a new descriptor (close-on-exec) we own.
        let console = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
        if console < 0 {
            return Err(os_error("duplicating standard output"));
        }
        // SAFETY: a new descriptor we own.
        let console = unsafe { OwnedFd::from_raw_fd(console) };
        let mut to_console = File::from(console.try_clone()?);
        // SAFETY: makes descriptor 1 the pipe's write end (dup2 leaves it inheritable, so the
        // programs the installer runs write into the pipe too); the write end's own descriptor
        // is closed when `write_end` drops below, and descriptor 1 keeps the pipe open.
        if unsafe { libc::dup2(write_end.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
            return Err(os_error("redirecting standard output"));
        }
        drop(write_end);
        let lines: Arc<Mutex<VecDeque<String>>> = Arc::new(Mutex::new(VecDeque::new()));
        let kept = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut from_pipe = File::from(read_end);
            let mut partial: Vec<u8> = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = match from_pipe.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                // The console first: nothing is held back from it.
                let _ = to_console.write_all(&buffer[..n]);
                partial.extend_from_slice(&buffer[..n]);
                let mut lines = kept.lock().unwrap_or_else(PoisonError::into_inner);
                while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=end).collect();
                    lines.push_back(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_string());
                    while lines.len() > keep {
                        lines.pop_front();
                    }
                }
            }
            if !partial.is_empty() {
                let mut lines = kept.lock().unwrap_or_else(PoisonError::into_inner);
                lines.push_back(String::from_utf8_lossy(&partial).into_owned());
                while lines.len() > keep {
                    lines.pop_front();
                }
            }
        });
        Ok(ConsoleTail { console, lines, reader: Some(reader) })
    }

    /// Puts standard output back on the console and returns the last lines, all of them: the
    /// pipe is drained to its end first (every program the installer ran has exited by then).
    pub fn finish(mut self) -> Vec<String> {
        self.restore();
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    fn restore(&mut self) {
        let _ = std::io::stdout().flush();
        // SAFETY: descriptor 1 becomes the console again; that closes this process's write end
        // of the pipe, so the reader sees the end of it once no program holds it open.
        unsafe { libc::dup2(self.console.as_raw_fd(), libc::STDOUT_FILENO) };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for ConsoleTail {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.restore();
        }
    }
}
