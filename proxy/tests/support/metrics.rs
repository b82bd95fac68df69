//! Reading a Prometheus (OpenMetrics) text scrape.

/// The sum of the samples of `series` (`name` or `name{a="1",b="2"}`) over
/// every line whose labels include those given (in any order; others may be
/// there too); 0 when no line matches.
pub fn sum(scrape: &str, series: &str) -> f64 {
    let (name, wanted) = split(series);
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(key, _)| {
            let (n, labels) = split(key);
            n == name && wanted.iter().all(|w| labels.contains(w))
        })
        .map(|(key, value)| {
            value
                .trim()
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{key} has the value {value:?}"))
        })
        .sum()
}

/// The values of `label` on the lines of `series` (matched as in [`sum`]).
pub fn label_values(scrape: &str, series: &str, label: &str) -> Vec<String> {
    let (name, wanted) = split(series);
    let prefix = format!("{label}=\"");
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(key, _)| {
            let (n, labels) = split(key);
            if n != name || !wanted.iter().all(|w| labels.contains(w)) {
                return None;
            }
            labels
                .iter()
                .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix('"'))
                .map(str::to_owned)
        })
        .collect()
}

/// `name{a="1",b="2"}` → (`name`, [`a="1"`, `b="2"`]). Label values here
/// never hold `",`.
fn split(series: &str) -> (&str, Vec<&str>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series, Vec::new());
    };
    let labels = rest.trim_end_matches('}');
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in labels.match_indices("\",") {
        out.push(&labels[start..=i]);
        start = i + 2;
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    (name, out)
}
