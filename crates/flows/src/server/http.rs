//! The HTTP side: the query API, the live stream, metrics and the UI.

use super::{failure, parse, App, HEADER_TIMEOUT, HTTP_CONNECTIONS};
use crate::query::{Filter, Query};
use crate::store::Hint;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

async fn flows(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let q = match parse(q) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    match app.read(move |s| s.query(&q)).await {
        Ok(page) => Json(page).into_response(),
        Err(r) => r,
    }
}

async fn hints(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let mut field = None;
    let mut rest = Vec::new();
    for (k, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        if k == "field" {
            field = Some(v.into_owned());
        } else {
            rest.push((k.into_owned(), v.into_owned()));
        }
    }
    let field: Hint = match field.as_deref().unwrap_or("").parse() {
        Ok(f) => f,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
    };
    let q = match Query::from_pairs(rest) {
        Ok(q) => q,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
    };
    match app.read(move |s| s.hints(field, &q.filter, 200)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn policies(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let q = match parse(q) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    match app.read(move |s| s.policy_stats(&q.filter)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn graph(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let q = match parse(q) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    match app.read(move |s| s.graph(&q.filter)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn stream(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let q = match parse(q) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let Ok(slot) = app.stream_slots.clone().try_acquire_owned() else {
        return failure(StatusCode::SERVICE_UNAVAILABLE, &"too many live readers");
    };
    app.metrics.stream_readers.inc();
    let filter: Filter = q.filter;
    let guard = Reader(app.clone(), slot);
    let events = tokio_stream::wrappers::BroadcastStream::new(app.live.subscribe()).filter_map(
        move |item| {
            let _keep = &guard;
            let event = match item {
                Ok(f) if filter.matches(&f) => Some(Event::default().event("flow").json_data(&*f)),
                Ok(_) => None,
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    guard.0.metrics.stream_lagged.inc_by(n);
                    Some(Ok(Event::default().event("lagged").data(n.to_string())))
                }
            };
            std::future::ready(event)
        },
    );
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// A live reader's slot, given back when its stream ends.
#[derive(Debug)]
struct Reader(
    Arc<App>,
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.metrics.stream_readers.dec();
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.text(),
    )
        .into_response()
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(super) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                asset(
                    "text/html; charset=utf-8",
                    include_str!("../../ui/index.html"),
                )
            }),
        )
        .route(
            "/ui.js",
            get(|| async { asset("text/javascript", include_str!("../../ui/ui.js")) }),
        )
        .route(
            "/ui.css",
            get(|| async { asset("text/css", include_str!("../../ui/ui.css")) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/flows/stream", get(stream))
        .route("/api/v1/hints", get(hints))
        .route("/api/v1/policies", get(policies))
        .route("/api/v1/graph", get(graph))
        .with_state(app)
}

/// HTTP/1 with a header deadline and a connection cap; queries carry
/// their own deadline, live streams none.
pub(super) async fn serve_http(listener: TcpListener, router: Router) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS));
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = conn.await;
        });
    }
}
