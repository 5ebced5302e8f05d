//! Env-stepping throughput: steps/s per env family and thread count, under random
//! actions, with the MuJoCo tasks next to their bare `mj_step` ceiling measured in the
//! same run on the same machine.
//!
//! `cargo bench -p volley-benches --bench envs [-- --seconds S] [--only SUBSTRING]`
//!
//! The EnvPool comparison lives in `benches/envpool_compare.py` (it needs Python and
//! EnvPool 1.2.5).

use anyhow::Result;
use volley_actor::tools;
use volley_benches::{mj_step_ceiling, print_table, Row};
use volley_common::env::EnvId;

fn bench(id: &str, envs: usize, threads: usize, seconds: f64) -> Result<Row> {
    let parsed: EnvId = id.parse()?;
    let r = tools::bench(&parsed, envs, threads, seconds)?;
    Ok(Row {
        what: id.to_string(),
        envs,
        threads,
        steps_per_sec: r.steps_per_sec,
        reference: None,
    })
}

fn main() -> Result<()> {
    let a = volley_benches::BenchArgs::parse(3.0, 0);
    let wanted = |id: &str| a.wants(id);
    let s = a.seconds;

    let mut mujoco = Vec::new();
    for (id, xml, skip) in [
        ("Hopper-v5", "hopper.xml", 4),
        ("HalfCheetah-v5", "half_cheetah.xml", 5),
        ("Ant-v5", "ant.xml", 5),
    ] {
        if !wanted(id) {
            continue;
        }
        // The ceiling resets as often as a random-policy episode ends.
        let ep = tools::random_policy(&id.parse()?, 200, 0, 8, 2)?
            .length_mean
            .round() as usize;
        for (envs, threads) in [(1, 1), (8, 2)] {
            let mut row = bench(id, envs, threads, s)?;
            let ceiling = mj_step_ceiling(xml, skip, ep, threads, s)?;
            row.reference = Some((format!("bare mj_step x{skip}, {threads} thr"), ceiling));
            mujoco.push(row);
        }
    }
    if !mujoco.is_empty() {
        print_table(
            "MuJoCo (Gymnasium v5 tasks) vs the bare mj_step ceiling",
            &mujoco,
        );
    }

    let mut procgen = Vec::new();
    for game in ["starpilot", "bigfish", "coinrun"] {
        let id = format!("procgen:{game}?distribution_mode=easy");
        if !wanted(&id) {
            continue;
        }
        for threads in [1, 2] {
            procgen.push(bench(&id, 64, threads, s)?);
        }
    }
    if !procgen.is_empty() {
        print_table("Procgen (easy), 64 envs", &procgen);
    }

    let mut other = Vec::new();
    for id in ["platform", "CartPole-v1"] {
        if !wanted(id) {
            continue;
        }
        for threads in [1, 2] {
            other.push(bench(id, 8, threads, s)?);
        }
    }
    if !other.is_empty() {
        print_table("Platform and CartPole, 8 envs", &other);
    }
    Ok(())
}
