//! `shiplog serve`: open the data dir, recover the log, start the HTTP server.

use crate::config::Config;
use crate::datadir::{log_dir, DataDirLock};
use crate::logretention::{DedupCovered, LogRetention, RetentionMetrics};
use crate::roles::Role;
use anyhow::{bail, Context, Result};
use shiplog_ingest::Ingestor;
use shiplog_ingest::Metrics;
use shiplog_log::file::{FileLogConfig, SegmentedLog};
use shiplog_log::Log;
use shiplog_store::{run_projection, ProjectorConfig, QueryEngine};
use shiplog_web::metrics::{projection::ProjectionSeries, rules::RulesSeries};
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
        compress_sealed: config.log.compress,
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
pub async fn open_kafka_log(config: &Config) -> Result<shiplog_kafka::KafkaLog> {
    let kc = config.log.kafka_config()?;
    let (brokers, topic) = (kc.brokers.clone(), kc.topic.clone());
    let log = tokio::task::spawn_blocking(move || shiplog_kafka::KafkaLog::open(kc))
        .await
        .context("Kafka open task failed")?
        .with_context(|| format!("cannot open the Kafka log (brokers {brokers}, topic {topic})"))?;
    info!(%brokers, %topic, partitions = log.partitions().len(), "Kafka log opened");
    Ok(log)
}

/// Refuses to mix the two Kafka projection layouts in one directory: one processor
/// (`parquet/_state.json`) or a consumer group (`parquet/_partitions/p<P>/`).
fn check_projection_mode(data_dir: &std::path::Path, group: bool) -> Result<()> {
    let root = shiplog_store::parquet_dir(data_dir);
    let layout = shiplog_store::projection_layout(data_dir);
    if group && layout.single_projected {
        bail!(
            "{} was projected by a single processor: a consumer group would project the same \
             events again. Unset log.consumer_group, or use a new data dir",
            root.display()
        );
    }
    if !group && layout.group_partitions {
        bail!(
            "{} was projected by a consumer group (log.consumer_group): set it again, or use \
             a new data dir",
            root.display()
        );
    }
    Ok(())
}

/// The projection of a node: running, or (standby) started once the directory is free.
struct ProjectionSlot {
    running: shiplog_web::metrics::projection::ProjectionSlot,
    task: tokio::task::JoinHandle<Result<(), shiplog_store::StoreError>>,
}

/// Starts the projection; with `standby`, a directory locked by another processor is
/// waited for (checked every second) instead of being an error.
async fn start_projection(
    log: Arc<dyn Log>,
    data_dir: std::path::PathBuf,
    pc: ProjectorConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
    standby: bool,
) -> Result<ProjectionSlot> {
    let running: shiplog_web::metrics::projection::ProjectionSlot = Arc::default();
    // The first attempt before serving, so that a node that gets the directory has set it
    // up (schema files) before it answers.
    match run_projection(log.clone(), data_dir.clone(), pc.clone(), shutdown.clone()).await {
        Ok(h) => {
            *running.lock().unwrap() = Some((h.metrics.clone(), h.progress.clone()));
            return Ok(ProjectionSlot {
                running,
                task: h.task,
            });
        }
        Err(shiplog_store::StoreError::Locked(_)) if standby => {}
        Err(e) => return Err(e).context("cannot start the projection"),
    }
    let slot = running.clone();
    let task = tokio::spawn(async move {
        let mut announced = false;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            match run_projection(log.clone(), data_dir.clone(), pc.clone(), shutdown.clone()).await
            {
                Ok(h) => {
                    if announced {
                        info!("standby processor took over the projection");
                    }
                    *slot.lock().unwrap() = Some((h.metrics.clone(), h.progress.clone()));
                    return match h.task.await {
                        Ok(r) => r,
                        Err(e) => Err(shiplog_store::StoreError::Config(format!(
                            "projection task failed: {e}"
                        ))),
                    };
                }
                Err(shiplog_store::StoreError::Locked(dir)) => {
                    if !announced {
                        info!(dir = %dir.display(), "standby: another processor holds the projection; taking over when it stops");
                        announced = true;
                    }
                    let mut s = shutdown.clone();
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(1), s.wait_for(|v| *v))
                            .await;
                }
                Err(e) => return Err(e),
            }
        }
    });
    Ok(ProjectionSlot { running, task })
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

/// `shiplog serve`: runs the parts of the pipeline of `role` (see [`crate::roles`]); with
/// `demo`, seeds demo data first when the data dir has no events.
///
/// In order: check what may be served, open the log, start ingest (the dedup index
/// restored), the projection, the queries and the rules, serve HTTP until SIGTERM, then stop
/// the projection, snapshot the dedup index and close the log.
pub async fn serve(config: Config, demo: bool, role: Role) -> Result<()> {
    let tokens = check_what_may_be_served(&config, demo, role)?;
    let kafka = config.log.is_kafka();
    let data_dir = config.server.data_dir.clone();
    // With Kafka the data dir holds only the Parquet projection (shared by the nodes); its
    // own lock guards the projector.
    let _lock = if kafka {
        None
    } else {
        Some(DataDirLock::acquire(&data_dir, "shiplog serve")?)
    };
    let file_log = match kafka {
        true => None,
        false => Some(Arc::new(open_file_log(&config)?)),
    };
    let log: Arc<dyn Log> = match &file_log {
        Some(file_log) => file_log.clone(),
        None => Arc::new(open_kafka_log(&config).await?),
    };
    let (ingestor, metrics) = start_ingest(&config, log.clone(), role).await?;
    if demo {
        shiplog_bench::demo::seed_if_empty(&ingestor).await?;
    }

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let dedup_dir = data_dir.join("dedup");
    let dedup_covered = Arc::new(DedupCovered::default());
    if !kafka {
        tokio::spawn(snapshot_dedup_periodically(
            ingestor.clone(),
            dedup_dir.clone(),
            dedup_covered.clone(),
            shutdown_rx.clone(),
        ));
    }
    let projection = if role.projects() {
        Some(start_role_projection(&config, log.clone(), role, shutdown_rx.clone()).await?)
    } else {
        None
    };
    let query = if role.serves_web() {
        Some(open_queries(&config)?)
    } else {
        None
    };
    let rules = match &query {
        Some(query) => Some(start_rules(
            &config,
            demo,
            ingestor.clone(),
            query.clone(),
            &shutdown_tx,
        )?),
        None => None,
    };
    // After the rules engine: retention asks it for a fresh snapshot when that is what
    // holds segments back.
    let retention = match (&file_log, &projection) {
        (Some(file_log), Some(projection)) if config.log.retention.policy().is_enabled() => {
            let metrics = Arc::new(RetentionMetrics::default());
            let running = projection.running.clone();
            let task = LogRetention {
                log: file_log.clone(),
                policy: config.log.retention.policy(),
                interval: config.log.retention.interval,
                segment_bytes: config.log.segment_bytes,
                ingestor: ingestor.clone(),
                dedup_dir: dedup_dir.clone(),
                dedup_covered: dedup_covered.clone(),
                rules_dir: data_dir.join("rules"),
                rules: rules.clone(),
                projected: Arc::new(move || {
                    let running = running.lock().unwrap();
                    let (_, progress) = running.as_ref()?;
                    let offset = progress.borrow().get(&0).copied();
                    offset
                }),
                metrics: metrics.clone(),
            };
            tokio::spawn(task.run(shutdown_rx.clone()));
            Some(metrics)
        }
        _ => None,
    };
    let admission = Arc::new(shiplog_ingest::admission::Admission::new(
        config.server.max_inflight_bytes,
    ));
    let mut registry = shiplog_web::metrics::server_registry(&ingestor, &metrics, &admission);
    if let Some(p) = &projection {
        registry.register_collector(Box::new(ProjectionSeries {
            slot: p.running.clone(),
            log: log.clone(),
        }));
    }
    if let Some(l) = &file_log {
        registry.register_collector(Box::new(crate::logretention::RetentionSeries {
            log: l.clone(),
            metrics: retention.clone(),
            max_bytes: config.log.retention.max_bytes,
        }));
    }
    if let Some(r) = &rules {
        registry.register_collector(Box::new(RulesSeries(r.clone())));
    }
    let state = Arc::new(AppState {
        ingestor,
        auth: shiplog_web::auth::Auth::new(tokens),
        metrics,
        body_limit: config.server.body_limit,
        started: Instant::now(),
        registry,
        query,
        admission,
        rules,
    });
    let app = app(&config, state.clone(), role);

    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    // The URL line is the contract with `make run` and the tests: keep its shape.
    println!("shiplog listening on http://{addr}/");
    info!(%addr, data_dir = %data_dir.display(), %role, "serving");
    serve_http(
        listener,
        app,
        config.server.request_timeout,
        shutdown_signal(),
    )
    .await;

    let _ = shutdown_tx.send(true);
    stop(
        &config,
        projection,
        &state.ingestor,
        (&dedup_dir, &dedup_covered),
        log,
    )
    .await
}

/// After the HTTP server stopped (the shutdown already signalled): waits for the projection,
/// writes the dedup snapshot (file log), and drains and syncs the log, each within the
/// grace period.
async fn stop(
    config: &Config,
    projection: Option<ProjectionSlot>,
    ingestor: &Ingestor,
    (dedup_dir, dedup_covered): (&std::path::Path, &DedupCovered),
    log: Arc<dyn Log>,
) -> Result<()> {
    let grace = config.server.shutdown_grace;
    info!("stopping the projection");
    if let Some(projection) = projection {
        match tokio::time::timeout(grace, projection.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "projection stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "projection task failed"),
            Err(_) => warn!("projection did not stop within the grace period"),
        }
    }
    if !config.log.is_kafka() {
        snapshot_dedup(ingestor, dedup_dir, dedup_covered).await;
    }
    info!("draining and syncing the log");
    match tokio::time::timeout(grace, log.close()).await {
        Ok(r) => r.context("closing the log")?,
        Err(_) => warn!("log did not close within the grace period"),
    }
    info!("stopped");
    Ok(())
}

/// Refuses what `serve` must not run: a role other than all on the file log (one process
/// owns it), `--demo` on a partial role, no tokens on a non-loopback address. Returns the
/// tokens of the config.
fn check_what_may_be_served(
    config: &Config,
    demo: bool,
    role: Role,
) -> Result<Vec<shiplog_web::auth::Token>> {
    if role != Role::All && !config.log.is_kafka() {
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
    Ok(tokens)
}

/// The ingest path over `log`, its dedup index restored: from the snapshot and the log
/// after it (file log), or rebuilt from the topic (Kafka, best effort, ingest roles only).
async fn start_ingest(
    config: &Config,
    log: Arc<dyn Log>,
    role: Role,
) -> Result<(Arc<Ingestor>, Arc<Metrics>)> {
    let metrics = Arc::new(Metrics::default());
    let ingestor = Arc::new(Ingestor::new(
        log,
        config.server.dedup_window,
        metrics.clone(),
    ));
    ingestor.set_dedup_max_keys(config.server.dedup_max_keys);
    let started = Instant::now();
    if !config.log.is_kafka() {
        let restored = ingestor
            .restore_dedup(&config.server.data_dir.join("dedup"))
            .await?;
        if let Some(why) = &restored.rejected {
            warn!(reason = %why, "dedup snapshot not used (deleted): reading the whole log");
        }
        info!(
            snapshot_keys = restored.snapshot_keys,
            records_checked = restored.records_checked,
            records_read = restored.records_read,
            log_keys = restored.log_keys,
            keys = ingestor.dedup_len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dedup index restored"
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
    Ok((ingestor, metrics))
}

/// The projection of a node that projects: a consumer group's (Kafka with
/// `log.consumer_group`), else one processor's (a Kafka processor whose Parquet directory
/// another one holds waits as a standby and takes over when it stops).
async fn start_role_projection(
    config: &Config,
    log: Arc<dyn Log>,
    role: Role,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<ProjectionSlot> {
    let kafka = config.log.is_kafka();
    let data_dir = &config.server.data_dir;
    let mut pc = projector_config(config)?;
    if kafka {
        // Any producer may write to the topic: validate, dedup across ingest nodes.
        pc.dedup_window = Some(config.server.dedup_window);
        pc.validate = true;
    }
    match (kafka, config.log.consumer_group.clone()) {
        (true, Some(group)) => {
            check_projection_mode(data_dir, true)?;
            shiplog_store::ensure_group_layout(data_dir)
                .context("cannot create the partitions' directory")?;
            let h = shiplog_kafka::run_group_projection(
                config.log.kafka_config()?,
                group,
                data_dir.clone(),
                pc,
                shutdown,
            )
            .await?;
            Ok(ProjectionSlot {
                running: Arc::new(std::sync::Mutex::new(Some((h.metrics, h.progress)))),
                task: h.task,
            })
        }
        _ => {
            if kafka {
                check_projection_mode(data_dir, false)?;
            }
            let standby = kafka && role == Role::Process;
            start_projection(log, data_dir.clone(), pc, shutdown, standby).await
        }
    }
}

/// DuckDB over the projection, for the query API, the dashboards and the rules.
fn open_queries(config: &Config) -> Result<Arc<QueryEngine>> {
    let data_dir = &config.server.data_dir;
    if config.log.is_kafka() && config.log.consumer_group.is_some() {
        shiplog_store::ensure_group_layout(data_dir)
            .context("cannot create the partitions' directory")?;
    }
    Ok(Arc::new(
        QueryEngine::open_with_memory(data_dir, config.server.query_memory_mb)
            .context("cannot open DuckDB")?,
    ))
}

/// The rules engine, its state snapshot in `<data_dir>/rules` (a start reads only the log
/// after it).
///
/// With `--demo` and no rules configured, the demo's rules run, all in dry run: the
/// decisions page then shows how they would have judged (their backtest), and nothing acts.
fn start_rules(
    config: &Config,
    demo: bool,
    ingestor: Arc<Ingestor>,
    query: Arc<QueryEngine>,
    shutdown: &tokio::sync::watch::Sender<bool>,
) -> Result<shiplog_rules::RulesEngine> {
    let mut settings = config.rules_settings.clone();
    let rules = if demo && config.rules.is_empty() {
        settings.dry_run = true;
        shiplog_bench::demo::rules().0
    } else {
        shiplog_rules::validate(&config.rules, &config.rules_settings)
            .map_err(anyhow::Error::msg)?
    };
    shiplog_rules::RulesEngine::start(
        rules,
        shiplog_rules::RulesSettings {
            state_dir: Some(config.server.data_dir.join("rules")),
            ..settings
        },
        ingestor,
        Some(query),
        shutdown.subscribe(),
    )
    .map_err(anyhow::Error::msg)
    .context("cannot start the rules engine")
}

/// The HTTP application of the node: web's routes (dashboards where the rules run), ingest
/// refused on roles that do not ingest, the request timeout, the loopback-host check when
/// no tokens are configured, and a trace span per request.
fn app(config: &Config, state: Arc<AppState>, role: Role) -> axum::Router {
    let mut app = router(state.clone());
    if state.rules.is_some() {
        let dashboards = Arc::new(shiplog_web::dashboards::DashboardState {
            rules: state.rules.clone(),
            ..shiplog_web::dashboards::DashboardState::new(
                state.auth.clone(),
                state.query.clone(),
                config.dashboards_dir.as_deref(),
                config.effective_thresholds(),
            )
        });
        app = app
            .merge(shiplog_web::dashboards::routes(dashboards))
            .merge(shiplog_web::compare::routes(
                state.clone(),
                config.build_budgets(),
            ));
    }
    if !role.ingests() {
        app = app.layer(axum::middleware::from_fn(crate::roles::refuse_ingest));
    }
    app.layer(TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        config.server.request_timeout,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.auth.clone(),
        shiplog_web::auth::loopback_host_only,
    ))
    .layer(TraceLayer::new_for_http())
}

/// How often serve considers a dedup snapshot, and how many keys committed since the last
/// one make it worth writing (a crash only means the next start reads more log).
const DEDUP_SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_secs(300);
const DEDUP_SNAPSHOT_AFTER_KEYS: u64 = 1_000_000;

/// Writes the dedup snapshot every [`DEDUP_SNAPSHOT_EVERY`] when at least
/// [`DEDUP_SNAPSHOT_AFTER_KEYS`] keys were committed since the last one, until shutdown.
async fn snapshot_dedup_periodically(
    ingestor: Arc<Ingestor>,
    dir: std::path::PathBuf,
    covered: Arc<DedupCovered>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(DEDUP_SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if ingestor.dedup_commits_since_snapshot() >= DEDUP_SNAPSHOT_AFTER_KEYS {
            snapshot_dedup(&ingestor, &dir, &covered).await;
        }
    }
}

/// Writes the dedup snapshot and says how it went (recording what it covers for log
/// retention); a failure only costs the next start more reading.
pub(crate) async fn snapshot_dedup(
    ingestor: &Ingestor,
    dir: &std::path::Path,
    covered: &DedupCovered,
) {
    let started = Instant::now();
    match ingestor.write_dedup_snapshot(dir).await {
        Ok(Some(w)) => {
            covered.written(&w.covered);
            info!(
            keys = w.keys,
            bytes = w.bytes,
            covered = ?w.covered,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dedup snapshot written"
            )
        }
        Ok(None) => info!("dedup snapshot is current"),
        Err(e) => warn!(
            error = %e,
            dir = %dir.display(),
            "dedup snapshot not written; the next start reads more of the log"
        ),
    }
}

/// Serves `app` until `shutdown` resolves, then waits for the open connections to finish
/// (idle ones are closed at once).
///
/// This is `axum::serve` (the same hyper-util connection, upgrades included) plus two
/// deadlines it lacks. axum sets no hyper timer, so a client that sent its request head
/// slowly, or nothing at all, held its connection (and a file descriptor) forever: the
/// `TimeoutLayer` only starts once the head is in. Here the first bytes must arrive within
/// `head_timeout` (`server.request_timeout`), and each request head as well (hyper's
/// header read timeout, which also closes idle keep-alive connections after that time);
/// the body is bounded by the `TimeoutLayer` (408).
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    head_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use std::io::ErrorKind;
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    // Connections watch `stop` to shut down gracefully; `done` is closed when all have.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A client that gave up during the handshake: nothing to do.
                Err(e) if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                ) => continue,
                // Out of file descriptors, typically: wait for some to be released, as
                // axum::serve does.
                Err(e) => {
                    tracing::error!(error = %e, "accept error");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (http, app, mut stop, done) =
            (http.clone(), app.clone(), stop_rx.clone(), done_rx.clone());
        tokio::spawn(async move {
            let io = TokioIo::new(FirstBytesDeadline::new(stream, head_timeout));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = http.serve_connection_with_upgrades(io, service);
            let mut connection = std::pin::pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(());
    drop(done_rx);
    done_tx.closed().await;
}

/// A new connection whose first bytes must come within a deadline: until they tell an
/// HTTP/1 request from an HTTP/2 preface (what hyper-util's protocol detection reads, with
/// no deadline of its own), a read that would wait past it fails with `TimedOut`. Then it
/// is the plain stream.
struct FirstBytesDeadline {
    stream: tokio::net::TcpStream,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Bytes read so far, all matching the HTTP/2 preface.
    matched: usize,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl FirstBytesDeadline {
    fn new(stream: tokio::net::TcpStream, timeout: std::time::Duration) -> Self {
        FirstBytesDeadline {
            stream,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            matched: 0,
        }
    }
}

impl tokio::io::AsyncRead for FirstBytesDeadline {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut this.stream).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return result;
        };
        match result {
            Poll::Pending if std::future::Future::poll(deadline.as_mut(), cx).is_ready() => {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within server.request_timeout",
                )))
            }
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let n = new.len().min(H2_PREFACE.len() - this.matched);
                let rest = &H2_PREFACE[this.matched..this.matched + n];
                if new[..n] != *rest || this.matched + n == H2_PREFACE.len() {
                    this.deadline = None;
                } else {
                    this.matched += n;
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for FirstBytesDeadline {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
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
