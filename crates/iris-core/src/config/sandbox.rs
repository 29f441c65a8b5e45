//! `sandbox`: how agent processes are confined (docs/security.md), as a
//! default at the top of the file, per agent profile and per team.

use serde::{Deserialize, Serialize};

/// One level of `sandbox` settings; a team's are its own over its
/// profile's over the top level's ([`SandboxConfig::over`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Confine the agent (default: yes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Top level only: refuse to start agents where the kernel cannot
    /// confine them (instead of running them unconfined with a warning).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// More folders or files the agent may read (and run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_read: Vec<String>,
    /// More folders or files the agent may read and write.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_write: Vec<String>,
    /// TCP ports the agent may connect to (Iris's own API port is added);
    /// absent: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_ports: Option<Vec<u16>>,
}

impl SandboxConfig {
    pub fn is_default(&self) -> bool {
        *self == SandboxConfig::default()
    }

    /// `self` over `base`: its switch and port list where it has them,
    /// the paths of both.
    pub fn over(&self, base: &SandboxConfig) -> SandboxConfig {
        let mut out = base.clone();
        if self.enabled.is_some() {
            out.enabled = self.enabled;
        }
        if self.tcp_ports.is_some() {
            out.tcp_ports.clone_from(&self.tcp_ports);
        }
        out.allow_read.extend(self.allow_read.iter().cloned());
        out.allow_write.extend(self.allow_write.iter().cloned());
        out
    }

    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// Problems of this level (`key` is where it sits, `top`: the file's
    /// top level): each as a key path and what is wrong.
    pub(crate) fn problems(&self, key: &str, top: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.required && !top {
            out.push((
                format!("{key}.required"),
                "`required` is a setting of the top-level `sandbox` only".into(),
            ));
        }
        if self.tcp_ports.iter().flatten().any(|p| *p == 0) {
            out.push((
                format!("{key}.tcpPorts"),
                "a port is from 1 to 65535".into(),
            ));
        }
        for (field, paths) in [
            ("allowRead", &self.allow_read),
            ("allowWrite", &self.allow_write),
        ] {
            if paths.iter().any(|p| p.trim().is_empty()) {
                out.push((format!("{key}.{field}"), "a path is not empty".into()));
            }
        }
        out
    }

    /// The paths resolved against `resolve` (the config file's folder).
    pub(crate) fn resolve_paths(&mut self, resolve: impl Fn(&str) -> String) {
        for p in self
            .allow_read
            .iter_mut()
            .chain(self.allow_write.iter_mut())
        {
            *p = resolve(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_is_its_own_over_its_profile_over_the_default() {
        let top = SandboxConfig {
            allow_read: vec!["/a".into()],
            tcp_ports: Some(vec![443]),
            ..Default::default()
        };
        let team = SandboxConfig {
            enabled: Some(false),
            allow_write: vec!["/b".into()],
            ..Default::default()
        };
        let s = team.over(&top);
        assert!(!s.enabled());
        assert_eq!(s.allow_read, ["/a"]);
        assert_eq!(s.allow_write, ["/b"]);
        assert_eq!(s.tcp_ports, Some(vec![443]));
        assert!(SandboxConfig::default().enabled());
        let bad = SandboxConfig {
            required: true,
            tcp_ports: Some(vec![0]),
            ..Default::default()
        };
        let keys: Vec<String> = bad
            .problems("teams.x.sandbox", false)
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(
            keys,
            ["teams.x.sandbox.required", "teams.x.sandbox.tcpPorts"]
        );
        assert_eq!(bad.problems("sandbox", true).len(), 1);
    }
}
