//! The watch (DESIGN §12): a daily look at whether the sync still works
//! when nobody is calling it. Registration health (the Dataverse webhook as
//! `webhook status` sees it, and its failed system jobs of the last 24
//! hours), drift (Didomi's batch export against every contact, or the
//! contacts modified in the last 24 hours against their Didomi users),
//! optional repair from Didomi, and one report with six figures, each
//! named by its CloudWatch metric.
//!
//! The comparison and the writes are reconcile's (`crate::reconcile`): the
//! watch judges and repairs a contact by the same rule.

mod sample;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::config::ConfigError;
use crate::config_source::{ConfigCache, ConfigSource};
use crate::dataverse::registration::{mismatches, Desired, DEFAULT_NAME};
use crate::dataverse::DataverseClient;
use crate::didomi::export::Export;
use crate::didomi::DidomiClient;
use crate::invocation::InvocationError;
use crate::reconcile::{Counts, Options, Reconcile, Truth};
use crate::{Config, Deadline, RetryPolicy};

/// The metric namespace and the value of the `Function` dimension.
pub(crate) const FUNCTION: &str = "consent-watch";

pub const DIDOMI_EXPORT: &str = "DIDOMI_EXPORT";
pub const DIDOMI_EXPORT_ROLE_ARN: &str = "DIDOMI_EXPORT_ROLE_ARN";
pub(crate) const WATCH_SAMPLE: &str = "WATCH_SAMPLE";
pub const WATCH_REPAIR: &str = "WATCH_REPAIR";
pub const DEFAULT_SAMPLE: usize = 2000;
/// The most contacts one run samples: one page of Dataverse's, and what 16
/// Didomi lookups at a time get through well inside Lambda's 15 minutes.
pub(crate) const MAX_SAMPLE: usize = 5000;

/// `n` when one run can sample that many contacts (`WATCH_SAMPLE`,
/// `--sample`).
pub fn sample_size(n: usize) -> Result<usize, String> {
    if (1..=MAX_SAMPLE).contains(&n) {
        Ok(n)
    } else {
        Err(sample_range())
    }
}

fn sample_range() -> String {
    format!("must be a whole number of contacts from 1 to {MAX_SAMPLE}")
}

/// The window of "recently": failed jobs and modified contacts.
const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Problems listed in a report; the rest are counted. A repair of a large
/// export that fails for one reason must not make an answer of megabytes.
const LISTED_PROBLEMS: usize = 20;

/// Kept back from the deadline to write the report.
const REPORT_RESERVE: Duration = Duration::from_secs(5);

/// What a run looks at, from the environment or the CLI's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub export: Option<Export>,
    pub sample: usize,
    pub repair: bool,
    /// The service endpoint name `webhook register` used.
    pub registration: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            export: None,
            sample: DEFAULT_SAMPLE,
            repair: false,
            registration: DEFAULT_NAME.to_string(),
        }
    }
}

impl Settings {
    /// `DIDOMI_EXPORT`, `DIDOMI_EXPORT_ROLE_ARN`, `WATCH_SAMPLE`,
    /// `WATCH_REPAIR` (`none`, the default, or `from-didomi`).
    pub fn from_env() -> Result<Settings, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The same, from any source of variables.
    pub(crate) fn from_vars(
        read: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let var = |name: &str| read(name).filter(|v| !v.trim().is_empty());
        let export = match var(DIDOMI_EXPORT) {
            Some(source) => Some(Export::parse(&source, var(DIDOMI_EXPORT_ROLE_ARN)).map_err(
                |e| ConfigError::Environment {
                    name: DIDOMI_EXPORT,
                    reason: e.to_string(),
                },
            )?),
            None => None,
        };
        let sample = match var(WATCH_SAMPLE) {
            None => DEFAULT_SAMPLE,
            Some(n) => n
                .trim()
                .parse::<usize>()
                .map_err(|_| sample_range())
                .and_then(sample_size)
                .map_err(|reason| ConfigError::Environment {
                    name: WATCH_SAMPLE,
                    reason: format!(
                        "{reason}, not {}",
                        crate::input::cut_quoted(&format!("{n:?}"))
                    ),
                })?,
        };
        let repair = match var(WATCH_REPAIR).as_deref().map(str::trim) {
            None | Some("none") => false,
            Some("from-didomi") => true,
            Some(other) => {
                return Err(ConfigError::Environment {
                    name: WATCH_REPAIR,
                    reason: format!(
                        "must be none or from-didomi, not {}",
                        crate::input::cut_quoted(&format!("{other:?}"))
                    ),
                })
            }
        };
        Ok(Settings {
            export,
            sample,
            repair,
            ..Settings::default()
        })
    }
}

/// The six figures, in the order they are reported.
pub(crate) const FIGURES: [&str; 6] = [
    "ContactsChecked",
    "ContactsDiffering",
    "ContactsWithoutDidomiUser",
    "ContactsRepaired",
    "RegistrationMismatch",
    "FailedWebhookJobs",
];

/// What one run found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub contacts_checked: usize,
    pub contacts_differing: usize,
    pub contacts_without_didomi_user: usize,
    pub contacts_repaired: usize,
    /// What differs between the registration and the configuration.
    pub registration_mismatches: Vec<String>,
    pub failed_webhook_jobs: usize,
    /// The run stopped at its deadline: the figures cover what it checked.
    pub partial: bool,
    /// `export` or `recently modified contacts`.
    pub drift_source: String,
    pub repair: bool,
    /// Checks that could not be made: the run did not do its job.
    pub unchecked: Vec<String>,
    /// Repairs that failed.
    pub problems: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    /// The six figures by metric name.
    pub fn figures(&self) -> [(&'static str, usize); 6] {
        let values = [
            self.contacts_checked,
            self.contacts_differing,
            self.contacts_without_didomi_user,
            self.contacts_repaired,
            usize::from(!self.registration_mismatches.is_empty()),
            self.failed_webhook_jobs,
        ];
        std::array::from_fn(|i| (FIGURES[i], values[i]))
    }

    /// The report as the function answers and logs it: the figures at the
    /// top level under their metric names, then the details.
    pub fn to_json(&self) -> Value {
        let mut report = Map::new();
        for (name, value) in self.figures() {
            report.insert(name.into(), json!(value));
        }
        report.insert("partial".into(), json!(self.partial));
        report.insert("drift_source".into(), json!(self.drift_source));
        report.insert(
            "repair".into(),
            json!(if self.repair { "from-didomi" } else { "none" }),
        );
        report.insert(
            "registration_mismatches".into(),
            json!(self.registration_mismatches),
        );
        report.insert("unchecked".into(), json!(listed(&self.unchecked)));
        report.insert("problems".into(), json!(listed(&self.problems)));
        report.insert("problems_total".into(), json!(self.problems.len()));
        report.insert("elapsed_ms".into(), json!(self.elapsed.as_millis() as u64));
        Value::Object(report)
    }

    /// The Embedded Metric Format record of the six figures.
    pub(crate) fn metric_record(&self, timestamp_ms: u64) -> String {
        let mut record = json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": crate::metrics::NAMESPACE,
                    "Dimensions": [["Function"]],
                    "Metrics": FIGURES.iter().map(|name| json!({"Name": name, "Unit": "Count"})).collect::<Vec<_>>()
                }]
            },
            "Function": FUNCTION,
        });
        for (name, value) in self.figures() {
            record[name] = json!(value);
        }
        record.to_string()
    }

    /// One figure per line, `MetricName: number`, then what needs a look.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (name, value) in self.figures() {
            text.push_str(&format!("{name}: {value}\n"));
        }
        if self.partial {
            text.push_str(
                "Partial: true (stopped at the time limit; the figures cover what was checked)\n",
            );
        }
        for mismatch in &self.registration_mismatches {
            text.push_str(&format!("  registration: {mismatch}\n"));
        }
        for unchecked in listed(&self.unchecked) {
            text.push_str(&format!("  not checked: {unchecked}\n"));
        }
        for problem in listed(&self.problems) {
            text.push_str(&format!("  repair failed: {problem}\n"));
        }
        if self.problems.len() > LISTED_PROBLEMS {
            text.push_str(&format!(
                "  … {} more repairs failed\n",
                self.problems.len() - LISTED_PROBLEMS
            ));
        }
        text
    }
}

pub fn listed(problems: &[String]) -> &[String] {
    &problems[..problems.len().min(LISTED_PROBLEMS)]
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The clients a run uses, built once per process.
pub struct Clients {
    pub dataverse: Arc<DataverseClient>,
    pub didomi: Arc<DidomiClient>,
}

impl Clients {
    pub fn new() -> Self {
        let http = crate::http_client();
        Clients {
            dataverse: Arc::new(DataverseClient::new(http.clone(), RetryPolicy::default())),
            didomi: Arc::new(DidomiClient::new(http, RetryPolicy::default())),
        }
    }
}

impl Default for Clients {
    fn default() -> Self {
        Self::new()
    }
}

/// One run of the watch, within `deadline`.
pub async fn run(
    config: &Arc<Config>,
    clients: &Clients,
    settings: &Settings,
    deadline: Deadline,
) -> Report {
    let started = Instant::now();
    let mut report = Report {
        repair: settings.repair,
        ..Report::default()
    };
    let since = now_seconds() - WINDOW.as_secs() as i64;
    registration_health(config, clients, settings, deadline, since, &mut report).await;
    match &settings.export {
        Some(export) => {
            drift_from_export(config, clients, export, settings, deadline, &mut report).await
        }
        None => {
            sample::drift_of_recent_contacts(
                config,
                clients,
                settings,
                deadline,
                since,
                &mut report,
            )
            .await
        }
    }
    report.elapsed = started.elapsed();
    report
}

async fn registration_health(
    config: &Config,
    clients: &Clients,
    settings: &Settings,
    deadline: Deadline,
    since: i64,
    report: &mut Report,
) {
    let dataverse = clients.dataverse.session(config, deadline);
    let registration = match dataverse.registration(&settings.registration).await {
        Ok(registration) => registration,
        Err(e) => {
            report
                .unchecked
                .push(format!("the webhook registration could not be read: {e}"));
            return;
        }
    };
    let desired = Desired::new(config, &settings.registration);
    // A deployment that sends nothing to Didomi needs no registration.
    if !(desired.tables.is_empty() && registration.endpoint.is_none()) {
        report.registration_mismatches = mismatches(&registration, &desired);
    }
    match dataverse.failed_jobs_since(&registration, since).await {
        Ok(count) => report.failed_webhook_jobs = count,
        Err(e) => report
            .unchecked
            .push(format!("the failed webhook jobs could not be read: {e}")),
    }
}

/// Every user of the export's latest complete partition against their
/// contacts: a reconcile from Didomi, applied when repairing.
async fn drift_from_export(
    config: &Config,
    clients: &Clients,
    export: &Export,
    settings: &Settings,
    deadline: Deadline,
    report: &mut Report,
) {
    report.drift_source = "export".into();
    let options = Options {
        export: Some(export.clone()),
        deadline,
        ..Options::new(Truth::Didomi, settings.repair)
    };
    let reconcile =
        match Reconcile::with_clients(config, options, &clients.dataverse, &clients.didomi) {
            Ok(reconcile) => reconcile,
            Err(e) => {
                report.unchecked.push(e.to_string());
                return;
            }
        };
    let counts = reconcile.counts();
    let budget = deadline.remaining().saturating_sub(REPORT_RESERVE);
    match tokio::time::timeout(budget, reconcile.run()).await {
        Ok(Ok(summary)) => {
            let tally = &summary.tally;
            report.contacts_checked = tally.matched;
            report.contacts_differing = tally.differing;
            report.contacts_without_didomi_user = tally.contacts_without_user;
            report.contacts_repaired = if summary.applied {
                summary.written + tally.created
            } else {
                0
            };
            report.problems.extend(
                summary
                    .failures
                    .iter()
                    .map(|f| format!("{}: {}", f.subject, f.reason)),
            );
        }
        Ok(Err(e)) => {
            partial_from(&counts, settings.repair, report);
            report.unchecked.push(format!("drift: {e}"));
        }
        Err(_) => partial_from(&counts, settings.repair, report),
    }
}

/// The figures of a run that stopped before its end.
fn partial_from(counts: &Counts, repair: bool, report: &mut Report) {
    report.partial = true;
    report.contacts_checked = Counts::get(&counts.matched);
    report.contacts_differing = Counts::get(&counts.differing);
    if repair {
        report.contacts_repaired = Counts::get(&counts.written);
    }
}

/// The scheduled function: its configuration and clients, built once.
pub struct ConsentWatch {
    config: ConfigCache,
    clients: Clients,
    settings: Settings,
}

impl ConsentWatch {
    /// From the Lambda environment (`CONFIG_SECRET_ID`,
    /// `CONFIG_CACHE_SECONDS`, the watch's variables).
    pub async fn from_env() -> Result<Self, ConfigError> {
        let settings = Settings::from_env()?;
        let ttl = crate::config_source::cache_ttl_from_env()?;
        let aws = crate::tls::aws_sdk_config().await;
        let source = ConfigSource::from_aws(&aws)?;
        Ok(ConsentWatch {
            config: ConfigCache::new(source, ttl),
            clients: Clients::new(),
            settings,
        })
    }

    /// One scheduled run: the report as the answer, one log line with it,
    /// and the metric record. The event's content is not used. A run that
    /// could not make a check still reports and records what it saw, then
    /// fails the invocation, so that the function's error alarm tells —
    /// figures of 0 from a check that never ran must not read as "fine".
    pub async fn run(&self, deadline: Deadline) -> Result<Value, InvocationError> {
        let config = self
            .config
            .get()
            .await
            .inspect_err(|e| tracing::error!(error = %e, "configuration"))?;
        let report = run(&config, &self.clients, &self.settings, deadline).await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        // The metric record goes to standard output as it is: CloudWatch
        // reads Embedded Metric Format from the log line itself.
        println!("{}", report.metric_record(now));
        let answer = report.to_json();
        if !report.unchecked.is_empty() {
            tracing::error!(report = %answer, "watch could not make every check");
            return Err(InvocationError {
                error_type: "WatchIncomplete",
                message: listed(&report.unchecked).join("; "),
            });
        }
        if report.partial || !report.problems.is_empty() {
            tracing::warn!(report = %answer, "watch finished with problems");
        } else {
            tracing::info!(report = %answer, "watch finished");
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_six_figures_by_metric_name_zeros_included() {
        let report = Report {
            contacts_checked: 12,
            contacts_differing: 3,
            registration_mismatches: vec!["no step for contact Update".into()],
            ..Report::default()
        };
        let json = report.to_json();
        for name in FIGURES {
            assert!(json[name].is_u64(), "{name} in {json}");
        }
        assert_eq!(json["ContactsDiffering"], 3);
        assert_eq!(json["RegistrationMismatch"], 1);
        assert_eq!(json["FailedWebhookJobs"], 0);
        let text = report.to_text();
        assert!(
            text.starts_with("ContactsChecked: 12\nContactsDiffering: 3\n"),
            "{text}"
        );

        let record: Value = serde_json::from_str(&report.metric_record(1_700_000_000_000)).unwrap();
        let metrics = &record["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(metrics["Namespace"], "ConsentSync");
        assert_eq!(metrics["Dimensions"], json!([["Function"]]));
        assert_eq!(metrics["Metrics"].as_array().unwrap().len(), 6);
        assert_eq!(record["Function"], "consent-watch");
        assert_eq!(record["ContactsChecked"], 12);
        let many = Report {
            problems: (0..25).map(|i| format!("contact {i}: refused")).collect(),
            ..Report::default()
        };
        let json = many.to_json();
        assert_eq!(json["problems"].as_array().unwrap().len(), 20);
        assert_eq!(json["problems_total"], 25);
        assert!(many.to_text().contains("… 5 more repairs failed"));
    }

    #[test]
    fn settings_refuse_what_the_watch_cannot_use() {
        let settings = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Settings::from_vars(move |name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
        };
        assert_eq!(settings(&[]).unwrap(), Settings::default());
        let refused = |vars: &[(&str, &str)]| settings(vars).unwrap_err().to_string();
        assert!(refused(&[(WATCH_SAMPLE, "0")]).contains(WATCH_SAMPLE));
        assert!(refused(&[(WATCH_SAMPLE, "5001")]).contains("from 1 to 5000"));
        assert!(refused(&[(WATCH_REPAIR, "always")]).contains("none or from-didomi"));
        assert!(refused(&[(DIDOMI_EXPORT, "gs://bucket/data")]).contains(DIDOMI_EXPORT));
        let chosen = settings(&[
            (WATCH_SAMPLE, "500"),
            (WATCH_REPAIR, "from-didomi"),
            (DIDOMI_EXPORT, "s3://didomi/data/export-id=1"),
        ])
        .unwrap();
        assert_eq!((chosen.sample, chosen.repair), (500, true));
        assert_eq!(
            chosen.export,
            Some(Export::parse("s3://didomi/data/export-id=1", None).unwrap())
        );
    }
}
