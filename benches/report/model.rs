//! What the report is made of: a table's rows and their roles, one
//! measurement, and the verdict drawn from a table.

use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// The physical limit the table is held against.
    Limit,
    /// shmkit's row.
    Shmkit,
    /// What a Rust user would pick instead.
    Rust,
    /// Python's multiprocessing.
    Python,
    /// Shown for context, not compared (e.g. a second limit).
    Context,
}

/// One line of a table: a criterion or Python benchmark id, how the table
/// names it, and what it is there for.
pub struct Row {
    pub id: String,
    pub label: String,
    pub role: Role,
}

/// One use (a table in BENCHMARKS.md, a pair of bars in the chart).
pub struct Table {
    pub title: String,
    pub what: &'static str,
    pub rows: Vec<Row>,
    /// Why shmkit is slower than the best alternative, if it is.
    pub why_loses: &'static str,
}

/// One benchmark's result from this run.
#[derive(Clone, Copy)]
pub struct Measured {
    /// Mean time per iteration, ns.
    pub ns: f64,
    /// Elements per iteration (0 if bytes).
    pub elements: f64,
    /// Bytes per iteration (0 if elements).
    pub bytes: f64,
}

/// Every measurement of this run, by benchmark id.
pub type Measurements = BTreeMap<String, Measured>;

impl Measured {
    /// Elements or bytes per ns: what every ratio compares.
    pub fn speed(&self) -> f64 {
        let units = if self.bytes > 0.0 {
            self.bytes
        } else {
            self.elements.max(1.0)
        };
        units / self.ns
    }
}

/// A [`Row`], from anything string-like.
pub fn row(id: impl Into<String>, label: impl Into<String>, role: Role) -> Row {
    Row {
        id: id.into(),
        label: label.into(),
        role,
    }
}

/// What one table says about shmkit: its speed over the limit's, and over
/// the fastest Rust alternative's and Python's (with that row's label).
pub struct Verdict {
    pub title: String,
    pub vs_limit: Option<f64>,
    pub best_alt: Option<(String, f64)>,
    pub vs_python: Option<(String, f64)>,
}

/// Below this ratio shmkit loses; up to its inverse it is a tie (this VM's
/// run-to-run noise is larger than 5%).
pub const TIE: f64 = 0.95;

impl Verdict {
    /// Slower than the fastest Rust alternative or than Python, beyond a tie.
    pub fn loses(&self) -> bool {
        [&self.best_alt, &self.vs_python]
            .into_iter()
            .flatten()
            .any(|(_, r)| *r < TIE)
    }
}
