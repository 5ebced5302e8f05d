//! The query strings of env ids (`procgen:starpilot?num_levels=200&...`,
//! `ALE/MsPacman-v5?frameskip=1&...`): their `key=value` pairs and the values they
//! share. Errors are messages; each id's parser wraps them with its id.

/// How a boolean option may be written.
pub(crate) const BOOL_VALUES: &str = "true, false, 1, 0";

/// The `key=value` pairs of `query`, in order: a pair without `=` or a key given
/// twice is an error.
pub(crate) fn pairs(query: Option<&str>) -> Result<Vec<(&str, &str)>, String> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!(
                "option '{pair}' has no value: write {pair}=<value>"
            ));
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("option '{key}' is given twice"));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// A boolean option's value.
pub(crate) fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!(
            "bad value '{value}' for {key}: valid values are {BOOL_VALUES}"
        )),
    }
}

/// An integer option's value in `min..=i32::MAX` (what the native libraries take).
pub(crate) fn int(key: &str, value: &str, min: u32) -> Result<u32, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|&n| n >= min && n <= i32::MAX as u32)
        .ok_or_else(|| {
            format!(
                "bad value '{value}' for {key}: expected an integer in {min}..={}",
                i32::MAX
            )
        })
}
