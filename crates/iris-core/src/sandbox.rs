//! The sandbox service: what each agent process may reach (docs/security.md,
//! "Confined agents"). Every agent is confined with Landlock before it
//! starts unless its team, profile or the top-level `sandbox` turns that
//! off: it reads the system, reads and writes its folder (or its
//! conversation's worktree and the repository's shared `.git`), a home and
//! a temporary folder of its own under `$IRIS_HOME/agents/<team>/`, and
//! what `allowRead`/`allowWrite` add; never Iris's files (credentials,
//! database, configuration, worktrees and homes of others) nor other
//! teams' folders.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use iris_agent::sandbox::canonical;
use iris_agent::{Confinement, LaunchSpec, Support};
use serde_json::{Value, json};

use crate::config::{Config, SandboxConfig};
use crate::team::Team;
use crate::teams::Teams;

/// What every agent reads (and runs) of the system, where present.
const SYSTEM: [&str; 14] = [
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/proc",
    "/sys",
    "/nix/store",
    // The resolver's files where /etc/resolv.conf points to them.
    "/run/systemd/resolve",
    "/run/resolvconf",
];

/// What Iris keeps in its home: never granted, whatever folder above them
/// is (a team folder that holds `$IRIS_HOME` gets what is beside them).
const HOME_ENTRIES: [&str; 7] = [
    "credentials",
    "data",
    "config.yaml",
    "worktrees",
    "agents",
    "audit-witness.json",
    ".http.port",
];

/// Device files an agent may open, one by one (never all of /dev).
const DEVICES: [&str; 8] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

pub struct Sandbox {
    support: Support,
    /// The top-level `sandbox`, replaced by a reload.
    settings: RwLock<Arc<SandboxConfig>>,
    /// `$IRIS_HOME`: none of its entries is granted but an agent's own.
    home: PathBuf,
    /// Iris's files outside its home: the configuration file, the SQLite
    /// database and its journal files.
    files: Vec<PathBuf>,
    /// The API port (an agent with `tcpPorts` may still reach Iris's `/mcp`).
    api_port: u16,
    teams: Arc<Teams>,
}

impl Sandbox {
    pub(crate) fn new(config: &Config, teams: Arc<Teams>) -> Self {
        let mut files: Vec<PathBuf> = config.source.iter().cloned().collect();
        if let Some(db) = config.database_file() {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut name = db.as_os_str().to_owned();
                name.push(suffix);
                files.push(PathBuf::from(name));
            }
        }
        let support = iris_agent::sandbox::support();
        let sandbox = Sandbox {
            support,
            settings: RwLock::new(Arc::new(config.sandbox.clone())),
            home: config.home.clone(),
            files,
            api_port: config.api_port(),
            teams,
        };
        sandbox.warn();
        sandbox
    }

    fn settings(&self) -> Arc<SandboxConfig> {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// A reload's top-level `sandbox`; whether it changed.
    pub(crate) fn set_settings(&self, s: &SandboxConfig) -> bool {
        if *self.settings() == *s {
            return false;
        }
        match self.settings.write() {
            Ok(mut cur) => *cur = Arc::new(s.clone()),
            Err(e) => *e.into_inner() = Arc::new(s.clone()),
        }
        self.warn();
        true
    }

    /// Said at start (and on a reload): agents will run unconfined, or not
    /// at all.
    fn warn(&self) {
        if let Support::Missing { reason } = &self.support {
            if self.settings().required {
                tracing::error!(
                    reason,
                    "agents cannot be confined here and sandbox.required is set: no agent will start"
                );
            } else {
                tracing::warn!(
                    reason,
                    "agents cannot be confined here: they run unconfined (sandbox.required refuses to start them instead)"
                );
            }
        }
    }

    /// For `/health/detailed`.
    pub fn status(&self) -> Value {
        let s = self.settings();
        let (supported, reason) = match &self.support {
            Support::Available { .. } => (true, None),
            Support::Missing { reason } => (false, Some(reason.clone())),
        };
        let unconfined: Vec<String> = self
            .teams
            .all()
            .iter()
            .filter(|t| !t.profile.sandbox.over(&s).enabled())
            .map(|t| t.name.clone())
            .collect();
        json!({
            "supported": supported,
            "abi": self.support.abi(),
            "reason": reason,
            "enabled": s.enabled(),
            "required": s.required,
            "confining": supported && s.enabled(),
            "unconfinedTeams": unconfined,
        })
    }

    /// Confine `spec`, the next process of `team` (`worktree`: the
    /// conversation's checkout it runs in). Sets its home and temporary
    /// folder.
    ///
    /// # Errors
    /// Why it may not start: `sandbox.required` where the kernel cannot
    /// confine, or its folders could not be made.
    pub(crate) fn confine(
        &self,
        team: &Team,
        spec: &mut LaunchSpec,
        worktree: Option<&Path>,
    ) -> Result<(), String> {
        let top = self.settings();
        let s = team.profile.sandbox.over(&top);
        if !s.enabled() {
            return Ok(());
        }
        if let Support::Missing { reason } = &self.support {
            return if top.required {
                Err(format!(
                    "sandbox.required is set and agents cannot be confined here ({reason}); not started"
                ))
            } else {
                Ok(())
            };
        }
        let own = self.home.join("agents").join(&team.name);
        // Folders the agent writes: it can put a symlink anywhere in them,
        // so no other grant is taken from a path that leads through one
        // (see `through_writable`).
        let mut writable = vec![canonical(&spec.cwd)];
        let mut write = vec![spec.cwd.clone()];
        let mut named = Vec::new();
        for (var, dir) in [("HOME", "home"), ("TMPDIR", "tmp")] {
            // A profile or team that names the folder keeps it, granted.
            match team.profile.env.get(var) {
                Some(p) => named.push(PathBuf::from(p)),
                None => {
                    let p = own.join(dir);
                    make_private_dir(&p)
                        .map_err(|e| format!("cannot make the agent's {dir} folder: {e}"))?;
                    set_env(&mut spec.env, var, &p.display().to_string());
                    writable.push(canonical(&p));
                    write.push(p);
                }
            }
        }
        let mut read: Vec<PathBuf> = SYSTEM.iter().map(PathBuf::from).collect();
        if let Some(w) = worktree
            && let Some(git) = worktree_git(team.path(), w)
        {
            read.push(git.common);
            write.extend(git.written);
        }
        let mut chosen: Vec<(PathBuf, bool)> = named.into_iter().map(|p| (p, true)).collect();
        chosen.extend(s.allow_write.iter().map(|p| (PathBuf::from(p), true)));
        chosen.extend(program_dir(&spec.program, &spec.env).map(|p| (p, false)));
        chosen.extend(path_dirs(&spec.env).into_iter().map(|p| (p, false)));
        chosen.extend(s.allow_read.iter().map(|p| (PathBuf::from(p), false)));
        for (p, writes) in chosen {
            if through_writable(&p, &writable) {
                tracing::warn!(team = %team.name, path = %p.display(), "not granted: it leads through a folder the agent writes, to somewhere else");
                continue;
            }
            if writes {
                write.push(p);
            } else {
                read.push(p);
            }
        }
        // None of Iris's own files but what is the agent's own (granted
        // above, beneath a protected entry), nor other teams' folders (a
        // folder shared with this team is its own).
        let mut protected: Vec<PathBuf> = HOME_ENTRIES.iter().map(|e| self.home.join(e)).collect();
        protected.extend(self.files.iter().cloned());
        let own_folder = std::fs::canonicalize(&spec.cwd).unwrap_or_else(|_| spec.cwd.clone());
        // What `allowRead`/`allowWrite` name (or hold) is granted even when
        // it is another team's folder: the configuration said so.
        let allowed: Vec<PathBuf> = s
            .allow_read
            .iter()
            .chain(&s.allow_write)
            .map(|a| std::fs::canonicalize(a).unwrap_or_else(|_| PathBuf::from(a)))
            .collect();
        protected.extend(
            self.teams
                .all()
                .iter()
                .filter(|t| t.name != team.name)
                .filter_map(|t| std::fs::canonicalize(t.path()).ok())
                .filter(|real| *real != own_folder && !allowed.iter().any(|a| real.starts_with(a))),
        );
        if worktree.is_some() {
            // A worktree conversation works in its checkout, not in the
            // team's folder.
            protected.push(team.path().to_path_buf());
        }
        let tcp_ports = s.tcp_ports.clone().map(|mut ports| {
            ports.push(self.api_port);
            ports
        });
        spec.confine = Some(Confinement {
            read,
            write,
            devices: DEVICES.iter().map(PathBuf::from).collect(),
            protected,
            tcp_ports,
        });
        Ok(())
    }
}

/// Whether `p` leads through one of the `writable` folders to somewhere
/// outside it: a folder on its way, or `p` itself, is in one, but `p`
/// resolves elsewhere (a symlink the agent put there: `bin -> /root`).
fn through_writable(p: &Path, writable: &[PathBuf]) -> bool {
    let real = canonical(p);
    p.ancestors().any(|a| {
        let c = canonical(a);
        writable
            .iter()
            .any(|w| c.starts_with(w) && !real.starts_with(w))
    })
}

/// What a worktree conversation's agent may use of its repository's
/// shared git folder.
struct WorktreeGit {
    /// `<repository>/.git`, read.
    common: PathBuf,
    /// Written: its objects, refs and logs, and this worktree's own
    /// folder in `worktrees/` — never its config, hooks or info (a filter
    /// or hook planted there would run as Iris or as the user).
    written: Vec<PathBuf>,
}

/// The git folder of the team's repository (found from the team's folder,
/// which a worktree conversation cannot write; it must be the repository's
/// own `.git`), and this worktree's folder in it (named by the worktree's
/// `.git` file, which must point inside that `.git/worktrees`).
fn worktree_git(team_folder: &Path, worktree: &Path) -> Option<WorktreeGit> {
    let top = crate::worktree::top_level(team_folder)?;
    let common = canonical(&crate::worktree::common_dir(team_folder)?);
    if common != canonical(&top.join(".git")) {
        tracing::warn!(folder = %team_folder.display(), "the repository's git folder is not its own .git: not granted to worktree conversations");
        return None;
    }
    let link = std::fs::read_to_string(worktree.join(".git")).ok()?;
    let own = canonical(Path::new(link.trim().strip_prefix("gitdir:")?.trim()));
    if own.parent() != Some(common.join("worktrees").as_path()) {
        tracing::warn!(worktree = %worktree.display(), "a worktree's .git points outside its repository: not granted");
        return None;
    }
    Some(WorktreeGit {
        written: ["objects", "refs", "logs"]
            .iter()
            .map(|d| common.join(d))
            .chain([own])
            .collect(),
        common,
    })
}

fn set_env(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.to_owned(), value.to_owned()));
}

fn make_private_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
}

/// The agent's `PATH`: absolute entries, not `/` nor one that holds the
/// home of the user Iris runs as (a `PATH` with `~` in it would grant
/// `~/.ssh`).
fn path_dirs(env: &[(String, String)]) -> Vec<PathBuf> {
    env.iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| {
            std::env::split_paths(v)
                .filter(|p| p.is_absolute() && p.parent().is_some() && !holds_user_home(p))
                .collect()
        })
        .unwrap_or_default()
}

/// The folder of the program itself (after symlinks): a CLI installed
/// outside the system folders (npm's, a clone's build) reads its own files.
fn program_dir(program: &Path, env: &[(String, String)]) -> Option<PathBuf> {
    let found = if program.components().count() > 1 {
        program.to_path_buf()
    } else {
        path_dirs(env)
            .into_iter()
            .map(|d| d.join(program))
            .find(|p| p.is_file())?
    };
    let real = std::fs::canonicalize(&found).ok()?;
    real.parent()
        .map(Path::to_path_buf)
        .filter(|d| d.parent().is_some() && !holds_user_home(d))
}

/// Whether `dir` is or holds the home of the user Iris runs as.
fn holds_user_home(dir: &Path) -> bool {
    std::env::var_os("HOME").is_some_and(|h| Path::new(&h).starts_with(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_the_agent_could_point_elsewhere_is_not_granted() {
        let dir = tempfile::tempdir().unwrap();
        let team = canonical(dir.path()).join("team");
        std::fs::create_dir_all(team.join("bin")).unwrap();
        std::fs::create_dir_all(team.join("real")).unwrap();
        let secret = canonical(dir.path()).join("secret");
        std::fs::create_dir_all(&secret).unwrap();
        std::os::unix::fs::symlink(&secret, team.join("escape")).unwrap();
        std::os::unix::fs::symlink(team.join("real"), team.join("inside")).unwrap();
        let writable = vec![team.clone()];
        assert!(!through_writable(&team.join("bin"), &writable));
        assert!(
            !through_writable(&team.join("inside"), &writable),
            "stays in"
        );
        assert!(
            through_writable(&team.join("escape"), &writable),
            "leads out"
        );
        assert!(!through_writable(Path::new("/usr/bin"), &writable));
        // Beneath a symlink that leads out, too.
        assert!(through_writable(&team.join("escape/x"), &writable));
    }
}
