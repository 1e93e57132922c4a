//! `consent-sync reconcile [--from didomi|dynamics] [--apply] [--limit N]
//! [--didomi-export SOURCE]`: runs the shared reconcile
//! (`consent_sync::reconcile`) with a progress line on a terminal, and
//! prints what it found.

pub mod progress;

use std::io::IsTerminal;

pub use consent_sync::reconcile::{Options, Truth};
use consent_sync::reconcile::{Reconcile, Summary};
use consent_sync::Config;
use serde_json::json;

use crate::error::CliError;
use crate::report::Report;
use progress::Ticker;

pub async fn run(config: &Config, options: Options) -> Result<Report, CliError> {
    let reconcile = Reconcile::new(config, options)?;
    let ticker = Ticker::start(
        reconcile.counts(),
        reconcile.pacing(),
        std::io::stderr().is_terminal(),
    );
    let summary = reconcile.run().await;
    drop(ticker);
    Ok(report(config, &summary?))
}

fn report(config: &Config, summary: &Summary) -> Report {
    let tally = &summary.tally;
    let from = match summary.from {
        Truth::Didomi => "didomi",
        Truth::Dynamics => "dynamics",
    };
    let (users, contacts, requests) = (summary.users, summary.contacts, summary.dataverse_requests);
    let mut text = format!(
        "Reconcile from {from} ({}) in {:.1} s\n  Didomi users            {users}\n  contacts with a key     {contacts}\n  matched contacts        {}\n  differing contacts      {}\n",
        if summary.applied { "applied" } else { "report only; --apply to write" },
        summary.elapsed.as_secs_f64(),
        tally.matched,
        tally.differing
    );
    if tally.newer > 0 {
        text.push_str(&format!(
            "  left alone: {} contact(s) hold a change newer than Didomi's state (sync_timestamp_column)\n",
            tally.newer
        ));
    }
    for (column, count) in &tally.per_column {
        text.push_str(&format!("    {column:<22}{count}\n"));
    }
    text.push_str(&format!(
        "  users without a contact {}{}\n  contacts without a user {}{}\n",
        tally.users_without_contact,
        if config.upsert_mode {
            ""
        } else {
            " (upsert_mode off: not created)"
        },
        tally.contacts_without_user,
        if summary.from == Truth::Dynamics {
            " (not sent: a CRM default is not a consent)"
        } else {
            ""
        }
    ));
    if config.contact_point_consent.is_some() {
        let what = match summary.from {
            Truth::Didomi => "consent records to write",
            Truth::Dynamics => "addresses whose consent records Didomi lacks",
        };
        text.push_str(&format!("  {what:<24}{}\n", tally.records_differing));
        if summary.applied && summary.from == Truth::Didomi {
            text.push_str(&format!(
                "  consent records written {}\n",
                tally.records_written
            ));
        }
    }
    if let Some(limit) = summary.limit {
        text.push_str(&format!("  limited to {limit} differing contact(s)\n"));
    }
    text.push_str(&format!(
        "  Dataverse requests      {requests} ({} answered 429 and waited out)\n",
        summary.throttled
    ));
    let failures = &summary.failures;
    if summary.applied {
        text.push_str(&format!(
            "  written                 {}\n  created                 {}\n  failed                  {}\n",
            summary.written,
            tally.created,
            failures.len()
        ));
        for failure in failures {
            text.push_str(&format!("    {}: {}\n", failure.subject, failure.reason));
        }
    }
    let ok = failures.is_empty();
    Report {
        text,
        json: json!({
            "from": from,
            "applied": summary.applied,
            "didomi_users": users,
            "contacts": contacts,
            "matched": tally.matched,
            "differing": tally.differing,
            "per_column": tally.per_column,
            "newer_than_didomi": tally.newer,
            "users_without_contact": tally.users_without_contact,
            "contacts_without_user": tally.contacts_without_user,
            "written": summary.written,
            "created": tally.created,
            "failed": failures
                .iter()
                .map(|f| format!("{}: {}", f.subject, f.reason))
                .collect::<Vec<_>>(),
            "consent_records_differing": tally.records_differing,
            "consent_records_written": tally.records_written,
            "dataverse_requests": requests,
            "throttled": summary.throttled,
        }),
        ok,
        reason: (!ok).then(|| {
            format!(
                "{} write(s) failed; run reconcile again once the cause is fixed",
                failures.len()
            )
        }),
    }
}
