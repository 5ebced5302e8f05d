//! Chunk validation: every chunk is checked against its actor's registration before
//! anything of it is used (docs/runtime.md, "Validation and rejection").
//!
//! [`check_structure`] runs the cheap checks (protocol version, presence, dtype, shape,
//! byte length, episode statistics) and moves the tensors' `Bytes` into a
//! [`ValidChunk`] without copying; [`check_contents`] then scans the data (finite
//! floats, bools that are 0 or 1, discrete actions in range). The server runs the scan
//! on a blocking thread when there is much to scan.

use std::time::Instant;

use bytes::Bytes;
use volley_common::agent::ChunkFields;
use volley_proto::status::{Reason, Rejection};
use volley_proto::tensor::{first_non_bool, first_non_finite_f32, le_to_vec};
use volley_proto::{check_tensor_bytes, Chunk, DType, Tensor, PROTOCOL_VERSION};

/// How an actor's actions look on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionSpec {
    /// One `i64` in `[0, n)` per env step: `actions` is I64 `[T, N]`.
    Discrete { n: u32 },
    /// `dim` floats per env step: `actions` is F32 `[T, N, dim]`.
    Continuous { dim: u32 },
    /// A choice in `[0, choices)` plus the `params` parameters of every choice, in
    /// `[-1, 1]` units: `actions` is I64 `[T, N]`, `action_params` F32 `[T, N, params]`.
    Parameterised { choices: u32, params: u32 },
}

impl ActionSpec {
    /// Floats per transition in the replay buffer's action row: the action index
    /// (discrete), the action (continuous), or the choice followed by the parameters
    /// (parameterised).
    pub fn replay_width(&self) -> usize {
        match *self {
            ActionSpec::Discrete { .. } => 1,
            ActionSpec::Continuous { dim } => dim as usize,
            ActionSpec::Parameterised { params, .. } => 1 + params as usize,
        }
    }
}

/// What a registered actor's chunks must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorSpec {
    /// N: envs per actor.
    pub num_envs: usize,
    /// T: steps per chunk.
    pub chunk_steps: usize,
    /// Shape of one observation.
    pub obs_shape: Vec<usize>,
    /// U8 (pixels) or F32 (vectors).
    pub obs_dtype: DType,
    pub action: ActionSpec,
    /// The optional tensors the algorithm trains on: required, and the others may be
    /// left out.
    pub fields: ChunkFields,
}

impl ActorSpec {
    /// The shape of the `actions` tensor.
    fn action_shape(&self) -> (DType, Vec<usize>) {
        let (t, n) = (self.chunk_steps, self.num_envs);
        match self.action {
            ActionSpec::Discrete { .. } | ActionSpec::Parameterised { .. } => {
                (DType::I64, vec![t, n])
            }
            ActionSpec::Continuous { dim } => (DType::F32, vec![t, n, dim as usize]),
        }
    }
}

/// A chunk that passed validation: the wire bytes of each tensor (views of the
/// receive buffer, not copies) with the shapes of the actor's registration.
///
/// Per-step tensors are time-major `[T, N]` (`obs`: `[T, N, *obs_shape]`, continuous
/// `actions`: `[T, N, A]`), `bootstrap_values` is `[N]`; all little-endian.
#[derive(Debug, Clone)]
pub struct ValidChunk {
    pub actor_id: String,
    /// Weights version that acted.
    pub policy_version: u64,
    /// The actor's sequence number, for logs.
    pub seq: u64,
    /// T.
    pub steps: usize,
    /// N.
    pub num_envs: usize,
    pub obs_shape: Vec<usize>,
    pub obs_dtype: DType,
    pub action: ActionSpec,
    pub obs: Bytes,
    pub actions: Bytes,
    pub logprobs: Bytes,
    pub values: Bytes,
    pub rewards: Bytes,
    pub terminated: Bytes,
    pub truncated: Bytes,
    pub truncation_values: Bytes,
    pub bootstrap_values: Bytes,
    /// Off-policy runs: the observation after each step; empty otherwise.
    pub next_obs: Bytes,
    /// Parameterised actions: F32 `[T, N, P]`; empty otherwise.
    pub action_params: Bytes,
    pub episode_returns: Vec<f32>,
    pub episode_lengths: Vec<u32>,
    /// Tensor payload bytes, for throughput accounting.
    pub payload_bytes: usize,
    /// When the learner finished receiving it, for queueing latency.
    pub received_at: Instant,
}

impl ValidChunk {
    /// `T * N`, the rows this chunk adds to a batch.
    pub fn rows(&self) -> usize {
        self.steps * self.num_envs
    }

    pub fn logprobs_f32(&self) -> Vec<f32> {
        le_to_vec(&self.logprobs)
    }

    pub fn values_f32(&self) -> Vec<f32> {
        le_to_vec(&self.values)
    }

    pub fn rewards_f32(&self) -> Vec<f32> {
        le_to_vec(&self.rewards)
    }

    pub fn truncation_values_f32(&self) -> Vec<f32> {
        le_to_vec(&self.truncation_values)
    }

    pub fn bootstrap_values_f32(&self) -> Vec<f32> {
        le_to_vec(&self.bootstrap_values)
    }

    pub fn terminated_bools(&self) -> Vec<bool> {
        le_to_vec(&self.terminated)
    }

    pub fn truncated_bools(&self) -> Vec<bool> {
        le_to_vec(&self.truncated)
    }

    /// Discrete actions (parameterised: the choices), `T * N` of them; `None` for
    /// continuous actions.
    pub fn actions_i64(&self) -> Option<Vec<i64>> {
        (!matches!(self.action, ActionSpec::Continuous { .. })).then(|| le_to_vec(&self.actions))
    }

    /// Continuous actions, `T * N * A` of them; `None` for discrete actions.
    pub fn actions_f32(&self) -> Option<Vec<f32>> {
        matches!(self.action, ActionSpec::Continuous { .. }).then(|| le_to_vec(&self.actions))
    }

    /// Observations as a CPU tensor of shape `[T * N, *obs_shape]` (Uint8 or Float),
    /// copied once out of the wire bytes.
    pub fn obs_tensor(&self) -> tch::Tensor {
        self.obs_like_tensor(&self.obs)
    }

    /// Off-policy runs: the observation after each step, `[T * N, *obs_shape]`.
    pub fn next_obs_tensor(&self) -> tch::Tensor {
        self.obs_like_tensor(&self.next_obs)
    }

    fn obs_like_tensor(&self, bytes: &Bytes) -> tch::Tensor {
        let mut size = vec![self.rows() as i64];
        size.extend(self.obs_shape.iter().map(|&d| d as i64));
        let kind = match self.obs_dtype {
            DType::U8 | DType::Bool => tch::Kind::Uint8,
            DType::I32 => tch::Kind::Int,
            DType::I64 => tch::Kind::Int64,
            DType::F32 => tch::Kind::Float,
        };
        tch::Tensor::from_data_size(bytes, &size, kind)
    }

    /// Actions as a CPU tensor: Int64 `[T * N]` (discrete; parameterised: the
    /// choices) or Float `[T * N, A]`.
    pub fn actions_tensor(&self) -> tch::Tensor {
        let rows = self.rows() as i64;
        match self.action {
            ActionSpec::Discrete { .. } | ActionSpec::Parameterised { .. } => {
                tch::Tensor::from_data_size(&self.actions, &[rows], tch::Kind::Int64)
            }
            ActionSpec::Continuous { dim } => tch::Tensor::from_data_size(
                &self.actions,
                &[rows, i64::from(dim)],
                tch::Kind::Float,
            ),
        }
    }

    /// Actions as the replay buffer stores them, Float `[T * N, W]` with `W` =
    /// [`ActionSpec::replay_width`]: a discrete action as its index (an exact small
    /// integer in f32); continuous actions as they are; parameterised ones as the
    /// choice followed by the parameters.
    pub fn replay_actions_tensor(&self) -> tch::Tensor {
        match self.action {
            ActionSpec::Parameterised { params, .. } => {
                let rows = self.rows() as i64;
                let choice = self
                    .actions_tensor()
                    .to_kind(tch::Kind::Float)
                    .view([rows, 1]);
                let params = tch::Tensor::from_data_size(
                    &self.action_params,
                    &[rows, i64::from(params)],
                    tch::Kind::Float,
                );
                tch::Tensor::cat(&[choice, params], 1)
            }
            ActionSpec::Discrete { .. } => self
                .actions_tensor()
                .to_kind(tch::Kind::Float)
                .view([self.rows() as i64, 1]),
            ActionSpec::Continuous { .. } => self.actions_tensor().to_kind(tch::Kind::Float),
        }
    }

    /// Bytes the content scan of [`check_contents`] reads: decides whether it is worth
    /// a blocking thread.
    pub fn scan_bytes(&self) -> usize {
        let floats = self.logprobs.len()
            + self.action_params.len()
            + self.values.len()
            + self.rewards.len()
            + self.truncation_values.len()
            + self.bootstrap_values.len();
        let obs = if self.obs_dtype.is_float() {
            self.obs.len() + self.next_obs.len()
        } else {
            0
        };
        floats + obs + self.actions.len() + self.terminated.len() + self.truncated.len()
    }
}

fn shape_str(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Checks one tensor's presence, dtype, shape and byte length, and takes its bytes.
fn take_tensor(
    name: &str,
    tensor: Option<Tensor>,
    dtype: DType,
    shape: &[usize],
) -> Result<Bytes, Rejection> {
    let Some(tensor) = tensor else {
        return Err(Rejection::new(
            Reason::MissingTensor,
            format!("{name}: tensor is missing"),
        ));
    };
    let got = tensor
        .elem_type()
        .map_err(|err| Rejection::tensor(name, &err))?;
    if got != dtype {
        return Err(Rejection::new(
            Reason::DType,
            format!("{name}: dtype is {got}, expected {dtype}"),
        ));
    }
    let expected: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    if tensor.shape != expected {
        return Err(Rejection::new(
            Reason::Shape,
            format!(
                "{name}: shape is {}, expected {}",
                shape_str(&tensor.shape),
                shape_str(&expected)
            ),
        ));
    }
    check_tensor_bytes(dtype, &tensor.shape, tensor.data.len())
        .map_err(|err| Rejection::tensor(name, &err))?;
    Ok(tensor.data)
}

/// The checks that do not read tensor data: protocol version, presence, dtype, shape
/// and byte length of every tensor, episode statistics. Moves the tensors' bytes into
/// the returned chunk (no copy). The caller has looked the actor up and passes its
/// registration; the chunk's `actor_id` is taken as is.
pub fn check_structure(chunk: Chunk, spec: &ActorSpec) -> Result<ValidChunk, Rejection> {
    check_protocol(chunk.protocol_version)?;
    let (t, n) = (spec.chunk_steps, spec.num_envs);
    let per_step = [t, n];
    let mut obs_shape = vec![t, n];
    obs_shape.extend_from_slice(&spec.obs_shape);
    let (action_dtype, action_shape) = spec.action_shape();

    let obs = take_tensor("obs", chunk.obs, spec.obs_dtype, &obs_shape)?;
    let actions = take_tensor("actions", chunk.actions, action_dtype, &action_shape)?;
    // Optional tensors: required when the algorithm trains on them; otherwise
    // ignored (an actor of an older build may still send them).
    let optional = |on: bool, name: &str, tensor: Option<Tensor>, dtype: DType, shape: &[usize]| {
        if on {
            take_tensor(name, tensor, dtype, shape)
        } else {
            Ok(Bytes::new())
        }
    };
    let f = spec.fields;
    let logprobs = optional(
        f.logprobs,
        "logprobs",
        chunk.logprobs,
        DType::F32,
        &per_step,
    )?;
    let values = optional(f.values, "values", chunk.values, DType::F32, &per_step)?;
    let rewards = take_tensor("rewards", chunk.rewards, DType::F32, &per_step)?;
    let terminated = take_tensor("terminated", chunk.terminated, DType::Bool, &per_step)?;
    let truncated = take_tensor("truncated", chunk.truncated, DType::Bool, &per_step)?;
    let truncation_values = optional(
        f.values,
        "truncation_values",
        chunk.truncation_values,
        DType::F32,
        &per_step,
    )?;
    let bootstrap_values = optional(
        f.values,
        "bootstrap_values",
        chunk.bootstrap_values,
        DType::F32,
        &[n],
    )?;
    let next_obs = optional(
        f.next_obs,
        "next_obs",
        chunk.next_obs,
        spec.obs_dtype,
        &obs_shape,
    )?;
    let action_params = match spec.action {
        ActionSpec::Parameterised { params, .. } => take_tensor(
            "action_params",
            chunk.action_params,
            DType::F32,
            &[t, n, params as usize],
        )?,
        _ => Bytes::new(),
    };

    if chunk.episode_returns.len() != chunk.episode_lengths.len() {
        return Err(Rejection::new(
            Reason::EpisodeStats,
            format!(
                "{} episode returns but {} episode lengths",
                chunk.episode_returns.len(),
                chunk.episode_lengths.len()
            ),
        ));
    }
    if let Some(i) = chunk.episode_returns.iter().position(|r| !r.is_finite()) {
        return Err(Rejection::new(
            Reason::EpisodeStats,
            format!("episode return {i} is not finite"),
        ));
    }

    let payload_bytes = [
        &obs,
        &actions,
        &logprobs,
        &values,
        &rewards,
        &terminated,
        &truncated,
        &truncation_values,
        &bootstrap_values,
        &next_obs,
        &action_params,
    ]
    .iter()
    .map(|b| b.len())
    .sum();
    Ok(ValidChunk {
        actor_id: chunk.actor_id,
        policy_version: chunk.policy_version,
        seq: chunk.seq,
        steps: t,
        num_envs: n,
        obs_shape: spec.obs_shape.clone(),
        obs_dtype: spec.obs_dtype,
        action: spec.action,
        obs,
        actions,
        logprobs,
        values,
        rewards,
        terminated,
        truncated,
        truncation_values,
        bootstrap_values,
        next_obs,
        action_params,
        episode_returns: chunk.episode_returns,
        episode_lengths: chunk.episode_lengths,
        payload_bytes,
        received_at: Instant::now(),
    })
}

/// The protocol version check, shared by every request.
pub fn check_protocol(version: u32) -> Result<(), Rejection> {
    if version == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(Rejection::new(
        Reason::ProtocolVersion,
        format!(
            "protocol version {version} is not supported, the learner speaks {PROTOCOL_VERSION}"
        ),
    ))
}

fn finite(name: &str, bytes: &[u8]) -> Result<(), Rejection> {
    match first_non_finite_f32(bytes) {
        None => Ok(()),
        Some(i) => Err(Rejection::new(
            Reason::NonFinite,
            format!("{name}: element {i} is not finite"),
        )),
    }
}

fn bools(name: &str, bytes: &[u8]) -> Result<(), Rejection> {
    match first_non_bool(bytes) {
        None => Ok(()),
        Some(i) => Err(Rejection::new(
            Reason::DType,
            format!("{name}: bool element {i} is neither 0 nor 1"),
        )),
    }
}

/// The checks that read tensor data: bools are 0 or 1, floats are finite, discrete
/// actions lie in `[0, n)`. CPU work proportional to the chunk's float and action
/// bytes (see [`ValidChunk::scan_bytes`]).
pub fn check_contents(chunk: &ValidChunk) -> Result<(), Rejection> {
    bools("terminated", &chunk.terminated)?;
    bools("truncated", &chunk.truncated)?;
    match chunk.action {
        ActionSpec::Discrete { n } | ActionSpec::Parameterised { choices: n, .. } => {
            let bad = chunk
                .actions
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .enumerate()
                .find(|&(_, a)| a < 0 || a >= i64::from(n));
            if let Some((i, a)) = bad {
                return Err(Rejection::new(
                    Reason::ActionRange,
                    format!("actions: element {i} is {a}, outside [0, {n})"),
                ));
            }
        }
        ActionSpec::Continuous { .. } => finite("actions", &chunk.actions)?,
    }
    finite("action_params", &chunk.action_params)?;
    finite("logprobs", &chunk.logprobs)?;
    finite("values", &chunk.values)?;
    finite("rewards", &chunk.rewards)?;
    finite("truncation_values", &chunk.truncation_values)?;
    finite("bootstrap_values", &chunk.bootstrap_values)?;
    if chunk.obs_dtype.is_float() {
        finite("obs", &chunk.obs)?;
        finite("next_obs", &chunk.next_obs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_proto::tensor::{from_slice, from_vec};

    fn spec() -> ActorSpec {
        ActorSpec {
            num_envs: 2,
            chunk_steps: 3,
            obs_shape: vec![4],
            obs_dtype: DType::F32,
            action: ActionSpec::Discrete { n: 5 },
            fields: ChunkFields {
                logprobs: true,
                values: true,
                next_obs: false,
            },
        }
    }

    fn good() -> Chunk {
        let (t, n) = (3, 2);
        let f = |shape: &[usize]| {
            let len = shape.iter().product();
            from_vec(shape, vec![0.5f32; len]).expect("shape")
        };
        Chunk {
            protocol_version: PROTOCOL_VERSION,
            actor_id: "a".into(),
            policy_version: 7,
            seq: 1,
            obs: Some(f(&[t, n, 4])),
            actions: Some(from_vec(&[t, n], vec![0i64, 1, 2, 3, 4, 0]).expect("shape")),
            logprobs: Some(f(&[t, n])),
            values: Some(f(&[t, n])),
            rewards: Some(f(&[t, n])),
            terminated: Some(from_vec(&[t, n], vec![false; 6]).expect("shape")),
            truncated: Some(from_vec(&[t, n], vec![false; 6]).expect("shape")),
            truncation_values: Some(f(&[t, n])),
            bootstrap_values: Some(f(&[n])),
            episode_returns: vec![1.0],
            episode_lengths: vec![10],
            next_obs: None,
            action_params: None,
        }
    }

    fn reject(chunk: Chunk) -> Rejection {
        match check_structure(chunk, &spec()) {
            Err(r) => r,
            Ok(valid) => match check_contents(&valid) {
                Err(r) => r,
                Ok(()) => panic!("chunk was accepted"),
            },
        }
    }

    #[test]
    fn a_good_chunk_passes_without_copies() {
        let chunk = good();
        let obs_ptr = chunk.obs.as_ref().map(|t| t.data.as_ptr());
        let valid = check_structure(chunk, &spec()).expect("valid");
        check_contents(&valid).expect("valid contents");
        assert_eq!(Some(valid.obs.as_ptr()), obs_ptr);
        assert_eq!(valid.rows(), 6);
        assert_eq!(valid.actions_i64(), Some(vec![0, 1, 2, 3, 4, 0]));
        assert_eq!(valid.rewards_f32(), vec![0.5; 6]);
        assert_eq!(valid.bootstrap_values_f32().len(), 2);
        assert_eq!(
            valid.payload_bytes,
            24 * 4 + 6 * 8 + 6 * 4 * 4 + 6 * 2 + 2 * 4
        );
    }

    #[test]
    fn off_policy_chunks_need_next_obs_and_may_omit_the_on_policy_tensors() {
        let off = ActorSpec {
            fields: ChunkFields {
                next_obs: true,
                ..ChunkFields::default()
            },
            ..spec()
        };
        let lean = || {
            let mut c = good();
            c.logprobs = None;
            c.values = None;
            c.truncation_values = None;
            c.bootstrap_values = None;
            c
        };
        // Without next_obs: refused as missing.
        let r = check_structure(lean(), &off).expect_err("no next_obs");
        assert_eq!(r.reason, "missing_tensor");
        assert!(r.message.contains("next_obs"), "{}", r.message);
        // With it: accepted, and the tensor is there.
        let mut c = lean();
        c.next_obs = Some(from_vec(&[3, 2, 4], vec![0.25f32; 24]).expect("shape"));
        let valid = check_structure(c, &off).expect("valid");
        check_contents(&valid).expect("valid contents");
        assert_eq!(valid.next_obs_tensor().size(), vec![6, 4]);
        assert!(valid.logprobs.is_empty());
        // A wrong shape or a NaN in next_obs is refused.
        let mut c = lean();
        c.next_obs = Some(from_vec(&[3, 2, 5], vec![0f32; 30]).expect("shape"));
        assert_eq!(check_structure(c, &off).expect_err("shape").reason, "shape");
        let mut c = lean();
        let mut v = vec![0f32; 24];
        v[7] = f32::NAN;
        c.next_obs = Some(from_vec(&[3, 2, 4], v).expect("shape"));
        let valid = check_structure(c, &off).expect("structure");
        assert_eq!(
            check_contents(&valid).expect_err("nan").reason,
            "non_finite"
        );
        // An on-policy run still requires its tensors.
        assert_eq!(reject(lean()).reason, "missing_tensor");
    }

    #[test]
    fn parameterised_chunks_carry_choices_and_parameters() {
        let spec = ActorSpec {
            action: ActionSpec::Parameterised {
                choices: 3,
                params: 2,
            },
            fields: ChunkFields {
                next_obs: true,
                ..ChunkFields::default()
            },
            ..spec()
        };
        let chunk = |choice: Vec<i64>, params: Option<Vec<f32>>| {
            let mut c = good();
            c.logprobs = None;
            c.values = None;
            c.truncation_values = None;
            c.bootstrap_values = None;
            c.next_obs = Some(from_vec(&[3, 2, 4], vec![0.25f32; 24]).expect("shape"));
            c.actions = Some(from_vec(&[3, 2], choice).expect("shape"));
            c.action_params = params.map(|p| from_vec(&[3, 2, 2], p).expect("shape"));
            c
        };
        let params: Vec<f32> = (0..12).map(|i| i as f32 / 12.0 - 0.5).collect();
        let valid = check_structure(chunk(vec![0, 1, 2, 0, 1, 2], Some(params.clone())), &spec)
            .expect("valid");
        check_contents(&valid).expect("valid contents");
        // The replay row: the choice, then the parameters.
        let rows = valid.replay_actions_tensor();
        assert_eq!(rows.size(), vec![6, 3]);
        let flat = Vec::<f32>::try_from(rows.flatten(0, -1)).expect("f32");
        assert_eq!(&flat[..3], &[0.0, params[0], params[1]]);
        assert_eq!(&flat[15..], &[2.0, params[10], params[11]]);

        let refuse = |c: Chunk| match check_structure(c, &spec) {
            Err(r) => r,
            Ok(v) => check_contents(&v).expect_err("accepted"),
        };
        let r = refuse(chunk(vec![0, 1, 3, 0, 1, 2], Some(params.clone())));
        assert_eq!(r.reason, "action_range");
        let r = refuse(chunk(vec![0; 6], None));
        assert_eq!(r.reason, "missing_tensor");
        assert!(r.message.contains("action_params"), "{}", r.message);
        let mut bad = params;
        bad[5] = f32::INFINITY;
        assert_eq!(refuse(chunk(vec![0; 6], Some(bad))).reason, "non_finite");
    }

    #[test]
    fn each_defect_gets_its_reason() {
        let mut c = good();
        c.protocol_version = 0;
        assert_eq!(reject(c).reason, "protocol_version");

        let mut c = good();
        c.rewards = None;
        assert_eq!(reject(c).reason, "missing_tensor");

        let mut c = good();
        c.obs = Some(from_vec(&[3, 2, 4], vec![0u8; 24]).expect("shape"));
        let r = reject(c);
        assert_eq!(
            (r.reason, r.message.as_str()),
            ("dtype", "obs: dtype is u8, expected f32")
        );

        let mut c = good();
        c.values = Some(from_vec(&[2, 3], vec![0f32; 6]).expect("shape"));
        let r = reject(c);
        assert_eq!(r.reason, "shape");
        assert!(
            r.message
                .contains("values: shape is [2, 3], expected [3, 2]"),
            "{}",
            r.message
        );

        let mut c = good();
        if let Some(t) = c.rewards.as_mut() {
            t.data = t.data.slice(..t.data.len() - 1);
        }
        assert_eq!(reject(c).reason, "byte_length");

        let mut c = good();
        c.rewards = Some(from_slice(&[3, 2], &[0.0, 1.0, f32::NAN, 0.0, 0.0, 0.0]).expect("shape"));
        let r = reject(c);
        assert_eq!(
            (r.reason, r.message.as_str()),
            ("non_finite", "rewards: element 2 is not finite")
        );

        let mut c = good();
        c.actions = Some(from_vec(&[3, 2], vec![0i64, 1, 5, 0, 0, 0]).expect("shape"));
        let r = reject(c);
        assert_eq!(r.reason, "action_range");
        assert!(r.message.contains("element 2 is 5"), "{}", r.message);

        let mut c = good();
        c.actions = Some(from_vec(&[3, 2], vec![0i64, -1, 0, 0, 0, 0]).expect("shape"));
        assert_eq!(reject(c).reason, "action_range");

        let mut c = good();
        c.terminated = Some(
            volley_proto::tensor::from_bytes(
                DType::Bool,
                &[3, 2],
                Bytes::from_static(&[0, 0, 0, 2, 0, 0]),
            )
            .expect("shape"),
        );
        assert_eq!(reject(c).reason, "dtype");

        let mut c = good();
        c.episode_lengths.clear();
        assert_eq!(reject(c).reason, "episode_stats");
    }
}
