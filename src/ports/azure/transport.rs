//! The transport the Azure SDK clients (Table Storage, Service Bus) get:
//! Sluice's bounded HTTP client, and an answer read at most
//! [`MAX_ANSWER_BYTES`] — azure_core's own reqwest transport has no timeout
//! and collects a body whole, so a black-holed or endless endpoint would
//! hang a call or fill memory.

use std::sync::Arc;
use std::time::Duration;

use azure_core::error::ErrorKind;
use futures::StreamExt as _;

use crate::ports::env::MAX_ANSWER_BYTES;

/// Longest one call to Table Storage or Service Bus may take (a state row
/// near the 1 MiB entity limit, a busy emulator); the caller (a queue
/// delivery, the timer) retries.
const SDK_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The SDK's own retries (Table Storage): two more tries of a quick failure,
/// none after a call that ran out of time — azure_core's default (8 tries
/// within a minute, each as long as the client allows) held warm-up for
/// minutes against a black-holed endpoint.
pub fn sdk_retries() -> azure_core::RetryOptions {
    azure_core::RetryOptions::exponential(
        azure_core::ExponentialRetryOptions::default().max_retries(2u32).max_total_elapsed(SDK_CALL_TIMEOUT),
    )
}

/// azure_core's `HttpClient` over Sluice's client, with answers capped.
#[derive(Debug, Clone)]
pub struct BoundedTransport {
    inner: reqwest::Client,
}

impl BoundedTransport {
    /// Bounded in time (connect 5 s, a whole call [`SDK_CALL_TIMEOUT`]), no redirects.
    pub fn new() -> Arc<Self> {
        let inner = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(SDK_CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        Arc::new(BoundedTransport { inner })
    }

    /// Over a given client (tests shorten the timeout).
    pub fn with_client(inner: reqwest::Client) -> Arc<Self> {
        Arc::new(BoundedTransport { inner })
    }
}

#[async_trait::async_trait]
impl azure_core::HttpClient for BoundedTransport {
    async fn execute_request(&self, request: &azure_core::Request) -> azure_core::Result<azure_core::Response> {
        let answer = self.inner.execute_request(request).await?;
        let (status, headers, mut body) = answer.deconstruct();
        let mut read = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if read.len() + chunk.len() > MAX_ANSWER_BYTES {
                let message = format!("the answer is longer than {} MiB; not read further", MAX_ANSWER_BYTES >> 20);
                // Not an I/O error, so the SDK's retry policy does not ask again.
                return Err(azure_core::Error::message(ErrorKind::Other, message));
            }
            read.extend_from_slice(&chunk);
        }
        let whole = futures::stream::once(async move { Ok(read.into()) });
        Ok(azure_core::Response::new(status, headers, Box::pin(whole)))
    }
}

/// An SDK error with its causes: the retry policy wraps the reason (a
/// timeout, a cut-off answer) in its own words, which alone say nothing.
pub fn describe(e: &azure_core::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}
