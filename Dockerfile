# Builds and runs airlock. DuckDB is compiled from source (bundled), so the
# first build takes a while.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin airlock

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/airlock airlock
COPY --from=build /src/target/release/airlock /usr/local/bin/airlock
USER airlock
# Listen on all interfaces inside the container; publish with
# -p 50051:50051 (Flight SQL) -p 8080:8080 (HTTP: health, API, MCP, /admin).
ENV AIRLOCK_DATA_DIR=/var/lib/airlock/data \
    AIRLOCK_FLIGHT_ADDR=0.0.0.0:50051 \
    AIRLOCK_HTTP_ADDR=0.0.0.0:8080
VOLUME /var/lib/airlock
EXPOSE 50051 8080
# The slim image has no curl: the binary asks its own /readyz.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["airlock", "healthcheck"]
ENTRYPOINT ["airlock"]
CMD ["serve"]
