//! The `volley-actor` commands as a user runs them: JSON output, exit codes and the
//! errors a mistyped id or option gets.

use std::process::Command;

fn actor(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_volley-actor"))
        .args(args)
        .output()
        .expect("run volley-actor");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn envs_lists_every_id_with_its_spaces() {
    let (ok, out, err) = actor(&["envs", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let envs = v["envs"].as_array().expect("envs");
    assert_eq!(
        envs.len(),
        125,
        "16 procgen games + 3 mujoco + platform + cartpole + 104 ALE games"
    );
    let pacman = envs
        .iter()
        .find(|e| e["id"] == "ALE/MsPacman-v5")
        .expect("ALE/MsPacman-v5 listed");
    assert_eq!(pacman["family"], "atari", "{pacman}");
    for e in envs {
        assert!(e.get("error").is_none(), "{e}");
        assert!(!e["observation"].as_str().unwrap_or("").is_empty(), "{e}");
    }
    assert_eq!(v["procgen_games"].as_array().map(Vec::len), Some(16));
}

#[test]
fn random_prints_episode_statistics() {
    let args = [
        "random",
        "--env",
        "CartPole-v1",
        "--episodes",
        "30",
        "--seed",
        "3",
        "--json",
    ];
    let (ok, out, err) = actor(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["episodes"], 30);
    for k in ["return_mean", "return_std", "length_mean", "length_std"] {
        assert!(v[k].as_f64().is_some_and(f64::is_finite), "{k} in {v}");
    }
    // Same seed, same statistics.
    let (_, again, _) = actor(&args);
    assert_eq!(out, again);
}

#[test]
fn bench_reports_steps_per_second() {
    let (ok, out, err) = actor(&[
        "bench",
        "--env",
        "platform",
        "--envs",
        "4",
        "--threads",
        "2",
        "--seconds",
        "0.3",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert!(v["steps_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    assert_eq!(v["envs"], 4);
}

#[test]
fn mistakes_get_errors_that_say_what_to_do() {
    let (ok, _, err) = actor(&["random", "--env", "Hopper-v4", "--episodes", "1"]);
    assert!(!ok);
    assert!(
        err.contains("unknown env id 'Hopper-v4'") && err.contains("Hopper-v5"),
        "{err}"
    );
    let (ok, _, err) = actor(&[
        "random",
        "--env",
        "procgen:starpilot?levels=3",
        "--episodes",
        "1",
    ]);
    assert!(!ok);
    assert!(
        err.contains("unknown option 'levels'") && err.contains("num_levels"),
        "{err}"
    );
    let (ok, _, err) = actor(&["bench", "--env", "platform", "--envs", "0"]);
    assert!(!ok);
    assert!(err.contains("at least 1"), "{err}");
}
