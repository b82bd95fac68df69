//! Kubernetes resource quantities (`100m`, `0.5`, `64Mi`, `1G`, `1e3`), as
//! the API server reads them for a container's `resources`: checked here
//! so that a bad `weft.dev/proxy-*-request|limit` annotation denies the
//! admission instead of failing the pod's creation later.
//!
//! The grammar is apimachinery's `resource.Quantity`: an optional sign, a
//! decimal number (`1`, `1.5`, `.5`), then a binary suffix (`Ki` … `Ei`), a
//! decimal suffix (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`) or a
//! decimal exponent (`e3`, `E-2`). Resources may not be negative.

/// A quantity's value, in units (`100m` is 0.1, `1Ki` is 1024): enough to
/// compare a request with its limit. `Err` says what is wrong with `text`.
pub fn parse(text: &str) -> Result<f64, String> {
    let like = "like 100m, 0.5, 64Mi or 1G";
    let bad = || format!("'{text}' is not a quantity ({like})");
    let s = text.trim();
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let unsigned = number.strip_prefix(['+', '-']).unwrap_or(number);
    let well_formed = !unsigned.is_empty()
        && unsigned != "."
        && unsigned.bytes().filter(|&b| b == b'.').count() <= 1
        && unsigned.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !well_formed {
        return Err(bad());
    }
    let scale = match suffix {
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        e if e.starts_with(['e', 'E']) => {
            let exp = &e[1..];
            let exp_digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match exp.parse::<i32>() {
                Ok(n) if (-30..=30).contains(&n) => 10f64.powi(n),
                _ => return Err(bad()),
            }
        }
        _ => return Err(bad()),
    };
    let value = number.parse::<f64>().map_err(|_| bad())? * scale;
    if !value.is_finite() {
        return Err(bad());
    }
    if value < 0.0 {
        return Err(format!("'{text}' is negative: a resource is 0 or more"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_what_the_api_server_reads() {
        for (text, want) in [
            ("100m", 0.1),
            ("0.5", 0.5),
            (".5", 0.5),
            ("2", 2.0),
            ("+2", 2.0),
            ("64Mi", 64.0 * 1024.0 * 1024.0),
            ("1Ki", 1024.0),
            ("1G", 1e9),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("250n", 250e-9),
            (" 1Gi ", 1024f64.powi(3)),
        ] {
            let got = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                (got - want).abs() <= want * 1e-12,
                "{text}: {got} != {want}"
            );
        }
    }

    #[test]
    fn refuses_the_rest_with_a_reason() {
        for text in [
            "lots", "", "Mi", "1.2.3", "1mi", "1KB", "1e", "1e+", "5 Mi", ".", "1e99", "--1",
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(&format!("'{text}'")), "{text}: {err}");
        }
        assert_eq!(
            parse("lots").unwrap_err(),
            "'lots' is not a quantity (like 100m, 0.5, 64Mi or 1G)"
        );
        assert_eq!(
            parse("-1").unwrap_err(),
            "'-1' is negative: a resource is 0 or more"
        );
    }
}
