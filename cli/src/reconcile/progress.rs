//! Progress of a reconcile on a terminal: counts, and the pause Dataverse
//! asked for while one runs, so that a throttled run never looks stuck.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consent_sync::dataverse::pacing::Pacing;

#[derive(Debug, Default)]
pub struct Counts {
    pub contacts: AtomicUsize,
    pub users: AtomicUsize,
    pub differing: AtomicUsize,
    pub written: AtomicUsize,
    pub failed: AtomicUsize,
    pub dataverse_requests: AtomicUsize,
}

impl Counts {
    pub fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

/// Redraws one status line on stderr twice a second until dropped.
pub struct Ticker {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ticker {
    /// Starts drawing when stderr is a terminal; otherwise does nothing.
    pub fn start(counts: Arc<Counts>, pacing: Arc<Pacing>, on_terminal: bool) -> Ticker {
        if !on_terminal {
            return Ticker { task: None };
        }
        let task = tokio::spawn(async move {
            loop {
                let mut line = format!(
                    "contacts {}  Didomi users {}  differing {}  written {}  failed {}  Dataverse requests {}",
                    Counts::get(&counts.contacts),
                    Counts::get(&counts.users),
                    Counts::get(&counts.differing),
                    Counts::get(&counts.written),
                    Counts::get(&counts.failed),
                    Counts::get(&counts.dataverse_requests),
                );
                if let Some(left) = pacing.pause_left() {
                    line.push_str(&format!(
                        "  — waiting {:.0} s as Dataverse asked (service protection)",
                        left.as_secs_f64().ceil()
                    ));
                }
                {
                    let mut stderr = std::io::stderr().lock();
                    let _ = write!(stderr, "\r\x1b[2K{line}");
                    let _ = stderr.flush();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ticker { task: Some(task) }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            eprintln!();
        }
    }
}
