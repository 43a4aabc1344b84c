//! Emulated HTTP/1.1 backends of the closed-loop benchmark.
//!
//! A backend has `workers` request slots and an exponential service time of
//! mean `service` (times a slowdown factor the harness can change mid-run).
//! The service time is **slept**, not burned, so that the 2-core machine
//! running Envoy, Aya, the load generator and six backends is not what limits
//! throughput: each backend's capacity is `workers / service` requests per
//! second, whatever the CPU does. Requests beyond `workers` queue inside the
//! backend (FIFO), as in a thread-pool server.
//!
//! Each backend measures what a real server would report: requests served,
//! requests in the building (queued + in service), server-side latency
//! (arrival to response, queueing included) per report window, and the busy
//! fraction of its worker pool (the resource that limits its throughput). The
//! same figures go to Aya's `aya.v1` ingest (arm `aya-api`) or, per response,
//! into an ORCA `endpoint-load-metrics` header (arm `cswrr-orca`).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Exp1};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};

/// What one emulated backend is.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// Backend name (Aya's backend name and the response body).
    pub name: String,
    /// Requests served at a time; the others queue.
    pub workers: usize,
    /// Mean service time (exponential).
    pub service: Duration,
}

impl BackendSpec {
    /// Requests per second this backend can serve at full utilisation.
    pub fn capacity_rps(&self) -> f64 {
        self.workers as f64 / self.service.as_secs_f64()
    }
}

/// Time-weighted busy workers: `busy_seconds()` is ∫ busy dt since start.
#[derive(Debug)]
struct BusyClock {
    busy: usize,
    since: Instant,
    integral: f64,
}

impl BusyClock {
    fn advance(&mut self, now: Instant) {
        self.integral += self.busy as f64 * now.duration_since(self.since).as_secs_f64();
        self.since = now;
    }
}

/// A backend's live counters, shared by its connections and its reporters.
#[derive(Debug)]
pub struct BackendState {
    /// Slowdown factor × 1000 applied to the service time.
    slowdown_milli: AtomicU64,
    /// Requests answered since start.
    pub requests: AtomicU64,
    /// Requests inside the backend (queued or in service).
    pub in_flight: AtomicI64,
    busy: Mutex<BusyClock>,
    /// Server-side latencies (seconds) since the last [`BackendState::take_latencies`].
    latencies: Mutex<Vec<f64>>,
    /// Whether latencies are kept for a reporter.
    pub keep_latencies: AtomicBool,
    /// ORCA figures (utilisation, rps) as f64 bits, refreshed by [`orca_refresher`].
    orca_util: AtomicU64,
    orca_rps: AtomicU64,
    /// Whether responses carry the ORCA header.
    pub orca_header: AtomicBool,
    workers: usize,
}

impl BackendState {
    fn new(workers: usize) -> Self {
        BackendState {
            slowdown_milli: AtomicU64::new(1000),
            requests: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            busy: Mutex::new(BusyClock {
                busy: 0,
                since: Instant::now(),
                integral: 0.0,
            }),
            latencies: Mutex::new(Vec::new()),
            keep_latencies: AtomicBool::new(false),
            orca_util: AtomicU64::new(0f64.to_bits()),
            orca_rps: AtomicU64::new(0f64.to_bits()),
            orca_header: AtomicBool::new(false),
            workers,
        }
    }

    /// Multiply the mean service time by `factor` from now on.
    pub fn set_slowdown(&self, factor: f64) {
        self.slowdown_milli
            .store((factor * 1000.0).round() as u64, Ordering::Relaxed);
    }

    fn slowdown(&self) -> f64 {
        self.slowdown_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn busy_change(&self, delta: isize) {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        b.advance(Instant::now());
        b.busy = b.busy.saturating_add_signed(delta);
    }

    /// Worker-seconds spent serving since start.
    pub fn busy_seconds(&self) -> f64 {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        b.advance(Instant::now());
        b.integral
    }

    /// Worker-pool size.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The server-side latencies recorded since the previous call.
    pub fn take_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A running backend; stops when dropped.
pub struct Backend {
    /// What it is.
    pub spec: BackendSpec,
    /// Its loopback port.
    pub port: u16,
    /// Its counters.
    pub state: Arc<BackendState>,
    _stop: oneshot::Sender<()>,
}

/// Start `spec` on `127.0.0.1:0`; `seed` seeds its service times.
pub async fn start(spec: BackendSpec, seed: u64) -> std::io::Result<Backend> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let state = Arc::new(BackendState::new(spec.workers));
    let slots = Arc::new(Semaphore::new(spec.workers));
    let (stop, mut stopped) = oneshot::channel::<()>();
    let (st, name, mean) = (state.clone(), spec.name.clone(), spec.service);
    tokio::spawn(async move {
        let mut conn_id = 0u64;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => {
                    let Ok((sock, _)) = accepted else {
                        // EMFILE and the like: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    conn_id += 1;
                    let rng = SmallRng::seed_from_u64(seed ^ (conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
                    tokio::spawn(serve_conn(sock, name.clone(), mean, slots.clone(), st.clone(), rng));
                }
            }
        }
    });
    tokio::spawn(orca_refresher(state.clone()));
    Ok(Backend {
        spec,
        port,
        state,
        _stop: stop,
    })
}

/// Keeps the ORCA figures (busy fraction and request rate over the last
/// 500 ms) current while the backend lives.
async fn orca_refresher(state: Arc<BackendState>) {
    let period = Duration::from_millis(500);
    let (mut busy0, mut req0, mut t0) = (
        state.busy_seconds(),
        state.requests.load(Ordering::Relaxed),
        Instant::now(),
    );
    loop {
        tokio::time::sleep(period).await;
        // The backend is gone when only this task holds its state.
        if Arc::strong_count(&state) <= 1 {
            return;
        }
        let (busy, req, t) = (
            state.busy_seconds(),
            state.requests.load(Ordering::Relaxed),
            Instant::now(),
        );
        let dt = t.duration_since(t0).as_secs_f64().max(1e-3);
        let util = ((busy - busy0) / (state.workers as f64 * dt)).clamp(0.0, 1.0);
        let rps = (req - req0) as f64 / dt;
        state.orca_util.store(util.to_bits(), Ordering::Relaxed);
        state.orca_rps.store(rps.to_bits(), Ordering::Relaxed);
        (busy0, req0, t0) = (busy, req, t);
    }
}

async fn serve_conn(
    sock: TcpStream,
    name: String,
    mean: Duration,
    slots: Arc<Semaphore>,
    state: Arc<BackendState>,
    mut rng: SmallRng,
) {
    let _ = sock.set_nodelay(true);
    let mut reader = BufReader::new(sock);
    let mut line = String::new();
    loop {
        // Read one request head (GET, no body).
        let mut saw_request = false;
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                if saw_request {
                    break;
                }
                continue;
            }
            saw_request = true;
        }
        let arrived = Instant::now();
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        {
            let Ok(_slot) = slots.acquire().await else {
                return;
            };
            state.busy_change(1);
            let draw: f64 = Exp1.sample(&mut rng);
            let service = mean.as_secs_f64() * state.slowdown() * draw;
            tokio::time::sleep(Duration::from_secs_f64(service.min(60.0))).await;
            state.busy_change(-1);
        }
        state.in_flight.fetch_sub(1, Ordering::Relaxed);
        state.requests.fetch_add(1, Ordering::Relaxed);
        if state.keep_latencies.load(Ordering::Relaxed) {
            state
                .latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(arrived.elapsed().as_secs_f64());
        }
        let rps = f64::from_bits(state.orca_rps.load(Ordering::Relaxed));
        // No report before the first rate is known (Envoy refuses a zero QPS).
        let orca = if state.orca_header.load(Ordering::Relaxed) && rps > 0.0 {
            // gRFC A51 / Envoy's ORCA parser: "TEXT key=value, ...".
            format!(
                "endpoint-load-metrics: TEXT application_utilization={:.4}, rps_fractional={rps:.3}\r\n",
                f64::from_bits(state.orca_util.load(Ordering::Relaxed)).max(0.01),
            )
        } else {
            String::new()
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{orca}content-length: {}\r\n\r\n{name}",
            name.len()
        );
        if reader.get_mut().write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}
