use super::*;
use crate::judge::Limit;

#[derive(Deserialize)]
struct File {
    rules: Vec<RuleConfig>,
}

fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
    validate(&f.rules, &RulesSettings::default()).map_err(|e| e.to_string())
}

#[test]
fn the_documented_examples_parse() {
    let rules = parse(
        r#"
[[rules]]
name = "rollback-on-errors"
kind = "rollback"
project = "web-app"
env = "production"
metric = "error_rate"
window = "10m"
baseline = "previous_deployment"
max_ratio = 1.5
min_samples = 5
dry_run = false
action = { command = ["vercel", "rollback", "{previous_url}", "--yes"], timeout = "60s" }

[[rules]]
name = "fixed"
kind = "rollback"
project = "web-app"
env = "production"
metric = "latency_p95"
window = "2s"
baseline = 0.02
max_ratio = 2
method = "threshold"
action = { webhook = "https://example.com/hook", secret_env = "SHIPLOG_WEBHOOK_SECRET" }

[[rules]]
name = "guard"
kind = "rollback"
project = "web-app"
env = "production"
window = "10m"
max_ratio = 1.5
confidence = 0.995
metrics = [
  { name = "error_rate", critical = true },
  { name = "latency_p95", max_ratio = 1.3, min_samples = 8 },
  "api_cost_per_request",
]
action = { command = ["true"] }

[[rules]]
name = "slow-builds"
kind = "threshold"
project = "web-app"
metric = "build_duration_p95"
max_value = 120000
schedule = "*/1 * * * *"

[[rules]]
name = "spend"
kind = "budget"
project = "web-app"
budget_usd = 200
schedule = "0 */5 * * * *"

[[rules]]
name = "mig"
kind = "migration_failed"
project = "web-app"
"#,
    )
    .unwrap();
    assert_eq!(rules.len(), 6);
    let r0 = rules[0].rollback().unwrap();
    assert_eq!(r0.window, Duration::from_secs(600));
    assert!((r0.alpha - 0.01).abs() < 1e-12, "default confidence 0.99");
    assert_eq!(r0.metrics[0].method, Method::Sequential);
    assert_eq!(r0.metrics[0].limit, Limit::Ratio(1.5));
    assert_eq!(r0.metrics[0].aggregate, Aggregate::Mean);
    let r1 = rules[1].rollback().unwrap();
    assert_eq!(r1.fixed_baseline, Some(0.02));
    assert_eq!(r1.metrics[0].aggregate, Aggregate::P95);
    assert_eq!(r1.metrics[0].method, Method::Threshold);
    assert!(matches!(rules[1].action, Some(Action::Webhook { .. })));
    let g = rules[2].rollback().unwrap();
    assert_eq!(g.metrics.len(), 3);
    assert!(g.metrics[0].critical && !g.metrics[1].critical);
    assert_eq!(g.metrics[1].limit, Limit::Ratio(1.3));
    assert_eq!(g.metrics[1].min_samples, 8);
    assert_eq!(g.metrics[2].limit, Limit::Ratio(1.5));
    assert_eq!(g.metrics[2].requests_from.as_deref(), Some("error_rate"));
    assert!((g.alpha - 0.005).abs() < 1e-12);
    assert!(rules[3].schedule().is_some());
    assert_eq!(rules[5].kind(), RuleKind::MigrationFailed);
}

fn err(text: &str) -> String {
    parse(text).unwrap_err()
}

#[test]
fn errors_name_the_rule_and_the_key() {
    let base = "[[rules]]\nname = \"r1\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"production\"\nmetric = \"error_rate\"\nwindow = \"1m\"\n";
    let e = err(&format!("{base}max_ratio = 1.5\n"));
    assert!(e.contains("rules[0] (r1): action"), "{e}");
    let e = err(&format!("{base}action = {{ command = [\"x\"] }}\n"));
    assert!(e.contains("rules[0] (r1): max_ratio"), "{e}");
    let e = err(&format!(
        "{base}max_ratio = 1.5\nbaseline = \"yesterday\"\naction = {{ command = [\"x\"] }}\n"
    ));
    assert!(e.contains("baseline") && e.contains("yesterday"), "{e}");
    let e = err(&format!(
        "{base}max_ratio = 1.5\naction = {{ command = [\"x\", \"{{deploy_id}}\"] }}\n"
    ));
    assert!(
        e.contains("action.command[1]") && e.contains("deploy_id"),
        "{e}"
    );
    let e = err(&format!(
        "{base}max_ratio = 1.5\naction = {{ command = [\"{{previous_url}}\"] }}\n"
    ));
    assert!(e.contains("action.command[0]"), "{e}");
    let e = err(&format!(
        "{base}max_ratio = 1.5\naction = {{ command = [\"x\"], webhook = \"https://a\" }}\n"
    ));
    assert!(e.contains("not both"), "{e}");
    // A key of another kind is refused by the kind's struct, by name.
    let e = err(&format!(
        "{base}max_ratio = 1.5\nschedule = \"* * * * *\"\naction = {{ command = [\"x\"] }}\n"
    ));
    assert!(e.contains("schedule"), "{e}");
    let e = err(&format!("{base}max_ratio = 1.5\nmax_ration = 2\n"));
    assert!(e.contains("max_ration"), "{e}");
    // A metric of a list without a limit (and none on the rule) is named by its place.
    let many = "[[rules]]\nname = \"r1\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"production\"\nwindow = \"1m\"\naction = { command = [\"x\"] }\nmetrics = [{ name = \"a\", max_ratio = 2.0 }, \"latency_p95\"]\n";
    let e = err(many);
    assert!(
        e.contains("rules[0] (r1): metrics[1].max_ratio") && e.contains("\"latency_p95\""),
        "{e}"
    );
    let e = err(&format!(
        "{base}max_ratio = 1.5\nconfidence = 1.5\naction = {{ command = [\"x\"] }}\n"
    ));
    assert!(e.contains("rules[0] (r1): confidence"), "{e}");
    let e = err(&format!(
        "{base}max_ratio = 1.5\nmethod = \"bayes\"\naction = {{ command = [\"x\"] }}\n"
    ));
    assert!(e.contains("bayes"), "{e}");
    let e = err(&format!(
        "{base}baseline = 0.01\nmax_ratio = 2\nmethod = \"mann_whitney\"\naction = {{ command = [\"x\"] }}\n"
    ));
    assert!(e.contains("rules[0] (r1): method"), "{e}");
    let e = err("[[rules]]\nname = \"m\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"e\"\nwindow = \"1m\"\nmax_ratio = 2\nmetrics = [{ name = \"a\" }, { name = \"b\", max_ratio = -1 }]\naction = { command = [\"x\"] }\n");
    assert!(e.contains("rules[0] (m): metrics[1].max_ratio"), "{e}");
    let e = err("[[rules]]\nname = \"m\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"e\"\nwindow = \"1m\"\nmax_ratio = 2\nmetric = \"a\"\nmetrics = [\"b\"]\naction = { command = [\"x\"] }\n");
    assert!(
        e.contains("rules[0] (m): metrics: set metric or metrics"),
        "{e}"
    );
    let e = err("[[rules]]\nname = \"t\"\nkind = \"threshold\"\nproject = \"p\"\nmetric = \"nope\"\nmax_value = 1\nschedule = \"* * * * *\"\n");
    assert!(
        e.contains("rules[0] (t): metric") && e.contains("unknown metric"),
        "{e}"
    );
    let e = err("[[rules]]\nname = \"t\"\nkind = \"threshold\"\nproject = \"p\"\nmetric = \"bundle_bytes\"\nmax_value = 1\nschedule = \"every minute\"\n");
    assert!(e.contains("rules[0] (t): schedule"), "{e}");
    let e = err(
        "[[rules]]\nname = \"b\"\nkind = \"budget\"\nproject = \"p\"\nschedule = \"* * * * *\"\n",
    );
    assert!(e.contains("rules[0] (b): budget_usd"), "{e}");
    let e = err("[[rules]]\nname = \"b\"\nkind = \"budget\"\nproject = \"p\"\nbudget_usd = 5\nschedule = \"* * * * *\"\nmax_ratio = 2\n");
    assert!(e.contains("max_ratio"), "{e}");
}

#[test]
fn five_field_cron_gets_seconds() {
    assert!(parse_schedule("*/1 * * * *").is_ok());
    assert!(parse_schedule("0 */1 * * * *").is_ok());
    assert!(parse_schedule("nope").is_err());
}

/// The source examples of docs/rules.md ("Reading metrics from Prometheus or an HTTP JSON
/// API") are valid rules.
#[test]
fn the_documented_sources_parse() {
    let doc = include_str!("../../../../docs/rules.md");
    let section = doc
        .split("## Reading metrics from Prometheus or an HTTP JSON API")
        .nth(1)
        .expect("the section")
        .split("\n## ")
        .next()
        .unwrap();
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    let head = r#"
[[rules]]
name = "r"
kind = "rollback"
project = "web-app"
env = "production"
metric = "error_rate"
window = "10m"
max_ratio = 1.5
action = { command = ["true"] }
"#;
    let mut kinds = Vec::new();
    for b in blocks {
        let text = if b.trim_start().starts_with("[rules.source]") {
            format!("{head}\n{b}")
        } else {
            b.to_string()
        };
        let rules = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let src = rules[0].rollback().unwrap().metrics[0]
            .source
            .clone()
            .expect("a source");
        kinds.push(src.name());
    }
    assert_eq!(kinds, vec!["prometheus", "http_json", "http_json"]);
}

#[test]
fn source_errors_name_the_rule_and_key() {
    let base = r#"
[[rules]]
name = "r"
kind = "rollback"
project = "web-app"
env = "production"
window = "10m"
max_ratio = 1.5
action = { command = ["true"] }
"#;
    let e = parse(&format!(
        "{base}metrics = [\"error_rate\"]\nsource = {{ prometheus = \"http://p\", query = \"q\" }}\n"
    ))
    .unwrap_err();
    assert!(e.contains("rules[0] (r): source:"), "{e}");
    let e = parse(&format!(
        "{base}metric = \"error_rate\"\nsource = {{ prometheus = \"http://p\", query = 'x{{v={{commit}}}}' }}\n"
    ))
    .unwrap_err();
    assert!(e.contains("rules[0] (r): source.query:"), "{e}");
    let e = parse(&format!(
        "{base}metrics = [{{ name = \"latency_p95\", source = {{ http = \"https://x\", value = \"a\", query = \"q\" }} }}]\n"
    ))
    .unwrap_err();
    assert!(e.contains("rules[0] (r): metrics[0].source.query:"), "{e}");
}
