//! The application shell around the pure core: the engine (load → decide →
//! effects → save), the step messages that carry work on the queue, and the
//! configuration read from app settings.

pub mod config;
pub mod engine;
pub mod messages;
