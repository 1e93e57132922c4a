//! `consent-sync watch [--didomi-export SOURCE] [--repair]`: the watch run
//! once from a terminal, printed one figure per line (`--json`: the report).

use std::sync::Arc;
use std::time::Duration;

use consent_sync::didomi::export::Export;
use consent_sync::watch::{self, Clients, Settings};
use consent_sync::{Config, Deadline};

use crate::error::CliError;
use crate::report::Report;

/// As long as the function may take (Lambda's most).
const WATCH_BUDGET: Duration = Duration::from_secs(15 * 60);

pub async fn run(
    config: Config,
    didomi_export: Option<String>,
    role_arn: Option<String>,
    repair: bool,
    sample: usize,
    name: String,
) -> Result<Report, CliError> {
    let sample = watch::sample_size(sample)
        .map_err(|reason| CliError::Usage(format!("--sample {reason}")))?;
    let export = didomi_export
        .filter(|s| !s.trim().is_empty())
        .map(|source| Export::parse(&source, role_arn))
        .transpose()?;
    let settings = Settings {
        export,
        sample,
        repair,
        registration: name,
    };
    let report = watch::run(
        &Arc::new(config),
        &Clients::new(),
        &settings,
        Deadline::after(WATCH_BUDGET),
    )
    .await;
    // Whatever it found, a run that ran succeeded (DESIGN §12); one that
    // could not make a check did not.
    let mut printed = Report::success(report.to_text(), report.to_json());
    if !report.unchecked.is_empty() {
        printed.ok = false;
        printed.reason = Some(format!(
            "the watch could not check: {}",
            watch::listed(&report.unchecked).join("; ")
        ));
    }
    Ok(printed)
}
