//! The rules engine's series: how much its state holds, what its caps dropped, and the
//! failed reads of its sources (Prometheus, HTTP JSON).

use super::{counter, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use shiplog_rules::RulesEngine;

pub struct RulesSeries(pub RulesEngine);

impl std::fmt::Debug for RulesSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RulesSeries")
    }
}

impl Collector for RulesSeries {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let e = &mut e;
        gauge(
            e,
            "shiplog_rules_tracked_deployments",
            "Deployments the rules state holds (bounded, docs/rules.md).",
            s.deployments as u64,
        )?;
        gauge(
            e,
            "shiplog_rules_samples",
            "Check samples the rules state holds for open windows and baselines.",
            s.samples as u64,
        )?;
        counter(
            e,
            "shiplog_rules_samples_dropped",
            "Check samples not kept because of a cap (per deployment and check name, or in all).",
            s.samples_dropped,
        )?;
        counter(
            e,
            "shiplog_rules_open_windows_evicted",
            "Deployments forgotten under the deployment cap before a rule judged them.",
            s.open_evicted,
        )?;
        let errors = self.0.source_errors();
        if errors.is_empty() {
            return Ok(());
        }
        let mut family = e.encode_descriptor(
            "shiplog_rules_source_errors",
            "Failed reads of rollback rules' sources (no sample), by rule, source and class (unreachable, error, no_data).",
            None,
            MetricType::Counter,
        )?;
        for ((rule, source, class), n) in errors {
            let labels = [
                ("rule", rule.as_str()),
                ("source", source),
                ("class", class),
            ];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
