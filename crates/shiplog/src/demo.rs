//! `shiplog demo`: the demo generator (`shiplog_bench::demo`) written into an empty data
//! dir through the real ingest path.

use anyhow::{bail, Context, Result};
use chrono::Utc;

/// `shiplog demo`: fills an empty data dir (the server must be stopped).
pub fn run(config: &crate::config::Config) -> Result<()> {
    let data_dir = config.server.data_dir.clone();
    let _lock = crate::datadir::DataDirLock::acquire(&data_dir, "shiplog demo")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let log: std::sync::Arc<dyn shiplog_log::Log> = std::sync::Arc::new(crate::serve::open_file_log(config)?);
        let records: u64 = log.partitions().iter().map(|p| log.end_offset(*p)).sum();
        if records > 0 {
            bail!(
                "{} already holds {records} events; demo data goes into an empty data dir (use --data-dir)",
                data_dir.display()
            );
        }
        let metrics = std::sync::Arc::new(shiplog_ingest::Metrics::default());
        let ingestor = shiplog_ingest::Ingestor::new(log.clone(), config.server.dedup_window, metrics);
        ingestor.rebuild_dedup(0).await?;
        let n = shiplog_bench::demo::seed(&ingestor, Utc::now()).await?;
        log.close().await.context("closing the log")?;
        println!(
            "wrote {n} demo events ({} days, projects web-app, api, admin) to {}\nnow run: shiplog serve --data-dir {}",
            shiplog_bench::demo::DAYS,
            data_dir.display(),
            data_dir.display()
        );
        Ok(())
    })
}
