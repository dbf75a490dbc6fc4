//! Runs a command with the best backend here and prints what it wrote:
//!
//! ```sh
//! cargo run -p runner-companion --example run -- uname -a
//! ```
//!
//! With no command it runs `echo hello from runner`. Exits with the command's code.

use runner_companion::prelude::*;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        args = vec!["echo".into(), "hello from runner".into()];
    }
    let source_dir =
        std::env::current_dir().map_err(|e| Error::io("read the current directory", e))?;
    let companion = new_companion_runner(CompanionOpts {
        name: "example-run".into(),
        source_dir,
        ..Default::default()
    })
    .await?;
    companion.init().await?;
    let rest: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    let proc = companion.new_process(&args[0], &rest).await?;
    let out = proc.output().await?;
    companion.shutdown().await?;
    print!("{}", out.stdout_lossy());
    eprint!("{}", out.stderr_lossy());
    eprintln!("[{} backend: {}]", companion.backend(), out.status);
    std::process::exit(out.status.shell_code());
}
