//! The cost of an `api_cost` record, as the projection prices it: `cost_usd` when the
//! collector sent it, else priced from the price table at the record's time (tokens from
//! the token fields or the provider's `usage` object).

use shiplog_events::Event;
use shiplog_store::pricing::{price_record, CostInput, PriceTable, Tokens};

fn count(e: &Event, k: &str) -> Option<i64> {
    e.data.get(k).and_then(serde_json::Value::as_i64)
}

/// The record's cost in US dollars (None: no cost and no price for its model).
pub fn usd(e: &Event, prices: Option<&PriceTable>) -> Option<f64> {
    let shipped;
    let table = match prices {
        Some(t) => t,
        None => {
            shipped = PriceTable::shipped();
            &shipped
        }
    };
    let at = e.event_time().or(e.received_at)?;
    let out = price_record(
        &CostInput {
            provider: e.data_str("provider"),
            model: e.data_str("model"),
            at_micros: at.timestamp_micros(),
            explicit: Tokens {
                input: count(e, "input_tokens"),
                output: count(e, "output_tokens"),
                cached: count(e, "cached_tokens"),
                cache_write: count(e, "cache_write_tokens"),
                reasoning: count(e, "reasoning_tokens"),
                cache_write_1h: None,
            },
            requests: count(e, "requests"),
            usage: e.data.get("usage").filter(|u| u.is_object()),
            cost_usd: e.data.get("cost_usd").and_then(serde_json::Value::as_f64),
            price_version: e.data_str("price_version"),
        },
        table,
    );
    out.cost_usd.filter(|c| c.is_finite())
}
