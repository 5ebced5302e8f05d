//! The transport in one process: a learner service on `127.0.0.1:0` with a small
//! queue, clients that register, push good and bad chunks and subscribe to weights.
//!
//! Each test runs on a current-thread runtime with its own local metrics recorder, so
//! counters of parallel tests do not mix.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;
use tonic::{Code, Request};
use volley_learner::server::{
    serve, RunInfo, ServerOptions, VolleyService, WeightsBlob, WeightsSender,
};
use volley_learner::validate::{ActionSpec, ValidChunk};
use volley_proto::status::{reason_of, Reason, AUTH_KEY};
use volley_proto::tensor::{from_slice, from_vec};
use volley_proto::v1::volley_client::VolleyClient;
use volley_proto::{Chunk, DType, RegisterRequest, WeightsRequest, PROTOCOL_VERSION};

/// Counters and gauges by `name{label=value,...}`.
#[derive(Debug, Default)]
struct TestRecorder {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl TestRecorder {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(values.entry(name).or_default())
    }

    fn get(&self, name: &str) -> u64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.get(name).map_or(0, |v| v.load(Ordering::SeqCst))
    }

    fn gauge(&self, name: &str) -> f64 {
        f64::from_bits(self.get(name))
    }

    fn rejected(&self, reason: &str) -> u64 {
        self.get(&format!("volley_chunks_rejected_total{{reason={reason}}}"))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

const T: usize = 3;
const N: usize = 2;
const OBS: [usize; 3] = [8, 8, 3];
const ACTIONS: u32 = 4;

fn run_info(obs_shape: &[usize], obs_dtype: DType) -> RunInfo {
    RunInfo {
        run_id: "test-run".into(),
        algorithm: "ppo".into(),
        model_spec_json: "{}".into(),
        env_id: "procgen:coinrun".into(),
        num_envs: N,
        env_threads: 1,
        chunk_steps: T,
        max_inflight: 2,
        obs_shape: obs_shape.to_vec(),
        obs_dtype,
        action: ActionSpec::Discrete { n: ACTIONS },
        fields: volley_common::agent::ChunkFields {
            logprobs: true,
            values: true,
            next_obs: false,
        },
        explore_json: String::new(),
        reward_json: String::new(),
    }
}

/// A served learner and the ends the training side would hold.
struct Learner {
    addr: String,
    queue: mpsc::Receiver<ValidChunk>,
    weights: WeightsSender,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Learner {
    async fn start(run: RunInfo, queue_capacity: usize, auth_token: &str) -> Learner {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let (queue_tx, queue) = mpsc::channel(queue_capacity);
        let (weights, weights_rx) = watch::channel(None);
        let options = ServerOptions {
            auth_token: auth_token.into(),
            ..ServerOptions::default()
        };
        let service = VolleyService::new(run, options, queue_tx, weights_rx);
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, service, async {
            let _ = stopped.await;
        }));
        Learner {
            addr,
            queue,
            weights,
            stop: Some(stop),
            served,
        }
    }

    async fn client(&self) -> VolleyClient<Channel> {
        VolleyClient::connect(self.addr.clone())
            .await
            .expect("connect")
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    fn publish(&self, version: u64) {
        let blob = WeightsBlob {
            version,
            data: Bytes::from(vec![version as u8; 100]),
            episodes: 0,
            steps: 0,
        };
        self.weights.send_replace(Some(Arc::new(blob)));
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.served)
            .await
            .expect("the server stops within 5 s")
            .expect("server task")
            .expect("serve");
    }
}

fn register_request(actor_id: &str) -> RegisterRequest {
    RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        actor_id: actor_id.into(),
        auth_token: String::new(),
        env_id: String::new(),
        hostname: Some("test-host".into()),
    }
}

fn good_chunk(actor_id: &str, seq: u64) -> Chunk {
    let obs_len = T * N * OBS.iter().product::<usize>();
    Chunk {
        protocol_version: PROTOCOL_VERSION,
        actor_id: actor_id.into(),
        policy_version: 0,
        seq,
        obs: from_vec(&[T, N, OBS[0], OBS[1], OBS[2]], vec![7u8; obs_len]).ok(),
        actions: from_vec(&[T, N], vec![0i64, 1, 2, 3, 0, 1]).ok(),
        logprobs: from_vec(&[T, N], vec![-1.0f32; T * N]).ok(),
        values: from_vec(&[T, N], vec![0.5f32; T * N]).ok(),
        rewards: from_vec(&[T, N], vec![1.0f32; T * N]).ok(),
        terminated: from_vec(&[T, N], vec![false, false, true, false, false, false]).ok(),
        truncated: from_vec(&[T, N], vec![false; T * N]).ok(),
        truncation_values: from_vec(&[T, N], vec![0.0f32; T * N]).ok(),
        bootstrap_values: from_vec(&[N], vec![0.25f32; N]).ok(),
        episode_returns: vec![3.0],
        episode_lengths: vec![3],
        next_obs: None,
        action_params: None,
    }
}

#[tokio::test]
async fn good_chunks_enter_the_queue_and_bad_ones_are_refused() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mut learner = Learner::start(run_info(&OBS, DType::U8), 4, "").await;
    let mut client = learner.client().await;

    let reply = client
        .register(register_request("a1"))
        .await
        .expect("register")
        .into_inner();
    assert_eq!(reply.run_id, "test-run");
    assert_eq!((reply.num_envs, reply.chunk_steps), (N as u32, T as u32));
    assert_eq!(reply.obs_shape, vec![8, 8, 3]);
    assert_eq!(DType::from_wire(reply.obs_dtype), Ok(DType::U8));
    assert_eq!(reply.action_dim, ACTIONS);

    let ack = client
        .push_chunk(good_chunk("a1", 1))
        .await
        .expect("good chunk")
        .into_inner();
    assert!(ack.accepted);
    assert_eq!((ack.seq, ack.queue_depth), (1, 1));
    let valid = learner.queue.try_recv().expect("the good chunk is queued");
    assert_eq!((valid.actor_id.as_str(), valid.seq), ("a1", 1));
    assert_eq!((valid.steps, valid.num_envs), (T, N));
    assert_eq!(valid.obs.len(), T * N * 192);
    assert_eq!(valid.actions_i64(), Some(vec![0, 1, 2, 3, 0, 1]));
    assert!(valid.terminated_bools()[2]);
    assert_eq!(valid.episode_returns, vec![3.0]);
    assert_eq!(recorder.get("volley_chunks_accepted_total{}"), 1);
    assert_eq!(
        recorder.get("volley_bytes_in_total{}"),
        valid.payload_bytes as u64
    );

    let mut cases: Vec<(&str, Chunk, Code, Reason, &str)> = Vec::new();
    let mut c = good_chunk("a1", 2);
    c.obs = from_vec(&[T, N, 8, 8, 4], vec![0u8; T * N * 256]).ok();
    cases.push((
        "wrong shape",
        c,
        Code::InvalidArgument,
        Reason::Shape,
        "obs: shape is [3, 2, 8, 8, 4], expected [3, 2, 8, 8, 3]",
    ));
    let mut c = good_chunk("a1", 3);
    c.rewards = from_vec(&[T, N], vec![1i32; T * N]).ok();
    cases.push((
        "wrong dtype",
        c,
        Code::InvalidArgument,
        Reason::DType,
        "rewards: dtype is i32, expected f32",
    ));
    let mut c = good_chunk("a1", 4);
    if let Some(values) = c.values.as_mut() {
        values.data = values.data.slice(..values.data.len() - 3);
    }
    cases.push((
        "truncated bytes",
        c,
        Code::InvalidArgument,
        Reason::ByteLength,
        "values: tensor of dtype F32 and shape [3, 2] needs 24 bytes, got 21",
    ));
    let mut c = good_chunk("a1", 5);
    c.rewards = from_slice(&[T, N], &[1.0, 1.0, 1.0, f32::NAN, 1.0, 1.0]).ok();
    cases.push((
        "nan reward",
        c,
        Code::InvalidArgument,
        Reason::NonFinite,
        "rewards: element 3 is not finite",
    ));
    cases.push((
        "unknown actor",
        good_chunk("nobody", 6),
        Code::FailedPrecondition,
        Reason::UnknownActor,
        "actor \"nobody\" is not registered",
    ));
    let mut c = good_chunk("a1", 7);
    c.protocol_version = 0;
    cases.push((
        "old protocol version",
        c,
        Code::FailedPrecondition,
        Reason::ProtocolVersion,
        "protocol version 0 is not supported",
    ));
    let mut c = good_chunk("a1", 8);
    c.actions = from_vec(&[T, N], vec![0i64, 1, 2, 3, ACTIONS.into(), 1]).ok();
    cases.push((
        "action out of range",
        c,
        Code::InvalidArgument,
        Reason::ActionRange,
        "actions: element 4 is 4, outside [0, 4)",
    ));
    let mut c = good_chunk("a1", 9);
    c.truncation_values = None;
    cases.push((
        "missing tensor",
        c,
        Code::InvalidArgument,
        Reason::MissingTensor,
        "truncation_values: tensor is missing",
    ));

    for (what, chunk, code, reason, message) in cases {
        let before = recorder.rejected(reason.label());
        let status = client
            .push_chunk(chunk)
            .await
            .expect_err(&format!("{what} must be refused"));
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(message),
            "{what}: {:?} does not contain {message:?}",
            status.message()
        );
        assert_eq!(reason_of(&status), Some(reason), "{what}");
        assert_eq!(recorder.rejected(reason.label()), before + 1, "{what}");
        assert!(
            learner.queue.try_recv().is_err(),
            "{what}: nothing of a bad chunk is queued"
        );
    }
    assert_eq!(recorder.get("volley_chunks_accepted_total{}"), 1);

    // Training goes on after the bad chunks.
    client
        .push_chunk(good_chunk("a1", 10))
        .await
        .expect("good chunk");
    assert_eq!(learner.queue.try_recv().map(|c| c.seq).ok(), Some(10));
    assert_eq!(recorder.get("volley_chunks_accepted_total{}"), 2);
    learner.shutdown().await;
}

#[tokio::test]
async fn registration_checks_auth_version_and_env() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mut learner = Learner::start(run_info(&OBS, DType::U8), 4, "s3cret").await;
    let mut client = learner.client().await;

    let mut req = register_request("a1");
    req.auth_token = "wrong".into();
    let status = client.register(req).await.expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "missing or wrong auth token");

    let status = client
        .register(register_request("a1"))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut req = register_request("a1");
    req.auth_token = "s3cret".into();
    req.protocol_version = 2;
    let status = client.register(req).await.expect_err("future protocol");
    assert_eq!(status.code(), Code::FailedPrecondition);

    let mut req = register_request("a1");
    req.auth_token = "s3cret".into();
    req.env_id = "CartPole-v1".into();
    let status = client.register(req).await.expect_err("another env");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&status), Some(Reason::EnvId));

    let mut req = register_request("a1");
    req.auth_token = "s3cret".into();
    client.register(req.clone()).await.expect("right token");
    // A restarted actor registers again under the same id.
    client.register(req).await.expect("re-register");

    // Pushes carry the token as metadata.
    let status = client
        .push_chunk(good_chunk("a1", 1))
        .await
        .expect_err("push without token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(recorder.rejected("auth"), 1);
    let mut push = Request::new(good_chunk("a1", 2));
    push.metadata_mut()
        .insert(AUTH_KEY, "Bearer s3cret".parse().expect("ascii"));
    client.push_chunk(push).await.expect("push with token");
    assert_eq!(learner.queue.try_recv().map(|c| c.seq).ok(), Some(2));

    let status = client
        .subscribe_weights(WeightsRequest {
            actor_id: "a1".into(),
            have_version: 0,
        })
        .await
        .expect_err("weights without token");
    assert_eq!(status.code(), Code::Unauthenticated);
    learner.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_holds_the_ack_back() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mut learner = Learner::start(run_info(&OBS, DType::U8), 1, "").await;
    let mut client = learner.client().await;
    client
        .register(register_request("a1"))
        .await
        .expect("register");

    let ack = client
        .push_chunk(good_chunk("a1", 1))
        .await
        .expect("first push")
        .into_inner();
    assert_eq!(ack.queue_depth, 1);
    assert_eq!(recorder.gauge("volley_queue_depth{}"), 1.0);

    let mut second_client = client.clone();
    let mut second =
        tokio::spawn(async move { second_client.push_chunk(good_chunk("a1", 2)).await });
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(waited.is_err(), "the second push completed on a full queue");

    let first = learner.queue.recv().await.expect("first chunk");
    assert_eq!(first.seq, 1);
    let ack = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second push completes once the reader took one")
        .expect("task")
        .expect("second push")
        .into_inner();
    assert_eq!((ack.seq, ack.queue_depth), (2, 1));
    assert_eq!(learner.queue.recv().await.map(|c| c.seq), Some(2));
    learner.shutdown().await;
}

#[tokio::test]
async fn large_float_chunks_are_checked_off_the_runtime() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // 3 x 2 x 128 x 128 x 3 floats: 1.2 MB of obs to scan.
    let obs_shape = [128, 128, 3];
    let mut learner = Learner::start(run_info(&obs_shape, DType::F32), 4, "").await;
    let mut client = learner.client().await;
    client
        .register(register_request("a1"))
        .await
        .expect("register");
    let len = T * N * 128 * 128 * 3;
    let obs = |v: Vec<f32>| from_vec(&[T, N, 128, 128, 3], v).ok();

    let mut chunk = good_chunk("a1", 1);
    chunk.obs = obs(vec![0.5; len]);
    client.push_chunk(chunk).await.expect("finite obs");
    assert_eq!(
        learner.queue.try_recv().map(|c| c.obs.len()).ok(),
        Some(len * 4)
    );

    let mut chunk = good_chunk("a1", 2);
    let mut bad = vec![0.5; len];
    bad[len - 1] = f32::INFINITY;
    chunk.obs = obs(bad);
    let status = client.push_chunk(chunk).await.expect_err("infinite obs");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        format!("obs: element {} is not finite", len - 1)
    );
    assert_eq!(recorder.rejected("non_finite"), 1);
    assert!(learner.queue.try_recv().is_err());
    learner.shutdown().await;
}

async fn next_version(stream: &mut tonic::Streaming<volley_proto::Weights>) -> u64 {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("weights within 5 s")
        .expect("stream")
        .expect("stream open")
        .version
}

#[tokio::test]
async fn weight_streams_deliver_the_newest_version() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let learner = Learner::start(run_info(&OBS, DType::U8), 4, "").await;
    let mut client = learner.client().await;
    let subscribe = |have_version: u64| WeightsRequest {
        actor_id: "a1".into(),
        have_version,
    };

    for version in 1..=3 {
        learner.publish(version);
    }
    // A late subscriber starts with the newest version.
    let mut late = client
        .subscribe_weights(subscribe(0))
        .await
        .expect("subscribe")
        .into_inner();
    let first = late.message().await.expect("stream").expect("weights");
    assert_eq!(first.version, 3);
    assert_eq!(first.data, Bytes::from(vec![3u8; 100]));
    assert_eq!(first.format, ServerOptions::default().weights_format);

    // One that already has the newest waits for the next.
    let mut current = client
        .subscribe_weights(subscribe(3))
        .await
        .expect("subscribe")
        .into_inner();
    learner.publish(4);
    assert_eq!(next_version(&mut current).await, 4);
    assert_eq!(next_version(&mut late).await, 4);
    assert_eq!(recorder.gauge("volley_connected_actors{}"), 2.0);

    // A subscriber that misses versions skips to the newest.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for version in 5..=7 {
        learner.publish(version);
    }
    assert_eq!(next_version(&mut late).await, 7);
    assert_eq!(next_version(&mut current).await, 7);
    assert_eq!(recorder.get("volley_bytes_out_total{}"), 5 * 100);

    // A subscriber that leaves is no longer counted.
    drop(current);
    let mut connected = recorder.gauge("volley_connected_actors{}");
    for _ in 0..100 {
        if connected == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        connected = recorder.gauge("volley_connected_actors{}");
    }
    assert_eq!(connected, 1.0);

    // Shutdown ends the open stream instead of waiting on it.
    learner.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), late.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn shutdown_releases_a_push_blocked_on_a_full_queue() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let learner = Learner::start(run_info(&OBS, DType::U8), 1, "").await;
    let mut client = learner.client().await;
    client
        .register(register_request("a1"))
        .await
        .expect("register");
    client
        .push_chunk(good_chunk("a1", 1))
        .await
        .expect("first push");
    let mut second_client = client.clone();
    let second = tokio::spawn(async move { second_client.push_chunk(good_chunk("a1", 2)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The queue's reader is still alive (held by `learner`) but reads nothing.
    let Learner {
        queue,
        weights,
        mut stop,
        served,
        addr,
    } = learner;
    if let Some(stop) = stop.take() {
        let _ = stop.send(());
    }
    let status = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the blocked push ends")
        .expect("task")
        .expect_err("refused on shutdown");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason_of(&status), Some(Reason::ShuttingDown));
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the server stops")
        .expect("task")
        .expect("serve");
    drop((queue, weights, addr));
}
