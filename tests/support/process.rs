//! The `hostgate` binary as a child process (`hostgate run --config FILE`, optionally under a
//! wrapper such as `prlimit`), with its standard error collected line by line as it comes, so
//! that a test can wait for a log line (`[log] format = "json"`: one JSON object per line) while
//! the process runs. The child is killed if the test panics.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::STEP;

/// A running `hostgate`.
pub struct Hostgate {
    child: Child,
    pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Hostgate {
    /// Starts `wrapper… hostgate run --config CONFIG` (`wrapper` empty: the binary itself). The
    /// wrapper must exec the binary, so that the child's pid is hostgate's.
    pub fn spawn(wrapper: &[&str], config: &Path) -> Hostgate {
        Hostgate::spawn_with(wrapper, config, &[])
    }

    /// [`Hostgate::spawn`] with more arguments after `run --config CONFIG`.
    pub fn spawn_with(wrapper: &[&str], config: &Path, more: &[&str]) -> Hostgate {
        let bin = env!("CARGO_BIN_EXE_hostgate");
        let config = config.to_str().unwrap();
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.extend([bin, "run", "--config", config]);
        argv.extend_from_slice(more);
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            // The test's filter must not replace `[log] level`.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
        let pid = child.id().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let reader = {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut stderr = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = stderr.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            })
        };
        Hostgate { child, pid, lines, reader: Some(reader) }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Standard error so far, one entry per line.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The lines so far that are JSON objects satisfying `pred`.
    pub fn json_lines(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.lines().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| pred(v)).collect()
    }

    /// Waits (up to `timeout`) for a JSON line satisfying `pred`; panics with standard error so
    /// far otherwise, or when the process exits first.
    pub async fn wait_json(&mut self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.json_lines(&pred).into_iter().next() {
                return v;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("hostgate exited ({status}) before the expected line; stderr:\n{}", self.lines().join("\n"));
            }
            if start.elapsed() > timeout {
                panic!("no such line within {timeout:?}; stderr so far:\n{}", self.lines().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address of the first `listening` line of `kind`, once it is logged.
    pub async fn listening(&mut self, kind: &str) -> std::net::SocketAddr {
        let line = self.wait_json(|v| v["message"] == "listening" && v["kind"] == kind, STEP).await;
        line["address"].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no address: {line}"))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends `signal` (a `kill` name: `TERM`, `INT`…) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{signal} {}: {status}", self.pid);
    }

    /// Waits (up to [`STEP`]) for the process to exit and for the end of its standard error;
    /// returns the exit status and every line.
    pub async fn wait(mut self) -> (ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("hostgate still running after {STEP:?}; stderr:\n{}", self.lines().join("\n")))
            .unwrap();
        if let Some(reader) = self.reader.take() {
            tokio::time::timeout(STEP, reader).await.expect("stderr still open after exit").unwrap();
        }
        (status, self.lines())
    }

    /// User plus system CPU time so far, from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // Fields after the command name (which may contain spaces) in parentheses: state is the
        // 3rd field of the line, utime the 14th and stime the 15th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
    }
}

impl Drop for Hostgate {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// `getconf CLK_TCK`: the unit of `/proc/PID/stat`'s times.
fn clock_ticks() -> u64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
