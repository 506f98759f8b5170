//! Figures over `--runs` runs: every figure's value in each run, reported as median (min–max),
//! printed as rows of a summary and written as JSON with every run's value. `bench zk` and
//! `bench disclosure` report this way.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

/// Every figure's value in each run, by name: what the spread is computed from.
#[derive(Default)]
pub(crate) struct Runs(BTreeMap<String, Vec<f64>>);

/// One figure over the runs.
#[derive(Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
}

impl Stat {
    /// `median (min–max)`.
    pub(crate) fn show(self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

impl Runs {
    pub(crate) fn add(&mut self, name: impl Into<String>, value: f64) {
        self.0.entry(name.into()).or_default().push(value);
    }

    pub(crate) fn stat(&self, name: &str) -> Stat {
        let mut values: Vec<f64> = self
            .0
            .get(name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n == 0 {
            return Stat {
                min: f64::NAN,
                median: f64::NAN,
                max: f64::NAN,
            };
        }
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Stat {
            min: values[0],
            median,
            max: values[n - 1],
        }
    }

    pub(crate) fn json(&self) -> Value {
        self.0
            .iter()
            .map(|(name, values)| {
                let s = self.stat(name);
                let figure =
                    json!({ "median": s.median, "min": s.min, "max": s.max, "runs": values });
                (name.clone(), figure)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// `  label ........ median (min–max)`, for each `(label, figure, decimals)`.
    pub(crate) fn rows(&self, rows: &[(String, String, usize)]) {
        for (label, name, decimals) in rows {
            println!("  {label:<64} {}", self.stat(name).show(*decimals));
        }
    }

    /// A summary of `(label, figure, decimals)` rows, each label and figure name passed
    /// through `fill` first (placeholders such as `{rate}`): a row without a figure is a
    /// section's title, one whose figure has `{q}` shows its p50 and p99.
    pub(crate) fn summary<S: AsRef<str>>(
        &self,
        rows: &[(S, S, usize)],
        fill: impl Fn(&str) -> String,
    ) {
        for (label, name, decimals) in rows {
            let (label, name) = (fill(label.as_ref()), fill(name.as_ref()));
            if name.is_empty() {
                println!("{label}");
            } else if name.contains("{q}") {
                let [p50, p99] = ["p50", "p99"].map(|q| self.stat(&name.replace("{q}", q)));
                println!(
                    "  {label:<64} {}, p99 {}",
                    p50.show(*decimals),
                    p99.show(*decimals)
                );
            } else {
                println!("  {label:<64} {}", self.stat(&name).show(*decimals));
            }
        }
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The machine's load averages (1, 5, 15 minutes), for the JSON: what else ran beside.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
