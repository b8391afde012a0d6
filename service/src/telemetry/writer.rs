//! Log output: lines collect in one shared in-memory batch that a background thread writes to
//! stdout a few milliseconds later, so a request never waits for a `write(2)` and never wakes
//! another thread per line.
//!
//! `tracing-appender`'s non-blocking writer (used before) sends every line through a channel to
//! its thread, which wakes, writes and flushes for each short burst: at 10,000 requests/s that
//! context switch and `write(2)` per line was the largest part of what JSON logging cost
//! (docs/observability.md#overhead). Here the first line of a batch wakes the thread once; it
//! waits [`BATCH_WINDOW`] for more, then writes them all in one call. Lines are never dropped:
//! a logger that finds the batch full writes it out itself. Dropping the [`FlushGuard`]
//! writes what is left. The cost: a process killed with SIGKILL loses at most the last
//! [`BATCH_WINDOW`] of lines (the channel design lost its queue the same way).

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer thread collects lines after the first one of a batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// A batch larger than this is written out by the logger that fills it.
const BATCH_CAPACITY: usize = 256 * 1024;

/// The `MakeWriter` given to the log layer; cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the thread when dropped.
#[must_use]
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Lock order: `state`, then `out`. Whoever writes a batch takes `out` before letting go of
/// `state`, so batches reach the output in the order they were filled.
struct Shared {
    state: Mutex<Batch>,
    out: Mutex<Box<dyn Write + Send>>,
    wake: Condvar,
}

struct Batch {
    lines: Vec<u8>,
    closed: bool,
}

/// Writes `lines` out and empties it. Errors are dropped: there is nowhere left to report them.
fn write_out(out: &mut dyn Write, lines: &mut Vec<u8>) {
    if !lines.is_empty() {
        let _ = out.write_all(lines);
        let _ = out.flush();
        lines.clear();
    }
}

/// A panic while holding one of the locks leaves valid bytes behind: carry on.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Batch> {
        lock(&self.state)
    }

    fn lock_out(&self) -> MutexGuard<'_, Box<dyn Write + Send>> {
        lock(&self.out)
    }
}

/// A writer to `out` and the guard that flushes it; starts the writer thread.
pub fn batch_writer(out: impl Write + Send + 'static) -> io::Result<(BatchWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(Batch {
            lines: Vec::with_capacity(BATCH_CAPACITY),
            closed: false,
        }),
        out: Mutex::new(Box::new(out)),
        wake: Condvar::new(),
    });
    let thread = thread::Builder::new().name("shipshape-log".into()).spawn({
        let shared = Arc::clone(&shared);
        move || run(&shared)
    })?;
    Ok((
        BatchWriter {
            shared: Arc::clone(&shared),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The writer thread: sleep until a batch starts, let it fill for a moment, write it. The
/// batch is swapped for an empty buffer first, so loggers go on appending during the write.
fn run(shared: &Shared) {
    let mut writing = Vec::with_capacity(BATCH_CAPACITY);
    loop {
        let mut batch = shared.lock();
        while batch.lines.is_empty() && !batch.closed {
            batch = shared
                .wake
                .wait(batch)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if !batch.closed {
            drop(batch);
            thread::sleep(BATCH_WINDOW);
            batch = shared.lock();
        }
        let closed = batch.closed;
        std::mem::swap(&mut batch.lines, &mut writing);
        let mut out = shared.lock_out();
        drop(batch);
        write_out(&mut **out, &mut writing);
        if closed {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One log line's writer (the log layer writes each line with one `write_all`).
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut batch = self.shared.lock();
        if batch.closed {
            // After shutdown (a late line from another thread): write it straight through.
            let _ = self.shared.lock_out().write_all(line);
            return Ok(line.len());
        }
        if batch.lines.len() + line.len() > BATCH_CAPACITY {
            // The output cannot keep up: this logger writes the batch itself, holding the
            // batch lock meanwhile, so every logger waits (back-pressure, nothing dropped).
            write_out(&mut **self.shared.lock_out(), &mut batch.lines);
        }
        let was_empty = batch.lines.is_empty();
        batch.lines.extend_from_slice(line);
        drop(batch);
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An in-memory `out` the test can read while the writer (or a log layer) owns it.
    #[derive(Clone, Default)]
    pub(in crate::telemetry) struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        pub(in crate::telemetry) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn line(writer: &BatchWriter, text: &str) {
        writer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_in_order_after_the_batch_window() {
        let sink = Sink::default();
        let (writer, guard) = batch_writer(sink.clone()).unwrap();
        for i in 0..1000 {
            line(&writer, &format!("{i}\n"));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.text().lines().count() < 1000 && std::time::Instant::now() < deadline {
            thread::sleep(BATCH_WINDOW);
        }
        let got: Vec<usize> = sink.text().lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        drop(guard);
    }

    #[test]
    fn dropping_the_guard_writes_what_is_left() {
        let sink = Sink::default();
        let (writer, guard) = batch_writer(sink.clone()).unwrap();
        line(&writer, "last words\n");
        drop(guard);
        assert_eq!(sink.text(), "last words\n");
        // Lines after shutdown are written straight through, never lost.
        line(&writer, "late\n");
        assert_eq!(sink.text(), "last words\nlate\n");
    }

    /// An `out` whose first write waits until the test lets it go.
    struct Stalled {
        started: std::sync::mpsc::Sender<()>,
        go: std::sync::mpsc::Receiver<()>,
        sink: Sink,
        first: bool,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if std::mem::take(&mut self.first) {
                let _ = self.started.send(());
                let _ = self.go.recv();
            }
            self.sink.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn loggers_do_not_wait_for_a_slow_output() {
        use std::sync::mpsc::channel;
        let (started_tx, started) = channel();
        let (go, go_rx) = channel();
        let sink = Sink::default();
        let stalled = Stalled {
            started: started_tx,
            go: go_rx,
            sink: sink.clone(),
            first: true,
        };
        let (writer, guard) = batch_writer(stalled).unwrap();
        line(&writer, "first\n");
        started
            .recv_timeout(Duration::from_secs(5))
            .expect("the writer thread never wrote");
        // The output is stuck in write(2); another line must still go through at once.
        let (done_tx, done) = channel();
        let w = writer.clone();
        let t = thread::spawn(move || {
            line(&w, "second\n");
            let _ = done_tx.send(());
        });
        let appended = done.recv_timeout(Duration::from_secs(2));
        go.send(()).unwrap();
        t.join().unwrap();
        assert!(appended.is_ok(), "a logger waited for the output");
        drop(guard);
        assert_eq!(sink.text(), "first\nsecond\n");
    }

    #[test]
    fn a_full_batch_is_written_by_the_logger_and_nothing_is_lost() {
        let sink = Sink::default();
        let (writer, guard) = batch_writer(sink.clone()).unwrap();
        let long = "x".repeat(1000) + "\n";
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let writer = writer.clone();
                let long = long.clone();
                thread::spawn(move || {
                    for _ in 0..500 {
                        line(&writer, &long);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = sink.text();
        assert_eq!(text.lines().count(), 2000);
        assert!(text.lines().all(|l| l.len() == 1000), "a line was torn");
    }
}
