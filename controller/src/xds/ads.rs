//! The state-of-the-world ADS protocol, one [`AdsStream`] per client stream.
//!
//! The state machine is synchronous and pure (requests and published states
//! in, responses out) so it is tested without a network; [`AdsServer`] wraps
//! it in a tonic stream driven by the published-state watch channel.
//!
//! Per type URL a stream remembers the requested resource names, the last
//! response sent (version, nonce, resources, when) and the last version the
//! client accepted. The rules (xDS protocol, "ACK/NACK and resource type
//! instance version"):
//! - a request with an empty nonce is an initial request: answer it;
//! - a request whose nonce is not the last one sent for its type is stale
//!   (it answers an older response): ignore it;
//! - `error_detail` set is a NACK: log it, count it, keep the last good
//!   state (the client keeps running its last accepted version) and do not
//!   resend the rejected response;
//! - otherwise it is an ACK of the last response; answer again only if the
//!   resource names changed;
//! - on every published-state change, push each subscribed type whose
//!   rendered resources differ from what was last sent.
//!
//! **The warming trap.** After a CDS response, Envoy re-initialises the
//! changed clusters and re-requests EDS with the version and nonce of the last
//! EDS response, which looks exactly like an ACK. A server that stays silent
//! leaves the cluster warming until `initial_fetch_timeout` (15 s). So after
//! every CDS response the stream owes one EDS answer: the next EDS request
//! (even one carrying an older nonce) gets a fresh response.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::resources::{CLUSTER_TYPE, ENDPOINT_TYPE, SERVED_TYPES, render};
use super::stats::{NackRecord, XdsStats};
use crate::clock::Clock;
use crate::publish::PublishedState;

/// What was last sent for one type on one stream.
#[derive(Debug, Clone)]
struct Sent {
    nonce: String,
    resources: Vec<Any>,
    /// When, on the stream's clock.
    at: Duration,
}

/// One type URL's subscription on one stream.
#[derive(Debug, Clone, Default)]
struct Subscription {
    /// Requested names; empty = wildcard.
    names: Vec<String>,
    /// Last response sent, if any.
    sent: Option<Sent>,
    /// Last version the client acknowledged.
    accepted_version: String,
}

/// The protocol state of one ADS stream.
#[derive(Debug)]
pub struct AdsStream {
    stats: Arc<XdsStats>,
    clock: Clock,
    node: String,
    next_nonce: u64,
    subs: BTreeMap<String, Subscription>,
    /// Set when a CDS response is sent: the next EDS request must be answered.
    eds_owed: bool,
}

impl AdsStream {
    /// A new stream's state; counters go to `stats`.
    pub fn new(stats: Arc<XdsStats>) -> Self {
        AdsStream::with_clock(stats, Clock::system())
    }

    /// A new stream's state measuring ACK latencies on `clock`.
    pub fn with_clock(stats: Arc<XdsStats>, clock: Clock) -> Self {
        AdsStream {
            stats,
            clock,
            node: String::new(),
            next_nonce: 0,
            subs: BTreeMap::new(),
            eds_owed: false,
        }
    }

    /// The client's node id (from the first request that carried one).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The version the client last acknowledged for `type_url` (empty if none).
    pub fn accepted_version(&self, type_url: &str) -> &str {
        self.subs
            .get(type_url)
            .map_or("", |s| s.accepted_version.as_str())
    }

    fn respond(
        &mut self,
        type_url: &str,
        state: &PublishedState,
        resources: Vec<Any>,
    ) -> DiscoveryResponse {
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        let version = state.version.to_string();
        if type_url == CLUSTER_TYPE {
            self.eds_owed = true;
        }
        let sub = self.subs.entry(type_url.to_string()).or_default();
        sub.sent = Some(Sent {
            nonce: nonce.clone(),
            resources: resources.clone(),
            at: self.clock.elapsed(),
        });
        self.stats.add_push();
        tracing::debug!(node = %self.node, type_url, version, nonce, resources = resources.len(), "xds push");
        DiscoveryResponse {
            version_info: version,
            resources,
            type_url: type_url.to_string(),
            nonce,
            ..Default::default()
        }
    }

    /// Handle one `DiscoveryRequest` against the current published state;
    /// returns the response to send, if any.
    pub fn handle_request(
        &mut self,
        req: DiscoveryRequest,
        state: &PublishedState,
    ) -> Option<DiscoveryResponse> {
        self.stats.add_request();
        if let Some(node) = req.node.as_ref()
            && self.node.is_empty()
        {
            self.node = node.id.clone();
        }
        let type_url = req.type_url.as_str();
        if !SERVED_TYPES.contains(&type_url) {
            self.stats.add_unknown_type();
            tracing::warn!(node = %self.node, type_url, "xds request for a resource type Aya does not serve; ignored");
            return None;
        }
        let sub = self.subs.entry(type_url.to_string()).or_default();
        let last_nonce = sub.sent.as_ref().map(|s| s.nonce.as_str());
        let matches_last =
            !req.response_nonce.is_empty() && last_nonce == Some(req.response_nonce.as_str());

        if let Some(err) = req.error_detail.as_ref() {
            if !matches_last && !req.response_nonce.is_empty() {
                // A NACK of an older response: already superseded.
                self.stats.add_stale();
                return None;
            }
            let record = NackRecord {
                node: self.node.clone(),
                type_url: type_url.to_string(),
                nonce: req.response_nonce.clone(),
                accepted_version: req.version_info.clone(),
                message: err.message.clone(),
            };
            tracing::warn!(
                node = %record.node, type_url, nonce = %record.nonce,
                accepted_version = %record.accepted_version, error = %record.message,
                "xds NACK: client rejected the response and keeps its last accepted version"
            );
            sub.accepted_version = req.version_info.clone();
            sub.names = req.resource_names;
            self.stats.add_nack(record);
            return None;
        }

        let owed = type_url == ENDPOINT_TYPE && self.eds_owed;
        if !req.response_nonce.is_empty() && !matches_last && !owed {
            self.stats.add_stale();
            tracing::debug!(node = %self.node, type_url, nonce = %req.response_nonce, "stale xds request ignored");
            return None;
        }
        let names_changed = sub.names != req.resource_names;
        sub.names = req.resource_names;
        let initial = req.response_nonce.is_empty();
        if matches_last {
            let latency = sub.sent.as_ref().map_or(0, |s| {
                let elapsed = self.clock.elapsed().saturating_sub(s.at);
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
            });
            sub.accepted_version = req.version_info.clone();
            self.stats.add_ack(latency);
            tracing::debug!(node = %self.node, type_url, version = %req.version_info, latency_us = latency, "xds ACK");
        }
        if !(initial || names_changed || owed) {
            return None;
        }
        if owed {
            self.eds_owed = false;
        }
        let names = sub.names.clone();
        let resources = render(type_url, state, &names).unwrap_or_default();
        Some(self.respond(type_url, state, resources))
    }

    /// The published state changed: push every subscribed type whose
    /// resources differ from what was last sent, in make-before-break order.
    pub fn on_state_change(&mut self, state: &PublishedState) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for type_url in SERVED_TYPES {
            let Some(sub) = self.subs.get(type_url) else {
                continue;
            };
            let Some(sent) = sub.sent.as_ref() else {
                continue;
            };
            let resources = render(type_url, state, &sub.names).unwrap_or_default();
            if resources != sent.resources {
                out.push(self.respond(type_url, state, resources));
            }
        }
        out
    }
}

/// The tonic ADS service over the published state.
#[derive(Debug, Clone)]
pub struct AdsServer {
    rx: watch::Receiver<Arc<PublishedState>>,
    stats: Arc<XdsStats>,
    clock: Clock,
    monotonic: bool,
}

/// How long a stream waits for this replica to catch up with the version
/// a client reports (HA) before it answers with what it has.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

impl AdsServer {
    /// Serve the state published on `rx`; counters go to `stats`.
    pub fn new(rx: watch::Receiver<Arc<PublishedState>>, stats: Arc<XdsStats>) -> Self {
        AdsServer::with_clock(rx, stats, Clock::system())
    }

    /// [`new`](Self::new) measuring ACK latencies on `clock`.
    pub fn with_clock(
        rx: watch::Receiver<Arc<PublishedState>>,
        stats: Arc<XdsStats>,
        clock: Clock,
    ) -> Self {
        AdsServer {
            rx,
            stats,
            clock,
            monotonic: false,
        }
    }

    /// With `on` (the HA mode, where versions are etcd revisions shared by
    /// every replica), a request that reports a version above this
    /// replica's (a client coming from a replica further ahead) is answered
    /// only once this replica has caught up (at most 5 s), so a client never
    /// sees the version go backwards when it moves between replicas.
    pub fn with_monotonic_versions(mut self, on: bool) -> Self {
        self.monotonic = on;
        self
    }
}

/// Decrements the connected-streams gauge when a stream task ends.
struct StreamGuard(Arc<XdsStats>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.stream_closed();
    }
}

/// Responses queued per stream before the stream task waits for the client.
const STREAM_BUFFER: usize = 16;

async fn run_stream(
    mut inbound: Streaming<DiscoveryRequest>,
    mut state_rx: watch::Receiver<Arc<PublishedState>>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    stats: Arc<XdsStats>,
    clock: Clock,
    monotonic: bool,
) {
    stats.stream_opened();
    let _guard = StreamGuard(stats.clone());
    let mut stream = AdsStream::with_clock(stats, clock);
    loop {
        let responses = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    if monotonic {
                        catch_up(&state_rx, &req.version_info, stream.node()).await;
                    }
                    // `borrow` (not `borrow_and_update`): a change not yet seen
                    // by the branch below must still trigger its pushes.
                    let state = state_rx.borrow().clone();
                    stream.handle_request(req, &state).into_iter().collect::<Vec<_>>()
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(node = %stream.node(), %status, "ADS stream ended with an error");
                    break;
                }
            },
            changed = state_rx.changed() => {
                if changed.is_err() {
                    // The publisher is gone (service shutting down): end the stream.
                    break;
                }
                let state = state_rx.borrow_and_update().clone();
                stream.on_state_change(&state)
            }
        };
        for resp in responses {
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }
    tracing::debug!(node = %stream.node(), "ADS stream closed");
}

/// Wait (at most [`CATCH_UP_TIMEOUT`]) until the published version is at
/// least the one the client reports.
async fn catch_up(state_rx: &watch::Receiver<Arc<PublishedState>>, reported: &str, node: &str) {
    let Ok(wanted) = reported.parse::<u64>() else {
        return;
    };
    if state_rx.borrow().version >= wanted {
        return;
    }
    let mut rx = state_rx.clone();
    let waited = tokio::time::timeout(CATCH_UP_TIMEOUT, rx.wait_for(|s| s.version >= wanted)).await;
    if waited.is_err() {
        tracing::warn!(
            node,
            wanted,
            have = state_rx.borrow().version,
            "ADS client reports a version this replica has not reached within {CATCH_UP_TIMEOUT:?}; answering with what it has"
        );
    }
}

type DeltaStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(run_stream(
            request.into_inner(),
            self.rx.clone(),
            tx,
            self.stats.clone(),
            self.clock.clone(),
            self.monotonic,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "Aya serves state-of-the-world ADS only: set ads_config.api_type to GRPC (not DELTA_GRPC)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{ClusterSnapshot, Endpoint};
    use crate::xds::resources::{LISTENER_TYPE, ROUTE_TYPE};
    use aya_policy::{AlgorithmChoice, Decision, Explanation, LbAlgorithm, ScalingSignal};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::google::rpc::Status as RpcStatus;
    use prost::Message;

    fn state(version: u64, alg: LbAlgorithm, weights: &[u32]) -> PublishedState {
        let snap = ClusterSnapshot {
            cluster: "web".into(),
            version,
            decision: Decision {
                outlier_detection: None,
                max_requests: None,
                at: 0.0,
                weights: Vec::new(),
                ejected: Vec::new(),
                scaling: ScalingSignal::default(),
                algorithm: AlgorithmChoice {
                    algorithm: alg,
                    rule: "test".into(),
                },
                explanation: Explanation::default(),
            },
            endpoints: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Endpoint {
                    backend: format!("b{i}"),
                    host: "127.0.0.1".into(),
                    port: 9000 + i as u16,
                    weight: *w,
                })
                .collect(),
        };
        let mut s = PublishedState {
            version,
            ..Default::default()
        };
        s.clusters.insert("web".into(), Arc::new(snap));
        s
    }

    fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version.into(),
            node: Some(Node {
                id: "envoy-1".into(),
                ..Default::default()
            }),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn weights_of(resp: &DiscoveryResponse) -> Vec<u32> {
        let cla =
            ClusterLoadAssignment::decode(resp.resources[0].value.as_slice()).unwrap_or_default();
        cla.endpoints
            .iter()
            .flat_map(|l| {
                l.lb_endpoints
                    .iter()
                    .map(|e| e.load_balancing_weight.map_or(0, |w| w.value))
            })
            .collect()
    }

    #[test]
    fn initial_request_ack_and_push_on_change() {
        let stats = Arc::new(XdsStats::new());
        let mut s = AdsStream::new(stats.clone());
        let v1 = state(1, LbAlgorithm::WeightedRoundRobin, &[1, 3, 6]);

        let cds = s
            .handle_request(request(CLUSTER_TYPE, &[], "", ""), &v1)
            .expect("initial CDS answered");
        assert_eq!((cds.version_info.as_str(), cds.resources.len()), ("1", 1));
        assert_eq!(s.node(), "envoy-1");
        // CDS ACK: nothing to send.
        assert!(
            s.handle_request(request(CLUSTER_TYPE, &[], "1", &cds.nonce), &v1)
                .is_none()
        );
        assert_eq!(s.accepted_version(CLUSTER_TYPE), "1");
        // Initial EDS request (the EDS owed after CDS is paid by it).
        let eds = s
            .handle_request(request(ENDPOINT_TYPE, &["web"], "", ""), &v1)
            .expect("initial EDS");
        assert_eq!(weights_of(&eds), vec![1, 3, 6]);
        assert!(
            s.handle_request(request(ENDPOINT_TYPE, &["web"], "1", &eds.nonce), &v1)
                .is_none()
        );
        assert_eq!(stats.acks(), 2);

        // Same state again: nothing to push.
        assert!(s.on_state_change(&v1).is_empty());
        // Weights change only: exactly one EDS push, no CDS.
        let v2 = state(2, LbAlgorithm::WeightedRoundRobin, &[6, 3, 1]);
        let pushed = s.on_state_change(&v2);
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].type_url, ENDPOINT_TYPE);
        assert_eq!(weights_of(&pushed[0]), vec![6, 3, 1]);
        assert_ne!(pushed[0].nonce, eds.nonce);
        let snap = stats.snapshot();
        assert_eq!((snap.pushes, snap.nacks, snap.requests), (3, 0, 4));
    }

    #[test]
    fn eds_rerequest_after_cds_is_answered_even_though_it_looks_like_an_ack() {
        let stats = Arc::new(XdsStats::new());
        let mut s = AdsStream::new(stats.clone());
        let v1 = state(1, LbAlgorithm::WeightedRoundRobin, &[1, 3, 6]);
        let cds = s
            .handle_request(request(CLUSTER_TYPE, &[], "", ""), &v1)
            .expect("cds");
        s.handle_request(request(CLUSTER_TYPE, &[], "1", &cds.nonce), &v1);
        let eds = s
            .handle_request(request(ENDPOINT_TYPE, &["web"], "", ""), &v1)
            .expect("eds");
        assert!(
            s.handle_request(request(ENDPOINT_TYPE, &["web"], "1", &eds.nonce), &v1)
                .is_none()
        );

        // Algorithm switch: only CDS changes.
        let v2 = state(2, LbAlgorithm::LeastRequest, &[1, 3, 6]);
        let pushed = s.on_state_change(&v2);
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].type_url, CLUSTER_TYPE);
        let c = Cluster::decode(pushed[0].resources[0].value.as_slice()).unwrap_or_default();
        assert_eq!(c.lb_policy, 1, "LEAST_REQUEST");
        s.handle_request(request(CLUSTER_TYPE, &[], "2", &pushed[0].nonce), &v2);
        // Envoy re-warms the cluster and re-sends the old EDS version+nonce: it must be answered.
        let again = s
            .handle_request(request(ENDPOINT_TYPE, &["web"], "1", &eds.nonce), &v2)
            .expect("the EDS request after a CDS push is answered");
        assert_eq!(again.type_url, ENDPOINT_TYPE);
        assert_eq!(weights_of(&again), vec![1, 3, 6]);
        // ... exactly once: the ACK of that answer is a plain ACK.
        assert!(
            s.handle_request(request(ENDPOINT_TYPE, &["web"], "2", &again.nonce), &v2)
                .is_none()
        );
        // And an old nonce now is stale.
        assert!(
            s.handle_request(request(ENDPOINT_TYPE, &["web"], "1", &eds.nonce), &v2)
                .is_none()
        );
        assert_eq!(stats.snapshot().stale, 1);
    }

    #[test]
    fn nack_is_counted_recorded_and_not_resent() {
        let stats = Arc::new(XdsStats::new());
        let mut s = AdsStream::new(stats.clone());
        let v1 = state(1, LbAlgorithm::WeightedRoundRobin, &[1, 1]);
        let eds = s
            .handle_request(request(ENDPOINT_TYPE, &["web"], "", ""), &v1)
            .expect("eds");
        s.handle_request(request(ENDPOINT_TYPE, &["web"], "1", &eds.nonce), &v1);
        let v2 = state(2, LbAlgorithm::WeightedRoundRobin, &[2, 1]);
        let bad = s.on_state_change(&v2).remove(0);
        let mut nack = request(ENDPOINT_TYPE, &["web"], "1", &bad.nonce);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "malformed IP address: x".into(),
            details: vec![],
        });
        assert!(
            s.handle_request(nack, &v2).is_none(),
            "a NACK is not answered by resending"
        );
        assert_eq!(stats.nacks(), 1);
        let rec = stats.last_nack().expect("recorded");
        assert_eq!(rec.message, "malformed IP address: x");
        assert_eq!(
            (rec.accepted_version.as_str(), rec.nonce.as_str()),
            ("1", bad.nonce.as_str())
        );
        assert_eq!(s.accepted_version(ENDPOINT_TYPE), "1");
        // Nothing re-pushed for the same state; a new state is pushed.
        assert!(s.on_state_change(&v2).is_empty());
        assert_eq!(
            s.on_state_change(&state(3, LbAlgorithm::WeightedRoundRobin, &[1, 1]))
                .len(),
            1
        );
        let mut text = String::new();
        stats.write_prometheus(&mut text);
        assert!(text.contains("aya_xds_nacks_total 1"), "{text}");
    }

    #[test]
    fn resource_name_changes_are_answered_and_unknown_types_ignored() {
        let stats = Arc::new(XdsStats::new());
        let mut s = AdsStream::new(stats.clone());
        let v1 = state(1, LbAlgorithm::RoundRobin, &[1]);
        let lds = s
            .handle_request(request(LISTENER_TYPE, &["web"], "", ""), &v1)
            .expect("lds");
        assert_eq!(lds.resources.len(), 1);
        let rds = s
            .handle_request(request(ROUTE_TYPE, &["web"], "", ""), &v1)
            .expect("rds");
        assert_eq!(rds.resources.len(), 1);
        let eds = s
            .handle_request(request(ENDPOINT_TYPE, &["other"], "", ""), &v1)
            .expect("eds");
        assert!(eds.resources.is_empty(), "unknown names are left out");
        // Same nonce, new names: answered.
        let eds2 = s
            .handle_request(request(ENDPOINT_TYPE, &["web"], "1", &eds.nonce), &v1)
            .expect("names changed");
        assert_eq!(eds2.resources.len(), 1);
        assert!(
            s.handle_request(
                request(
                    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                    &[],
                    "",
                    ""
                ),
                &v1
            )
            .is_none()
        );
        assert_eq!(stats.snapshot().unknown_type, 1);
    }

    #[tokio::test]
    async fn a_client_ahead_of_this_replica_is_answered_once_it_caught_up() {
        let (tx, rx) = watch::channel(Arc::new(state(5, LbAlgorithm::WeightedRoundRobin, &[1])));
        // A client behind (or without a version) is answered at once.
        for reported in ["3", "5", "", "not-a-number"] {
            tokio::time::timeout(Duration::from_secs(1), catch_up(&rx, reported, "n"))
                .await
                .expect("no wait");
        }
        let waiter = {
            let rx = rx.clone();
            tokio::spawn(async move {
                catch_up(&rx, "9", "n").await;
                rx.borrow().version
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "9 is ahead of this replica's 5");
        tx.send_replace(Arc::new(state(9, LbAlgorithm::WeightedRoundRobin, &[1])));
        assert_eq!(waiter.await.unwrap(), 9);
    }

    /// The tonic service end to end over loopback: a client stream gets the
    /// initial CDS, ACKs it, and receives a push when the state changes.
    #[tokio::test]
    async fn tonic_stream_pushes_on_change() {
        let (tx, rx) = watch::channel(Arc::new(state(1, LbAlgorithm::WeightedRoundRobin, &[1, 3])));
        let stats = Arc::new(XdsStats::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(crate::xds::ads_service(rx, stats.clone()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                ),
        );
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let (req_tx, req_rx) = mpsc::channel(8);
        let mut responses = client
            .stream_aggregated_resources(ReceiverStream::new(req_rx))
            .await
            .expect("stream")
            .into_inner();
        req_tx
            .send(request(ENDPOINT_TYPE, &["web"], "", ""))
            .await
            .expect("send");
        let first = responses
            .message()
            .await
            .expect("recv")
            .expect("a response");
        assert_eq!(weights_of(&first), vec![1, 3]);
        req_tx
            .send(request(
                ENDPOINT_TYPE,
                &["web"],
                &first.version_info,
                &first.nonce,
            ))
            .await
            .expect("ack");
        // Let the ACK land before the state changes (otherwise it would be
        // stale: it answers a nonce older than the push).
        wait_for(|| stats.acks() == 1).await;
        tx.send_replace(Arc::new(state(2, LbAlgorithm::WeightedRoundRobin, &[5, 1])));
        let second = responses.message().await.expect("recv").expect("a push");
        assert_eq!(
            (second.version_info.as_str(), weights_of(&second)),
            ("2", vec![5, 1])
        );
        assert_eq!(stats.snapshot().streams_connected, 1);
        req_tx
            .send(request(
                ENDPOINT_TYPE,
                &["web"],
                &second.version_info,
                &second.nonce,
            ))
            .await
            .expect("ack");
        wait_for(|| stats.acks() == 2).await;
        drop(req_tx);
        drop(responses);
        let _ = stop_tx.send(());
        let _ = server.await;
        wait_for(|| stats.snapshot().streams_connected == 0).await;
        assert_eq!(stats.snapshot().stale, 0);
    }

    /// Poll `cond` until it holds; panics after 10 s (a hang, not a timing check).
    async fn wait_for(cond: impl Fn() -> bool) {
        for _ in 0..1000 {
            if cond() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("condition not reached within 10 s");
    }
}
