//! Didomi's batch export as the Didomi side of a reconcile or the watch:
//! `…/export-id={id}/date={YYYY-MM-DD}/users/*.json.gz`, newline-delimited
//! JSON, one user per line. Only a complete partition (one with `_SUCCESS`)
//! is read; every file of it, several at a time, streamed.
//!
//! The files are read twice. The first pass checks every line and finds,
//! for a user present in several lines, the one with the latest
//! `updated_at`; the second hands the users on. A bad line therefore stops
//! the run before anything was written from the export, and a user counts
//! once — at the cost of decompressing twice, which is cheap next to the
//! writes (see docs/performance.md).

mod store;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::DidomiUser;
use store::{join, Store};

/// Users handed on at a time.
const BATCH: usize = 1000;

/// The marker Didomi writes once a partition is complete.
pub(crate) const SUCCESS_MARKER: &str = "_SUCCESS";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    #[error("the Didomi export source {0:?} is neither s3://bucket/prefix nor a local directory")]
    Source(String),
    #[error("the partition {0} has no {SUCCESS_MARKER}: Didomi has not finished writing it, and it is never read incomplete; name a complete partition or the export folder")]
    Incomplete(String),
    #[error("no complete partition (date=YYYY-MM-DD/ with {SUCCESS_MARKER}) under {0}")]
    NoPartition(String),
    #[error("the partition {0} holds no users/*.json.gz file")]
    NoFiles(String),
    #[error("reading {what}: {reason}")]
    Read { what: String, reason: String },
    #[error("{file}, line {line}: {reason}")]
    Line {
        file: String,
        line: u64,
        reason: String,
    },
    #[error("assuming the role for Didomi's bucket: {0}")]
    Role(String),
}

/// An export to read: where, and the role that opens Didomi's bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    location: Location,
    role_arn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Directory(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Export {
    /// `s3://bucket/prefix` or a local directory, naming either the export
    /// (`…/export-id=…/`) or one partition (`…/date=YYYY-MM-DD/`).
    pub fn parse(source: &str, role_arn: Option<String>) -> Result<Export, ExportError> {
        let source = source.trim();
        let location = if let Some(rest) = source.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ExportError::Source(source.chars().take(200).collect()));
            }
            Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            }
        } else if source.contains("://") || source.is_empty() {
            return Err(ExportError::Source(source.chars().take(200).collect()));
        } else {
            Location::Directory(PathBuf::from(source))
        };
        let role_arn = role_arn.filter(|r| !r.trim().is_empty());
        Ok(Export { location, role_arn })
    }

    async fn store(&self) -> Result<(Store, String), ExportError> {
        match &self.location {
            Location::Directory(dir) => {
                if !dir.is_dir() {
                    return Err(ExportError::Read {
                        what: dir.display().to_string(),
                        reason: "not a directory".into(),
                    });
                }
                // Keys are paths: the directory itself is the prefix, so that
                // a partition is recognised by its last folder on disk too.
                let prefix = dir.to_string_lossy().trim_end_matches('/').to_string();
                Ok((Store::Local, prefix))
            }
            Location::S3 { bucket, prefix } => {
                let aws = crate::tls::aws_sdk_config().await;
                let mut s3 = aws_sdk_s3::config::Builder::from(&aws);
                // A local S3 endpoint (tests, MinIO) answers on one host name:
                // buckets go in the path there.
                if aws.endpoint_url().is_some() {
                    s3 = s3.force_path_style(true);
                }
                if let Some(role) = &self.role_arn {
                    let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                        .session_name("consent-sync-export")
                        .configure(&aws)
                        .build()
                        .await;
                    s3 = s3.credentials_provider(provider);
                }
                let client = aws_sdk_s3::Client::from_conf(s3.build());
                Ok((
                    Store::S3 {
                        client,
                        bucket: bucket.clone(),
                    },
                    prefix.clone(),
                ))
            }
        }
    }

    /// Opens the latest complete partition and starts reading its users.
    pub async fn users(&self) -> Result<ExportUsers, ExportError> {
        let (store, prefix) = self.store().await?;
        let store = Arc::new(store);
        let partition = partition(&store, &prefix).await?;
        let files = store.files(&join(&partition, "users"), ".json.gz").await?;
        if files.is_empty() {
            return Err(ExportError::NoFiles(store.describe(&partition)));
        }
        tracing::info!(
            partition = %store.describe(&partition),
            files = files.len(),
            "reading Didomi's batch export"
        );
        let losers = first_pass(&store, &files).await?;
        let (sender, receiver) = mpsc::channel(2 * parallel_files());
        let reading = tokio::spawn(second_pass(store.clone(), files, losers, sender));
        Ok(ExportUsers {
            receiver,
            reading: Some(reading),
            partition: store.describe(&partition),
        })
    }
}

/// The users of a partition, a batch at a time.
pub struct ExportUsers {
    receiver: mpsc::Receiver<Result<Vec<DidomiUser>, ExportError>>,
    reading: Option<tokio::task::JoinHandle<()>>,
    partition: String,
}

impl ExportUsers {
    /// The next batch; `None` once every file was read.
    pub async fn next(&mut self) -> Result<Option<Vec<DidomiUser>>, ExportError> {
        match self.receiver.recv().await {
            Some(batch) => batch.map(Some),
            None => Ok(None),
        }
    }

    /// Waits for the readers (they end with the last batch).
    pub async fn finish(mut self) -> Result<(), ExportError> {
        if let Some(reading) = self.reading.take() {
            reading.await.map_err(|e| ExportError::Read {
                what: self.partition.clone(),
                reason: format!("the reader stopped: {e}"),
            })?;
        }
        Ok(())
    }
}

impl Drop for ExportUsers {
    fn drop(&mut self) {
        if let Some(reading) = self.reading.take() {
            reading.abort();
        }
    }
}

/// The partition to read under `prefix`: `prefix` itself when it names
/// one (`date=…`), else the latest `date=YYYY-MM-DD` with `_SUCCESS`.
async fn partition(store: &Store, prefix: &str) -> Result<String, ExportError> {
    let last = prefix.rsplit('/').next().unwrap_or_default();
    if last.starts_with("date=") {
        if !store.exists(&join(prefix, SUCCESS_MARKER)).await? {
            return Err(ExportError::Incomplete(store.describe(prefix)));
        }
        return Ok(prefix.to_string());
    }
    let mut dates: Vec<String> = store
        .folders(prefix)
        .await?
        .into_iter()
        .filter(|name| {
            name.strip_prefix("date=").is_some_and(|date| {
                date.len() == 10
                    && crate::time::parse_utc_seconds(&format!("{date}T00:00:00Z")).is_some()
            })
        })
        .collect();
    dates.sort();
    for date in dates.iter().rev() {
        let partition = join(prefix, date);
        if store.exists(&join(&partition, SUCCESS_MARKER)).await? {
            return Ok(partition);
        }
        tracing::info!(partition = %store.describe(&partition), "skipped: not complete yet");
    }
    Err(ExportError::NoPartition(store.describe(prefix)))
}

/// Files read at once: every core decompressing, and at least two so that
/// one file's download overlaps another's decoding.
fn parallel_files() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(2)
}

/// One line of the export: the user, and fields not needed here (events).
#[derive(Deserialize)]
struct Line {
    user: DidomiUser,
}

/// What the first pass keeps of a line: who, when, where.
struct Seen {
    user: u128,
    updated_at: i64,
    line: u64,
}

/// A user's identity for de-duplication: a 128-bit hash of the
/// `organization_user_id`, so that a million users take a few dozen MB.
fn identity(organization_user_id: &str) -> u128 {
    let half = |seed: u64| {
        let mut hasher = std::hash::DefaultHasher::new();
        seed.hash(&mut hasher);
        organization_user_id.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// Reads one file's lines, calling `each` with the line number and user of
/// every line that has an `organization_user_id` (only those are exported).
fn read_lines(
    reader: Box<dyn Read + Send>,
    file: &str,
    mut each: impl FnMut(u64, DidomiUser) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let decoder = BufReader::with_capacity(256 * 1024, flate2::read::MultiGzDecoder::new(reader));
    let mut number = 0u64;
    for line in decoder.split(b'\n') {
        number += 1;
        let line = line.map_err(|e| ExportError::Read {
            what: file.to_string(),
            reason: format!("line {number}: {e}"),
        })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed: Line = serde_json::from_slice(&line).map_err(|e| ExportError::Line {
            file: file.to_string(),
            line: number,
            reason: format!("not a user record ({})", json_problem(&e)),
        })?;
        if parsed
            .user
            .organization_user_id
            .as_deref()
            .is_some_and(|id| !id.trim().is_empty())
        {
            each(number, parsed.user)?;
        }
    }
    Ok(())
}

/// What is wrong with a line, without its content (a line holds personal
/// data; serde's own message may quote it).
fn json_problem(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{kind} at column {}", error.column())
}

/// Runs `work` on a blocking thread for each file, `parallel_files()` at a
/// time; the first error wins.
async fn each_file<T: Send + 'static>(
    store: &Arc<Store>,
    files: &[String],
    work: impl Fn(usize, Box<dyn Read + Send>, String) -> Result<T, ExportError> + Send + Sync + 'static,
) -> Result<Vec<(usize, T)>, ExportError> {
    let work = Arc::new(work);
    let places = Arc::new(Semaphore::new(parallel_files()));
    let mut running = JoinSet::new();
    for (index, key) in files.iter().enumerate() {
        let place = places.clone().acquire_owned().await.expect("never closed");
        let store = store.clone();
        let (key, work) = (key.clone(), work.clone());
        running.spawn(async move {
            let _place = place;
            let reader = store.open(&key).await?;
            let name = store.describe(&key);
            tokio::task::spawn_blocking(move || work(index, reader, name).map(|t| (index, t)))
                .await
                .map_err(|e| ExportError::Read {
                    what: store.describe(&key),
                    reason: format!("the reader stopped: {e}"),
                })?
        });
    }
    let mut done = Vec::with_capacity(files.len());
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(Ok(result)) => done.push(result),
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(ExportError::Read {
                    what: "the export".into(),
                    reason: format!("a reader stopped: {e}"),
                })
            }
        }
    }
    Ok(done)
}

/// Checks every line and returns, per file, the lines not to hand on: a
/// user seen again elsewhere with a later (or, at equal times, an earlier
/// placed) `updated_at`.
async fn first_pass(
    store: &Arc<Store>,
    files: &[String],
) -> Result<HashMap<usize, Vec<u64>>, ExportError> {
    let seen = each_file(store, files, |_, reader, name| {
        let mut seen = Vec::new();
        read_lines(reader, &name, |line, user| {
            let id = user.organization_user_id.as_deref().unwrap_or_default();
            seen.push(Seen {
                user: identity(id),
                updated_at: updated_at(&user),
                line,
            });
            Ok(())
        })?;
        Ok(seen)
    })
    .await?;
    let mut seen = seen;
    seen.sort_by_key(|(index, _)| *index);
    // The winning line of each user: (updated_at, file, line).
    let mut latest: HashMap<u128, (i64, usize, u64)> = HashMap::new();
    let mut losers: HashMap<usize, Vec<u64>> = HashMap::new();
    for (file, lines) in seen {
        for line in lines {
            let candidate = (line.updated_at, file, line.line);
            match latest.entry(line.user) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(candidate);
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    let held = *slot.get();
                    let loser = if candidate.0 > held.0 {
                        slot.insert(candidate);
                        held
                    } else {
                        candidate
                    };
                    losers.entry(loser.1).or_default().push(loser.2);
                }
            }
        }
    }
    for lines in losers.values_mut() {
        lines.sort_unstable();
    }
    Ok(losers)
}

fn updated_at(user: &DidomiUser) -> i64 {
    user.updated_at
        .as_deref()
        .and_then(crate::time::parse_utc_seconds)
        .unwrap_or(i64::MIN)
}

/// Hands on every user but the losers, in batches, over `sender`.
async fn second_pass(
    store: Arc<Store>,
    files: Vec<String>,
    losers: HashMap<usize, Vec<u64>>,
    sender: mpsc::Sender<Result<Vec<DidomiUser>, ExportError>>,
) {
    let losers = Arc::new(losers);
    let errors = sender.clone();
    let read = each_file(&store, &files, move |index, reader, name| {
        let skip = losers.get(&index).map(Vec::as_slice).unwrap_or_default();
        let mut batch = Vec::with_capacity(BATCH);
        let send = |batch: Vec<DidomiUser>| {
            // A closed channel: the run stopped reading; so do we.
            sender
                .blocking_send(Ok(batch))
                .map_err(|_| ExportError::Read {
                    what: name.clone(),
                    reason: "the run stopped".into(),
                })
        };
        read_lines(reader, &name, |line, user| {
            if skip.binary_search(&line).is_err() {
                batch.push(user);
                if batch.len() >= BATCH {
                    send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))?;
                }
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            send(batch)?;
        }
        Ok(())
    })
    .await;
    if let Err(e) = read {
        let _ = errors.send(Err(e)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_an_s3_prefix_or_a_directory() {
        let export = Export::parse("s3://didomi-exports/data/export-id=abc/", None).unwrap();
        assert_eq!(
            export.location,
            Location::S3 {
                bucket: "didomi-exports".into(),
                prefix: "data/export-id=abc".into()
            }
        );
        assert!(Export::parse("s3:///data", None).is_err());
        assert!(Export::parse("gs://bucket/data", None).is_err());
        assert!(Export::parse(" ", None).is_err());
        let export = Export::parse("exports/export-id=abc", Some(" ".into())).unwrap();
        assert_eq!(export.role_arn, None);
        assert_eq!(
            export.location,
            Location::Directory("exports/export-id=abc".into())
        );
    }

    #[test]
    fn identities_differ_by_case_and_agree_for_the_same_id() {
        assert_eq!(identity("user-1"), identity("user-1"));
        assert_ne!(identity("user-1"), identity("USER-1"));
    }
}
