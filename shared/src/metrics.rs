//! One CloudWatch Embedded Metric Format record per request, written to the
//! function's own log: CloudWatch turns it into the metric
//! `ConsentSync/Deliveries` with the dimensions `Function` and `Outcome`,
//! without an extra API call or permission.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

pub(crate) const NAMESPACE: &str = "ConsentSync";
pub(crate) const METRIC: &str = "Deliveries";

/// The function's name under Lambda; `None` elsewhere (the CLI's local run,
/// tests of the handlers), where no record is written.
fn function_name() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|n| !n.is_empty())
    })
    .as_deref()
}

/// The record for one request of `function` that ended in `outcome`
/// (`updated`, `created`, `sent`, `skipped`, `rejected`, `failed`).
pub fn record(function: &str, outcome: &str, timestamp_ms: u128) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms as u64,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function", "Outcome"]],
                "Metrics": [{"Name": METRIC, "Unit": "Count"}]
            }]
        },
        "Function": function,
        "Outcome": outcome,
        METRIC: 1
    })
    .to_string()
}

/// Writes the record for one request, when running under Lambda.
pub fn count(outcome: &str) {
    if let Some(function) = function_name() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        println!("{}", record(function, outcome, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_metric_dimensions_and_values() {
        let record: serde_json::Value = serde_json::from_str(&record(
            "stack-didomi-to-dynamics",
            "updated",
            1_700_000_000_000,
        ))
        .unwrap();
        let metrics = &record["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(metrics["Namespace"], "ConsentSync");
        assert_eq!(metrics["Dimensions"], json!([["Function", "Outcome"]]));
        assert_eq!(metrics["Metrics"][0]["Name"], "Deliveries");
        assert_eq!(record["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(record["Function"], "stack-didomi-to-dynamics");
        assert_eq!(record["Outcome"], "updated");
        assert_eq!(record["Deliveries"], 1);
    }
}
