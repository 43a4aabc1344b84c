//! Model artifacts: what `aya train` saves and `aya forecast --model` loads.
//!
//! An artifact is self-describing JSON: a format name and version (checked on
//! load, so an old binary refuses a newer file with a clear message instead
//! of misreading it), the training window, the seasonality, the candidates
//! and their validation scores, the chosen model per horizon band, the fitted
//! parameters (for people: loading refits the chosen models on the data
//! given, which is cheap and keeps the file small and portable), the interval
//! calibration, and the backtest scores measured at training time.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backtest::Score;
use crate::select::{FittedAuto, Selection};

/// Value of the `format` field.
pub const FORMAT: &str = "aya-forecaster-model";
/// Format version of a model without an event profile.
pub const FORMAT_VERSION: u32 = 1;
/// Format version of a model with an event profile (`selection.events` and
/// per-band `events`, [`crate::events`]); the newest this build reads. A
/// model without events is still written as version 1, so that older
/// builds keep reading it, while they refuse a model whose events they
/// would silently ignore.
pub const EVENTS_FORMAT_VERSION: u32 = 2;

/// The data a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingWindow {
    /// Series name (file stem and column/labels).
    pub series: String,
    /// First timestamp (RFC 3339).
    pub start: String,
    /// Last timestamp (RFC 3339).
    pub end: String,
    /// Number of points.
    pub points: usize,
    /// Grid interval in milliseconds.
    pub interval_ms: i64,
}

/// A saved model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`], or [`EVENTS_FORMAT_VERSION`] with an event profile.
    pub format_version: u32,
    /// Crate name and version that wrote it.
    pub created_by: String,
    /// Training window.
    pub training: TrainingWindow,
    /// Horizon (steps) the selection optimised for.
    pub horizon: usize,
    /// Human-readable choice, e.g. `1: theta | 2-12: theta+ets | 13-288: mstl_ets`.
    pub chosen: String,
    /// Selection: candidates, validation scores, chosen bands, interval calibration.
    pub selection: Selection,
    /// Fitted parameters of the chosen models (informative; loading refits).
    pub parameters: serde_json::Value,
    /// Rolling-origin backtest of the automatic method at training time, if the series allowed one.
    pub backtest: Option<Vec<Score>>,
}

/// Why an artifact could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid JSON for this format.
    #[error("{path}: line {line}, column {column}: not a valid model artifact: {message}")]
    Json {
        /// File.
        path: PathBuf,
        /// Line (1-based).
        line: usize,
        /// Column (1-based).
        column: usize,
        /// Parser message.
        message: String,
    },
    /// A JSON file that is not an Aya model.
    #[error("{path}: field `format` is {found:?}, expected {FORMAT:?} (not an aya model file)")]
    Format {
        /// File.
        path: PathBuf,
        /// What the file says.
        found: String,
    },
    /// A model written by a newer format.
    #[error(
        "{path}: field `format_version` is {found}; this build reads versions {FORMAT_VERSION} to {EVENTS_FORMAT_VERSION}"
    )]
    Version {
        /// File.
        path: PathBuf,
        /// Version in the file.
        found: u32,
    },
}

impl Artifact {
    /// An artifact of the current format for `model`, trained over
    /// `training` for `horizon` steps: the choice, the selection and the
    /// parameters come from the fitted model itself.
    pub fn new(
        created_by: String,
        training: TrainingWindow,
        horizon: usize,
        model: &FittedAuto,
        backtest: Option<Vec<Score>>,
    ) -> Artifact {
        Artifact {
            format: FORMAT.to_string(),
            format_version: if model.selection().events.is_some() {
                EVENTS_FORMAT_VERSION
            } else {
                FORMAT_VERSION
            },
            created_by,
            training,
            horizon,
            chosen: model.selection().describe(),
            selection: model.selection().clone(),
            parameters: model.params(),
            backtest,
        }
    }

    /// Write as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), ArtifactError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ArtifactError::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Read and check format and version.
    pub fn load(path: &Path) -> Result<Artifact, ArtifactError> {
        let text = std::fs::read_to_string(path).map_err(|source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Artifact::from_json(path, &text)
    }

    /// Parse from text (`path` names the source in errors).
    pub fn from_json(path: &Path, text: &str) -> Result<Artifact, ArtifactError> {
        let json_err = |e: serde_json::Error| ArtifactError::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        };
        // Check the header first so that a wrong file gets the right message.
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            format_version: Option<u32>,
        }
        let header: Header = serde_json::from_str(text).map_err(json_err)?;
        let format = header.format.unwrap_or_default();
        if format != FORMAT {
            return Err(ArtifactError::Format {
                path: path.to_path_buf(),
                found: format,
            });
        }
        match header.format_version {
            Some(v) if (FORMAT_VERSION..=EVENTS_FORMAT_VERSION).contains(&v) => {}
            Some(v) => {
                return Err(ArtifactError::Version {
                    path: path.to_path_buf(),
                    found: v,
                });
            }
            None => {
                return Err(ArtifactError::Json {
                    path: path.to_path_buf(),
                    line: 1,
                    column: 1,
                    message: "missing field `format_version`".into(),
                });
            }
        }
        serde_json::from_str(text).map_err(json_err)
    }
}
