//! What a command prints: a short summary for a person, or one JSON
//! document with `--json` for scripts. Failures are one line on standard
//! error either way (and `{"ok": false, "error": …}` on standard output with
//! `--json`), with a non-zero exit status.

use serde_json::{json, Value};

use crate::error::CliError;

/// A finished command: the human text, the JSON document, and whether it
/// succeeded (a check that found problems did not).
pub struct Report {
    pub text: String,
    pub json: Value,
    pub ok: bool,
    /// The one-line reason when `ok` is false.
    pub reason: Option<String>,
}

impl Report {
    pub fn success(text: String, json: Value) -> Self {
        Report {
            text,
            json,
            ok: true,
            reason: None,
        }
    }
}

/// Prints the outcome; returns whether the command succeeded.
pub fn print(result: Result<Report, CliError>, as_json: bool) -> bool {
    match result {
        Ok(report) => {
            if as_json {
                let mut document = report.json;
                document["ok"] = json!(report.ok);
                if let Some(reason) = &report.reason {
                    document["error"] = json!(reason);
                }
                println!("{document:#}");
            } else {
                print!("{}", report.text);
            }
            if let Some(reason) = &report.reason {
                eprintln!("consent-sync: {reason}");
            }
            report.ok
        }
        Err(error) => {
            let reason = error.to_string();
            if as_json {
                println!("{:#}", json!({"ok": false, "error": reason}));
            }
            eprintln!("consent-sync: {reason}");
            false
        }
    }
}
