//! A Rust client for airlock using the stock arrow-flight Flight SQL client:
//! log in, run a query, and call a JSON action.
//!
//! ```text
//! AIRLOCK_ADMIN_PASSWORD=change-me cargo run --release -- serve --demo
//! AIRLOCK_ADMIN_PASSWORD=change-me cargo run --example flight_client
//! ```

use arrow_flight::Action;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use tonic::transport::Channel;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri = std::env::var("AIRLOCK_URI").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let password = std::env::var("AIRLOCK_ADMIN_PASSWORD").unwrap_or_else(|_| "change-me".into());
    let channel = Channel::from_shared(uri)?.connect().await?;
    let mut client = FlightSqlServiceClient::new(channel);

    // The handshake returns a bearer token; the client keeps it for later calls.
    client.handshake("admin", &password).await?;

    let info = client
        .execute(
            "SELECT status, count(*) AS n FROM demo.orders GROUP BY status ORDER BY status".into(),
            None,
        )
        .await?;
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        let batches: Vec<_> = client.do_get(ticket).await?.try_collect().await?;
        println!("{}", pretty_format_batches(&batches)?);
    }

    let mut results = client.do_action(Action::new("whoami", "")).await?;
    if let Some(result) = results.message().await? {
        println!("whoami: {}", String::from_utf8_lossy(&result.body));
    }
    Ok(())
}
