//! End-to-end test of API cost against the real binary: usage objects exactly as OpenAI
//! Chat Completions, OpenAI Responses and Anthropic Messages return them (plus one record
//! with a client cost and one of an unknown model) are projected into token columns and
//! priced from the shipped table; `shiplog reprice` is refused while the server runs, and,
//! stopped, re-prices history with a modified table (the client cost is kept).

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{http, query, TestServer, BIN};

fn cost_event(id: &str, data: Value) -> Value {
    json!({"id": id, "kind": "api_cost", "source": "app/worker", "project": "web-app",
           "env": "production", "time": "2026-11-20T10:00:00Z", "data": data})
}

fn events() -> Vec<Value> {
    vec![
        // OpenAI Chat Completions: `usage` of a chat.completion object, as returned.
        cost_event(
            "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            json!({"provider": "openai", "model": "gpt-4o-2024-08-06", "feature": "summaries",
            "usage": {
                "prompt_tokens": 1200000,
                "completion_tokens": 300000,
                "total_tokens": 1500000,
                "prompt_tokens_details": {"cached_tokens": 1000000, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
            }}),
        ),
        // OpenAI Responses: `usage` of a response object, as returned.
        cost_event(
            "resp_67ccd3a9da748190baa7f1570fe91ac6",
            json!({"provider": "openai", "model": "o4-mini-2025-04-16", "feature": "agent",
            "usage": {
                "input_tokens": 500000,
                "input_tokens_details": {"cached_tokens": 400000},
                "output_tokens": 100000,
                "output_tokens_details": {"reasoning_tokens": 64000},
                "total_tokens": 600000
            }}),
        ),
        // Anthropic Messages: `usage` of a message, as returned.
        cost_event(
            "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            json!({"provider": "anthropic", "model": "claude-sonnet-4-5-20250929", "feature": "chat",
            "usage": {
                "input_tokens": 100000,
                "cache_creation_input_tokens": 200000,
                "cache_read_input_tokens": 1000000,
                "cache_creation": {"ephemeral_5m_input_tokens": 200000, "ephemeral_1h_input_tokens": 0},
                "output_tokens": 50000,
                "server_tool_use": {"web_search_requests": 0},
                "service_tier": "standard"
            }}),
        ),
        // A cost the client computed itself: it always wins.
        cost_event(
            "chatcmpl-client-cost",
            json!({"provider": "openai", "model": "gpt-4.1", "cost_usd": 0.42,
                "price_version": "acme-contract-2026", "requests": 3,
                "usage": {"prompt_tokens": 100000, "completion_tokens": 10000, "total_tokens": 110000}}),
        ),
        // A model the shipped table does not know.
        cost_event(
            "mistral-1",
            json!({"provider": "mistral", "model": "mistral-large-latest",
                "usage": {"prompt_tokens": 100000, "completion_tokens": 50000, "total_tokens": 150000}}),
        ),
    ]
}

const SQL: &str = "SELECT id, input_tokens, cached_tokens, cache_write_tokens, output_tokens, \
    reasoning_tokens, requests, round(cost_usd, 6), cost_source, price_version \
    FROM api_costs ORDER BY id";

fn row<'a>(rows: &'a [Vec<Value>], id: &str) -> &'a [Value] {
    rows.iter()
        .find(|r| r[0] == id)
        .unwrap_or_else(|| panic!("no row {id}: {rows:?}"))
}

fn cents(v: &Value) -> i64 {
    (v.as_f64().unwrap_or_else(|| panic!("not a cost: {v}")) * 100.0).round() as i64
}

fn reprice(data: &std::path::Path, prices: Option<&std::path::Path>) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("reprice").arg("--data-dir").arg(data);
    if let Some(p) = prices {
        cmd.arg("--prices").arg(p);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_usage_is_priced_and_repriced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = http();
    let mut server = TestServer::spawn(&data, &[]);
    let r = client
        .post(format!("{}/v1/events", server.url))
        .json(&events())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = query(&client, &server.url, SQL).await;
        if rows.len() == 5 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), 5, "{rows:?}");

    // Chat Completions: prompt_tokens include the cached ones.
    // 200k × $2.50 + 1M × $1.25 + 300k × $10 per million = $4.75
    let r = row(&rows, "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG");
    assert_eq!(
        r[1..7],
        [
            json!(1200000),
            json!(1000000),
            Value::Null,
            json!(300000),
            json!(0),
            json!(1)
        ]
    );
    assert_eq!(cents(&r[7]), 475);
    assert_eq!(r[8], "priced");
    assert_eq!(r[9], "prices.toml 2024-08-06 openai/gpt-4o-2024-08-06");

    // Responses: 100k × $1.10 + 400k × $0.275 + 100k × $4.40 = $0.66
    let r = row(&rows, "resp_67ccd3a9da748190baa7f1570fe91ac6");
    assert_eq!(
        r[1..7],
        [
            json!(500000),
            json!(400000),
            Value::Null,
            json!(100000),
            json!(64000),
            json!(1)
        ]
    );
    assert_eq!(cents(&r[7]), 66);
    assert_eq!(r[9], "prices.toml 2025-04-16 openai/o4-mini");

    // Anthropic: input_tokens exclude the cache; normalised input = 100k + 200k + 1M.
    // 100k × $3 + 200k × $3.75 + 1M × $0.30 + 50k × $15 = $2.10
    let r = row(&rows, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(
        r[1..7],
        [
            json!(1300000),
            json!(1000000),
            json!(200000),
            json!(50000),
            Value::Null,
            json!(1)
        ]
    );
    assert_eq!(cents(&r[7]), 210);
    assert_eq!(r[9], "prices.toml 2025-09-29 anthropic/claude-sonnet-4-5");

    // The client's cost and version are kept; tokens still come from usage.
    let r = row(&rows, "chatcmpl-client-cost");
    assert_eq!(
        r[1..7],
        [
            json!(100000),
            Value::Null,
            Value::Null,
            json!(10000),
            Value::Null,
            json!(3)
        ]
    );
    assert_eq!(r[7], json!(0.42));
    assert_eq!(
        (&r[8], &r[9]),
        (&json!("client"), &json!("acme-contract-2026"))
    );

    let r = row(&rows, "mistral-1");
    assert_eq!((&r[1], &r[4]), (&json!(100000), &json!(50000)));
    assert_eq!(
        (&r[7], &r[8], &r[9]),
        (&Value::Null, &json!("unpriced"), &Value::Null)
    );

    let total = query(
        &client,
        &server.url,
        "SELECT round(sum(cost_usd), 2) FROM api_costs",
    )
    .await;
    assert_eq!(cents(&total[0][0]), 475 + 66 + 210 + 42);

    // reprice is refused while serve holds the data dir.
    let out = reprice(&data, None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(server.stop(), Some(0));

    // New prices: gpt-4o-2024-08-06 and Sonnet 4.5 change from 2026-01-01 on, Mistral is added.
    let prices = dir.path().join("modified-prices.toml");
    std::fs::write(
        &prices,
        r#"
[[price]]
provider = "openai"
model = "gpt-4o-2024-08-06"
effective_from = "2026-01-01"
input = 2.00
cached_input = 1.00
output = 8.00
source = "test table"

[[price]]
provider = "anthropic"
model = "claude-sonnet-4-5"
effective_from = "2026-06-01"
input = 6.00
cache_write = 7.50
cached_input = 0.60
output = 30.00
source = "test table"

[[price]]
provider = "mistral"
model = "mistral-large"
effective_from = "2025-01-01"
input = 2.00
output = 6.00
source = "test table"
"#,
    )
    .unwrap();
    let out = reprice(&data, Some(&prices));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // before and after per provider and model, and the totals
    for s in [
        "claude-sonnet-4-5-20250929",
        "4.750000",
        "3.800000",
        "2.100000",
        "4.200000",
        "7.930000",
        "9.580000",
    ] {
        assert!(stdout.contains(s), "{s} missing:\n{stdout}");
    }
    assert!(stderr.contains("7.930000 → 9.580000 USD"), "{stderr}");

    let server = TestServer::spawn(&data, &[]);
    let rows = query(&client, &server.url, SQL).await;
    assert_eq!(rows.len(), 5);
    // 200k × $2 + 1M × $1 + 300k × $8 = $3.80
    let r = row(&rows, "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG");
    assert_eq!(cents(&r[7]), 380);
    assert_eq!(
        r[9],
        "modified-prices.toml 2026-01-01 openai/gpt-4o-2024-08-06"
    );
    // unchanged price
    assert_eq!(
        cents(&row(&rows, "resp_67ccd3a9da748190baa7f1570fe91ac6")[7]),
        66
    );
    // 100k × $6 + 200k × $7.50 + 1M × $0.60 + 50k × $30 = $4.20
    let r = row(&rows, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
    assert_eq!(cents(&r[7]), 420);
    assert_eq!(
        r[9],
        "modified-prices.toml 2026-06-01 anthropic/claude-sonnet-4-5"
    );
    // the client's cost is kept
    let r = row(&rows, "chatcmpl-client-cost");
    assert_eq!((&r[7], &r[8]), (&json!(0.42), &json!("client")));
    // now priced: 100k × $2 + 50k × $6 = $0.50
    let r = row(&rows, "mistral-1");
    assert_eq!((cents(&r[7]), &r[8]), (50, &json!("priced")));
}
