//! What an API key looks like: `iris_sk_<env>_<43 base62 characters>`.

/// The prefix of every API key.
pub const KEY_PREFIX: &str = "iris_sk_";

/// Characters of a key shown in listings and accepted to name it.
pub(crate) const SHOWN: usize = 20;

/// `iris_sk_<env>_<base62 × 43>`, env lowercase alphanumeric.
pub(crate) fn well_formed(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
        return false;
    };
    let Some((env, random)) = rest.split_once('_') else {
        return false;
    };
    (1..=16).contains(&env.len())
        && env
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && random.len() == 43
        && random.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub(crate) fn prefix_of(key: &str) -> &str {
    key.get(..SHOWN).unwrap_or(key)
}

pub(crate) fn valid_env(env: &str) -> bool {
    (1..=16).contains(&env.len())
        && env
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}
