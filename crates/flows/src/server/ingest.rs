//! The gRPC side: a node's stream of batches, each checked, stored and
//! acknowledged.

use super::{App, Stored, MAX_BATCH};
use crate::proto::flow_collector_server::FlowCollector;
use crate::proto::{FlowBatch, PushAck};
use std::pin::Pin;
use std::sync::Arc;
use tracing::{info, warn};

/// A batch on its way to the store, in the order it came.
struct Pending {
    sequence: u64,
    refused: u64,
    stored: tokio::sync::oneshot::Receiver<Stored>,
}

#[derive(Debug, Clone)]
pub(super) struct Ingest(pub(super) Arc<App>);

type AckStream = Pin<Box<dyn futures_util::Stream<Item = Result<PushAck, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl FlowCollector for Ingest {
    type PushStream = AckStream;

    async fn push(
        &self,
        request: tonic::Request<tonic::Streaming<FlowBatch>>,
    ) -> Result<tonic::Response<AckStream>, tonic::Status> {
        let peer = request.remote_addr();
        // With mutual TLS, the node a batch speaks for must be one of the
        // DNS names of the client's certificate.
        let certs = request.peer_certs();
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        // Batches are read, checked and queued for the writer while earlier
        // ones are being stored; acknowledgements go back in order, each
        // once its batch is stored (an acknowledgement covers everything
        // before it, so none may overtake a batch not yet stored).
        let (order, mut ordered) = tokio::sync::mpsc::channel::<Pending>(16);
        let app = self.0.clone();
        let acks = tx.clone();
        tokio::spawn(async move {
            while let Some(p) = ordered.recv().await {
                let reply = match p.stored.await {
                    Ok(Ok(flows)) => Ok(PushAck {
                        sequence: p.sequence,
                        stored: app.stored(flows, p.refused),
                        refused: p.refused,
                    }),
                    Ok(Err(e)) => {
                        warn!("storing flows: {e}");
                        Err(tonic::Status::unavailable(format!("storing flows: {e}")))
                    }
                    Err(_) => Err(tonic::Status::unavailable("the flow store is closed")),
                };
                let end = reply.is_err();
                if acks.send(reply).await.is_err() || end {
                    return;
                }
            }
        });
        let app = self.0.clone();
        tokio::spawn(async move {
            loop {
                let batch = match inbound.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(e) => {
                        info!("flow stream from {peer:?} ended: {e}");
                        return;
                    }
                };
                if batch.flows.len() > MAX_BATCH {
                    let _ = tx
                        .send(Err(tonic::Status::invalid_argument(format!(
                            "a batch holds at most {MAX_BATCH} records"
                        ))))
                        .await;
                    return;
                }
                if let Some(certs) = &certs {
                    if !names_node(certs, &batch.node) {
                        warn!("{peer:?}: a batch for node {:?} from a certificate that does not name it", batch.node);
                        let _ = tx
                            .send(Err(tonic::Status::permission_denied(format!(
                                "this client's certificate does not name node {:?}",
                                batch.node
                            ))))
                            .await;
                        return;
                    }
                }
                let sequence = batch.sequence;
                let (flows, refused) = App::check_batch(batch);
                let stored = app.submit(flows).await;
                let pending = Pending {
                    sequence,
                    refused,
                    stored,
                };
                if order.send(pending).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Whether the client's certificate (the first of its chain, already
/// verified by TLS) carries `node` among its DNS names.
fn names_node(certs: &[rustls_pki_types::CertificateDer<'static>], node: &str) -> bool {
    let Some(cert) = certs.first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = rustls_pki_types::ServerName::try_from(node.to_string()) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}
