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
    /// The TLS certificates, when it serves TLS.
    _certs: Option<tempfile::TempDir>,
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
        Self::start_with(&[])
    }

    /// Starts a cluster that also accepts TLS, with a certificate for
    /// 127.0.0.1 and localhost signed by a throwaway CA; returns it and
    /// the CA's certificate file (PEM).
    pub(crate) fn start_with_tls() -> (Self, PathBuf) {
        let certs_dir = tempfile::Builder::new()
            .prefix("airlock-pg-tls-")
            .tempdir()
            .unwrap();
        let certs = certs_dir.path().to_path_buf();
        let openssl = |args: &[&str]| {
            let mut command = Command::new("openssl");
            command.current_dir(&certs).args(args);
            run(command, "openssl");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=airlock test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            certs.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        // The server reads its key only if the key is its own and private.
        let key = certs.join("server.key");
        let mut chmod = Command::new("chmod");
        chmod.arg("600").arg(&key);
        run(chmod, "chmod");
        if is_root() {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(&key).arg(&certs);
            run(chown, "chown");
        }
        let mut server = Self::start_with(&[
            "-c ssl=on".into(),
            format!("-c ssl_cert_file={}", certs.join("server.crt").display()),
            format!("-c ssl_key_file={}", key.display()),
        ]);
        server._certs = Some(certs_dir);
        (server, certs.join("ca.crt"))
    }

    fn start_with(options: &[String]) -> Self {
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
                 -c synchronous_commit=off -c full_page_writes=off {}",
                dir.path().display(),
                options.join(" ")
            ))
            .arg("start");
        run(start, "pg_ctl start");
        Self {
            dir,
            port,
            _certs: None,
        }
    }

    /// Its port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
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
