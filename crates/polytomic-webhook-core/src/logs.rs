//! Capture what the stack logs on the current thread, for tests that assert on log lines.
//!
//! Tests run in parallel threads, and `tracing` caches per call site whether anyone listens.
//! A subscriber scoped to one test thread (`tracing::subscriber::with_default`) loses that
//! race now and then: a call site first reached on another thread, while no subscriber
//! listened there, can stay cached as "never interested", and the line is silently missing.
//! So the capture here installs one process-wide subscriber, whose filter is consulted on
//! every event (it never lets a call site be cached as uninteresting), and which writes only
//! while the current thread has a capture open.
//!
//! ```
//! let capture = polytomic_webhook_core::logs::LogCapture::start();
//! tracing::warn!(code = "invalid_token", "refused a webhook delivery");
//! let text = capture.finish();
//! assert!(text.contains("WARN"));
//! assert!(text.contains("code=\"invalid_token\""));
//! ```
//!
//! Only events on the thread that opened the capture are kept: run the code under test on a
//! current-thread runtime. If the process already has its own global subscriber, the capture
//! falls back to a subscriber scoped to this thread.

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tracing::Metadata;
use tracing::subscriber::Interest;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

thread_local! {
    static OPEN: RefCell<Option<Buffer>> = const { RefCell::new(None) };
}

fn open_buffer() -> Option<Buffer> {
    OPEN.with(|open| open.borrow().clone())
}

/// Writes into the current thread's open capture.
struct CurrentThread;

/// The writer for one event: the open capture's buffer, or nothing.
enum ThreadWriter {
    Open(Buffer),
    Closed,
}

impl io::Write for ThreadWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Self::Open(buffer) => buffer.write(bytes),
            Self::Closed => Ok(bytes.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CurrentThread {
    type Writer = ThreadWriter;

    fn make_writer(&'a self) -> Self::Writer {
        open_buffer().map_or(ThreadWriter::Closed, ThreadWriter::Open)
    }
}

/// Enables events while this thread has a capture open, decided per event: it answers
/// "sometimes" for every call site, so none is ever cached as uninteresting.
struct WhileOpen;

impl<S> Filter<S> for WhileOpen {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        OPEN.with(|open| open.borrow().is_some())
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}

/// Installs the process-wide subscriber once; `false` when another one was there first.
fn global_installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(CurrentThread)
            .with_ansi(false)
            .with_filter(WhileOpen);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber).is_ok()
    })
}

/// An open capture of this thread's log lines; [`finish`](Self::finish) returns them.
#[must_use = "call `finish` to read what was logged"]
pub struct LogCapture {
    buffer: Buffer,
    previous: Option<Buffer>,
    scoped: Option<tracing::subscriber::DefaultGuard>,
}

impl LogCapture {
    /// Starts capturing every event (all levels) logged on this thread, as plain text.
    pub fn start() -> Self {
        let buffer = Buffer::default();
        let scoped = (!global_installed()).then(|| {
            let writer = buffer.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::TRACE)
                .finish();
            tracing::subscriber::set_default(subscriber)
        });
        // Installing a global subscriber does not revisit call sites registered before it
        // (they stay cached as "never"), so recompute every call site's interest now.
        tracing::callsite::rebuild_interest_cache();
        let previous = OPEN.with(|open| open.borrow_mut().replace(buffer.clone()));
        Self {
            buffer,
            previous,
            scoped,
        }
    }

    /// Stops capturing and returns what was logged since [`start`](Self::start).
    pub fn finish(self) -> String {
        self.buffer.text()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        let previous = self.previous.take();
        OPEN.with(|open| *open.borrow_mut() = previous);
        drop(self.scoped.take());
    }
}

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCapture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::LogCapture;

    #[test]
    fn keeps_only_what_this_thread_logs_while_open() {
        tracing::info!("before the capture");
        let capture = LogCapture::start();
        tracing::debug!(field = 7, "inside");
        std::thread::spawn(|| tracing::info!("another thread"))
            .join()
            .unwrap();
        let text = capture.finish();
        tracing::info!("after the capture");
        assert!(
            text.contains("inside") && text.contains("field=7"),
            "{text}"
        );
        assert!(
            !text.contains("before") && !text.contains("another thread"),
            "{text}"
        );
    }

    #[test]
    fn nested_captures_restore_the_outer_one() {
        let outer = LogCapture::start();
        tracing::warn!("outer line");
        let inner = LogCapture::start();
        tracing::warn!("inner line");
        let inner = inner.finish();
        tracing::warn!("outer again");
        let outer = outer.finish();
        assert!(
            inner.contains("inner line") && !inner.contains("outer"),
            "{inner}"
        );
        assert!(
            outer.contains("outer line") && outer.contains("outer again"),
            "{outer}"
        );
        assert!(!outer.contains("inner line"), "{outer}");
    }
}
