//! A small etcd v3 client over the workspace's tonic (the generated
//! `aya_proto::etcd` clients): what the HA mode needs and nothing more —
//! range reads, puts, compare-and-set transactions, leases with keep-alive,
//! and prefix watches.
//!
//! Every unary call has a deadline (`timeout`), so a partitioned or stopped
//! etcd turns into an error, never into a hang.

use std::time::Duration;

use aya_proto::etcd as pb;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::watch_client::WatchClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

pub use pb::{
    Compare, KeyValue, RequestOp, TxnRequest, TxnResponse, WatchResponse, compare, event,
    request_op,
};

/// An etcd call that failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// An endpoint is not a valid URL.
    #[error("etcd endpoint {endpoint:?}: {message}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// etcd answered with an error status.
    #[error("etcd {call}: {status}")]
    Status {
        /// The RPC.
        call: &'static str,
        /// etcd's status (code and message).
        status: Box<tonic::Status>,
    },
    /// No answer within the deadline.
    #[error("etcd {call}: no answer within {timeout:?}")]
    Timeout {
        /// The RPC.
        call: &'static str,
        /// The deadline.
        timeout: Duration,
    },
    /// A stream (watch, keep-alive) ended.
    #[error("etcd {0}: stream ended")]
    StreamEnded(&'static str),
    /// etcd refused a request in its answer (e.g. a lease grant error).
    #[error("etcd {call}: {message}")]
    Refused {
        /// The RPC.
        call: &'static str,
        /// What etcd said.
        message: String,
    },
}

/// A connection to etcd (cheap to clone: the channel is shared).
#[derive(Debug, Clone)]
pub struct Etcd {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    timeout: Duration,
}

/// The end of the range of every key that starts with `prefix` (etcd's
/// "prefix plus one").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte is 0xff: the range is every key from `prefix` on.
    vec![0]
}

impl Etcd {
    /// A client of the etcd cluster at `endpoints` (`http://host:port`),
    /// connecting lazily; calls fail after `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Etcd, EtcdError> {
        Etcd::with_tls(endpoints, timeout, None)
    }

    /// [`Etcd::new`] over TLS (`https://` endpoints) when `tls` is given:
    /// the CA that signed etcd's certificate and, for etcd's
    /// `--client-cert-auth`, this client's certificate.
    pub fn with_tls(
        endpoints: &[String],
        timeout: Duration,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Etcd, EtcdError> {
        let mut list = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let mut ep = Endpoint::from_shared(e.clone()).map_err(|err| EtcdError::Endpoint {
                endpoint: e.clone(),
                message: err.to_string(),
            })?;
            if let Some(tls) = &tls {
                ep = ep
                    .tls_config(tls.clone())
                    .map_err(|err| EtcdError::Endpoint {
                        endpoint: e.clone(),
                        message: format!("TLS: {err}"),
                    })?;
            }
            let ep = ep
                .connect_timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
            list.push(ep);
        }
        let channel = match list.len() {
            1 => list.remove(0).connect_lazy(),
            _ => Channel::balance_list(list.into_iter()),
        };
        Ok(Etcd {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel),
            timeout,
        })
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn call<T, F>(&self, call: &'static str, f: F) -> Result<T, EtcdError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(EtcdError::Status {
                call,
                status: Box::new(status),
            }),
            Err(_) => Err(EtcdError::Timeout {
                call,
                timeout: self.timeout,
            }),
        }
    }

    /// The value of `key` (if any) and the store's revision.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), EtcdError> {
        let mut kv = self.kv.clone();
        let r = self
            .call(
                "Range",
                kv.range(pb::RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                }),
            )
            .await?;
        let rev = r.header.map_or(0, |h| h.revision);
        Ok((r.kvs.into_iter().next(), rev))
    }

    /// Every key under `prefix` (sorted by key) and the store's revision.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        self.get_range(prefix, prefix_end(prefix)).await
    }

    /// Every key in `[start, end)` (sorted by key), read at one revision,
    /// and that revision.
    pub async fn get_range(
        &self,
        start: &[u8],
        end: Vec<u8>,
    ) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let mut kv = self.kv.clone();
        let r = self
            .call(
                "Range",
                kv.range(pb::RangeRequest {
                    key: start.to_vec(),
                    range_end: end,
                    ..Default::default()
                }),
            )
            .await?;
        let rev = r.header.map_or(0, |h| h.revision);
        Ok((r.kvs, rev))
    }

    /// Put `value` at `key` (attached to `lease`, 0 for none); returns the
    /// revision of the write.
    pub async fn put(&self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<i64, EtcdError> {
        let mut kv = self.kv.clone();
        let r = self
            .call(
                "Put",
                kv.put(pb::PutRequest {
                    key: key.to_vec(),
                    value,
                    lease,
                }),
            )
            .await?;
        Ok(r.header.map_or(0, |h| h.revision))
    }

    /// Run a transaction.
    pub async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, EtcdError> {
        let mut kv = self.kv.clone();
        self.call("Txn", kv.txn(txn)).await
    }

    /// Grant a lease of `ttl_seconds`; returns its id and the TTL etcd chose.
    pub async fn grant(&self, ttl_seconds: i64) -> Result<(i64, i64), EtcdError> {
        let mut lease = self.lease.clone();
        let r = self
            .call(
                "LeaseGrant",
                lease.lease_grant(pb::LeaseGrantRequest {
                    ttl: ttl_seconds,
                    id: 0,
                }),
            )
            .await?;
        if !r.error.is_empty() {
            return Err(EtcdError::Refused {
                call: "LeaseGrant",
                message: r.error,
            });
        }
        Ok((r.id, r.ttl))
    }

    /// Revoke a lease (its keys are deleted at once).
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        let mut lease = self.lease.clone();
        self.call(
            "LeaseRevoke",
            lease.lease_revoke(pb::LeaseRevokeRequest { id }),
        )
        .await
        .map(|_| ())
    }

    /// Open a keep-alive stream for lease `id` and renew it once (etcd
    /// answers the call only with its first message, so the first renewal
    /// goes with it); returns the stream and the TTL granted. Each renewal
    /// waits at most `timeout` for its answer.
    pub async fn keep_alive(
        &self,
        id: i64,
        timeout: Duration,
    ) -> Result<(KeepAlive, i64), EtcdError> {
        let (tx, rx) = mpsc::channel(4);
        tx.send(pb::LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| EtcdError::StreamEnded("LeaseKeepAlive"))?;
        let mut lease = self.lease.clone();
        let stream =
            match tokio::time::timeout(timeout, lease.lease_keep_alive(ReceiverStream::new(rx)))
                .await
            {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) => {
                    return Err(EtcdError::Status {
                        call: "LeaseKeepAlive",
                        status: Box::new(status),
                    });
                }
                Err(_) => {
                    return Err(EtcdError::Timeout {
                        call: "LeaseKeepAlive",
                        timeout,
                    });
                }
            };
        let mut ka = KeepAlive {
            id,
            tx,
            rx: stream,
            timeout,
        };
        let ttl = ka.answer().await?;
        Ok((ka, ttl))
    }

    /// Watch every key under `prefix` from revision `start` (inclusive).
    pub async fn watch_prefix(&self, prefix: &[u8], start: i64) -> Result<Watch, EtcdError> {
        self.watch(prefix, prefix_end(prefix), start).await
    }

    /// Watch every key in `[start_key, end)` from revision `start`
    /// (inclusive): one stream, so its events come in revision order.
    pub async fn watch_range(
        &self,
        start_key: &[u8],
        end: Vec<u8>,
        start: i64,
    ) -> Result<Watch, EtcdError> {
        self.watch(start_key, end, start).await
    }

    /// Watch one key from revision `start` (inclusive).
    pub async fn watch_key(&self, key: &[u8], start: i64) -> Result<Watch, EtcdError> {
        self.watch(key, Vec::new(), start).await
    }

    async fn watch(&self, key: &[u8], range_end: Vec<u8>, start: i64) -> Result<Watch, EtcdError> {
        let (tx, rx) = mpsc::channel(1);
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: key.to_vec(),
                    range_end,
                    start_revision: start,
                    progress_notify: true,
                },
            )),
        };
        tx.send(create)
            .await
            .map_err(|_| EtcdError::StreamEnded("Watch"))?;
        let mut watch = self.watch.clone();
        let stream = self
            .call("Watch", watch.watch(ReceiverStream::new(rx)))
            .await?;
        Ok(Watch {
            _requests: tx,
            stream,
        })
    }
}

/// A lease keep-alive stream.
#[derive(Debug)]
pub struct KeepAlive {
    id: i64,
    tx: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    rx: tonic::Streaming<pb::LeaseKeepAliveResponse>,
    timeout: Duration,
}

impl KeepAlive {
    /// Renew the lease once; returns the TTL etcd granted (≤ 0: the lease
    /// is gone).
    pub async fn renew(&mut self) -> Result<i64, EtcdError> {
        self.tx
            .send(pb::LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| EtcdError::StreamEnded("LeaseKeepAlive"))?;
        self.answer().await
    }

    async fn answer(&mut self) -> Result<i64, EtcdError> {
        match tokio::time::timeout(self.timeout, self.rx.message()).await {
            Ok(Ok(Some(r))) => Ok(r.ttl),
            Ok(Ok(None)) => Err(EtcdError::StreamEnded("LeaseKeepAlive")),
            Ok(Err(status)) => Err(EtcdError::Status {
                call: "LeaseKeepAlive",
                status: Box::new(status),
            }),
            Err(_) => Err(EtcdError::Timeout {
                call: "LeaseKeepAlive",
                timeout: self.timeout,
            }),
        }
    }
}

/// A watch stream.
#[derive(Debug)]
pub struct Watch {
    // Dropping the request side would end the watch.
    _requests: mpsc::Sender<pb::WatchRequest>,
    stream: tonic::Streaming<WatchResponse>,
}

impl Watch {
    /// The next response (events, or a progress notification); an error
    /// when the stream ended or etcd cancelled the watch (e.g. its start
    /// revision was compacted).
    pub async fn next(&mut self) -> Result<WatchResponse, EtcdError> {
        match self.stream.message().await {
            Ok(Some(r)) if r.canceled => Err(EtcdError::Refused {
                call: "Watch",
                message: if r.compact_revision > 0 {
                    format!(
                        "cancelled: revisions before {} are compacted",
                        r.compact_revision
                    )
                } else {
                    format!("cancelled: {}", r.cancel_reason)
                },
            }),
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(EtcdError::StreamEnded("Watch")),
            Err(status) => Err(EtcdError::Status {
                call: "Watch",
                status: Box::new(status),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_range_ends_after_the_last_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/aya/"), b"/aya0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn a_bad_endpoint_is_named() {
        let e = Etcd::new(&["not a url".into()], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("\"not a url\""), "{e}");
    }
}
