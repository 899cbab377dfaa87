//! Artifacts over Flight: uploads with DoPut (descriptor path
//! `["artifact", name]`, options as JSON in the first batch's
//! app_metadata) or ADBC bulk ingest into the `artifacts` schema, and
//! downloads with DoGet of a ticket from `artifact.get`. Decoding and
//! encoding only; `tools::artifacts` decides everything else.

use std::future::ready;

use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{Any, CommandStatementIngest, TableExistsOption, TableNotExistOption};
use arrow_flight::{PutResult, Ticket, flight_descriptor};
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tonic::{Request, Response, Status};

use super::audited::audit_of;
use super::{AirlockFlightSql, DoGetStream, encode, status};
use crate::audit::AuditHandle;
use crate::tools::artifacts::{
    ARTIFACT_SCHEMA, ArtifactError, ArtifactTicket, UploadMode, UploadOptions, Uploaded,
};

type DoPutStream = <AirlockFlightSql as FlightService>::DoPutStream;

/// The first path element of an artifact upload's descriptor.
const ARTIFACT_PATH: &str = "artifact";

impl AirlockFlightSql {
    /// DoPut with a path descriptor: `["artifact", name]`.
    pub(super) async fn put_artifact(
        &self,
        mut request: Request<PeekableFlightDataStream>,
    ) -> Result<Response<DoPutStream>, Status> {
        let principal = self.principal(&request).await?;
        let descriptor = match request.get_mut().peek().await {
            Some(Ok(first)) => first.flight_descriptor.clone(),
            _ => None,
        };
        let name = match descriptor {
            Some(d)
                if d.r#type == flight_descriptor::DescriptorType::Path as i32
                    && d.path.len() == 2
                    && d.path[0] == ARTIFACT_PATH =>
            {
                d.path[1].clone()
            }
            _ => {
                return Err(status::bad_request(
                    "DoPut takes a Flight SQL command, or a path descriptor [\"artifact\", name] \
                     to upload an artifact",
                ));
            }
        };
        let audit = audit_of(&request);
        let upload = Upload::read(request.into_inner()).await?;
        let options = match &upload.options {
            Some(json) => serde_json::from_slice::<UploadOptions>(json).map_err(|e| {
                status::bad_request(format!(
                    "upload options (JSON in the first batch's app_metadata): {e}"
                ))
            })?,
            None => UploadOptions::default(),
        };
        let uploaded = self
            .gateway
            .artifacts
            .upload(&principal, &name, options, upload.schema, upload.batches)
            .await;
        let uploaded = audited(audit.as_ref(), &name, uploaded).map_err(status::artifact)?;
        let answer = uploaded.summary();
        let result = PutResult {
            app_metadata: answer.to_string().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    /// ADBC's `adbc_ingest(..., db_schema_name="artifacts")`: a tabular
    /// artifact. Modes: create and create_append (the name must be new),
    /// replace (a new version, or the first).
    pub(super) async fn ingest_artifact(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = self.principal(&request).await?;
        if !command
            .schema
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(ARTIFACT_SCHEMA))
        {
            return Err(super::read_only(
                "bulk ingestion outside the 'artifacts' schema",
            ));
        }
        if command.temporary || command.transaction_id.is_some() {
            return Err(status::bad_request(
                "artifacts are neither temporary nor transactional: ingest without them",
            ));
        }
        let options = command.table_definition_options.unwrap_or_default();
        let mode = match (options.if_not_exist(), options.if_exists()) {
            (TableNotExistOption::Create, TableExistsOption::Fail) => UploadMode::Create,
            (TableNotExistOption::Create, TableExistsOption::Replace) => {
                UploadMode::CreateOrReplace
            }
            (TableNotExistOption::Fail, TableExistsOption::Replace) => UploadMode::Replace,
            // Appending rows to a stored version is not offered: an
            // existing name is refused rather than silently replaced.
            (TableNotExistOption::Create, TableExistsOption::Append) => UploadMode::Create,
            (_, TableExistsOption::Append) => {
                return Err(status::bad_request(
                    "appending to an artifact is not supported: each upload is a whole new \
                     version; use mode='replace' or 'create_append' with all the rows",
                ));
            }
            _ => {
                return Err(status::bad_request(
                    "ingest needs table_definition_options (ADBC sets them from its mode)",
                ));
            }
        };
        let audit = audit_of(&request);
        let upload = Upload::read(request.into_inner()).await?;
        let options = UploadOptions {
            mode,
            ..UploadOptions::default()
        };
        let uploaded = self
            .gateway
            .artifacts
            .upload(
                &principal,
                &command.table,
                options,
                upload.schema,
                upload.batches,
            )
            .await;
        let uploaded =
            audited(audit.as_ref(), &command.table, uploaded).map_err(status::artifact)?;
        Ok(uploaded.version.rows.unwrap_or(0) as i64)
    }

    /// DoGet of a ticket that is not a Flight SQL command: an artifact's.
    pub(super) async fn get_artifact(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        if message.type_url != ArtifactTicket::TYPE_URL {
            return Err(status::bad_request(format!(
                "unknown ticket type '{}': tickets come from GetFlightInfo or artifact.get",
                message.type_url
            )));
        }
        let ticket = ArtifactTicket::decode(&message.value).map_err(status::bad_request)?;
        let download = self
            .gateway
            .artifacts
            .download(&principal, &ticket.id, Some(ticket.version))
            .await
            .map_err(status::artifact)?;
        if let Some(audit) = audit_of(&request) {
            audit.statement(
                serde_json::json!({
                    "artifact": download.artifact.id,
                    "name": download.artifact.name,
                    "version": download.version.version,
                    "size": download.version.size,
                })
                .to_string(),
            );
        }
        let batches = download
            .batches
            .map_err(|e| FlightError::Tonic(Box::new(status::artifact(e))));
        Ok(Response::new(encode(download.schema, batches)))
    }
}

/// Records what an upload stored (or tried to) in the call's audit record.
fn audited(
    audit: Option<&AuditHandle>,
    name: &str,
    uploaded: Result<Uploaded, ArtifactError>,
) -> Result<Uploaded, ArtifactError> {
    if let Some(audit) = audit {
        let record = match &uploaded {
            Ok(u) => serde_json::json!({
                "artifact": u.artifact.id,
                "name": u.artifact.name,
                "version": u.version.version,
                "size": u.version.size,
                "rows": u.version.rows,
            }),
            Err(_) => serde_json::json!({ "artifact_upload": name }),
        };
        audit.statement(record.to_string());
    }
    uploaded
}

/// An upload's stream, decoded: its schema, the options carried by the
/// first batch, and the batches.
struct Upload {
    schema: SchemaRef,
    options: Option<Bytes>,
    batches: BoxStream<'static, Result<RecordBatch, ArtifactError>>,
}

impl Upload {
    async fn read(stream: PeekableFlightDataStream) -> Result<Self, Status> {
        // Messages with no IPC header carry only app_metadata; the decoder
        // cannot read them, and uploads need none.
        let data = stream
            .map_err(FlightError::from)
            .try_filter(|data| ready(!data.data_header.is_empty()));
        let mut decoder = FlightDataDecoder::new(data);
        let bad = |e: FlightError| status::bad_request(format!("reading the upload: {e}"));
        let schema = match decoder.try_next().await.map_err(bad)? {
            Some(first) => match first.payload {
                DecodedPayload::Schema(schema) => schema,
                _ => return Err(status::bad_request("an upload starts with its schema")),
            },
            None => return Err(status::bad_request("the upload is empty")),
        };
        let mut options = None;
        let mut first = None;
        while let Some(message) = decoder.try_next().await.map_err(bad)? {
            match message.payload {
                DecodedPayload::RecordBatch(batch) => {
                    let metadata = message.inner.app_metadata;
                    options = (!metadata.is_empty()).then_some(metadata);
                    first = Some(batch);
                    break;
                }
                DecodedPayload::None => {}
                DecodedPayload::Schema(_) => {
                    return Err(status::bad_request("an upload has one schema"));
                }
            }
        }
        let rest = decoder.filter_map(|message| {
            ready(match message {
                Ok(message) => match message.payload {
                    DecodedPayload::RecordBatch(batch) => Some(Ok(batch)),
                    DecodedPayload::None => None,
                    DecodedPayload::Schema(_) => {
                        Some(Err(ArtifactError::Input("an upload has one schema".into())))
                    }
                },
                Err(e) => Some(Err(ArtifactError::Input(e.to_string()))),
            })
        });
        let batches = futures::stream::iter(first.map(Ok)).chain(rest).boxed();
        Ok(Self {
            schema,
            options,
            batches,
        })
    }
}
