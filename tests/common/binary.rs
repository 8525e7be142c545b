//! The candlecast binary run as a separate process, as an operator runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The candlecast binary with an empty environment.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_candlecast"));
    command.env_clear().stdin(Stdio::null());
    command
}

/// The binary running in its own directory, with its output collected.
pub struct Running {
    child: Child,
    /// Run by `unshare` as PID 1 of its own pid namespace ([`Running::start_as_pid1`]).
    pid1: bool,
    output: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl Running {
    pub fn start(dir: tempfile::TempDir, env: &[(&str, String)]) -> Self {
        Self::start_with(dir, env, |_| {})
    }

    /// Like [`Running::start`], as user id `uid` (the test runs as root: the
    /// directory must let that user in).
    pub fn start_as(dir: tempfile::TempDir, env: &[(&str, String)], uid: Option<u32>) -> Self {
        let Some(uid) = uid else {
            return Self::start(dir, env);
        };
        // A copy in the test's own directory: the build's may lie under a folder
        // that user cannot enter (a CI checkout under /root, say).
        let program = dir.path().join("candlecast");
        std::fs::copy(env!("CARGO_BIN_EXE_candlecast"), &program).expect("copy the binary");
        let mut command = Command::new(&program);
        command.env_clear().stdin(Stdio::null());
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(uid);
        Self::spawn(command, dir, env)
    }

    /// Like [`Running::start`], as PID 1 of a new pid namespace (`unshare --pid
    /// --fork`, which the test can do as root), as in a container: there the kernel
    /// drops any signal sent from outside that the process has no handler for.
    pub fn start_as_pid1(dir: tempfile::TempDir, env: &[(&str, String)]) -> Self {
        let mut command = Command::new("/usr/bin/unshare");
        command
            .env_clear()
            .stdin(Stdio::null())
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(env!("CARGO_BIN_EXE_candlecast"));
        let mut running = Self::spawn(command, dir, env);
        running.pid1 = true;
        running
    }

    /// [`Running::start`] with the command adjusted first (e.g. resource limits).
    pub fn start_with(
        dir: tempfile::TempDir,
        env: &[(&str, String)],
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let mut command = binary();
        adjust(&mut command);
        Self::spawn(command, dir, env)
    }

    fn spawn(mut command: Command, dir: tempfile::TempDir, env: &[(&str, String)]) -> Self {
        command
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Only the base interval unless the test sets INTERVALS: see `config_for`.
        command.env("INTERVALS", "1m");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start candlecast");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut output = output.lock().unwrap();
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        Self {
            child,
            pid1: false,
            output,
            dir,
        }
    }

    /// The service's process id (seen from the test), e.g. to read
    /// `/proc/{pid}/status`; as PID 1, the child `unshare` forked.
    pub fn pid(&self) -> u32 {
        if !self.pid1 {
            return self.child.id();
        }
        let unshare = self.child.id();
        let children = format!("/proc/{unshare}/task/{unshare}/children");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = listed.split_whitespace().next() {
                return pid.parse().expect("a pid");
            }
            assert!(Instant::now() < deadline, "unshare started no child");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` ("TERM", "INT", "HUP") to the service, as `kill` from outside
    /// its pid namespace does (`docker stop`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Sends `signal` and waits for the exit: the exit code (-1 when killed by a
    /// signal), the output and the time from the signal to the exit. Gives up
    /// after 15 s.
    pub async fn stop_with(mut self, signal: &str) -> (i32, String, Duration) {
        self.signal(signal);
        let sent = Instant::now();
        let deadline = sent + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let elapsed = sent.elapsed();
                // The output threads catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return (status.code().unwrap_or(-1), self.output(), elapsed);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "candlecast did not exit within 15 s of SIG{signal}:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the "serving" log line and returns the address it names.
    pub async fn wait_for_address(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = self.output();
            if let Some(line) = output
                .lines()
                .find(|l| l.contains("serving websocket clients"))
            {
                let address = line
                    .split("address=")
                    .nth(1)
                    .expect("address field")
                    .split_whitespace()
                    .next()
                    .unwrap();
                return address.to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("candlecast exited with {status} before serving:\n{output}");
            }
            assert!(
                Instant::now() < deadline,
                "candlecast did not start serving:\n{output}"
            );
            // Async: the fake exchange runs on this test's runtime.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM and returns the exit code, the output and the working directory.
    pub async fn terminate(mut self) -> (i32, String, tempfile::TempDir) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let output = self.output();
                let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
                return (status.code().unwrap_or(-1), output, dir);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "candlecast did not exit within 15 s of SIGTERM:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Running {
    /// A test that ends early never leaves the process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Waits until the output contains `text`, for up to `seconds`; returns it.
    pub async fn wait_for_output(&self, text: &str, seconds: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let output = self.output();
            if output.contains(text) {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the output within {seconds} s:\n{output}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and returns its directory.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

/// Variables that point the binary at `fake` and a free loopback port.
pub fn fake_env(fake: &super::FakeExchange) -> Vec<(&'static str, String)> {
    vec![
        ("PORT", "0".into()),
        ("BIND_ADDR", "127.0.0.1".into()),
        ("BINANCE_WS_URL", fake.ws_url()),
        ("BINANCE_REST_URL", fake.rest_url()),
    ]
}
