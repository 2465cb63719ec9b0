//! `scheduler_config.json` for sampling, and the choice of scheduler. A field the file lacks
//! takes the default of the class that is built, not of the class the file names, exactly as
//! `XScheduler.from_config(pipe.scheduler.config)` does in diffusers (it drops the values a
//! loaded config only has by default). So DDIM built from SD 1.5's PNDM file clips nothing
//! (the file says `clip_sample: false`), and Euler built from it spaces its timesteps
//! `linspace` (the file has no `timestep_spacing`; PNDM's own default would be `leading`).

use serde::Deserialize;

use super::{
    DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler, NoiseScheduleConfig, PNDMScheduler, Scheduler, SchedulerError,
    TimestepSpacing,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    Pndm,
    Ddim,
    Euler,
    EulerAncestral,
    DpmSolverMultistep,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 5] = [
        SchedulerKind::Pndm,
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
    ];

    /// Used when `_class_name` is missing or names a scheduler not implemented here: Euler
    /// needs no state, supports every prediction type and has no option (like DDIM's default
    /// `clip_sample: true`) that a foreign config would leave at a harmful default.
    pub const FALLBACK: SchedulerKind = SchedulerKind::Euler;

    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
        }
    }

    /// The `--scheduler` value.
    pub fn cli_name(self) -> &'static str {
        match self {
            SchedulerKind::Pndm => "pndm",
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler-ancestral",
            SchedulerKind::DpmSolverMultistep => "dpmpp-2m",
        }
    }

    pub fn from_class_name(name: &str) -> Option<SchedulerKind> {
        Self::ALL.into_iter().find(|k| k.class_name() == name)
    }

    pub fn from_cli_name(name: &str) -> Result<SchedulerKind, SchedulerError> {
        Self::ALL
            .into_iter()
            .find(|k| k.cli_name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.cli_name()).collect();
                SchedulerError(format!(
                    "unknown scheduler {name:?}; choose one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = SchedulerError;
    fn from_str(s: &str) -> Result<Self, SchedulerError> {
        SchedulerKind::from_cli_name(s)
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.cli_name())
    }
}

/// Every sampling-relevant field of any of the five classes; `None` where the file lacks it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// Betas and prediction type (every class shares these defaults).
    #[serde(flatten)]
    pub noise: NoiseScheduleConfig,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: Option<usize>,
    pub set_alpha_to_one: Option<bool>,
    pub skip_prk_steps: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub interpolation_type: Option<String>,
    pub timestep_type: Option<String>,
    pub final_sigmas_type: Option<String>,
    pub use_karras_sigmas: Option<bool>,
    /// Euler's bounds for Karras sigmas (default: the schedule's own).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
}

impl SchedulerConfig {
    /// Parses `scheduler_config.json`. Python's json writes `-Infinity` (DPM-Solver's
    /// `lambda_min_clipped` default), which is not JSON; such bare tokens read as null, i.e.
    /// the class default.
    pub fn from_json(text: &str) -> Result<SchedulerConfig, SchedulerError> {
        serde_json::from_str(&non_finite_to_null(text))
            .map_err(|e| SchedulerError(format!("scheduler_config.json: {e}")))
    }

    /// The kind `_class_name` names, or the fallback and a warning saying so.
    pub fn kind(&self) -> (SchedulerKind, Option<String>) {
        let name = self.class_name.as_deref();
        match name.and_then(SchedulerKind::from_class_name) {
            Some(kind) => (kind, None),
            None => (
                SchedulerKind::FALLBACK,
                Some(format!(
                    "scheduler class {} is not implemented; sampling with {} ({}) instead",
                    name.map_or("(none given)".to_string(), |n| format!("{n:?}")),
                    SchedulerKind::FALLBACK.class_name(),
                    SchedulerKind::FALLBACK.cli_name(),
                )),
            ),
        }
    }

    /// `timestep_spacing`, or the class default.
    pub(crate) fn spacing_or(&self, default: TimestepSpacing) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(default)
    }
}

/// Builds the scheduler `kind` (or the one the config names) from `config`. Returns the
/// scheduler (tables not yet set: call `set_timesteps`) and warnings for what the config asks
/// that is not implemented here and is ignored.
pub fn build_scheduler(
    config: &SchedulerConfig,
    kind: Option<SchedulerKind>,
) -> Result<(Box<dyn Scheduler>, Vec<String>), SchedulerError> {
    let mut warnings = Vec::new();
    let kind = match kind {
        Some(k) => k,
        None => {
            let (k, warning) = config.kind();
            warnings.extend(warning);
            k
        }
    };
    let scheduler: Box<dyn Scheduler> = match kind {
        SchedulerKind::Pndm => Box::new(PNDMScheduler::new(config, &mut warnings)?),
        SchedulerKind::Ddim => Box::new(DDIMScheduler::new(config, &mut warnings)?),
        SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(config, &mut warnings)?),
        SchedulerKind::EulerAncestral => {
            Box::new(EulerAncestralDiscreteScheduler::new(config, &mut warnings)?)
        }
        SchedulerKind::DpmSolverMultistep => {
            Box::new(DPMSolverMultistepScheduler::new(config, &mut warnings)?)
        }
    };
    Ok((scheduler, warnings))
}

/// Pushes a warning when an option is set to something other than what is implemented.
pub(crate) fn unsupported<T: PartialEq + std::fmt::Debug>(
    warnings: &mut Vec<String>,
    class: &str,
    field: &str,
    value: &Option<T>,
    implemented: T,
) {
    if let Some(v) = value {
        if *v != implemented {
            warnings.push(format!(
                "{class}: {field} = {v:?} is not implemented; using {implemented:?}"
            ));
        }
    }
}

/// Replaces the bare tokens `NaN`, `Infinity` and `-Infinity` outside strings by `null`.
fn non_finite_to_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_infinity_reads_as_default() {
        let c = SchedulerConfig::from_json(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
                "note": "-Infinity \"NaN\""}"#,
        )
        .unwrap();
        assert_eq!(c.lambda_min_clipped, None);
        assert_eq!(c.kind(), (SchedulerKind::DpmSolverMultistep, None));
    }

    #[test]
    fn unknown_class_falls_back_with_a_warning() {
        let c = SchedulerConfig::from_json(r#"{"_class_name": "LMSDiscreteScheduler"}"#).unwrap();
        let (kind, warning) = c.kind();
        assert_eq!(kind, SchedulerKind::FALLBACK);
        assert!(warning.unwrap().contains("LMSDiscreteScheduler"));
        let (s, warnings) = build_scheduler(&c, None).unwrap();
        assert_eq!(s.kind(), SchedulerKind::Euler);
        assert_eq!(warnings.len(), 1);
        let (s, warnings) = build_scheduler(&c, Some(SchedulerKind::Ddim)).unwrap();
        assert_eq!(s.kind(), SchedulerKind::Ddim);
        assert!(warnings.is_empty());
    }

    #[test]
    fn cli_names_round_trip() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.cli_name().parse::<SchedulerKind>().unwrap(), k);
            assert_eq!(SchedulerKind::from_class_name(k.class_name()), Some(k));
        }
        assert!("lms".parse::<SchedulerKind>().is_err());
    }
}
