//! The actor's link to its learner: connect and register (retrying with backoff while
//! the learner is unreachable), and the two network tasks on the tokio runtime: the
//! sender, which pushes chunks from a bounded channel (the channel's bound plus the
//! one push in flight is the actor's credit: a slow learner blocks the env loop
//! instead of growing memory), and the weights task, which keeps only the newest
//! published weights for the env loop to take between chunks. Both reconnect when the
//! learner goes away and share one reconnection per outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use bytes::Bytes;
use metrics::counter;
use tokio::sync::mpsc;
use volley_common::agent::Progress;
use volley_common::telemetry as t;
use volley_proto::v1::{Chunk, RegisterReply, RegisterRequest};

use crate::client::{Backoff, Client, ClientOptions};

/// One published version of the weights and where the run stood when it was
/// published.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    /// Version, run steps and run episodes at publication.
    pub progress: Progress,
    pub data: Bytes,
}

/// The newest weights received, taken by the env loop between chunks.
pub(crate) type Latest = Arc<Mutex<Option<Published>>>;

/// Why the network tasks gave up (the learner now serves another run), if they did.
pub(crate) type Failure = Arc<Mutex<Option<String>>>;

/// A task's connection: its generation and client.
type Conn = (u64, Client);

/// What the network tasks need to reconnect.
#[derive(Clone)]
pub(crate) struct Link {
    pub addr: String,
    pub request: RegisterRequest,
    /// The first registration's answer: a reconnection must find the same run.
    pub first: RegisterReply,
    /// The user's stop flag: while the learner is away the tasks sit in reconnect
    /// loops, and a stop must end those (the env loop may be blocked handing them a
    /// chunk).
    pub stop: Arc<AtomicBool>,
    pub failure: Failure,
    /// The connection both network tasks use, with a generation that counts
    /// reconnections: when both notice one outage, one reconnects and the other
    /// takes its client, so an outage is one reconnection and one registration.
    current: Arc<tokio::sync::Mutex<Conn>>,
}

impl Link {
    pub(crate) fn new(
        addr: String,
        request: RegisterRequest,
        first: RegisterReply,
        client: Client,
        stop: Arc<AtomicBool>,
    ) -> Link {
        Link {
            addr,
            request,
            first,
            stop,
            failure: Arc::new(Mutex::new(None)),
            current: Arc::new(tokio::sync::Mutex::new((0, client))),
        }
    }

    /// The connection the tasks start with.
    pub(crate) async fn first_conn(&self) -> Conn {
        self.current.lock().await.clone()
    }

    /// A working connection newer than `stale` (the one that failed): the other
    /// task's if it already reconnected, else a new one. `None`: stop.
    async fn reconnect(&self, stale: u64) -> Option<Conn> {
        let mut current = self.current.lock().await;
        if current.0 > stale {
            return Some(current.clone());
        }
        match connect(&self.addr, &self.request, &self.stop, Some(&self.first)).await {
            Ok(Some((client, _))) => {
                *current = (current.0 + 1, client);
                Some(current.clone())
            }
            Ok(None) => None,
            Err(e) => {
                // The learner now serves another run: stop the whole actor, saying why.
                volley_common::say!("volley-actor: {e:#}");
                if let Ok(mut f) = self.failure.lock() {
                    f.get_or_insert(format!("{e:#}"));
                }
                self.stop.store(true, Ordering::SeqCst);
                None
            }
        }
    }
}

/// Connects and registers, retrying with backoff while the learner is unreachable.
/// `Ok(None)`: stopped before a connection was made. `expect`: the run a reconnection
/// must find.
pub(crate) async fn connect(
    addr: &str,
    request: &RegisterRequest,
    stop: &AtomicBool,
    expect: Option<&RegisterReply>,
) -> Result<Option<(Client, RegisterReply)>> {
    let reconnect = expect.is_some();
    let mut backoff = Backoff::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        // The token travels with every call (register, pushes, the weights stream).
        let options = ClientOptions {
            auth_token: request.auth_token.clone(),
            ..ClientOptions::default()
        };
        match Client::connect_with(addr, options).await {
            Ok(client) => match client.register(request.clone()).await {
                Ok(reply) => {
                    if let Some(e) = expect {
                        counter!(t::RECONNECTS).increment(1);
                        volley_common::say!(
                            "volley-actor: reconnected to {addr} (weights v{})",
                            reply.weights_version
                        );
                        if (&reply.run_id, &reply.env_id, &reply.model_spec_json)
                            != (&e.run_id, &e.env_id, &e.model_spec_json)
                        {
                            bail!(
                                "the learner at {addr} now serves run '{}' ({}), not '{}' ({}): restart this actor to join it",
                                reply.run_id, reply.env_id, e.run_id, e.env_id
                            );
                        }
                    }
                    return Ok(Some((client, reply)));
                }
                Err(e) if !e.is_retryable() => bail!("the learner refused registration: {e}"),
                Err(e) => {
                    volley_common::say!("volley-actor: register with {addr} failed: {e}; retrying")
                }
            },
            Err(e) => {
                if !reconnect {
                    volley_common::say!(
                        "volley-actor: cannot reach the learner at {addr}: {e}; retrying"
                    );
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Pushes the chunks of `rx` until it closes, reconnecting when the learner goes away;
/// a chunk the learner refuses as invalid is dropped (and said).
pub(crate) async fn sender_loop(link: Link, mut rx: mpsc::Receiver<Chunk>) {
    let mut conn = link.first_conn().await;
    while let Some(chunk) = rx.recv().await {
        let bytes = chunk_bytes(&chunk);
        loop {
            match conn.1.push(chunk.clone()).await {
                Ok(_) => {
                    counter!(t::CHUNKS_SENT).increment(1);
                    counter!(t::BYTES_OUT).increment(bytes);
                    break;
                }
                Err(e) if e.is_retryable() => {
                    volley_common::say!("volley-actor: lost the learner ({e}); reconnecting");
                    match link.reconnect(conn.0).await {
                        Some(c) => conn = c,
                        None => return,
                    }
                }
                Err(e) => {
                    // The learner judged this chunk invalid: keep going with the next.
                    volley_common::say!("volley-actor: chunk {} rejected: {e}", chunk.seq);
                    break;
                }
            }
        }
    }
}

fn chunk_bytes(c: &Chunk) -> u64 {
    [
        &c.obs,
        &c.actions,
        &c.logprobs,
        &c.values,
        &c.rewards,
        &c.terminated,
        &c.truncated,
        &c.truncation_values,
        &c.bootstrap_values,
        &c.next_obs,
        &c.action_params,
    ]
    .iter()
    .map(|t| t.as_ref().map_or(0, |t| t.data.len() as u64))
    .sum()
}

/// Follows the learner's weights into `latest` until stopped.
pub(crate) async fn weights_loop(link: Link, latest: Latest) {
    let mut conn = link.first_conn().await;
    // Waits between failed subscriptions, so a learner that refuses the stream is not
    // asked again in a tight loop.
    let mut backoff = Backoff::new();
    loop {
        // Always ask for the learner's current version (have = 0): after a resume
        // from an older checkpoint its versions may be lower than the one in use.
        match conn.1.subscribe_weights(&link.request.actor_id, 0).await {
            Ok(mut stream) => {
                backoff = Backoff::new();
                // Ends when the learner goes away or closes the stream.
                while let Ok(Some(w)) = stream.message().await {
                    counter!(t::BYTES_IN).increment(w.data.len() as u64);
                    if let Ok(mut l) = latest.lock() {
                        *l = Some(Published {
                            progress: Progress {
                                version: w.version,
                                steps: w.steps,
                                episodes: w.episodes,
                            },
                            data: w.data,
                        });
                    }
                }
            }
            Err(e) => {
                volley_common::say!("volley-actor: weights subscription failed: {e}");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        if link.stop.load(Ordering::SeqCst) {
            return;
        }
        volley_common::say!("volley-actor: the weights stream ended; reconnecting");
        match link.reconnect(conn.0).await {
            Some(c) => conn = c,
            None => return,
        }
    }
}
