//! The Prometheus text exposition format (as prometheus-client writes it,
//! OpenMetrics included): samples with their labels; comments, `# EOF`
//! and empty lines skipped.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, or "" when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// A line that is not a sample.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {reason}: {text:?}")]
pub struct Error {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Every sample of a scrape, in page order.
pub fn parse(text: &str) -> Result<Vec<Sample>, Error> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| Error {
            line: i + 1,
            reason,
            text: raw.to_owned(),
        };
        out.push(sample(line).map_err(err)?);
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = read_labels(after, &mut labels)?;
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| "value is not a number")?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `k="v",...}` into `labels`; returns what follows the `}`.
fn read_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value not quoted");
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((j, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => return Err("unterminated label value"),
                },
                '"' => {
                    end = Some(eq + 1 + j + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        labels.insert(key.to_owned(), value);
        s = &s[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_escapes_and_infinities() {
        let text = "# HELP weft_request_total HTTP requests\n\
            # TYPE weft_request_total counter\n\
            weft_request_total{direction=\"inbound\",dst=\"10.244.0.5:8080\",tls=\"true\"} 12\n\
            weft_response_latency_ms_bucket{direction=\"inbound\",le=\"+Inf\"} 3\n\
            odd{v=\"a \\\"q\\\" \\\\ b\\nc\"} 1.5e3\n\
            plain 7 1700000000\n\
            # EOF\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "weft_request_total");
        assert_eq!(s[0].label("dst"), "10.244.0.5:8080");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].label("le"), "+Inf");
        assert_eq!(s[2].label("v"), "a \"q\" \\ b\nc");
        assert_eq!(s[2].value, 1500.0);
        assert_eq!(s[3].value, 7.0);
        assert!(s[3].labels.is_empty());
    }

    #[test]
    fn a_broken_line_is_named() {
        let e = parse("ok 1\nbad{x=1} 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.reason, "label value not quoted");
        assert_eq!(
            parse("x{a=\"1\"} one").unwrap_err().reason,
            "value is not a number"
        );
        assert_eq!(
            parse("x{a=\"1} 1").unwrap_err().reason,
            "unterminated label value"
        );
    }
}
