//! Metric names, their descriptions and the Prometheus exporter every volley process
//! runs. Names are declared once here; code records through the `metrics` macros
//! with these constants.

use std::net::SocketAddr;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

// Env stepping (actors; the learner counts the steps it trained on).
pub const ENV_STEPS: &str = "volley_env_steps_total";
pub const ENV_STEPS_PER_SEC: &str = "volley_env_steps_per_second";
pub const EPISODE_RETURN: &str = "volley_episode_return";
pub const EPISODE_LENGTH: &str = "volley_episode_length";
// Transport.
pub const CHUNKS_ACCEPTED: &str = "volley_chunks_accepted_total";
pub const CHUNKS_REJECTED: &str = "volley_chunks_rejected_total";
pub const CHUNKS_DROPPED: &str = "volley_chunks_dropped_total";
pub const CHUNKS_SENT: &str = "volley_chunks_sent_total";
pub const QUEUE_DEPTH: &str = "volley_queue_depth";
pub const BYTES_IN: &str = "volley_bytes_in_total";
pub const BYTES_OUT: &str = "volley_bytes_out_total";
pub const CONNECTED_ACTORS: &str = "volley_connected_actors";
pub const RECONNECTS: &str = "volley_reconnects_total";
// Learning. Every algorithm's own statistics are gauges `volley_<algorithm>_<stat>`,
// named and described by the training loop from the algorithm's list
// (`Algorithm::stats_help`), and the same values are UPDATE_STAT{algorithm, stat}, so
// one dashboard panel shows them for any algorithm; `lr` also sets LEARNING_RATE and
// `q_mean` Q_MEAN.
pub const UPDATE_STAT: &str = "volley_update_stat";
pub const POLICY_LAG: &str = "volley_policy_lag";
pub const UPDATES: &str = "volley_updates_total";
pub const UPDATE_DURATION: &str = "volley_update_duration_seconds";
pub const LEARNING_RATE: &str = "volley_learning_rate";
pub const WEIGHTS_VERSION: &str = "volley_weights_version";
// Replay learning.
pub const REPLAY_SIZE: &str = "volley_replay_size";
pub const REPLAY_RATIO: &str = "volley_replay_ratio";
pub const REPLAY_RATIO_TARGET: &str = "volley_replay_ratio_target";
pub const UPDATES_PER_SEC: &str = "volley_updates_per_second";
// Imitation.
pub const IMITATION_DATASET_SIZE: &str = "volley_imitation_dataset_size";
pub const IMITATION_LABELS: &str = "volley_imitation_expert_labels";
pub const EXPERT_RETURN: &str = "volley_imitation_expert_return";
pub const IMITATION_BETA: &str = "volley_imitation_beta";
pub const EVAL_RETURN: &str = "volley_eval_return";
pub const EVAL_LENGTH: &str = "volley_eval_length";
/// The last evaluation's mean gradient feature importance, per named feature
/// (label `feature`), for vector observations.
pub const FEATURE_IMPORTANCE: &str = "volley_feature_importance";
pub const Q_MEAN: &str = "volley_q_mean";
// Exploration (actors).
pub const EXPLORE_EPSILON: &str = "volley_explore_epsilon";
// Every process: which run it belongs to (labels run, algorithm, env; value 1).
pub const RUN_INFO: &str = "volley_run_info";
// Learner process.
pub const LEARNER_MEMORY: &str = "volley_learner_memory_bytes";
// Actor inference.
pub const INFERENCE_LATENCY: &str = "volley_inference_latency_seconds";
// Learner: the live mirror of the run to an MLflow tracking server.
pub const MLFLOW_SENT: &str = "volley_mlflow_sent_total";
pub const MLFLOW_ERRORS: &str = "volley_mlflow_errors_total";
pub const MLFLOW_DROPPED: &str = "volley_mlflow_dropped_total";
pub const MLFLOW_PENDING: &str = "volley_mlflow_pending";

/// Registers the description and unit of every metric, so `/metrics` explains itself.
pub fn describe_all() {
    describe_counter!(
        ENV_STEPS,
        Unit::Count,
        "env steps taken (actors) or trained on (learner)"
    );
    describe_gauge!(
        ENV_STEPS_PER_SEC,
        "env steps per second over the last status interval"
    );
    describe_histogram!(
        EPISODE_RETURN,
        "undiscounted return of finished episodes, by env"
    );
    describe_histogram!(
        EPISODE_LENGTH,
        Unit::Count,
        "length in steps of finished episodes, by env"
    );
    describe_counter!(
        CHUNKS_ACCEPTED,
        Unit::Count,
        "trajectory chunks that passed validation"
    );
    describe_counter!(
        CHUNKS_REJECTED,
        Unit::Count,
        "trajectory chunks rejected, by reason"
    );
    describe_counter!(
        CHUNKS_DROPPED,
        Unit::Count,
        "valid chunks not trained on, by reason (policy_lag)"
    );
    describe_counter!(
        CHUNKS_SENT,
        Unit::Count,
        "trajectory chunks an actor sent and had acknowledged"
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "chunks waiting in the learner's training queue"
    );
    describe_counter!(BYTES_IN, Unit::Bytes, "payload bytes received");
    describe_counter!(BYTES_OUT, Unit::Bytes, "payload bytes sent");
    describe_gauge!(
        CONNECTED_ACTORS,
        Unit::Count,
        "actors subscribed to the weight stream"
    );
    describe_counter!(
        RECONNECTS,
        Unit::Count,
        "times an actor reconnected to the learner"
    );
    describe_histogram!(
        POLICY_LAG,
        Unit::Count,
        "weights versions between acting and training, per chunk"
    );
    describe_counter!(UPDATES, Unit::Count, "learner updates done");
    describe_gauge!(
        UPDATE_STAT,
        "a statistic of the last update, by algorithm and statistic (losses, entropy, Q means, ...)"
    );
    describe_histogram!(
        UPDATE_DURATION,
        Unit::Seconds,
        "wall time of one learner update"
    );
    describe_gauge!(LEARNING_RATE, "current learning rate");
    describe_gauge!(
        WEIGHTS_VERSION,
        Unit::Count,
        "newest weights version (learner: published; actor: in use)"
    );
    describe_histogram!(
        INFERENCE_LATENCY,
        Unit::Seconds,
        "actor policy forward pass per batch"
    );
    describe_gauge!(REPLAY_SIZE, Unit::Count, "transitions in the replay buffer");
    describe_gauge!(
        IMITATION_DATASET_SIZE,
        Unit::Count,
        "demonstrations the imitation learner trains on"
    );
    describe_gauge!(
        IMITATION_LABELS,
        Unit::Count,
        "expert labels used so far (demonstrations ever added)"
    );
    describe_gauge!(
        IMITATION_BETA,
        "DAgger: probability of the expert's action in the mixture the actors roll out now"
    );
    describe_gauge!(
        EXPERT_RETURN,
        "mean evaluation return of the run's expert, measured at the start"
    );
    describe_gauge!(
        REPLAY_RATIO,
        "gradient updates per env step stored since learning started"
    );
    describe_gauge!(
        REPLAY_RATIO_TARGET,
        "configured gradient updates per env step"
    );
    describe_gauge!(UPDATES_PER_SEC, "gradient updates per second");
    describe_gauge!(EVAL_RETURN, "mean return of the last greedy evaluation");
    describe_gauge!(
        FEATURE_IMPORTANCE,
        "mean gradient feature importance of each observation feature over the last evaluation's decisions (shares summing to 1)"
    );
    describe_gauge!(
        EVAL_LENGTH,
        Unit::Count,
        "mean episode length of the last greedy evaluation"
    );
    describe_gauge!(Q_MEAN, "mean Q value of the last update's batch");
    describe_gauge!(
        EXPLORE_EPSILON,
        "probability of a uniform random action or choice (epsilon-greedy actors)"
    );
    describe_gauge!(
        RUN_INFO,
        "1, labelled with the run id, algorithm and env id of this process's run"
    );
    describe_gauge!(
        LEARNER_MEMORY,
        Unit::Bytes,
        "learner memory by kind: rss (process), gpu_used and gpu_total (its CUDA device)"
    );
    describe_counter!(
        MLFLOW_SENT,
        Unit::Count,
        "metric values sent to the MLflow tracking server"
    );
    describe_counter!(
        MLFLOW_ERRORS,
        Unit::Count,
        "failed requests to the MLflow tracking server (each retried)"
    );
    describe_counter!(
        MLFLOW_DROPPED,
        Unit::Count,
        "metric values never sent to MLflow because the mirror fell too far behind"
    );
    describe_gauge!(
        MLFLOW_PENDING,
        "metric values waiting to be sent to the MLflow tracking server"
    );
}

/// Sets `volley_run_info{run, algorithm, env}` to 1.
pub fn set_run_info(run: &str, algorithm: &str, env: &str) {
    metrics::gauge!(
        RUN_INFO,
        "run" => run.to_string(),
        "algorithm" => algorithm.to_string(),
        "env" => env.to_string()
    )
    .set(1.0);
}

/// Starts the Prometheus exporter: `GET http://addr/metrics` serves the text format.
/// Returns an error naming the address if it cannot listen (port in use).
pub fn install_exporter(addr: SocketAddr) -> Result<(), String> {
    let returns = [
        -1000.0, -100.0, -10.0, -1.0, 0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0,
        500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    ];
    let lengths = [1.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];
    let seconds = [
        1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
    ];
    let lag = [0.0, 1.0, 2.0, 3.0, 4.0, 8.0, 16.0];
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(EPISODE_RETURN.into()), &returns)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(EPISODE_LENGTH.into()), &lengths))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(POLICY_LAG.into()), &lag))
        .map_err(|e| format!("bad histogram buckets: {e}"))?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    describe_all();
    Ok(())
}
