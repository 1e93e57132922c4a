//! Step 6 of the local run: the first day. `consent-sync init` reads the
//! simulated Didomi organization's purposes and the contact table's columns,
//! creates the Yes/No columns that are missing and writes the mappings —
//! into a scratch copy of the sample configuration without its mappings.

use consent_sync::setup::{Prefix, DEFAULT_PREFIX};
use consent_sync::ConfigSource;
use consent_sync_sim::Simulator;

use crate::error::CliError;

pub async fn run(sim: &Simulator) -> Result<(), CliError> {
    let mut config = sim.config();
    config["mappings"] = serde_json::json!([]);
    let path = std::env::temp_dir().join(format!(
        "consent-sync-local-init-{}.json",
        std::process::id()
    ));
    let text = serde_json::to_string_pretty(&config).expect("a configuration serializes");
    std::fs::write(&path, text)
        .map_err(|e| CliError::Local(format!("cannot write {}: {e}", path.display())))?;
    println!();
    println!(
        "6. The first day: init builds the mappings from Didomi's purposes and the contact columns"
    );
    println!("   (the sample configuration without its mappings, in a scratch file)");
    println!("   $ consent-sync init --write --create-columns --yes");
    let options = crate::init::Options {
        prefix: Prefix::parse(DEFAULT_PREFIX).expect("the default prefix is valid"),
        create_columns: true,
        create_key: false,
        write: true,
        yes: true,
        json: false,
    };
    let result = crate::init::run(ConfigSource::File(path.clone()), options).await;
    let _ = std::fs::remove_file(&path);
    let report = result?;
    for line in report.text.lines() {
        if line.is_empty() {
            println!();
        } else {
            println!("   {line}");
        }
    }
    Ok(())
}
