//! SIGINT and SIGTERM as a stop flag that plain threads poll: the first signal asks
//! for a clean stop, a second one at least two seconds later ends the process at once.
//! Signals closer together count as one request: Ctrl-C in a terminal reaches every
//! process of the foreground group and a launcher (deploy/local.sh) then forwards
//! SIGTERM, which must not cut the clean stop short.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Starts a watcher thread and returns the flag it sets on the first SIGINT or
/// SIGTERM. A signal two seconds or more after the first exits with status 130.
pub fn stop_on_signals(name: &'static str) -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("volley-signals".into())
        .spawn(move || {
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                let mut first: Option<std::time::Instant> = None;
                loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    match first {
                        None => {
                            crate::say!("{name}: stopping (signal again to exit at once)");
                            flag.store(true, Ordering::SeqCst);
                            first = Some(std::time::Instant::now());
                        }
                        Some(t) if t.elapsed() >= std::time::Duration::from_secs(2) => {
                            std::process::exit(130)
                        }
                        Some(_) => {}
                    }
                }
            })
        })?;
    Ok(stop)
}
