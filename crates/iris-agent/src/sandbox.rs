//! Confining an agent process with Landlock before it starts: what it may
//! read, write and run, which TCP ports it may connect to, and that it
//! cannot signal processes or reach abstract unix sockets outside its own
//! domain (Iris's, or another agent's).
//!
//! The ruleset is built in Iris (allocating freely); the child only calls
//! `prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self` between fork
//! and exec, which allocate nothing.

use std::path::{Path, PathBuf};

/// What one agent process may reach. Every path is granted with what is
/// beneath it, except that no rule covers a `protected` path: a grant
/// that holds one is split into its entries around it (see
/// [`Confinement::plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Read and execute.
    pub read: Vec<PathBuf>,
    /// Everything: read, write, create, remove, execute.
    pub write: Vec<PathBuf>,
    /// Device files, each alone: read, write and their ioctls.
    pub devices: Vec<PathBuf>,
    /// Never granted by a rule on them or on a folder above them.
    pub protected: Vec<PathBuf>,
    /// `None`: any TCP connection; a list: only to these ports.
    pub tcp_ports: Option<Vec<u16>>,
}

/// Whether this kernel can confine agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Landlock with this ABI version.
    Available { abi: i32 },
    /// Not here, and why.
    Missing { reason: String },
}

impl Support {
    pub fn abi(&self) -> Option<i32> {
        match self {
            Support::Available { abi } => Some(*abi),
            Support::Missing { .. } => None,
        }
    }
}

/// The variable that makes Iris behave as on a kernel without Landlock
/// (to try that path; docs/security.md).
pub const FORCE_OFF_VAR: &str = "IRIS_SANDBOX_UNSUPPORTED";

/// What this kernel offers, asked once.
pub fn support() -> Support {
    static SUPPORT: std::sync::OnceLock<Support> = std::sync::OnceLock::new();
    SUPPORT.get_or_init(detect).clone()
}

fn detect() -> Support {
    if std::env::var_os(FORCE_OFF_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        return Support::Missing {
            reason: format!("turned off by {FORCE_OFF_VAR}"),
        };
    }
    imp::detect()
}

/// One rule to add: a path and whether it is granted whole or as a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    Read,
    Write,
    Device,
}

impl Confinement {
    /// The rules to add: every grant that exists, split around protected
    /// paths — a grant that is a protected path or holds one becomes a
    /// grant of each of its entries that is not (recursively), so what is
    /// beside a protected path stays reachable and the protected path is
    /// not. Paths are compared after resolving symlinks.
    pub fn plan(&self) -> Vec<(PathBuf, Grant)> {
        // One that does not exist yet is placed by its folder: a grant
        // that would hold it is split all the same, so it is not covered
        // when it appears.
        let protected: Vec<PathBuf> = self.protected.iter().map(|p| canonical(p)).collect();
        let mut out = Vec::new();
        let groups = [
            (&self.read, Grant::Read),
            (&self.write, Grant::Write),
            (&self.devices, Grant::Device),
        ];
        for (paths, grant) in groups {
            for p in paths {
                if let Ok(real) = std::fs::canonicalize(p) {
                    split(&real, grant, &protected, &mut out, 0);
                }
            }
        }
        out
    }
}

/// `p` with every symlink resolved; a part that does not exist yet is put
/// where its nearest existing folder resolves to.
pub fn canonical(p: &Path) -> PathBuf {
    for a in p.ancestors() {
        if let Ok(real) = std::fs::canonicalize(a) {
            return match p.strip_prefix(a) {
                Ok(rest) if !rest.as_os_str().is_empty() => real.join(rest),
                _ => real,
            };
        }
    }
    p.to_path_buf()
}

/// Add `path` with `grant`, or its entries around the protected paths it
/// holds.
fn split(
    path: &Path,
    grant: Grant,
    protected: &[PathBuf],
    out: &mut Vec<(PathBuf, Grant)>,
    depth: u32,
) {
    if protected.iter().any(|p| p == path) {
        return;
    }
    if !protected.iter().any(|p| p.starts_with(path)) {
        out.push((path.to_path_buf(), grant));
        return;
    }
    // Deep splits are not expected (a protected path sits a few levels
    // below a grant); past this depth the grant is dropped, not widened.
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        // A symlink inside is not followed: an agent that can write here
        // could point one anywhere (`ln -s / x`) before the next spawn.
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        split(&entry.path(), grant, protected, out, depth + 1);
    }
}

/// A ruleset made in Iris, to be entered by the child.
pub struct Prepared {
    #[cfg(target_os = "linux")]
    ruleset: Option<landlock::RulesetCreated>,
}

impl Prepared {
    /// Build the ruleset of `c` (in Iris, before the fork).
    ///
    /// # Errors
    /// Why Landlock refused it.
    pub fn new(c: &Confinement) -> Result<Self, String> {
        imp::prepare(c)
    }

    /// Enter the ruleset: called in the child between fork and exec, after
    /// dropping every capability (root's `CAP_SYS_PTRACE` would read other
    /// processes' `/proc/<pid>/environ`, `CAP_DAC_*` would skip file
    /// permissions). It allocates nothing (the ruleset was built before the
    /// fork), and an error is returned as an errno.
    pub fn enter(&mut self) -> std::io::Result<()> {
        imp::drop_capabilities();
        imp::enter(self)
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
        Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
    };

    use super::{Confinement, Grant, Prepared, Support};

    /// The newest ABI this code asks for; older kernels get what they
    /// offer of it (best effort), newer ones nothing more.
    const ABI_WANTED: ABI = ABI::V6;

    pub(super) fn detect() -> Support {
        // SAFETY: the version query of landlock_create_ruleset(2): no
        // attribute pointer, no memory touched.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                1u32, // LANDLOCK_CREATE_RULESET_VERSION
            )
        };
        if v >= 1 {
            return Support::Available { abi: v as i32 };
        }
        let reason = match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EOPNOTSUPP) => {
                "Landlock is built into this kernel but not enabled at boot (add `landlock` to the lsm= kernel parameter)"
            }
            Some(libc::ENOSYS) => {
                "this kernel has no Landlock (Linux 5.13 or later with CONFIG_SECURITY_LANDLOCK)"
            }
            _ => "Landlock did not answer",
        };
        Support::Missing {
            reason: reason.to_owned(),
        }
    }

    pub(super) fn prepare(c: &Confinement) -> Result<Prepared, String> {
        let all = AccessFs::from_all(ABI_WANTED);
        let read = AccessFs::from_read(ABI_WANTED);
        let file = AccessFs::from_file(ABI_WANTED);
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)
            .and_then(|r| r.scope(Scope::Signal | Scope::AbstractUnixSocket))
            .map_err(|e| e.to_string())?;
        if c.tcp_ports.is_some() {
            ruleset = ruleset
                .handle_access(AccessNet::ConnectTcp)
                .map_err(|e| e.to_string())?;
        }
        let mut created = ruleset.create().map_err(|e| e.to_string())?;
        for (path, grant) in c.plan() {
            let is_dir = path.is_dir();
            let access = match grant {
                Grant::Read => read,
                Grant::Write => all,
                Grant::Device => file,
            };
            // A file takes only the rights that apply to files.
            let access = if is_dir { access } else { access & file };
            let Ok(fd) = PathFd::new(&path) else {
                continue;
            };
            created = created
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        for port in c.tcp_ports.iter().flatten() {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(|e| e.to_string())?;
        }
        Ok(Prepared {
            ruleset: Some(created),
        })
    }

    /// Drop every capability: the bounding set (where allowed: it needs
    /// `CAP_SETPCAP`), the ambient set, and the effective, permitted and
    /// inheritable sets. Two system calls per capability, no allocation;
    /// failures are ignored (an unprivileged process has none to drop).
    pub(super) fn drop_capabilities() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        // SAFETY: prctl and capset on this process only, with pointers to
        // live stack values of the layout the kernel expects (version 3).
        unsafe {
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            let header = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let data = [Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            libc::syscall(libc::SYS_capset, &header, data.as_ptr());
        }
    }

    pub(super) fn enter(p: &mut Prepared) -> std::io::Result<()> {
        let Some(ruleset) = p.ruleset.take() else {
            return Ok(());
        };
        match ruleset.restrict_self() {
            Ok(status) if status.ruleset != RulesetStatus::NotEnforced => Ok(()),
            Ok(_) => Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
            Err(e) => {
                // Freeing in a forked child is as unsafe as allocating:
                // the error is left to the exec that does not happen.
                std::mem::forget(e);
                Err(std::io::Error::from_raw_os_error(libc::EPERM))
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::{Confinement, Prepared, Support};

    pub(super) fn detect() -> Support {
        Support::Missing {
            reason: "Landlock is a Linux feature".into(),
        }
    }

    pub(super) fn prepare(_: &Confinement) -> Result<Prepared, String> {
        Err("agents can be confined on Linux only".into())
    }

    pub(super) fn drop_capabilities() {}

    pub(super) fn enter(_: &mut Prepared) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell confined to the system and one folder: it runs, writes
    /// there, and reads nothing beside it, nor signals its parent.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_confined_process_reaches_only_its_grants() {
        use std::os::unix::process::CommandExt;
        if support().abi().is_none() {
            panic!(
                "this machine's kernel offers Landlock (ABI 7): {:?}",
                support()
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own");
        std::fs::create_dir(&own).unwrap();
        std::fs::write(dir.path().join("secret"), "s3cret").unwrap();
        let c = Confinement {
            read: ["/usr", "/bin", "/lib", "/lib64", "/etc"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            write: vec![own.clone()],
            devices: vec!["/dev/null".into()],
            ..Default::default()
        };
        let mut prepared = Prepared::new(&c).unwrap();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("cat ../secret; echo written > x && cat x; kill -0 $PPID && echo signalled; echo end")
            .current_dir(&own);
        // SAFETY: as in AgentProcess::spawn.
        unsafe {
            cmd.pre_exec(move || prepared.enter());
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stdout.contains("written") && stdout.contains("end"),
            "{stdout}{stderr}"
        );
        assert!(!stdout.contains("s3cret"), "{stdout}");
        assert!(stderr.contains("Permission denied"), "{stderr}");
        assert!(!stdout.contains("signalled"), "{stdout}{stderr}");
    }

    #[test]
    fn a_grant_is_split_around_what_it_holds_that_is_protected() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        for d in ["home/data", "home/agents/a", "home/agents/b", "team"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("home/credentials"), "k").unwrap();
        std::fs::create_dir_all(root.join("fresh")).unwrap();
        // A symlink an agent put beside a protected path is not followed.
        std::os::unix::fs::symlink("/", root.join("home/evil")).unwrap();
        std::fs::write(root.join("home/notes"), "n").unwrap();
        let c = Confinement {
            read: vec![root.clone()],
            write: vec![root.join("home/agents/a"), root.join("missing")],
            protected: vec![
                root.join("home/credentials"),
                root.join("home/data"),
                root.join("home/agents"),
                // Not there yet: its folder is split all the same.
                root.join("fresh/credentials"),
            ],
            ..Default::default()
        };
        let mut plan = c.plan();
        plan.sort();
        let mut expected = vec![
            (root.join("home/notes"), Grant::Read),
            (root.join("team"), Grant::Read),
            (root.join("home/agents/a"), Grant::Write),
        ];
        expected.sort();
        assert_eq!(plan, expected);
    }
}
