//! Learning smoke test: PPO (`Ppo::update`) on CartPole-v1 rollouts collected in
//! process from the vector env (no gRPC), with CleanRL `ppo.py` settings: 4 envs x 128
//! steps, 4 minibatches, 4 epochs, lr 2.5e-4 annealed, gamma 0.99, lambda 0.95, clip
//! 0.2, entropy 0.01, value 0.5, MLP 64-64 tanh. It must reach a mean return of 475
//! over the last 20 episodes within the step budget.

use std::collections::VecDeque;
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use volley_common::env::{make_vec_env, Actions, EnvId, VecEnvOptions};
use volley_common::nn::{ModelKind, ModelSpec};
use volley_learner::ppo::{gae, Batch, Ppo, PpoConfig};

const SEED: u64 = 1;
const ENVS: usize = 4;
const STEPS: usize = 128;
/// CleanRL's total for CartPole; the learning rate anneals over it.
const TOTAL_STEPS: usize = 500_000;
/// The test fails if the target is not reached within this many env steps.
const BUDGET: usize = 300_000;
const TARGET: f32 = 475.0;

#[test]
fn ppo_solves_cartpole() -> Result<(), Box<dyn std::error::Error>> {
    tch::set_num_threads(1);
    tch::manual_seed(SEED as i64);
    let started = Instant::now();
    let id: EnvId = "CartPole-v1".parse()?;
    let mut env = make_vec_env(
        &id,
        VecEnvOptions {
            num_envs: ENVS,
            threads: 1,
        },
    )?;
    let spec = ModelSpec::for_spaces(
        ModelKind::mlp64(),
        env.observation_space(),
        env.action_space(),
    )?;
    let obs_len = spec.obs_len();
    let cfg = PpoConfig {
        lr: 2.5e-4,
        anneal_lr: true,
        gamma: 0.99,
        gae_lambda: 0.95,
        batch_steps: ENVS * STEPS,
        minibatches: 4,
        epochs: 4,
        norm_reward: false,
        ..PpoConfig::default()
    };
    let mut ppo = Ppo::new(spec, cfg.clone(), Device::Cpu)?;

    let mut obs: Vec<f32> = env
        .reset(SEED)?
        .obs
        .as_f32()
        .ok_or("cartpole observations are f32")?
        .to_vec();
    let n = ENVS * STEPS;
    let mut b_obs = Vec::with_capacity(n * obs_len);
    let (mut b_act, mut b_logp, mut b_val) = (Vec::new(), Vec::new(), Vec::new());
    let (mut b_rew, mut b_term, mut b_trunc, mut b_tval) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut recent: VecDeque<f32> = VecDeque::new();
    let mut episodes = 0usize;
    let mut steps = 0usize;
    let num_updates = TOTAL_STEPS / n;
    for update in 0..num_updates {
        for v in [&mut b_obs, &mut b_logp, &mut b_val, &mut b_rew, &mut b_tval] {
            v.clear();
        }
        b_act.clear();
        b_term.clear();
        b_trunc.clear();
        for _ in 0..STEPS {
            let o = Tensor::from_slice(&obs).view([ENVS as i64, obs_len as i64]);
            let act = ppo.policy.act(&o)?;
            let a = Vec::<i64>::try_from(&act.action)?;
            b_obs.extend_from_slice(&obs);
            b_act.extend_from_slice(&a);
            b_logp.extend(Vec::<f32>::try_from(&act.logprob)?);
            b_val.extend(Vec::<f32>::try_from(&act.value)?);
            let batch = env.step(Actions::Discrete(&a))?;
            b_rew.extend_from_slice(&batch.reward);
            b_term.extend_from_slice(&batch.terminated);
            b_trunc.extend_from_slice(&batch.truncated);
            let mut tval = vec![0f32; ENVS];
            if batch.truncated.iter().any(|&t| t) && batch.has_final_obs {
                let fin = batch.final_obs.as_f32().ok_or("f32 final obs")?;
                let f = Tensor::from_slice(fin).view([ENVS as i64, obs_len as i64]);
                let v = Vec::<f32>::try_from(&ppo.policy.value(&f)?)?;
                for e in 0..ENVS {
                    if batch.truncated[e] {
                        tval[e] = v[e];
                    }
                }
            }
            b_tval.extend(tval);
            for (_, ret, _) in batch.finished_episodes() {
                episodes += 1;
                if recent.len() == 20 {
                    recent.pop_front();
                }
                recent.push_back(ret);
            }
            obs.copy_from_slice(batch.obs.as_f32().ok_or("f32 obs")?);
        }
        steps += n;
        let o = Tensor::from_slice(&obs).view([ENVS as i64, obs_len as i64]);
        let boot = Vec::<f32>::try_from(&ppo.policy.value(&o)?)?;
        let (adv, ret) = gae(
            &b_rew,
            &b_val,
            &b_term,
            &b_trunc,
            &b_tval,
            &boot,
            STEPS,
            ENVS,
            cfg.gamma,
            cfg.gae_lambda,
        )?;
        let batch = Batch {
            obs: Tensor::from_slice(&b_obs).view([n as i64, obs_len as i64]),
            actions: Tensor::from_slice(&b_act),
            logprobs: Tensor::from_slice(&b_logp),
            values: Tensor::from_slice(&b_val),
            advantages: Tensor::from_slice(&adv),
            returns: Tensor::from_slice(&ret),
        };
        let lr = cfg.lr * (1.0 - update as f64 / num_updates as f64);
        let stats = ppo.update(&batch, lr)?;
        assert!(stats.policy_loss.is_finite() && stats.value_loss.is_finite());
        assert_eq!(batch.actions.kind(), Kind::Int64);
        let mean = recent.iter().sum::<f32>() / recent.len().max(1) as f32;
        if update % 20 == 0 {
            eprintln!(
                "steps {steps:>7} episodes {episodes:>5} mean20 {mean:>6.1} kl {:.4} ev {:.3} {:.1}s",
                stats.approx_kl,
                stats.explained_variance,
                started.elapsed().as_secs_f64()
            );
        }
        if recent.len() == 20 && mean >= TARGET {
            eprintln!(
                "solved: mean return {mean:.1} over the last 20 episodes after {steps} steps, {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if steps >= BUDGET {
            break;
        }
    }
    Err(format!(
        "not solved within {BUDGET} steps: last-20 mean {:.1}",
        recent.iter().sum::<f32>() / recent.len().max(1) as f32
    )
    .into())
}
