//! Didomi's batch export as Didomi writes it (REFERENCE: Didomi, batch
//! export): `export-id={id}/date={YYYY-MM-DD}/users/*.json.gz`, newline-
//! delimited JSON, one user with its events per line, several gzip files
//! whose names change, `_SUCCESS` once the partition is complete. On disk,
//! or in moto's S3.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

/// A user of the simulated Didomi organization as an export line: the
/// user (as the users schema), and that user's events of the period.
pub fn line(user: &consent_sync_sim::DidomiUser) -> Value {
    json!({
        "user": {
            "id": user.id,
            "organization_id": "sim-org",
            "organization_user_id": user.organization_user_id,
            "consents": user.consents,
            "metadata": {},
            "created_at": user.created_at,
            "updated_at": user.updated_at,
        },
        "events": [{
            "id": format!("event-{}", user.id),
            "type": "consent.updated",
            "created_at": user.updated_at,
            "consents": user.consents,
        }]
    })
}

/// The lines spread over `files` gzip files (round robin), each named as
/// Didomi's Spark jobs name them: `users/part-0000N-<uuid>.json.gz`.
pub fn files(lines: &[Value], files: usize) -> Vec<(String, Vec<u8>)> {
    (0..files)
        .map(|f| {
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for line in lines.iter().skip(f).step_by(files) {
                writeln!(gzip, "{line}").unwrap();
            }
            let name = format!("users/part-{f:05}-{}.json.gz", uuid_like(f));
            (name, gzip.finish().unwrap())
        })
        .collect()
}

fn uuid_like(seed: usize) -> String {
    format!("{seed:08x}-5d1c-4f0e-9a2b-{:012x}", seed * 7919)
}

/// The partition's folder under `export`: `date=YYYY-MM-DD`.
pub fn partition(date: &str) -> String {
    format!("date={date}")
}

/// Writes a partition under `export_dir`, with `_SUCCESS` when `complete`.
pub fn write(export_dir: &Path, date: &str, files: &[(String, Vec<u8>)], complete: bool) {
    let partition = export_dir.join(partition(date));
    for (name, bytes) in files {
        let path = partition.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    std::fs::create_dir_all(&partition).unwrap();
    if complete {
        std::fs::write(partition.join("_SUCCESS"), b"").unwrap();
    }
}

/// The same partition in an S3 bucket under `export_prefix`.
pub async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    export_prefix: &str,
    date: &str,
    files: &[(String, Vec<u8>)],
    complete: bool,
) {
    let partition = format!("{export_prefix}/{}", partition(date));
    let mut objects: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(name, bytes)| (format!("{partition}/{name}"), bytes.clone()))
        .collect();
    if complete {
        objects.push((format!("{partition}/_SUCCESS"), Vec::new()));
    }
    for (key, bytes) in objects {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .unwrap();
    }
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "consent-sync-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
