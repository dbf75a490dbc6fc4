//! Output sinks and the forwarder that feeds them.
//!
//! [`forward`] reads a child's stream and hands the sink whole lines: every write is
//! one or more complete lines, except the pieces of a line longer than
//! [`MAX_CHUNK`] (passed on in chunks of at most that size, never dropped) and an
//! unterminated last line at end of stream. Bytes out equal bytes in, UTF-8 or not.
//! When the sink fails, the stream keeps being drained so the child never blocks on a
//! full pipe, except when the sink's reader is gone (`BrokenPipe`, e.g. `runner run --
//! yes | head -1`): then [`forward`] stops reading and closes its end, so the child
//! sees the broken pipe as it would under a shell.
//!
//! Sinks that may block ([`OutputSink::may_block`]: the terminal, a file, a socket
//! nobody reads) are called through `tokio::task::block_in_place` on a
//! multi-threaded runtime, so a stalled reader never takes a runtime worker (and with
//! it signal handling) hostage.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest piece of a single line handed to a sink in one write (1 MiB).
pub const MAX_CHUNK: usize = 1 << 20;
const READ_SIZE: usize = 64 * 1024;

/// Which of a process's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives a process's output, a few whole lines at a time.
///
/// Implementations are called from the forwarding task and should not block for
/// long; an error stops delivery to this sink for that stream (the stream is still
/// drained).
pub trait OutputSink: Send + Sync + fmt::Debug {
    /// Takes one chunk: complete lines, except as described in the module docs.
    fn write(&self, stream: Stream, chunk: &[u8]) -> io::Result<()>;

    /// True when [`write`](Self::write) can block on I/O (a pipe, a terminal, a
    /// file): the forwarder then calls it where blocking does not stall the async
    /// runtime. In-memory sinks say false. The default is true.
    fn may_block(&self) -> bool {
        true
    }

    /// False for a sink that wants bytes as they arrive, not whole lines (a terminal,
    /// a framed protocol such as JSON-RPC without trailing newlines, a prompt): the
    /// forwarder then holds nothing back. The default is true (whole lines).
    fn wants_lines(&self) -> bool {
        true
    }
}

/// Calls `sink.write`, off the runtime's workers when it may block (see the module
/// documentation).
fn write_to(sink: &dyn OutputSink, stream: Stream, chunk: &[u8]) -> io::Result<()> {
    if sink.may_block() {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                return tokio::task::block_in_place(|| sink.write(stream, chunk));
            }
        }
    }
    sink.write(stream, chunk)
}

/// A shared output sink, as `Proc::with_output` takes it.
pub type Output = Arc<dyn OutputSink>;

/// Writes the child's stdout to our stdout and its stderr to our stderr, flushing
/// each chunk. The default sink.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdioSink;

impl OutputSink for StdioSink {
    fn write(&self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        match stream {
            Stream::Stdout => write_stdout(chunk),
            Stream::Stderr => {
                let mut err = io::stderr().lock();
                err.write_all(chunk)?;
                err.flush()
            }
        }
    }
}

/// `chunk` to our stdout in as few `write`s as the pipe takes. `io::Stdout` is
/// line-buffered: it writes up to a chunk's last newline and then the rest, so a
/// language server's header and body would reach the reader as two reads. What the
/// standard library still holds goes first, under its lock (the order with other
/// users of `io::stdout` is kept); the chunk then goes to a duplicate of fd 1, made
/// once.
fn write_stdout(chunk: &[u8]) -> io::Result<()> {
    use std::os::fd::AsFd;
    static RAW: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let stdout = io::stdout();
    let mut locked = stdout.lock();
    locked.flush()?;
    match RAW
        .get_or_init(|| stdout.as_fd().try_clone_to_owned().ok().map(Into::into))
        .as_ref()
    {
        Some(raw) => (&*raw).write_all(chunk),
        None => {
            locked.write_all(chunk)?;
            locked.flush()
        }
    }
}

/// Writes the child's stdout to our stdout and its stderr to our stderr as the bytes
/// arrive, flushing each chunk: nothing is held back until a newline, so prompts,
/// `\r` progress lines and framed protocols pass through (`runner run` uses it).
/// Order is kept within each stream; across streams, as the chunks arrive.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassthroughSink;

impl OutputSink for PassthroughSink {
    fn write(&self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        StdioSink.write(stream, chunk)
    }

    fn wants_lines(&self) -> bool {
        false
    }
}

/// Discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl OutputSink for NullSink {
    fn write(&self, _: Stream, _: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn may_block(&self) -> bool {
        false
    }
}

/// Keeps everything in memory, per stream. Handy in tests and for short commands.
#[derive(Debug, Default)]
pub struct CaptureSink {
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
    /// Woken on every write, for [`CaptureSink::wait_until`].
    written: tokio::sync::Notify,
}

impl CaptureSink {
    /// An empty capture, ready to share.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        lock(&self.stdout).clone()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        lock(&self.stderr).clone()
    }

    /// Stdout as (lossy) UTF-8.
    pub fn stdout_string(&self) -> String {
        String::from_utf8_lossy(&self.stdout()).into_owned()
    }

    /// Stderr as (lossy) UTF-8.
    pub fn stderr_string(&self) -> String {
        String::from_utf8_lossy(&self.stderr()).into_owned()
    }

    /// Returns once `cond(stdout, stderr)` holds, checking after every write (no
    /// polling). Put a timeout around it: output that never comes never returns.
    pub async fn wait_until(&self, cond: impl Fn(&str, &str) -> bool) {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            // Registered before the check, so a write in between is not missed.
            written.as_mut().enable();
            if cond(&self.stdout_string(), &self.stderr_string()) {
                return;
            }
            written.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OutputSink for CaptureSink {
    fn write(&self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        let target = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        lock(target).extend_from_slice(chunk);
        self.written.notify_waiters();
        Ok(())
    }

    fn may_block(&self) -> bool {
        false
    }
}

/// Sends both streams to one `std::io::Write` (a file, a `Vec`, a socket).
pub struct WriterSink<W> {
    inner: Mutex<W>,
}

impl<W: Write + Send> WriterSink<W> {
    /// Wraps a writer.
    pub fn new(writer: W) -> Arc<Self> {
        Arc::new(WriterSink {
            inner: Mutex::new(writer),
        })
    }
}

impl<W> fmt::Debug for WriterSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterSink").finish_non_exhaustive()
    }
}

impl<W: Write + Send> OutputSink for WriterSink<W> {
    fn write(&self, _: Stream, chunk: &[u8]) -> io::Result<()> {
        let mut w = lock(&self.inner);
        w.write_all(chunk)?;
        w.flush()
    }
}

/// Adapts a closure into a sink.
///
/// ```
/// use runner_core::{FnSink, Stream};
/// let sink = FnSink::new(|stream: Stream, chunk: &[u8]| {
///     eprint!("[{stream:?}] {}", String::from_utf8_lossy(chunk));
///     Ok(())
/// });
/// ```
pub struct FnSink<F>(F);

impl<F> FnSink<F>
where
    F: Fn(Stream, &[u8]) -> io::Result<()> + Send + Sync + 'static,
{
    /// Wraps a closure.
    pub fn new(f: F) -> Arc<Self> {
        Arc::new(FnSink(f))
    }
}

impl<F> fmt::Debug for FnSink<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnSink")
    }
}

impl<F> OutputSink for FnSink<F>
where
    F: Fn(Stream, &[u8]) -> io::Result<()> + Send + Sync,
{
    fn write(&self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
        (self.0)(stream, chunk)
    }
}

/// What [`forward`] did.
#[derive(Debug, Default)]
pub struct ForwardReport {
    /// Bytes read from the stream.
    pub bytes: u64,
    /// Bytes the sink accepted (equal to `bytes` unless the sink failed).
    pub delivered: u64,
    /// The sink's first error, after which the rest was drained and discarded.
    pub sink_error: Option<io::Error>,
}

/// The line framing of [`forward`] for output that arrives as pushed chunks (a Docker
/// exec's multiplexed stream, say): same guarantees, same bounded memory.
#[derive(Debug)]
pub struct LineBuffer {
    stream: Stream,
    pending: Vec<u8>,
    report: ForwardReport,
}

impl LineBuffer {
    /// An empty buffer for `stream`.
    pub fn new(stream: Stream) -> Self {
        LineBuffer {
            stream,
            pending: Vec::new(),
            report: ForwardReport::default(),
        }
    }

    fn deliver(&mut self, sink: &dyn OutputSink, end: usize) {
        if self.report.sink_error.is_none() {
            match write_to(sink, self.stream, &self.pending[..end]) {
                Ok(()) => self.report.delivered += end as u64,
                Err(e) => self.sink_failed(e),
            }
        }
        self.pending.drain(..end);
    }

    /// Remembers the sink's first error (the rest of the stream is drained).
    fn sink_failed(&mut self, e: io::Error) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            tracing::debug!(stream = ?self.stream, "the output's reader is gone");
        } else {
            tracing::warn!(stream = ?self.stream, error = %e,
                "the output sink failed; the rest of the stream is discarded");
        }
        self.report.sink_error = Some(e);
    }

    /// Takes `bytes` and hands `sink` every complete line (and every full
    /// [`MAX_CHUNK`] of an overlong one); a sink that does not
    /// [want lines](OutputSink::wants_lines) gets every byte at once.
    pub fn push(&mut self, mut bytes: &[u8], sink: &dyn OutputSink) {
        self.report.bytes += bytes.len() as u64;
        if !sink.wants_lines() {
            // Nothing is ever pending for such a sink: hand the chunk on as it is.
            if self.report.sink_error.is_none() {
                match write_to(sink, self.stream, bytes) {
                    Ok(()) => self.report.delivered += bytes.len() as u64,
                    Err(e) => self.sink_failed(e),
                }
            }
            return;
        }
        while !bytes.is_empty() {
            // Never hold more than MAX_CHUNK bytes of one line.
            let take = bytes.len().min(MAX_CHUNK - self.pending.len());
            let before = self.pending.len();
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // Only the new bytes can hold a newline: the rest was a partial line.
            if let Some(i) = memchr::memrchr(b'\n', &self.pending[before..]) {
                self.deliver(sink, before + i + 1);
            }
            if self.pending.len() == MAX_CHUNK {
                self.deliver(sink, MAX_CHUNK);
            }
        }
    }

    /// True once the sink failed because its reader is gone (`BrokenPipe`).
    pub fn reader_gone(&self) -> bool {
        self.report
            .sink_error
            .as_ref()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Delivers an unterminated last line and reports.
    pub fn finish(mut self, sink: &dyn OutputSink) -> ForwardReport {
        if !self.pending.is_empty() {
            let end = self.pending.len();
            self.deliver(sink, end);
        }
        self.report
    }
}

/// Copies `reader` into `sink` on line boundaries until end of stream.
///
/// Returns `Err` only when reading the stream fails; a failing sink is reported in
/// [`ForwardReport::sink_error`] and the stream is drained to the end regardless,
/// except after `BrokenPipe`: the sink's reader is gone, so `forward` returns and
/// drops `reader`, and the writing process gets its broken pipe too.
/// Memory use is bounded by [`MAX_CHUNK`] plus one read, whatever the line length.
pub async fn forward<R>(
    mut reader: R,
    sink: &dyn OutputSink,
    stream: Stream,
) -> io::Result<ForwardReport>
where
    R: AsyncRead + Unpin,
{
    let mut lines = LineBuffer::new(stream);
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(lines.finish(sink));
        }
        lines.push(&buf[..n], sink);
        if lines.reader_gone() {
            return Ok(lines.report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Chunks(Mutex<Vec<Vec<u8>>>);
    impl OutputSink for Chunks {
        fn write(&self, _: Stream, chunk: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().push(chunk.to_vec());
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Failing;
    impl OutputSink for Failing {
        fn write(&self, _: Stream, _: &[u8]) -> io::Result<()> {
            Err(io::Error::other("sink is broken"))
        }
    }

    /// A reader that hands out its data in fixed-size pieces, to split lines.
    struct Trickle<'a>(&'a [u8], usize);
    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[derive(Debug, Default)]
    struct Bytes(Chunks);
    impl OutputSink for Bytes {
        fn write(&self, stream: Stream, chunk: &[u8]) -> io::Result<()> {
            self.0.write(stream, chunk)
        }
        fn wants_lines(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_sink_that_wants_bytes_gets_each_chunk_as_it_comes() {
        let sink = Bytes::default();
        let mut lines = LineBuffer::new(Stream::Stdout);
        lines.push(b"name? ", &sink);
        assert_eq!(*sink.0 .0.lock().unwrap(), vec![b"name? ".to_vec()]);
        lines.push(b"a\nb", &sink);
        let report = lines.finish(&sink);
        assert_eq!(sink.0 .0.lock().unwrap().concat(), b"name? a\nb");
        assert_eq!((report.bytes, report.delivered), (9, 9));
    }

    #[tokio::test]
    async fn capture_wait_until_wakes_on_writes() {
        let cap = CaptureSink::new();
        let writer = Arc::clone(&cap);
        let waiter = tokio::spawn({
            let cap = Arc::clone(&cap);
            async move { cap.wait_until(|out, err| out == "ab" && err == "e").await }
        });
        tokio::task::yield_now().await;
        for (stream, bytes) in [
            (Stream::Stdout, "a"),
            (Stream::Stderr, "e"),
            (Stream::Stdout, "b"),
        ] {
            writer.write(stream, bytes.as_bytes()).unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken by the writes")
            .unwrap();
        // Already true: returns at once.
        cap.wait_until(|out, _| out.starts_with('a')).await;
    }

    #[tokio::test]
    async fn whole_lines_and_no_loss() {
        let data = b"alpha\nbeta\ngam\xffma\nno newline at end";
        let sink = Chunks::default();
        let report = forward(Trickle(data, 3), &sink, Stream::Stdout)
            .await
            .unwrap();
        let chunks = sink.0.into_inner().unwrap();
        assert_eq!(chunks.concat(), data);
        assert_eq!(report.bytes, data.len() as u64);
        assert_eq!(report.delivered, data.len() as u64);
        // Every chunk but the last ends a line.
        for c in &chunks[..chunks.len() - 1] {
            assert_eq!(c.last(), Some(&b'\n'), "{c:?}");
        }
        assert_eq!(chunks.last().unwrap(), b"no newline at end");
    }

    #[tokio::test]
    async fn long_line_is_chunked_not_dropped() {
        let mut data = vec![b'x'; 3 * MAX_CHUNK + 17];
        data.push(b'\n');
        data.extend_from_slice(b"tail\n");
        let sink = Chunks::default();
        forward(&data[..], &sink, Stream::Stderr).await.unwrap();
        let chunks = sink.0.into_inner().unwrap();
        assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK));
        assert!(chunks.len() >= 4);
        assert_eq!(chunks.concat(), data);
    }

    #[tokio::test]
    async fn failing_sink_still_drains() {
        let data = vec![b'y'; 5 * READ_SIZE];
        let report = forward(&data[..], &Failing, Stream::Stdout).await.unwrap();
        assert_eq!(report.bytes, data.len() as u64);
        assert_eq!(report.delivered, 0);
        assert_eq!(report.sink_error.unwrap().to_string(), "sink is broken");
    }
}
