//! Attached output: the frames an exec's or a container's attached stream carries,
//! and the forwarder of a container's own output.

use futures_util::StreamExt;
use runner_core::{LineBuffer, Output, Stream};

/// An attached stream of output frames (an exec's or a container's).
pub(crate) type OutputStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = std::result::Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;

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

/// An exec's stdin, as the engine's attach gives it.
pub(crate) type ExecInput = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// Starts exec `exec_id` attached (no terminal): its output and its stdin. `Ok(None)`
/// when the engine detached it instead.
pub(crate) async fn start_attached(
    docker: &bollard::Docker,
    exec_id: &str,
) -> Result<Option<(OutputStream, ExecInput)>, bollard::errors::Error> {
    let options = bollard::exec::StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: None,
    };
    Ok(match docker.start_exec(exec_id, Some(options)).await? {
        bollard::exec::StartExecResults::Attached { output, input } => Some((output, input)),
        bollard::exec::StartExecResults::Detached => None,
    })
}
