//! What the Azure adapters share: Entra ID tokens and the ARM/REST call
//! conventions (retries, error bodies, redaction).

pub mod auth;
pub mod http;
pub mod transport;
