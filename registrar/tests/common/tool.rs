//! A child process whose output lines the test waits for: RSPLIB's tools and tcpdump in the
//! user-mode Linux tests (kernel_sctp.rs, sctp_udp_interop.rs).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

/// How long a tool is waited for: a line, an exit.
const WAIT: Duration = Duration::from_secs(10);

/// A tool (RSPLIB's, tcpdump) as a child process, its output lines (stdout and stderr)
/// arriving on a channel; killed on drop.
pub struct Tool {
    name: &'static str,
    /// The process.
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Tool {
    /// Starts `name` with `args`; panics, naming it, if it cannot.
    pub fn start(name: &'static str, args: &[String]) -> Self {
        let mut child = Command::new(name)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {name} (RSPLIB's tools are Debian's rsplib-tools): {e}")
            });
        let (tx, lines) = channel();
        forward_lines(child.stdout.take().unwrap(), tx.clone());
        forward_lines(child.stderr.take().unwrap(), tx);
        Self {
            name,
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits up to [`WAIT`] for an output line containing `text` and returns it.
    pub fn wait_for_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                let name = self.name;
                panic!(
                    "{name} printed no line with {text:?}; it printed:\n{}",
                    self.output()
                );
            };
            self.seen.push(line);
            if self.seen.last().unwrap().contains(text) {
                return self.seen.last().unwrap().clone();
            }
        }
    }

    /// What the tool printed so far.
    pub fn output(&mut self) -> String {
        self.seen.extend(self.lines.try_iter());
        self.seen.join("\n")
    }

    /// Sends `signal` and waits up to [`WAIT`] for the tool to exit.
    pub fn stop(&mut self, signal: &str) -> ExitStatus {
        let id = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &id])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {id}");
        let (name, deadline) = (self.name, Instant::now() + WAIT);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not exit on SIG{signal}; it printed:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends each line read from `from` to `to` (lossily decoded: the tools print ANSI colours).
fn forward_lines(from: impl Read + Send + 'static, to: Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if to.send(text).is_err() {
                break;
            }
            line.clear();
        }
    });
}
