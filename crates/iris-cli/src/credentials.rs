//! `$IRIS_HOME/credentials`: the API key the `iris` client commands send.
//! One line `IRIS_API_KEY=iris_sk_…`, mode 0600. `$IRIS_API_KEY` wins.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

const VAR: &str = "IRIS_API_KEY";

pub fn path(home: &Path) -> PathBuf {
    home.join("credentials")
}

/// The key to send: `$IRIS_API_KEY`, else the credentials file.
pub fn key(home: &Path) -> Option<String> {
    if let Ok(k) = std::env::var(VAR)
        && !k.trim().is_empty()
    {
        return Some(k.trim().to_owned());
    }
    let text = std::fs::read_to_string(path(home)).ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(VAR)?.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .find(|v| !v.is_empty())
}

/// Write the file readable by its owner only.
pub fn write(home: &Path, key: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let p = path(home);
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(&p)
        .with_context(|| format!("writing {}", p.display()))?;
    // An existing file keeps its mode on open; make sure it is 0600.
    #[cfg(unix)]
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    writeln!(
        f,
        "# The Iris API key of this IRIS_HOME, read by the iris CLI."
    )?;
    writeln!(f, "{VAR}={key}")?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_is_private_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "iris_sk_test_abc").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        if std::env::var(VAR).is_err() {
            assert_eq!(key(d.path()).as_deref(), Some("iris_sk_test_abc"));
        }
    }
}
