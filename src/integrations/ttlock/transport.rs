//! One HTTP exchange with TTLock: build the request the documented way (form body for
//! POST, query string for GET), bound it by the timeout, and classify what comes back.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::error::TtlockError;
use super::wire::check_body;

/// HTTP method of an endpoint, as the reference documents it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Method {
    /// Reads: parameters in the query string.
    Get,
    /// Mutations: `application/x-www-form-urlencoded` body.
    Post,
}

pub(crate) type Params = Vec<(&'static str, String)>;

pub(crate) struct Transport {
    http: reqwest::Client,
    api_base: Url,
    timeout_ms: u64,
}

impl Transport {
    pub(crate) fn new(mut api_base: Url, timeout_ms: u64) -> Result<Self, TtlockError> {
        // `Url::join` replaces the last path segment unless the base ends with a slash;
        // a base such as `http://sim/ttlock` must keep its prefix.
        if !api_base.path().ends_with('/') {
            let path = format!("{}/", api_base.path());
            api_base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .connect_timeout(Duration::from_millis(timeout_ms))
            .build()
            .map_err(|error| TtlockError::Network {
                message: format!("cannot build the HTTP client: {error}"),
            })?;
        Ok(Self {
            http,
            api_base,
            timeout_ms,
        })
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        params: &Params,
    ) -> Result<Value, TtlockError> {
        let url = self
            .api_base
            .join(path)
            .map_err(|error| TtlockError::InvalidRequest(format!("bad path {path}: {error}")))?;
        let request = match method {
            Method::Get => self.http.get(url).query(params),
            Method::Post => self.http.post(url).form(params),
        };
        let response = request.send().await.map_err(|e| self.classify(e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| self.classify(e))?;
        check_body(status, &body)
    }

    fn classify(&self, error: reqwest::Error) -> TtlockError {
        if error.is_timeout() {
            return TtlockError::Timeout {
                timeout_ms: self.timeout_ms,
            };
        }
        // GET URLs carry the access token in the query: drop the URL before the error
        // text reaches logs and the health endpoint. The source chain says why (refused,
        // reset, DNS), which is what an operator needs.
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        TtlockError::Network { message }
    }
}
