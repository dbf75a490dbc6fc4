//! Image pulls on stderr, as `docker pull` shows them: on a terminal one line per
//! layer (a spinner while its size is unknown, a bar that never goes backwards,
//! extracting shown apart from downloading), cleared at the end; otherwise one plain
//! line per layer state change plus the overall bytes at most every 5 s, so CI logs
//! show the pull. Either way a note when nothing moved for 10 s.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use runner_core::Error;
use runner_docker::{LayerPhase, PullProgress};

/// How long without any change before the stall note.
const STALL: Duration = Duration::from_secs(10);
/// The least time between two plain "bytes so far" lines.
const PLAIN_BYTES_EVERY: Duration = Duration::from_secs(5);

/// Pulls `image` unless present, showing its progress on stderr (unless quiet).
pub(crate) async fn pull_with_progress(
    client: &runner_docker::Engine,
    image: &str,
    quiet: bool,
) -> Result<(), Error> {
    if runner_docker::image_exists(client, image).await? {
        return Ok(());
    }
    if quiet {
        return Ok(runner_docker::get_image_if_not_present(client, image, |_| {}).await?);
    }
    let view = Arc::new(Mutex::new(View::new(
        image,
        std::io::stderr().is_terminal(),
    )));
    let watchdog = {
        let view = Arc::clone(&view);
        tokio::spawn(async move {
            loop {
                // Asleep until the pull would count as stalled; while it is, once a
                // second to keep the note's count of seconds current.
                let wake = lock(&view).next_check();
                tokio::time::sleep_until(wake.into()).await;
                lock(&view).check_stall();
            }
        })
    };
    let pulled =
        runner_docker::get_image_if_not_present(client, image, |p| lock(&view).update(p)).await;
    watchdog.abort();
    lock(&view).finish();
    Ok(pulled?)
}

fn lock(view: &Mutex<View>) -> std::sync::MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|p| p.into_inner())
}

/// What is on screen (or in the log) of one pull.
struct View {
    image: String,
    last_change: Instant,
    stalled: bool,
    screen: Screen,
}

enum Screen {
    /// A terminal: one bar per layer.
    Bars {
        multi: MultiProgress,
        layers: Vec<ProgressBar>,
        note: Option<ProgressBar>,
    },
    /// Anything else: plain lines.
    Plain { last_bytes_line: Option<Instant> },
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl View {
    fn new(image: &str, terminal: bool) -> View {
        let screen = if terminal {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let header = multi.add(ProgressBar::new_spinner());
            header.set_style(style("{spinner} pulling {msg}"));
            header.set_message(image.to_string());
            header.enable_steady_tick(Duration::from_millis(120));
            Screen::Bars {
                multi,
                layers: vec![header],
                note: None,
            }
        } else {
            plain(format_args!("pulling {image}"));
            Screen::Plain {
                last_bytes_line: None,
            }
        };
        View {
            image: image.to_string(),
            last_change: Instant::now(),
            stalled: false,
            screen,
        }
    }

    fn update(&mut self, p: &PullProgress) {
        self.last_change = Instant::now();
        if self.stalled {
            self.stalled = false;
            match &mut self.screen {
                Screen::Bars { note, .. } => {
                    if let Some(note) = note.take() {
                        note.finish_and_clear();
                    }
                }
                Screen::Plain { .. } => plain(format_args!("pulling {}: moving again", self.image)),
            }
        }
        let Some(index) = p.changed else {
            if let (Screen::Plain { .. }, Some(status)) = (&self.screen, &p.status) {
                plain(format_args!("pulling {}: {status}", self.image));
            }
            return;
        };
        let layer = &p.layers[index];
        match &mut self.screen {
            Screen::Bars { multi, layers, .. } => {
                // Bar 0 is the header; layer i is bar i + 1.
                while layers.len() <= index + 1 {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_prefix(short(&p.layers[layers.len() - 1].id).to_string());
                    layers.push(bar);
                }
                let bar = &layers[index + 1];
                if p.phase_changed {
                    match (layer.phase, layer.total) {
                        (LayerPhase::Downloading | LayerPhase::Extracting, Some(total)) => {
                            bar.disable_steady_tick();
                            bar.set_style(
                                style("  {prefix} {msg:<11} [{bar:30}] {bytes}/{total_bytes}")
                                    .progress_chars("=> "),
                            );
                            bar.set_length(total);
                        }
                        (phase, _) if phase.is_done() => {
                            bar.set_style(style("  {prefix} {msg}"));
                        }
                        _ => {
                            bar.set_style(style("  {prefix} {spinner} {msg}"));
                            bar.enable_steady_tick(Duration::from_millis(120));
                        }
                    }
                    bar.set_message(layer.phase.as_str());
                }
                if let Some(total) = layer.total {
                    if bar.length() != Some(total) {
                        bar.set_length(total);
                    }
                }
                bar.set_position(layer.done);
                if layer.phase.is_done() {
                    bar.disable_steady_tick();
                    bar.tick();
                }
            }
            Screen::Plain { last_bytes_line } => {
                if p.phase_changed {
                    let size = layer
                        .size
                        .map(|s| format!(" ({})", HumanBytes(s)))
                        .unwrap_or_default();
                    plain(format_args!(
                        "pulling {}: layer {} {}{size}",
                        self.image,
                        short(&layer.id),
                        layer.phase.as_str()
                    ));
                } else if layer.phase == LayerPhase::Downloading
                    && last_bytes_line.is_none_or(|t| t.elapsed() >= PLAIN_BYTES_EVERY)
                {
                    *last_bytes_line = Some(Instant::now());
                    let (done, total) = p.downloaded();
                    plain(format_args!(
                        "pulling {}: {} of {} downloaded",
                        self.image,
                        HumanBytes(done),
                        HumanBytes(total)
                    ));
                }
            }
        }
    }

    /// When the stall note is due next.
    fn next_check(&self) -> Instant {
        if self.stalled {
            Instant::now() + Duration::from_secs(1)
        } else {
            self.last_change + STALL
        }
    }

    fn check_stall(&mut self) {
        let idle = self.last_change.elapsed();
        if idle < STALL {
            return;
        }
        let text = format!(
            "no progress for {} s: the registry is slow or the pull is stalled",
            idle.as_secs()
        );
        match &mut self.screen {
            Screen::Bars { multi, note, .. } => {
                let bar = note.get_or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(style("{msg}"));
                    bar
                });
                bar.set_message(text);
            }
            Screen::Plain { .. } if !self.stalled => {
                plain(format_args!("pulling {}: {text}", self.image));
            }
            Screen::Plain { .. } => {}
        }
        self.stalled = true;
    }

    fn finish(&mut self) {
        if let Screen::Bars {
            multi,
            layers,
            note,
        } = &mut self.screen
        {
            for bar in layers.iter().chain(note.iter()) {
                bar.finish_and_clear();
            }
            let _ = multi.clear();
        }
    }
}

/// One line on stderr, prefixed as runner's own.
fn plain(line: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "runner: {line}");
}
