//! What the `sluice` command line is built from: the HTTP client that talks
//! to any Sluice deployment and its sign-in, the text views of its answers, and the
//! Functions package builder. `src/main.rs` parses arguments and calls these.

pub mod actor;
pub mod azure_pipelines;
pub mod ci;
pub mod client;
pub mod package;
pub mod release;
pub mod safe;
pub mod sign_in;
pub mod view;
pub mod waves;
