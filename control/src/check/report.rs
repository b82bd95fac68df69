//! What `weft check` found: checks in named groups, each a success, a
//! warning, a failure or skipped (its prerequisite failed), with a detail
//! and a hint; written as text (one line per check, `√` / `‼` / `×` / `-`,
//! as `linkerd check` does) or as JSON with the same content.

use serde::Serialize;
use std::fmt::Write;

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    /// Worth knowing; does not fail the run.
    Warning,
    /// Fails the run (exit 1).
    Error,
    /// Not run: a check it depends on failed.
    Skipped,
}

impl Outcome {
    /// The mark at the start of its line.
    pub fn mark(self) -> &'static str {
        match self {
            Outcome::Success => "√",
            Outcome::Warning => "‼",
            Outcome::Error => "×",
            Outcome::Skipped => "-",
        }
    }
}

/// One check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is checked, as a statement that holds on success.
    pub description: String,
    pub result: Outcome,
    /// What was found (why it failed, what was skipped for, or a figure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    pub fn success(description: &str, detail: Option<String>) -> Self {
        Self::new(description, Outcome::Success, detail, None)
    }

    pub fn warning(description: &str, detail: String, hint: &str) -> Self {
        Self::new(description, Outcome::Warning, Some(detail), Some(hint))
    }

    pub fn error(description: &str, detail: String, hint: &str) -> Self {
        Self::new(description, Outcome::Error, Some(detail), Some(hint))
    }

    /// Not run because `why` (the prerequisite that failed).
    pub fn skipped(description: &str, why: &str) -> Self {
        Self::new(description, Outcome::Skipped, Some(why.to_owned()), None)
    }

    fn new(description: &str, result: Outcome, detail: Option<String>, hint: Option<&str>) -> Self {
        Check {
            description: description.to_owned(),
            result,
            detail,
            hint: hint.map(str::to_owned),
        }
    }
}

/// A named group of checks (`kubernetes-api`, `weft-control`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    #[serde(rename = "categoryName")]
    pub name: &'static str,
    pub checks: Vec<Check>,
}

impl Group {
    pub fn new(name: &'static str) -> Self {
        Group {
            name,
            checks: Vec::new(),
        }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Every one of `descriptions` skipped because `why`.
    pub fn skipped(name: &'static str, descriptions: &[&str], why: &str) -> Self {
        Group {
            name,
            checks: descriptions
                .iter()
                .map(|d| Check::skipped(d, why))
                .collect(),
        }
    }
}

/// Everything `weft check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No check failed (warnings and skips allowed).
    pub success: bool,
    #[serde(rename = "categories")]
    pub groups: Vec<Group>,
}

impl Report {
    pub fn new(groups: Vec<Group>) -> Self {
        let success = groups
            .iter()
            .flat_map(|g| &g.checks)
            .all(|c| c.result != Outcome::Error);
        Report { success, groups }
    }

    /// The check described `description`, if any.
    pub fn find(&self, description: &str) -> Option<&Check> {
        self.groups
            .iter()
            .flat_map(|g| &g.checks)
            .find(|c| c.description == description)
    }

    /// The text report: each group under its underlined name, one line per
    /// check, its detail and hint indented below it, then the verdict.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for group in &self.groups {
            let _ = writeln!(out, "{}\n{}", group.name, "-".repeat(group.name.len()));
            for c in &group.checks {
                let _ = write!(out, "{} {}", c.result.mark(), c.description);
                match (&c.result, &c.detail) {
                    (Outcome::Skipped, Some(why)) => {
                        let _ = writeln!(out, " (skipped: {why})");
                    }
                    (Outcome::Success, Some(d)) => {
                        let _ = writeln!(out, " ({d})");
                    }
                    (_, Some(d)) => {
                        let _ = writeln!(out);
                        for line in d.lines() {
                            let _ = writeln!(out, "    {line}");
                        }
                    }
                    (_, None) => {
                        let _ = writeln!(out);
                    }
                }
                if let Some(hint) = &c.hint {
                    let _ = writeln!(out, "    hint: {hint}");
                }
            }
            out.push('\n');
        }
        let verdict = if self.success { "√" } else { "×" };
        let _ = writeln!(out, "Status check results are {verdict}");
        out
    }

    /// The JSON report (pretty), the same content as [`Report::text`].
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut api = Group::new("kubernetes-api");
        api.push(Check::success("can query the Kubernetes API", None));
        api.push(Check::success(
            "is running Kubernetes 1.29 or later",
            Some("v1.35.0".into()),
        ));
        let mut control = Group::new("weft-control");
        control.push(Check::error(
            "every weft-control replica is ready",
            "1 of 2 ready\nweft-system/weft-control-b: not ready".into(),
            "kubectl -n weft-system describe pod",
        ));
        control.push(Check::warning(
            "the issuer is not about to expire",
            "expires in 10 days".into(),
            "rotate it",
        ));
        control.push(Check::skipped("the caBundle matches", "no issuer"));
        Report::new(vec![api, control])
    }

    #[test]
    fn text_has_one_line_per_check_and_a_hint_per_problem() {
        let text = report().text();
        assert_eq!(
            text,
            "kubernetes-api\n\
             --------------\n\
             √ can query the Kubernetes API\n\
             √ is running Kubernetes 1.29 or later (v1.35.0)\n\
             \n\
             weft-control\n\
             ------------\n\
             × every weft-control replica is ready\n    \
             1 of 2 ready\n    \
             weft-system/weft-control-b: not ready\n    \
             hint: kubectl -n weft-system describe pod\n\
             ‼ the issuer is not about to expire\n    \
             expires in 10 days\n    \
             hint: rotate it\n\
             - the caBundle matches (skipped: no issuer)\n\
             \n\
             Status check results are ×\n"
        );
    }

    #[test]
    fn warnings_and_skips_do_not_fail_errors_do() {
        assert!(!report().success);
        let mut g = Group::new("g");
        g.push(Check::warning("w", "d".into(), "h"));
        g.push(Check::skipped("s", "why"));
        let ok = Report::new(vec![g]);
        assert!(ok.success);
        assert!(ok.text().ends_with("Status check results are √\n"));
    }

    #[test]
    fn json_carries_the_same_content() {
        let json: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(json["success"], false);
        assert_eq!(json["categories"][0]["categoryName"], "kubernetes-api");
        let failed = &json["categories"][1]["checks"][0];
        assert_eq!(failed["result"], "error");
        assert_eq!(failed["hint"], "kubectl -n weft-system describe pod");
        assert_eq!(json["categories"][1]["checks"][2]["result"], "skipped");
        assert!(json["categories"][0]["checks"][0].get("hint").is_none());
    }
}
