//! The gRPC service of `volley.v1` on the learner side.
//!
//! - `Register` checks the auth token and protocol version, records the actor's
//!   registration (re-registering an id replaces it: a restarted actor rejoins) and
//!   answers with the run's [`RunInfo`].
//! - `PushChunk` validates the chunk against the registration ([`crate::validate`]),
//!   then `send().await`s it into the bounded queue the training thread reads; the ack
//!   goes out only once the chunk is in the queue, so a full queue holds actors back.
//! - `SubscribeWeights` streams the newest [`WeightsBlob`] of a `watch` channel, then
//!   every newer one; versions published while a subscriber is busy are skipped.
//!
//! [`serve`] runs the service on a listener until a shutdown future resolves; then
//! pending pushes fail with `UNAVAILABLE` and weight streams end, so the graceful
//! shutdown does not wait on them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use metrics::{counter, gauge};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use volley_common::agent::{ChunkFields, Progress};
use volley_common::telemetry as t;
use volley_proto::status::{Reason, Rejection, AUTH_KEY};
use volley_proto::v1::Dtype;
use volley_proto::{
    ActionKind, Chunk, ChunkAck, DType, RegisterReply, RegisterRequest, Volley, VolleyServer,
    Weights, WeightsRequest,
};

use crate::validate::{
    check_contents, check_protocol, check_structure, ActionSpec, ActorSpec, ValidChunk,
};

/// Default limit on one gRPC message in either direction: a procgen chunk of 64 envs x
/// 256 steps is about 200 MB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Chunks whose content scan reads more than this run it on a blocking thread.
const BLOCKING_SCAN_BYTES: usize = 1 << 20;

/// Longest actor id accepted.
const MAX_ACTOR_ID_LEN: usize = 256;

/// What `Register` answers: the run's settings every actor must use. Built by the
/// learner from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub run_id: String,
    /// The algorithm's name (`volley_common::algorithms`).
    pub algorithm: String,
    /// JSON of the algorithm's network spec.
    pub model_spec_json: String,
    pub env_id: String,
    /// Envs per actor (N).
    pub num_envs: usize,
    /// Env worker threads per actor.
    pub env_threads: usize,
    /// Steps per chunk (T).
    pub chunk_steps: usize,
    /// Chunks an actor may have unacknowledged.
    pub max_inflight: usize,
    /// Shape of one observation.
    pub obs_shape: Vec<usize>,
    /// U8 or F32.
    pub obs_dtype: DType,
    pub action: ActionSpec,
    /// The optional chunk fields the algorithm trains on.
    pub fields: ChunkFields,
    /// The algorithm's exploration settings for actors, JSON; empty: none.
    pub explore_json: String,
    /// The run's reward shaping for actors (JSON of `RewardConfig`); empty: none.
    pub reward_json: String,
}

impl RunInfo {
    /// What chunks of an actor of this run must look like.
    pub fn actor_spec(&self) -> ActorSpec {
        ActorSpec {
            num_envs: self.num_envs,
            chunk_steps: self.chunk_steps,
            obs_shape: self.obs_shape.clone(),
            obs_dtype: self.obs_dtype,
            action: self.action,
            fields: self.fields,
        }
    }

    fn reply(&self, weights_version: u64) -> RegisterReply {
        let (action_kind, action_dim, action_params) = match self.action {
            ActionSpec::Discrete { n } => (ActionKind::Discrete, n, 0),
            ActionSpec::Continuous { dim } => (ActionKind::Continuous, dim, 0),
            ActionSpec::Parameterised { choices, params } => {
                (ActionKind::Parameterised, choices, params)
            }
        };
        RegisterReply {
            run_id: self.run_id.clone(),
            algorithm: self.algorithm.clone(),
            model_spec_json: self.model_spec_json.clone(),
            env_id: self.env_id.clone(),
            num_envs: saturating_u32(self.num_envs),
            env_threads: saturating_u32(self.env_threads),
            chunk_steps: saturating_u32(self.chunk_steps),
            max_inflight: saturating_u32(self.max_inflight),
            weights_version,
            obs_shape: self.obs_shape.iter().map(|&d| d as u64).collect(),
            obs_dtype: Dtype::from(self.obs_dtype) as i32,
            action_kind: action_kind as i32,
            action_dim,
            action_params,
            explore_json: self.explore_json.clone(),
            reward_json: self.reward_json.clone(),
        }
    }
}

fn saturating_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// One version of the policy weights, serialised once by the trainer and shared by
/// every weight stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsBlob {
    pub version: u64,
    pub data: Bytes,
    /// Finished episodes the learner had received at publication.
    pub episodes: u64,
    /// Env steps of the run at publication.
    pub steps: u64,
}

/// The sending half the trainer publishes weights through.
pub type WeightsSender = watch::Sender<Option<Arc<WeightsBlob>>>;

/// Publishes one version to every weight stream (serialised once, shared) and
/// returns the bytes, for evaluation. `progress`: the version and the run's env steps
/// and finished episodes so far, by which actors anneal their exploration.
pub fn publish_weights(tx: &WeightsSender, progress: Progress, data: Vec<u8>) -> Bytes {
    let data = Bytes::from(data);
    gauge!(t::WEIGHTS_VERSION).set(progress.version as f64);
    tx.send_replace(Some(Arc::new(WeightsBlob {
        version: progress.version,
        data: data.clone(),
        episodes: progress.episodes,
        steps: progress.steps,
    })));
    data
}
/// The receiving half the service streams weights from.
pub type WeightsReceiver = watch::Receiver<Option<Arc<WeightsBlob>>>;

/// Server settings that do not come from the run: auth and transport tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Token every call must carry; empty: none.
    pub auth_token: String,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// `Weights.format` of the blobs this learner publishes.
    pub weights_format: String,
    /// HTTP/2 flow-control window per stream: a chunk of tens of MB needs a window of
    /// MBs to cross a link at full speed.
    pub stream_window_bytes: u32,
    /// HTTP/2 flow-control window per connection.
    pub connection_window_bytes: u32,
    /// Largest HTTP/2 frame the server accepts.
    pub max_frame_bytes: u32,
    /// HTTP/2 keepalive ping interval, to notice actors that vanished.
    pub keepalive: Option<Duration>,
    /// How long a ping may go unanswered before the actor's connection is dropped
    /// (its weight stream then stops counting in `volley_connected_actors`). Longer
    /// than the client's: an actor's answer may queue behind a chunk it is uploading.
    pub keepalive_timeout: Duration,
    /// Set when the run takes no actors (it trains alone): every registration is
    /// refused with this message.
    pub refuse_actors: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            auth_token: String::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            weights_format: "volley-nn".into(),
            stream_window_bytes: 16 << 20,
            connection_window_bytes: 64 << 20,
            max_frame_bytes: 1 << 20,
            keepalive: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(10),
            refuse_actors: None,
        }
    }
}

/// The tonic service. Cheap to clone: every clone shares the same state.
#[derive(Debug, Clone)]
pub struct VolleyService {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// What `Register` answers.
    run: RunInfo,
    /// The registration every actor of this run gets.
    spec: Arc<ActorSpec>,
    options: ServerOptions,
    /// Registered actors: chunks from other ids are refused.
    actors: RwLock<HashMap<String, Arc<ActorSpec>>>,
    /// The training queue; its capacity is the backpressure.
    queue: mpsc::Sender<ValidChunk>,
    /// The newest weights.
    weights: WeightsReceiver,
    /// Set once shutdown begins: blocked pushes and weight streams end.
    closing: watch::Sender<bool>,
    /// Weight streams open now: the actors connected.
    connected: Arc<AtomicUsize>,
}

impl VolleyService {
    /// A service answering `Register` with `run`, feeding valid chunks into `queue`
    /// and streaming weights from `weights`.
    pub fn new(
        run: RunInfo,
        options: ServerOptions,
        queue: mpsc::Sender<ValidChunk>,
        weights: WeightsReceiver,
    ) -> VolleyService {
        // Every reason's counter exists from the start at 0, so the first rejection
        // of a kind shows in rate() and dashboards show 0 rather than no data.
        for reason in Reason::ALL {
            counter!(t::CHUNKS_REJECTED, "reason" => reason.label()).increment(0);
        }
        volley_common::telemetry::set_run_info(&run.run_id, &run.algorithm, &run.env_id);
        let spec = Arc::new(run.actor_spec());
        VolleyService {
            shared: Arc::new(Shared {
                run,
                spec,
                options,
                actors: RwLock::new(HashMap::new()),
                queue,
                weights,
                closing: watch::Sender::new(false),
                connected: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    /// Ids of the registered actors.
    pub fn actors(&self) -> Vec<String> {
        let actors = self
            .shared
            .actors
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        actors.keys().cloned().collect()
    }

    /// Actors connected now (open weight streams).
    pub fn connected_actors(&self) -> usize {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Begins shutdown: pushes waiting on a full queue fail with `UNAVAILABLE`, new
    /// pushes too, and weight streams end.
    pub fn close(&self) {
        self.shared.closing.send_replace(true);
    }

    /// The tonic server wrapping this service, with the message size limits set.
    pub fn into_server(self) -> VolleyServer<VolleyService> {
        let max = self.shared.options.max_message_bytes;
        VolleyServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    fn check_auth<T>(
        &self,
        request: &Request<T>,
        body_token: Option<&str>,
    ) -> Result<(), Rejection> {
        let expected = self.shared.options.auth_token.as_bytes();
        if expected.is_empty() {
            return Ok(());
        }
        let header = request
            .metadata()
            .get(AUTH_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = [body_token, header]
            .into_iter()
            .flatten()
            .any(|token| constant_time_eq(token.as_bytes(), expected));
        if ok {
            Ok(())
        } else {
            Err(Rejection::new(Reason::Auth, "missing or wrong auth token"))
        }
    }

    fn lookup(&self, actor_id: &str) -> Option<Arc<ActorSpec>> {
        let actors = self
            .shared
            .actors
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        actors.get(actor_id).cloned()
    }

    fn weights_version(&self) -> u64 {
        self.shared
            .weights
            .borrow()
            .as_ref()
            .map_or(0, |blob| blob.version)
    }

    /// Validates a chunk and puts it into the queue; the ack says how full the
    /// queue is afterwards.
    async fn ingest(&self, request: Request<Chunk>) -> Result<ChunkAck, Rejection> {
        self.check_auth(&request, None)?;
        let chunk = request.into_inner();
        check_protocol(chunk.protocol_version)?;
        let Some(spec) = self.lookup(&chunk.actor_id) else {
            return Err(Rejection::new(
                Reason::UnknownActor,
                format!(
                    "actor {:?} is not registered, register first",
                    chunk.actor_id
                ),
            ));
        };
        let valid = check_structure(chunk, &spec)?;
        let valid = if valid.scan_bytes() > BLOCKING_SCAN_BYTES {
            let scanned = tokio::task::spawn_blocking(move || {
                let verdict = check_contents(&valid);
                (valid, verdict)
            })
            .await;
            let (valid, verdict) = scanned.map_err(|err| {
                Rejection::new(
                    Reason::ShuttingDown,
                    format!("chunk check did not finish: {err}"),
                )
            })?;
            verdict?;
            valid
        } else {
            check_contents(&valid)?;
            valid
        };

        let seq = valid.seq;
        let bytes = valid.payload_bytes as u64;
        let queue = &self.shared.queue;
        let mut closing = self.shared.closing.subscribe();
        tokio::select! {
            sent = queue.send(valid) => sent.map_err(|_| {
                // The training thread ended (step budget reached, or it failed): the
                // learner is going down, so registrations are refused from now on
                // and actors back off instead of reconnecting in a loop.
                self.close();
                Rejection::new(Reason::ShuttingDown, "the training queue is closed")
            })?,
            _ = closing.wait_for(|closing| *closing) => {
                return Err(Rejection::new(Reason::ShuttingDown, "the learner is shutting down"));
            }
        }
        let depth = queue.max_capacity() - queue.capacity();
        counter!(t::CHUNKS_ACCEPTED).increment(1);
        counter!(t::BYTES_IN).increment(bytes);
        gauge!(t::QUEUE_DEPTH).set(depth as f64);
        Ok(ChunkAck {
            seq,
            accepted: true,
            queue_depth: saturating_u32(depth),
        })
    }
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Keeps `volley_connected_actors` (and the service's own count) counting a weight
/// stream while it lives.
struct Connected(Arc<AtomicUsize>);

impl Connected {
    fn new(count: Arc<AtomicUsize>) -> Connected {
        count.fetch_add(1, Ordering::SeqCst);
        gauge!(t::CONNECTED_ACTORS).increment(1.0);
        Connected(count)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        gauge!(t::CONNECTED_ACTORS).decrement(1.0);
    }
}

/// Sends the newest weights newer than `have` into `tx`, then every newer version,
/// until the client leaves, the publisher goes away or shutdown begins.
async fn stream_weights(
    mut weights: WeightsReceiver,
    mut have: Option<u64>,
    format: String,
    tx: mpsc::Sender<Result<Weights, Status>>,
    mut closing: watch::Receiver<bool>,
    connected: Arc<AtomicUsize>,
    shared: Arc<Shared>,
) {
    let _connected = Connected::new(connected);
    loop {
        let newest = weights.borrow_and_update().clone();
        if let Some(blob) = newest.filter(|blob| have.is_none_or(|have| blob.version > have)) {
            let message = Weights {
                version: blob.version,
                data: blob.data.clone(),
                format: format.clone(),
                episodes: blob.episodes,
                steps: blob.steps,
            };
            tokio::select! {
                sent = tx.send(Ok(message)) => if sent.is_err() { return },
                _ = closing.wait_for(|closing| *closing) => return,
            }
            counter!(t::BYTES_OUT).increment(blob.data.len() as u64);
            have = Some(blob.version);
        }
        tokio::select! {
            changed = weights.changed() => if changed.is_err() {
                // The training loop ended (it owns the publisher): the learner is going
                // down, so registrations are refused from now on and actors back off
                // instead of reconnecting in a loop.
                shared.closing.send_replace(true);
                return;
            },
            () = tx.closed() => return,
            _ = closing.wait_for(|closing| *closing) => return,
        }
    }
}

#[tonic::async_trait]
impl Volley for VolleyService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let token = request.get_ref().auth_token.clone();
        self.check_auth(&request, Some(&token))?;
        let req = request.into_inner();
        check_protocol(req.protocol_version)?;
        if *self.shared.closing.borrow() {
            // Actors back off and retry; a new learner on this address will take them.
            return Err(
                Rejection::new(Reason::ShuttingDown, "the learner is shutting down").into(),
            );
        }
        if let Some(why) = &self.shared.options.refuse_actors {
            return Err(Rejection::new(Reason::BadRequest, why.clone()).into());
        }
        if req.actor_id.is_empty() || req.actor_id.len() > MAX_ACTOR_ID_LEN {
            return Err(Rejection::new(
                Reason::BadRequest,
                format!("actor id must have 1 to {MAX_ACTOR_ID_LEN} bytes"),
            )
            .into());
        }
        let run = &self.shared.run;
        if !req.env_id.is_empty() && req.env_id != run.env_id {
            return Err(Rejection::new(
                Reason::EnvId,
                format!(
                    "actor wants env {:?}, this run uses {:?}",
                    req.env_id, run.env_id
                ),
            )
            .into());
        }
        let replaced = {
            let mut actors = self
                .shared
                .actors
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            actors
                .insert(req.actor_id.clone(), Arc::clone(&self.shared.spec))
                .is_some()
        };
        volley_common::say!(
            "volley-learner: actor {:?} {} from {}",
            req.actor_id,
            if replaced {
                "re-registered"
            } else {
                "registered"
            },
            req.hostname.as_deref().unwrap_or("an unnamed host"),
        );
        Ok(Response::new(run.reply(self.weights_version())))
    }

    async fn push_chunk(&self, request: Request<Chunk>) -> Result<Response<ChunkAck>, Status> {
        match self.ingest(request).await {
            Ok(ack) => Ok(Response::new(ack)),
            Err(rejection) => {
                counter!(t::CHUNKS_REJECTED, "reason" => rejection.reason).increment(1);
                Err(rejection.into())
            }
        }
    }

    type SubscribeWeightsStream = ReceiverStream<Result<Weights, Status>>;

    async fn subscribe_weights(
        &self,
        request: Request<WeightsRequest>,
    ) -> Result<Response<Self::SubscribeWeightsStream>, Status> {
        self.check_auth(&request, None)?;
        let req = request.into_inner();
        let have = (req.have_version > 0).then_some(req.have_version);
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(stream_weights(
            self.shared.weights.clone(),
            have,
            self.shared.options.weights_format.clone(),
            tx,
            self.shared.closing.subscribe(),
            Arc::clone(&self.shared.connected),
            Arc::clone(&self.shared),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then closes the service
/// (see [`VolleyService::close`]) and waits for open calls to end.
pub async fn serve<F>(
    listener: TcpListener,
    service: VolleyService,
    shutdown: F,
) -> Result<(), tonic::transport::Error>
where
    F: Future<Output = ()> + Send,
{
    let options = service.shared.options.clone();
    let closer = service.clone();
    let signal = async move {
        shutdown.await;
        closer.close();
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .initial_stream_window_size(options.stream_window_bytes)
        .initial_connection_window_size(options.connection_window_bytes)
        .max_frame_size(options.max_frame_bytes)
        .http2_keepalive_interval(options.keepalive)
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, signal)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn the_reply_carries_the_run() {
        let run = RunInfo {
            run_id: "r".into(),
            algorithm: "ppo".into(),
            model_spec_json: "{}".into(),
            env_id: "CartPole-v1".into(),
            num_envs: 8,
            env_threads: 2,
            chunk_steps: 16,
            max_inflight: 2,
            obs_shape: vec![4],
            obs_dtype: DType::F32,
            action: ActionSpec::Discrete { n: 2 },
            fields: ChunkFields {
                logprobs: true,
                values: true,
                next_obs: false,
            },
            explore_json: String::new(),
            reward_json: String::new(),
        };
        let reply = run.reply(3);
        assert_eq!(reply.action_kind, ActionKind::Discrete as i32);
        assert_eq!(reply.action_dim, 2);
        assert_eq!(reply.obs_shape, vec![4]);
        assert_eq!(DType::from_wire(reply.obs_dtype), Ok(DType::F32));
        assert_eq!(reply.weights_version, 3);
        assert_eq!(run.actor_spec().chunk_steps, 16);
    }
}
