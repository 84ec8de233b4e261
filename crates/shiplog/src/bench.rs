//! `shiplog bench …`: the benchmarks are in `shiplog-bench`; this wires in what only the
//! binary may use: shiplog-web's router and dashboards engine, and the Kafka mock log.

use anyhow::{Context, Result};
use chrono::{Duration as CDuration, Utc};
use shiplog_bench::dashboards::{DashboardEngine, Page, PanelRun};
use shiplog_ingest::{Ingestor, Metrics};
use shiplog_log::Log;
use shiplog_store::QueryEngine;
use shiplog_web::dashboards::{self, engine, Ctx, DashboardState};
use shiplog_web::{router, AppState};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// shiplog's ingest API over `ingestor`, as `serve` mounts it (no tokens, no rules).
pub fn web_router(ingestor: Arc<Ingestor>, metrics: Arc<Metrics>) -> axum::Router {
    let admission = Arc::default();
    router(Arc::new(AppState {
        registry: shiplog_web::metrics::server_registry(&ingestor, &metrics, &admission),
        ingestor,
        auth: Default::default(),
        metrics,
        body_limit: shiplog_web::DEFAULT_BODY_LIMIT,
        started: Instant::now(),
        query: None,
        admission,
        rules: None,
    }))
}

/// `shiplog bench ingest`, on the embedded file log or (`kafka_mock`) on the Kafka log
/// against librdkafka's in-process mock cluster: 3 brokers, a topic of 3 partitions.
pub async fn ingest(
    mut args: shiplog_bench::ingest::IngestBenchArgs,
    kafka_mock: bool,
) -> Result<()> {
    let mut _mock = None;
    if kafka_mock {
        let mock = rdkafka::mocking::MockCluster::new(3)?;
        mock.create_topic(shiplog_kafka::DEFAULT_TOPIC, 3, 1)?;
        let kc = shiplog_kafka::KafkaLogConfig::new(mock.bootstrap_servers());
        _mock = Some(mock);
        let log = tokio::task::spawn_blocking(move || shiplog_kafka::KafkaLog::open(kc)).await??;
        args.log = Some((
            Arc::new(log) as Arc<dyn Log>,
            "Kafka mock cluster, idempotent producer, acks=all".into(),
        ));
    }
    shiplog_bench::ingest::ingest(args, web_router).await
}

/// The dashboards engine of the web server, over a projection.
pub struct WebDashboards {
    state: DashboardState,
    rt: tokio::runtime::Runtime,
    /// Per page: its label, dashboard name and context.
    pages: std::sync::Mutex<Vec<(String, String, Ctx)>>,
}

impl WebDashboards {
    /// The built-in dashboards, or a folder's overrides (`SHIPLOG_DASHBOARDS_DIR`, as
    /// `dashboards_dir` in the config).
    pub fn open(qe: Arc<QueryEngine>) -> Result<Box<dyn DashboardEngine>> {
        let state = DashboardState::new(
            shiplog_web::auth::Auth::new(vec![]),
            Some(qe),
            std::env::var_os("SHIPLOG_DASHBOARDS_DIR")
                .map(PathBuf::from)
                .as_deref(),
            engine::Thresholds::new(engine::default_thresholds(), &engine::default_budgets()),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        Ok(Box::new(WebDashboards {
            state,
            rt,
            pages: Default::default(),
        }))
    }
}

impl DashboardEngine for WebDashboards {
    fn pages(&self, deployment: &str) -> Result<Vec<Page>> {
        let now = Utc::now();
        let mut cases = Vec::new();
        for range in ["30d", "90d"] {
            let q: HashMap<String, String> = [("range".to_string(), range.to_string())].into();
            let ctx = dashboards::parse_ctx(&q, now).map_err(anyhow::Error::msg)?;
            for name in [
                "overview",
                "builds",
                "deploys",
                "migrations",
                "costs",
                "decisions",
            ] {
                cases.push((format!("{name} {range}"), name.to_string(), ctx.clone()));
            }
        }
        // as the `/deployments/{id}` route does
        let mut ctx = dashboards::parse_ctx(&HashMap::new(), now).map_err(anyhow::Error::msg)?;
        ctx.deployment = Some(deployment.to_string());
        ctx.range = "90d".into();
        ctx.from = ctx.to - CDuration::days(365);
        cases.push((format!("deployment {deployment}"), "deployment".into(), ctx));

        let mut pages = Vec::new();
        for (label, name, ctx) in &cases {
            let d = self
                .state
                .dashboards
                .get(name)
                .with_context(|| format!("no built-in dashboard {name}"))?;
            let mut panels = Vec::new();
            for p in d.panels.iter() {
                let spec = p.as_ref().map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
                panels.push(engine::expand(&spec.sql, ctx).map_err(anyhow::Error::msg)?);
            }
            pages.push(Page {
                label: label.clone(),
                panels,
            });
        }
        *self.pages.lock().unwrap() = cases;
        Ok(pages)
    }

    fn run(&self, index: usize) -> Vec<PanelRun> {
        let (_, name, ctx) = self.pages.lock().unwrap()[index].clone();
        let d = self.state.dashboards.get(&name).expect("listed by pages()");
        self.rt
            .block_on(dashboards::run_dashboard(&self.state, d, &ctx))
            .into_iter()
            .map(|o| PanelRun {
                rows: o.data.rows.len(),
                value: o.data.value,
                error: o.data.error.clone(),
            })
            .collect()
    }
}
