//! `shiplog serve`: open the data dir, recover the log, start the HTTP server.

use crate::config::Config;
use crate::datadir::{log_dir, DataDirLock};
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
    let _lock = DataDirLock::acquire(&data_dir, "shiplog serve")?;
    let log: Arc<dyn Log> = Arc::new(open_file_log(&config)?);

    let metrics = Arc::new(Metrics::default());
    let ingestor = Arc::new(Ingestor::new(
        log.clone(),
        config.server.dedup_window,
        metrics.clone(),
    ));
    let started = Instant::now();
    let keys = ingestor.rebuild_dedup(0).await?;
    info!(
        keys,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dedup index rebuilt"
    );
    if demo {
        crate::demo::seed_if_empty(&ingestor).await?;
    }

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let projection = run_projection(
        log.clone(),
        data_dir.clone(),
        projector_config(&config)?,
        shutdown_rx,
    )
    .await
    .context("cannot start the projection")?;
    let query = Arc::new(QueryEngine::open(&data_dir).context("cannot open DuckDB")?);
    let rules = shiplog_rules::RulesEngine::start(
        shiplog_rules::validate(&config.rules, &config.rules_settings)
            .map_err(anyhow::Error::msg)?,
        config.rules_settings.clone(),
        ingestor.clone(),
        Some(query.clone()),
        shutdown_tx.subscribe(),
    )
    .map_err(anyhow::Error::msg)
    .context("cannot start the rules engine")?;

    let projection_series: shiplog_web::SeriesFn = {
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
        })
    };
    let state = Arc::new(AppState {
        ingestor,
        auth: shiplog_web::auth::Auth::new(tokens),
        metrics,
        body_limit: config.server.body_limit,
        started: Instant::now(),
        series: vec![projection_series],
        query: Some(query),
    });
    let dashboards = Arc::new(shiplog_web::dashboards::DashboardState::new(
        state.auth.clone(),
        state.query.clone(),
        config.dashboards_dir.as_deref(),
        config.effective_thresholds(),
    ));
    let app = router(state.clone())
        .merge(shiplog_web::dashboards::routes(dashboards))
        .merge(crate::gate::routes(state.clone(), rules))
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
    info!(%addr, data_dir = %data_dir.display(), "serving");

    let grace = config.server.shutdown_grace;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server error")?;
    info!("stopping the projection");
    let _ = shutdown_tx.send(true);
    match tokio::time::timeout(grace, projection.task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "projection stopped with an error"),
        Ok(Err(e)) => warn!(error = %e, "projection task failed"),
        Err(_) => warn!("projection did not stop within the grace period"),
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
