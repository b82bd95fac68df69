//! Kubernetes versions as `/version` gives them: `major` and `minor`
//! strings (providers add a `+`: GKE's `"29+"`) and `gitVersion`
//! (`v1.29.3-gke.100`, `v1.30.1+k3s1`); and a kubelet's (`v1.29.3`).

use std::fmt;

/// A release, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest release weft supports: native sidecars (the
/// `SidecarContainers` feature gate) are on by default from 1.29, and the
/// chart says `kubeVersion: ">=1.29.0-0"`.
pub const MINIMUM: Release = Release {
    major: 1,
    minor: 29,
};

/// The leading digits of `s` (`"29+"` → 29).
fn number(s: &str) -> Option<u32> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Release {
    /// From `/version`'s `major` and `minor`, else from its `gitVersion`.
    pub fn from_info(major: &str, minor: &str, git_version: &str) -> Result<Self, String> {
        match (number(major), number(minor)) {
            (Some(major), Some(minor)) => Ok(Release { major, minor }),
            _ => Self::from_git_version(git_version).map_err(|_| {
                format!(
                    "the API server's version (major {major:?}, minor {minor:?}, gitVersion {git_version:?}) is not a Kubernetes version"
                )
            }),
        }
    }

    /// From a `v1.29.3-gke.100` (a kubelet's, or `gitVersion`).
    pub fn from_git_version(v: &str) -> Result<Self, String> {
        let rest = v.trim().strip_prefix('v').unwrap_or(v.trim());
        let mut parts = rest.splitn(3, '.');
        let major = parts.next().and_then(number);
        let minor = parts.next().and_then(number);
        match (major, minor) {
            (Some(major), Some(minor)) => Ok(Release { major, minor }),
            _ => Err(format!("{v:?} is not a Kubernetes version")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(major: u32, minor: u32) -> Release {
        Release { major, minor }
    }

    #[test]
    fn reads_what_providers_write() {
        assert_eq!(Release::from_info("1", "29", "v1.29.0"), Ok(r(1, 29)));
        assert_eq!(
            Release::from_info("1", "29+", "v1.29.3-gke.100"),
            Ok(r(1, 29))
        );
        assert_eq!(Release::from_info("", "", "v1.30.1+k3s1"), Ok(r(1, 30)));
        assert_eq!(Release::from_git_version("v1.28.15-eks-1234"), Ok(r(1, 28)));
        assert_eq!(Release::from_git_version("1.31.0"), Ok(r(1, 31)));
        assert!(Release::from_info("", "", "weird").is_err());
        assert!(Release::from_git_version("v1").is_err());
    }

    #[test]
    fn compares_by_number_not_text() {
        assert!(r(1, 28) < MINIMUM);
        assert!(r(1, 29) >= MINIMUM);
        assert!(r(1, 100) > r(1, 29));
        assert!(r(2, 0) > r(1, 99));
        assert_eq!(r(1, 9).to_string(), "1.9");
    }
}
