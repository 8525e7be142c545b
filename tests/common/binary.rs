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
        Self { child, output, dir }
    }

    /// The process id, e.g. to read `/proc/{pid}/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
