//! History from a Prometheus server's HTTP API (`GET /api/v1/query_range`).
//!
//! A PromQL expression is evaluated over `[start, end]` every `step`; the
//! answer is a matrix, one series per label set. Prometheus refuses a request
//! of more than 11,000 points per series, so the range is split into requests
//! of at most [`MAX_POINTS_PER_REQUEST`] steps, aligned on the same grid
//! (`start + k * step`), and the pieces are joined per label set.
//!
//! What can go wrong is a [`PrometheusError`] naming the request (endpoint and
//! the piece of the range) and, for data problems, the series and timestamp:
//! an unreachable server, an HTTP error, `"status":"error"` (its `errorType`
//! and `error` are shown), a body that is not the documented JSON, several
//! series when one is wanted (their label sets are listed; pick one with
//! label filters), and non-finite values (`"NaN"`, `"+Inf"`, `"-Inf"`: an
//! error, or dropped as gaps with [`NonFinite::Skip`]). Steps at which the
//! expression has no value are simply absent from the answer: they are gaps,
//! reported in the series' [`QualityReport`](super::QualityReport) and filled
//! by the same resampling as CSV gaps.
//!
//! `http://` and `https://` (rustls; the server verified against
//! [`Access::ca_file`] or the Mozilla roots), with an optional bearer token
//! read from a file ([`Access::bearer_token_file`]) — what Prometheus' own
//! `web.config.file` or a reverse proxy in front of it asks for.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use super::error::DataError;
use super::resample::resample_with;
use super::timestamp::format_rfc3339;
use super::{Aggregate, LoadOptions, Series};

/// Prometheus's own limit of points per series in one range query.
pub const MAX_POINTS_PER_REQUEST: usize = 11_000;

/// The most points one history read fetches (all requests together), so a
/// typo in `--step` cannot start millions of requests.
pub const MAX_TOTAL_POINTS: u64 = 10_000_000;

/// The largest response body accepted from one request.
pub const MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// The API path appended to the server's base URL.
pub const QUERY_RANGE_PATH: &str = "/api/v1/query_range";

/// How many series an error message lists.
const MAX_LISTED: usize = 20;

/// A range query against one Prometheus server.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeQuery {
    /// Base URL of the server, e.g. `http://127.0.0.1:9090` (a path prefix such
    /// as `http://host/prometheus` is kept).
    pub url: String,
    /// The PromQL expression.
    pub query: String,
    /// First evaluation time, unix milliseconds.
    pub start_ms: i64,
    /// Last evaluation time (inclusive), unix milliseconds.
    pub end_ms: i64,
    /// Evaluation step, milliseconds.
    pub step_ms: i64,
    /// Points per request at most (Prometheus refuses more than 11,000).
    pub max_points_per_request: usize,
    /// Timeout of each request, connection included.
    pub timeout: Duration,
    /// TLS trust and credentials (https and bearer token); default: none.
    pub access: Access,
}

/// How to reach a Prometheus that sits behind TLS or authentication (as
/// Prometheus' own `web.config.file` or a reverse proxy puts it). Secrets
/// are read from files when the query runs, never held in this value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// PEM file of the CA certificate(s) that sign the server's certificate
    /// (for `https://`; default: the Mozilla root set).
    pub ca_file: Option<std::path::PathBuf>,
    /// File holding a bearer token sent as `Authorization: Bearer …`
    /// (surrounding whitespace trimmed).
    pub bearer_token_file: Option<std::path::PathBuf>,
    /// File holding `user:password` for HTTP basic authentication (what
    /// Prometheus' own `basic_auth_users` checks).
    pub basic_auth_file: Option<std::path::PathBuf>,
}

impl RangeQuery {
    /// A query with the default request size ([`MAX_POINTS_PER_REQUEST`]) and a
    /// 60-second timeout per request.
    pub fn new(
        url: impl Into<String>,
        query: impl Into<String>,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> RangeQuery {
        RangeQuery {
            url: url.into(),
            query: query.into(),
            start_ms,
            end_ms,
            step_ms,
            max_points_per_request: MAX_POINTS_PER_REQUEST,
            timeout: Duration::from_secs(60),
            access: Access::default(),
        }
    }

    /// The query endpoint: the base URL (checked: `http://` or `https://`)
    /// plus [`QUERY_RANGE_PATH`].
    pub fn endpoint(&self) -> Result<String, PrometheusError> {
        let url = self.url.trim();
        let bad = |message: &str| PrometheusError::BadUrl {
            url: self.url.clone(),
            message: message.to_string(),
        };
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if let Some(rest) = url.strip_prefix("https://") {
            rest
        } else {
            return Err(bad(
                "expected an http:// or https:// URL such as http://127.0.0.1:9090",
            ));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("the URL has no host"));
        }
        if url.contains('?') || url.contains('#') {
            return Err(bad(
                "give the server's base URL, without a query string or fragment",
            ));
        }
        Ok(format!("{}{QUERY_RANGE_PATH}", url.trim_end_matches('/')))
    }

    /// The `[start, end]` pieces (unix ms, inclusive) of at most
    /// `max_points_per_request` points each, on the grid `start + k * step`.
    /// The last piece ends at the last grid point not after `end`.
    pub fn chunks(&self) -> Result<Vec<(i64, i64)>, PrometheusError> {
        chunk_range(
            self.start_ms,
            self.end_ms,
            self.step_ms,
            self.max_points_per_request,
        )
    }
}

/// Split `[start_ms, end_ms]` at `step_ms` into pieces of at most `max_points`
/// points each (see [`RangeQuery::chunks`]).
pub fn chunk_range(
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    max_points: usize,
) -> Result<Vec<(i64, i64)>, PrometheusError> {
    if step_ms <= 0 {
        return Err(PrometheusError::BadRange(format!(
            "the step must be positive, got {step_ms} ms"
        )));
    }
    if max_points == 0 {
        return Err(PrometheusError::BadRange(
            "at least one point per request is needed".to_string(),
        ));
    }
    if end_ms < start_ms {
        return Err(PrometheusError::BadRange(format!(
            "the end ({}) is before the start ({})",
            format_rfc3339(end_ms),
            format_rfc3339(start_ms)
        )));
    }
    let steps = (end_ms as i128 - start_ms as i128) / step_ms as i128;
    let points = steps as u64 + 1;
    if points > MAX_TOTAL_POINTS {
        return Err(PrometheusError::BadRange(format!(
            "{} to {} every {} ms is {points} points (limit {MAX_TOTAL_POINTS}); \
             use a larger step or a shorter range",
            format_rfc3339(start_ms),
            format_rfc3339(end_ms),
            step_ms
        )));
    }
    let last = start_ms + steps as i64 * step_ms;
    let span = (max_points as i64 - 1) * step_ms;
    let mut out = Vec::new();
    let mut from = start_ms;
    while from <= last {
        let to = from.saturating_add(span).min(last);
        out.push((from, to));
        from = to + step_ms;
    }
    Ok(out)
}

/// One series of a range-query answer: its labels and `(unix ms, value)`
/// points, ascending. Values are as Prometheus sent them (NaN and infinities
/// included).
#[derive(Debug, Clone, PartialEq)]
pub struct PromSeries {
    /// The label set (`__name__` included when the expression keeps it).
    pub labels: BTreeMap<String, String>,
    /// Points, ascending by time.
    pub points: Vec<(i64, f64)>,
}

impl PromSeries {
    /// The label set as PromQL writes it: `name{k="v",...}` (`{}` when empty).
    pub fn label_text(&self) -> String {
        let name = self.labels.get("__name__").cloned().unwrap_or_default();
        let rest: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        if rest.is_empty() && !name.is_empty() {
            name
        } else {
            format!("{name}{{{}}}", rest.join(","))
        }
    }

    fn matches(&self, want: &[(String, String)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|x| x == v))
    }
}

/// What to do with `NaN`, `+Inf` and `-Inf` values (Prometheus sends them,
/// e.g. for `0/0` or a ratio whose denominator is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinite {
    /// Fail, naming the series, the first such point and how many there are. Default.
    #[default]
    Reject,
    /// Drop them: they become gaps, filled like any other gap.
    Skip,
}

/// Errors of the Prometheus history reader. Each names the request (endpoint
/// and the piece of the range) or the option at fault.
#[derive(Debug, Error)]
pub enum PrometheusError {
    /// The server URL cannot be used.
    #[error("--prometheus {url:?}: {message}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The range or step cannot be used (a usage error).
    #[error("{0}")]
    BadRange(String),
    /// The server could not be reached or the connection failed.
    // The causes below are in the message, not `source()`: a chain printer
    // (anyhow's `{:#}`) would show them twice.
    #[error("{at}: cannot read from Prometheus: {error}")]
    Transport {
        /// The request.
        at: String,
        /// The HTTP client's error.
        error: Box<ureq::Error>,
    },
    /// A non-2xx answer that is not the API's JSON error document.
    #[error("{at}: HTTP {status} from Prometheus: {body}")]
    Http {
        /// The request.
        at: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The API answered `"status":"error"`.
    #[error("{at}: Prometheus refused the query (HTTP {status}, {error_type}): {error}")]
    Api {
        /// The request.
        at: String,
        /// The HTTP status.
        status: u16,
        /// `errorType`, e.g. `bad_data`, `execution`, `timeout`.
        error_type: String,
        /// `error`, Prometheus's message.
        error: String,
    },
    /// The body is not the documented `query_range` JSON.
    #[error("{at}: not a Prometheus query_range answer: {message}")]
    Malformed {
        /// The request.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The CA file or the token file cannot be used.
    #[error("{path}: {message}")]
    Access {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The query matched nothing in the whole range.
    #[error("{at}: the query {query:?} returned no series between {start} and {end}")]
    NoSeries {
        /// The endpoint.
        at: String,
        /// The query.
        query: String,
        /// Range start (RFC 3339).
        start: String,
        /// Range end (RFC 3339).
        end: String,
    },
    /// Several series and no label filter (or filters that keep several).
    #[error(
        "{at}: the query returned {} series; choose one with --series-label LABEL=VALUE \
         (or aggregate in PromQL, e.g. sum(...)): {}",
        series.len(),
        list(series)
    )]
    AmbiguousSeries {
        /// The endpoint.
        at: String,
        /// The label sets of the series left.
        series: Vec<String>,
    },
    /// The label filters match no series.
    #[error("{at}: no series has {selector}; the series are: {}", list(series))]
    NoMatch {
        /// The endpoint.
        at: String,
        /// The filters, `k=v,...`.
        selector: String,
        /// The label sets of every series returned.
        series: Vec<String>,
    },
    /// The series holds NaN or infinite values (and they are not skipped).
    #[error(
        "{at}: series {series} has {count} non-finite value(s), the first {value} at {time}; \
         drop them as gaps with --skip-non-finite, or filter them out in PromQL"
    )]
    NonFinite {
        /// The endpoint.
        at: String,
        /// The series' label set.
        series: String,
        /// How many such values.
        count: usize,
        /// The first one, as sent (`NaN`, `+Inf`, `-Inf`).
        value: String,
        /// Its time (RFC 3339).
        time: String,
    },
    /// A negative value in a series where negatives are not accepted.
    #[error(
        "{at}: series {series} has {count} negative value(s), the first {value} at {time}; \
         pass --allow-negative for signed data"
    )]
    Negative {
        /// The endpoint.
        at: String,
        /// The series' label set.
        series: String,
        /// How many.
        count: usize,
        /// The first one.
        value: f64,
        /// Its time (RFC 3339).
        time: String,
    },
    /// The points cannot be made into a series (e.g. fewer than two).
    #[error("{at}: series {series}: {error}")]
    Data {
        /// The endpoint.
        at: String,
        /// The series' label set.
        series: String,
        /// The data layer's error.
        error: Box<DataError>,
    },
}

impl PrometheusError {
    /// True for errors caused by option values (exit code 2): a bad URL, range
    /// or step, and queries Prometheus rejects as `bad_data` (PromQL syntax).
    pub fn is_usage(&self) -> bool {
        match self {
            PrometheusError::BadUrl { .. }
            | PrometheusError::BadRange(_)
            | PrometheusError::Access { .. } => true,
            PrometheusError::Api { error_type, .. } => error_type == "bad_data",
            PrometheusError::Data { error, .. } => error.is_usage(),
            _ => false,
        }
    }

    /// True when the server could not be read (exit code 1): connection
    /// failures, timeouts, HTTP errors and server-side query failures.
    pub fn is_io(&self) -> bool {
        match self {
            PrometheusError::Transport { .. } | PrometheusError::Http { .. } => true,
            PrometheusError::Api { error_type, .. } => error_type != "bad_data",
            _ => false,
        }
    }
}

fn list(series: &[String]) -> String {
    let mut s = series
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if series.len() > MAX_LISTED {
        s.push_str(&format!(", ... ({} more)", series.len() - MAX_LISTED));
    }
    s
}

// === JSON of the API ===

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<MatrixData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct MatrixData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct MatrixItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default)]
    histograms: Option<serde_json::Value>,
}

/// One answer, parsed: the series and the API's warnings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    /// The series, in the order of the answer.
    pub series: Vec<PromSeries>,
    /// `warnings` of the answer (e.g. partial data from a remote store).
    pub warnings: Vec<String>,
}

/// Parse one `query_range` answer given its HTTP status. `at` names the
/// request in errors. A `"status":"error"` document becomes
/// [`PrometheusError::Api`] whatever the status; another non-2xx answer
/// becomes [`PrometheusError::Http`].
pub fn parse_response(status: u16, body: &str, at: &str) -> Result<Matrix, PrometheusError> {
    let malformed = |message: String| PrometheusError::Malformed {
        at: at.to_string(),
        message,
    };
    let env: Envelope = match serde_json::from_str(body) {
        Ok(env) => env,
        Err(_) if !(200..300).contains(&status) => {
            return Err(PrometheusError::Http {
                at: at.to_string(),
                status,
                body: shorten(body),
            });
        }
        Err(e) => return Err(malformed(format!("{e} (body starts: {})", shorten(body)))),
    };
    match env.status.as_str() {
        "success" => {}
        "error" => {
            return Err(PrometheusError::Api {
                at: at.to_string(),
                status,
                error_type: env.error_type.unwrap_or_else(|| "unknown".into()),
                error: env.error.unwrap_or_default(),
            });
        }
        other => return Err(malformed(format!("\"status\" is {other:?}"))),
    }
    if !(200..300).contains(&status) {
        return Err(PrometheusError::Http {
            at: at.to_string(),
            status,
            body: shorten(body),
        });
    }
    let data = env
        .data
        .ok_or_else(|| malformed("no \"data\" in a success answer".to_string()))?;
    if data.result_type != "matrix" {
        return Err(malformed(format!(
            "\"resultType\" is {:?}, expected \"matrix\" (a range query of an instant vector)",
            data.result_type
        )));
    }
    let items: Vec<MatrixItem> = serde_json::from_value(data.result).map_err(|e| {
        malformed(format!(
            "\"result\" is not a list of {{\"metric\":{{...}},\"values\":[[t,\"v\"],...]}}: {e}"
        ))
    })?;
    let mut series = Vec::with_capacity(items.len());
    for item in items {
        let mut s = PromSeries {
            labels: item.metric,
            points: Vec::with_capacity(item.values.len()),
        };
        if item.values.is_empty() && item.histograms.is_some() {
            return Err(malformed(format!(
                "series {} holds native histograms, not numbers; query a number, \
                 e.g. histogram_quantile(0.9, ...) or histogram_count(...)",
                s.label_text()
            )));
        }
        for (t, v) in item.values {
            if !t.is_finite() {
                return Err(malformed(format!(
                    "series {}: timestamp {t} is not a number",
                    s.label_text()
                )));
            }
            let ms = (t * 1000.0).round() as i64;
            let value = v.trim().parse::<f64>().map_err(|_| {
                malformed(format!(
                    "series {}: value {v:?} at {} is not a number",
                    s.label_text(),
                    format_rfc3339(ms)
                ))
            })?;
            s.points.push((ms, value));
        }
        series.push(s);
    }
    Ok(Matrix {
        series,
        warnings: env.warnings,
    })
}

fn shorten(body: &str) -> String {
    let body = body.trim();
    if body.chars().count() > 200 {
        format!("{}...", body.chars().take(200).collect::<String>())
    } else {
        body.to_string()
    }
}

/// Join the answers of consecutive pieces of one range: points of the same
/// label set are concatenated; series keep the order of first appearance.
pub fn merge(pieces: Vec<Vec<PromSeries>>) -> Vec<PromSeries> {
    let mut out: Vec<PromSeries> = Vec::new();
    let mut index: BTreeMap<BTreeMap<String, String>, usize> = BTreeMap::new();
    for piece in pieces {
        for s in piece {
            match index.get(&s.labels) {
                Some(&i) => out[i].points.extend(s.points),
                None => {
                    index.insert(s.labels.clone(), out.len());
                    out.push(s);
                }
            }
        }
    }
    for s in &mut out {
        // Pieces are disjoint and ascending; sorting is a no-op safeguard
        // against a server that answers out of order.
        s.points.sort_by_key(|p| p.0);
        s.points.dedup_by_key(|p| p.0);
    }
    out
}

/// Run the query over the whole range, one request per piece of at most
/// `max_points_per_request` points, and join the answers per label set.
/// API warnings are logged.
pub fn query_range(q: &RangeQuery) -> Result<Vec<PromSeries>, PrometheusError> {
    let endpoint = q.endpoint()?;
    let chunks = q.chunks()?;
    let agent = agent(q)?;
    let authorization = authorization(&q.access)?;
    let step = secs(q.step_ms);
    let mut pieces = Vec::with_capacity(chunks.len());
    for (from, to) in chunks {
        let at = format!(
            "{endpoint} (start {}, end {})",
            format_rfc3339(from),
            format_rfc3339(to)
        );
        let transport = |error: ureq::Error| PrometheusError::Transport {
            at: at.clone(),
            error: Box::new(error),
        };
        let mut req = agent.get(&endpoint);
        if let Some(a) = &authorization {
            req = req.header("Authorization", a);
        }
        let mut resp = req
            .query("query", &q.query)
            .query("start", secs(from))
            .query("end", secs(to))
            .query("step", &step)
            .call()
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let body = match resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_string()
        {
            Ok(body) => body,
            Err(ureq::Error::BodyExceedsLimit(limit)) => {
                return Err(PrometheusError::Malformed {
                    at,
                    message: format!(
                        "the answer is larger than {limit} bytes; select fewer series in PromQL"
                    ),
                });
            }
            Err(e) => return Err(transport(e)),
        };
        let matrix = parse_response(status, &body, &at)?;
        for w in &matrix.warnings {
            tracing::warn!(request = %at, warning = %w, "Prometheus warning");
        }
        pieces.push(matrix.series);
    }
    Ok(merge(pieces))
}

/// The HTTP agent of `q`: its timeout, statuses as answers, and for
/// `https://` the CA of [`Access::ca_file`] (else the Mozilla roots).
fn agent(q: &RangeQuery) -> Result<ureq::Agent, PrometheusError> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if let Some(path) = &q.access.ca_file {
        let err = |message: String| PrometheusError::Access {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| err(format!("cannot read the CA file: {e}")))?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(err("holds no PEM certificate".into()));
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(q.timeout))
        .http_status_as_error(false)
        .tls_config(tls.build())
        .build()
        .into())
}

/// The `Authorization` header value of [`Access::bearer_token_file`] or
/// [`Access::basic_auth_file`] (not both).
fn authorization(access: &Access) -> Result<Option<String>, PrometheusError> {
    let read = |path: &Path, what: &str| -> Result<String, PrometheusError> {
        let err = |message: String| PrometheusError::Access {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read the {what} file: {e}")))?;
        let value = text.trim();
        if value.is_empty() {
            return Err(err(format!("the {what} file is empty")));
        }
        if value.chars().any(|c| c.is_control() || c == ' ') {
            return Err(err(format!(
                "the {what} holds spaces or control characters (one per file)"
            )));
        }
        Ok(value.to_string())
    };
    match (&access.bearer_token_file, &access.basic_auth_file) {
        (Some(t), Some(_)) => Err(PrometheusError::Access {
            path: t.display().to_string(),
            message: "give a bearer token or basic auth, not both".into(),
        }),
        (Some(t), None) => Ok(Some(format!("Bearer {}", read(t, "bearer token")?))),
        (None, Some(b)) => {
            let pair = read(b, "basic auth")?;
            if !pair.contains(':') {
                return Err(PrometheusError::Access {
                    path: b.display().to_string(),
                    message: "expected `user:password`".into(),
                });
            }
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            Ok(Some(format!("Basic {encoded}")))
        }
        (None, None) => Ok(None),
    }
}

/// Unix milliseconds as the API's seconds (`1700000000`, `1700000000.5`).
fn secs(ms: i64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", ms as f64 / 1000.0)
    }
}

/// Pick the one series that has every `want` label (`(name, value)`); with no
/// filter the answer must hold exactly one series.
pub fn select_series(
    series: Vec<PromSeries>,
    want: &[(String, String)],
    at: &str,
) -> Result<PromSeries, PrometheusError> {
    let all: Vec<String> = series.iter().map(PromSeries::label_text).collect();
    let mut left: Vec<PromSeries> = series.into_iter().filter(|s| s.matches(want)).collect();
    match left.len() {
        1 => Ok(left.remove(0)),
        0 => Err(PrometheusError::NoMatch {
            at: at.to_string(),
            selector: want
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            series: all,
        }),
        _ => Err(PrometheusError::AmbiguousSeries {
            at: at.to_string(),
            series: left.iter().map(PromSeries::label_text).collect(),
        }),
    }
}

/// Turn one Prometheus series into a [`Series`] on the query's grid: non-finite
/// values rejected or dropped, negatives rejected unless
/// `opts.allow_negative`, then the data layer's cleaning. Gaps (steps without
/// a value) are counted in the report and filled by linear interpolation on
/// the query's grid; the interval is the step unless `opts.resample_ms` asks
/// for another.
pub fn to_series(
    s: PromSeries,
    step_ms: i64,
    non_finite: NonFinite,
    opts: &LoadOptions,
    at: &str,
) -> Result<Series, PrometheusError> {
    let name = s.label_text();
    let bad: Vec<&(i64, f64)> = s.points.iter().filter(|p| !p.1.is_finite()).collect();
    if let (NonFinite::Reject, Some(first)) = (non_finite, bad.first()) {
        return Err(PrometheusError::NonFinite {
            at: at.to_string(),
            series: name,
            count: bad.len(),
            value: prom_value(first.1),
            time: format_rfc3339(first.0),
        });
    }
    let points: Vec<(i64, f64)> = s.points.into_iter().filter(|p| p.1.is_finite()).collect();
    if !opts.allow_negative {
        let neg: Vec<&(i64, f64)> = points.iter().filter(|p| p.1 < 0.0).collect();
        if let Some(first) = neg.first() {
            return Err(PrometheusError::Negative {
                at: at.to_string(),
                series: name,
                count: neg.len(),
                value: first.1,
                time: format_rfc3339(first.0),
            });
        }
    }
    let data = |error: DataError| PrometheusError::Data {
        at: at.to_string(),
        series: name.clone(),
        error: Box::new(error),
    };
    let (timestamps, values) = points.into_iter().unzip();
    let parts_opts = LoadOptions {
        resample_ms: None,
        ..opts.clone()
    };
    let mut series =
        Series::from_parts_with(name.clone(), timestamps, values, &parts_opts).map_err(data)?;
    // Every point sits on the grid `start + k * step`: fill the gaps on that
    // grid (the data layer's resampling, whose buckets are aligned on the
    // epoch, runs on timestamps shifted by the grid's offset).
    let target = opts.resample_ms.unwrap_or(step_ms);
    let on_grid = series.timestamps.windows(2).all(|w| w[1] - w[0] == target);
    if !on_grid || opts.resample_ms.is_some() {
        let aggregate = if opts.resample_ms.is_some() {
            opts.aggregate
        } else {
            Aggregate::Mean
        };
        let offset = series
            .timestamps
            .first()
            .map_or(0, |t| t.rem_euclid(target));
        series.timestamps.iter_mut().for_each(|t| *t -= offset);
        series = resample_with(Path::new(&name), series, target, aggregate).map_err(data)?;
        series.timestamps.iter_mut().for_each(|t| *t += offset);
    }
    Ok(series)
}

/// How Prometheus writes a non-finite value.
fn prom_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// Read one series of history: [`query_range`], [`select_series`] with the
/// label filters `want`, then [`to_series`].
pub fn load_prometheus(
    q: &RangeQuery,
    want: &[(String, String)],
    non_finite: NonFinite,
    opts: &LoadOptions,
) -> Result<Series, PrometheusError> {
    let at = q.endpoint()?;
    let series = query_range(q)?;
    if series.is_empty() {
        return Err(PrometheusError::NoSeries {
            at,
            query: q.query.clone(),
            start: format_rfc3339(q.start_ms),
            end: format_rfc3339(q.end_ms),
        });
    }
    let one = select_series(series, want, &at)?;
    to_series(one, q.step_ms, non_finite, opts, &at)
}

/// Parse a step or duration: a number of seconds (`60`, `0.5`) or Prometheus
/// duration units (`90s`, `5m`, `1h30m`, `1d`, `250ms`). Milliseconds out.
pub fn parse_duration_ms(text: &str) -> Result<i64, PrometheusError> {
    let t = text.trim();
    let bad = || {
        PrometheusError::BadRange(format!(
            "{text:?} is not a duration: expected seconds (e.g. 60) or units ms, s, m, h, d, w, y (e.g. 60s, 5m, 1h30m)"
        ))
    };
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        let ms = (secs * 1000.0).round();
        return if secs.is_finite() && (1.0..9e15).contains(&ms) {
            Ok(ms as i64)
        } else {
            Err(bad())
        };
    }
    let mut total: i64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &str = "http://p:9090/api/v1/query_range (test)";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn chunks_hold_at_most_the_limit_and_stay_on_the_grid() {
        // 3 days at 60 s: 4,321 points in requests of 1,000.
        let start = 1_700_000_000_000;
        let end = start + 3 * 86_400_000;
        let c = chunk_range(start, end, 60_000, 1000).unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(c[0], (start, start + 999 * 60_000));
        let mut expected = start;
        let mut total = 0;
        for &(a, b) in &c {
            assert_eq!(a, expected, "pieces are contiguous on the grid");
            let n = (b - a) / 60_000 + 1;
            assert!(n <= 1000 && (b - a) % 60_000 == 0);
            total += n;
            expected = b + 60_000;
        }
        assert_eq!(total, 4321);
        assert_eq!(c.last().unwrap().1, end);
        // The default limit is Prometheus's: 11,000 points a request.
        let q = RangeQuery::new("http://p", "up", start, start + 20_000 * 60_000, 60_000);
        let c = q.chunks().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].1 - c[0].0) / 60_000 + 1, 11_000);
        // An end off the grid: the last piece ends at the last grid point.
        let c = chunk_range(0, 150_000, 60_000, 11_000).unwrap();
        assert_eq!(c, vec![(0, 120_000)]);
        // One point.
        assert_eq!(chunk_range(5, 5, 1000, 1).unwrap(), vec![(5, 5)]);
    }

    #[test]
    fn bad_ranges_are_usage_errors() {
        for e in [
            chunk_range(10, 0, 1000, 10).unwrap_err(),
            chunk_range(0, 10, 0, 10).unwrap_err(),
            chunk_range(0, 10, 1000, 0).unwrap_err(),
            chunk_range(0, 365 * 86_400_000, 1, 11_000).unwrap_err(),
        ] {
            assert!(e.is_usage(), "{e}");
        }
        let e = chunk_range(10_000, 0, 1000, 10).unwrap_err().to_string();
        assert!(e.contains("before the start"), "{e}");
    }

    #[test]
    fn urls_are_checked() {
        let q = |u: &str| RangeQuery::new(u, "up", 0, 1, 1).endpoint();
        assert_eq!(
            q("http://127.0.0.1:9090/").unwrap(),
            "http://127.0.0.1:9090/api/v1/query_range"
        );
        assert_eq!(
            q("http://h/prometheus").unwrap(),
            "http://h/prometheus/api/v1/query_range"
        );
        assert_eq!(
            q("https://h:9090").unwrap(),
            "https://h:9090/api/v1/query_range"
        );
        let ftp = q("ftp://h").unwrap_err();
        assert!(ftp.to_string().contains("https://"), "{ftp}");
        for bad in ["127.0.0.1:9090", "http://", "http://h/?x=1", "ftp://h"] {
            assert!(q(bad).unwrap_err().is_usage(), "{bad}");
        }
    }

    #[test]
    fn a_matrix_parses_with_labels_timestamps_and_special_values() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"rps","job":"web","instance":"a"},
             "values":[[1700000000,"1.5"],[1700000060.5,"NaN"],[1700000120,"+Inf"],[1700000180,"-Inf"]]},
            {"metric":{"job":"web"},"values":[]}
        ]},"warnings":["partial"]}"#;
        let m = parse_response(200, body, AT).unwrap();
        assert_eq!(m.warnings, vec!["partial".to_string()]);
        assert_eq!(m.series.len(), 2);
        let s = &m.series[0];
        assert_eq!(
            s.labels,
            labels(&[("__name__", "rps"), ("job", "web"), ("instance", "a")])
        );
        assert_eq!(s.label_text(), r#"rps{instance="a",job="web"}"#);
        assert_eq!(s.points[0], (1_700_000_000_000, 1.5));
        assert_eq!(s.points[1].0, 1_700_000_060_500);
        assert!(s.points[1].1.is_nan());
        assert_eq!(s.points[2].1, f64::INFINITY);
        assert_eq!(s.points[3].1, f64::NEG_INFINITY);
        assert_eq!(m.series[1].label_text(), r#"{job="web"}"#);
    }

    #[test]
    fn error_documents_and_http_errors_are_reported() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"1:6: parse error: unclosed left parenthesis"}"#;
        let e = parse_response(400, body, AT).unwrap_err();
        assert!(e.is_usage());
        let text = e.to_string();
        assert!(
            text.contains("bad_data")
                && text.contains("unclosed left parenthesis")
                && text.contains(AT),
            "{text}"
        );
        let e = parse_response(
            503,
            r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#,
            AT,
        )
        .unwrap_err();
        assert!(e.is_io() && !e.is_usage(), "{e}");
        let e = parse_response(502, "<html>Bad Gateway</html>", AT).unwrap_err();
        assert!(
            matches!(e, PrometheusError::Http { status: 502, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("Bad Gateway"));
    }

    #[test]
    fn malformed_answers_say_what_is_wrong() {
        for (body, want) in [
            ("", "not a Prometheus"),
            ("{\"status\":\"success\"", "EOF"),
            (r#"{"status":"success"}"#, "no \"data\""),
            (r#"{"status":"weird"}"#, "\"weird\""),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                "\"vector\"",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":{}}}"#,
                "not a list",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,2]]}]}}"#,
                "not a list",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1,"x"]]}]}}"#,
                "value \"x\"",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"histograms":[[1,{}]]}]}}"#,
                "native histograms",
            ),
        ] {
            let e = parse_response(200, body, AT).unwrap_err();
            assert!(
                matches!(e, PrometheusError::Malformed { .. }),
                "{body}: {e}"
            );
            let text = e.to_string();
            assert!(text.contains(want) && text.contains(AT), "{body}: {text}");
        }
    }

    fn ps(pairs: &[(&str, &str)], points: &[(i64, f64)]) -> PromSeries {
        PromSeries {
            labels: labels(pairs),
            points: points.to_vec(),
        }
    }

    #[test]
    fn pieces_merge_per_label_set_and_series_are_selected_by_label() {
        let a = [("instance", "a")];
        let b = [("instance", "b")];
        let merged = merge(vec![
            vec![ps(&a, &[(0, 1.0), (60, 2.0)]), ps(&b, &[(0, 5.0)])],
            // Series b is absent from this piece; c appears late.
            vec![ps(&a, &[(120, 3.0)])],
            vec![
                ps(&[("instance", "c")], &[(180, 9.0)]),
                ps(&b, &[(180, 6.0)]),
            ],
        ]);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].points, vec![(0, 1.0), (60, 2.0), (120, 3.0)]);
        assert_eq!(merged[1].points, vec![(0, 5.0), (180, 6.0)]);
        assert_eq!(merged[2].labels, labels(&[("instance", "c")]));

        let want = vec![("instance".to_string(), "b".to_string())];
        let one = select_series(merged.clone(), &want, AT).unwrap();
        assert_eq!(one.points, vec![(0, 5.0), (180, 6.0)]);
        let e = select_series(merged.clone(), &[], AT)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3 series")
                && e.contains(r#"{instance="a"}"#)
                && e.contains("--series-label"),
            "{e}"
        );
        let none = vec![("instance".to_string(), "z".to_string())];
        let e = select_series(merged, &none, AT).unwrap_err().to_string();
        assert!(
            e.contains("instance=z") && e.contains(r#"{instance="c"}"#),
            "{e}"
        );
    }

    #[test]
    fn non_finite_values_fail_or_become_gaps_and_gaps_keep_the_step() {
        let pts: Vec<(i64, f64)> = (0..10)
            .map(|i| (i * 60_000, if i == 4 { f64::NAN } else { 10.0 + i as f64 }))
            .filter(|p| p.0 != 6 * 60_000)
            .collect();
        let s = ps(&[("__name__", "rps")], &pts);
        let e = to_series(
            s.clone(),
            60_000,
            NonFinite::Reject,
            &LoadOptions::default(),
            AT,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("1 non-finite")
                && text.contains("NaN at 1970-01-01T00:04:00")
                && text.contains("--skip-non-finite"),
            "{text}"
        );
        let series = to_series(s, 60_000, NonFinite::Skip, &LoadOptions::default(), AT).unwrap();
        assert_eq!(series.interval_ms, 60_000);
        assert_eq!(series.name, "rps");
        // Points 4 (NaN) and 6 (absent) were gaps and are interpolated.
        assert_eq!(series.len(), 10);
        assert!((series.values[4] - 14.0).abs() < 1e-9);
        assert!((series.values[6] - 16.0).abs() < 1e-9);

        let neg = ps(&[], &[(0, 1.0), (60_000, -2.0), (120_000, 1.0)]);
        let e = to_series(
            neg.clone(),
            60_000,
            NonFinite::Reject,
            &LoadOptions::default(),
            AT,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("negative") && e.contains("--allow-negative"),
            "{e}"
        );
        let signed = LoadOptions {
            allow_negative: true,
            ..LoadOptions::default()
        };
        assert_eq!(
            to_series(neg, 60_000, NonFinite::Reject, &signed, AT)
                .unwrap()
                .values,
            vec![1.0, -2.0, 1.0]
        );
        let e = to_series(
            ps(&[], &[(0, 1.0)]),
            60_000,
            NonFinite::Reject,
            &LoadOptions::default(),
            AT,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at least 2"), "{e}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("60").unwrap(), 60_000);
        assert_eq!(parse_duration_ms("0.5").unwrap(), 500);
        assert_eq!(parse_duration_ms("60s").unwrap(), 60_000);
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        assert_eq!(parse_duration_ms("3d").unwrap(), 3 * 86_400_000);
        for bad in ["", "0", "-5", "5x", "m", "1.5m", "NaN"] {
            assert!(parse_duration_ms(bad).unwrap_err().is_usage(), "{bad}");
        }
    }

    #[test]
    fn an_unreachable_server_is_an_io_error_naming_the_request() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut q = RangeQuery::new(format!("http://127.0.0.1:{port}"), "up", 0, 60_000, 60_000);
        q.timeout = Duration::from_secs(5);
        let e = query_range(&q).unwrap_err();
        assert!(e.is_io(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("127.0.0.1:{port}/api/v1/query_range")),
            "{text}"
        );
    }

    #[test]
    fn credentials_become_the_authorization_header_or_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let token = file("token", "  s3cr3t-token\n");
        let basic = file("basic", "aya:pa55\n");
        let header = |bearer_token_file, basic_auth_file| {
            authorization(&Access {
                ca_file: None,
                bearer_token_file,
                basic_auth_file,
            })
        };
        assert_eq!(header(None, None).unwrap(), None);
        assert_eq!(
            header(Some(token.clone()), None).unwrap().as_deref(),
            Some("Bearer s3cr3t-token")
        );
        // base64("aya:pa55")
        assert_eq!(
            header(None, Some(basic.clone())).unwrap().as_deref(),
            Some("Basic YXlhOnBhNTU=")
        );
        let both = header(Some(token), Some(basic)).unwrap_err();
        assert!(
            both.to_string().contains("not both") && both.is_usage(),
            "{both}"
        );
        for (name, text, want) in [
            ("empty", "\n", "is empty"),
            ("spaced", "a b", "spaces"),
            ("nocolon", "aya", "user:password"),
        ] {
            let e = header(None, Some(file(name, text))).unwrap_err();
            assert!(
                e.to_string().contains(want) && e.to_string().contains(name),
                "{e}"
            );
        }
        let e = header(Some(dir.path().join("missing")), None).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the bearer token file"),
            "{e}"
        );
        // A CA file that holds no certificate is named.
        let mut q = RangeQuery::new("https://h:9090", "up", 0, 1, 1);
        q.access.ca_file = Some(file("ca.pem", "not a certificate"));
        let e = agent(&q).unwrap_err();
        assert!(e.to_string().contains("ca.pem") && e.is_usage(), "{e}");
    }
}
