//! An LSP-style host: a JSON-RPC server over stdio, through the companion, with
//! `Content-Length` framing and bodies that end without a newline.
//!
//! ```sh
//! cargo run -p runner-companion --example lsp_host            # the example server
//! cargo run -p runner-companion --example lsp_host -- pylsp   # any stdio server
//! ```
//!
//! The example server is a few lines of `sh` that answer every request with its
//! method's name; a real language server (`pylsp`, `gopls serve`, `rust-analyzer`)
//! answers `initialize` with its capabilities. `cargo xtask test` runs this example.

use runner_companion::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Answers each request with `{"id":…,"result":"<method>"}`.
const SERVER: &str = r#"cr=$(printf '\r')
while IFS= read -r line; do
  line=${line%"$cr"}
  case "$line" in
    Content-Length:*) n=${line#Content-Length: } ;;
    "") body=$(dd bs=1 count="$n" 2>/dev/null)
        id=${body#*\"id\":}; id=${id%%[,\}]*}
        method=${body#*\"method\":\"}; method=${method%%\"*}
        reply="{\"jsonrpc\":\"2.0\",\"id\":$id,\"result\":\"$method\"}"
        printf 'Content-Length: %d\r\n\r\n%s' "${#reply}" "$reply" ;;
  esac
done"#;

/// Writes one framed message.
async fn send(to: &mut ProcStdin, body: &str) -> std::io::Result<()> {
    let framed = format!("Content-Length: {}\r\n\r\n{body}", body.len());
    to.write_all(framed.as_bytes()).await?;
    to.flush().await
}

/// Reads one framed message's body.
async fn receive(from: &mut BufReader<ProcStdout>) -> std::io::Result<String> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if from.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(n) = line.strip_prefix("Content-Length: ") {
            length = n.parse::<usize>().ok();
        }
    }
    let mut body = vec![0u8; length.ok_or(std::io::ErrorKind::InvalidData)?];
    from.read_exact(&mut body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let command: Vec<String> = std::env::args().skip(1).collect();
    let source_dir =
        std::env::current_dir().map_err(|e| Error::io("read the current directory", e))?;
    let companion = new_companion_runner(CompanionOpts {
        name: "example-lsp".into(),
        source_dir,
        ..Default::default()
    })
    .await?;
    companion.init().await?;
    let mut server = match command.split_first() {
        Some((bin, args)) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            companion.new_process(bin, &args).await?
        }
        None => companion.new_process("sh", &["-c", SERVER]).await?,
    };
    let mut to_server = server.stdin_pipe()?;
    let mut from_server = BufReader::new(server.stdout_pipe()?);
    let server = server.start().await?;
    let io = |e: std::io::Error| Error::io("talk to the server", e);
    let requests = [
        (
            1,
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":null,"rootUri":null,"capabilities":{}}}"#,
        ),
        (2, r#"{"jsonrpc":"2.0","id":2,"method":"shutdown"}"#),
    ];
    for (id, request) in requests {
        send(&mut to_server, request).await.map_err(io)?;
        let reply = receive(&mut from_server).await.map_err(io)?;
        println!("<- {reply}");
        if !reply.contains(&format!("\"id\":{id}")) {
            eprintln!("the reply to request {id} does not carry its id");
            std::process::exit(1);
        }
    }
    send(&mut to_server, r#"{"jsonrpc":"2.0","method":"exit"}"#)
        .await
        .map_err(io)?;
    drop(to_server);
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), server.wait())
        .await
        .map_err(|_| Error::io("wait for the server", std::io::ErrorKind::TimedOut.into()))??;
    companion.shutdown().await?;
    println!("server ended: {status} ({} backend)", companion.backend());
    Ok(())
}
