//! The one list of the algorithms volley trains.
//!
//! Each entry is an algorithm's config name (`algorithm = "sac"`) and the name of its
//! two modules:
//!
//! - `volley_common::nn::<name>`: its networks, and how an actor (or the learner's
//!   evaluation, or `play`) acts with them: a `agent(&AgentContext)` constructor
//!   returning a [`crate::agent::Agent`];
//! - `volley_learner::algo::<name>`: its hyperparameters and update: a
//!   `build(BuildContext)` constructor returning the learner's `Algorithm`.
//!
//! Both crates build their tables from this list (the modules are declared by it too),
//! so adding an algorithm is those two files plus one line here; the compiler refuses
//! a name whose modules are missing. `docs/adding-an-algorithm.md` walks through it.

/// Calls the macro `$m` with every algorithm's name, in the order listed:
/// `$m! { ppo, sac, ... }`.
#[macro_export]
macro_rules! for_each_algorithm {
    ($m:ident) => {
        $m! {
            ppo,
            a2c,
            sac,
            mpdqn,
            ddqn,
            splitq,
            bc,
            dagger,
        }
    };
}

macro_rules! name_list {
    ($($name:ident),* $(,)?) => {
        /// Every algorithm's config name, in the order of the list.
        pub const ALGORITHMS: &[&str] = &[$(stringify!($name)),*];
    };
}
for_each_algorithm!(name_list);

/// Whether `name` is one of [`ALGORITHMS`].
pub fn is_algorithm(name: &str) -> bool {
    ALGORITHMS.contains(&name)
}

/// The error message for an algorithm name that is not in the list.
pub fn unknown(name: &str) -> String {
    format!(
        "unknown algorithm '{name}': expected one of {}",
        ALGORITHMS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_each_algorithm_once() {
        let mut seen = std::collections::HashSet::new();
        for a in ALGORITHMS {
            assert!(seen.insert(*a), "{a} listed twice");
        }
        assert!(is_algorithm("ppo") && !is_algorithm("dqn2"));
        assert!(unknown("x").contains("ppo, "));
    }
}
