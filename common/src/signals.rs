//! SIGINT and SIGTERM as a stop flag that plain threads poll: the first signal asks
//! for a clean stop, a second one ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Starts a watcher thread and returns the flag it sets on the first SIGINT or
/// SIGTERM. A second signal exits the process with status 130.
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
                for n in 0.. {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    if n == 0 {
                        eprintln!("{name}: stopping (signal again to exit at once)");
                        flag.store(true, Ordering::SeqCst);
                    } else {
                        std::process::exit(130);
                    }
                }
            })
        })?;
    Ok(stop)
}
