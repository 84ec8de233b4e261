//! `shiplog serve`: open the data dir, recover the log, start the HTTP server.

use crate::config::Config;
use crate::datadir::{log_dir, DataDirLock};
use crate::roles::Role;
use anyhow::{bail, Context, Result};
use shiplog_log::file::{FileLogConfig, SegmentedLog};
use shiplog_log::Log;
use shiplog_store::{run_projection, ProjectorConfig, QueryEngine};
use shiplog_web::ingest::Ingestor;
use shiplog_web::metrics::Metrics;
use shiplog_web::{router, AppState};
use std::sync::Arc;
use std::time::Instant;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

/// Opens the embedded log of a data dir, logging what recovery found.
pub fn open_file_log(config: &Config) -> Result<SegmentedLog> {
    let dir = log_dir(&config.server.data_dir);
    let file_config = FileLogConfig {
        segment_bytes: config.log.segment_bytes,
        ..FileLogConfig::default()
    };
    let (log, report) = SegmentedLog::open(&dir, file_config)
        .with_context(|| format!("cannot open the log in {}", dir.display()))?;
    if report.truncated_bytes > 0 {
        warn!(
            truncated_bytes = report.truncated_bytes,
            reason = report.dropped_reason.as_deref().unwrap_or(""),
            "log recovery dropped an unacknowledged torn tail"
        );
    }
    info!(
        segments = report.segments,
        records = report.records,
        "log opened"
    );
    Ok(log)
}

/// Connects to the Kafka log of the config (`[log] backend = "kafka"`).
pub async fn open_kafka_log(config: &Config) -> Result<shiplog_log::KafkaLog> {
    let kc = config.log.kafka_config()?;
    let (brokers, topic) = (kc.brokers.clone(), kc.topic.clone());
    let log = tokio::task::spawn_blocking(move || shiplog_log::KafkaLog::open(kc))
        .await
        .context("Kafka open task failed")?
        .with_context(|| format!("cannot open the Kafka log (brokers {brokers}, topic {topic})"))?;
    info!(%brokers, %topic, partitions = log.partitions().len(), "Kafka log opened");
    Ok(log)
}

/// The projection settings of the config.
pub fn projector_config(config: &Config) -> Result<ProjectorConfig> {
    let mut retention_days = std::collections::BTreeMap::new();
    for (kind, days) in &config.projection.retention_days {
        let kind = shiplog_events::Kind::parse(kind)
            .with_context(|| format!("projection.retention_days.{kind}: unknown kind"))?;
        retention_days.insert(kind, *days);
    }
    Ok(ProjectorConfig {
        flush_interval: config.projection.flush_interval,
        flush_rows: config.projection.flush_rows,
        compaction_schedule: config.projection.compaction_schedule.clone(),
        retention_days,
        prices: match &config.pricing.prices_file {
            Some(p) => std::sync::Arc::new(
                shiplog_store::PriceTable::shipped_with_file(p)
                    .map_err(|e| anyhow::anyhow!("pricing.prices_file: {e}"))?,
            ),
            None => shiplog_store::PriceTable::shipped(),
        },
        ..ProjectorConfig::default()
    })
}

pub async fn serve(config: Config) -> Result<()> {
    serve_opts(config, false).await
}

/// `serve`, and with `demo`: seed demo data first when the data dir has no events.
pub async fn serve_opts(config: Config, demo: bool) -> Result<()> {
    serve_role(config, demo, Role::All).await
}

/// `serve --role`: runs the parts of the pipeline of `role` (see [`crate::roles`]).
pub async fn serve_role(config: Config, demo: bool, role: Role) -> Result<()> {
    let kafka = config.log.is_kafka();
    if role != Role::All && !kafka {
        bail!(
            "serve --role {role} needs [log] backend = \"kafka\": the embedded file log is \
             owned (locked) by one process, so separate ingest, process and web nodes cannot \
             share it. Run `shiplog serve` (role all), or configure Kafka (docs/operations.md)"
        );
    }
    if demo && role != Role::All {
        bail!("--demo needs --role all");
    }
    let tokens = config.tokens()?;
    let listen = config.server.listen;
    if tokens.is_empty() && !listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {listen}: no tokens are configured, so shiplog serves \
             loopback only. Add [[tokens]] to the config (see docs/configuration.md) or \
             listen on 127.0.0.1"
        );
    }
    let data_dir = config.server.data_dir.clone();
    // With Kafka the data dir holds only the Parquet projection (shared by the nodes); its
    // own lock guards the projector.
    let _lock = if kafka {
        None
    } else {
        Some(DataDirLock::acquire(&data_dir, "shiplog serve")?)
    };
    let log: Arc<dyn Log> = if kafka {
        Arc::new(open_kafka_log(&config).await?)
    } else {
        Arc::new(open_file_log(&config)?)
    };

    let metrics = Arc::new(Metrics::default());
    let ingestor = Arc::new(Ingestor::new(
        log.clone(),
        config.server.dedup_window,
        metrics.clone(),
    ));
    let started = Instant::now();
    if !kafka {
        let keys = ingestor.rebuild_dedup(0).await?;
        info!(
            keys,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dedup index rebuilt"
        );
    } else if role.ingests() {
        // Best effort: Kafka retention may have deleted the topic's start; the projection
        // dedups on (source, id) across ingest nodes anyway.
        match ingestor.rebuild_dedup(0).await {
            Ok(keys) => info!(
                keys,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "dedup index rebuilt from Kafka"
            ),
            Err(e) => {
                warn!(error = %e, "dedup index not rebuilt from Kafka; the projection still dedups")
            }
        }
    }
    if demo {
        crate::demo::seed_if_empty(&ingestor).await?;
    }

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let projection = if role.projects() {
        let mut pc = projector_config(&config)?;
        if kafka {
            pc.dedup_window = Some(config.server.dedup_window);
        }
        Some(
            run_projection(log.clone(), data_dir.clone(), pc, shutdown_rx)
                .await
                .context("cannot start the projection")?,
        )
    } else {
        None
    };
    let query = if role.serves_web() {
        Some(Arc::new(
            QueryEngine::open(&data_dir).context("cannot open DuckDB")?,
        ))
    } else {
        None
    };
    let rules = match &query {
        None => None,
        Some(query) => Some(
            shiplog_rules::RulesEngine::start(
                shiplog_rules::validate(&config.rules, &config.rules_settings)
                    .map_err(anyhow::Error::msg)?,
                config.rules_settings.clone(),
                ingestor.clone(),
                Some(query.clone()),
                shutdown_tx.subscribe(),
            )
            .map_err(anyhow::Error::msg)
            .context("cannot start the rules engine")?,
        ),
    };

    let projection_series: Option<shiplog_web::SeriesFn> = projection.as_ref().map(|projection| {
        let (metrics, progress, log) = (
            projection.metrics.clone(),
            projection.progress.clone(),
            log.clone(),
        );
        Arc::new(move || {
            let projected: u64 = progress.borrow().values().sum();
            let end: u64 = log.partitions().iter().map(|p| log.end_offset(*p)).sum();
            format!(
                "{}# HELP shiplog_projection_lag_events Durable events not yet in Parquet.\n\
                 # TYPE shiplog_projection_lag_events gauge\nshiplog_projection_lag_events {}\n",
                metrics.render_prometheus(),
                end.saturating_sub(projected)
            )
        }) as shiplog_web::SeriesFn
    });
    let state = Arc::new(AppState {
        ingestor,
        auth: shiplog_web::auth::Auth::new(tokens),
        metrics,
        body_limit: config.server.body_limit,
        started: Instant::now(),
        series: projection_series.into_iter().collect(),
        query,
    });
    let dashboards = Arc::new(shiplog_web::dashboards::DashboardState::new(
        state.auth.clone(),
        state.query.clone(),
        config.dashboards_dir.as_deref(),
        config.effective_thresholds(),
    ));
    let mut app = router(state.clone());
    if let Some(rules) = rules {
        app = app
            .merge(shiplog_web::dashboards::routes(dashboards))
            .merge(crate::gate::routes(state.clone(), rules));
    }
    if !role.ingests() {
        app = app.layer(axum::middleware::from_fn(crate::roles::refuse_ingest));
    }
    let app = app
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            config.server.request_timeout,
        ))
        .layer(TraceLayer::new_for_http());

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    // The URL line is the contract with `make run` and the tests: keep its shape.
    println!("shiplog listening on http://{addr}/");
    info!(%addr, data_dir = %data_dir.display(), %role, "serving");

    let grace = config.server.shutdown_grace;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server error")?;
    info!("stopping the projection");
    let _ = shutdown_tx.send(true);
    if let Some(projection) = projection {
        match tokio::time::timeout(grace, projection.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "projection stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "projection task failed"),
            Err(_) => warn!("projection did not stop within the grace period"),
        }
    }
    info!("draining and syncing the log");
    match tokio::time::timeout(grace, log.close()).await {
        Ok(r) => r.context("closing the log")?,
        Err(_) => warn!("log did not close within the grace period"),
    }
    info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}
