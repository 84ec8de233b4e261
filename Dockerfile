# shiplog: multi-stage build. The runtime image holds the binary and libduckdb.so side by
# side (the binary's rpath includes $ORIGIN, see .cargo/config.toml).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends npm cmake libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# DuckDB's official prebuilt library (no DuckDB compile); librdkafka is built by rdkafka-sys,
# with TLS (kafka-ssl: security.protocol = SSL / SASL_SSL for managed Kafka).
RUN scripts/fetch-duckdb.sh \
 && cargo build --release --locked -p shiplog --features kafka-ssl \
 && mkdir -p /out \
 && cp target/release/shiplog .duckdb/lib/libduckdb.so /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/shiplog shiplog \
 && mkdir -p /var/lib/shiplog/data \
 && chown -R shiplog /var/lib/shiplog
COPY --from=build /out/shiplog /out/libduckdb.so /opt/shiplog/
USER shiplog
WORKDIR /var/lib/shiplog
ENV SHIPLOG_DATA_DIR=/var/lib/shiplog/data \
    SHIPLOG_LISTEN=0.0.0.0:7070
EXPOSE 7070
ENTRYPOINT ["/opt/shiplog/shiplog"]
CMD ["serve"]
