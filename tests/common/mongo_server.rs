//! A MongoDB wire server of the test's own, which it can stop and start again on the
//! same port and data directory. `./scripts/test` says which program to run in
//! `MONGO_TEST_SERVER` (`secantus:/path/to/secantusd-py` or `mongod:/path/to/mongod`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct MongoServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Without replica-set features (no change streams), like a plain `mongod`.
    standalone: bool,
    /// Requires authentication (after a user was made).
    auth: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl MongoServer {
    /// Starts a fresh server on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A server without change streams.
    pub async fn start_standalone() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(standalone: bool) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            standalone,
            auth: false,
        };
        server.resume().await;
        server
    }

    /// A server that requires authentication, with one user (`root` on `admin`).
    pub async fn start_with_user(user: &str, password: &str) -> Self {
        let mut server = Self::start_with(false).await;
        let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
        client
            .database("admin")
            .run_command(mongodb::bson::doc! {
                "createUser": user, "pwd": password, "roles": [{"role": "root", "db": "admin"}]
            })
            .await
            .expect("create the user");
        drop(client);
        server.stop().await;
        server.auth = true;
        server.resume().await;
        server
    }

    /// A connection string for the service.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Starts the server process (again) on the same port and directory.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let spec = std::env::var("MONGO_TEST_SERVER").unwrap_or_else(|_| {
            panic!(
                "MONGO_TEST_SERVER is not set: run ./scripts/test, which installs a MongoDB wire \
                 server and sets it (e.g. secantus:.venv-test/bin/secantusd-py or mongod:/usr/bin/mongod)"
            )
        });
        let (kind, program) = spec
            .split_once(':')
            .expect("MONGO_TEST_SERVER is kind:path");
        let data = self.dir.path().display().to_string();
        let port = self.port.to_string();
        let mut command = Command::new(program);
        match kind {
            "secantus" => {
                // Acknowledged writes must survive the process being stopped.
                command
                    .args([
                        "--host",
                        "127.0.0.1",
                        "--port",
                        &port,
                        "--storage-path",
                        &data,
                    ])
                    .args(["--sync-on-commit", "--log-level", "WARNING"]);
                if self.standalone {
                    command.arg("--standalone");
                }
                if self.auth {
                    command.arg("--auth");
                }
            }
            // A mongod without --replSet is standalone; these tests do not initiate a
            // replica set for it.
            "mongod" => {
                command.args([
                    "--bind_ip",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--dbpath",
                    &data,
                    "--quiet",
                ]);
                if self.auth {
                    command.arg("--auth");
                }
            }
            other => panic!("unknown MONGO_TEST_SERVER kind {other}"),
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the database server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the database server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Freezes the server process (SIGSTOP): connections stay open and nothing is
    /// answered, as with a database that hangs.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn unpause(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Stops the server process (SIGTERM, then SIGKILL after 10 s) and waits for it.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // A paused server would not hear the SIGTERM.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(child.id().to_string())
            .status();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The port must be free before the server can come back on it.
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
