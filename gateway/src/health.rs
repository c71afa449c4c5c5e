//! `/health` (liveness: the process answers) and `/ready` (whether
//! requests can be served now, from the backend's checks).

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::Backend;
use crate::error::json_response;
use crate::server::{Gateway, method_not_allowed};

impl<B: Backend> Gateway<B> {
    /// Liveness: the process answers. Nothing else is checked, so a
    /// supervisor restarts only a host that is truly stuck.
    pub(crate) fn health(&self, method: &Method) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed();
        }
        let mut checks = serde_json::Map::new();
        checks.insert("gateway".into(), "ok".into());
        json_response(StatusCode::OK, &crate::HealthReport::from_checks(checks))
    }

    /// The readiness report `/ready` answers: the backend's checks of every
    /// component the route table names (see [`Backend::ready`]).
    pub async fn readiness(&self) -> crate::HealthReport {
        let routed = self.inner.routes.load().components();
        self.inner.backend.ready(&routed).await
    }

    /// Readiness: whether requests can be served now (see [`Backend::ready`]).
    pub(crate) async fn ready(&self, method: &Method) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed();
        }
        let report = self.readiness().await;
        let status =
            if report.is_healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json_response(status, &report)
    }
}
