//! Progress of a reconcile on a terminal: counts, and the pause Dataverse
//! asked for while one runs, so that a throttled run never looks stuck.

use std::sync::Arc;
use std::time::Duration;

use consent_sync::dataverse::pacing::Pacing;
use consent_sync::reconcile::Counts;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress line on a terminal, while one is shown: the CLI's log lines
/// are written around it rather than into it.
static LINE: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

/// Writes the CLI's log lines (standard error) around the progress line.
#[derive(Clone, Copy, Default)]
pub struct AroundProgress;

impl std::io::Write for AroundProgress {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = LINE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match line {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Redraws one status line on stderr twice a second until dropped, cut to
/// the terminal's width.
pub struct Ticker {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Ticker {
    /// Starts drawing when stderr is a terminal; otherwise does nothing.
    pub fn start(counts: Arc<Counts>, pacing: Arc<Pacing>, on_terminal: bool) -> Ticker {
        if !on_terminal {
            return Ticker {
                task: None,
                bar: None,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{wide_msg}").expect("a valid template"));
        *LINE.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        let shown = bar.clone();
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
                shown.set_message(line);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ticker {
            task: Some(task),
            bar: Some(bar),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        *LINE.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
