//! Attached output: the frames an exec's or a container's attached stream carries,
//! and the forwarder of a container's own output.

use futures_util::StreamExt;
use runner_core::{LineBuffer, Output, Stream};

use crate::engine::OutputStream;

/// Which stream a frame of attached output belongs to (stdin echoes are dropped).
pub(crate) fn split_frame(frame: bollard::container::LogOutput) -> Option<(Stream, bytes::Bytes)> {
    use bollard::container::LogOutput;
    match frame {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            Some((Stream::Stdout, message))
        }
        LogOutput::StdErr { message } => Some((Stream::Stderr, message)),
        LogOutput::StdIn { .. } => None,
    }
}

/// Forwards the container's output, line-framed, until the container stops.
pub(crate) async fn forward_logs(mut logs: OutputStream, sink: Output) {
    let mut out = LineBuffer::new(Stream::Stdout);
    let mut err = LineBuffer::new(Stream::Stderr);
    while let Some(Ok(frame)) = logs.next().await {
        match split_frame(frame) {
            Some((Stream::Stdout, bytes)) => out.push(&bytes, &*sink),
            Some((Stream::Stderr, bytes)) => err.push(&bytes, &*sink),
            None => {}
        }
    }
    out.finish(&*sink);
    err.finish(&*sink);
}

/// The reader `stdout_pipe` hands out before the process starts: the process's own
/// stdout pipe when the helper lets us open it (an engine on this host, see
/// [`runner_shim::protocol::Spawn::direct_stdout`]), else what runner forwards from
/// the engine's stream.
pub(crate) struct LateStdout {
    direct: Option<tokio::sync::oneshot::Receiver<tokio::net::unix::pipe::Receiver>>,
    pipe: Option<tokio::net::unix::pipe::Receiver>,
    forwarded: tokio::io::DuplexStream,
}

impl LateStdout {
    /// The user's reader and the process's end: a sender for the pipe, which is
    /// dropped to mean "read what is forwarded into `forwarded`".
    pub(crate) fn new(
        forwarded: tokio::io::DuplexStream,
    ) -> (
        LateStdout,
        tokio::sync::oneshot::Sender<tokio::net::unix::pipe::Receiver>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reader = LateStdout {
            direct: Some(rx),
            pipe: None,
            forwarded,
        };
        (reader, tx)
    }
}

impl tokio::io::AsyncRead for LateStdout {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(direct) = this.direct.as_mut() {
            match std::future::Future::poll(std::pin::Pin::new(direct), cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(pipe) => {
                    this.pipe = pipe.ok();
                    this.direct = None;
                }
            }
        }
        match this.pipe.as_mut() {
            Some(pipe) => std::pin::Pin::new(pipe).poll_read(cx, buf),
            None => std::pin::Pin::new(&mut this.forwarded).poll_read(cx, buf),
        }
    }
}
