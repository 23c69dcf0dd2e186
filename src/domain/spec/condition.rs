//! Success conditions as people write them: `< 0.01`, `>= 0.99`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a measured value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// value < threshold
    #[serde(rename = "<")]
    Less,
    /// value <= threshold
    #[serde(rename = "<=")]
    LessOrEqual,
    /// value > threshold
    #[serde(rename = ">")]
    Greater,
    /// value >= threshold
    #[serde(rename = ">=")]
    GreaterOrEqual,
}

impl Comparison {
    /// Whether smaller values are healthier (error rates, latencies).
    pub fn lower_is_better(self) -> bool {
        matches!(self, Comparison::Less | Comparison::LessOrEqual)
    }

    fn symbol(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
        }
    }
}

/// A parsed success condition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The comparison.
    pub op: Comparison,
    /// The threshold it compares against.
    pub threshold: f64,
}

impl Condition {
    /// Parses `< 0.01` and friends.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let s = text.trim();
        let (op, rest) = if let Some(r) = s.strip_prefix("<=") {
            (Comparison::LessOrEqual, r)
        } else if let Some(r) = s.strip_prefix(">=") {
            (Comparison::GreaterOrEqual, r)
        } else if let Some(r) = s.strip_prefix('<') {
            (Comparison::Less, r)
        } else if let Some(r) = s.strip_prefix('>') {
            (Comparison::Greater, r)
        } else {
            return Err(format!("'{text}' is not a condition; write a comparison and a number, e.g. '< 0.01' or '>= 0.99'"));
        };
        let threshold: f64 = rest.trim().parse().map_err(|_| format!("'{text}': '{}' is not a number", rest.trim()))?;
        if !threshold.is_finite() {
            return Err(format!("'{text}': the threshold must be a finite number"));
        }
        Ok(Condition { op, threshold })
    }

    /// Whether a value meets the condition.
    pub fn holds(&self, value: f64) -> bool {
        match self.op {
            Comparison::Less => value < self.threshold,
            Comparison::LessOrEqual => value <= self.threshold,
            Comparison::Greater => value > self.threshold,
            Comparison::GreaterOrEqual => value >= self.threshold,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_evaluates() {
        let c = Condition::parse("< 0.01").expect("valid");
        assert!(c.holds(0.0099));
        assert!(!c.holds(0.01));
        let c = Condition::parse(">=0.99").expect("valid");
        assert!(c.holds(0.99));
        assert!(!c.holds(0.98));
        assert!(!c.op.lower_is_better());
        assert_eq!(Condition::parse("<= 250").expect("valid").to_string(), "<= 250");
    }

    #[test]
    fn rejects_nonsense() {
        assert!(Condition::parse("0.01").expect_err("an error").contains("not a condition"));
        assert!(Condition::parse("< abc").expect_err("an error").contains("not a number"));
        assert!(Condition::parse("< inf").is_err());
        assert!(Condition::parse("== 3").is_err());
    }
}
