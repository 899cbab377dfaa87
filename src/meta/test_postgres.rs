//! A throwaway Postgres for tests: Debian's server binaries, a cluster in a
//! temporary directory on a free port, stopped and removed on drop. The
//! test command installs the `postgresql` package when it is missing; as
//! root the server runs as the `postgres` user (it refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian puts the server binaries (not on PATH).
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running cluster.
pub(crate) struct TestPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

/// Whether this process runs as root (`id -u`: the standard library has no
/// geteuid).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (is the postgresql package installed?)"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestPostgres {
    /// Starts a cluster with trust authentication on 127.0.0.1.
    pub(crate) fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("airlock-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(dir.path());
                    c
                },
                "chown",
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data: PathBuf = dir.path().join("data");
        let mut initdb = as_server_user(&Path::new(BIN).join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(initdb, "initdb");
        let mut start = as_server_user(&Path::new(BIN).join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off",
                dir.path().display()
            ))
            .arg("start");
        run(start, "pg_ctl start");
        Self { dir, port }
    }

    /// The URL of its `postgres` database (no TLS on loopback).
    pub(crate) fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let mut stop = as_server_user(&Path::new(BIN).join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}
