//! What a test logs, captured as text: shared by the unit tests and, by
//! path, the session tests (`tests/session/main.rs`).
//!
//! One global subscriber writes every event to the buffer of the test
//! running on the event's thread (a test's runtime has only that one), if
//! it captures. A subscriber per test (`set_default`) would lose events:
//! tracing caches whether a call site is wanted, and a test on another
//! thread without a subscriber can cache "never" for all of them.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, Once};

thread_local! {
    static CURRENT: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// What the code under test logged on this thread while the guard of
/// [`Logs::capture`] lived.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

/// Stops the capture when dropped.
pub struct Capturing;

impl Drop for Capturing {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

impl Logs {
    pub fn capture() -> (Logs, Capturing) {
        static GLOBAL: Once = Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThisThread)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        });
        let logs = Logs::default();
        CURRENT.with(|c| *c.borrow_mut() = Some(logs.clone()));
        (logs, Capturing)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The writer of the global subscriber: this thread's capture, or nowhere.
struct ThisThread;

impl std::io::Write for ThisThread {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CURRENT.with(|c| {
            if let Some(logs) = c.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
