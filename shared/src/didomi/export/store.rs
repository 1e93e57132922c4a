//! Where an export lies: a local directory or an S3 prefix, seen the same
//! way — folders by name, files by key, a file opened as a blocking reader
//! (the gzip decoder runs on a blocking thread either way).

use std::io::Read;
use std::path::Path;

use aws_sdk_s3::Client;

use super::ExportError;

pub(crate) enum Store {
    /// Keys are paths on this machine.
    Local,
    S3 {
        client: Client,
        bucket: String,
    },
}

/// `a/b/` + `c` without doubled or missing slashes.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{}/{}", prefix.trim_end_matches('/'), name)
    }
}

impl Store {
    /// The names of the folders directly under `prefix`.
    pub(crate) async fn folders(&self, prefix: &str) -> Result<Vec<String>, ExportError> {
        match self {
            Store::Local => {
                let dir = Path::new(prefix);
                let entries = std::fs::read_dir(dir).map_err(|e| ExportError::Read {
                    what: dir.display().to_string(),
                    reason: e.to_string(),
                })?;
                Ok(entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect())
            }
            Store::S3 { client, bucket } => {
                let folder = format!("{}/", prefix.trim_end_matches('/'));
                let folder = if folder == "/" { String::new() } else { folder };
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&folder)
                    .delimiter("/")
                    .into_paginator()
                    .send();
                let mut names = Vec::new();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| s3_error(bucket, &folder, e))?;
                    for common in page.common_prefixes() {
                        if let Some(name) = common
                            .prefix()
                            .and_then(|p| p.strip_prefix(folder.as_str()))
                            .map(|p| p.trim_end_matches('/'))
                        {
                            names.push(name.to_string());
                        }
                    }
                }
                Ok(names)
            }
        }
    }

    /// Whether the file `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, ExportError> {
        match self {
            Store::Local => Ok(Path::new(key).is_file()),
            Store::S3 { client, bucket } => {
                let answer = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(key)
                    .max_keys(1)
                    .send()
                    .await
                    .map_err(|e| s3_error(bucket, key, e))?;
                Ok(answer.contents().iter().any(|o| o.key() == Some(key)))
            }
        }
    }

    /// The keys of every file under `prefix` (at any depth) whose name ends
    /// with `suffix`, sorted.
    pub async fn files(&self, prefix: &str, suffix: &str) -> Result<Vec<String>, ExportError> {
        let mut keys = Vec::new();
        match self {
            Store::Local => {
                let mut folders = vec![prefix.to_string()];
                while let Some(folder) = folders.pop() {
                    let dir = Path::new(&folder);
                    let entries = match std::fs::read_dir(dir) {
                        Ok(entries) => entries,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            return Err(ExportError::Read {
                                what: dir.display().to_string(),
                                reason: e.to_string(),
                            })
                        }
                    };
                    for entry in entries.filter_map(Result::ok) {
                        let Ok(name) = entry.file_name().into_string() else {
                            continue;
                        };
                        let key = join(&folder, &name);
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            folders.push(key);
                        } else if name.ends_with(suffix) {
                            keys.push(key);
                        }
                    }
                }
            }
            Store::S3 { client, bucket } => {
                let folder = format!("{}/", prefix.trim_end_matches('/'));
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&folder)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| s3_error(bucket, &folder, e))?;
                    keys.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key())
                            .filter(|k| k.ends_with(suffix))
                            .map(str::to_string),
                    );
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The file `key`, to be read on a blocking thread.
    pub(crate) async fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, ExportError> {
        match self {
            Store::Local => {
                let path = Path::new(key);
                let file = std::fs::File::open(path).map_err(|e| ExportError::Read {
                    what: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                Ok(Box::new(file))
            }
            Store::S3 { client, bucket } => {
                let object = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| s3_error(bucket, key, e))?;
                // Streamed: the body is pulled as the decoder reads it.
                let body = object.body.into_async_read();
                Ok(Box::new(tokio_util::io::SyncIoBridge::new(body)))
            }
        }
    }

    /// How a file is named in messages.
    pub(crate) fn describe(&self, key: &str) -> String {
        match self {
            Store::Local => key.to_string(),
            Store::S3 { bucket, .. } => format!("s3://{bucket}/{key}"),
        }
    }
}

/// An S3 failure as the operator can act on it: the service's own code and
/// message (AccessDenied, NoSuchBucket, …), not the SDK's wrapper text.
fn s3_error<E>(bucket: &str, key: &str, error: aws_sdk_s3::error::SdkError<E>) -> ExportError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let reason = match error.code() {
        Some(code) => format!("{code}: {}", error.message().unwrap_or("no message")),
        None => aws_sdk_s3::error::DisplayErrorContext(&error).to_string(),
    };
    ExportError::Read {
        what: format!("s3://{bucket}/{key}"),
        reason,
    }
}
