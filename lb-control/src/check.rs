//! `lb check`: load and compile the configuration and objects as `lb
//! serve` would, and report every diagnostic with a verdict.

use std::fmt;
use std::path::Path;

use lb_compile::compile::Summary;
use lb_compile::diag::{self, Diagnostic};

use crate::config::Config;
use crate::pipeline::load_and_compile;
use crate::source::files::FileSource;

/// The outcome of `lb check`.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Set when the configuration file itself is unusable.
    pub config_error: Option<String>,
    /// Counts, when the configuration loaded.
    pub summary: Option<Summary>,
    /// Every diagnostic.
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckReport {
    /// 0 when clean (warnings allowed), 1 when any object is invalid, 2 when
    /// the configuration file is unusable.
    pub fn exit_code(&self) -> u8 {
        if self.config_error.is_some() {
            2
        } else if self.diagnostics.iter().any(Diagnostic::is_error) {
            1
        } else {
            0
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.config_error {
            return writeln!(f, "error: {e}\nlb check: configuration unusable");
        }
        if let Some(s) = &self.summary {
            write!(f, "{s}")?;
        }
        if !self.diagnostics.is_empty() {
            writeln!(f, "diagnostics:")?;
        }
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        let (errors, warnings) = diag::count(&self.diagnostics);
        let verdict = if errors == 0 { "ok" } else { "invalid objects" };
        writeln!(
            f,
            "lb check: {verdict} ({errors} errors, {warnings} warnings)"
        )
    }
}

/// Runs `lb check` for the configuration file at `config_path`.
pub fn check(config_path: &Path) -> CheckReport {
    let cfg = match Config::load(config_path) {
        Ok(cfg) => cfg,
        Err(e) => {
            return CheckReport {
                config_error: Some(e.to_string()),
                summary: None,
                diagnostics: Vec::new(),
            };
        }
    };
    let mut source = FileSource::new(cfg.sources.files.clone());
    let compiled = load_and_compile(&cfg, &mut source);
    CheckReport {
        config_error: None,
        summary: Some(compiled.summary),
        diagnostics: compiled.diagnostics,
    }
}
