//! Command-line parsing for the subcommands: a few `--flag VALUE` options
//! each, parsed by hand (the tests crate has no clap). An error names the
//! flag and the bad value; `main` turns it into exit code 64.

use anyhow::{bail, Context, Result};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The protocol a load run speaks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 with keep-alive over a small pool of connections.
    H1,
    /// HTTP/2 with prior knowledge over one connection.
    H2,
}

impl Proto {
    /// How the protocol is written on a `load` command line.
    pub fn arg(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2 => "h2",
        }
    }
}

impl FromStr for Proto {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "h1" | "http1" | "http/1.1" => Ok(Self::H1),
            "h2" | "http2" | "http/2" => Ok(Self::H2),
            _ => bail!("unknown protocol {s:?} (expected h1 or h2)"),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::H1 => "HTTP/1.1",
            Self::H2 => "HTTP/2",
        })
    }
}

/// A duration in the mesh's syntax, that of Go and Kubernetes (`500ms`,
/// `2.5s`, `1m`, `1m30s`; see [`weft_proxy::config::duration`]), above 0
/// and at most an hour.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let d = weft_proxy::config::duration(s).map_err(anyhow::Error::msg)?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        bail!("duration {s:?} must be above 0 and at most an hour");
    }
    Ok(d)
}

/// The arguments of one subcommand, consumed flag by flag.
#[derive(Debug)]
pub struct Args(Vec<String>);

impl Args {
    pub fn new(args: impl IntoIterator<Item = String>) -> Self {
        Self(args.into_iter().collect())
    }

    /// Whether `--name` is present (removes it).
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|a| a != name);
        self.0.len() != before
    }

    /// The value of `--name VALUE` or `--name=VALUE`, if present (removes it).
    pub fn value<T>(&mut self, name: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(i) = self
            .0
            .iter()
            .position(|a| a == name || a.starts_with(&format!("{name}=")))
        else {
            return Ok(None);
        };
        let arg = self.0.remove(i);
        let raw = match arg.split_once('=') {
            Some((_, v)) => v.to_owned(),
            None if i < self.0.len() => self.0.remove(i),
            None => bail!("{name} needs a value"),
        };
        raw.parse::<T>()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{name} {raw:?}: {e}"))
    }

    /// A duration flag (see [`parse_duration`]).
    pub fn duration(&mut self, name: &str) -> Result<Option<Duration>> {
        self.value::<String>(name)?
            .map(|s| parse_duration(&s).with_context(|| name.to_owned()))
            .transpose()
    }

    /// What is left once every known flag was taken: the positional
    /// arguments. An unknown `--flag` is an error.
    pub fn finish(self) -> Result<Vec<String>> {
        if let Some(unknown) = self.0.iter().find(|a| a.starts_with("--")) {
            bail!("unknown option {unknown}");
        }
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        Args::new(s.split_whitespace().map(String::from))
    }

    #[test]
    fn flags_values_and_leftovers() {
        let mut a = args("10.244.0.3:8080 --rate 500 --proto=h2 --quick");
        assert!(a.flag("--quick"));
        assert!(!a.flag("--quick"));
        assert_eq!(a.value::<u64>("--rate").unwrap(), Some(500));
        assert_eq!(a.value::<Proto>("--proto").unwrap(), Some(Proto::H2));
        assert_eq!(a.value::<u64>("--absent").unwrap(), None);
        assert_eq!(a.finish().unwrap(), vec!["10.244.0.3:8080"]);
    }

    #[test]
    fn bad_input_names_the_flag() {
        let err = args("--rate fast").value::<u64>("--rate").unwrap_err();
        assert!(err.to_string().contains("--rate \"fast\""), "{err}");
        assert!(args("--rate").value::<u64>("--rate").is_err());
        assert!(args("--what 1").finish().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        let err = |s: &str| parse_duration(s).unwrap_err().to_string();
        assert!(err("0").contains("above 0"));
        assert!(err("1h0m1s").contains("at most an hour"));
        assert!(err("10").contains("needs a unit"));
        assert!(err("-1s").contains("negative"));
        assert!(err("soon").contains("not a duration"));
        assert!(err("99999999999999999999h").contains("at most 2562047h"));
        let flag = args("--duration 1x").duration("--duration").unwrap_err();
        assert_eq!(
            format!("{flag:#}"),
            "--duration: '1x' has an unknown unit 'x' (use ns, us, ms, s, m or h)"
        );
    }

    /// The proxy's flags, the control plane's flags and annotations, and
    /// these tools read one syntax: the same input gives the same value or
    /// the same error everywhere.
    #[test]
    fn one_duration_syntax_across_the_crates() {
        let cases = [
            "300ms",
            "1.5s",
            "2m",
            "1h",
            "1h30m",
            "1.5h",
            ".5s",
            "1.s",
            "+1s",
            "0",
            "0s",
            "250us",
            "250µs",
            "250μs",
            "7ns",
            " 10s ",
            "2562047h",
            "-1s",
            "1x",
            "1.5",
            "10",
            "",
            " ",
            "1h 30m",
            "1d",
            "ten",
            "1e3s",
            "99999999999999999999h",
            "2562048h",
            "9223372036854775808ns",
            "1m-30s",
            "--1s",
            "1.2.3s",
        ];
        for s in cases {
            let proxy = weft_proxy::config::duration(s);
            assert_eq!(proxy, weft_control::config::duration(s), "{s:?}");
            match (&proxy, parse_duration(s)) {
                (Ok(d), Ok(tool)) => assert_eq!(*d, tool, "{s:?}"),
                (Ok(d), Err(_)) => assert!(d.is_zero() || *d > Duration::from_secs(3600), "{s:?}"),
                (Err(e), Err(tool)) => assert_eq!(*e, tool.to_string(), "{s:?}"),
                (Err(e), Ok(_)) => panic!("{s:?}: the proxy says {e}, the bench took it"),
            }
        }
    }
}
