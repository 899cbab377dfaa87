//! An in-process airlock on 127.0.0.1:0 and helpers to talk to it with the
//! arrow-flight Flight SQL client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock::server::{App, Secrets, Settings, run};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{Action, FlightInfo};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::Schema;
use datafusion::parquet::arrow::ArrowWriter;
use futures::TryStreamExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub(crate) const PASSWORD: &str = "test-password";

pub(crate) type Client = FlightSqlServiceClient<Channel>;

pub(crate) struct TestServer {
    pub(crate) app: Arc<App>,
    pub(crate) addr: SocketAddr,
    /// The data directory.
    pub(crate) dir: PathBuf,
    /// Where tests put source files: beside the data directory, never in it
    /// (airlock refuses sources inside its own data directory).
    pub(crate) files: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// A server on a fresh data directory.
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server on a fresh data directory with a config tweak.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut server = Self::start_in(&dir, tweak).await;
        server._tmp = Some(tmp);
        server
    }

    /// A server on an existing data directory (for restart tests).
    pub(crate) async fn start_in(dir: &Path, tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut config = Settings {
            data_dir: dir.to_path_buf(),
            ..Settings::default()
        };
        config.duckdb.threads = 2;
        config.duckdb.memory_limit = bytesize::ByteSize::mib(512);
        config.query.memory_limit = bytesize::ByteSize::mib(512);
        tweak(&mut config);
        let secrets = Secrets {
            admin_password: Some(PASSWORD.into()),
            ..Secrets::default()
        };
        let opened = App::open(config, secrets).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Arc::clone(&opened.app);
        let handle = tokio::spawn(async move {
            run(listener, None, app, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            app: opened.app,
            addr,
            dir: dir.to_path_buf(),
            files: dir.parent().unwrap().join("files"),
            _tmp: None,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stops serving and releases the data directory (for restarts).
    pub(crate) async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
        self._tmp.take()
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A client with no credentials.
    pub(crate) async fn anonymous(&self) -> Client {
        FlightSqlServiceClient::new(self.channel().await)
    }

    /// A client logged in as admin through the handshake.
    pub(crate) async fn admin(&self) -> Client {
        let mut client = self.anonymous().await;
        client.handshake("admin", PASSWORD).await.unwrap();
        client
    }

    /// A client using `token` as bearer.
    pub(crate) async fn with_token(&self, token: &str) -> Client {
        let mut client = self.anonymous().await;
        client.set_token(token.to_string());
        client
    }

    /// The raw Flight client with a bearer token, for exact gRPC statuses.
    pub(crate) async fn raw(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel().await)
    }

    /// Registers `name` from `source` and syncs it to completion.
    pub(crate) async fn load(&self, client: &mut Client, name: &str, source: &str) -> Value {
        action(
            client,
            "table.register",
            &serde_json::json!({"name": name, "source": source}),
        )
        .await
        .unwrap();
        self.sync(client, name).await
    }

    /// Runs a sync of `name` and waits until it ends; returns its status.
    pub(crate) async fn sync(&self, client: &mut Client, name: &str) -> Value {
        let started = action(client, "sync.start", &serde_json::json!({"table": name}))
            .await
            .unwrap();
        let job_id = started["job_id"].as_str().unwrap().to_string();
        wait_for_job(client, &job_id).await
    }
}

pub(crate) async fn wait_for_job(client: &mut Client, job_id: &str) -> Value {
    for _ in 0..3000 {
        let status = action(
            client,
            "sync.status",
            &serde_json::json!({"job_id": job_id}),
        )
        .await
        .unwrap();
        if ["succeeded", "failed", "cancelled"].contains(&status["state"].as_str().unwrap_or("")) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {job_id} did not finish");
}

/// Runs a JSON action; errors come back as tonic statuses.
pub(crate) async fn action(
    client: &mut Client,
    name: &str,
    body: &Value,
) -> Result<Value, tonic::Status> {
    action_raw(client, name, body.to_string().into_bytes()).await
}

pub(crate) async fn action_raw(
    client: &mut Client,
    name: &str,
    body: Vec<u8>,
) -> Result<Value, tonic::Status> {
    let mut request = tonic::Request::new(Action::new(name, body));
    if let Some(token) = client.token() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut stream = client.inner_mut().do_action(request).await?.into_inner();
    let result = stream.message().await?.expect("one result");
    Ok(serde_json::from_slice(&result.body).unwrap())
}

/// An error as `Code: message` (e.g. `NotFound: table …`), so tests can
/// check both the gRPC status and the text.
pub(crate) fn describe(error: FlightError) -> String {
    match error {
        FlightError::Tonic(status) => format!("{:?}: {}", status.code(), status.message()),
        other => format!("client error: {other}"),
    }
}

/// Runs a query through GetFlightInfo + DoGet.
pub(crate) async fn query(
    client: &mut Client,
    sql: &str,
) -> Result<(Schema, Vec<RecordBatch>), String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(describe)?;
    fetch(client, info).await
}

/// Redeems a FlightInfo's ticket; returns the announced schema and batches.
pub(crate) async fn fetch(
    client: &mut Client,
    info: FlightInfo,
) -> Result<(Schema, Vec<RecordBatch>), String> {
    let schema = info
        .clone()
        .try_decode_schema()
        .map_err(|e| e.to_string())?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.map_err(describe)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.try_next().await.map_err(describe)? {
        batches.push(batch);
    }
    // The stream's schema must be exactly the announced one, even when empty.
    let streamed = stream.schema().map(|s| s.as_ref().clone());
    assert_eq!(
        streamed.as_ref(),
        Some(&schema),
        "DoGet schema differs from FlightInfo schema"
    );
    for batch in &batches {
        assert_eq!(batch.schema().as_ref(), &schema);
    }
    Ok((schema, batches))
}

/// Rows as strings for comparison: cells joined by `|`, nulls as `NULL`
/// (so a null and an empty string never look alike).
pub(crate) fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(row) {
                        "NULL".to_string()
                    } else {
                        datafusion::arrow::util::display::array_value_to_string(c, row).unwrap()
                    }
                })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

pub(crate) fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Writes a Parquet file.
pub(crate) fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
}

pub(crate) fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}
